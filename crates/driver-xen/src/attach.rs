//! Attaching a device: libxl's layout written in one transaction, the commit's outcome, the
//! wait for the backend and the hotplug script.

use std::time::Duration;

use vdev_core::{
    AttachOptions, Attributes, DeviceRef, DeviceType, DeviceTypeSchema, Domain, Error, Result,
};

use crate::config::Hotplug;
use crate::driver::Inner;
use crate::error::XsError;
use crate::libxl::{self, ConfigOp, ConfigUpdate, Ident, Recorded};
use crate::paths::Domid;
use crate::paths::{self, unsupported_type, DevPaths, Kind};
use crate::plug::Plug;
use crate::vbd::{self, DiskSpec};
use crate::vif::{self, NicSpec};
use crate::xenstore::{opt, utf8, Body, Req, TxFailure, TxId, NO_TX};

/// Whether the commit of an attach whose answer never came landed.
pub(crate) enum Landed {
    /// It did not: nothing of the device was written.
    No,
    /// Nothing could be learnt (xenstored could not be asked again).
    Unknown(u32),
}

pub(crate) fn perms(owner: u32, reader: u32) -> Vec<String> {
    vec![format!("n{owner}"), format!("r{reader}")]
}

/// A backend domain other than the frontend's.
pub(crate) fn check_backend(bdom: &Domain, domain: &Domain, what: &str) -> Result<()> {
    if bdom.domid() == domain.domid() {
        return Err(Error::InvalidAttribute {
            name: "backend".into(),
            reason: format!("a domain cannot be the backend of its own {what}"),
        });
    }
    Ok(())
}

/// The attributes with the attach's scope expressed as libxl's `recorded` (see
/// [`libxl::scope_as_recorded`]).
pub(crate) fn scoped(attributes: &Attributes, options: &AttachOptions) -> Result<Attributes> {
    match options.scope {
        None => Ok(attributes.clone()),
        Some(scope) => libxl::scope_as_recorded(attributes, scope),
    }
}

impl Inner {
    /// The attributes of the device types this driver attaches.
    pub(crate) fn device_types(&self) -> Vec<DeviceTypeSchema> {
        vec![vbd::schema(), vif::schema()]
    }

