//! The [`Driver`] implementation: domains (one QMP session each), detach bookkeeping, events.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};
use vdev_core::prelude::async_trait;
use vdev_core::{
    Attributes, Capabilities, DetachOptions, Device, DeviceEvent, DeviceRef, DeviceState,
    DeviceType, DeviceTypeSchema, Domain, DomainKey, Driver, Error, EventHub, EventStream, Result,
};

use crate::config::{QemuConfig, Target};
use crate::devices::{self, Controllers};
use crate::introspect::Introspection;
use crate::qmp::{Endpoint, Qmp, QmpEvent};

/// What must be removed once QEMU has really deleted a device.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// A block node (format node; its inline file node goes with it).
    Node(String),
    /// A network backend.
    Netdev(String),
    /// Nothing (QEMU removes it itself, or there is none).
    None,
}

/// A device whose `device_del` was sent and whose `DEVICE_DELETED` has not come yet.
struct Pending {
    device_type: DeviceType,
    backend: Backend,
    done: watch::Sender<bool>,
}

/// One live QMP session of a domain and what it caches.
pub(crate) struct Session {
    pub(crate) qmp: Arc<Qmp>,
    pub(crate) intro: Introspection,
    pub(crate) controllers: Mutex<Option<Arc<Controllers>>>,
    /// Index of the SCSI bus that took the last disk: the next attach tries it first.
    pub(crate) scsi_hint: std::sync::atomic::AtomicUsize,
    /// Disk attributes by device id (see `devices::list`); an entry is dropped when QEMU
    /// reports the device deleted, so a device re-created under the same id is read afresh.
    pub(crate) disk_cache: DiskCache,
    events_task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.events_task.abort();
    }
}

/// Device id → (model, listed attributes, or None for a disk without a medium).
pub(crate) type DiskCache = Arc<Mutex<HashMap<String, (String, Option<Attributes>)>>>;

/// One QEMU process.
pub(crate) struct DomainEntry {
    pub(crate) id: u32,
    pub(crate) endpoint: Endpoint,
    stem: String,
    name: Mutex<String>,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// Serialises changes (attach, the start of detach) so bus choices do not race.
    pub(crate) ops: tokio::sync::Mutex<()>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Device id → type, as last listed or attached: lets a DEVICE_DELETED caused by someone
    /// else become a `Removed` event.
    known: Mutex<HashMap<String, DeviceType>>,
}

impl DomainEntry {
    pub(crate) fn domain(&self) -> Domain {
        Domain {
            id: self.id,
            name: lock(&self.name).clone(),
        }
    }

    pub(crate) fn is_pending(&self, id: &str) -> bool {
        lock(&self.pending).contains_key(id)
    }

    pub(crate) fn remember(&self, id: &str, t: &DeviceType) {
        lock(&self.known).insert(id.to_owned(), t.clone());
    }

