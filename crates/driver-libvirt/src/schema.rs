//! The attributes of each device type. Where a value comes from a set the hypervisor decides
//! (disk buses, disk devices), the set is read from libvirt's domain capabilities
//! (`virConnectGetDomainCapabilities`), not typed here.

use vdev_core::{AttributeSpec, DeviceType, DeviceTypeSchema};

use crate::xml::PASSTHROUGH;

/// What libvirt's domain capabilities say of the devices vdev manages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DomainCaps {
    /// `<disk><enum name='bus'>`.
    pub disk_buses: Vec<String>,
    /// `<disk><enum name='diskDevice'>`.
    pub disk_devices: Vec<String>,
    /// `<disk><enum name='model'>`.
    pub disk_models: Vec<String>,
    /// `<interface><enum name='backendType'>` where libvirt reports it (9.4 and later).
    pub nic_backends: Vec<String>,
}

/// Read the domain capabilities XML.
pub(crate) fn parse_caps(xml: &str) -> DomainCaps {
    let Ok(doc) = roxmltree::Document::parse(xml) else {
        return DomainCaps::default();
    };
    let values = |dev: &str, name: &str| -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name(dev))
            .filter(|n| n.parent().is_some_and(|p| p.has_tag_name("devices")))
            .flat_map(|n| n.children())
            .filter(|e| e.has_tag_name("enum") && e.attribute("name") == Some(name))
            .flat_map(|e| e.children())
            .filter(|v| v.has_tag_name("value"))
            .filter_map(|v| v.text().map(str::to_owned))
            .collect()
    };
    DomainCaps {
        disk_buses: values("disk", "bus"),
        disk_devices: values("disk", "diskDevice"),
        disk_models: values("disk", "model"),
        nic_backends: values("interface", "backendType"),
    }
}

fn one_of(values: &[String], fallback: &str) -> String {
    if values.is_empty() {
        fallback.to_owned()
    } else {
        format!(
            "one of {} (from libvirt's domain capabilities)",
            values.join(", ")
        )
    }
}

/// The schemas, with the sets `caps` gives.
pub(crate) fn schemas(caps: &DomainCaps) -> Vec<DeviceTypeSchema> {
    let buses = one_of(
        &caps.disk_buses,
        "as libvirt's hypervisor driver accepts them",
    );
    let devices: Vec<String> = caps
        .disk_devices
        .iter()
        .filter(|d| matches!(d.as_str(), "disk" | "cdrom"))
        .cloned()
        .collect();
    let media = one_of(&devices, "disk or cdrom");
    vec![
        DeviceTypeSchema {
            device_type: DeviceType::DISK,
            description: "a disk or CD-ROM drive: <disk> in the domain XML; its reference is its libvirt alias (ua-disk-... for disks vdev made)".into(),
            attributes: vec![
                AttributeSpec::optional("source", "path of the image file or block device on the libvirt host; required, except for an empty CD-ROM drive; on a CD-ROM drive, update changes the medium (empty ejects)", "/var/lib/libvirt/images/data.qcow2").updatable(),
                AttributeSpec::optional("format", "image format, raw (default) or qcow2 (never probed)", "qcow2").updatable(),
                AttributeSpec::optional("type", "file (default) or block: what the source is", "file"),
                AttributeSpec::optional("media", &format!("disk (default) or cdrom: {media}"), "cdrom"),
                AttributeSpec::optional("force", "update of a CD-ROM drive only: true changes the medium even when the guest has locked the tray", "true").updatable().not_listed(),
                AttributeSpec::optional("bus", &format!("the bus, scsi by default (a free unit on an existing SCSI controller): {buses}"), "scsi"),
                AttributeSpec::optional("target", "the target name libvirt asks for (a hint: the guest names disks itself); a free one when absent", "sdb"),
                AttributeSpec::optional("readonly", "true or false (default false)", "true").boolean(),
                AttributeSpec::optional("serial", "serial number the guest sees", "DATA01"),
            ],
            passthrough_prefixes: vec![PASSTHROUGH.into()],
            // A disk is what it reads; the target is libvirt's hint, chosen by vdev when absent.
            identity: vec!["source".into(), "target".into()],
            reference_attribute: None,
        },
        DeviceTypeSchema {
            device_type: DeviceType::NETWORK,
            description: "a network interface: <interface> in the domain XML; its reference is its libvirt alias (ua-net-... for NICs vdev made)".into(),
            attributes: vec![
                AttributeSpec::optional("netdev", &format!("the backend, libvirt's interface type: user (default without a source), network (default with one), bridge, direct or ethernet{}", if caps.nic_backends.is_empty() { String::new() } else { format!("; backends: {}", caps.nic_backends.join(", ")) }), "network"),
                AttributeSpec::optional("source", "the libvirt network (netdev=network), host bridge (bridge) or host interface (direct)", "default"),
                AttributeSpec::optional("model", "the NIC model the guest sees, as libvirt names it (virtio, e1000e, rtl8139, ...; virtio-net-pci is read as virtio); virtio by default on QEMU, libvirt's default elsewhere", "virtio").spelling("virtio-net-pci", "virtio"),
                AttributeSpec::optional("mac", "unicast MAC address, unique in the domain (libvirt makes one in 52:54:00:xx:xx:xx when absent)", "52:54:00:12:34:56").case_insensitive(),
                AttributeSpec::optional("ifname", "the host-side TAP device name (netdev=ethernet, bridge, network)", "vnet7"),
                AttributeSpec::optional("link", "up (default) or down: whether the guest sees a cable; changeable by update", "down").updatable(),
            ],
            passthrough_prefixes: vec![PASSTHROUGH.into()],
            identity: vec!["mac".into()],
            reference_attribute: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sets_come_from_the_capabilities() {
        let caps = parse_caps(
            "<domainCapabilities><devices><disk supported='yes'>\
             <enum name='diskDevice'><value>disk</value><value>cdrom</value><value>lun</value></enum>\
             <enum name='bus'><value>scsi</value><value>sata</value></enum></disk>\
             <video><enum name='bus'><value>nope</value></enum></video></devices></domainCapabilities>",
        );
        assert_eq!(caps.disk_buses, vec!["scsi", "sata"]);
        assert_eq!(caps.disk_devices, vec!["disk", "cdrom", "lun"]);
        let s = schemas(&caps);
        let bus = s[0].attribute("bus").unwrap();
        assert!(
            bus.description.contains("one of scsi, sata"),
            "{}",
            bus.description
        );
        assert!(!bus.description.contains("nope"));
    }

    /// The core checks calls against the schemas of no capabilities until the full ones are
    /// asked (`device_types_for_checks`): they must differ in descriptions and examples only.
    #[test]
    fn the_capabilities_change_only_descriptions() {
        fn rules(mut s: Vec<DeviceTypeSchema>) -> Vec<DeviceTypeSchema> {
            for t in &mut s {
                t.description.clear();
                for a in &mut t.attributes {
                    a.description.clear();
                    a.example.clear();
                }
            }
            s
        }
        let caps = DomainCaps {
            disk_buses: vec!["scsi".into(), "sata".into(), "virtio".into()],
            disk_devices: vec!["disk".into(), "cdrom".into()],
            disk_models: vec!["virtio".into()],
            nic_backends: vec!["default".into()],
        };
        let (full, brief) = (schemas(&caps), schemas(&DomainCaps::default()));
        assert_ne!(full, brief, "the capabilities show in the descriptions");
        assert_eq!(rules(full), rules(brief));
    }
}
