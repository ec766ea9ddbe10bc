//! A batch of new devices for one domain ([`vdev_core::Driver::attach_batch`]), all or none,
//! in the steps a single attach takes, each done once for the whole batch: every entry parsed
//! and checked before anything is made; the hotplug lock taken once and the block script's
//! work done for every disk together (one host script per step, not per disk); libxl's stored
//! configuration read and written once; every device written in one XenStore transaction (up
//! to [`TX_DEVICES`] devices each); the lock released; then the backends brought up, and their
//! hotplug scripts run, in parallel. On any failure everything the batch made is undone and
//! the error names the entry (design 0016).

use vdev_core::{AttachOptions, DeviceRef, Domain, Error, NewDevice, Result};

use crate::attach::{check_backend, node_reqs, scoped, Pick};
use crate::config::Hotplug;
use crate::driver::Inner;
use crate::libxl::{self, ConfigOp, Ident, Recorded};
use crate::paths::{self, unsupported_type, DevPaths, Domid, Kind};
use crate::plug::Native;
use crate::rollback::{describe, rollback_failed};
use crate::vbd::{self, DiskSpec};
use crate::vif::{self, NicSpec};
use crate::xenstore::{Body, TxFailure};

/// The most devices one XenStore transaction of a batch carries. xenstored bounds the nodes a
/// transaction may touch (`quota-trans-nodes`, 1024 by default in Xen 4.17) and a disk
/// touches about forty, so a larger batch commits in several transactions; they are undone
/// together when a later one fails.
pub(crate) const TX_DEVICES: usize = 16;

/// One entry of a batch, parsed.
enum Spec {
    Disk(DiskSpec),
    Nic(NicSpec),
}

impl Spec {
    fn kind(&self) -> Kind {
        match self {
            Spec::Disk(_) => Kind::Vbd,
            Spec::Nic(_) => Kind::Vif,
        }
    }

    fn backend(&self) -> Option<&str> {
        match self {
            Spec::Disk(d) => d.backend.as_deref(),
            Spec::Nic(n) => n.backend.as_deref(),
        }
    }

    fn recorded(&self) -> Recorded {
        match self {
            Spec::Disk(d) => d.recorded,
            Spec::Nic(n) => n.recorded,
        }
    }

    /// The device number an entry gives (a disk's), `None` when one is chosen (a vif handle).
    fn devid(&self) -> Option<u32> {
        match self {
            Spec::Disk(d) => Some(d.devid),
            Spec::Nic(_) => None,
        }
    }

    /// How a taken device number is named in [`Error::DeviceExists`].
    fn taken(&self) -> String {
        match self {
            Spec::Disk(d) => format!("{} (dev {})", d.devid, d.dev),
            Spec::Nic(_) => String::new(),
        }
    }

    fn layout(
        &self,
        domid: u32,
        devid: u32,
        paths: &DevPaths,
        bdom: u32,
    ) -> (paths::Keys, paths::Keys) {
        match self {
            Spec::Disk(d) => vbd::layout(domid, bdom, d, paths),
            Spec::Nic(n) => vif::layout(domid, bdom, devid, n, paths),
        }
    }

    fn record(&self, devid: u32) -> (Ident, serde_json::Value) {
        match self {
            Spec::Disk(d) => (
                Ident::Disk(d.dev.clone()),
                libxl::disk_entry(&d.libxl_entry()),
            ),
            Spec::Nic(n) => (Ident::Nic(devid), libxl::nic_entry(devid, &n.libxl_entry())),
        }
    }
}

/// One entry on its way.
struct Item {
    /// Its place in the batch.
    index: usize,
    spec: Spec,
    bdom: Domain,
    /// Whether its backend's hotplug script runs once the backend waits (libxl's way).
    script: bool,
    /// Whether the block script's work is done here before the nodes are written.
    native: bool,
    /// What that work prepared.
    prepared: Option<Native>,
}

impl Item {
    fn loop_node(&self) -> Option<&str> {
        self.prepared.as_ref()?.node.as_deref()
    }