    pub(crate) fn remember_all(&self, devices: &[Device]) {
        let mut k = lock(&self.known);
        k.clear();
        for d in devices {
            k.insert(d.reference.to_string(), d.device_type.clone());
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    config: QemuConfig,
    /// Whether the local path is a directory of sockets.
    directory: Option<PathBuf>,
    table: Mutex<Table>,
    events: EventHub,
    is_closed: AtomicBool,
}

#[derive(Default)]
struct Table {
    by_endpoint: HashMap<Endpoint, Arc<DomainEntry>>,
    next_id: u32,
}

/// The QEMU driver: each domain is one running QEMU reached through its QMP socket.
pub struct QemuDriver {
    inner: Arc<Inner>,
}

impl fmt::Debug for QemuDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QemuDriver")
            .field("target", &self.inner.config.target)
            .finish()
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

impl QemuDriver {
    /// Open a connection as the URI's options say. A single socket (or TCP endpoint) must answer
    /// QMP now; a directory may hold no socket yet.
    pub async fn open(config: QemuConfig) -> Result<Self> {
        let mut directory = None;
        let mut first = None;
        match &config.target {
            Target::Local(p) => {
                let md = std::fs::metadata(p).map_err(|e| {
                    Error::backend_with(
                        crate::NAME,
                        format!(
                            "no QMP socket or directory at {}: start QEMU with -qmp unix:{},server=on,wait=off",
                            p.display(),
                            p.display()
                        ),
                        e,
                    )
                })?;
                if md.is_dir() {
                    directory = Some(p.clone());
                } else if md.file_type().is_socket() {
                    first = Some((Endpoint::Unix(p.clone()), stem(p)));
                } else {
                    return Err(Error::InvalidUri {
                        uri: format!("qemu://{}", p.display()),
                        reason: "the path is neither a unix socket nor a directory".into(),
                    });
                }
            }
            Target::Tcp { host, port } => {
                let addr = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
                first = Some((Endpoint::Tcp(addr.clone()), addr));
            }
        }
        let driver = QemuDriver {
            inner: Arc::new(Inner {
                config,
                directory,
                table: Mutex::new(Table::default()),
                events: EventHub::new(crate::NAME),
                is_closed: AtomicBool::new(false),
            }),
        };
        if let Some((ep, stem)) = first {
            let entry = driver.entry_for(ep, stem);
            driver.session(&entry).await?;
        }
        Ok(driver)
    }

    fn entry_for(&self, endpoint: Endpoint, stem: String) -> Arc<DomainEntry> {
        let mut t = lock(&self.inner.table);
        if let Some(e) = t.by_endpoint.get(&endpoint) {
            return e.clone();
        }
        t.next_id += 1;
        let e = Arc::new(DomainEntry {
            id: t.next_id,
            endpoint: endpoint.clone(),
            name: Mutex::new(stem.clone()),
            stem,
            session: tokio::sync::Mutex::new(None),
            ops: tokio::sync::Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
        });
        t.by_endpoint.insert(endpoint, e.clone());
        e
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.is_closed.load(Ordering::Acquire) {
            Err(Error::backend(
                crate::NAME,
                "the connection is closed; open a new one",
            ))
        } else {
            Ok(())
        }
    }

    /// Every domain entry whose socket still exists (scanning the directory for new ones).
    fn entries(&self) -> Vec<Arc<DomainEntry>> {
        if let Some(dir) = &self.inner.directory {
            let mut socks: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
                .map(|e| e.path())
                .collect();
            socks.sort();
            for p in socks {
                let s = stem(&p);
                self.entry_for(Endpoint::Unix(p), s);
            }
        }
        let mut v: Vec<Arc<DomainEntry>> = lock(&self.inner.table)
            .by_endpoint
            .values()
            .filter(|e| match &e.endpoint {
                Endpoint::Unix(p) => p.exists(),
                Endpoint::Tcp(_) => true,
            })
            .cloned()
            .collect();
        v.sort_by_key(|e| e.id);
        v
    }

    fn entry(&self, domain: &Domain) -> Result<Arc<DomainEntry>> {
        self.entries()
            .into_iter()
            .find(|e| e.id == domain.id)
            .ok_or_else(|| Error::DomainNotFound {
                domain: domain.name.clone(),
            })
    }

    /// The live session of a domain, reconnecting when QEMU went away (a restarted QEMU at the
    /// same socket is picked up here).
    pub(crate) async fn session(&self, entry: &Arc<DomainEntry>) -> Result<Arc<Session>> {
        self.check_open()?;
        let mut slot = entry.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if s.qmp.is_alive() {
                return Ok(s.clone());
            }
            info!(endpoint = %entry.endpoint, reason = ?s.qmp.end_reason(), "QMP session lost; reconnecting");
        }
        *slot = None;
        let qmp = Qmp::connect(&entry.endpoint, self.inner.config.request_timeout)
            .await
            .map_err(|e| {
                Error::backend_with(
                    crate::NAME,
                    format!(
                        "QEMU of domain '{}' does not answer on {} (it has stopped, or the socket is stale); start it again or remove the socket",
                        lock(&entry.name),
                        entry.endpoint
                    ),
                    e,
                )
            })?;
        let name = qmp
            .execute(qapi::qmp::query_name {})
            .await
            .ok()
            .and_then(|n| n.name)
            .unwrap_or_else(|| entry.stem.clone());
        debug!(endpoint = %entry.endpoint, %name, version = ?qmp.version, "QMP session open");
        *lock(&entry.name) = name;
        let rx = qmp.subscribe();
        let disk_cache = DiskCache::default();
        let events_task = tokio::spawn(event_loop(
            disk_cache.clone(),
            Arc::downgrade(entry),
            qmp.clone(),
            rx,
            self.inner.events.clone(),
        ));
        let session = Arc::new(Session {
            qmp,
            intro: Introspection::default(),
            controllers: Mutex::new(None),
            scsi_hint: Default::default(),
            disk_cache,
            events_task,
        });
        *slot = Some(session.clone());
        drop(slot);
        self.reconcile(entry, &session).await;
        Ok(session)
    }

    /// After a reconnect: devices still marked pending that QEMU no longer has were deleted
    /// while we were away; clean their backends and report them removed.
    async fn reconcile(&self, entry: &Arc<DomainEntry>, session: &Session) {
        let ids: Vec<String> = lock(&entry.pending).keys().cloned().collect();
        for id in ids {
            let r = session
                .qmp
                .execute_raw(
                    "qom-get",
                    json!({"path": format!("/machine/peripheral/{id}"), "property": "type"}),
                )
                .await;
            if matches!(&r, Err(e) if e.class() == Some("DeviceNotFound")) {
                finish_removal(entry, &session.qmp, &id, &self.inner.events).await;
            }
        }
    }

    async fn detach_inner(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        let entry = self.entry(domain)?;
        let session = self.session(&entry).await?;
        let id = reference.as_str();
        let not_found = || Error::DeviceNotFound {
            domain: domain.name.clone(),
            device_type: device_type.to_string(),
            reference: id.to_owned(),
        };
        let mut done_rx = {
            let _op = entry.ops.lock().await;
            let existing = lock(&entry.pending)
                .get(id)
                .map(|p| (p.device_type.clone(), p.done.subscribe()));
            match existing {
                Some((t, rx)) if &t == device_type => {
                    debug!(%id, "removal already pending: waiting again");
                    rx
                }
                Some(_) => return Err(not_found()),
                None => {
                    let (actual, backend) = devices::identify(&session, id).await?;
                    if actual.as_ref() != Some(device_type) {
                        return Err(not_found());
                    }
                    let (tx, rx) = watch::channel(false);
                    lock(&entry.pending).insert(
                        id.to_owned(),
                        Pending {
                            device_type: device_type.clone(),
                            backend,
                            done: tx,
                        },
                    );
                    let r = session
                        .qmp
                        .execute(qapi::qmp::device_del { id: id.to_owned() })
                        .await;
                    match r {
                        Ok(_) => {}
                        // Someone else asked already: QEMU will send DEVICE_DELETED all the same.
                        Err(e)
                            if e.class() == Some("GenericError")
                                && devices::exists(&session, id).await =>
                        {
                            debug!(%id, error = %e, "device_del refused, unplug already in progress");
                        }
                        Err(e) => {
                            lock(&entry.pending).remove(id);
                            return Err(if e.class() == Some("DeviceNotFound") {
                                not_found()
                            } else {
                                e.into_core(&format!("device_del of {id}"))
                            });
                        }
                    }
                    rx
                }
            }
        };
        let wait = async {
            loop {
                if *done_rx.borrow_and_update() {
                    return Ok(());
                }
                if done_rx.changed().await.is_err() {
                    // The entry was dropped without completion: the session ended.
                    return Err(());
                }
            }
        };
        let gone = async {
            // A session that dies while we wait must not leave us hanging until the timeout.
            let mut rx = session.qmp.subscribe();
            loop {
                match rx.recv().await {
                    Ok(QmpEvent::Disconnected) | Err(broadcast::error::RecvError::Closed) => return,
                    _ if !session.qmp.is_alive() => return,
                    _ => {}
                }
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(options.timeout, wait) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(())) | Err(_) => Err(false),
            },
            _ = gone => Err(true),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(true) if !entry.is_pending(id) => Ok(()),
            Err(true) => Err(Error::backend(
                crate::NAME,
                format!(
                    "QEMU of domain '{}' went away while waiting for device '{id}' to be released",
                    domain.name
                ),
            )),
            Err(false) => {
                if !entry.is_pending(id) {
                    return Ok(());
                }
                self.inner.events.send(DeviceEvent::StateChanged {
                    domain: entry.domain(),
                    device_type: device_type.clone(),
                    reference: reference.clone(),
                    state: DeviceState::RemovalPending,
                });
                Err(Error::RemovalPending {
                    domain: domain.name.clone(),
                    device_type: device_type.to_string(),
                    reference: id.to_owned(),
                })
            }
        }
    }
}

