//! Disks and NICs: attribute schemas, listing from QEMU's real state, attach with rollback.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rand::Rng;
use serde_json::{json, Map, Value};
use tracing::debug;
use vdev_core::{
    AttributeSpec, Attributes, Device, DeviceRef, DeviceState, DeviceType, DeviceTypeSchema, Error,
    Result,
};

use crate::driver::{lock, Backend, DomainEntry, Session};
use crate::error::QmpError;
use crate::markers;
use crate::qmp::{decode, Endpoint};

/// Device models listed as disks, with the `bus` attribute each is listed under.
const DISK_MODELS: &[(&str, &str)] = &[
    ("scsi-hd", "scsi"),
    ("scsi-cd", "scsi"),
    ("scsi-block", "scsi"),
    ("virtio-blk-pci", "virtio"),
    ("virtio-blk-device", "virtio"),
    ("usb-storage", "usb"),
    ("ide-hd", "ide"),
    ("ide-cd", "ide"),
    ("nvme", "nvme"),
];

/// Device models listed as network devices.
const NIC_MODELS: &[&str] = &[
    "virtio-net-pci",
    "virtio-net-device",
    "e1000",
    "e1000e",
    "e1000-82544gc",
    "e1000-82545em",
    "igb",
    "rtl8139",
    "usb-net",
    "vmxnet3",
    "ne2k_pci",
    "pcnet",
    "i82550",
    "i82551",
    "i82557b",
    "i82559er",
    "tulip",
];

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

/// The device types and their attributes.
pub(crate) fn schemas() -> Vec<DeviceTypeSchema> {
    vec![
        DeviceTypeSchema {
            device_type: DeviceType::DISK,
            description: "a disk: a blockdev node (file + format) and a device on a SCSI, virtio or USB bus".into(),
            attributes: vec![
                AttributeSpec::optional("source", "path of the image file or block device on the QEMU host; required, except for an empty CD-ROM drive; on a CD-ROM drive, update changes the medium (empty ejects)", "/var/lib/vms/data.qcow2").updatable(),
                AttributeSpec::optional("format", "image format, raw or qcow2 (never probed: a guest could forge a header); required with a source, except on a CD-ROM drive (default raw)", "qcow2").updatable(),
                AttributeSpec::optional("media", "disk (default) or cdrom: a CD-ROM drive (scsi-cd on virtio-scsi), with or without a medium, whose medium update can change", "cdrom"),
                AttributeSpec::optional("force", "update of a CD-ROM drive only: true opens a tray the guest has locked (the guest loses its medium at once)", "true").updatable(),
                AttributeSpec::optional("bus", "scsi (default; a free virtio-scsi target), virtio (virtio-blk-pci on a free PCIe root port) or usb (usb-storage on an xHCI port)", "scsi"),
                AttributeSpec::optional("readonly", "true or false (default false)", "true"),
                AttributeSpec::optional("serial", "serial number the guest sees", "DATA01"),
                AttributeSpec::optional("id", "the device id, used as its reference (generated when absent): a letter, then letters, digits, '-', '.', '_'", "data1"),
            ],
            passthrough_prefixes: vec!["device.".into(), "blockdev.".into()],
        },
        DeviceTypeSchema {
            device_type: DeviceType::NETWORK,
            description: "a NIC: a netdev backend and a network device".into(),
            attributes: vec![
                AttributeSpec::optional("netdev", "backend: user (default, QEMU's user-mode network) or tap", "user"),
                AttributeSpec::optional("ifname", "TAP interface name (netdev=tap only; created when missing, needs root)", "tap0"),
                AttributeSpec::optional("model", "virtio-net-pci (default), e1000 or usb-net", "virtio-net-pci"),
                AttributeSpec::optional("mac", "unicast MAC address, unique in the domain (generated in 52:54:00:xx:xx:xx when absent)", "52:54:00:12:34:56"),
                AttributeSpec::optional("id", "the device id, used as its reference (generated when absent)", "net1"),
                AttributeSpec::optional("link", "up (default) or down: whether the guest sees a cable (QMP set_link); changeable by update", "down").updatable(),
            ],
            passthrough_prefixes: vec!["device.".into(), "netdev.".into()],
        },
    ]
}

/// QEMU's rule for ids (`id_wellformed`): a letter, then letters, digits, `-`, `.`, `_`.
fn check_id(id: &str) -> Result<()> {
    let mut c = id.chars();
    let ok = c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '-' | '.' | '_'))
        && DeviceRef::new(id).is_ok();
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_attribute(
            "id",
            format!("'{id}' is not a QEMU device id: start with a letter, then use letters, digits, '-', '.' and '_'"),
        ))
    }
}

fn parse_bool_attr(name: &str, v: &str) -> Result<bool> {
    vdev_core::parse_bool(v).ok_or_else(|| {
        Error::invalid_attribute(
            name,
            format!(
                "'{v}' is not a boolean: write {}",
                vdev_core::BOOL_SPELLINGS
            ),
        )
    })
}

fn model_of(qom_type: &str) -> &str {
    qom_type
        .strip_prefix("child<")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(qom_type)
}

fn disk_bus(model: &str) -> Option<&'static str> {
    DISK_MODELS
        .iter()
        .find(|(m, _)| *m == model)
        .map(|(_, b)| *b)
}

/// The device id a `query-block` entry's `qdev` belongs to (`sd1`,
/// `/machine/peripheral/vblk1/virtio-backend`, `/machine/peripheral/us1/us1.0/legacy[0]`).
pub(crate) fn qdev_id(qdev: &str) -> Option<&str> {
    match qdev.strip_prefix("/machine/peripheral/") {
        Some(rest) => rest.split('/').next(),
        None if qdev.starts_with('/') => None,
        None => Some(qdev),
    }
}

