//! The device types vdev offers and how their attributes read: the models listed as disks and
//! NICs, ids, booleans, MACs, links, and the split of pass-through attributes by prefix.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use vdev_core::{
    AttributeSpec, Attributes, DeviceRef, DeviceType, DeviceTypeSchema, Error, Result,
};

use crate::error::QmpError;
use crate::qmp::decode;

/// The buses `attach` offers for a disk: (bus, model of a disk, model of a CD-ROM drive).
pub(crate) const DISK_BUSES: &[(&str, &str, Option<&str>)] = &[
    ("scsi", "scsi-hd", Some("scsi-cd")),
    ("virtio", "virtio-blk-pci", None),
    ("usb", "usb-storage", None),
];

/// The image formats `attach` and `update` take (never probed).
pub(crate) const FORMATS: &[&str] = &["raw", "qcow2"];

/// The NIC backends `attach` makes.
pub(crate) const NETDEVS: &[&str] = &["user", "tap"];

/// The NIC models `attach` makes; the first is the default.
pub(crate) const NIC_ATTACH_MODELS: &[&str] = &["virtio-net-pci", "e1000", "usb-net"];

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
pub(crate) const NIC_MODELS: &[&str] = &[
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
                AttributeSpec::optional("force", "update of a CD-ROM drive only: true opens a tray the guest has locked (the guest loses its medium at once)", "true").updatable().not_listed(),
                AttributeSpec::optional("bus", "scsi (default; a free virtio-scsi target), virtio (virtio-blk-pci on a free PCIe root port) or usb (usb-storage on an xHCI port)", "scsi"),
                AttributeSpec::optional("readonly", "true or false (default false)", "true").boolean(),
                AttributeSpec::optional("serial", "serial number the guest sees", "DATA01").not_listed(),
                AttributeSpec::optional("id", "the device id, used as its reference (generated when absent): a letter, then letters, digits, '-', '.', '_'", "data1"),
            ],
            passthrough_prefixes: vec!["device.".into(), "blockdev.".into()],
            identity: vec!["id".into(), "source".into()],
            reference_attribute: Some("id".into()),
        },
        DeviceTypeSchema {
            device_type: DeviceType::NETWORK,
            description: "a NIC: a netdev backend and a network device".into(),
            attributes: vec![
                AttributeSpec::optional("netdev", "backend: user (default, QEMU's user-mode network) or tap", "user").not_listed(),
                AttributeSpec::optional("ifname", "TAP interface name (netdev=tap only; created when missing, needs root)", "tap0").not_listed(),
                AttributeSpec::optional("model", "virtio-net-pci (default), e1000 or usb-net", "virtio-net-pci"),
                AttributeSpec::optional("mac", "unicast MAC address, unique in the domain (generated in 52:54:00:xx:xx:xx when absent)", "52:54:00:12:34:56").case_insensitive(),
                AttributeSpec::optional("id", "the device id, used as its reference (generated when absent)", "net1"),
                AttributeSpec::optional("link", "up (default) or down: whether the guest sees a cable (QMP set_link); changeable by update", "down").updatable(),
            ],
            passthrough_prefixes: vec!["device.".into(), "netdev.".into()],
            identity: vec!["id".into(), "mac".into()],
            reference_attribute: Some("id".into()),
        },
    ]
}

/// QEMU's rule for ids (`id_wellformed`): a letter, then letters, digits, `-`, `.`, `_`.
pub(crate) fn check_id(id: &str) -> Result<()> {
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

pub(crate) fn parse_bool_attr(name: &str, v: &str) -> Result<bool> {
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

pub(crate) fn model_of(qom_type: &str) -> &str {
    qom_type
        .strip_prefix("child<")
        .and_then(|t| t.strip_suffix('>'))
        .unwrap_or(qom_type)
}

pub(crate) fn disk_bus(model: &str) -> Option<&'static str> {
    DISK_MODELS
        .iter()
        .find(|(m, _)| *m == model)
        .map(|(_, b)| *b)
}

/// The device id a `query-block` entry's `qdev` belongs to (`sd1`,
/// `/machine/peripheral/vblk1/virtio-backend`, `/machine/peripheral/us1/us1.0/legacy[0]`).
/// The type of a device whose id vdev made (`disk-XXXXXXXX`, `net-XXXXXXXX`: the prefix `attach`
/// gives, then 8 hex digits), or `None` for any other id. Lets a process that never listed the
/// device name its type when QEMU reports it deleted and the pending-removal marker (which holds
/// the type) is already gone.
pub(crate) fn type_of_generated_id(id: &str) -> Option<DeviceType> {
    let (prefix, hex) = id.split_once('-')?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match prefix {
        "disk" => Some(DeviceType::DISK),
        "net" => Some(DeviceType::NETWORK),
        _ => None,
    }
}

pub(crate) fn qdev_id(qdev: &str) -> Option<&str> {
    match qdev.strip_prefix("/machine/peripheral/") {
        Some(rest) => rest.split('/').next(),
        None if qdev.starts_with('/') => None,
        None => Some(qdev),
    }
}

pub(crate) fn peripheral(v: Value) -> Result<Vec<(String, String)>, QmpError> {
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

/// Whether a model is a CD-ROM drive (its medium can change).
pub(crate) fn is_cdrom(model: &str) -> bool {
    matches!(model, "scsi-cd" | "ide-cd")
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

/// `up` or `down`.
pub(crate) fn parse_link(v: &str) -> Result<bool> {
    match v {
        "up" => Ok(true),
        "down" => Ok(false),
        _ => Err(Error::invalid_attribute(
            "link",
            format!("'{v}' is not up or down"),
        )),
    }
}

/// Pass-through attributes without their prefix: (name, value).
pub(crate) type Passthrough = Vec<(String, String)>;

/// Split pass-through attributes by prefix: (named, device.*, backend.*).
pub(crate) fn split_attrs<'a>(
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
        assert_eq!(
            type_of_generated_id("disk-0a1b2c3d"),
            Some(DeviceType::DISK)
        );
        assert_eq!(
            type_of_generated_id("net-0a1b2c3d"),
            Some(DeviceType::NETWORK)
        );
        for other in ["disk-1", "mydisk-0a1b2c3d", "net-0a1b2c3dx", "scsi0"] {
            assert_eq!(type_of_generated_id(other), None, "{other}");
        }
        assert!(check_id("1disk").is_err());
        assert!(check_id("a:b").is_err());
    }
}