/// An error from an operation whose session died meanwhile: say so, naming the domain.
fn went_away(entry: &DomainEntry, session: &Session, op: &str, e: Error) -> Error {
    if session.qmp.is_alive() || !matches!(e, Error::Backend { .. }) {
        return e;
    }
    Error::backend_with(
        crate::NAME,
        format!(
            "QEMU of domain '{}' went away during {op} ({}); what it did is unknown: list the devices once it runs again",
            lock(&entry.name),
            session.qmp.end_reason().unwrap_or_default()
        ),
        e,
    )
}

/// Clean a deleted device's backend, mark its removal done, and report it removed.
async fn finish_removal(entry: &DomainEntry, qmp: &Qmp, id: &str, events: &EventHub) {
    let pending = lock(&entry.pending).remove(id);
    let device_type = match pending {
        Some(p) => {
            let r = match &p.backend {
                Backend::Node(n) => Some(
                    qmp.execute(qapi::qmp::blockdev_del {
                        node_name: n.clone(),
                    })
                    .await
                    .map(|_| ()),
                ),
                Backend::Netdev(n) => Some(
                    qmp.execute(qapi::qmp::netdev_del { id: n.clone() })
                        .await
                        .map(|_| ()),
                ),
                Backend::None => None,
            };
            if let Some(Err(e)) = r {
                // -drive backends are deleted by QEMU itself with their device.
                debug!(%id, backend = ?p.backend, error = %e, "backend not removed");
            }
            let _ = p.done.send(true);
            lock(&entry.known).remove(id);
            Some(p.device_type)
        }
        None => lock(&entry.known).remove(id),
    };
    if let (Some(device_type), Ok(reference)) = (device_type, DeviceRef::new(id)) {
        events.send(DeviceEvent::Removed {
            domain: entry.domain(),
            device_type,
            reference,
        });
    }
}

