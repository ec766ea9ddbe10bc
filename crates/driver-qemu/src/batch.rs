//! Batches: several devices made in one pipelined write to QEMU, all or none.
//!
//! QMP's `transaction` cannot carry `device_add`, so a batch is the backends' and devices'
//! commands sent in one write (QEMU runs them in order) and a rollback by the driver: when any
//! of them fails, every device of the batch that was made is detached (waiting for QEMU to
//! delete it, as detach does) and every backend made for a device that was not is removed.

use std::collections::HashSet;

use tracing::{debug, warn};
use vdev_core::{
    DetachOptions, DeviceEvent, DeviceRef, DeviceType, Domain, Error, NewDevice, Result,
};

use crate::attach::{check_disk, device_add_error, finish, macs, prepare_disk, prepare_nic, Plan};
use crate::detach;
use crate::domains::Domains;
use crate::error::QmpError;
use crate::listing::exists;
use crate::markers;

/// Whether a model goes on a PCIe root port of its own.
fn is_pci(model: &str) -> bool {
    !matches!(model, "scsi-hd" | "scsi-cd" | "usb-storage" | "usb-net")
}

/// Attach `devices` to `domain`: their references, or [`Error::InBatch`] after which none of
/// them is there.
pub(crate) async fn attach_batch(
    domains: &Domains,
    domain: &Domain,
    devices: &[NewDevice],
) -> Result<Vec<DeviceRef>> {
    let in_batch = |index: usize, error: Error| Error::InBatch {
        index,
        entry: devices[index].to_string(),
        error: Box::new(error),
    };
    let entry = domains.entry(domain).await?;
    let session = domains.session(&entry).await?;
    // Every entry is checked, its image included, before anything changes; images before the
    // domain's lock, so that a slow file system stalls only this batch.
    let mut checked = Vec::with_capacity(devices.len());
    for (i, d) in devices.iter().enumerate() {
        checked.push(if d.device_type == DeviceType::DISK {
            Some(
                check_disk(&entry, session.qmp.timeout(), &d.attributes)
                    .await
                    .map_err(|e| in_batch(i, e))?,
            )
        } else if d.device_type == DeviceType::NETWORK {
            None
        } else {
            return Err(in_batch(
                i,
                Error::Unsupported {
                    driver: crate::NAME.into(),
                    operation: format!("device type '{}'", d.device_type),
                    detail: "supported types: disk, network".into(),
                },
            ));
        });
    }
    let op = entry.ops.lock().await;
    let mut used_macs = None;
    let mut plans: Vec<Plan> = Vec::with_capacity(devices.len());
    let mut ids = HashSet::new();
    for (i, (d, c)) in devices.iter().zip(checked).enumerate() {
        let plan = match c {
            Some(c) => prepare_disk(&session, &d.attributes, c).await,
            None => {
                if used_macs.is_none() {
                    used_macs = Some(macs(&session).await.map_err(|e| in_batch(i, e))?);
                }
                let used = used_macs.as_mut().expect("read above");
                prepare_nic(&session, &d.attributes, used).await
            }
        }
        .map_err(|e| in_batch(i, e))?;
        if !ids.insert(plan.id.clone()) {
            return Err(in_batch(
                i,
                Error::DeviceExists {
                    domain: String::new(),
                    device_type: d.device_type.to_string(),
                    reference: plan.id.clone(),
                },
            ));
        }
        plans.push(plan);
    }
    // Each device on its first candidate bus; PCIe devices each on a free root port of its own.
    let mut buses = Vec::with_capacity(plans.len());
    let mut ports_taken = 0;
    for (i, p) in plans.iter().enumerate() {
        let candidates = session
            .placement
            .buses_for(&session.qmp, p.model)
            .await
            .map_err(|e| in_batch(i, e))?;
        let bus = if is_pci(p.model) && candidates.first().is_some_and(Option::is_some) {
            let Some(b) = candidates.get(ports_taken) else {
                return Err(in_batch(i, Error::backend(
                    crate::NAME,
                    format!("no free PCIe root port for the {} (the batch's PCI devices take all {} free ones): start QEMU with more -device pcie-root-port,id=rpN,chassis=N,slot=N, or use bus=scsi", p.model, candidates.len()),
                )));
            };
            ports_taken += 1;
            b.clone()
        } else {
            candidates[0].clone()
        };
        buses.push(bus);
    }

    let mut cmds = Vec::with_capacity(plans.len() * 2);
    for (p, bus) in plans.iter().zip(&buses) {
        if let Some((command, args)) = &p.backend_add {
            cmds.push((
                (*command).to_owned(),
                serde_json::Value::Object(args.clone()),
            ));
        }
        cmds.push(("device_add".to_owned(), p.device_args(bus)));
    }
    debug!(domain = %domain.name, devices = plans.len(), commands = cmds.len(), "batch: one pipelined write");
    let mut replies = session.qmp.batch(cmds).await.into_iter();

    // What each entry made, and the first failure.
    let mut made = Vec::new(); // (entry index, id, type, model, after)
    let mut stray_backends = Vec::new();
    let mut failure: Option<(usize, Error)> = None;
    for (i, p) in plans.into_iter().enumerate() {
        let backend = p
            .backend_add
            .as_ref()
            .map(|_| replies.next().expect("a reply per command"));
        let device = replies.next().expect("a reply per command");
        let timed_out = matches!(backend, Some(Err(QmpError::Timeout { .. })))
            || matches!(device, Err(QmpError::Timeout { .. }));
        let device_made = match &device {
            Ok(_) => true,
            Err(QmpError::Timeout { .. }) => exists(&session, &p.id).await,
            Err(_) => false,
        };
        if device_made {
            made.push((i, p.id.clone(), p.device_type.clone(), p.model, p.after));
            continue;
        }
        // The device is not there: its backend, if this batch made it, goes.
        if timed_out || matches!(backend, Some(Ok(_))) {
            stray_backends.push(p.backend.clone());
        }
        if failure.is_none() {
            let e = match (backend, device) {
                (Some(Err(e)), _) if !matches!(e, QmpError::Timeout { .. }) => (p.backend_error)(e),
                (_, Err(e @ QmpError::Timeout { .. }))
                | (Some(Err(e @ QmpError::Timeout { .. })), _) => {
                    e.into_core(&format!("the batch's device_add of a {}", p.model))
                }
                (_, Err(e)) => {
                    device_add_error(&session, &p.device_type, &p.id, p.model, p.passthrough, e)
                        .await
                }
                (_, Ok(_)) => unreachable!("the device was made"),
            };
            failure = Some((i, e));
        }
    }

    if failure.is_none() {
        let mut refs = Vec::with_capacity(made.len());
        for (i, id, t, model, after) in made {
            if let Err(e) = finish(&session, &id, model, after).await {
                // The device is there, so it is reported; what could not be finished is said.
                warn!(%id, error = %e, "a device of a batch is made, but not finished");
                failure.get_or_insert((i, e));
            }
            entry.remember(&id, &t);
            domains.events.send(DeviceEvent::Added {
                domain: entry.domain(),
                device_type: t,
                reference: DeviceRef::new(id.clone()).expect("checked id"),
            });
            refs.push(DeviceRef::new(id).expect("checked id"));
        }
        if let Some((i, e)) = failure {
            return Err(in_batch(i, e));
        }
        return Ok(refs);
    }

    // Roll back: the backends of devices that were not made, then the devices that were.
    let (index, error) = failure.expect("a failure");
    let mut left = Vec::new();
    for b in &stray_backends {
        if let Err(e) = markers::remove_backend(&session.qmp, b).await {
            left.push(format!("backend {b:?} ({e})"));
        }
    }
    drop(op);
    if !session.qmp.is_alive() {
        // Not an `InBatch`: that says the batch was rolled back, which nobody knows now.
        return Err(Error::backend(
            crate::NAME,
            format!("the connection to QEMU of domain '{}' was lost during a batch of {} devices (at entry {index}: {error}): which of them were made is unknown; list the devices once QEMU can be reached, and detach those of the batch", domain.name, devices.len()),
        ));
    }
    let undo = DetachOptions::default();
    for (_, id, t, _, _) in made.into_iter().rev() {
        entry.remember(&id, &t);
        let r = DeviceRef::new(id.clone()).expect("checked id");
        domains.events.send(DeviceEvent::Added {
            domain: entry.domain(),
            device_type: t.clone(),
            reference: r.clone(),
        });
        debug!(%id, "rolling back a batch: detaching");
        if let Err(e) =
            detach::detach(&entry, &session, &domains.events, domain, &t, &r, &undo).await
        {
            warn!(%id, error = %e, "rolling back a batch: a device it made stays");
            left.push(format!("{t} {id} ({e})"));
        }
    }
    let mut entry_text = devices[index].to_string();
    if !left.is_empty() {
        entry_text.push_str(&format!(
            "; the rollback could not remove everything: {}",
            left.join("; ")
        ));
    }
    Err(Error::InBatch {
        index,
        entry: entry_text,
        error: Box::new(error),
    })
}
