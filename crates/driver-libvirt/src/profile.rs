//! The driver's vocabulary as data ([`vdev_core::profile`]): its schemas plus the facts of its
//! checks, for the mock driver's `like=libvirt` (design 0017). Built from [`crate::schema`]
//! with the sets of a domain capabilities document, and from the constants attach and update
//! check with; the drift test (`tests/profile.rs`) compares the profile of the recorded
//! capabilities ([`RECORDED_DOMAIN_CAPABILITIES`]) with the mock's copy, and those with what
//! the test libvirtd reports.

use std::collections::BTreeMap;

use vdev_core::profile::{
    Constraint, Derived, DriverProfile, MediumRule, RefFormat, TypeProfile, ValueForm,
    PROFILE_VERSION,
};

use crate::attach::{
    DEFAULT_BUS, DEFAULT_FORMAT, DEFAULT_NIC_MODEL, DISK_ALIAS_PREFIX, DISK_KINDS, LINKS, MEDIA,
    NETDEVS, NETDEVS_WITHOUT_SOURCE, NIC_ALIAS_PREFIX,
};
use crate::schema;

/// The domain capabilities the mock's `like=libvirt` profile is made from: what libvirt 9.0
/// with QEMU 7.2 reports here for a q35 machine under TCG (`virsh domcapabilities --machine q35
/// --virttype qemu`).
pub const RECORDED_DOMAIN_CAPABILITIES: &str =
    include_str!("../tests/data/domcaps-libvirt-9.0-qemu-7.2-q35-tcg.xml");

fn map<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The driver's profile on a host whose libvirt reports `domain_capabilities` (the XML of
/// `virConnectGetDomainCapabilities`): its disk buses and devices are the sets allowed. What
/// `mock:///default?like=libvirt` loads is `profile(RECORDED_DOMAIN_CAPABILITIES)`.
pub fn profile(domain_capabilities: &str) -> DriverProfile {
    let caps = schema::parse_caps(domain_capabilities);
    let mut schemas = schema::schemas(&caps).into_iter();
    let (disk, nic) = (
        schemas.next().expect("disk"),
        schemas.next().expect("network"),
    );
    let media: Vec<String> = if caps.disk_devices.is_empty() {
        list(MEDIA)
    } else {
        caps.disk_devices
            .iter()
            .filter(|d| MEDIA.contains(&d.as_str()))
            .cloned()
            .collect()
    };
    let mut values = BTreeMap::from([
        ("media".to_owned(), media),
        ("type".to_owned(), list(DISK_KINDS)),
    ]);
    if !caps.disk_buses.is_empty() {
        values.insert("bus".into(), caps.disk_buses.clone());
    }
    // libvirt makes every CD-ROM drive read-only, whatever was asked.
    let readonly = Derived {
        from: list(&["media", "readonly"]),
        map: map([
            ("disk+false", "false"),
            ("disk+true", "true"),
            ("cdrom+false", "true"),
            ("cdrom+true", "true"),
        ]),
    };
    DriverProfile {
        version: PROFILE_VERSION,
        driver: crate::NAME.into(),
        domains: vec!["demo".into()],
        device_types: vec![
            TypeProfile {
                schema: disk,
                reference: RefFormat::Generated {
                    prefix: DISK_ALIAS_PREFIX.into(),
                },
                values,
                defaults: map([
                    ("bus", DEFAULT_BUS),
                    ("format", DEFAULT_FORMAT),
                    ("type", DISK_KINDS[0]),
                    ("media", MEDIA[0]),
                    ("readonly", "false"),
                ]),
                defaults_with: BTreeMap::new(),
                forms: BTreeMap::from([("readonly".into(), ValueForm::Bool)]),
                required_unless: BTreeMap::from([(
                    "source".into(),
                    ("media".into(), "cdrom".into()),
                )]),
                constraints: Vec::new(),
                update_only: list(&["force"]),
                host_path: Some("source".into()),
                unique: list(&["target"]),
                generated_mac: BTreeMap::new(),
                derived: BTreeMap::from([("readonly".into(), readonly)]),
                initial_state: None,
                medium: Some(MediumRule {
                    when: ("media".into(), "cdrom".into()),
                    medium: "source".into(),
                    force: "force".into(),
                }),
            },
            TypeProfile {
                schema: nic,
                reference: RefFormat::Generated {
                    prefix: NIC_ALIAS_PREFIX.into(),
                },
                values: BTreeMap::from([
                    ("netdev".into(), list(NETDEVS)),
                    ("link".into(), list(LINKS)),
                ]),
                defaults: map([
                    ("netdev", NETDEVS[0]),
                    ("model", DEFAULT_NIC_MODEL),
                    ("link", LINKS[0]),
                ]),
                defaults_with: BTreeMap::from([(
                    "netdev".into(),
                    ("source".into(), "network".into()),
                )]),
                forms: BTreeMap::from([("mac".into(), ValueForm::Mac)]),
                required_unless: BTreeMap::new(),
                constraints: NETDEVS_WITHOUT_SOURCE
                    .iter()
                    .map(|n| Constraint {
                        when: map([("netdev", n)]),
                        attribute: "source".into(),
                        values: Vec::new(),
                    })
                    .collect(),
                update_only: Vec::new(),
                host_path: None,
                unique: list(&["mac"]),
                generated_mac: map([("mac", "52:54:00")]),
                derived: BTreeMap::new(),
                initial_state: None,
                medium: None,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded capabilities give the sets the driver checks against.
    #[test]
    fn the_recorded_capabilities_give_the_sets() {
        let p = profile(RECORDED_DOMAIN_CAPABILITIES);
        let disk = &p.device_types[0];
        assert_eq!(
            disk.values["bus"],
            list(&["fdc", "scsi", "virtio", "usb", "sata"])
        );
        assert_eq!(disk.values["media"], list(MEDIA));
        assert!(disk.values["bus"].contains(&DEFAULT_BUS.to_owned()));
        let caps = schema::parse_caps(RECORDED_DOMAIN_CAPABILITIES);
        let schemas = schema::schemas(&caps);
        for b in &disk.values["bus"] {
            let a = vdev_core::Attributes::from_pairs([
                ("source", "/x".to_owned()),
                ("bus", b.clone()),
            ])
            .unwrap();
            assert!(crate::attach::check_disk(&schemas, &a).is_ok(), "{b}");
        }
        let a = vdev_core::Attributes::from_pairs([("source", "/x"), ("bus", "floppy")]).unwrap();
        assert!(crate::attach::check_disk(&schemas, &a).is_err());
    }
}