async fn event_loop(
    disk_cache: DiskCache,
    entry: std::sync::Weak<DomainEntry>,
    qmp: Arc<Qmp>,
    mut rx: broadcast::Receiver<QmpEvent>,
    events: EventHub,
) {
    loop {
        match rx.recv().await {
            Ok(QmpEvent::Event { name, data }) if name == "DEVICE_DELETED" => {
                let Ok(ev) = serde_json::from_value::<qapi::qmp::DEVICE_DELETED>(data) else {
                    continue;
                };
                // virtio devices send a first DEVICE_DELETED for their backend, without `device`.
                let Some(id) = ev.device else { continue };
                lock(&disk_cache).remove(&id);
                let Some(entry) = entry.upgrade() else { return };
                let qmp = qmp.clone();
                let events = events.clone();
                // Cleanup runs beside the loop so that the loop keeps reading events.
                tokio::spawn(async move { finish_removal(&entry, &qmp, &id, &events).await });
            }
            Ok(QmpEvent::Event { name, .. }) if name == "DEVICE_UNPLUG_GUEST_ERROR" => {
                warn!("the guest refused a device unplug");
            }
            Ok(QmpEvent::Event { .. }) => {}
            Ok(QmpEvent::Disconnected) | Err(broadcast::error::RecvError::Closed) => return,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    n,
                    "QMP events lost; pending removals are reconciled on the next reconnect"
                );
            }
        }
    }
}

