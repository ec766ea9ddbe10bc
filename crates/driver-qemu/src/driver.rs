//! The [`Driver`] implementation: domains (one QMP session each), detach bookkeeping, events.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};
use vdev_core::prelude::async_trait;
use vdev_core::{
    AttachOptions, Attributes, Capabilities, DetachOptions, Device, DeviceEvent, DeviceRef,
    DeviceState, DeviceType, DeviceTypeSchema, Domain, DomainKey, Driver, Error, EventHub,
    EventStream, Result, ScopeSet, UpdateOptions,
};

use vdev_remote::{sh_quote, Host};

use crate::config::{QemuConfig, Target};
use crate::devices::{self, Controllers};
use crate::introspect::Introspection;
use crate::markers;
use crate::qmp::{ConnectError, Endpoint, Qmp, QmpEvent};

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

/// How a removal this process waits for ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Not yet.
    Waiting,
    /// QEMU deleted the device.
    Removed,
    /// The guest refused the unplug (`DEVICE_UNPLUG_GUEST_ERROR`): the device stays.
    Refused,
}

/// A device whose `device_del` was sent by this process and whose end it waits for.
struct Pending {
    device_type: DeviceType,
    backend: Backend,
    done: watch::Sender<Outcome>,
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
    /// The domain's socket (or TCP endpoint); for a unix socket `PATH`, the sockets `PATH.1`,
    /// `PATH.2`, ... beside it are further QMP sockets of the same QEMU (see [`Self::endpoints`]).
    pub(crate) endpoint: Endpoint,
    /// The host the socket (and the images) are on.
    pub(crate) host: Host,
    stem: String,
    name: Mutex<String>,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// Serialises changes (attach, the start of detach) so bus choices do not race.
    pub(crate) ops: tokio::sync::Mutex<()>,
    /// The device (id and backend) an attach in progress is making, for [`QemuDriver::attach`]
    /// to settle when the connection drops in the middle.
    pub(crate) in_flight: Mutex<Option<(String, Backend)>>,
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

    /// Every QMP socket of this QEMU: its socket `PATH` and the sockets `PATH.N` (N a number)
    /// beside it, in order of N. QEMU serves one client per socket; vdev uses whichever is free.
    pub(crate) async fn endpoints(&self, host: &Host, timeout: Duration) -> Result<Vec<Endpoint>> {
        let Endpoint::Unix(primary) = &self.endpoint else {
            return Ok(vec![self.endpoint.clone()]);
        };
        let mut out = vec![self.endpoint.clone()];
        let (Some(dir), Some(name)) = (primary.parent(), primary.file_name()) else {
            return Ok(out);
        };
        let prefix = format!("{}.", name.to_string_lossy());
        let mut extra: Vec<(u64, PathBuf)> = sockets_in(host, dir, timeout)
            .await?
            .into_iter()
            .filter_map(|p| {
                let n = p
                    .file_name()?
                    .to_string_lossy()
                    .strip_prefix(&prefix)?
                    .parse()
                    .ok()?;
                Some((n, p))
            })
            .collect();
        extra.sort();
        out.extend(extra.into_iter().map(|(_, p)| Endpoint::Unix(p)));
        Ok(out)
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

/// How long a socket reached through a ready shared ssh forward may take to greet before its
/// siblings are listed and tried too.
const QUICK_PROBE: Duration = Duration::from_secs(1);

/// What a path on the connection's host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Directory,
    Socket,
    Other,
    Missing,
}

/// What `p` is on `host` (one round trip for a remote host).
async fn path_kind(host: &Host, p: &Path, timeout: Duration) -> Result<PathKind> {
    if host.is_local() {
        return Ok(match std::fs::metadata(p) {
            Err(_) => PathKind::Missing,
            Ok(m) if m.is_dir() => PathKind::Directory,
            Ok(m) if m.file_type().is_socket() => PathKind::Socket,
            Ok(_) => PathKind::Other,
        });
    }
    let out = host
        .run_in_session(
            &format!(
                "__vdev_p={}; if [ -d \"$__vdev_p\" ]; then echo d; elif [ -S \"$__vdev_p\" ]; then echo s; elif [ -e \"$__vdev_p\" ]; then echo o; else echo m; fi",
                sh_quote(&p.to_string_lossy())
            ),
            timeout,
        )
        .await?;
    Ok(match out.text().as_str() {
        "d" => PathKind::Directory,
        "s" => PathKind::Socket,
        "o" => PathKind::Other,
        _ => PathKind::Missing,
    })
}

/// The unix sockets directly in `dir` on `host`, sorted (none when `dir` is gone).
async fn sockets_in(host: &Host, dir: &Path, timeout: Duration) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = if host.is_local() {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
            .map(|e| e.path())
            .collect()
    } else {
        // Builtins only, in the agent's own shell: one round trip, no process on the host.
        let out = host
            .run_in_session(
                &format!(
                    "__vdev_d={}; for f in \"$__vdev_d\"/* \"$__vdev_d\"/.[!.]* \"$__vdev_d\"/..?*; do [ -S \"$f\" ] && printf '%s\\n' \"${{f##*/}}\"; done; :",
                    sh_quote(&dir.to_string_lossy())
                ),
                timeout,
            )
            .await?;
        out.text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| dir.join(l))
            .collect()
    };
    v.sort();
    Ok(v)
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    config: QemuConfig,
    /// Whether the path is a directory of sockets.
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

