//! What the driver keeps per domain (one QEMU process): its socket, its live QMP session and
//! what that session caches, the changes in progress and the removals it waits for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use vdev_core::{Attributes, Device, DeviceType, Domain, Error};
use vdev_remote::{Endpoint, Host};

use crate::introspect::Introspection;
use crate::markers::Backend;
use crate::placement::Placement;
use crate::qmp::Qmp;

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
pub(crate) struct Pending {
    pub(crate) device_type: DeviceType,
    pub(crate) backend: Backend,
    pub(crate) done: watch::Sender<Outcome>,
}

/// One live QMP session of a domain and what it caches.
pub(crate) struct Session {
    pub(crate) qmp: Arc<Qmp>,
    pub(crate) intro: Introspection,
    /// Where new devices can go.
    pub(crate) placement: Placement,
    /// Disk attributes by device id (see `listing::list`); an entry is dropped when QEMU
    /// reports the device deleted, so a device re-created under the same id is read afresh.
    pub(crate) disk_cache: DiskCache,
    pub(crate) events_task: tokio::task::JoinHandle<()>,
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
    /// `PATH.2`, ... beside it are further QMP sockets of the same QEMU (see `qmp::connect::endpoints`).
    pub(crate) endpoint: Endpoint,
    /// The host the socket (and the images) are on.
    pub(crate) host: Host,
    pub(crate) stem: String,
    pub(crate) name: Mutex<String>,
    pub(crate) session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// Serialises changes (attach, the start of detach) so bus choices do not race.
    pub(crate) ops: tokio::sync::Mutex<()>,
    /// The device (id and backend) an attach in progress is making, for `attach::attach`
    /// to settle when the connection drops in the middle.
    pub(crate) in_flight: Mutex<Option<(String, Backend)>>,
    pub(crate) pending: Mutex<HashMap<String, Pending>>,
    /// Device id → type, as last listed or attached: lets a DEVICE_DELETED caused by someone
    /// else become a `Removed` event.
    pub(crate) known: Mutex<HashMap<String, DeviceType>>,
}

impl DomainEntry {
    pub(crate) fn domain(&self) -> Domain {
        Domain::new(Some(self.id), lock(&self.name).clone())
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

/// An error from an operation whose session died meanwhile: say so, naming the domain.
pub(crate) fn went_away(entry: &DomainEntry, session: &Session, op: &str, e: Error) -> Error {
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