fn peripheral(v: Value) -> Result<Vec<(String, String)>, QmpError> {
    let props: Vec<qapi::qmp::ObjectPropertyInfo> = decode("qom-list", v)?;
    Ok(props
        .into_iter()
        .filter(|p| p.type_.starts_with("child<"))
        .map(|p| {
            let m = model_of(&p.type_).to_owned();
            (p.name, m)
        })
        .collect())
}

/// The ids of the devices in a reply to `qom-list /machine/peripheral`.
pub(crate) fn peripheral_ids(v: Value) -> Result<HashSet<String>, QmpError> {
    Ok(peripheral(v)?.into_iter().map(|(id, _)| id).collect())
}

fn ctx(e: QmpError, what: &str) -> Error {
    e.into_core(what)
}

/// Every disk and NIC of the domain, from QEMU's state.
///
/// Which devices exist is read from QEMU every time (`qom-list /machine/peripheral`, one
/// request). A disk's attributes (image, format, node, read-only) are read with `query-block`
/// only when the listing meets a disk id the session has not seen: on QEMU 7.2 `query-block`
/// of 500 disks costs ~35 ms inside QEMU (it builds image info for every node), while the ids
/// cost ~2 ms. A cached entry is dropped when QEMU reports the device deleted (DEVICE_DELETED
/// reaches every QMP client), so a device re-created under the same id is read again. NICs'
/// MAC and netdev come from one pipelined batch of `qom-get`s.
pub(crate) async fn list(session: &Session, entry: &DomainEntry) -> Result<Vec<Device>> {
    // One round trip: the devices, and the pending-removal markers any vdev process left.
    let mut r = session
        .qmp
        .batch(vec![
            (
                "qom-list".to_owned(),
                json!({"path": "/machine/peripheral"}),
            ),
            markers::list_command(),
        ])
        .await
        .into_iter();
    let (devs, objects) = (r.next().expect("reply"), r.next().expect("reply"));
    let devs = devs
        .and_then(peripheral)
        .map_err(|e| ctx(e, "listing devices (qom-list)"))?;
    let records = objects
        .and_then(markers::records)
        .map_err(|e| ctx(e, "listing pending removals (qom-list /objects)"))?;
    let marked: HashSet<String> = records.pending.iter().cloned().collect();
    let link_down: HashSet<&str> = records.link_down.iter().map(String::as_str).collect();
    let models: HashMap<&str, &str> = devs.iter().map(|(i, m)| (i.as_str(), m.as_str())).collect();
    if records
        .pending
        .iter()
        .chain(&records.link_down)
        .any(|id| !models.contains_key(id.as_str()))
    {
        // Removals that completed while no vdev process was there to see them.
        let present = models.keys().map(|k| (*k).to_owned()).collect();
        markers::collect_gone(&session.qmp, &records, &present).await;
    }
    let state = |id: &str| {
        if marked.contains(id) || entry.is_pending(id) {
            DeviceState::RemovalPending
        } else {
            DeviceState::Connected
        }
    };
    let disk_ids: Vec<&str> = devs
        .iter()
        .filter(|(_, m)| disk_bus(m).is_some())
        .map(|(i, _)| i.as_str())
        .collect();
    let fresh = {
        let cache = lock(&session.disk_cache);
        disk_ids
            .iter()
            .all(|id| cache.get(*id).is_some_and(|(m, _)| m == models[id]))
    };
    if !fresh {
        let blocks: Vec<qapi::qmp::BlockInfo> = session
            .qmp
            .execute_raw("query-block", json!({}))
            .await
            .and_then(|v| decode("query-block", v))
            .map_err(|e| ctx(e, "listing disks (query-block)"))?;
        let mut by_id: HashMap<&str, &qapi::qmp::BlockInfo> = HashMap::new();
        for b in &blocks {
            if let Some(id) = b.qdev.as_deref().and_then(qdev_id) {
                by_id.insert(id, b);
            }
        }
        let mut cache = lock(&session.disk_cache);
        cache.clear();
        for id in &disk_ids {
            let model = models[id];
            let attrs = block_attributes(id, model, by_id.get(id).copied());
            cache.insert((*id).to_owned(), (model.to_owned(), Some(attrs)));
        }
    }
    let mut disks = Vec::new();
    {
        let cache = lock(&session.disk_cache);
        for id in &disk_ids {
            let (Some((model, attrs)), Ok(reference)) = (cache.get(*id), DeviceRef::new(*id))
            else {
                continue;
            };
            // A drive without a medium (an empty CD-ROM drive, a disk given without a drive) is
            // listed too, with what it is and where.
            let attributes = attrs
                .clone()
                .unwrap_or_else(|| empty_drive_attributes(id, model));
            disks.push(Device {
                device_type: DeviceType::DISK,
                reference,
                state: state(id),
                attributes,
            });
        }
    }
    let nic_ids: Vec<&str> = devs
        .iter()
        .filter(|(_, m)| NIC_MODELS.contains(&m.as_str()))
        .map(|(i, _)| i.as_str())
        .collect();
    let mut cmds = Vec::with_capacity(nic_ids.len() * 2);
    for id in &nic_ids {
        for prop in ["mac", "netdev"] {
            cmds.push((
                "qom-get".to_owned(),
                json!({"path": format!("/machine/peripheral/{id}"), "property": prop}),
            ));
        }
    }
    let mut props = session.qmp.batch(cmds).await.into_iter();
    let mut nics = Vec::new();
    for id in nic_ids {
        let mac = props.next().expect("reply");
        let netdev = props.next().expect("reply");
        let Ok(reference) = DeviceRef::new(id) else {
            continue;
        };
        let mut a = Attributes::new();
        let mut put = |k: &'static str, v: &str| {
            if let Err(e) = a.insert(k, v.to_owned()) {
                debug!(error = %e, "attribute not listable");
            }
        };
        put("id", id);
        put("model", models[id]);
        match mac {
            Ok(Value::String(m)) => put("mac", &m),
            Err(QmpError::Qemu { class, .. }) if class == "DeviceNotFound" => continue, // gone meanwhile
            Err(e) => return Err(ctx(e, "listing NICs (qom-get mac)")),
            Ok(_) => {}
        }
        if let Ok(Value::String(n)) = netdev {
            put("netdev-id", &n);
        }
        // QEMU 7.2 cannot read a link state back: this is what vdev set (see the docs).
        put("link", if link_down.contains(id) { "down" } else { "up" });
        nics.push(Device {
            device_type: DeviceType::NETWORK,
            reference,
            state: state(id),
            attributes: a,
        });
    }
    disks.sort_by(|a, b| a.reference.cmp(&b.reference));
    nics.sort_by(|a, b| a.reference.cmp(&b.reference));
    disks.extend(nics);
    Ok(disks)
}

