//! Listing domains and devices: what XenStore (and libxl's stored configuration) say, read
//! in a few pipelined round trips.

use std::collections::BTreeMap;

use vdev_core::{
    Attributes, Device, DeviceRef, DeviceState, DeviceType, Domain, DomainKey, Error, Result,
};

use crate::driver::{xs_err, Inner};
use crate::error::XsError;
use crate::libxl::{ConfigView, Ident};
use crate::paths::Domid;
use crate::paths::{self, Kind};
use crate::vbd;
use crate::xenstore::{opt, utf8, Req, NO_TX};

pub(crate) fn state_of(n: Option<&str>) -> DeviceState {
    match n {
        Some("1") => DeviceState::Initialising,
        Some("2") => DeviceState::InitWait,
        Some("3") => DeviceState::Initialised,
        Some("4") => DeviceState::Connected,
        Some("5") => DeviceState::Closing,
        Some("6") => DeviceState::Closed,
        Some(s) => DeviceState::Unknown(s.to_owned()),
        None => DeviceState::Unknown("absent".into()),
    }
}

/// A disk's state from its backend's `state` and `online`: removal is pending once the toolstack
/// has set `online=0` and the backend is closing or closed.
pub(crate) fn device_state(state: Option<&str>, online: Option<&str>) -> DeviceState {
    if online == Some("0") && matches!(state, Some("5" | "6")) {
        DeviceState::RemovalPending
    } else {
        state_of(state)
    }
}

/// The attributes of a listed device with every value an attribute cannot hold (over
/// [`vdev_core::attributes::MAX_VALUE_LEN`] bytes, or with a NUL: XenStore allows both, and a
/// guest writes its frontend's keys) left out, and named with the reason in `omitted`
/// (`protocol: 3000 bytes, over 2048; ring-ref: contains a NUL`), so one odd value never hides
/// the device or the listing. See docs.md, "Values an attribute cannot hold".
pub(crate) fn representable(mut attrs: BTreeMap<String, String>) -> BTreeMap<String, String> {
    use vdev_core::attributes::MAX_VALUE_LEN;
    let mut omitted = Vec::new();
    attrs.retain(|k, v| {
        let why = if v.len() > MAX_VALUE_LEN {
            format!("{} bytes, over {MAX_VALUE_LEN}", v.len())
        } else if v.contains('\0') {
            "contains a NUL".to_owned()
        } else {
            return true;
        };
        omitted.push(format!("{k}: {why}"));
        false
    });
    if !omitted.is_empty() {
        attrs.insert("omitted".into(), omitted.join("; "));
    }
    attrs
}

impl Inner {
    /// The domain `key` names.
    pub(crate) async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain> {
        let found = match key {
            DomainKey::Id(id) => self.domain_by_id(*id).await?,
            DomainKey::Name(n) => self.domains().await?.into_iter().find(|d| &d.name == n),
            // Listed domains carry no UUID yet (libxl keeps it in /vm): none matches.
            DomainKey::Uuid(_) => None,
        };
        found.ok_or_else(|| Error::DomainNotFound {
            domain: key.to_string(),
        })
    }

