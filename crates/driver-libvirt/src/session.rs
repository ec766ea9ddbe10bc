//! The libvirt connection and its renewal: a connection that libvirtd closed (it restarted,
//! it was killed, the keepalive timed out) is opened again, its event callbacks registered
//! again, and, where events are watched, the devices of the running domains listed again and
//! the differences reported as events.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};
use vdev_core::{DeviceEvent, DeviceRef, Domain, Error, Result};
use virt::connect::Connect;
use virt_sys as sys;

use crate::config::LibvirtConfig;
use crate::driver::{to_domain, Inner};
use crate::error::backend;
use crate::events::{self, RawEvent};
use crate::xml::{self, Kind};

/// Whether the connection is broken, and who to wake when it breaks.
#[derive(Default)]
pub(crate) struct Health {
    pub broken: AtomicBool,
    pub wake: Notify,
    /// Which connection is the current one: a close callback of an older one is ignored.
    pub generation: AtomicU64,
}

/// What a close callback holds.
struct CloseWatch {
    health: Arc<Health>,
    generation: u64,
}

/// The connection calls go through, and the one that listens to events (once asked for).
pub(crate) struct Session {
    pub conn: Connect,
    pub events: Option<Listener>,
}

/// The connection that listens, and its callback ids. Dropped, it deregisters its callbacks
/// and its close callback (which holds a reference on the connection: without that, libvirt
/// would keep the connection, and what the callback holds, for the life of the process).
pub(crate) struct Listener {
    pub conn: Connect,
    pub callbacks: Vec<c_int>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        events::deregister(&self.conn, &std::mem::take(&mut self.callbacks));
        // SAFETY: the connection is open (this value holds a reference); a callback that was
        // not registered, or is gone with a closed connection, makes libvirt return -1.
        unsafe { sys::virConnectUnregisterCloseCallback(self.conn.as_ptr(), Some(on_close)) };
    }
}

unsafe extern "C" fn on_close(_c: sys::virConnectPtr, reason: c_int, opaque: *mut c_void) {
    if opaque.is_null() {
        return;
    }
    let watch = &*(opaque as *const CloseWatch);
    let current = watch.health.generation.load(Ordering::SeqCst) == watch.generation;
    tracing::debug!(reason, current, "libvirt closed the connection");
    if current && reason != sys::VIR_CONNECT_CLOSE_REASON_CLIENT as c_int {
        watch.health.broken.store(true, Ordering::SeqCst);
        watch.health.wake.notify_one();
    }
}

unsafe extern "C" fn free_health(opaque: *mut c_void) {
    if !opaque.is_null() {
        drop(Box::from_raw(opaque as *mut CloseWatch));
    }
}

/// Open libvirt (read-only when asked) with the close callback, and, `with_events`, keepalive
/// and the device event callbacks (see [`Inner::ensure_events`]). Blocking.
pub(crate) fn open(
    config: &LibvirtConfig,
    tx: &broadcast::Sender<Arc<RawEvent>>,
    health: &Arc<Health>,
    with_events: bool,
) -> Result<Session> {
    let conn = connect(config)?;
    let mut session = Session { conn, events: None };
    if with_events {
        session.listen(config, tx, health)?;
    }
    health.broken.store(false, Ordering::SeqCst);
    Ok(session)
}

fn connect(config: &LibvirtConfig) -> Result<Connect> {
    let uri = &config.uri;
    if config.readonly {
        Connect::open_read_only(Some(uri))
    } else {
        Connect::open(Some(uri))
    }
    .map_err(|e| backend(format!("cannot open libvirt at {uri}"), e.into()))
}

impl Session {
    /// Open the connection that listens: libvirt's event loop (started now if it is not yet),
    /// the device event callbacks, keepalive (a dead libvirtd is noticed within 15 s even
    /// without a call) and the close callback. A connection of its own, so that the calls of a
    /// one-shot command, on the first connection, do not pass through the event loop's thread.
    /// Blocking: an open and a few round trips.
    fn listen(
        &mut self,
        config: &LibvirtConfig,
        tx: &broadcast::Sender<Arc<RawEvent>>,
        health: &Arc<Health>,
    ) -> Result<()> {
        events::ensure_event_loop();
        let conn = connect(config)?;
        // SAFETY: the connection is open; the opaque is owned by libvirt from here and freed
        // with `free_health` when the connection goes.
        unsafe {
            sys::virConnectSetKeepAlive(conn.as_ptr(), 5, 3);
            let generation = health.generation.fetch_add(1, Ordering::SeqCst) + 1;
            let opaque = Box::into_raw(Box::new(CloseWatch {
                health: Arc::clone(health),
                generation,
            }));
            if sys::virConnectRegisterCloseCallback(
                conn.as_ptr(),
                Some(on_close),
                opaque as *mut c_void,
                Some(free_health),
            ) < 0
            {
                free_health(opaque as *mut c_void);
            }
        }
        let callbacks = events::register(&conn, tx);
        self.events = Some(Listener { conn, callbacks });
        Ok(())
    }

    /// Stop listening (at close): the listening connection's callbacks deregistered and the
    /// connection closed.
    pub(crate) fn stop_listening(&mut self) {
        drop(self.events.take());
    }
}

/// Whether a failed call's connection is gone (libvirt's own, local check).
pub(crate) fn lost(conn: &Connect) -> bool {
    !conn.is_alive().unwrap_or(false)
}

impl Inner {
    /// The connection (a new reference to it: cheap, no round trip).
    pub(crate) fn conn(&self) -> Connect {
        self.session.read().expect("not poisoned").conn.clone()
    }