    fn native_keys(&self) -> &[(&'static str, String)] {
        self.prepared.as_ref().map_or(&[], |p| &p.keys[..])
    }
}

/// `error` of entry `index` of `devices`, as the batch reports it.
fn in_batch(devices: &[NewDevice], index: usize, error: Error) -> Error {
    if matches!(error, Error::InBatch { .. }) {
        return error;
    }
    Error::InBatch {
        index,
        entry: devices[index].to_string(),
        error: Box::new(error),
    }
}

/// `e` with what the roll back left (nothing: `e` as it is).
fn with_leftovers(e: Error, left: Vec<String>) -> Error {
    if left.is_empty() {
        return e;
    }
    match e {
        Error::InBatch {
            index,
            mut entry,
            error,
        } => {
            entry.push_str(&format!(
                "; the rollback could not remove everything: {}",
                left.join("; ")
            ));
            Error::InBatch {
                index,
                entry,
                error,
            }
        }
        e => rollback_failed(
            e,
            &left,
            "remove what is left with a forced detach (`vdev devices` lists it)",
        ),
    }
}

impl Inner {
    /// Attach `devices` to `domain` as one batch, all or none (see the module's text).
    pub(crate) async fn attach_batch(
        &self,
        domain: &Domain,
        devices: &[NewDevice],
        options: &AttachOptions,
    ) -> Result<Vec<DeviceRef>> {
        let domid = domain.domid();
        let at = |i: usize| move |e: Error| in_batch(devices, i, e);

        // Every entry parsed and checked, its backend found, before anything is made.
        let mut items: Vec<Item> = Vec::with_capacity(devices.len());
        for (i, d) in devices.iter().enumerate() {
            let attributes = scoped(&d.attributes, options).map_err(at(i))?;
            let spec = match Kind::of(&d.device_type) {
                Some(Kind::Vbd) => Spec::Disk(self.disk_spec(&attributes).await.map_err(at(i))?),
                Some(Kind::Vif) => Spec::Nic(NicSpec::parse(&attributes).map_err(at(i))?),
                None => return Err(at(i)(unsupported_type(&d.device_type))),
            };
            let kind = spec.kind();
            let bdom = self.backend_domain(spec.backend()).await.map_err(at(i))?;
            check_backend(&bdom, domain, kind.device_type().as_str()).map_err(at(i))?;
            if let Some(devid) = spec.devid() {
                if items.iter().any(|o| o.spec.devid() == Some(devid)) {
                    return Err(at(i)(Error::DeviceExists {
                        domain: domain.name.clone(),
                        device_type: kind.device_type().to_string(),
                        reference: format!("{} (an earlier entry of this batch)", spec.taken()),
                    }));
                }
            }
            let runs = self.runs_hotplug(bdom.domid());
            let native = runs && kind == Kind::Vbd && self.config.hotplug == Hotplug::Auto;
            items.push(Item {
                index: i,
                spec,
                bdom,
                script: runs && !native,
                native,
                prepared: None,
            });
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }

        // The block script's work for every disk at once, under the hotplug lock, which is
        // held until their nodes are written.
        let natives: Vec<usize> = (0..items.len()).filter(|&k| items[k].native).collect();
        let lock = if natives.is_empty() {
            None
        } else {
            Some(self.dom0_host.lock("block").await?)
        };
        if !natives.is_empty() {
            let specs: Vec<&DiskSpec> = natives
                .iter()
                .map(|&k| match &items[k].spec {
                    Spec::Disk(d) => d,
                    Spec::Nic(_) => unreachable!("only disks are plugged natively"),
                })
                .collect();
            let prepared =
                self.native_block_prepare(domid, &specs)
                    .await
                    .map_err(|(k, e)| match k {
                        Some(k) => at(items[natives[k]].index)(e),
                        None => e,
                    })?;
            for (&k, p) in natives.iter().zip(prepared) {
                items[k].prepared = Some(p);
            }
        }
        let loops: Vec<String> = items
            .iter()
            .filter_map(|it| it.loop_node().map(str::to_owned))
            .collect();

        // Over ssh the lock lives in the connection's shell: if that connection was lost since,
        // another user may have the lock now, and the sharing checks are void.
        if let Some(l) = &lock {
            if !l.still_held().await {
                let e = Error::Remote {
                    host: self.dom0_host.name(),
                    kind: vdev_core::RemoteErrorKind::Disconnected,
                    message: "the ssh connection that held the hotplug lock was lost during the batch; nothing was written; try again".into(),
                };
                let left = self.release_loops(&loops, None).await;
                return Err(with_leftovers(e, left));
            }
        }

        // libxl's stored configuration, read once (its lock held until the nodes are written).
        let recorded = if items.iter().any(|it| it.spec.recorded() == Recorded::Yes) {
            Recorded::Yes
        } else if items.iter().any(|it| it.spec.recorded() == Recorded::Auto) {
            Recorded::Auto
        } else {
            Recorded::No
        };
        let upd = match self.config_begin(domid, recorded).await {
            Ok(u) => u,
            Err(e) => {
                let e = match items.iter().find(|it| it.spec.recorded() == Recorded::Yes) {
                    Some(it) if matches!(e, Error::Unsupported { .. }) => at(it.index)(e),
                    _ => e,
                };
                let left = self.release_loops(&loops, lock.as_ref()).await;
                return Err(with_leftovers(e, left));
            }
        };

        // The nodes, in as few transactions as the quota allows.
        let mut written: Vec<u32> = Vec::with_capacity(items.len());
        let mut failure = None;
        let order: Vec<usize> = (0..items.len()).collect();
        for chunk in order.chunks(TX_DEVICES) {
            let res = self
                .write_batch(domain, devices, &items, chunk, &written, &upd)
                .await;
            match res {
                Ok(devids) => written.extend(devids),
                Err(TxFailure::Failed(e)) => {
                    failure = Some(e);
                    break;
                }
                Err(TxFailure::Unknown(e, devids)) => {
                    // One transaction: it landed whole or not at all; its first device tells.
                    let first = &items[chunk[0]];
                    let paths =
                        DevPaths::new(first.spec.kind(), domid, first.bdom.domid(), devids[0]);
                    match self.commit_landed(&paths, first.loop_node()).await {
                        Some(true) => written.extend(devids),
                        Some(false) => {
                            failure = Some(e);
                            break;
                        }
                        None => {
                            let names: Vec<String> = chunk
                                .iter()
                                .map(|&k| devices[items[k].index].to_string())
                                .collect();
                            failure = Some(Error::backend_with(
                                crate::NAME,
                                format!(
                                    "attaching a batch to {}: xenstored did not answer a commit and could not be asked again, so whether these were written is unknown: {}; once xenstored answers, `vdev devices {}` shows it",
                                    domain.name,
                                    names.join("; "),
                                    domain.name
                                ),
                                e,
                            ));
                            break;
                        }
                    }
                }
            }
        }
        if let Some(e) = failure {
            // Nothing is connected yet: libxl's configuration is put back as it was (the lock
            // is still held), the written nodes removed, the loop devices released.
            let mut left: Vec<String> = match &upd {
                Some(u) => self.undo_config(u).await.err().into_iter().collect(),
                None => Vec::new(),
            };
            drop(upd);
            for (k, &devid) in written.iter().enumerate().rev() {
                let it = &items[k];
                left.extend(
                    self.undo_attached(
                        false,
                        it.spec.kind(),
                        domain,
                        it.bdom.domid(),
                        devid,
                        None,
                        ConfigOp::Keep,
                    )
                    .await,
                );
            }
            left.extend(self.release_loops(&loops, lock.as_ref()).await);
            return Err(with_leftovers(e, left));
        }
        let changes = match &upd {
            Some(u) => std::mem::take(&mut *u.change.lock().unwrap_or_else(|p| p.into_inner())),
            None => Vec::new(),
        };
        drop(upd);
        drop(lock);

        // The backends brought up (and their scripts run), in parallel.
        let refs: Vec<DeviceRef> = written
            .iter()
            .map(|d| DeviceRef::new(d.to_string()))
            .collect::<Result<_>>()?;
        let ups = futures::future::join_all(items.iter().zip(&written).zip(&refs).map(
            |((it, &devid), r)| {
                self.bring_up(it.spec.kind(), domain, &it.bdom, devid, r, it.script)
            },
        ))
        .await;
        let Some(failed) = ups.iter().position(Result::is_err) else {
            tracing::debug!(domain = %domain.name, devices = refs.len(), "batch attached");
            return Ok(refs);
        };

        // Undone, newest first, each with its entry of libxl's configuration put back.
        let mut left = Vec::new();
        let mut error = None;
        for (k, up) in ups.into_iter().enumerate().rev() {
            let it = &items[k];
            let ran_script = match up {
                Ok(()) => it.script,
                Err((e, ran)) => {
                    if k == failed {
                        error = Some(e);
                    }
                    ran
                }
            };
            let (id, _) = it.spec.record(written[k]);
            let config = match changes.iter().find(|(i, _)| *i == id) {
                Some((id, prev)) => ConfigOp::Restore(id.clone(), prev.clone()),
                None => ConfigOp::Keep,
            };
            left.extend(
                self.undo_attached(
                    ran_script,
                    it.spec.kind(),
                    domain,
                    it.bdom.domid(),
                    written[k],
                    it.loop_node(),
                    config,
                )
                .await,
            );
        }
        let e = error.expect("the failed entry's error");
        Err(with_leftovers(at(items[failed].index)(e), left))
    }

