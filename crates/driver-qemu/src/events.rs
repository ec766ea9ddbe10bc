//! QEMU's events become vdev's: a device deleted (its backend and marker collected), a tray
//! moved, a guest that refused an unplug.

use std::sync::Arc;

use tokio::sync::broadcast;
use tracing::{debug, warn};
use vdev_core::{DeviceEvent, DeviceRef, DeviceState, DeviceType, EventHub};

use crate::domain::{lock, DiskCache, DomainEntry, Outcome};
use crate::markers;
use crate::qmp::{Qmp, QmpEvent};
use crate::schema;

/// A device is gone: remove its backend if vdev made it (from what this process knows, else
/// from the marker another process left), drop the marker, wake whoever waits, report it.
pub(crate) async fn finish_removal(entry: &DomainEntry, qmp: &Qmp, id: &str, events: &EventHub) {
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
        // Known from a listing, or from the marker another vdev process left (which that
        // process may have removed first), or from an id vdev made.
        None => lock(&entry.known)
            .remove(id)
            .or(recorded)
            .or_else(|| schema::type_of_generated_id(id)),
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

pub(crate) async fn event_loop(
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
                let id = schema::qdev_id(&ev.id).unwrap_or(&ev.id).to_owned();
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
