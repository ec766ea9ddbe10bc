//! The domains of a connection: the table of QEMUs it has seen (a single socket, or every
//! socket of a directory, scanned again on every listing) and each one's live QMP session.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use tracing::{debug, info};
use vdev_core::{Domain, Error, EventHub, Result};
use vdev_remote::Endpoint;

use crate::config::QemuConfig;
use crate::domain::{lock, DiskCache, DomainEntry, Session};
use crate::events::{event_loop, finish_removal};
use crate::introspect::Introspection;
use crate::listing;
use crate::markers;
use crate::qmp::connect;
use crate::schema;

/// Every domain of a connection, and the connection's event hub.
pub(crate) struct Domains {
    pub(crate) config: QemuConfig,
    /// The directory of sockets, when the URI names one.
    directory: Option<PathBuf>,
    table: Mutex<Table>,
    pub(crate) events: EventHub,
    is_closed: AtomicBool,
}

#[derive(Default)]
struct Table {
    by_endpoint: HashMap<Endpoint, Arc<DomainEntry>>,
    next_id: u32,
}

/// Whether `p` is `OTHER.N` (N a number) for a socket `OTHER` in `all`: a further QMP socket of
/// the QEMU at `OTHER`, not a domain of its own.
fn is_sibling(p: &Path, all: &HashSet<PathBuf>) -> bool {
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

pub(crate) fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

impl Domains {
    /// An empty table for `config`; `directory` when the URI names a directory of sockets.
    pub(crate) fn new(config: QemuConfig, directory: Option<PathBuf>) -> Self {
        Domains {
            config,
            directory,
            table: Mutex::new(Table::default()),
            events: EventHub::new(crate::NAME),
            is_closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn entry_for(&self, endpoint: Endpoint, stem: String) -> Arc<DomainEntry> {
        let mut t = lock(&self.table);
        if let Some(e) = t.by_endpoint.get(&endpoint) {
            return e.clone();
        }
        t.next_id += 1;
        let e = Arc::new(DomainEntry {
            id: t.next_id,
            endpoint: endpoint.clone(),
            host: self.config.host.clone(),
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

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.is_closed.load(Ordering::Acquire) {
            Err(Error::backend(
                crate::NAME,
                "the connection is closed; open a new one",
            ))
        } else {
            Ok(())
        }
    }

    /// Every domain entry whose socket still exists (scanning the directory for new ones).
    pub(crate) async fn entries(&self) -> Result<Vec<Arc<DomainEntry>>> {
        let host = &self.config.host;
        let mut present = None;
        if let Some(dir) = &self.directory {
            let socks = host.sockets_in(dir, self.config.request_timeout).await?;
            let all: HashSet<PathBuf> = socks.iter().cloned().collect();
            for p in socks.iter().filter(|p| !is_sibling(p, &all)) {
                let p = p.clone();
                let s = stem(&p);
                self.entry_for(Endpoint::Unix(p), s);
            }
            present = Some(all);
        }
        let mut v: Vec<Arc<DomainEntry>> = lock(&self.table)
            .by_endpoint
            .values()
            .filter(|e| match (&e.endpoint, &present) {
                (Endpoint::Unix(p), Some(all)) => all.contains(p),
                // A single socket: a stat here costs nothing; a remote one is checked by
                // connecting to it (a round trip to ask first would only repeat the answer).
                (Endpoint::Unix(p), None) => !host.is_local() || p.exists(),
                (Endpoint::Tcp(_), _) => true,
            })
            .cloned()
            .collect();
        v.sort_by_key(|e| e.id);
        Ok(v)
    }

    pub(crate) async fn entry(&self, domain: &Domain) -> Result<Arc<DomainEntry>> {
        self.entries()
            .await?
            .into_iter()
            .find(|e| Some(e.id) == domain.id)
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
        let timeout = self.config.request_timeout;
        let host = &self.config.host;
        let domain = lock(&entry.name).clone();
        let qmp = connect::open(host, &entry.endpoint, &domain, timeout).await?;
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
                schema::peripheral_ids(peripheral),
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
            self.events.clone(),
        ));
        let session = Arc::new(Session {
            qmp,
            intro: Introspection::default(),
            placement: Default::default(),
            disk_cache,
            events_task,
        });
        *slot = Some(session.clone());
        drop(slot);
        // Removals this process waited for whose DEVICE_DELETED came while it had no session.
        let waiting: Vec<String> = lock(&entry.pending).keys().cloned().collect();
        for id in waiting {
            if !listing::exists(&session, &id).await {
                finish_removal(entry, &session.qmp, &id, &self.events).await;
            }
        }
        Ok(session)
    }

    /// Close the connection: every session ends, event streams end.
    pub(crate) async fn close(&self) {
        self.is_closed.store(true, Ordering::Release);
        self.events.close();
        let entries: Vec<Arc<DomainEntry>> =
            lock(&self.table).by_endpoint.values().cloned().collect();
        for e in entries {
            if let Some(s) = e.session.lock().await.take() {
                s.qmp.close().await;
            }
        }
    }
}