    /// Attach a device of `device_type` to `domain`.
    pub(crate) async fn attach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
        options: &AttachOptions,
    ) -> Result<DeviceRef> {
        let attributes = &scoped(attributes, options)?;
        match Kind::of(device_type) {
            Some(Kind::Vbd) => {
                self.attach_disk(domain, self.disk_spec(attributes).await?)
                    .await
            }
            Some(Kind::Vif) => self.attach_nic(domain, NicSpec::parse(attributes)?).await,
            None => Err(unsupported_type(device_type)),
        }
    }

    /// The disk `attributes` (scoped) describe. xl's bare `target=PATH` is `phy:` for a block
    /// device in Domain-0: the host (remote or not) is asked only when that decides it.
    pub(crate) async fn disk_spec(&self, attributes: &Attributes) -> Result<DiskSpec> {
        let target = attributes.get("target").map(|v| v.to_string());
        let block = match target.as_deref() {
            Some(v) if self.is_dom0 && v.starts_with('/') && !v.starts_with("/dev/") => {
                self.dom0_host.is_block_device(v).await?
            }
            _ => false,
        };
        let dom0 = self.is_dom0;
        DiskSpec::parse_with(attributes, || dom0, |_| block)
    }

    /// After an attach's commit whose answer never came: whether it landed, asked again
    /// (on a new connection: the old one was closed). `Some(true)`: the device's three
    /// directories are there and, for a disk given a loop device here, the backend's `node`
    /// names that loop device; `Some(false)`: none of them is there, or they are another
    /// device's (another `node`); `None`: xenstored could not be asked (three tries), or only
    /// some of them are there.
    pub(crate) async fn commit_landed(
        &self,
        paths: &DevPaths,
        loop_node: Option<&str>,
    ) -> Option<bool> {
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

    pub(crate) async fn attach_disk(&self, domain: &Domain, spec: DiskSpec) -> Result<DeviceRef> {
        let taken = format!("{} (dev {})", spec.devid, spec.dev);
        let bdom = self.backend_domain(spec.backend.as_deref()).await?;
        check_backend(&bdom, domain, "disk")?;
        let plug = if !self.runs_hotplug(bdom.domid()) {
            Plug::None
        } else if self.config.hotplug == Hotplug::Auto {
            self.native_block_add(domain.domid(), &spec).await?
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
                vbd::layout(domain.domid(), bdom, &spec, paths)
            },
            plug,
            spec.recorded,
            |_| {
                (
                    Ident::Disk(spec.dev.clone()),
                    libxl::disk_entry(&spec.libxl_entry()),
                )
            },
        )
        .await
    }

    pub(crate) async fn attach_nic(
        &self,
        domain: &Domain,
        spec: crate::vif::NicSpec,
    ) -> Result<DeviceRef> {
        let bdom = self.backend_domain(spec.backend.as_deref()).await?;
        check_backend(&bdom, domain, "network")?;
        let plug = if self.runs_hotplug(bdom.domid()) {
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
            |handle, paths, bdom| crate::vif::layout(domain.domid(), bdom, handle, &spec, paths),
            plug,
            spec.recorded,
            |handle| {
                (
                    Ident::Nic(handle),
                    libxl::nic_entry(handle, &spec.libxl_entry()),
                )
            },
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
    pub(crate) async fn attach_dev(
        &self,
        kind: Kind,
        domain: &Domain,
        bdom: Domain,
        devid: Option<u32>,
        taken: String,
        build: impl Fn(u32, &DevPaths, u32) -> (paths::Keys, paths::Keys),
        plug: Plug,
        recorded: Recorded,
        record: impl Fn(u32) -> (Ident, serde_json::Value),
    ) -> Result<DeviceRef> {
        let domid = domain.domid();
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
            .write_nodes(
                kind,
                domain,
                &bdom,
                devid,
                &taken,
                &build,
                &native_keys,
                &upd,
                &record,
            )
            .await;
        // An unanswered commit: ask again whether it landed (the old connection is closed, so
        // its transaction is over once xenstored sees that).
        let res = match res {
            Ok(devid) => Ok(devid),
            Err(TxFailure::Failed(e)) => Err((e, Landed::No)),
            Err(TxFailure::Unknown(e, devid)) => {
                let paths = DevPaths::new(kind, domid, bdom.domid(), devid);
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
                    config_left = self.undo_config(&u).await.err();
                }
                let c = std::mem::take(&mut *u.change.lock().unwrap_or_else(|p| p.into_inner()));
                c.into_iter().next()
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
                let paths = DevPaths::new(kind, domid, bdom.domid(), devid);
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
        let reference = DeviceRef::new(devid.to_string())?;
        let (fail, ran_script) = match self
            .bring_up(kind, domain, &bdom, devid, &reference, script)
            .await
        {
            Ok(()) => return Ok(reference),
            Err(f) => f,
        };
        Err(self
            .roll_back_attached(
                fail,
                ran_script,
                kind,
                domain,
                bdom.domid(),
                devid,
                &reference,
                loop_node.as_deref(),
                undo_config(),
            )
            .await)
    }

    /// Write a device in libxl's layout in one transaction, with the keys native hotplug
    /// prepared (`native_keys`) and, when `upd` says so, libxl's stored configuration with the
    /// device's entry (`record`) written before the nodes in each attempt. `devid`: the device
    /// number, or `None` to take the lowest free one (vif handles) inside the transaction.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_nodes(
        &self,
        kind: Kind,
        domain: &Domain,
        bdom: &Domain,
        devid: Option<u32>,
        taken: &str,
        build: &impl Fn(u32, &DevPaths, u32) -> (paths::Keys, paths::Keys),
        native_keys: &[(&'static str, String)],
        upd: &Option<ConfigUpdate>,
        record: &impl Fn(u32) -> (Ident, serde_json::Value),
    ) -> std::result::Result<u32, TxFailure<u32>> {
        let domid = domain.domid();
        let what = kind.device_type();
        self.xs
            .transaction_outcome(&format!("attaching a {what}"), |tx| async move {
                if let Some(e) = self.tx_check_domains(tx, domain, &[bdom], upd).await? {
                    return Ok(Body::Abort(e));
                }
                let devid = match self
                    .tx_pick(tx, kind, domain, bdom, devid, taken, &[])
                    .await?
                {
                    Pick::Free(d) => d,
                    Pick::Retry => return Ok(Body::Retry),
                    Pick::Taken(e) => return Ok(Body::Abort(e)),
                };
                let paths = DevPaths::new(kind, domid, bdom.domid(), devid);
                if let Some(u) = upd {
                    let (id, entry) = record(devid);
                    if let Err(e) = self.tx_record(u, vec![(id, entry)]).await {
                        return Ok(Body::Abort(e));
                    }
                }
                let (be_keys, fe_keys) = build(devid, &paths, bdom.domid());
                let reqs = node_reqs(&paths, domid, bdom.domid(), &be_keys, &fe_keys, native_keys);
                self.xs.batch_ok(tx, reqs).await?;
                Ok(Body::Commit(devid))
            })
            .await
    }

    /// In a transaction: whether `domain` (the one whose configuration `upd` read) and the
    /// backend domains `bdoms` are still there; the error to abort with when not.
    pub(crate) async fn tx_check_domains(
        &self,
        tx: TxId,
        domain: &Domain,
        bdoms: &[&Domain],
        upd: &Option<ConfigUpdate>,
    ) -> std::result::Result<Option<Error>, XsError> {
        let domid = domain.domid();
        let mut reqs = vec![
            Req::read(&format!("/local/domain/{domid}")),
            Req::read(&format!("/local/domain/{domid}/vm")),
        ];
        reqs.extend(
            bdoms
                .iter()
                .map(|b| Req::read(&format!("/local/domain/{}", b.domid()))),
        );
        let answers = self.xs.batch(tx, reqs).await?;
        let mut answers = answers.into_iter().map(|r| opt(r).map(|o| o.map(utf8)));
        let mut next = || answers.next().expect("one answer per request");
        let (dom, vm) = (next()?, next()?);
        // The configuration read is this domain's, not a later one with its id.
        let same = upd.as_ref().is_none_or(|u| vm.as_deref() == Some(&*u.vm));
        if dom.is_none() || !same {
            return Ok(Some(Error::DomainNotFound {
                domain: domain.name.clone(),
            }));
        }
        for b in bdoms {
            if next()?.is_none() {
                return Ok(Some(Error::InvalidAttribute {
                    name: "backend".into(),
                    reason: format!("the backend domain {} is gone", b.name),
                }));
            }
        }
        Ok(None)
    }

    /// In a transaction: the device number of a new device, `devid` if given and free, else
    /// the lowest free one that is not in `chosen` (numbers this transaction gives already).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn tx_pick(
        &self,
        tx: TxId,
        kind: Kind,
        domain: &Domain,
        bdom: &Domain,
        devid: Option<u32>,
        taken: &str,
        chosen: &[u32],
    ) -> std::result::Result<Pick, XsError> {
        let domid = domain.domid();
        let what = kind.device_type();
        let devid_given = devid;
        let devid = match devid {
            Some(d) => d,
            None => {
                let mut used = chosen.to_vec();
                let be_dir = DevPaths::new(kind, domid, bdom.domid(), 0).backend;
                let be_dir = be_dir.rsplit_once('/').map(|(d, _)| d.to_owned());
                for dir in [
                    paths::frontend_dir(kind, domid),
                    paths::libxl_dir(kind, domid),
                ]
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
        let paths = DevPaths::new(kind, domid, bdom.domid(), devid);
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
                    // Free when listed, taken when read: another attach committed in
                    // between. Choose again.
                    return Ok(Pick::Retry);
                }
                return Ok(Pick::Taken(Error::DeviceExists {
                    domain: domain.name.clone(),
                    device_type: what.to_string(),
                    reference: if taken.is_empty() {
                        devid.to_string()
                    } else {
                        taken.to_owned()
                    },
                }));
            }
        }
        Ok(Pick::Free(devid))
    }

    /// In a transaction, before the nodes: libxl's stored configuration with `entries` set,
    /// written; what each replaced is kept in `u.change` for a later roll back.
    pub(crate) async fn tx_record(
        &self,
        u: &ConfigUpdate,
        entries: Vec<(Ident, serde_json::Value)>,
    ) -> Result<()> {
        let mut c = u.config.clone();
        let mut changes = Vec::with_capacity(entries.len());
        for (id, entry) in entries {
            let previous = c.set(&id, entry);
            if previous.is_some() {
                tracing::debug!(
                    "{} replaces a stale entry in libxl's configuration",
                    id.describe()
                );
            }
            changes.push((id, previous));
        }
        u.write(self.userdata(), &c).await?;
        *u.change.lock().unwrap_or_else(|p| p.into_inner()) = changes;
        Ok(())
    }

    /// Wait for the new device's backend to reach InitWait, then run its hotplug script when
    /// `script` says so, as libxl does. On failure the error, and whether the script ran.
    pub(crate) async fn bring_up(
        &self,
        kind: Kind,
        domain: &Domain,
        bdom: &Domain,
        devid: u32,
        reference: &DeviceRef,
        script: bool,
    ) -> std::result::Result<(), (Error, bool)> {
        // The backend driver answers by moving to InitWait (2); libxl runs the hotplug script
        // then. Connected (4) follows once the backing is there and the frontend has connected.
        let paths = DevPaths::new(kind, domain.domid(), bdom.domid(), devid);
        let what = kind.device_type();
        let state = format!("{}/state", paths.backend);
        let res = self
            .xs
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
                return Ok(());
            }
            Ok((true, _)) => {
                ran_script = true;
                match self
                    .run_hotplug(kind, &paths.backend, true, domain.domid(), devid)
                    .await
                {
                    Ok(()) => {
                        tracing::debug!(domain = %domain.name, %reference, "{what} attached, hotplug script run");
                        return Ok(());
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
        Err((fail, ran_script))
    }
}

/// What [`Inner::tx_pick`] found.
pub(crate) enum Pick {
    /// This number is free.
    Free(u32),
    /// The number chosen was taken meanwhile: run the transaction again.
    Retry,
    /// The given number is taken: abort with this error.
    Taken(Error),
}

/// The requests that write a device in libxl's layout: its three directories and their keys
/// (`be_keys` also under libxl's, `native_keys` what native hotplug prepared), with the
/// permissions libxl gives them.
pub(crate) fn node_reqs(
    paths: &DevPaths,
    domid: u32,
    bdom: u32,
    be_keys: &paths::Keys,
    fe_keys: &paths::Keys,
    native_keys: &[(&'static str, String)],
) -> Vec<Req> {
    let mut reqs = Vec::new();
    let be_perms = perms(bdom, domid);
    let fe_perms = perms(domid, bdom);
    let lx_perms = vec!["n0".to_owned()];
    // A node made by a privileged connection inherits its parent's permissions (xenstored), so
    // only the three directories, and a key whose permissions differ from its directory's,
    // need SET_PERMS: 3-4 requests, not ~35.
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
    for (k, v) in fe_keys {
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
    reqs
}
