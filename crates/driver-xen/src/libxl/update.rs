//! Changing libxl's stored configuration together with XenStore: the lock and the document
//! for an attach or a removal, and what a listing knows of it. See
//! docs/design/0013-xen-libxl-config.md.

use std::sync::atomic::{AtomicBool, Ordering};

use vdev_core::{Error, Result};
use vdev_remote::HeldLock;

use super::{
    config_error, parse_file, uuid_from_vm, Config, Files, Ident, Recorded, Userdata, LIB_DIR,
};
use crate::driver::{xs_err, Inner};
use crate::error::{LibxlConfigError, XsError};
use crate::paths::{self, Kind};
use crate::xenstore::NO_TX;

/// A change of libxl's stored configuration of one domain in progress: its lock held, the
/// document as read. See docs/design/0013-xen-libxl-config.md.
pub(crate) struct ConfigUpdate {
    pub(crate) files: Files,
    /// The domain's `vm` node when read: checked again in the XenStore transaction (a new
    /// domain with the same id has another uuid, so other files).
    pub(crate) vm: String,
    pub(crate) config: Config,
    pub(crate) original: Vec<u8>,
    lock: HeldLock,
    /// Whether the document was (perhaps) written: undo writes `original` back.
    pub(crate) written: AtomicBool,
    /// The identities changed and the entries they replaced (for an attach's later roll back).
    pub(crate) change: std::sync::Mutex<Vec<(Ident, Option<serde_json::Value>)>>,
}

impl ConfigUpdate {
    /// Write `c` (inside the XenStore transaction, before the device's nodes).
    pub(crate) async fn write(&self, userdata: Userdata<'_>, c: &Config) -> Result<()> {
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
}

/// What removing a device's nodes does to libxl's stored configuration.
pub(crate) enum ConfigOp {
    /// Nothing.
    Keep,
    /// Remove the device's entry (detach).
    Remove,
    /// Put back what an attach replaced (its roll back).
    Restore(Ident, Option<serde_json::Value>),
}

/// What a listing knows of a domain's stored configuration.
pub(crate) enum ConfigView {
    /// Out of reach, or unreadable.
    Unknown,
    /// None: the domain has none (every device `recorded=no`).
    Known(Option<Config>),
}

impl Inner {
    /// libxl's stored configurations on the connection's host.
    pub(crate) fn userdata(&self) -> Userdata<'_> {
        Userdata::of(&self.dom0_host)
    }

    /// Whether libxl's stored configurations are at hand: the host (this machine, or the
    /// remote one of `xen+ssh://`) is Domain-0.
    pub(crate) async fn config_reachable(&self) -> Result<bool> {
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
    pub(crate) async fn config_files(&self, domid: u32) -> Result<(Files, String)> {
        let vm = self
            .xs
            .read(NO_TX, &format!("/local/domain/{domid}/vm"))
            .await
            .map_err(xs_err("reading a domain's uuid"))?;
        match vm.as_deref().and_then(uuid_from_vm) {
            Some(uuid) => Ok((Files::new(domid, &uuid), vm.unwrap_or_default())),
            None => Err(config_error(LibxlConfigError::NoUuid { domid })),
        }
    }

    /// Take `domid`'s configuration lock and read the document for a change, as `recorded`
    /// says: `None` when the configuration is to be left alone or is out of reach (refused for
    /// `recorded=yes`). Missing or malformed documents are errors.
    pub(crate) async fn config_begin(
        &self,
        domid: u32,
        recorded: Recorded,
    ) -> Result<Option<ConfigUpdate>> {
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
                        LIB_DIR,
                        self.dom0_host.name()
                    ),
                });
            }
            return Ok(None);
        }
        let (files, vm) = self.config_files(domid).await?;
        let (lock, data) = self
            .userdata()
            .lock_read(&files, self.config.attach_timeout)
            .await?;
        let original = data.clone().unwrap_or_default();
        let config = parse_file(&files, data)?;
        Ok(Some(ConfigUpdate {
            files,
            vm,
            config,
            original,
            lock,
            written: AtomicBool::new(false),
            change: std::sync::Mutex::new(Vec::new()),
        }))
    }

    /// Before a detach changes anything: a document that the removal could not change
    /// (malformed) is refused now. A missing one is fine (nothing to remove).
    pub(crate) async fn check_config_before_detach(&self, domid: u32) -> Result<()> {
        if !self.config_reachable().await? {
            return Ok(());
        }
        let Ok((files, _)) = self.config_files(domid).await else {
            return Ok(());
        };
        match self.userdata().read(&files).await? {
            None => Ok(()),
            Some(b) => parse_file(&files, Some(b)).map(|_| ()),
        }
    }

    /// What a listing says about `domid`'s devices being recorded, from `vm`: the domain's
    /// `vm` node as read (the listing reads it with its first round trip, when
    /// [`config_reachable`](Self::config_reachable) says the files are at hand; `None`: they
    /// are not, the view is unknown).
    pub(crate) async fn config_view(
        &self,
        domid: u32,
        vm: Option<Result<Option<String>, XsError>>,
    ) -> ConfigView {
        let vm = match vm {
            Some(Ok(vm)) => vm,
            None | Some(Err(_)) => return ConfigView::Unknown,
        };
        let files = match vm.as_deref().and_then(uuid_from_vm) {
            Some(uuid) => Files::new(domid, &uuid),
            // Not created by libxl: libxl keeps nothing for it.
            None => return ConfigView::Known(None),
        };
        match self.userdata().read(&files).await {
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
    pub(crate) async fn config_ident(
        &self,
        kind: Kind,
        domid: u32,
        devid: u32,
    ) -> Result<Option<Ident>> {
        Ok(match kind {
            Kind::Vif => Some(Ident::Nic(devid)),
            Kind::Vbd => {
                let r = self
                    .xs
                    .read(
                        NO_TX,
                        &format!("{}/dev", paths::libxl_path(kind, domid, devid)),
                    )
                    .await
                    .map_err(xs_err("reading a disk's name"))?;
                r.map(Ident::Disk)
            }
        })
    }

    /// The configuration change that goes with removing a device's nodes: the lock held and
    /// the document changed in memory, or `None` when there is nothing to change. A detach
    /// (`Remove`) fails only when the lock cannot be had (the device then stays, closed, and a
    /// later detach finishes it); a missing or malformed document, or a roll back that cannot
    /// restore, is logged and the nodes are removed anyway (an entry without a device is
    /// valid for libxl: it ignores it and the next attach of that identity replaces it).
    pub(crate) async fn removal_config(
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
}