    /// Register libvirt's device events on the connection, once: what watchers and detach
    /// waits need, and what a one-shot listing or attach does without (their round trips are
    /// saved). Blocking.
    pub(crate) fn ensure_events(&self) -> Result<()> {
        if self.events_on.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut s = self.session.write().expect("not poisoned");
        if !self.events_on.load(Ordering::SeqCst) {
            s.listen(&self.config, &self.raw, &self.health)?;
            self.events_on.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Open the connection again if it broke. Blocking; one at a time.
    pub(crate) fn renew_if_broken(&self) -> Result<()> {
        if !self.health.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _one = self.renewing.lock().expect("not poisoned");
        if !self.health.broken.load(Ordering::SeqCst) {
            return Ok(());
        }
        let with_events = self.events_on.load(Ordering::SeqCst);
        let fresh = open(&self.config, &self.raw, &self.health, with_events).map_err(|e| {
            Error::backend_with(
                crate::NAME,
                "the connection to libvirt broke and cannot be opened again yet; retry",
                e,
            )
        })?;
        tracing::debug!("libvirt connection opened again");
        let old = std::mem::replace(&mut *self.session.write().expect("not poisoned"), fresh);
        self.handles.lock().expect("not poisoned").clear();
        // The old connection's callbacks went with it.
        drop(old);
        Ok(())
    }
}

/// What a watcher has seen: the live devices of each running domain, by UUID.
pub(crate) type Seen = BTreeMap<String, (Domain, BTreeSet<(Kind, String)>)>;

/// The live devices of every running domain. Blocking.
pub(crate) fn survey(conn: &Connect) -> Result<Seen> {
    let all = conn
        .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        .map_err(|e| backend("listing the domains failed", e.into()))?;
    let mut seen = Seen::new();
    for d in &all {
        let (Ok(domain), Ok(text)) = (to_domain(d), d.xml_desc(0)) else {
            continue; // gone meanwhile
        };
        let Some(uuid) = domain.uuid.clone() else {
            continue;
        };
        let devices = xml::parse_domain(text)
            .map(|x| {
                x.devices
                    .into_iter()
                    .filter_map(|dev| Some((dev.kind, dev.alias?)))
                    .collect()
            })
            .unwrap_or_default();
        seen.insert(uuid, (domain, devices));
    }
    Ok(seen)
}

/// The events that turn `before` into `after`.
pub(crate) fn differences(before: &Seen, after: &Seen) -> Vec<DeviceEvent> {
    let empty = BTreeSet::new();
    let mut out = Vec::new();
    let uuids: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for u in uuids {
        let (b, a) = (before.get(u), after.get(u));
        let domain = a.or(b).map(|(d, _)| d.clone()).expect("in one of them");
        let bd = b.map(|(_, s)| s).unwrap_or(&empty);
        let ad = a.map(|(_, s)| s).unwrap_or(&empty);
        for (kind, alias) in ad.difference(bd) {
            if let Ok(reference) = DeviceRef::new(alias.clone()) {
                out.push(DeviceEvent::Added {
                    domain: domain.clone(),
                    device_type: kind.device_type(),
                    reference,
                });
            }
        }
        for (kind, alias) in bd.difference(ad) {
            if let Ok(reference) = DeviceRef::new(alias.clone()) {
                out.push(DeviceEvent::Removed {
                    domain: domain.clone(),
                    device_type: kind.device_type(),
                    reference,
                });
            }
        }
    }
    out
}

/// Renew the connection whenever libvirt closes it, until the driver is closed or dropped;
/// then, if events are watched, report what changed meanwhile.
pub(crate) async fn keep(inner: Weak<Inner>, health: Arc<Health>) {
    loop {
        health.wake.notified().await;
        let mut pause = Duration::from_millis(100);
        loop {
            let Some(me) = inner.upgrade() else {
                return;
            };
            if me.closed.load(Ordering::SeqCst) {
                return;
            }
            let renewed = me.call_raw(|inner| inner.renew_if_broken()).await;
            match renewed {
                Ok(()) => {
                    resync(&me).await;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "libvirt is not back yet");
                    drop(me);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// After a renewal: list the running domains' devices again and send the differences from
/// what was seen before.
async fn resync(inner: &Arc<Inner>) {
    let before = match inner.seen.lock().expect("not poisoned").clone() {
        Some(b) => b,
        None => return, // nobody watches events
    };
    let after = match inner.call(|inner| survey(&inner.conn())).await {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, "listing again after the renewal failed");
            return;
        }
    };
    for ev in differences(&before, &after) {
        inner.hub.send(ev);
    }
    *inner.seen.lock().expect("not poisoned") = Some(after);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_differences_are_the_events() {
        let d = Domain::new(Some(1), "vm").with_uuid("u1");
        let set = |v: &[&str]| -> BTreeSet<(Kind, String)> {
            v.iter().map(|a| (Kind::Disk, a.to_string())).collect()
        };
        let before: Seen = [("u1".to_owned(), (d.clone(), set(&["a", "b"])))].into();
        let after: Seen = [("u1".to_owned(), (d.clone(), set(&["b", "c"])))].into();
        let ev = differences(&before, &after);
        assert_eq!(ev.len(), 2);
        assert!(
            matches!(&ev[0], DeviceEvent::Added { reference, .. } if reference.as_str() == "c")
        );
        assert!(
            matches!(&ev[1], DeviceEvent::Removed { reference, .. } if reference.as_str() == "a")
        );
    }
}
