//! Detach: record the removal in QEMU, ask for it (`device_del`), and wait for the device to go.

use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, watch};
use tracing::{debug, warn};
use vdev_core::{
    DetachOptions, DeviceEvent, DeviceRef, DeviceState, DeviceType, Domain, Error, EventHub, Result,
};

use crate::domain::{lock, went_away, DomainEntry, Outcome, Pending, Session};
use crate::events::finish_removal;
use crate::listing;
use crate::markers::{self, Backend};
use crate::qmp::QmpEvent;

/// Detach device `reference` of `domain`, waiting for QEMU to delete it within
/// `options.timeout` (else `RemovalPending`).
pub(crate) async fn detach(
    entry: &DomainEntry,
    session: &Session,
    events: &EventHub,
    domain: &Domain,
    device_type: &DeviceType,
    reference: &DeviceRef,
    options: &DetachOptions,
) -> Result<()> {
    let id = reference.as_str();
    let deadline = tokio::time::Instant::now() + options.timeout;
    let not_found = || Error::DeviceNotFound {
        domain: domain.name.clone(),
        device_type: device_type.to_string(),
        reference: id.to_owned(),
    };
    let mut done_rx = {
        let _op = entry.ops.lock().await;
        let (actual, backend) = listing::identify(session, id).await?;
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
        match request_unplug(session, id, device_type, &backend, deadline).await {
            Ok(()) => rx,
            Err(Unplug::Gone) => {
                finish_removal(entry, &session.qmp, id, events).await;
                return Ok(());
            }
            Err(Unplug::Failed(e)) => {
                lock(&entry.pending).remove(id);
                return Err(match e {
                    e @ Error::Timeout { .. } => e,
                    e => went_away(entry, session, "detach", e),
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
        End::SessionLost | End::TimedOut | End::Done(Outcome::Waiting) if !entry.is_pending(id) => {
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
            events.send(DeviceEvent::StateChanged {
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