/// A disk's listed attributes.
pub(crate) fn disk_attributes(
    id: &str,
    model: &str,
    source: &str,
    format: &str,
    readonly: bool,
    node: Option<&str>,
) -> Attributes {
    let mut a = Attributes::new();
    let mut put = |k: &'static str, v: &str| {
        if let Err(e) = a.insert(k, v.to_owned()) {
            debug!(error = %e, "attribute not listable");
        }
    };
    put("id", id);
    put("model", model);
    put("bus", disk_bus(model).unwrap_or(model));
    put("source", source);
    put("format", format);
    put("readonly", if readonly { "true" } else { "false" });
    if let Some(n) = node {
        put("node", n);
    }
    a
}

/// Whether a model is a CD-ROM drive (its medium can change).
pub(crate) fn is_cdrom(model: &str) -> bool {
    matches!(model, "scsi-cd" | "ide-cd")
}

/// A disk's listed attributes from its `query-block` entry (none: a drive without a medium).
/// A CD-ROM drive also lists `media=cdrom` and its tray (`open`/`closed`, and `locked` when the
/// guest has locked it).
pub(crate) fn block_attributes(
    id: &str,
    model: &str,
    b: Option<&qapi::qmp::BlockInfo>,
) -> Attributes {
    let mut a = match b.and_then(|b| b.inserted.as_ref()) {
        Some(i) => disk_attributes(id, model, &i.file, &i.drv, i.ro, i.node_name.as_deref()),
        None => empty_drive_attributes(id, model),
    };
    if is_cdrom(model) {
        let tray = match b.and_then(|b| b.tray_open) {
            Some(true) => "open",
            _ => "closed",
        };
        let locked = b.is_some_and(|b| b.locked);
        for (k, v) in [
            ("media", "cdrom"),
            ("tray", tray),
            ("locked", if locked { "true" } else { "false" }),
        ] {
            if let Err(e) = a.insert(k, v.to_owned()) {
                debug!(error = %e, "attribute not listable");
            }
        }
    }
    a
}

/// The listed attributes of a drive without a medium.
fn empty_drive_attributes(id: &str, model: &str) -> Attributes {
    let mut a = Attributes::new();
    for (k, v) in [
        ("id", id),
        ("model", model),
        ("bus", disk_bus(model).unwrap_or(model)),
        ("medium", "none"),
    ] {
        if let Err(e) = a.insert(k, v.to_owned()) {
            debug!(error = %e, "attribute not listable");
        }
    }
    a
}

/// The model of device `id` (`None`: no such device).
pub(crate) async fn model(session: &Session, id: &str) -> Result<Option<String>> {
    match session
        .qmp
        .execute_raw(
            "qom-get",
            json!({"path": format!("/machine/peripheral/{id}"), "property": "type"}),
        )
        .await
    {
        Ok(Value::String(m)) => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) if e.class() == Some("DeviceNotFound") => Ok(None),
        Err(e) => Err(ctx(e, &format!("looking up device {id}"))),
    }
}

/// The device type vdev lists a model as.
pub(crate) fn device_type_of(model: &str) -> Option<DeviceType> {
    if disk_bus(model).is_some() {
        Some(DeviceType::DISK)
    } else if NIC_MODELS.contains(&model) {
        Some(DeviceType::NETWORK)
    } else {
        None
    }
}

/// Whether device `id` exists.
pub(crate) async fn exists(session: &Session, id: &str) -> bool {
    session
        .qmp
        .execute_raw(
            "qom-get",
            json!({"path": format!("/machine/peripheral/{id}"), "property": "type"}),
        )
        .await
        .is_ok()
}

/// The type of device `id` (None when it is neither a disk nor a NIC) and the backend to
/// remove after it: one pipelined batch of three `qom-get`s.
pub(crate) async fn identify(session: &Session, id: &str) -> Result<(Option<DeviceType>, Backend)> {
    let path = format!("/machine/peripheral/{id}");
    let mut r = session
        .qmp
        .batch(
            ["type", "drive", "netdev"]
                .into_iter()
                .map(|p| ("qom-get".to_owned(), json!({"path": path, "property": p})))
                .collect(),
        )
        .await
        .into_iter();
    let (ty, drive, netdev) = (
        r.next().expect("reply"),
        r.next().expect("reply"),
        r.next().expect("reply"),
    );
    let model = match ty {
        Ok(Value::String(t)) => t,
        Ok(_) => return Ok((None, Backend::None)),
        Err(e) if e.class() == Some("DeviceNotFound") => return Ok((None, Backend::None)),
        Err(e) => return Err(ctx(e, &format!("looking up device {id}"))),
    };
    if disk_bus(&model).is_some() {
        let backend = match drive {
            Ok(Value::String(n)) if !n.is_empty() => Backend::Node(n),
            // usb-storage has no drive of its own: its inner SCSI device holds the node.
            _ => node_from_query_block(session, id).await?,
        };
        return Ok((Some(DeviceType::DISK), backend));
    }
    if NIC_MODELS.contains(&model.as_str()) {
        let backend = match netdev {
            Ok(Value::String(n)) if !n.is_empty() => Backend::Netdev(n),
            _ => Backend::None,
        };
        return Ok((Some(DeviceType::NETWORK), backend));
    }
    Ok((None, Backend::None))
}