    /// The devices of `domain` (of `device_type`, or all), in two pipelined round trips (a
    /// third only for devices whose backend is not where the second guessed it). See
    /// docs.md, "What a listing reads".
    pub(crate) async fn list_devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>> {
        let domid = domain.domid();
        let kinds: Vec<Kind> = match device_type {
            None => vec![Kind::Vbd, Kind::Vif],
            Some(t) => Kind::of(t).into_iter().collect(),
        };
        let reachable = !kinds.is_empty() && matches!(self.config_reachable().await, Ok(true));
        // Round trip 1: the domain (its name says it exists), its `vm` node (which names libxl's
        // stored configuration), and per kind the frontend and libxl directories (a device is
        // listed when either has it) and Domain-0's backend directory (the devices whose
        // backend keys round trip 2 reads beside their frontend's).
        let mut reqs = vec![Req::read(&format!("/local/domain/{domid}/name"))];
        if reachable {
            reqs.push(Req::read(&format!("/local/domain/{domid}/vm")));
        }
        let dirs: Vec<[String; 3]> = kinds
            .iter()
            .map(|k| {
                [
                    paths::frontend_dir(*k, domid),
                    paths::libxl_dir(*k, domid),
                    guessed_backend_dir(*k, domid),
                ]
            })
            .collect();
        reqs.extend(dirs.iter().flatten().map(|d| Req::directory(d)));
        let mut r1 = self
            .xs
            .batch(NO_TX, reqs)
            .await
            .map_err(xs_err("reading a domain name"))?
            .into_iter();
        let mut next = move || r1.next().unwrap_or_else(|| Err(missing_answer()));
        let named = opt(next())
            .map_err(xs_err("reading a domain name"))?
            .is_some();
        if !named
            && self
                .xs
                .read(NO_TX, &format!("/local/domain/{domid}"))
                .await
                .map_err(xs_err("reading a domain"))?
                .is_none()
        {
            return Err(Error::DomainNotFound {
                domain: domain.name.clone(),
            });
        }
        let vm = reachable.then(|| opt(next()).map(|o| o.map(utf8)));
        let mut found = Vec::new();
        for (kind, [fe_dir, lx_dir, be_dir]) in kinds.into_iter().zip(dirs) {
            let mut devids: Vec<u32> = Vec::new();
            for dir in [fe_dir, lx_dir] {
                let names = self
                    .xs
                    .children(NO_TX, &dir, next())
                    .await
                    .map_err(xs_err("listing devices"))?;
                for s in names {
                    if let Ok(n) = s.parse::<u32>() {
                        if !devids.contains(&n) {
                            devids.push(n);
                        }
                    }
                }
            }
            devids.sort_unstable();
            // Only a guess: unreadable (a connection without Domain-0's rights) is no guess.
            let at_guess = self
                .xs
                .children(NO_TX, &be_dir, next())
                .await
                .unwrap_or_default();
            let guessed = devids
                .iter()
                .map(|d| at_guess.contains(&d.to_string()))
                .collect();
            found.push(Found {
                kind,
                devids,
                guessed,
            });
        }
        self.list_found(domid, found, vm).await
    }

    pub(crate) async fn domain_by_id(&self, id: u32) -> Result<Option<Domain>> {
        let name = self
            .xs
            .read(NO_TX, &format!("/local/domain/{id}/name"))
            .await
            .map_err(xs_err("reading a domain name"))?;
        if name.is_none()
            && self
                .xs
                .read(NO_TX, &format!("/local/domain/{id}"))
                .await
                .map_err(xs_err("reading a domain"))?
                .is_none()
        {
            return Ok(None);
        }
        Ok(Some(Domain::new(
            Some(id),
            name.unwrap_or_else(|| id.to_string()),
        )))
    }