#[async_trait]
impl Driver for QemuDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            force_detach: false,
            ..Capabilities::ALL
        }
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        self.check_open()?;
        let entries = self.entries();
        let sessions = futures::future::join_all(entries.iter().map(|e| self.session(e))).await;
        let mut out = Vec::new();
        for (e, s) in entries.iter().zip(sessions) {
            match s {
                Ok(_) => out.push(e.domain()),
                Err(err) => {
                    debug!(endpoint = %e.endpoint, error = %err, "domain skipped: QEMU does not answer")
                }
            }
        }
        Ok(out)
    }

    async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain> {
        self.list_domains()
            .await?
            .into_iter()
            .find(|d| key.matches(d))
            .ok_or_else(|| Error::DomainNotFound {
                domain: key.to_string(),
            })
    }

    async fn device_types(&self) -> Result<Vec<DeviceTypeSchema>> {
        Ok(devices::schemas())
    }

    async fn list_devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>> {
        let entry = self.entry(domain)?;
        let session = self.session(&entry).await?;
        let all = match devices::list(&session, &entry).await {
            // The session died under us (QEMU exited or restarted): listing is safe to retry on
            // a new session, which also says clearly when QEMU is not there.
            Err(_) if !session.qmp.is_alive() => {
                let session = self.session(&entry).await?;
                devices::list(&session, &entry).await?
            }
            r => r?,
        };
        entry.remember_all(&all);
        Ok(all
            .into_iter()
            .filter(|d| device_type.is_none_or(|t| &d.device_type == t))
            .collect())
    }

    async fn attach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
    ) -> Result<DeviceRef> {
        let entry = self.entry(domain)?;
        let session = self.session(&entry).await?;
        let r = if *device_type == DeviceType::DISK {
            devices::attach_disk(&session, &entry, attributes).await
        } else if *device_type == DeviceType::NETWORK {
            devices::attach_nic(&session, &entry, attributes).await
        } else {
            return Err(Error::Unsupported {
                driver: crate::NAME.into(),
                operation: format!("device type '{device_type}'"),
                detail: "supported types: disk, network".into(),
            });
        };
        let r = r.map_err(|e| went_away(&entry, &session, "attach", e))?;
        entry.remember(r.as_str(), device_type);
        self.inner.events.send(DeviceEvent::Added {
            domain: entry.domain(),
            device_type: device_type.clone(),
            reference: r.clone(),
        });
        Ok(r)
    }

    async fn detach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        self.detach_inner(domain, device_type, reference, options)
            .await
    }

    async fn events(&self) -> Result<EventStream> {
        self.check_open()?;
        Ok(self.inner.events.subscribe())
    }

    async fn close(&self) -> Result<()> {
        self.inner.is_closed.store(true, Ordering::Release);
        self.inner.events.close();
        let entries: Vec<Arc<DomainEntry>> = lock(&self.inner.table)
            .by_endpoint
            .values()
            .cloned()
            .collect();
        for e in entries {
            if let Some(s) = e.session.lock().await.take() {
                s.qmp.close().await;
            }
        }
        Ok(())
    }
}