    /// One transaction of a batch: the devices `chunk` (indices into `items`) written, with
    /// libxl's configuration (`upd`) holding the entries of every device written so far
    /// (`before`: the device numbers of `items[..before.len()]`) and of these. Their device
    /// numbers, in order.
    async fn write_batch(
        &self,
        domain: &Domain,
        devices: &[NewDevice],
        items: &[Item],
        chunk: &[usize],
        before: &[u32],
        upd: &Option<crate::libxl::ConfigUpdate>,
    ) -> std::result::Result<Vec<u32>, TxFailure<Vec<u32>>> {
        let domid = domain.domid();
        let mut bdoms: Vec<&Domain> = Vec::new();
        for &k in chunk {
            if !bdoms.iter().any(|b| b.domid() == items[k].bdom.domid()) {
                bdoms.push(&items[k].bdom);
            }
        }
        self.xs
            .transaction_outcome("attaching a batch", |tx| {
                let bdoms = &bdoms;
                async move {
                    if let Some(e) = self.tx_check_domains(tx, domain, bdoms, upd).await? {
                        return Ok(Body::Abort(e));
                    }
                    let mut devids: Vec<u32> = Vec::with_capacity(chunk.len());
                    for &k in chunk {
                        let it = &items[k];
                        let kind = it.spec.kind();
                        // Numbers this batch gives already, of the same kind.
                        let chosen: Vec<u32> = before
                            .iter()
                            .enumerate()
                            .chain(chunk.iter().copied().zip(devids.iter()))
                            .filter(|(j, _)| items[*j].spec.kind() == kind)
                            .map(|(_, d)| *d)
                            .collect();
                        let pick = self
                            .tx_pick(
                                tx,
                                kind,
                                domain,
                                &it.bdom,
                                it.spec.devid(),
                                &it.spec.taken(),
                                &chosen,
                            )
                            .await?;
                        match pick {
                            Pick::Free(d) => devids.push(d),
                            Pick::Retry => return Ok(Body::Retry),
                            Pick::Taken(e) => {
                                return Ok(Body::Abort(in_batch(devices, it.index, e)))
                            }
                        }
                    }
                    if let Some(u) = upd {
                        let entries = before
                            .iter()
                            .enumerate()
                            .chain(chunk.iter().copied().zip(devids.iter()))
                            .filter(|(j, _)| items[*j].spec.recorded() != Recorded::No)
                            .map(|(j, d)| items[j].spec.record(*d))
                            .collect();
                        if let Err(e) = self.tx_record(u, entries).await {
                            return Ok(Body::Abort(e));
                        }
                    }
                    let mut reqs = Vec::new();
                    for (&k, &devid) in chunk.iter().zip(&devids) {
                        let it = &items[k];
                        let paths = DevPaths::new(it.spec.kind(), domid, it.bdom.domid(), devid);
                        let (be, fe) = it.spec.layout(domid, devid, &paths, it.bdom.domid());
                        reqs.extend(node_reqs(
                            &paths,
                            domid,
                            it.bdom.domid(),
                            &be,
                            &fe,
                            it.native_keys(),
                        ));
                    }
                    self.xs.batch_ok(tx, reqs).await?;
                    Ok(Body::Commit(devids))
                }
            })
            .await
    }

    /// Release loop devices made for disks whose nodes are gone or were never written (under
    /// the hotplug lock `held`, or taken now): what could not be released, in words.
    async fn release_loops(
        &self,
        loops: &[String],
        held: Option<&vdev_remote::HeldLock>,
    ) -> Vec<String> {
        let mut left = Vec::new();
        for node in loops {
            if let Err(e) = self.release_loop(node, held).await {
                left.push(format!(
                    "loop device {node} bound (releasing it failed: {})",
                    describe(&e)
                ));
            }
        }
        left
    }
}
