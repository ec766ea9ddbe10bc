//! The [`Driver`] implementation over XenStore.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vdev_core::prelude::async_trait;
use vdev_core::{
    AttachOptions, Attributes, Capabilities, DetachOptions, Device, DeviceRef, DeviceState,
    DeviceType, DeviceTypeSchema, Domain, DomainKey, Driver, Error, EventStream, Result, Scope,
    ScopeSet, UpdateOptions,
};

use crate::config::{Hotplug, XenConfig};
use crate::error::LibxlConfigError;
use crate::error::XsError;
use crate::hotplug::{self, Backing, Dom0};
use crate::libxl::{self, Config, Files, Ident, Recorded, Userdata};
use crate::vbd::{self, DevPaths, DiskSpec, Kind};
use crate::xenstore::{opt, utf8, Body, Req, TxFailure, TxId, XenStore, NO_TX};
use vdev_remote::HeldLock;

/// An open connection to xenstored.
pub struct XenDriver {
    inner: Arc<Inner>,
    /// Background completions of removals left pending (aborted on close and drop).
    pending: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The connection's state, shared with background completions.
struct Inner {
    xs: Arc<XenStore>,
    config: XenConfig,
    closed: AtomicBool,
    /// Whether the host is Domain-0.
    is_dom0: bool,
    /// The connection's host (Domain-0, or the host of its xenstored), where the hotplug work
    /// runs.
    dom0_host: Dom0,
    /// libxl's stored configurations, on the same host.
    userdata: Userdata,
    /// Whether a remote host is Domain-0, asked once when `is_dom0` was not (`hotplug=no`).
    remote_dom0: tokio::sync::OnceCell<bool>,
}

/// A change of libxl's stored configuration of one domain in progress: its lock held, the
/// document as read. See docs/design/0013-xen-libxl-config.md.
struct ConfigUpdate {
    files: Files,
    /// The domain's `vm` node when read: checked again in the XenStore transaction (a new
    /// domain with the same id has another uuid, so other files).
    vm: String,
    config: Config,
    original: Vec<u8>,
    lock: HeldLock,
    /// Whether the document was (perhaps) written: undo writes `original` back.
    written: AtomicBool,
    /// The identity changed and the entry it replaced (for an attach's later roll back).
    change: std::sync::Mutex<Option<(Ident, Option<serde_json::Value>)>>,
}

impl ConfigUpdate {
    /// Write `c` (inside the XenStore transaction, before the device's nodes).
    async fn write(&self, userdata: &Userdata, c: &Config) -> Result<()> {
        if !self.lock.still_held().await {
            return Err(Error::Remote {
                host: userdata.host_name(),
                kind: vdev_core::RemoteErrorKind::Disconnected,
                message: "the ssh connection that held libxl's userdata lock was lost; nothing was changed; try again".into(),
            });
        }
        self.written.store(true, Ordering::SeqCst);
        userdata.write(&self.files, &c.to_bytes()).await
    }

    /// Put the document back as read (the XenStore transaction failed). On failure, what is
    /// left, in words.
    async fn undo(&self, userdata: &Userdata) -> std::result::Result<(), String> {
        if self.written.load(Ordering::SeqCst) {
            if let Err(e) = userdata.write(&self.files, &self.original).await {
                tracing::warn!(file = %self.files.data, "putting libxl's configuration back: {e}");
                return Err(format!(
                    "libxl's configuration {} as changed for the device (putting it back failed: {e})",
                    self.files.data
                ));
            }
        }
        Ok(())
    }
}

/// What removing a device's nodes does to libxl's stored configuration.
enum ConfigOp {
    /// Nothing.
    Keep,
    /// Remove the device's entry (detach).
    Remove,
    /// Put back what an attach replaced (its roll back).
    Restore(Ident, Option<serde_json::Value>),
}

/// What a listing knows of a domain's stored configuration.
enum ConfigView {
    /// Out of reach, or unreadable.
    Unknown,
    /// None: the domain has none (every device `recorded=no`).
    Known(Option<Config>),
}

impl Drop for XenDriver {
    fn drop(&mut self) {
        for t in self
            .pending
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default()
        {
            t.abort();
        }
    }
}

impl std::fmt::Debug for XenDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenDriver")
            .field("host", &self.inner.config.host.name())
            .field("endpoint", &self.inner.config.endpoint)
            .field("closed", &self.inner.closed.load(Ordering::SeqCst))
            .finish()
    }
}

/// Whether the commit of an attach whose answer never came landed.
enum Landed {
    /// It did not: nothing of the device was written.
    No,
    /// Nothing could be learnt (xenstored could not be asked again).
    Unknown(u32),
}

fn xs_err(what: &str) -> impl Fn(XsError) -> Error + '_ {
    move |e| e.into_core(what)
}