async fn node_from_query_block(session: &Session, id: &str) -> Result<Backend> {
    let blocks: Vec<qapi::qmp::BlockInfo> = session
        .qmp
        .execute_raw("query-block", json!({}))
        .await
        .and_then(|v| decode("query-block", v))
        .map_err(|e| ctx(e, "finding a disk's node (query-block)"))?;
    Ok(blocks
        .into_iter()
        .find(|b| b.qdev.as_deref().and_then(qdev_id) == Some(id))
        .and_then(|b| b.inserted?.node_name)
        .map_or(Backend::None, Backend::Node))
}

async fn controllers(session: &Session) -> Result<Arc<Controllers>> {
    if let Some(c) = lock(&session.controllers).as_ref() {
        return Ok(c.clone());
    }
    let v = session
        .qmp
        .execute_raw("qom-list", json!({"path": "/machine/peripheral"}))
        .await
        .and_then(peripheral)
        .map_err(|e| ctx(e, "finding controllers (qom-list)"))?;
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
    *lock(&session.controllers) = Some(c.clone());
    Ok(c)
}

/// The free PCIe root ports (no device on their bus), in order.
async fn free_root_ports(session: &Session, c: &Controllers) -> Result<Vec<String>> {
    let replies = session
        .qmp
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
            .map_err(|e| ctx(e, "finding a free PCIe root port"))?;
        if !props.iter().any(|p| p.name.starts_with("child[")) {
            free.push(rp.clone());
        }
    }
    Ok(free)
}

/// Whether the machine is a q35 (PCI Express root bus, which takes no hot-plugged devices).
async fn is_q35(session: &Session) -> bool {
    session
        .qmp
        .execute_raw("qom-list", json!({"path": "/machine/q35"}))
        .await
        .is_ok()
}

/// Candidate buses for a model, in the order to try them. `None` in the list: let QEMU choose.
async fn buses_for(session: &Session, model: &str) -> Result<Vec<Option<String>>> {
    let c = controllers(session).await?;
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
            let hint = session.scsi_hint.load(Ordering::Relaxed) % n;
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
                if is_q35(session).await {
                    return Err(Error::backend(
                        crate::NAME,
                        format!("the machine (q35) has no pcie-root-port, and PCI Express devices such as a {model} can only be hot-plugged into one: start QEMU with one -device pcie-root-port,id=rpN,chassis=N,slot=N per hot-plug slot"),
                    ));
                }
                none()
            } else {
                let free = free_root_ports(session, &c).await?;
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

/// Pass-through attributes without their prefix: (name, value).
pub(crate) type Passthrough = Vec<(String, String)>;

/// Split pass-through attributes by prefix: (named, device.*, backend.*).
fn split_attrs<'a>(
    attrs: &'a Attributes,
    backend_prefix: &str,
) -> (HashMap<&'a str, &'a str>, Passthrough, Passthrough) {
    let mut named = HashMap::new();
    let mut dev = Vec::new();
    let mut back = Vec::new();
    for (k, v) in attrs.iter() {
        if let Some(p) = k.strip_prefix("device.") {
            dev.push((p.to_owned(), v.to_owned()));
        } else if let Some(p) = k.strip_prefix(backend_prefix) {
            back.push((p.to_owned(), v.to_owned()));
        } else {
            named.insert(k, v);
        }
    }
    (named, dev, back)
}

/// What QEMU must open an image with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// A regular file (QEMU's `file` driver).
    File,
    /// A block device: LVM, iSCSI, NVMe, loop, ... (QEMU's `host_device` driver).
    HostDevice,
}

impl Protocol {
    fn driver(self) -> &'static str {
        match self {
            Protocol::File => "file",
            Protocol::HostDevice => "host_device",
        }
    }
}