    pub(crate) async fn domains(&self) -> Result<Vec<Domain>> {
        let ids: Vec<u32> = self
            .xs
            .directory(NO_TX, "/local/domain")
            .await
            .map_err(xs_err("listing /local/domain"))?
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        let names = self
            .xs
            .batch(
                NO_TX,
                ids.iter()
                    .map(|id| Req::read(&format!("/local/domain/{id}/name")))
                    .collect(),
            )
            .await
            .map_err(xs_err("reading domain names"))?;
        let mut out: Vec<Domain> = ids
            .into_iter()
            .zip(names)
            .map(|(id, n)| {
                Domain::new(Some(id), n.ok().map(utf8).unwrap_or_else(|| id.to_string()))
            })
            .collect();
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    /// The backend domain a disk names (name or id); unknown is an error before anything is written.
    pub(crate) async fn backend_domain(&self, given: Option<&str>) -> Result<Domain> {
        let Some(b) = given else {
            return self
                .domain_by_id(0)
                .await?
                .ok_or_else(|| Error::backend(crate::NAME, "Domain-0 is not in XenStore"));
        };
        let unknown = || Error::InvalidAttribute {
            name: "backend".into(),
            reason: format!("no domain '{b}' exists; `vdev domains` lists them"),
        };
        if b.bytes().all(|c| c.is_ascii_digit()) {
            let id: u32 = b.parse().map_err(|_| unknown())?;
            return self.domain_by_id(id).await?.ok_or_else(unknown);
        }
        self.domains()
            .await?
            .into_iter()
            .find(|d| d.name == b)
            .ok_or_else(unknown)
    }

    /// Round trip 2: every frontend key, libxl's record of the backend path, and the backend
    /// keys at the guessed backend path, while libxl's stored configuration is read; round trip
    /// 3 only for backends elsewhere (and their domains' names).
    async fn list_found(
        &self,
        domid: u32,
        found: Vec<Found>,
        vm: Option<std::result::Result<Option<String>, XsError>>,
    ) -> Result<Vec<Device>> {
        let mut reqs = Vec::new();
        for f in &found {
            let (fe_keys, be_keys) = keys(f.kind);
            for (d, g) in f.devids.iter().zip(&f.guessed) {
                let fe = paths::frontend_path(f.kind, domid, *d);
                reqs.extend(fe_keys.iter().map(|k| Req::read(&format!("{fe}/{k}"))));
                reqs.push(Req::read(&format!(
                    "{}/backend",
                    paths::libxl_path(f.kind, domid, *d)
                )));
                if *g {
                    let be = guessed_backend_path(f.kind, domid, *d);
                    reqs.extend(be_keys.iter().map(|k| Req::read(&format!("{be}/{k}"))));
                }
            }
        }
        let guessing = found.iter().any(|f| f.guessed.contains(&true));
        if guessing {
            reqs.push(Req::read(&format!("/local/domain/{GUESSED_BACKEND}/name")));
        }
        // The requests are all sent before the configuration is read (the first poll of the
        // batch sends them), so the file is read while xenstored answers.
        let (r2, view) = tokio::join!(self.xs.batch(NO_TX, reqs), self.config_view(domid, vm));
        let mut r2 = r2
            .map_err(xs_err("reading devices"))?
            .into_iter()
            .map(|r| r.ok().map(utf8));
        let mut devs = Vec::new();
        for f in &found {
            let (fe_keys, be_keys) = keys(f.kind);
            for (d, g) in f.devids.iter().zip(&f.guessed) {
                let fe: Vec<Option<String>> = fe_keys.iter().map(|_| r2.next().flatten()).collect();
                let lxb = r2.next().flatten();
                let at_guess: Option<Vec<Option<String>>> =
                    g.then(|| be_keys.iter().map(|_| r2.next().flatten()).collect());
                let fe_backend = fe_keys
                    .iter()
                    .position(|k| *k == "backend")
                    .and_then(|i| fe[i].clone());
                let recorded_in_xs = lxb.is_some();
                let be = lxb
                    .into_iter()
                    .chain(fe_backend)
                    .find(|p| paths::check_backend_path(f.kind, p, domid, *d).is_some());
                let bev = match (&be, at_guess) {
                    (Some(p), Some(v)) if *p == guessed_backend_path(f.kind, domid, *d) => Some(v),
                    (Some(_), _) => None,
                    (None, _) => Some(vec![None; be_keys.len()]),
                };
                devs.push(Listed {
                    kind: f.kind,
                    devid: *d,
                    fe,
                    be,
                    bev,
                    recorded_in_xs,
                });
            }
        }
        let mut names: BTreeMap<u32, String> = BTreeMap::new();
        if guessing {
            if let Some(n) = r2.next().flatten() {
                names.insert(GUESSED_BACKEND, n);
            }
        }
        self.read_other_backends(domid, &mut devs, &mut names, guessing)
            .await?;
        let mut out = Vec::new();
        for l in devs {
            out.push(l.device(domid, &names, &view)?);
        }
        Ok(out)
    }

    /// Round trip 3: the backend keys of devices whose backend is not at the guessed path,
    /// and the names of their backend domains (only these: a host may have thousands).
    async fn read_other_backends(
        &self,
        domid: u32,
        devs: &mut [Listed],
        names: &mut BTreeMap<u32, String>,
        guessing: bool,
    ) -> Result<()> {
        let mut reqs = Vec::new();
        for l in devs.iter().filter(|l| l.bev.is_none()) {
            let be = l.be.as_deref().unwrap_or_default();
            let (_, be_keys) = keys(l.kind);
            reqs.extend(be_keys.iter().map(|k| Req::read(&format!("{be}/{k}"))));
        }
        let mut bdoms: Vec<u32> = devs
            .iter()
            .filter_map(|l| l.backend_domain(domid))
            .filter(|b| !(guessing && *b == GUESSED_BACKEND))
            .collect();
        bdoms.sort_unstable();
        bdoms.dedup();
        reqs.extend(
            bdoms
                .iter()
                .map(|b| Req::read(&format!("/local/domain/{b}/name"))),
        );
        if reqs.is_empty() {
            return Ok(());
        }
        let mut r3 = self
            .xs
            .batch(NO_TX, reqs)
            .await
            .map_err(xs_err("reading device backends"))?
            .into_iter()
            .map(|r| r.ok().map(utf8));
        for l in devs.iter_mut().filter(|l| l.bev.is_none()) {
            let (_, be_keys) = keys(l.kind);
            l.bev = Some(be_keys.iter().map(|_| r3.next().flatten()).collect());
        }
        for b in bdoms {
            if let Some(n) = r3.next().flatten() {
                names.insert(b, n);
            }
        }
        Ok(())
    }
}

/// The backend domain a listing guesses: Domain-0, where libxl puts backends unless told
/// otherwise. A device whose backend is elsewhere costs one more round trip.
const GUESSED_BACKEND: u32 = 0;

fn guessed_backend_dir(kind: Kind, domid: u32) -> String {
    format!(
        "/local/domain/{GUESSED_BACKEND}/backend/{}/{domid}",
        kind.xs()
    )
}

fn guessed_backend_path(kind: Kind, domid: u32, devid: u32) -> String {
    format!("{}/{devid}", guessed_backend_dir(kind, domid))
}

fn missing_answer() -> XsError {
    XsError::Protocol("a batch of requests came back with fewer answers".into())
}

/// The keys a listing reads: the frontend's (without `backend-id`: it is listed from the
/// backend path, libxl's record first, as the frontend's keys are the guest's to write) and
/// the backend's.
fn keys(kind: Kind) -> (Vec<&'static str>, &'static [&'static str]) {
    let (fe_keys, be_keys) = match kind {
        Kind::Vbd => (vbd::FE_KEYS, vbd::BE_KEYS),
        Kind::Vif => (crate::vif::FE_KEYS, crate::vif::BE_KEYS),
    };
    let fe_keys = fe_keys
        .iter()
        .copied()
        .filter(|k| *k != "backend-id")
        .collect();
    (fe_keys, be_keys)
}

/// One kind's devices as round trip 1 found them.
struct Found {
    kind: Kind,
    /// Sorted.
    devids: Vec<u32>,
    /// Whether each has a directory at the guessed backend path.
    guessed: Vec<bool>,
}

/// What was read of one device.
struct Listed {
    kind: Kind,
    devid: u32,
    /// The values of the frontend keys ([`keys`]).
    fe: Vec<Option<String>>,
    /// The backend path: libxl's record of it, else the frontend's, whichever is plausible.
    be: Option<String>,
    /// The values of the backend keys (`None`: not read yet).
    bev: Option<Vec<Option<String>>>,
    /// Whether libxl's record in XenStore has the device.
    recorded_in_xs: bool,
}

impl Listed {
    fn backend_domain(&self, domid: u32) -> Option<u32> {
        paths::check_backend_path(self.kind, self.be.as_deref()?, domid, self.devid)
    }

    fn device(
        self,
        domid: u32,
        names: &BTreeMap<u32, String>,
        view: &ConfigView,
    ) -> Result<Device> {
        let (fe_keys, be_keys) = keys(self.kind);
        let bd = self.backend_domain(domid);
        let bev = self.bev.unwrap_or_else(|| vec![None; be_keys.len()]);
        let bget = |k: &str| {
            be_keys
                .iter()
                .position(|x| *x == k)
                .and_then(|i| bev[i].clone())
        };
        let fget = |k: &str| {
            fe_keys
                .iter()
                .position(|x| *x == k)
                .and_then(|i| self.fe[i].clone())
        };
        let mut attrs: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in fe_keys.iter().zip(&self.fe) {
            if let Some(v) = v {
                attrs.insert((*k).to_owned(), v.clone());
            }
        }
        if let Some(bd) = bd {
            attrs.insert("backend-id".into(), bd.to_string());
            if let Some(name) = names.get(&bd) {
                attrs.insert("bkdom-name".into(), name.clone());
            }
        }
        for (k, v) in be_keys.iter().zip(&bev) {
            if let Some(v) = v {
                let name = match *k {
                    "state" => "backend-state",
                    k => k,
                };
                attrs.insert(name.to_owned(), v.clone());
            }
        }
        if let Some(p) = bget("params") {
            let how = match bget("type").as_deref() {
                Some("phy") | None if p.starts_with("/dev/") => "phy".to_owned(),
                Some("phy") | None => "file".to_owned(),
                Some(t) => t.to_owned(),
            };
            attrs.insert("uname".into(), format!("{how}:{p}"));
        }
        // As libxl rebuilds a domain: an entry of the same identity in the document, and
        // libxl's own record in XenStore (`/libxl/D/device/KIND/N`) to match it with.
        let recorded = match view {
            ConfigView::Unknown => "unknown",
            ConfigView::Known(None) => "no",
            ConfigView::Known(Some(c)) => {
                let id = match self.kind {
                    Kind::Vbd => bget("dev").map(Ident::Disk),
                    Kind::Vif => Some(Ident::Nic(self.devid)),
                };
                if self.recorded_in_xs && id.is_some_and(|id| c.get(&id).is_some()) {
                    "yes"
                } else {
                    "no"
                }
            }
        };
        attrs.insert("recorded".into(), recorded.into());
        let state = if self.be.is_some() {
            device_state(bget("state").as_deref(), bget("online").as_deref())
        } else {
            state_of(fget("state").as_deref())
        };
        let attributes = Attributes::from_pairs(representable(attrs))?;
        Ok(Device {
            device_type: self.kind.device_type(),
            reference: DeviceRef::new(self.devid.to_string())?,
            state,
            attributes,
        })
    }
}