/// Whether `p` is `OTHER.N` (N a number) for a socket `OTHER` in `all`: a further QMP socket of
/// the QEMU at `OTHER`, not a domain of its own.
fn is_sibling(p: &Path, all: &std::collections::HashSet<PathBuf>) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            all.contains(&p.with_file_name(base))
        }
        _ => false,
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
            // A remote socket the shared ssh connection (persist=) already forwards: the QMP
            // greeting will say what it is, with nothing started on the host.
            Target::Local(p) if !config.host.is_local() && config.host.has_ready_stream(p) => {
                first = Some((Endpoint::Unix(p.clone()), stem(p)))
            }
            Target::Local(p) => match path_kind(&config.host, p, config.request_timeout).await? {
                PathKind::Directory => directory = Some(p.clone()),
                PathKind::Socket => first = Some((Endpoint::Unix(p.clone()), stem(p))),
                PathKind::Missing => {
                    return Err(Error::backend(
                        crate::NAME,
                        format!(
                            "no QMP socket or directory at {}{}: start QEMU with -qmp unix:{},server=on,wait=off",
                            p.display(),
                            on_host(&config.host),
                            p.display()
                        ),
                    ))
                }
                PathKind::Other => {
                    return Err(Error::InvalidUri {
                        uri: format!("qemu://{}", p.display()),
                        reason: format!(
                            "the path is neither a unix socket nor a directory{}",
                            on_host(&config.host)
                        ),
                    })
                }
            },
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
            host: self.inner.config.host.clone(),
            name: Mutex::new(stem.clone()),
            stem,
            session: tokio::sync::Mutex::new(None),
            ops: tokio::sync::Mutex::new(()),
            in_flight: Mutex::new(None),
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
    async fn entries(&self) -> Result<Vec<Arc<DomainEntry>>> {
        let host = &self.inner.config.host;
        let mut present = None;
        if let Some(dir) = &self.inner.directory {
            let socks = sockets_in(host, dir, self.inner.config.request_timeout).await?;
            let all: std::collections::HashSet<PathBuf> = socks.iter().cloned().collect();
            for p in socks.iter().filter(|p| !is_sibling(p, &all)) {
                let p = p.clone();
                let s = stem(&p);
                self.entry_for(Endpoint::Unix(p), s);
            }
            present = Some(all);
        }
        let mut v: Vec<Arc<DomainEntry>> = lock(&self.inner.table)
            .by_endpoint
            .values()
            .filter(|e| match (&e.endpoint, &present) {
                (Endpoint::Unix(p), Some(all)) => all.contains(p),
                // A single socket: a remote one is checked by connecting to it.
                (Endpoint::Unix(p), None) => !host.is_local() || p.exists(),
                (Endpoint::Tcp(_), _) => true,
            })
            .cloned()
            .collect();
        v.sort_by_key(|e| e.id);
        Ok(v)
    }

    async fn entry(&self, domain: &Domain) -> Result<Arc<DomainEntry>> {
        self.entries()
            .await?
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
        let timeout = self.inner.config.request_timeout;
        let host = &self.inner.config.host;
        let quick = match &entry.endpoint {
            // Through a ready shared forward: try the socket alone first (a free socket greets
            // at once), and list its siblings on the host only if it is held by another client.
            Endpoint::Unix(p) if !host.is_local() && host.has_ready_stream(p) => Qmp::connect_any(
                host,
                std::slice::from_ref(&entry.endpoint),
                timeout.min(QUICK_PROBE),
            )
            .await
            .ok(),
            _ => None,
        };
        let qmp = match quick {
            Some(q) => q,
            None => Qmp::connect_any(host, &entry.endpoints(host, timeout).await?, timeout)
                .await
                .map_err(|e| connect_error(entry, timeout, e))?,
        };
        // One round trip: the name, and what earlier removals left to collect.
        let mut r = qmp
            .batch(vec![
                ("query-name".to_owned(), json!({})),
                markers::list_command(),
                (
                    "qom-list".to_owned(),
                    json!({"path": "/machine/peripheral"}),
                ),
            ])
            .await
            .into_iter();
        let (name, objects, peripheral) = (
            r.next().expect("reply"),
            r.next().expect("reply"),
            r.next().expect("reply"),
        );
        let name = name
            .ok()
            .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
            .unwrap_or_else(|| entry.stem.clone());
        debug!(endpoint = %qmp.endpoint(), %name, version = ?qmp.version, "QMP session open");
        *lock(&entry.name) = name;
        if let (Ok(objects), Ok(peripheral)) = (objects, peripheral) {
            if let (Ok(records), Ok(present)) = (
                markers::records(objects),
                devices::peripheral_ids(peripheral),
            ) {
                markers::collect_gone(&qmp, &records, &present).await;
            }
        }
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
        // Removals this process waited for whose DEVICE_DELETED came while it had no session.
        let waiting: Vec<String> = lock(&entry.pending).keys().cloned().collect();
        for id in waiting {
            if !devices::exists(&session, &id).await {
                finish_removal(entry, &session.qmp, &id, &self.inner.events).await;
            }
        }
        Ok(session)
    }

    async fn detach_inner(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        let entry = self.entry(domain).await?;
        let session = self.session(&entry).await?;
        let id = reference.as_str();
        let deadline = tokio::time::Instant::now() + options.timeout;
        let not_found = || Error::DeviceNotFound {
            domain: domain.name.clone(),
            device_type: device_type.to_string(),
            reference: id.to_owned(),
        };
        let mut done_rx = {
            let _op = entry.ops.lock().await;
            let (actual, backend) = devices::identify(&session, id).await?;
            if actual.as_ref() != Some(device_type) {
                return Err(not_found());
            }
            let rx = {
                let mut pending = lock(&entry.pending);
                let p = pending.entry(id.to_owned()).or_insert_with(|| Pending {
                    device_type: device_type.clone(),
                    backend: backend.clone(),
                    done: watch::channel(Outcome::Waiting).0,
                });
                p.done.subscribe()
            };
            // Record the removal in QEMU (every vdev process sees it), then ask for it; a
            // second detach asks again, since a guest may have missed the first request.
            match request_unplug(&session, id, device_type, &backend, deadline).await {
                Ok(()) => rx,
                Err(Unplug::Gone) => {
                    finish_removal(&entry, &session.qmp, id, &self.inner.events).await;
                    return Ok(());
                }
                Err(Unplug::Failed(e)) => {
                    lock(&entry.pending).remove(id);
                    return Err(match e {
                        e @ Error::Timeout { .. } => e,
                        e => went_away(&entry, &session, "detach", e),
                    });
                }
            }
        };
        let wait = async {
            loop {
                let o = *done_rx.borrow_and_update();
                if o != Outcome::Waiting {
                    return Ok(o);
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
        enum End {
            Done(Outcome),
            TimedOut,
            SessionLost,
        }
        let end = tokio::select! {
            r = tokio::time::timeout_at(deadline, wait) => match r {
                Ok(Ok(o)) => End::Done(o),
                Ok(Err(())) | Err(_) => End::TimedOut,
            },
            _ = gone => End::SessionLost,
        };
        match end {
            End::Done(Outcome::Removed) => Ok(()),
            End::Done(Outcome::Refused) => Err(Error::RemovalRefused {
                domain: domain.name.clone(),
                device_type: device_type.to_string(),
                reference: id.to_owned(),
            }),
            End::SessionLost | End::TimedOut | End::Done(Outcome::Waiting)
                if !entry.is_pending(id) =>
            {
                Ok(())
            }
            End::SessionLost => Err(Error::backend(
                crate::NAME,
                format!(
                    "QEMU of domain '{}' went away while waiting for device '{id}' to be released",
                    domain.name
                ),
            )),
            End::TimedOut | End::Done(Outcome::Waiting) => {
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

/// Why an unplug request did not leave a removal pending.
enum Unplug {
    /// The device is gone already (removed meanwhile).
    Gone,
    /// It could not be requested: nothing changed.
    Failed(Error),
}

/// Record device `id`'s removal in QEMU and send `device_del` (one round trip), retrying with
/// back-off until `deadline` while the guest is busy with an earlier hotplug operation on the
/// slot (native PCIe hotplug refuses `device_del` right after `device_add`: "guest is busy
/// (power indicator blinking)"). "Already in the process of unplug" means the request stands.
async fn request_unplug(
    session: &Session,
    id: &str,
    device_type: &DeviceType,
    backend: &Backend,
    deadline: tokio::time::Instant,
) -> std::result::Result<(), Unplug> {
    let qmp = &session.qmp;
    let mut backoff = Duration::from_millis(20);
    let mut marked = false;
    loop {
        // device_del first: QEMU starts the unplug at once, and records the marker while the
        // guest (or QEMU's own deferred cleanup) takes its time. Both run before any event of
        // the removal reaches a client, so a collection always finds the marker.
        let mut cmds = Vec::with_capacity(2);
        cmds.push(("device_del".to_owned(), json!({ "id": id })));
        if !marked {
            cmds.push(markers::add_command(id, device_type, backend));
        }
        let mut r = qmp.batch(cmds).await.into_iter();
        let del = r.next().expect("reply");
        if !marked {
            let added = r.next().expect("reply");
            marked = match added {
                Ok(_) => true,
                Err(e) if e.class() == Some("GenericError") => {
                    // A marker of this id exists: this removal is pending already, or one of an
                    // earlier device with the same id was never collected.
                    match markers::recorded(qmp, id).await {
                        Ok(Some((_, old))) if old.encode() != backend.encode() => {
                            let r = async {
                                markers::remove_backend(qmp, &old).await?;
                                markers::remove_marker(qmp, id).await?;
                                let (c, a) = markers::add_command(id, device_type, backend);
                                qmp.execute_raw(&c, a).await
                            };
                            r.await.is_ok()
                        }
                        _ => true,
                    }
                }
                Err(e) if del.is_ok() => {
                    // The unplug is under way without its record: its backend then stays until
                    // a detach asks again. Say so rather than hide it.
                    warn!(%id, error = %e, "the pending removal could not be recorded in QEMU");
                    true
                }
                Err(e) => {
                    return Err(Unplug::Failed(
                        e.into_core(&format!("recording the removal of {id}")),
                    ))
                }
            };
        }
        let e = match del {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let desc = e.desc().unwrap_or_default().to_owned();
        if e.class() == Some("DeviceNotFound") {
            return Err(Unplug::Gone);
        }
        if desc.contains("in the process of unplug") {
            debug!(%id, "unplug already requested: waiting again");
            return Ok(());
        }
        let busy = desc.contains("busy") || desc.contains("power indicator");
        if busy && tokio::time::Instant::now() + backoff < deadline {
            debug!(%id, ?backoff, "guest busy with a hotplug operation: device_del again soon");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
            continue;
        }
        // Nothing was requested: the marker must not say otherwise.
        if marked {
            let _ = markers::remove_marker(qmp, id).await;
        }
        return Err(Unplug::Failed(if busy {
            Error::Timeout {
                operation: format!(
                    "device_del of {id}: the guest was busy with an earlier hotplug operation on its slot the whole time, and nothing was requested; detach again with a longer timeout"
                ),
                after: Duration::ZERO,
            }
        } else {
            e.into_core(&format!("device_del of {id}"))
        }));
    }
}

impl QemuDriver {
    /// The connection to QEMU dropped while an attach was making `made` (the ssh connection to
    /// its host died, say). QEMU still runs the requests it received, in order, before it
    /// serves a new client on that socket: so connect again (within one request timeout) and
    /// ask. A device that exists is the attach's success; otherwise its backend is removed and
    /// the answer is an error saying nothing was attached. Only when QEMU cannot be reached
    /// again is the outcome unknown, and the error says so.
    async fn settle_lost_attach(
        &self,
        entry: &Arc<DomainEntry>,
        (id, backend): (String, Backend),
        e: Error,
    ) -> Result<DeviceRef> {
        let domain = lock(&entry.name).clone();
        debug!(%id, error = %e, "connection lost during attach: reconnecting to settle it");
        let timeout = self.inner.config.request_timeout;
        let session = match tokio::time::timeout(timeout, self.session(entry)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e2)) => {
                return Err(Error::backend_with(
                    crate::NAME,
                    format!(
                        "the connection to QEMU of domain '{domain}' was lost during the attach of {id} ({e}), and reconnecting failed ({e2}): whether {id} was made is unknown; list the devices once it can be reached"
                    ),
                    e,
                ))
            }
            Err(_) => {
                return Err(Error::backend_with(
                    crate::NAME,
                    format!(
                        "the connection to QEMU of domain '{domain}' was lost during the attach of {id}, and it could not be reached again within {}: whether {id} was made is unknown; list the devices once it can be reached",
                        humantime::format_duration(timeout)
                    ),
                    e,
                ))
            }
        };
        if devices::exists(&session, &id).await {
            info!(%id, "the device was made before the connection dropped");
            *lock(&session.controllers) = None;
            return DeviceRef::new(id);
        }
        markers::remove_backend(&session.qmp, &backend)
            .await
            .map_err(|e2| {
                Error::backend_with(
                    crate::NAME,
                    format!(
                        "the connection to QEMU of domain '{domain}' was lost during the attach of {id}; {id} was not made, and its backend {backend:?} could not be removed: remove it with blockdev-del/netdev_del"
                    ),
                    e2,
                )
            })?;
        Err(Error::backend_with(
            crate::NAME,
            format!(
                "the connection to QEMU of domain '{domain}' was lost during the attach of {id}; after reconnecting, nothing of it is there (its backend, if made, was removed): attach again"
            ),
            e,
        ))
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

/// ` on HOST` for a remote host, else nothing.
pub(crate) fn on_host(host: &Host) -> String {
    if host.is_local() {
        String::new()
    } else {
        format!(" on {}", host.name())
    }
}

/// The error for a domain none of whose QMP sockets could be used.
fn connect_error(entry: &DomainEntry, timeout: Duration, e: ConnectError) -> Error {
    let domain = lock(&entry.name).clone();
    let more = match &entry.endpoint {
        Endpoint::Unix(p) => format!(
            "start QEMU with one more socket per long-lived client, e.g. -qmp unix:{}.1,server=on,wait=off (vdev uses every PATH.N beside PATH)",
            p.display()
        ),
        Endpoint::Tcp(_) => "give each long-lived client a QMP socket of its own".to_owned(),
    };
    match e {
        ConnectError::Silent { endpoint } => Error::backend(
            crate::NAME,
            format!(
                "QEMU of domain '{domain}' did not greet on {endpoint} within {}: another client holds that QMP socket (QEMU serves one client per socket: another vdev connection, virsh or qmp-shell), or QEMU is stopped; {more}",
                humantime::format_duration(timeout)
            ),
        ),
        ConnectError::Busy { endpoint } => Error::backend(
            crate::NAME,
            format!(
                "every QMP socket of domain '{domain}' ({endpoint}) was busy with other clients for {}; {more}",
                humantime::format_duration(timeout)
            ),
        ),
        ConnectError::Transport(e) => e,
        ConnectError::Other { endpoint, error } => Error::backend_with(
            crate::NAME,
            format!(
                "QEMU of domain '{domain}' does not answer on {endpoint} (it has stopped, or the socket is stale); start it again or remove the socket"
            ),
            error,
        ),
    }
}

/// A device is gone: remove its backend if vdev made it (from what this process knows, else
/// from the marker another process left), drop the marker, wake whoever waits, report it.
async fn finish_removal(entry: &DomainEntry, qmp: &Qmp, id: &str, events: &EventHub) {
    let pending = lock(&entry.pending).remove(id);
    let backend = pending.as_ref().map(|p| p.backend.clone());
    let recorded = match markers::collect(qmp, id, backend.as_ref()).await {
        Ok(t) => t,
        Err(e) => {
            // Left for the next session: the marker stays until the backend is really gone.
            debug!(%id, error = %e, "backend not removed yet");
            None
        }
    };
    let device_type = match pending {
        Some(p) => {
            let _ = p.done.send(Outcome::Removed);
            lock(&entry.known).remove(id);
            Some(p.device_type)
        }
        // Known from a listing, or from the marker another vdev process left.
        None => lock(&entry.known).remove(id).or(recorded),
    };
    if let (Some(device_type), Ok(reference)) = (device_type, DeviceRef::new(id)) {
        events.send(DeviceEvent::Removed {
            domain: entry.domain(),
            device_type,
            reference,
        });
    }
}

/// The guest refused to release device `id`: the removal is over, the device stays.
async fn refused_removal(entry: &DomainEntry, qmp: &Qmp, id: &str, events: &EventHub) {
    warn!(%id, "the guest refused to release the device");
    if let Err(e) = markers::remove_marker(qmp, id).await {
        debug!(%id, error = %e, "pending-removal marker not removed");
    }
    let pending = lock(&entry.pending).remove(id);
    let device_type = match pending {
        Some(p) => {
            let _ = p.done.send(Outcome::Refused);
            Some(p.device_type)
        }
        None => lock(&entry.known).get(id).cloned(),
    };
    if let (Some(device_type), Ok(reference)) = (device_type, DeviceRef::new(id)) {
        events.send(DeviceEvent::StateChanged {
            domain: entry.domain(),
            device_type,
            reference,
            state: DeviceState::Connected,
        });
    }
}

/// The device id an event's `device`/`path` names.
pub(crate) fn event_device(data: &serde_json::Value) -> Option<String> {
    if let Some(d) = data.get("device").and_then(|d| d.as_str()) {
        return Some(d.to_owned());
    }
    data.get("path")
        .and_then(|p| p.as_str())
        .and_then(|p| p.strip_prefix("/machine/peripheral/"))
        .filter(|rest| !rest.contains('/'))
        .map(str::to_owned)
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
                // virtio devices send a first DEVICE_DELETED for their backend, without `device`.
                let Some(id) = data
                    .get("device")
                    .and_then(|d| d.as_str())
                    .map(str::to_owned)
                else {
                    continue;
                };
                lock(&disk_cache).remove(&id);
                let Some(entry) = entry.upgrade() else { return };
                let qmp = qmp.clone();
                let events = events.clone();
                // Cleanup runs beside the loop so that the loop keeps reading events.
                tokio::spawn(async move { finish_removal(&entry, &qmp, &id, &events).await });
            }
            Ok(QmpEvent::Event { name, data }) if name == "DEVICE_TRAY_MOVED" => {
                // A tray moved (the guest ejected, or any client changed the medium): read the
                // drive afresh at the next listing, and say so.
                let Ok(ev) = serde_json::from_value::<qapi::qmp::DEVICE_TRAY_MOVED>(data) else {
                    continue;
                };
                let id = devices::qdev_id(&ev.id).unwrap_or(&ev.id).to_owned();
                lock(&disk_cache).remove(&id);
                let Some(entry) = entry.upgrade() else { return };
                let (Ok(reference), Ok(attributes)) = (
                    DeviceRef::new(id),
                    vdev_core::Attributes::from_pairs([(
                        "tray",
                        if ev.tray_open { "open" } else { "closed" },
                    )]),
                ) else {
                    continue;
                };
                events.send(DeviceEvent::Updated {
                    domain: entry.domain(),
                    device_type: DeviceType::DISK,
                    reference,
                    attributes,
                });
            }
            Ok(QmpEvent::Event { name, data }) if name == "DEVICE_UNPLUG_GUEST_ERROR" => {
                let Some(id) = event_device(&data) else {
                    continue;
                };
                let Some(entry) = entry.upgrade() else { return };
                let qmp = qmp.clone();
                let events = events.clone();
                tokio::spawn(async move { refused_removal(&entry, &qmp, &id, &events).await });
            }
            Ok(QmpEvent::Event { .. }) => {}
            Ok(QmpEvent::Disconnected) | Err(broadcast::error::RecvError::Closed) => return,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                warn!(
                    n,
                    "QMP events lost; removals they announced are collected at the next session or listing"
                );
            }
        }
    }
}

#[async_trait]
impl Driver for QemuDriver {
    fn capabilities(&self) -> Capabilities {
        // QMP reaches the running machine only: no stored configuration to change.
        Capabilities {
            force_detach: false,
            scopes: ScopeSet::LIVE,
            ..Capabilities::ALL
        }
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        self.check_open()?;
        let entries = self.entries().await?;
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
        let entry = self.entry(domain).await?;
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
        _options: &AttachOptions,
    ) -> Result<DeviceRef> {
        let entry = self.entry(domain).await?;
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
        let in_flight = lock(&entry.in_flight).take();
        let r = match (r, in_flight) {
            (Err(e), Some(made)) if !session.qmp.is_alive() => {
                drop(session);
                self.settle_lost_attach(&entry, made, e).await?
            }
            (r, _) => r.map_err(|e| went_away(&entry, &session, "attach", e))?,
        };
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

    async fn update(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        attributes: &Attributes,
        _options: &UpdateOptions,
    ) -> Result<()> {
        let entry = self.entry(domain).await?;
        let session = self.session(&entry).await?;
        let id = reference.as_str();
        let changes = crate::update::update(&session, &entry, device_type, id, attributes)
            .await
            .map_err(|e| went_away(&entry, &session, "update", e))?
            .ok_or_else(|| Error::DeviceNotFound {
                domain: domain.name.clone(),
                device_type: device_type.to_string(),
                reference: id.to_owned(),
            })?;
        self.inner.events.send(DeviceEvent::Updated {
            domain: entry.domain(),
            device_type: device_type.clone(),
            reference: reference.clone(),
            attributes: changes,
        });
        Ok(())
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
