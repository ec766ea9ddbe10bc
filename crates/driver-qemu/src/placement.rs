//! Where a new device goes: the domain's SCSI, USB and PCIe buses (cached per session), free
//! root ports, and the order in which to try candidate buses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use vdev_core::{Error, Result};

use crate::qmp::{decode, Qmp};
use crate::schema;

const SCSI_CONTROLLERS: &[&str] = &[
    "virtio-scsi-pci",
    "virtio-scsi-device",
    "lsi53c895a",
    "megasas",
    "mptsas1068",
];
const ROOT_PORTS: &[&str] = &["pcie-root-port", "ioh3420", "x3130-upstream"];
const USB_CONTROLLERS: &[&str] = &[
    "qemu-xhci",
    "nec-usb-xhci",
    "usb-ehci",
    "ich9-usb-ehci1",
    "piix3-usb-uhci",
];

/// Where new devices can go, from `qom-list /machine/peripheral` (cached per session).
#[derive(Debug, Default)]
pub(crate) struct Controllers {
    scsi_buses: Vec<String>,
    root_ports: Vec<String>,
    usb_buses: Vec<String>,
}

/// What placement remembers for one QMP session: the controllers, and which SCSI bus took the
/// last disk.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    controllers: Mutex<Option<Arc<Controllers>>>,
    /// Index of the SCSI bus that took the last disk: the next attach tries it first.
    scsi_hint: AtomicUsize,
}

impl Placement {
    /// Read the controllers again at the next attach (a device came or went meanwhile).
    pub(crate) fn forget(&self) {
        *self.controllers.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A `model` went on the `i`-th candidate bus of [`Placement::buses_for`].
    pub(crate) fn placed(&self, model: &str, i: usize) {
        if matches!(model, "scsi-hd" | "scsi-cd") {
            let n = self.scsi_hint.load(Ordering::Relaxed);
            self.scsi_hint.store(n + i, Ordering::Relaxed);
        }
    }

    async fn controllers(&self, qmp: &Qmp) -> Result<Arc<Controllers>> {
        if let Some(c) = self
            .controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(c.clone());
        }
        let v = qmp
            .execute_raw("qom-list", json!({"path": "/machine/peripheral"}))
            .await
            .and_then(schema::peripheral)
            .map_err(|e| e.into_core("finding controllers (qom-list)"))?;
        let mut c = Controllers::default();
        for (id, model) in v {
            if SCSI_CONTROLLERS.contains(&model.as_str()) {
                c.scsi_buses.push(format!("{id}.0"));
            } else if ROOT_PORTS.contains(&model.as_str()) {
                c.root_ports.push(id);
            } else if USB_CONTROLLERS.contains(&model.as_str()) {
                c.usb_buses.push(format!("{id}.0"));
            }
        }
        c.scsi_buses.sort();
        c.root_ports.sort();
        c.usb_buses.sort();
        let c = Arc::new(c);
        *self.controllers.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    /// Candidate buses for a model, in the order to try them. `None` in the list: let QEMU choose.
    pub(crate) async fn buses_for(&self, qmp: &Qmp, model: &str) -> Result<Vec<Option<String>>> {
        let c = self.controllers(qmp).await?;
        let none = || vec![None];
        Ok(match model {
            "scsi-hd" | "scsi-cd" => {
                if c.scsi_buses.is_empty() {
                    return Err(Error::backend(
                    crate::NAME,
                    "the domain has no SCSI controller for bus=scsi: start QEMU with -device virtio-scsi-pci,id=scsi0, or use bus=virtio or bus=usb",
                ));
                }
                let n = c.scsi_buses.len();
                let hint = self.scsi_hint.load(Ordering::Relaxed) % n;
                (0..n)
                    .map(|i| Some(c.scsi_buses[(hint + i) % n].clone()))
                    .collect()
            }
            "usb-storage" | "usb-net" => match c.usb_buses.first() {
                Some(b) => vec![Some(b.clone())],
                None => none(),
            },
            _ => {
                if c.root_ports.is_empty() {
                    if is_q35(qmp).await {
                        return Err(Error::backend(
                        crate::NAME,
                        format!("the machine (q35) has no pcie-root-port, and PCI Express devices such as a {model} can only be hot-plugged into one: start QEMU with one -device pcie-root-port,id=rpN,chassis=N,slot=N per hot-plug slot"),
                    ));
                    }
                    none()
                } else {
                    let free = free_root_ports(qmp, &c).await?;
                    if free.is_empty() {
                        return Err(Error::backend(
                        crate::NAME,
                        format!("no free PCIe root port for a {model}: every pcie-root-port has a device; start QEMU with more -device pcie-root-port,id=rpN,chassis=N,slot=N, or detach a PCI device"),
                    ));
                    }
                    // Every free port, in order: one taken meanwhile by another client is skipped.
                    free.into_iter().map(Some).collect()
                }
            }
        })
    }
}

/// The free PCIe root ports (no device on their bus), in order.
async fn free_root_ports(qmp: &Qmp, c: &Controllers) -> Result<Vec<String>> {
    let replies = qmp
        .batch(
            c.root_ports
                .iter()
                .map(|rp| {
                    (
                        "qom-list".to_owned(),
                        json!({"path": format!("/machine/peripheral/{rp}/{rp}")}),
                    )
                })
                .collect(),
        )
        .await;
    let mut free = Vec::new();
    for (rp, r) in c.root_ports.iter().zip(replies) {
        let props: Vec<qapi::qmp::ObjectPropertyInfo> = r
            .and_then(|v| decode("qom-list", v))
            .map_err(|e| e.into_core("finding a free PCIe root port"))?;
        if !props.iter().any(|p| p.name.starts_with("child[")) {
            free.push(rp.clone());
        }
    }
    Ok(free)
}

/// Whether the machine is a q35 (PCI Express root bus, which takes no hot-plugged devices).
async fn is_q35(qmp: &Qmp) -> bool {
    qmp.execute_raw("qom-list", json!({"path": "/machine/q35"}))
        .await
        .is_ok()
}