/// Check the image on this host before QEMU opens it (unix sockets only: QEMU is local), and
/// say whether it is a file or a block device. The file system calls run on a blocking thread
/// and are bounded by `timeout`: a dead NFS mount must not hang the attach.
pub(crate) async fn check_image(
    host: &vdev_remote::Host,
    endpoint: &Endpoint,
    source: &str,
    format: &str,
    timeout: std::time::Duration,
) -> Result<Protocol> {
    if !matches!(endpoint, Endpoint::Unix(_)) {
        return Ok(Protocol::File);
    }
    if !Path::new(source).is_absolute() {
        return Err(Error::invalid_attribute(
            "source",
            format!("'{source}' is not an absolute path"),
        ));
    }
    if !host.is_local() {
        return inspect_remote_image(host, source, format, timeout).await;
    }
    let (path, fmt) = (source.to_owned(), format.to_owned());
    let work = tokio::task::spawn_blocking(move || inspect_image(&path, &fmt));
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Error::backend_with(
            crate::NAME,
            format!("checking '{source}' failed"),
            e,
        )),
        Err(_) => Err(Error::invalid_attribute(
            "source",
            format!(
                "'{source}' could not be examined within {}: its file system does not answer (a hung network mount?)",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

/// [`check_image`] on a remote host: the same checks in one round trip (shell tests, and `head`
/// for a qcow2 header only).
async fn inspect_remote_image(
    host: &vdev_remote::Host,
    source: &str,
    format: &str,
    timeout: std::time::Duration,
) -> Result<Protocol> {
    // Shell builtins in the agent's own shell (no process on the host), `head` for qcow2 only;
    // defined once per ssh session, then one short line per call.
    const BODY: &str = r#"if [ -f "$1" ] || [ -b "$1" ]; then
  if [ ! -r "$1" ]; then echo unreadable
  elif [ "$2" = qcow2 ] && [ "$(head -c 3 -- "$1" 2>/dev/null)" != QFI ]; then echo notqcow2
  elif [ -f "$1" ]; then echo file; else echo block; fi
elif [ -d "$1" ]; then echo dir; elif [ -p "$1" ]; then echo fifo; elif [ -S "$1" ]; then echo socket
elif [ -c "$1" ]; then echo char; elif [ ! -e "$1" ]; then echo missing; else echo other; fi"#;
    let out = host
        .call("__vdev_image", BODY, &[source, format], timeout)
        .await
        .map_err(|e| match e {
            Error::Timeout { .. } => Error::invalid_attribute(
                "source",
                format!(
                    "'{source}' could not be examined on {} within {}: its file system does not answer (a hung network mount?)",
                    host.name(),
                    humantime::format_duration(timeout)
                ),
            ),
            e => e,
        })?;
    let on = host.name();
    let what = match out.text().as_str() {
        "file" => return Ok(Protocol::File),
        "block" => return Ok(Protocol::HostDevice),
        "notqcow2" => {
            return Err(Error::invalid_attribute(
                "format",
                format!(
                "'{source}' on {on} is not a qcow2 image (no qcow2 header); give its real format"
            ),
            ))
        }
        "missing" => {
            return Err(Error::invalid_attribute(
                "source",
                format!("cannot open '{source}' on {on}: no such file"),
            ))
        }
        "unreadable" => {
            return Err(Error::invalid_attribute(
                "source",
                format!("cannot open '{source}' on {on}: permission denied"),
            ))
        }
        "dir" => "a directory",
        "fifo" => "a FIFO",
        "socket" => "a socket",
        "char" => "a character device",
        _ => "not a regular file",
    };
    Err(Error::invalid_attribute(
        "source",
        format!("'{source}' on {on} is {what}; give a disk image file or a block device"),
    ))
}

/// The blocking part of [`check_image`].
fn inspect_image(source: &str, format: &str) -> Result<Protocol> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let md = std::fs::metadata(source)
        .map_err(|e| Error::invalid_attribute("source", format!("cannot open '{source}': {e}")))?;
    let t = md.file_type();
    let protocol = if t.is_file() {
        Protocol::File
    } else if t.is_block_device() {
        Protocol::HostDevice
    } else {
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(Error::invalid_attribute(
            "source",
            format!("'{source}' is {what}; give a disk image file or a block device"),
        ));
    };
    // O_NONBLOCK: should the path be swapped for a FIFO after the check, opening it does not
    // wait for a writer.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(source)
        .map_err(|e| Error::invalid_attribute("source", format!("cannot open '{source}': {e}")))?;
    if format == "qcow2" {
        let mut magic = [0u8; 4];
        if f.read_exact(&mut magic).is_err() || &magic != b"QFI\xfb" {
            return Err(Error::invalid_attribute(
                "format",
                format!("'{source}' is not a qcow2 image (no qcow2 header); give its real format"),
            ));
        }
    }
    Ok(protocol)
}

/// After a failed `device_add`: the right error for QEMU's answer.
async fn device_add_error(
    session: &Session,
    device_type: &DeviceType,
    id: &str,
    model: &str,
    passthrough: bool,
    e: QmpError,
) -> Error {
    if matches!(e, QmpError::Qemu { .. }) && exists(session, id).await {
        return Error::DeviceExists {
            domain: String::new(),
            device_type: device_type.to_string(),
            reference: id.to_owned(),
        };
    }
    let main = if *device_type == DeviceType::DISK {
        "source"
    } else {
        "model"
    };
    match e {
        QmpError::Qemu { class, desc } if class == "GenericError" => Error::invalid_attribute(
            if passthrough { "device.*" } else { main },
            format!("QEMU refused the {model} device: {class}: {desc}"),
        ),
        e => ctx(e, &format!("device_add of a {model}")),
    }
}

/// `blockdev-add` (format node with an inline file node) then `device_add`; the node is
/// deleted again when the device cannot be added.
pub(crate) async fn attach_disk(
    session: &Session,
    entry: &DomainEntry,
    attrs: &Attributes,
) -> Result<DeviceRef> {
    let (named, dev_pt, blk_pt) = split_attrs(attrs, "blockdev.");
    let cdrom = match named.get("media").copied().unwrap_or("disk") {
        "disk" => false,
        "cdrom" => true,
        m => {
            return Err(Error::invalid_attribute(
                "media",
                format!("'{m}' is not disk or cdrom"),
            ))
        }
    };
    if named.contains_key("force") {
        return Err(Error::invalid_attribute(
            "force",
            "force is for updating a CD-ROM drive (opening a tray the guest has locked), not for attach",
        ));
    }
    let source = named.get("source").copied().filter(|s| !s.is_empty());
    if source.is_none() && !cdrom {
        return Err(Error::MissingAttribute {
            device_type: "disk".into(),
            name: "source".into(),
            hint: "give the image file or block device (only a CD-ROM drive, media=cdrom, may be empty)".into(),
        });
    }
    let format = match (named.get("format").copied(), cdrom) {
        (Some(f), _) => f,
        (None, true) => "raw",
        (None, false) => {
            return Err(Error::MissingAttribute {
                device_type: "disk".into(),
                name: "format".into(),
                hint: "give format=raw or format=qcow2 (formats are never probed)".into(),
            })
        }
    };
    check_format(format)?;
    let model = match (named.get("bus").copied().unwrap_or("scsi"), cdrom) {
        ("scsi", false) => "scsi-hd",
        ("scsi", true) => "scsi-cd",
        ("virtio", false) => "virtio-blk-pci",
        ("usb", false) => "usb-storage",
        (b, true) => {
            return Err(Error::invalid_attribute(
                "bus",
                format!("a CD-ROM drive goes on bus=scsi (scsi-cd), not '{b}'"),
            ))
        }
        (b, false) => {
            return Err(Error::invalid_attribute(
                "bus",
                format!("'{b}' is not scsi, virtio or usb"),
            ))
        }
    };
    let readonly = match (named.get("readonly"), cdrom) {
        (Some(v), false) => parse_bool_attr("readonly", v)?,
        (None, false) => false,
        (v, true) => {
            if v.is_some_and(|v| !parse_bool_attr("readonly", v).unwrap_or(false)) {
                return Err(Error::invalid_attribute(
                    "readonly",
                    "a CD-ROM drive is read-only",
                ));
            }
            true
        }
    };
    let id = match named.get("id") {
        Some(i) => {
            check_id(i)?;
            (*i).to_owned()
        }
        None => format!("disk-{}", vdev_core::random_hex()),
    };
    let timeout = session.qmp.timeout();
    let protocol = match source {
        Some(src) => Some(check_image(&entry.host, &entry.endpoint, src, format, timeout).await?),
        None => None,
    };
    let _op = entry.ops.lock().await;
    let mut props = session
        .intro
        .device_properties(
            &session.qmp,
            model,
            &dev_pt,
            &[
                ("drive", "source"),
                ("id", "id"),
                ("bus", "bus"),
                ("driver", "bus"),
            ],
        )
        .await?;
    if let Some(s) = named.get("serial") {
        props.insert("serial".into(), Value::from(*s));
    }
    let medium = match (source, protocol) {
        (Some(src), Some(p)) => {
            let node = format!("{}{}", markers::OWNED_PREFIX, vdev_core::random_hex());
            let opts = blockdev_options(session, &node, src, format, readonly, p, &blk_pt).await?;
            Some((node, opts))
        }
        _ => None,
    };
    let node = medium.as_ref().map(|(n, _)| n.clone());
    let buses = buses_for(session, model).await?;
    let device_args = |bus: &Option<String>| {
        let mut args = props.clone();
        args.insert("driver".into(), model.into());
        args.insert("id".into(), id.clone().into());
        if let Some(n) = &node {
            args.insert("drive".into(), n.clone().into());
        }
        if let Some(b) = bus {
            args.insert("bus".into(), b.clone().into());
        }
        Value::Object(args)
    };
    let made = Made {
        id: &id,
        device_type: DeviceType::DISK,
        backend: node.clone().map_or(Backend::None, Backend::Node),
    };
    // Should the connection drop from here on, the driver asks QEMU afterwards what became of it.
    *lock(&entry.in_flight) = Some((id.clone(), made.backend.clone()));
    // The node and the device on the first candidate bus in one round trip; QEMU runs them in
    // order (a device_add after a failed blockdev-add fails for want of its drive).
    let mut cmds = Vec::with_capacity(2);
    if let Some((_, opts)) = medium {
        cmds.push(("blockdev-add".to_owned(), Value::Object(opts)));
    }
    cmds.push(("device_add".to_owned(), device_args(&buses[0])));
    let mut r = session.qmp.batch(cmds).await.into_iter();
    if node.is_some() {
        match r.next().expect("reply") {
            Ok(_) => {}
            Err(e @ QmpError::Timeout { .. }) => return made.settle(session, e).await,
            Err(e) => {
                return Err(blockdev_add_error(
                    e,
                    source.unwrap_or_default(),
                    format,
                    blk_pt.is_empty(),
                ))
            }
        }
    }
    let first = r.next().expect("reply");
    let i = match made
        .place(
            session,
            &buses,
            &device_args,
            first,
            model,
            !dev_pt.is_empty(),
        )
        .await?
    {
        Placed::Bus(i) => i,
        Placed::Settled(r) => return Ok(r),
    };
    // A CD-ROM drive's tray is read from QEMU at the next listing.
    if let (false, Some(src), Some(n)) = (cdrom, source, &node) {
        lock(&session.disk_cache).insert(
            id.clone(),
            (
                model.to_owned(),
                Some(disk_attributes(&id, model, src, format, readonly, Some(n))),
            ),
        );
    }
    if matches!(model, "scsi-hd" | "scsi-cd") {
        let n = session.scsi_hint.load(Ordering::Relaxed);
        session.scsi_hint.store(n + i, Ordering::Relaxed);
    }
    Ok(DeviceRef::new(id).expect("checked id"))
}

/// How [`Made::place`] ended well.
enum Placed {
    /// The device is on `buses[i]`.
    Bus(usize),
    /// A request timed out, and QEMU said afterwards that the device exists.
    Settled(DeviceRef),
}

/// `raw` or `qcow2`: formats are never probed.
pub(crate) fn check_format(format: &str) -> Result<()> {
    if matches!(format, "raw" | "qcow2") {
        Ok(())
    } else {
        Err(Error::invalid_attribute(
            "format",
            format!("'{format}' is not raw or qcow2 (formats are never probed)"),
        ))
    }
}

/// The `blockdev-add` arguments of a medium: a format node `node` with its file node inline,
/// pass-through options typed by QEMU's schema.
pub(crate) async fn blockdev_options(
    session: &Session,
    node: &str,
    source: &str,
    format: &str,
    readonly: bool,
    protocol: Protocol,
    blk_pt: &Passthrough,
) -> Result<Map<String, Value>> {
    let mut opts = Map::new();
    opts.insert("driver".into(), format.into());
    opts.insert("node-name".into(), node.into());
    opts.insert("read-only".into(), readonly.into());
    opts.insert(
        "file".into(),
        json!({"driver": protocol.driver(), "filename": source, "node-name": format!("{node}-file"), "read-only": readonly}),
    );
    session
        .intro
        .union_members(
            &session.qmp,
            "blockdev",
            "blockdev-add",
            format,
            blk_pt,
            &[
                ("driver", "format"),
                ("node-name", "id"),
                ("read-only", "readonly"),
                ("file", "source"),
                ("file.driver", "source"),
                ("file.filename", "source"),
                ("file.node-name", "id"),
                ("file.read-only", "readonly"),
            ],
            &mut opts,
        )
        .await?;
    Ok(opts)
}

/// QEMU refused to open a medium.
pub(crate) fn blockdev_add_error(e: QmpError, source: &str, format: &str, plain: bool) -> Error {
    match e {
        QmpError::Qemu { class, desc } => Error::invalid_attribute(
            if plain { "source" } else { "blockdev.*" },
            format!("QEMU cannot open '{source}' as {format}: {class}: {desc}"),
        ),
        e => ctx(e, "blockdev-add"),
    }
}

/// What an attach has made so far, to answer truthfully when QEMU was too slow.
struct Made<'a> {
    id: &'a str,
    device_type: DeviceType,
    backend: Backend,
}

impl Made<'_> {
    /// Finish an attach whose backend exists and whose first `device_add` answered `first`:
    /// on a `GenericError` (a full SCSI bus, a root port another client just took) the next
    /// candidate bus is tried; on any other failure the backend is removed again.
    async fn place(
        &self,
        session: &Session,
        buses: &[Option<String>],
        device_args: &(dyn Fn(&Option<String>) -> Value + Sync),
        first: Result<Value, QmpError>,
        model: &str,
        passthrough: bool,
    ) -> Result<Placed> {
        let mut result = first;
        let mut i = 0;
        loop {
            match result {
                Ok(_) => return Ok(Placed::Bus(i)),
                Err(e @ QmpError::Timeout { .. }) => {
                    return self.settle(session, e).await.map(Placed::Settled)
                }
                Err(e) if e.class() == Some("GenericError") && i + 1 < buses.len() => {
                    debug!(bus = ?buses[i], error = %e, "bus refused the device: trying the next one");
                    i += 1;
                    result = session
                        .qmp
                        .execute_raw("device_add", device_args(&buses[i]))
                        .await;
                }
                Err(e) => {
                    *lock(&session.controllers) = None;
                    let err = device_add_error(
                        session,
                        &self.device_type,
                        self.id,
                        model,
                        passthrough,
                        e,
                    )
                    .await;
                    if !matches!(err, Error::DeviceExists { .. }) || self.backend.is_owned() {
                        self.undo_backend(session).await?;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Remove the backend of a device that was not created. A failure to do so is the caller's
    /// error, naming what remains: never an error that hides a half-made device.
    async fn undo_backend(&self, session: &Session) -> Result<()> {
        markers::remove_backend(&session.qmp, &self.backend)
            .await
            .map_err(|e| {
                Error::backend_with(
                    crate::NAME,
                    format!(
                        "the device {} was not created, and its backend {:?} could not be removed: remove it with blockdev-del/netdev_del",
                        self.id, self.backend
                    ),
                    e,
                )
            })
    }

    /// A request of this attach timed out (QEMU is slow, or stopped): QEMU still runs the
    /// requests it has, in order, so ask it (within one more request timeout) what it really
    /// has now. A device that was made is success; otherwise its backend is removed, and the
    /// answer is the timeout. Only when QEMU does not answer even then is the outcome unknown,
    /// and the error says so.
    async fn settle(&self, session: &Session, e: QmpError) -> Result<DeviceRef> {
        let id = self.id;
        debug!(%id, error = %e, "attach timed out: asking QEMU what it has");
        let QmpError::Timeout { command, after } = e else {
            return Err(ctx(e, "attach"));
        };
        let exists = session
            .qmp
            .execute_raw(
                "qom-get",
                json!({"path": format!("/machine/peripheral/{id}"), "property": "type"}),
            )
            .await;
        match exists {
            Ok(_) => {
                // The device was made after all (its backend with it).
                *lock(&session.controllers) = None;
                Ok(DeviceRef::new(id).expect("checked id"))
            }
            Err(e) if e.class() == Some("DeviceNotFound") => {
                self.undo_backend(session).await?;
                Err(Error::Timeout {
                    operation: format!(
                        "attach of {} {id} (QMP command {command}; QEMU answered later, and nothing was created)",
                        self.device_type
                    ),
                    after,
                })
            }
            Err(_) => Err(Error::Timeout {
                operation: format!(
                    "attach of {} {id} (QMP command {command}; QEMU has not answered since, so whether the device exists is unknown: list the devices once QEMU answers, and detach it if it is there)",
                    self.device_type
                ),
                after,
            }),
        }
    }
}

fn parse_mac(m: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = m.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    Some(out)
}

/// MAC addresses of the domain's NICs, lower case: one `qom-list` and one pipelined batch.
async fn macs(session: &Session) -> Result<HashSet<String>> {
    let devs = session
        .qmp
        .execute_raw("qom-list", json!({"path": "/machine/peripheral"}))
        .await
        .and_then(peripheral)
        .map_err(|e| ctx(e, "listing NICs (qom-list)"))?;
    let cmds = devs
        .iter()
        .filter(|(_, m)| NIC_MODELS.contains(&m.as_str()))
        .map(|(id, _)| {
            (
                "qom-get".to_owned(),
                json!({"path": format!("/machine/peripheral/{id}"), "property": "mac"}),
            )
        })
        .collect();
    Ok(session
        .qmp
        .batch(cmds)
        .await
        .into_iter()
        .filter_map(|r| r.ok()?.as_str().map(str::to_ascii_lowercase))
        .collect())
}

/// `netdev_add` then `device_add`; the netdev is deleted again when the device cannot be added.
pub(crate) async fn attach_nic(
    session: &Session,
    entry: &DomainEntry,
    attrs: &Attributes,
) -> Result<DeviceRef> {
    let (named, dev_pt, net_pt) = split_attrs(attrs, "netdev.");
    let kind = named.get("netdev").copied().unwrap_or("user");
    let ifname = named.get("ifname").copied();
    match (kind, ifname) {
        ("user", None) | ("tap", Some(_)) => {}
        ("user", Some(_)) => {
            return Err(Error::invalid_attribute(
                "ifname",
                "ifname is for netdev=tap only",
            ))
        }
        ("tap", None) => {
            return Err(Error::MissingAttribute {
                device_type: "network".into(),
                name: "ifname".into(),
                hint: "netdev=tap needs the TAP interface name (for example ifname=tap0)".into(),
            })
        }
        (k, _) => {
            return Err(Error::invalid_attribute(
                "netdev",
                format!("'{k}' is not user or tap"),
            ))
        }
    }
    let link_up = crate::update::parse_link(named.get("link").copied().unwrap_or("up"))?;
    let model = named.get("model").copied().unwrap_or("virtio-net-pci");
    if !matches!(model, "virtio-net-pci" | "e1000" | "usb-net") {
        return Err(Error::invalid_attribute(
            "model",
            format!("'{model}' is not virtio-net-pci, e1000 or usb-net"),
        ));
    }
    let id = match named.get("id") {
        Some(i) => {
            check_id(i)?;
            (*i).to_owned()
        }
        None => format!("net-{}", vdev_core::random_hex()),
    };
    let given_mac = match named.get("mac") {
        Some(m) => {
            let b = parse_mac(m).ok_or_else(|| {
                Error::invalid_attribute(
                    "mac",
                    format!("'{m}' is not a MAC address such as 52:54:00:12:34:56"),
                )
            })?;
            if b[0] & 1 == 1 {
                return Err(Error::invalid_attribute(
                    "mac",
                    format!("'{m}' is a multicast address; give a unicast one"),
                ));
            }
            Some(m.to_ascii_lowercase())
        }
        None => None,
    };
    let _op = entry.ops.lock().await;
    let props = session
        .intro
        .device_properties(
            &session.qmp,
            model,
            &dev_pt,
            &[
                ("netdev", "netdev"),
                ("mac", "mac"),
                ("id", "id"),
                ("bus", "model"),
                ("driver", "model"),
            ],
        )
        .await?;
    let mut nd = Map::new();
    let netdev_id = format!("vdev-{id}");
    nd.insert("type".into(), kind.into());
    nd.insert("id".into(), netdev_id.clone().into());
    if let Some(i) = ifname {
        nd.insert("ifname".into(), i.into());
        nd.insert("script".into(), "no".into());
        nd.insert("downscript".into(), "no".into());
    }
    session
        .intro
        .union_members(
            &session.qmp,
            "netdev",
            "netdev_add",
            kind,
            &net_pt,
            &[("type", "netdev"), ("id", "id"), ("ifname", "ifname")],
            &mut nd,
        )
        .await?;
    let used = macs(session).await?;
    let mac = match given_mac {
        Some(m) if used.contains(&m) => {
            return Err(Error::DeviceExists {
                domain: String::new(),
                device_type: "network".into(),
                reference: format!("mac {m}"),
            })
        }
        Some(m) => m,
        None => loop {
            let b: [u8; 3] = rand::thread_rng().gen();
            let m = format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]);
            if !used.contains(&m) {
                break m;
            }
        },
    };
    let buses = buses_for(session, model).await?;
    let device_args = |bus: &Option<String>| {
        let mut args = props.clone();
        args.insert("driver".into(), model.into());
        args.insert("id".into(), id.clone().into());
        args.insert("netdev".into(), netdev_id.clone().into());
        args.insert("mac".into(), mac.clone().into());
        if let Some(b) = bus {
            args.insert("bus".into(), b.clone().into());
        }
        Value::Object(args)
    };
    let made = Made {
        id: &id,
        device_type: DeviceType::NETWORK,
        backend: Backend::Netdev(netdev_id.clone()),
    };
    // Should the connection drop from here on, the driver asks QEMU afterwards what became of it.
    *lock(&entry.in_flight) = Some((id.clone(), made.backend.clone()));
    // The backend and the device on the first candidate bus in one round trip.
    let mut r = session
        .qmp
        .batch(vec![
            ("netdev_add".to_owned(), Value::Object(nd)),
            ("device_add".to_owned(), device_args(&buses[0])),
        ])
        .await
        .into_iter();
    let (added, first) = (r.next().expect("reply"), r.next().expect("reply"));
    match added {
        Ok(_) => {}
        Err(e @ QmpError::Timeout { .. }) => return made.settle(session, e).await,
        Err(e) => {
            return Err(match e {
                QmpError::Qemu { class, desc } => Error::invalid_attribute(
                    if net_pt.is_empty() {
                        "netdev"
                    } else {
                        "netdev.*"
                    },
                    format!("QEMU refused the {kind} network backend: {class}: {desc}"),
                ),
                e => ctx(e, "netdev_add"),
            })
        }
    }
    match made
        .place(
            session,
            &buses,
            &device_args,
            first,
            model,
            !dev_pt.is_empty(),
        )
        .await?
    {
        Placed::Bus(_) => {}
        Placed::Settled(r) => return Ok(r),
    }
    if !link_up {
        let r = session
            .qmp
            .batch(crate::update::link_commands(&id, false))
            .await;
        if let Some(Err(e)) = r.into_iter().next() {
            return Err(Error::backend_with(
                crate::NAME,
                format!("NIC {id} was created, but its link could not be taken down; detach it, or update it with link=down"),
                e,
            ));
        }
    }
    Ok(DeviceRef::new(id).expect("checked id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qdev_paths_map_to_ids() {
        assert_eq!(qdev_id("sd1"), Some("sd1"));
        assert_eq!(
            qdev_id("/machine/peripheral/vblk1/virtio-backend"),
            Some("vblk1")
        );
        assert_eq!(
            qdev_id("/machine/peripheral/us1/us1.0/legacy[0]"),
            Some("us1")
        );
        assert_eq!(
            qdev_id("/machine/peripheral-anon/device[0]/virtio-backend"),
            None
        );
    }

    #[test]
    fn ids_follow_qemu_rules() {
        assert!(check_id("disk-1.a_b").is_ok());
        assert!(check_id("1disk").is_err());
        assert!(check_id("a:b").is_err());
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:01"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 1])
        );
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
    }
}
