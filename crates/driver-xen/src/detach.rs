//! Detaching a device as libxl does: the backend asked to close, the hotplug work undone, the
//! nodes and libxl's entry removed; a removal left pending finished later.

use std::sync::Arc;
use std::time::Duration;

use vdev_core::{DetachOptions, DeviceRef, DeviceType, Domain, Error, Result, Scope};

use crate::driver::{xs_err, Inner};
use crate::error::XsError;
use crate::libxl::ConfigOp;
use crate::paths::Domid;
use crate::paths::{self, unsupported_type, Kind};
use crate::rollback::describe;
use crate::xenstore::{opt, utf8, Body, Req, TxId, XenStore, NO_TX};

pub(crate) async fn rm(xs: &XenStore, tx: TxId, path: &str) -> std::result::Result<(), XsError> {
    match xs.request(tx, Req::rm(path)).await {
        Err(e) if e.is_enoent() => Ok(()),
        r => r.map(|_| ()),
    }
}

impl Inner {
    /// Detach a device. `Ok(None)`: removed. `Ok(Some((task, error)))`: the backend did not
    /// close in time; `task` finishes the removal once it does, and `error` says it is pending.
    pub(crate) async fn detach(
        self: &Arc<Self>,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<Option<(tokio::task::JoinHandle<()>, Error)>> {
        if options.scope == Some(Scope::Live) {
            return Err(Error::Unsupported {
                driver: crate::NAME.into(),
                operation: "detach with scope live".into(),
                detail: "the xen driver removes a device from the running domain and from libxl's stored configuration together (a pending removal is finished by whichever process sees it, which cannot know a scope); leave the scope out, or give both".into(),
            });
        }
        let kind = Kind::of(device_type).ok_or_else(|| unsupported_type(device_type))?;
        let Some((devid, be)) = self.detach_dev(kind, domain, reference, options).await? else {
            return Ok(None);
        };
        let task = tokio::spawn(self.clone().finish_pending(kind, domain.domid(), devid, be));
        Ok(Some((
            task,
            Error::RemovalPending {
                domain: domain.name.clone(),
                device_type: kind.device_type().to_string(),
                reference: reference.to_string(),
            },
        )))
    }

    /// Remove a device's nodes, then release the loop device they named (`loop_node`, from
    /// [`Self::hotplug_remove`]): never before, so that no node names a loop device that
    /// `losetup --find` may give to another image. A loop device that cannot be released is
    /// logged (the device is gone; `losetup -d` frees it).
    pub(crate) async fn release_after_removal(
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

    /// Remove a vbd's nodes and every parent left empty, in one transaction, and change libxl's
    /// stored configuration as `op` says (written inside the transaction before its commit,
    /// put back if the transaction fails).
    pub(crate) async fn remove_dev(
        &self,
        kind: Kind,
        domid: u32,
        devid: u32,
        backend: Option<&str>,
        op: ConfigOp,
    ) -> Result<()> {
        let fe = paths::frontend_path(kind, domid, devid);
        let lx = paths::libxl_path(kind, domid, devid);
        let upd = self.removal_config(kind, domid, devid, op).await?;
        let upd = &upd;
        let res = self
            .xs
            .transaction("removing a disk's XenStore nodes", |tx| {
                let (fe, lx) = (fe.clone(), lx.clone());
                let be = backend.map(str::to_owned);
                async move {
                    if let Some((u, c)) = upd {
                        if let Err(e) = u.write(self.userdata(), c).await {
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
                    let mut parents = vec![
                        paths::frontend_dir(kind, domid),
                        paths::libxl_dir(kind, domid),
                    ];
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
            if let Err(left) = self.undo_config(u).await {
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
    pub(crate) async fn existing_backend(
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
                    Req::read(&format!(
                        "{}/backend",
                        paths::libxl_path(kind, domid, devid)
                    )),
                    Req::read(&format!(
                        "{}/backend",
                        paths::frontend_path(kind, domid, devid)
                    )),
                    Req::read(&paths::libxl_path(kind, domid, devid)),
                    Req::read(&paths::frontend_path(kind, domid, devid)),
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
            .find(|p| paths::check_backend_path(kind, p, domid, devid).is_some());
        Ok(Some((true, be)))
    }

    /// Detach as libxl does. `Ok(None)`: removed. `Ok(Some(backend))`: the backend did not
    /// close in time; removal is pending (the caller reports it and may finish it later).
    pub(crate) async fn detach_dev(
        &self,
        kind: Kind,
        domain: &Domain,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<Option<(u32, String)>> {
        let domid = domain.domid();
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
                    paths::libxl_path(kind, domid, devid),
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
            .xs
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
    pub(crate) async fn finish_pending(
        self: Arc<Self>,
        kind: Kind,
        domid: u32,
        devid: u32,
        be: String,
    ) {
        const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);
        let res = self
            .xs
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
