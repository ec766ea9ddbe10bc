//! Listing domains and devices: what XenStore (and libxl's stored configuration) say, read
//! in a few pipelined round trips.

use std::collections::BTreeMap;

use vdev_core::{
    Attributes, Device, DeviceRef, DeviceState, DeviceType, Domain, DomainKey, Error, Result,
};

use crate::driver::{xs_err, Inner};
use crate::libxl::{ConfigView, Ident};
use crate::paths::Domid;
use crate::paths::{self, Kind};
use crate::vbd;
use crate::xenstore::{utf8, Req, NO_TX};

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

    /// The devices of `domain` (of `device_type`, or all).
    pub(crate) async fn list_devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>> {
        if self.domain_by_id(domain.domid()).await?.is_none() {
            return Err(Error::DomainNotFound {
                domain: domain.name.clone(),
            });
        }
        let kinds = match device_type {
            None => vec![Kind::Vbd, Kind::Vif],
            Some(t) => match Kind::of(t) {
                Some(k) => vec![k],
                None => return Ok(Vec::new()),
            },
        };
        let view = self.config_view(domain.domid()).await;
        let mut all = Vec::new();
        for k in kinds {
            all.extend(self.list_kind(k, domain, &view).await?);
        }
        Ok(all)
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

    pub(crate) async fn list_kind(
        &self,
        kind: Kind,
        domain: &Domain,
        view: &ConfigView,
    ) -> Result<Vec<Device>> {
        let domid = domain.domid();
        let mut devids: Vec<u32> = Vec::new();
        for dir in [
            paths::frontend_dir(kind, domid),
            paths::libxl_dir(kind, domid),
        ] {
            for s in self
                .xs
                .directory(NO_TX, &dir)
                .await
                .map_err(xs_err("listing devices"))?
            {
                if let Ok(n) = s.parse::<u32>() {
                    if !devids.contains(&n) {
                        devids.push(n);
                    }
                }
            }
        }
        devids.sort_unstable();
        let (fe_keys, be_keys) = match kind {
            Kind::Vbd => (vbd::FE_KEYS, vbd::BE_KEYS),
            Kind::Vif => (crate::vif::FE_KEYS, crate::vif::BE_KEYS),
        };
        // Round trip 1: every frontend key and libxl's backend path of every disk. The
        // frontend's `backend-id` is not read: `backend-id` is listed from the backend path
        // (libxl's record first: the frontend's keys are the guest's to write).
        let fe_keys: Vec<&str> = fe_keys
            .iter()
            .copied()
            .filter(|k| *k != "backend-id")
            .collect();
        let mut reqs = Vec::new();
        for d in &devids {
            let fe = paths::frontend_path(kind, domid, *d);
            reqs.extend(fe_keys.iter().map(|k| Req::read(&format!("{fe}/{k}"))));
            reqs.push(Req::read(&format!(
                "{}/backend",
                paths::libxl_path(kind, domid, *d)
            )));
        }
        let r1 = self
            .xs
            .batch(NO_TX, reqs)
            .await
            .map_err(xs_err("reading devices"))?;
        let mut r1 = r1.into_iter().map(|r| r.ok().map(utf8));
        let mut fe_vals = Vec::new();
        let mut be_paths = Vec::new();
        let mut has_record = Vec::new();
        for d in &devids {
            let vals: Vec<Option<String>> = fe_keys.iter().map(|_| r1.next().flatten()).collect();
            let lxb = r1.next().flatten();
            has_record.push(lxb.is_some());
            let be = lxb
                .into_iter()
                .chain(vals[0].clone())
                .find(|p| paths::check_backend_path(kind, p, domid, *d).is_some());
            fe_vals.push(vals);
            be_paths.push(be);
        }
        // Round trip 2: every backend key.
        let mut reqs = Vec::new();
        for be in be_paths.iter().flatten() {
            reqs.extend(be_keys.iter().map(|k| Req::read(&format!("{be}/{k}"))));
        }
        let r2 = self
            .xs
            .batch(NO_TX, reqs)
            .await
            .map_err(xs_err("reading device backends"))?;
        let mut r2 = r2.into_iter().map(|r| r.ok().map(utf8));
        // The names of the backend domains only (never every domain: a host may have
        // thousands).
        let mut bdoms: Vec<u32> = be_paths
            .iter()
            .enumerate()
            .filter_map(|(i, p)| paths::check_backend_path(kind, p.as_deref()?, domid, devids[i]))
            .collect();
        bdoms.sort_unstable();
        bdoms.dedup();
        let names = self
            .xs
            .batch(
                NO_TX,
                bdoms
                    .iter()
                    .map(|b| Req::read(&format!("/local/domain/{b}/name")))
                    .collect(),
            )
            .await
            .map_err(xs_err("reading backend domain names"))?;
        let domains: Vec<Domain> = bdoms
            .iter()
            .zip(names)
            .filter_map(|(id, n)| n.ok().map(|n| Domain::new(Some(*id), utf8(n))))
            .collect();
        let mut out = Vec::new();
        for (((d, fe), be), recorded_in_xs) in
            devids.iter().zip(fe_vals).zip(be_paths).zip(has_record)
        {
            let bev: Vec<Option<String>> = match &be {
                Some(_) => be_keys.iter().map(|_| r2.next().flatten()).collect(),
                None => vec![None; be_keys.len()],
            };
            let bget = |k: &str| {
                be_keys
                    .iter()
                    .position(|x| *x == k)
                    .and_then(|i| bev[i].clone())
            };
            let mut attrs: BTreeMap<String, String> = BTreeMap::new();
            let fget = |k: &str| {
                fe_keys
                    .iter()
                    .position(|x| *x == k)
                    .and_then(|i| fe[i].clone())
            };
            for (k, v) in fe_keys.iter().zip(&fe) {
                if let Some(v) = v {
                    attrs.insert((*k).to_owned(), v.clone());
                }
            }
            if let Some(bd) = be
                .as_deref()
                .and_then(|p| paths::check_backend_path(kind, p, domid, *d))
            {
                attrs.insert("backend-id".into(), bd.to_string());
                if let Some(dom) = domains.iter().find(|x| x.id == Some(bd)) {
                    attrs.insert("bkdom-name".into(), dom.name.clone());
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
                    let id = match kind {
                        Kind::Vbd => bget("dev").map(Ident::Disk),
                        Kind::Vif => Some(Ident::Nic(*d)),
                    };
                    if recorded_in_xs && id.is_some_and(|id| c.get(&id).is_some()) {
                        "yes"
                    } else {
                        "no"
                    }
                }
            };
            attrs.insert("recorded".into(), recorded.into());
            let state = if be.is_some() {
                device_state(bget("state").as_deref(), bget("online").as_deref())
            } else {
                state_of(fget("state").as_deref())
            };
            let attributes = Attributes::from_pairs(representable(attrs))?;
            out.push(Device {
                device_type: kind.device_type(),
                reference: DeviceRef::new(d.to_string())?,
                state,
                attributes,
            });
        }
        Ok(out)
    }
}
