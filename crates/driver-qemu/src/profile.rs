//! The driver's vocabulary as data ([`vdev_core::profile`]): its schemas plus the facts of its
//! checks, for the mock driver's `like=qemu` (design 0017). Built from [`crate::schema`] and the
//! constants the checks use; the drift test (`tests/profile.rs`) compares it with the mock's copy.

use std::collections::BTreeMap;

use vdev_core::profile::{
    Constraint, Derived, DriverProfile, MediumRule, RefFormat, TypeProfile, ValueForm,
    PROFILE_VERSION,
};

use crate::schema::{self, DISK_BUSES, FORMATS, NETDEVS, NIC_ATTACH_MODELS};

fn map<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The driver's profile: what `mock:///default?like=qemu` loads.
pub fn profile() -> DriverProfile {
    let mut schemas = schema::schemas().into_iter();
    let (disk, nic) = (
        schemas.next().expect("disk"),
        schemas.next().expect("network"),
    );
    let mut models = BTreeMap::new();
    for (bus, hd, cd) in DISK_BUSES {
        models.insert(format!("{bus}+disk"), (*hd).to_owned());
        // `media` has no default (a disk lists none): the bus alone is a disk.
        models.insert((*bus).to_owned(), (*hd).to_owned());
        if let Some(cd) = cd {
            models.insert(format!("{bus}+cdrom"), (*cd).to_owned());
        }
    }
    let cd_buses = DISK_BUSES
        .iter()
        .filter(|(_, _, cd)| cd.is_some())
        .map(|(b, _, _)| (*b).to_owned())
        .collect();
    DriverProfile {
        version: PROFILE_VERSION,
        driver: crate::NAME.into(),
        domains: vec!["demo".into()],
        device_types: vec![
            TypeProfile {
                schema: disk,
                reference: RefFormat::Attribute {
                    attribute: "id".into(),
                    generated_prefix: "disk".into(),
                },
                values: BTreeMap::from([
                    ("media".into(), list(&["disk", "cdrom"])),
                    (
                        "bus".into(),
                        DISK_BUSES.iter().map(|(b, _, _)| (*b).to_owned()).collect(),
                    ),
                    ("format".into(), list(FORMATS)),
                ]),
                defaults: map([
                    ("bus", "scsi"),
                    ("readonly", "false"),
                    ("format", FORMATS[0]),
                ]),
                defaults_with: BTreeMap::new(),
                forms: BTreeMap::from([
                    ("id".into(), ValueForm::Id),
                    ("readonly".into(), ValueForm::Bool),
                ]),
                required_unless: BTreeMap::from([
                    ("source".into(), ("media".into(), "cdrom".into())),
                    ("format".into(), ("media".into(), "cdrom".into())),
                ]),
                constraints: vec![
                    Constraint {
                        when: map([("media", "cdrom")]),
                        attribute: "bus".into(),
                        values: cd_buses,
                    },
                    Constraint {
                        when: map([("media", "cdrom")]),
                        attribute: "readonly".into(),
                        values: list(&["true"]),
                    },
                    Constraint {
                        when: map([("media", "cdrom")]),
                        attribute: "format".into(),
                        values: list(&["raw", "qcow2"]),
                    },
                ],
                update_only: list(&["force"]),
                host_path: Some("source".into()),
                unique: Vec::new(),
                generated_mac: BTreeMap::new(),
                derived: BTreeMap::from([(
                    "model".into(),
                    Derived {
                        from: list(&["bus", "media"]),
                        map: models,
                    },
                )]),
                initial_state: None,
                medium: Some(MediumRule {
                    when: ("media".into(), "cdrom".into()),
                    medium: "source".into(),
                    force: "force".into(),
                }),
            },
            TypeProfile {
                schema: nic,
                reference: RefFormat::Attribute {
                    attribute: "id".into(),
                    generated_prefix: "net".into(),
                },
                values: BTreeMap::from([
                    ("netdev".into(), list(NETDEVS)),
                    ("model".into(), list(NIC_ATTACH_MODELS)),
                    ("link".into(), list(&["up", "down"])),
                ]),
                defaults: map([
                    ("netdev", NETDEVS[0]),
                    ("model", NIC_ATTACH_MODELS[0]),
                    ("link", "up"),
                ]),
                defaults_with: BTreeMap::new(),
                forms: BTreeMap::from([
                    ("id".into(), ValueForm::Id),
                    ("mac".into(), ValueForm::Mac),
                ]),
                required_unless: BTreeMap::from([(
                    "ifname".into(),
                    ("netdev".into(), "user".into()),
                )]),
                constraints: vec![Constraint {
                    when: map([("netdev", "user")]),
                    attribute: "ifname".into(),
                    values: Vec::new(),
                }],
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

    /// The facts agree with the driver's own checks where those are plain functions.
    #[test]
    fn facts_agree_with_the_checks() {
        let p = profile();
        let disk = &p.device_types[0];
        for f in &disk.values["format"] {
            assert!(crate::image::check_format(f).is_ok(), "{f}");
        }
        assert!(crate::image::check_format("vmdk").is_err());
        let nic = &p.device_types[1];
        for l in &nic.values["link"] {
            assert!(schema::parse_link(l).is_ok(), "{l}");
        }
        assert!(schema::check_id("disk-1").is_ok() && schema::check_id("1x").is_err());
        // Every listed model is one the listing reads back as the same type and bus.
        for (combo, model) in &disk.derived["model"].map {
            let bus = combo.split('+').next().unwrap();
            assert_eq!(schema::disk_bus(model), Some(bus), "{model}");
        }
        for m in NIC_ATTACH_MODELS {
            assert!(schema::NIC_MODELS.contains(m), "{m}");
        }
    }
}