fn state_of(n: Option<&str>) -> DeviceState {
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

fn perms(owner: u32, reader: u32) -> Vec<String> {
    vec![format!("n{owner}"), format!("r{reader}")]
}

impl XenDriver {
    /// Connect to xenstored as `config` says (over ssh: log in, then reach the remote socket
    /// through the same connection).
    pub async fn open(config: XenConfig) -> Result<Self> {
        let xs = XenStore::connect(&config.endpoint, &config.host, config.request_timeout)
            .await
            .map_err(xs_err("connecting to xenstored"))?;
        let xs = Arc::new(xs);
        // One request proves it is a xenstored (a read: listing /local/domain costs one
        // request per 4 KiB of domain ids).
        xs.read(NO_TX, "/local/domain")
            .await
            .map_err(xs_err("reading /local/domain"))?;
        let dom0_host = Dom0::new(config.host.clone());
        let userdata = Userdata::new(config.host.clone());
        // is_local: asked at connect time where it is cheap (this machine) or needed (hotplug);
        // over ssh with hotplug=no it would cost a round trip that only a listing or an
        // attach's stored configuration needs, so it is asked then (`config_reachable`).
        let dom0 = if config.host.is_local() || config.hotplug != Hotplug::No {
            dom0_host.in_dom0().await?
        } else {
            false
        };
        if config.hotplug == Hotplug::Script && !dom0 {
            return Err(Error::InvalidUri {
                uri: format!("xen+ssh://{}/", config.host.name()),
                reason: format!(
                    "hotplug=script runs libxl's hotplug scripts, which work only in Domain-0, and {} is not Domain-0 (/proc/xen/capabilities does not say control_d); leave hotplug out (auto) or write hotplug=no",
                    config.host.name()
                ),
            });
        }
        Ok(XenDriver {
            inner: Arc::new(Inner {
                xs,
                config,
                closed: AtomicBool::new(false),
                is_dom0: dom0,
                dom0_host,
                userdata,
                remote_dom0: tokio::sync::OnceCell::new(),
            }),
            pending: Default::default(),
        })
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::backend(crate::NAME, "the connection is closed"));
        }
        Ok(())
    }

    /// After an attach's commit whose answer never came: whether it landed, asked again
    /// (on a new connection: the old one was closed). `Some(true)`: the device's three
    /// directories are there and, for a disk given a loop device here, the backend's `node`
    /// names that loop device; `Some(false)`: none of them is there, or they are another
    /// device's (another `node`); `None`: xenstored could not be asked (three tries), or only
    /// some of them are there.
    async fn commit_landed(&self, paths: &DevPaths, loop_node: Option<&str>) -> Option<bool> {
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let reqs = vec![
                Req::read(&paths.frontend),
                Req::read(&paths.backend),
                Req::read(&paths.libxl),
                Req::read(&format!("{}/node", paths.backend)),
            ];
            let Ok(r) = self.xs.batch(NO_TX, reqs).await else {
                continue;
            };
            let Ok(v) = r
                .into_iter()
                .map(opt)
                .collect::<std::result::Result<Vec<_>, _>>()
            else {
                continue;
            };
            let there = v[..3].iter().filter(|x| x.is_some()).count();
            let ours = loop_node.is_none_or(|n| v[3].as_deref() == Some(n.as_bytes()));
            return match there {
                0 => Some(false),
                3 => Some(ours),
                _ => None,
            };
        }
        None
    }

    /// An attach failed before anything of the device was committed (`e`): release the loop
    /// device made for it (under the lock `held`, or taken now) and return `e`, or say what
    /// could not be undone (`config_left`: libxl's configuration not put back).
    async fn not_attached(
        &self,
        e: Error,
        loop_node: Option<&str>,
        held: Option<&HeldLock>,
        config_left: Option<String>,
    ) -> Error {
        let mut left: Vec<String> = config_left.into_iter().collect();
        if let Some(node) = loop_node {
            if let Err(le) = self.release_loop(node, held).await {
                left.push(format!(
                    "loop device {node} bound (releasing it failed: {})",
                    describe(&le)
                ));
            }
        }
        if left.is_empty() {
            e
        } else {
            rollback_failed(
                e,
                &left,
                "nothing of the device was written; release a loop device in Domain-0 with `losetup -d`",
            )
        }
    }

    /// Release a loop device made for a disk whose nodes are gone (or were never written),
    /// under the hotplug lock (`held`, or taken now).
    async fn release_loop(&self, node: &str, held: Option<&HeldLock>) -> Result<()> {
        match held {
            Some(_) => self.dom0_host.loop_detach(node).await,
            None => {
                let _lock = self.dom0_host.lock("block").await?;
                self.dom0_host.loop_detach(node).await
            }
        }
    }

    /// Whether libxl's stored configurations are at hand: the host (this machine, or the
    /// remote one of `xen+ssh://`) is Domain-0.
    async fn config_reachable(&self) -> Result<bool> {
        // is_local: see `open`, which asked this machine already.
        if self.is_dom0 || self.config.host.is_local() {
            return Ok(self.is_dom0);
        }
        self.remote_dom0
            .get_or_try_init(|| self.dom0_host.in_dom0())
            .await
            .copied()
    }

    /// The files of `domid`'s stored configuration, and its `vm` node (which names them).
    async fn config_files(&self, domid: u32) -> Result<(Files, String)> {
        let vm = self
            .xs
            .read(NO_TX, &format!("/local/domain/{domid}/vm"))
            .await
            .map_err(xs_err("reading a domain's uuid"))?;
        match vm.as_deref().and_then(libxl::uuid_from_vm) {
            Some(uuid) => Ok((Files::new(domid, &uuid), vm.unwrap_or_default())),
            None => Err(libxl::config_error(LibxlConfigError::NoUuid { domid })),
        }
    }

    /// Take `domid`'s configuration lock and read the document for a change, as `recorded`
    /// says: `None` when the configuration is to be left alone or is out of reach (refused for
    /// `recorded=yes`). Missing or malformed documents are errors.
    async fn config_begin(&self, domid: u32, recorded: Recorded) -> Result<Option<ConfigUpdate>> {
        if recorded == Recorded::No {
            return Ok(None);
        }
        if !self.config_reachable().await? {
            if recorded == Recorded::Yes {
                return Err(Error::Unsupported {
                    driver: crate::NAME.into(),
                    operation: "recorded=yes".into(),
                    detail: format!(
                        "libxl's stored configuration is in Domain-0's {} and {} is not Domain-0 (this connection reaches only xenstored); run vdev in Domain-0 (xen:///) or connect with xen+ssh://DOM0/, or leave recorded out (the device is then attached unrecorded, listed recorded=unknown)",
                        libxl::LIB_DIR,
                        self.dom0_host.name()
                    ),
                });
            }
            return Ok(None);
        }
        let (files, vm) = self.config_files(domid).await?;
        let (lock, data) = self
            .userdata
            .lock_read(&files, self.config.attach_timeout)
            .await?;
        let original = data.clone().unwrap_or_default();
        let config = libxl::parse_file(&files, data)?;
        Ok(Some(ConfigUpdate {
            files,
            vm,
            config,
            original,
            lock,
            written: AtomicBool::new(false),
            change: std::sync::Mutex::new(None),
        }))
    }

    /// Before a detach changes anything: a document that the removal could not change
    /// (malformed) is refused now. A missing one is fine (nothing to remove).
    async fn check_config_before_detach(&self, domid: u32) -> Result<()> {
        if !self.config_reachable().await? {
            return Ok(());
        }
        let Ok((files, _)) = self.config_files(domid).await else {
            return Ok(());
        };
        match self.userdata.read(&files).await? {
            None => Ok(()),
            Some(b) => libxl::parse_file(&files, Some(b)).map(|_| ()),
        }
    }

    /// What a listing says about `domid`'s devices being recorded.
    async fn config_view(&self, domid: u32) -> ConfigView {
        if !matches!(self.config_reachable().await, Ok(true)) {
            return ConfigView::Unknown;
        }
        let vm = match self
            .xs
            .read(NO_TX, &format!("/local/domain/{domid}/vm"))
            .await
        {
            Ok(vm) => vm,
            Err(_) => return ConfigView::Unknown,
        };
        let files = match vm.as_deref().and_then(libxl::uuid_from_vm) {
            Some(uuid) => Files::new(domid, &uuid),
            // Not created by libxl: libxl keeps nothing for it.
            None => return ConfigView::Known(None),
        };
        match self.userdata.read(&files).await {
            Ok(None) => ConfigView::Known(None),
            Ok(Some(b)) => match Config::parse(&b) {
                Ok(c) => ConfigView::Known(Some(c)),
                Err(reason) => {
                    tracing::warn!(file = %files.data, "libxl's configuration is malformed: {reason}");
                    ConfigView::Unknown
                }
            },
            Err(e) => {
                tracing::warn!(file = %files.data, "{e}");
                ConfigView::Unknown
            }
        }
    }

    /// A device's identity in libxl's configuration: a disk's `dev` as libxl recorded it in
    /// XenStore, a NIC's handle.
    async fn config_ident(&self, kind: Kind, domid: u32, devid: u32) -> Result<Option<Ident>> {
        Ok(match kind {
            Kind::Vif => Some(Ident::Nic(devid)),
            Kind::Vbd => {
                let r = self
                    .xs
                    .read(
                        NO_TX,
                        &format!("{}/dev", vbd::libxl_path(kind, domid, devid)),
                    )
                    .await
                    .map_err(xs_err("reading a disk's name"))?;
                r.map(Ident::Disk)
            }
        })
    }

    async fn domain_by_id(&self, id: u32) -> Result<Option<Domain>> {
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
        Ok(Some(Domain {
            id,
            name: name.unwrap_or_else(|| id.to_string()),
        }))
    }

    async fn domains(&self) -> Result<Vec<Domain>> {
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
            .map(|(id, n)| Domain {
                id,
                name: n.ok().map(utf8).unwrap_or_else(|| id.to_string()),
            })
            .collect();
        out.sort_by_key(|d| d.id);
        Ok(out)
    }

    /// The backend domain a disk names (name or id); unknown is an error before anything is written.
    async fn backend_domain(&self, given: Option<&str>) -> Result<Domain> {
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

    /// Wait (by watch) until `pred` holds for the value at `path` or `timeout` passes. Returns the
    /// last value read.
    async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(Option<&str>) -> bool,
    ) -> Result<(bool, Option<String>)> {
        let mut w = self
            .xs
            .watch(path)
            .await
            .map_err(xs_err("watching a device state"))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self
                .xs
                .read(NO_TX, path)
                .await
                .map_err(xs_err("reading a device state"))?;
            if pred(v.as_deref()) {
                return Ok((true, v));
            }
            match tokio::time::timeout_at(deadline, w.next()).await {
                Err(_) => return Ok((false, v)),
                Ok(None) => {
                    return Err(Error::backend(
                        crate::NAME,
                        "the xenstored connection was lost while waiting for a device",
                    ))
                }
                Ok(Some(_)) => {}
            }
        }
    }

    /// Whether this driver does the hotplug work of a device served by `backend`.
    fn runs_hotplug(&self, backend: u32) -> bool {
        backend == 0
            && match self.config.hotplug {
                Hotplug::Auto => self.is_dom0,
                Hotplug::Script => true,
                Hotplug::No => false,
            }
    }

    /// Run the backend's hotplug script as libxl does: for a vbd `block add|remove`, for a vif
    /// `vif-bridge online|offline` (with `vif=vifDOMID.HANDLE`). Bounded by libxl's 40 s.
    async fn run_hotplug(
        &self,
        kind: Kind,
        be: &str,
        add: bool,
        domid: u32,
        devid: u32,
    ) -> Result<()> {
        let default = match kind {
            Kind::Vbd => vbd::BLOCK_SCRIPT,
            Kind::Vif => crate::vif::BRIDGE_SCRIPT,
        };
        let script = self
            .xs
            .read(NO_TX, &format!("{be}/script"))
            .await
            .map_err(xs_err("reading the hotplug script"))?
            .unwrap_or_else(|| default.to_owned());
        if !script.starts_with("/etc/xen/scripts/") || script.contains("..") {
            return Err(Error::backend(
                crate::NAME,
                format!("refusing to run hotplug script '{script}': not under /etc/xen/scripts"),
            ));
        }
        let (action, extra) = match kind {
            Kind::Vbd => (if add { "add" } else { "remove" }, Vec::new()),
            Kind::Vif => (
                if add { "online" } else { "offline" },
                vec![("vif", format!("vif{domid}.{devid}"))],
            ),
        };
        tracing::debug!(%script, action, %be, "running hotplug script");
        let out = self
            .dom0_host
            .run_script(&script, action, kind.xs(), be, &extra)
            .await?;
        if out.success {
            return Ok(());
        }
        // The scripts say why in hotplug-error; stderr otherwise.
        let why = self
            .xs
            .read(NO_TX, &format!("{be}/hotplug-error"))
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| out.stderr.trim().to_owned());
        Err(Error::backend(
            crate::NAME,
            format!(
                "hotplug script {script} {action} failed ({}): {why}",
                out.status
            ),
        ))
    }

    /// Do what `/etc/xen/scripts/block add` does, before the disk's nodes are written (see
    /// [`hotplug`]): the sharing checks, the loop device for a file, and the keys the script
    /// would write. The lock is held until the caller has written the nodes.
    async fn native_block_add(&self, frontend: u32, spec: &DiskSpec) -> Result<Plug> {
        let lock = self.dom0_host.lock("block").await?;
        let backing = self.dom0_host.inspect(&spec.params).await?;
        let nums = match &backing {
            Backing::Device { num, .. } => vec![*num],
            Backing::File {
                path,
                dev,
                ino,
                writable,
            } => {
                if spec.mode == "w" && !writable {
                    return Err(Error::InvalidAttribute {
                        name: "uname".into(),
                        reason: format!(
                            "{path} is read-only and cannot be given to a guest read-write; attach it with mode=r"
                        ),
                    });
                }
                self.dom0_host.loops_backed_by(*dev, *ino).await?
            }
        };
        if !nums.is_empty() {
            let busy = |how: String| {
                Error::InvalidAttribute {
                name: "uname".into(),
                reason: format!(
                    "{} is in use: {how}, which mode={} does not allow (read-write needs it unused; read-only needs it nowhere read-write)",
                    spec.params, spec.mode
                ),
            }
            };
            if let Some(m) = self.dom0_host.mounted_conflict(&nums, spec.mode).await? {
                return Err(busy(format!("{m} in Domain-0")));
            }
            if let Some(g) = self.vbd_conflict(&nums, spec.mode, frontend).await? {
                return Err(busy(g));
            }
        }
        let (keys, node) = match backing {
            Backing::Device { path, num } => (
                vec![
                    ("physical-device", num.to_xenstore()),
                    ("physical-device-path", path),
                ],
                None,
            ),
            Backing::File { path, .. } => {
                let (node, num) = self.dom0_host.loop_attach(&path, spec.mode).await?;
                (
                    vec![
                        ("node", node.clone()),
                        ("physical-device", num.to_xenstore()),
                        ("physical-device-path", node.clone()),
                    ],
                    Some(node),
                )
            }
        };
        let mut keys = keys;
        keys.push(("hotplug-status", "connected".into()));
        Ok(Plug::Native { keys, node, lock })
    }

    /// A vbd served by Domain-0 to another domain than `frontend` that uses one of `nums` in a
    /// way `mode` conflicts with (the block script's check), described.
    async fn vbd_conflict(
        &self,
        nums: &[hotplug::DevNum],
        mode: &str,
        frontend: u32,
    ) -> Result<Option<String>> {
        let f = xs_err("reading the disks Domain-0 serves");
        let base = "/local/domain/0/backend/vbd";
        let doms: Vec<String> = self.xs.directory(NO_TX, base).await.map_err(&f)?;
        let paths: Vec<String> = doms.iter().map(|d| format!("{base}/{d}")).collect();
        let lists = self.xs.directories(NO_TX, &paths).await.map_err(&f)?;
        let mut devs = Vec::new();
        for (d, list) in doms.iter().zip(lists) {
            devs.extend(list.into_iter().map(|dev| (d.clone(), dev)));
        }
        let mut reqs = Vec::new();
        for (d, dev) in &devs {
            reqs.push(Req::read(&format!("{base}/{d}/{dev}/physical-device")));
            reqs.push(Req::read(&format!("{base}/{d}/{dev}/mode")));
        }
        let vals = self.xs.batch(NO_TX, reqs).await.map_err(&f)?;
        let mut vals = vals.into_iter();
        for (d, dev) in devs {
            let pd = vals.next().map(opt).transpose().map_err(&f)?.flatten();
            let m = vals.next().map(opt).transpose().map_err(&f)?.flatten();
            let Some(num) = pd
                .map(utf8)
                .and_then(|s| hotplug::DevNum::from_xenstore(&s))
            else {
                continue;
            };
            if !nums.contains(&num) || d == frontend.to_string() {
                continue;
            }
            let theirs = m.map(utf8).unwrap_or_default();
            if mode == "w" || theirs.contains('w') {
                return Ok(Some(format!(
                    "domain {d} has it as vbd {dev} (mode {theirs})"
                )));
            }
        }
        Ok(None)
    }

    /// Undo a device's hotplug work when this driver does it and it was done (`hotplug-status`
    /// present, libxl's test), before its nodes are removed: the script's `remove`/`offline`
    /// runs now (it reads the nodes); for disks of the standard block script, done natively,
    /// the loop device in `node` is returned instead, to be released only once the nodes
    /// naming it are gone ([`Self::release_after_removal`]). Script failures are logged.
    async fn hotplug_remove(&self, kind: Kind, be: &str, domid: u32, devid: u32) -> Option<String> {
        let b = vbd::check_backend_path(kind, be, domid, devid)?;
        if !self.runs_hotplug(b) {
            return None;
        }
        let keys = ["hotplug-status", "script", "node"]
            .iter()
            .map(|k| Req::read(&format!("{be}/{k}")))
            .collect();
        let Ok(vals) = self.xs.batch(NO_TX, keys).await else {
            return None;
        };
        let v: Vec<Option<String>> = vals
            .into_iter()
            .map(|r| opt(r).ok().flatten().map(utf8))
            .collect();
        v[0].as_ref()?;
        let native = kind == Kind::Vbd
            && self.config.hotplug == Hotplug::Auto
            && v[1].as_deref().is_none_or(|s| s == vbd::BLOCK_SCRIPT);
        if native {
            return v[2].clone().filter(|node| node.starts_with("/dev/loop"));
        }
        if let Err(e) = self.run_hotplug(kind, be, false, domid, devid).await {
            tracing::warn!(%be, "{e}");
        }
        None
    }

    /// Remove a device's nodes, then release the loop device they named (`loop_node`, from
    /// [`Self::hotplug_remove`]): never before, so that no node names a loop device that
    /// `losetup --find` may give to another image. A loop device that cannot be released is
    /// logged (the device is gone; `losetup -d` frees it).
    async fn release_after_removal(
        &self,
        kind: Kind,
        domid: u32,
        devid: u32,
        backend: Option<&str>,
        loop_node: Option<String>,
    ) -> Result<()> {
        self.remove_dev(kind, domid, devid, backend, ConfigOp::Remove)
            .await?;
        if let Some(node) = loop_node {
            if let Err(e) = self.release_loop(&node, None).await {
                tracing::warn!(%node, "releasing the loop device of a removed disk: {e}");
            }
        }
        Ok(())
    }

    /// The configuration change that goes with removing a device's nodes: the lock held and
    /// the document changed in memory, or `None` when there is nothing to change. A detach
    /// (`Remove`) fails only when the lock cannot be had (the device then stays, closed, and a
    /// later detach finishes it); a missing or malformed document, or a roll back that cannot
    /// restore, is logged and the nodes are removed anyway (an entry without a device is
    /// valid for libxl: it ignores it and the next attach of that identity replaces it).
    async fn removal_config(
        &self,
        kind: Kind,
        domid: u32,
        devid: u32,
        op: ConfigOp,
    ) -> Result<Option<(ConfigUpdate, Config)>> {
        let (id, previous) = match op {
            ConfigOp::Keep => return Ok(None),
            ConfigOp::Remove => match self.config_ident(kind, domid, devid).await? {
                Some(id) => (id, None),
                None => return Ok(None),
            },
            ConfigOp::Restore(id, prev) => (id, Some(prev)),
        };
        let restoring = previous.is_some();
        let upd = match self.config_begin(domid, Recorded::Auto).await {
            Ok(Some(u)) => u,
            Ok(None) => return Ok(None),
            Err(e @ (Error::Timeout { .. } | Error::Remote { .. })) if !restoring => return Err(e),
            Err(e) => {
                tracing::warn!(
                    domid,
                    "{} left in libxl's configuration: {e}",
                    id.describe()
                );
                return Ok(None);
            }
        };
        let mut c = upd.config.clone();
        match previous {
            Some(prev) => c.restore(&id, prev),
            None => {
                c.remove(&id);
            }
        }
        if c == upd.config {
            return Ok(None);
        }
        Ok(Some((upd, c)))
    }

    /// Remove a vbd's nodes and every parent left empty, in one transaction, and change libxl's
    /// stored configuration as `op` says (written inside the transaction before its commit,
    /// put back if the transaction fails).
    async fn remove_dev(
        &self,
        kind: Kind,
        domid: u32,
        devid: u32,
        backend: Option<&str>,
        op: ConfigOp,
    ) -> Result<()> {
        let fe = vbd::frontend_path(kind, domid, devid);
        let lx = vbd::libxl_path(kind, domid, devid);
        let upd = self.removal_config(kind, domid, devid, op).await?;
        let upd = &upd;
        let res = self
            .xs
            .transaction("removing a disk's XenStore nodes", |tx| {
                let (fe, lx) = (fe.clone(), lx.clone());
                let be = backend.map(str::to_owned);
                async move {
                    if let Some((u, c)) = upd {
                        if let Err(e) = u.write(&self.userdata, c).await {
                            return Ok(Body::Abort(e));
                        }
                    }
                    let mut paths = vec![fe, lx];
                    paths.extend(be);
                    for p in &paths {
                        rm(&self.xs, tx, p).await?;
                    }
                    // Parents left empty: DOMID/device/vbd, BACKEND/backend/vbd/DOMID and .../vbd,
                    // /libxl/DOMID/device/vbd (not /libxl/DOMID/device, which libxl keeps).
                    let mut parents =
                        vec![vbd::frontend_dir(kind, domid), vbd::libxl_dir(kind, domid)];
                    if let Some(be) = &paths.get(2) {
                        if let Some((dom_dir, _)) = be.rsplit_once('/') {
                            parents.push(dom_dir.to_owned());
                            if let Some((vbd_dir, _)) = dom_dir.rsplit_once('/') {
                                parents.push(vbd_dir.to_owned());
                            }
                        }
                    }
                    for p in parents {
                        if self.xs.is_empty_dir(tx, &p).await? == Some(true) {
                            rm(&self.xs, tx, &p).await?;
                        }
                    }
                    Ok(Body::Commit(()))
                }
            })
            .await;
        if let (Some((u, _)), Err(e)) = (upd, &res) {
            if let Err(left) = u.undo(&self.userdata).await {
                return Err(Error::backend(
                    crate::NAME,
                    format!("{}; also left: {left}", describe(e)),
                ));
            }
        }
        res
    }

    /// The backend path of an existing vbd: from libxl's record, else the frontend's key when
    /// it has the expected form. `None` when neither exists.
    async fn existing_backend(
        &self,
        kind: Kind,
        domid: u32,
        devid: u32,
    ) -> Result<Option<(bool, Option<String>)>> {
        let r = self
            .xs
            .batch(
                NO_TX,
                vec![
                    Req::read(&format!("{}/backend", vbd::libxl_path(kind, domid, devid))),
                    Req::read(&format!(
                        "{}/backend",
                        vbd::frontend_path(kind, domid, devid)
                    )),
                    Req::read(&vbd::libxl_path(kind, domid, devid)),
                    Req::read(&vbd::frontend_path(kind, domid, devid)),
                ],
            )
            .await
            .map_err(xs_err("reading a disk"))?;
        let mut it = r.into_iter().map(|x| opt(x).map(|o| o.map(utf8)));
        let (lxb, feb, lx, fe) = (
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
            it.next().unwrap(),
        );
        let f = xs_err("reading a disk");
        let (lxb, feb, lx, fe) = (
            lxb.map_err(&f)?,
            feb.map_err(&f)?,
            lx.map_err(&f)?,
            fe.map_err(&f)?,
        );
        if lx.is_none() && fe.is_none() {
            return Ok(None);
        }
        let be = lxb
            .into_iter()
            .chain(feb)
            .find(|p| vbd::check_backend_path(kind, p, domid, devid).is_some());
        Ok(Some((true, be)))
    }

    async fn list_kind(
        &self,
        kind: Kind,
        domain: &Domain,
        view: &ConfigView,
    ) -> Result<Vec<Device>> {
        let domid = domain.id;
        let mut devids: Vec<u32> = Vec::new();
        for dir in [vbd::frontend_dir(kind, domid), vbd::libxl_dir(kind, domid)] {
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
            let fe = vbd::frontend_path(kind, domid, *d);
            reqs.extend(fe_keys.iter().map(|k| Req::read(&format!("{fe}/{k}"))));
            reqs.push(Req::read(&format!(
                "{}/backend",
                vbd::libxl_path(kind, domid, *d)
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
                .find(|p| vbd::check_backend_path(kind, p, domid, *d).is_some());
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
            .filter_map(|(i, p)| vbd::check_backend_path(kind, p.as_deref()?, domid, devids[i]))
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
            .filter_map(|(id, n)| {
                n.ok().map(|n| Domain {
                    id: *id,
                    name: utf8(n),
                })
            })
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
                .and_then(|p| vbd::check_backend_path(kind, p, domid, *d))
            {
                attrs.insert("backend-id".into(), bd.to_string());
                if let Some(dom) = domains.iter().find(|x| x.id == bd) {
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

    async fn attach_disk(&self, domain: &Domain, spec: DiskSpec) -> Result<DeviceRef> {
        let taken = format!("{} (dev {})", spec.devid, spec.dev);
        let bdom = self.backend_domain(spec.backend.as_deref()).await?;
        check_backend(&bdom, domain, "disk")?;
        let plug = if !self.runs_hotplug(bdom.id) {
            Plug::None
        } else if self.config.hotplug == Hotplug::Auto {
            self.native_block_add(domain.id, &spec).await?
        } else {
            Plug::Script
        };
        self.attach_dev(
            Kind::Vbd,
            domain,
            bdom,
            Some(spec.devid),
            taken,
            |devid, paths, bdom| {
                debug_assert_eq!(devid, spec.devid);
                vbd::layout(domain.id, bdom, &spec, paths)
            },
            plug,
            spec.recorded,
            |_| (Ident::Disk(spec.dev.clone()), libxl::disk_entry(&spec)),
        )
        .await
    }

    async fn attach_nic(&self, domain: &Domain, spec: crate::vif::NicSpec) -> Result<DeviceRef> {
        let bdom = self.backend_domain(spec.backend.as_deref()).await?;
        check_backend(&bdom, domain, "network")?;
        let plug = if self.runs_hotplug(bdom.id) {
            Plug::Script
        } else {
            Plug::None
        };
        self.attach_dev(
            Kind::Vif,
            domain,
            bdom,
            None,
            String::new(),
            |handle, paths, bdom| crate::vif::layout(domain.id, bdom, handle, &spec, paths),
            plug,
            spec.recorded,
            |handle| (Ident::Nic(handle), libxl::nic_entry(handle, &spec)),
        )
        .await
    }

    /// Write a device in libxl's layout in one transaction (plus the keys native hotplug
    /// prepared), wait for the backend to reach InitWait, then run the hotplug script when
    /// `plug` says so, as libxl does. `devid`: the device number, or `None` to take the lowest
    /// free one (vif handles) inside the transaction. On failure the nodes are removed again.
    ///
    /// libxl's stored configuration is changed as libxl changes it (`recorded` permitting):
    /// its lock taken and the document read before the transaction; in each attempt of the
    /// transaction, once the device is known not to exist, the document with the device's
    /// entry (`record`) written, then the nodes; the document put back if the transaction
    /// finally fails; the lock released before the wait for the backend.
    #[allow(clippy::too_many_arguments)]
    async fn attach_dev(
        &self,
        kind: Kind,
        domain: &Domain,
        bdom: Domain,
        devid: Option<u32>,
        taken: String,
        build: impl Fn(u32, &DevPaths, u32) -> (vbd::Keys, vbd::Keys),
        plug: Plug,
        recorded: Recorded,
        record: impl Fn(u32) -> (Ident, serde_json::Value),
    ) -> Result<DeviceRef> {
        let domid = domain.id;
        let what = kind.device_type();
        let script = matches!(plug, Plug::Script);
        let (lock, native_keys, loop_node) = match plug {
            Plug::Native { keys, lock, node } => (Some(lock), keys, node),
            Plug::Script | Plug::None => (None, Vec::new(), None),
        };
        if let Some(l) = &lock {
            // Over ssh the lock lives in the connection's shell: if that connection was lost
            // since, another user may have the lock now, and the sharing checks are void.
            if !l.still_held().await {
                let e = Error::Remote {
                    host: self.dom0_host.name(),
                    kind: vdev_core::RemoteErrorKind::Disconnected,
                    message: "the ssh connection that held the hotplug lock was lost during the attach; try again".into(),
                };
                return Err(self.not_attached(e, loop_node.as_deref(), None, None).await);
            }
        }
        let upd = match self.config_begin(domid, recorded).await {
            Ok(u) => u,
            Err(e) => {
                return Err(self
                    .not_attached(e, loop_node.as_deref(), lock.as_ref(), None)
                    .await)
            }
        };
        let res = self
            .xs
            .transaction_outcome(&format!("attaching a {what}"), |tx| {
                let (bdom, build, taken, what, native_keys, upd, record) =
                    (&bdom, &build, &taken, &what, &native_keys, &upd, &record);
                async move {
                    let checks = self
                        .xs
                        .batch(
                            tx,
                            vec![
                                Req::read(&format!("/local/domain/{domid}")),
                                Req::read(&format!("/local/domain/{}", bdom.id)),
                                Req::read(&format!("/local/domain/{domid}/vm")),
                            ],
                        )
                        .await?;
                    let mut checks = checks.into_iter().map(|r| opt(r).map(|o| o.map(utf8)));
                    let mut next = || checks.next().expect("three answers");
                    let (dom, bdom_node, vm) = (next()?, next()?, next()?);
                    let exists = [dom.is_some(), bdom_node.is_some()];
                    // The configuration read is this domain's, not a later one with its id.
                    let same = upd.as_ref().is_none_or(|u| vm.as_deref() == Some(&*u.vm));
                    if !exists[0] || !same {
                        return Ok(Body::Abort(Error::DomainNotFound {
                            domain: domain.name.clone(),
                        }));
                    }
                    if !exists[1] {
                        return Ok(Body::Abort(Error::InvalidAttribute {
                            name: "backend".into(),
                            reason: format!("the backend domain {} is gone", bdom.name),
                        }));
                    }
                    let devid_given = devid;
                    let devid = match devid {
                        Some(d) => d,
                        None => {
                            let mut used = Vec::new();
                            let be_dir = DevPaths::new(kind, domid, bdom.id, 0).backend;
                            let be_dir = be_dir.rsplit_once('/').map(|(d, _)| d.to_owned());
                            for dir in [vbd::frontend_dir(kind, domid), vbd::libxl_dir(kind, domid)]
                                .into_iter()
                                .chain(be_dir)
                            {
                                used.extend(
                                    self.xs
                                        .directory(tx, &dir)
                                        .await?
                                        .iter()
                                        .filter_map(|x| x.parse::<u32>().ok()),
                                );
                            }
                            (0..).find(|h| !used.contains(h)).expect("a free handle")
                        }
                    };
                    let paths = DevPaths::new(kind, domid, bdom.id, devid);
                    let checks = self
                        .xs
                        .batch(
                            tx,
                            vec![
                                Req::read(&paths.frontend),
                                Req::read(&paths.backend),
                                Req::read(&paths.libxl),
                            ],
                        )
                        .await?;
                    for r in checks {
                        if opt(r)?.is_some() {
                            if devid_given.is_none() {
                                // Free when listed, taken when read: another attach committed
                                // in between. Choose again.
                                return Ok(Body::Retry);
                            }
                            return Ok(Body::Abort(Error::DeviceExists {
                                domain: domain.name.clone(),
                                device_type: what.to_string(),
                                reference: if taken.is_empty() {
                                    devid.to_string()
                                } else {
                                    taken.clone()
                                },
                            }));
                        }
                    }
                    if let Some(u) = upd {
                        let (id, entry) = record(devid);
                        let mut c = u.config.clone();
                        let previous = c.set(&id, entry);
                        if previous.is_some() {
                            tracing::debug!(
                                domid,
                                "{} replaces a stale entry in libxl's configuration",
                                id.describe()
                            );
                        }
                        if let Err(e) = u.write(&self.userdata, &c).await {
                            return Ok(Body::Abort(e));
                        }
                        *u.change.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, previous));
                    }
                    let (be_keys, fe_keys) = build(devid, &paths, bdom.id);
                    let mut reqs = Vec::new();
                    let be_perms = perms(bdom.id, domid);
                    let fe_perms = perms(domid, bdom.id);
                    let lx_perms = vec!["n0".to_owned()];
                    // A node made by a privileged connection inherits its parent's permissions
                    // (xenstored), so only the three directories, and a key whose permissions
                    // differ from its directory's, need SET_PERMS: 3-4 requests, not ~35.
                    let mut node = |path: &str, value: Option<&str>, p: &Vec<String>| {
                        reqs.push(match value {
                            Some(v) => Req::write(path, v),
                            None => Req::mkdir(path),
                        });
                        if value.is_none() {
                            reqs.push(Req::set_perms(path, p));
                        }
                    };
                    let mut reqs_extra = Vec::new();
                    node(&paths.frontend, None, &fe_perms);
                    for (k, v) in &fe_keys {
                        let path = format!("{}/{k}", paths.frontend);
                        node(&path, Some(v), &fe_perms);
                        // libxl makes a vif's mtu the backend's, readable by the guest.
                        if *k == "mtu" {
                            reqs_extra.push(Req::set_perms(&path, &be_perms));
                        }
                    }
                    node(&paths.backend, None, &be_perms);
                    for (k, v) in be_keys.iter().chain(native_keys.iter()) {
                        node(&format!("{}/{k}", paths.backend), Some(v), &be_perms);
                    }
                    node(&paths.libxl, None, &lx_perms);
                    node(
                        &format!("{}/frontend", paths.libxl),
                        Some(&paths.frontend),
                        &lx_perms,
                    );
                    node(
                        &format!("{}/backend", paths.libxl),
                        Some(&paths.backend),
                        &lx_perms,
                    );
                    for (k, v) in be_keys.iter().filter(|(k, _)| *k != "frontend") {
                        node(&format!("{}/{k}", paths.libxl), Some(v), &lx_perms);
                    }
                    reqs.extend(reqs_extra);
                    self.xs.batch_ok(tx, reqs).await?;
                    Ok(Body::Commit(devid))
                }
            })
            .await;
        // An unanswered commit: ask again whether it landed (the old connection is closed, so
        // its transaction is over once xenstored sees that).
        let res = match res {
            Ok(devid) => Ok(devid),
            Err(TxFailure::Failed(e)) => Err((e, Landed::No)),
            Err(TxFailure::Unknown(e, devid)) => {
                let paths = DevPaths::new(kind, domid, bdom.id, devid);
                match self.commit_landed(&paths, loop_node.as_deref()).await {
                    Some(true) => {
                        tracing::info!(domain = %domain.name, devid, "the attach's commit went unanswered, and landed");
                        Ok(devid)
                    }
                    Some(false) => Err((e, Landed::No)),
                    None => Err((e, Landed::Unknown(devid))),
                }
            }
        };
        // Unlocked before the wait, as libxl does; the document put back if nothing committed
        // (kept when the outcome is unknown: an entry without a device is harmless to libxl).
        let mut config_left = None;
        let change = match upd {
            Some(u) => {
                if matches!(res, Err((_, Landed::No))) {
                    config_left = u.undo(&self.userdata).await.err();
                }
                let c = u.change.lock().unwrap_or_else(|p| p.into_inner()).take();
                c
            }
            None => None,
        };
        let devid = match res {
            Ok(devid) => devid,
            Err((e, Landed::No)) => {
                return Err(self
                    .not_attached(e, loop_node.as_deref(), lock.as_ref(), config_left)
                    .await);
            }
            Err((e, Landed::Unknown(devid))) => {
                let paths = DevPaths::new(kind, domid, bdom.id, devid);
                let left = match &loop_node {
                    Some(node) => format!(
                        "; the loop device {node} is left bound for it; if the disk is not there, release it in Domain-0 with `losetup -d {node}`"
                    ),
                    None => String::new(),
                };
                return Err(Error::backend_with(
                    crate::NAME,
                    format!(
                        "attaching {what} {devid} to {}: xenstored did not answer the commit and could not be asked again, so the outcome is unknown; once xenstored answers, `vdev devices {} {what}` shows whether {what} {devid} exists ({}){left}",
                        domain.name, domain.name, paths.backend
                    ),
                    e,
                ));
            }
        };
        let undo_config = || match &change {
            Some((id, prev)) => ConfigOp::Restore(id.clone(), prev.clone()),
            None => ConfigOp::Keep,
        };
        // The nodes (with what native hotplug prepared) are written: others may check sharing.
        drop(lock);
        let paths = DevPaths::new(kind, domid, bdom.id, devid);
        let reference = DeviceRef::new(devid.to_string())?;
        // The backend driver answers by moving to InitWait (2); libxl runs the hotplug script
        // then. Connected (4) follows once the backing is there and the frontend has connected.
        let state = format!("{}/state", paths.backend);
        let res = self
            .wait_for(&state, self.config.attach_timeout, |v| {
                matches!(v, Some("2" | "3" | "4" | "5" | "6"))
            })
            .await;
        let mut ran_script = false;
        let fail = match res {
            Ok((true, Some(v))) if v == "5" || v == "6" => Error::backend(
                crate::NAME,
                format!("the {what} backend in {} closed at once (state {v}); its hotplug or backing failed", bdom.name),
            ),
            Ok((true, _)) if !script => {
                tracing::debug!(domain = %domain.name, %reference, "{what} attached");
                return Ok(reference);
            }
            Ok((true, _)) => {
                ran_script = true;
                match self
                    .run_hotplug(kind, &paths.backend, true, domid, devid)
                    .await
                {
                    Ok(()) => {
                        tracing::debug!(domain = %domain.name, %reference, "{what} attached, hotplug script run");
                        return Ok(reference);
                    }
                    Err(e) => e,
                }
            }
            Ok((false, _)) => Error::Timeout {
                operation: format!(
                    "attaching {what} {reference} to {}: the backend in {} did not reach InitWait (is its backend driver loaded?)",
                    domain.name, bdom.name
                ),
                after: self.config.attach_timeout,
            },
            Err(e) => e,
        };
        // Roll back: the domain is left as it was; what cannot be undone is reported.
        let mut left = Vec::new();
        if ran_script {
            if let Err(e) = self
                .run_hotplug(kind, &paths.backend, false, domid, devid)
                .await
            {
                tracing::warn!(be = %paths.backend, "{e}");
                left.push(format!("the hotplug script's work ({})", describe(&e)));
            }
        }
        match self
            .remove_dev(kind, domid, devid, Some(&paths.backend), undo_config())
            .await
        {
            Ok(()) => {
                if let Some(node) = &loop_node {
                    if let Err(e) = self.release_loop(node, None).await {
                        left.push(format!(
                            "loop device {node} bound (releasing it failed: {})",
                            describe(&e)
                        ));
                    }
                }
            }
            Err(e) => {
                // The nodes stay, so their loop device stays bound too.
                tracing::warn!(be = %paths.backend, "rolling back: {e}");
                left.push(format!(
                    "{}, {} and {} (removing them failed: {})",
                    paths.frontend,
                    paths.backend,
                    paths.libxl,
                    describe(&e)
                ));
                if let Some(node) = &loop_node {
                    left.push(format!("loop device {node}, which they name"));
                }
            }
        }
        if left.is_empty() {
            return Err(fail);
        }
        Err(rollback_failed(
            fail,
            &left,
            &format!(
                "remove them with a forced detach (`vdev detach {} {what} {reference} --force`)",
                domain.name
            ),
        ))
    }

    /// Detach as libxl does. `Ok(None)`: removed. `Ok(Some(backend))`: the backend did not
    /// close in time; removal is pending (the caller reports it and may finish it later).
    async fn detach_dev(
        &self,
        kind: Kind,
        domain: &Domain,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<Option<(u32, String)>> {
        let domid = domain.id;
        let not_found = || Error::DeviceNotFound {
            domain: domain.name.clone(),
            device_type: kind.device_type().to_string(),
            reference: reference.to_string(),
        };
        let r = reference.as_str();
        if r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_found());
        }
        let devid: u32 = r.parse().map_err(|_| not_found())?;
        let Some((_, be)) = self.existing_backend(kind, domid, devid).await? else {
            return Err(not_found());
        };
        if be.is_none() && !options.force {
            // Nothing says where the backend is: libxl's record is gone and the frontend's
            // `backend` key (the guest's to write) names no backend of this device. blkback may
            // still serve it, so the frontend is not removed behind its back.
            return Err(Error::DeviceBusy {
                domain: domain.name.clone(),
                device_type: kind.device_type().to_string(),
                reference: reference.to_string(),
                reason: format!(
                    "its backend cannot be found: libxl's record {} is missing or names no backend, and the frontend's backend key does not name a {} backend of this device (the guest may have changed its backend key); the backend may still serve the device, so nothing was changed; detach with force=true to remove the frontend and libxl's record anyway",
                    vbd::libxl_path(kind, domid, devid),
                    kind.xs()
                ),
            });
        }
        self.check_config_before_detach(domid).await?;
        let be = match be {
            Some(be) if !options.force => be,
            be => {
                let loop_node = match &be {
                    Some(b) => self.hotplug_remove(kind, b, domid, devid).await,
                    None => None,
                };
                return self
                    .release_after_removal(kind, domid, devid, be.as_deref(), loop_node)
                    .await
                    .map(|()| None);
            }
        };
        // Ask the backend to close, as libxl does.
        let bep = be.clone();
        self.xs
            .transaction("asking a device backend to close", |tx| {
                let bep = bep.clone();
                async move {
                    let state = opt(self
                        .xs
                        .request(tx, Req::read(&format!("{bep}/state")))
                        .await)?
                    .map(utf8);
                    // Absent: nothing to ask. Closing or closed already (a pending removal being
                    // detached again): leave it, never move a closed backend back to Closing.
                    if !matches!(state.as_deref(), None | Some("5" | "6")) {
                        self.xs
                            .batch_ok(
                                tx,
                                vec![
                                    Req::write(&format!("{bep}/online"), "0"),
                                    Req::write(&format!("{bep}/state"), "5"),
                                ],
                            )
                            .await?;
                    }
                    Ok(Body::Commit(()))
                }
            })
            .await?;
        let (done, _) = self
            .wait_for(&format!("{be}/state"), options.timeout, |v| {
                matches!(v, None | Some("6"))
            })
            .await?;
        if !done {
            return Ok(Some((devid, be)));
        }
        let loop_node = self.hotplug_remove(kind, &be, domid, devid).await;
        self.release_after_removal(kind, domid, devid, Some(&be), loop_node)
            .await
            .map(|()| None)
    }

    /// Finish a removal left pending once the backend closes: wait (by watch, for as long as
    /// the connection lives) for Closed, then do what detach would have done. Stops without
    /// touching anything when the backend goes away (someone else removed the device) or is
    /// brought back online.
    async fn finish_pending(self: Arc<Self>, kind: Kind, domid: u32, devid: u32, be: String) {
        const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);
        let res = self
            .wait_for(&format!("{be}/state"), FOREVER, |v| {
                matches!(v, None | Some("6"))
            })
            .await;
        if !matches!(res, Ok((true, Some(ref v))) if v == "6") {
            return;
        }
        let online = self.xs.read(NO_TX, &format!("{be}/online")).await;
        if !matches!(online.as_ref().map(|o| o.as_deref()), Ok(Some("0"))) {
            return;
        }
        let loop_node = self.hotplug_remove(kind, &be, domid, devid).await;
        match self
            .release_after_removal(kind, domid, devid, Some(&be), loop_node)
            .await
        {
            Ok(()) => tracing::debug!(%be, "pending removal finished"),
            Err(e) => tracing::warn!(%be, "finishing a pending removal: {e}"),
        }
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

/// A backend domain other than the frontend's.
fn check_backend(bdom: &Domain, domain: &Domain, what: &str) -> Result<()> {
    if bdom.id == domain.id {
        return Err(Error::InvalidAttribute {
            name: "backend".into(),
            reason: format!("a domain cannot be the backend of its own {what}"),
        });
    }
    Ok(())
}

/// Who does a new device's hotplug work.
enum Plug {
    /// Nobody here (another domain, udev, or `hotplug=no`).
    None,
    /// The backend's script, once the backend is in InitWait.
    Script,
    /// Done already ([`Inner::native_block_add`]): backend keys to write with the device, the
    /// loop device made, and the hotplug lock, held until the keys are written.
    Native {
        keys: Vec<(&'static str, String)>,
        node: Option<String>,
        lock: HeldLock,
    },
}

async fn rm(xs: &XenStore, tx: TxId, path: &str) -> std::result::Result<(), XsError> {
    match xs.request(tx, Req::rm(path)).await {
        Err(e) if e.is_enoent() => Ok(()),
        r => r.map(|_| ()),
    }
}

/// An attach failed (`fail`) and undoing it failed too: what is left, and how to remove it.
fn rollback_failed(fail: Error, left: &[String], remedy: &str) -> Error {
    Error::backend(
        crate::NAME,
        format!(
            "{}; rollback failed, left: {}; {remedy}",
            describe(&fail),
            left.join("; ")
        ),
    )
}

/// An error in words for a longer message: a backend error's message and its source, without
/// the driver's name.
fn describe(e: &Error) -> String {
    match e {
        Error::Backend {
            message,
            source: Some(s),
            ..
        } => format!("{message}: {s}"),
        Error::Backend { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

fn unsupported_type(t: &DeviceType) -> Error {
    Error::Unsupported {
        driver: crate::NAME.into(),
        operation: format!("device type '{t}'"),
        detail: "the xen driver supports disk and network".into(),
    }
}

/// What the Xen driver answers to an update (the core answers so itself, from the capability).
fn update_unsupported() -> Error {
    Error::Unsupported {
        driver: crate::NAME.into(),
        operation: "update".into(),
        detail: "no attribute of a Xen device can be changed in place yet (libxl changes media of HVM guests only); detach and attach again".into(),
    }
}

#[async_trait]
impl Driver for XenDriver {
    fn capabilities(&self) -> Capabilities {
        // Nothing is updatable: libxl's media change (`xl cd-insert`) exists for HVM guests
        // only, which the lab cannot run under TCG; the schema stays honest instead of half
        // implementing it.
        // Scopes: live (recorded=no) and both (recorded=yes); libxl's stored configuration
        // of a domain is never changed without the running domain.
        Capabilities {
            update: false,
            scopes: ScopeSet::LIVE.with(Scope::Both),
            ..Capabilities::ALL
        }
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        self.inner.check_open()?;
        self.inner.domains().await
    }

    async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain> {
        self.inner.check_open()?;
        let found = match key {
            DomainKey::Id(id) => self.inner.domain_by_id(*id).await?,
            DomainKey::Name(n) => self
                .inner
                .domains()
                .await?
                .into_iter()
                .find(|d| &d.name == n),
        };
        found.ok_or_else(|| Error::DomainNotFound {
            domain: match key {
                DomainKey::Id(id) => id.to_string(),
                DomainKey::Name(n) => n.clone(),
            },
        })
    }

    async fn device_types(&self) -> Result<Vec<DeviceTypeSchema>> {
        Ok(vec![vbd::schema(), crate::vif::schema()])
    }

    async fn list_devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>> {
        self.inner.check_open()?;
        if self.inner.domain_by_id(domain.id).await?.is_none() {
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
        let view = self.inner.config_view(domain.id).await;
        let mut all = Vec::new();
        for k in kinds {
            all.extend(self.inner.list_kind(k, domain, &view).await?);
        }
        Ok(all)
    }

    async fn attach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
        options: &AttachOptions,
    ) -> Result<DeviceRef> {
        self.inner.check_open()?;
        let scoped;
        let attributes = match options.scope {
            None => attributes,
            Some(scope) => {
                scoped = libxl::scope_as_recorded(attributes, scope)?;
                &scoped
            }
        };
        match Kind::of(device_type) {
            Some(Kind::Vbd) => {
                // xl's bare `target=PATH` is `phy:` for a block device in Domain-0: ask the
                // host (remote or not) only when that decides it.
                let target = attributes.get("target").map(|v| v.to_string());
                let block = match target.as_deref() {
                    Some(v)
                        if self.inner.is_dom0 && v.starts_with('/') && !v.starts_with("/dev/") =>
                    {
                        self.inner.dom0_host.is_block_device(v).await?
                    }
                    _ => false,
                };
                let dom0 = self.inner.is_dom0;
                let spec = DiskSpec::parse_with(attributes, || dom0, |_| block)?;
                self.inner.attach_disk(domain, spec).await
            }
            Some(Kind::Vif) => {
                self.inner
                    .attach_nic(domain, crate::vif::NicSpec::parse(attributes)?)
                    .await
            }
            None => Err(unsupported_type(device_type)),
        }
    }

    async fn detach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        self.inner.check_open()?;
        if options.scope == Some(Scope::Live) {
            return Err(Error::Unsupported {
                driver: crate::NAME.into(),
                operation: "detach with scope live".into(),
                detail: "the xen driver removes a device from the running domain and from libxl's stored configuration together (a pending removal is finished by whichever process sees it, which cannot know a scope); leave the scope out, or give both".into(),
            });
        }
        let kind = Kind::of(device_type).ok_or_else(|| unsupported_type(device_type))?;
        let Some((devid, be)) = self
            .inner
            .detach_dev(kind, domain, reference, options)
            .await?
        else {
            return Ok(());
        };
        // Pending: finish it in the background while this connection lives (a later detach
        // finishes it too).
        let task = tokio::spawn(
            self.inner
                .clone()
                .finish_pending(kind, domain.id, devid, be),
        );
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|t| !t.is_finished());
            p.push(task);
        }
        Err(Error::RemovalPending {
            domain: domain.name.clone(),
            device_type: kind.device_type().to_string(),
            reference: reference.to_string(),
        })
    }

    async fn update(
        &self,
        _domain: &Domain,
        _device_type: &DeviceType,
        _reference: &DeviceRef,
        _attributes: &Attributes,
        _options: &UpdateOptions,
    ) -> Result<()> {
        Err(update_unsupported())
    }

    async fn events(&self) -> Result<EventStream> {
        self.inner.check_open()?;
        crate::events::stream(self.inner.xs.clone()).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Ok(mut p) = self.pending.lock() {
            for t in p.drain(..) {
                t.abort();
            }
        }
        self.inner.xs.close();
        Ok(())
    }
}
