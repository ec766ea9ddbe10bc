//! Desired-state documents: the devices one or more domains should have, in JSON or YAML, for
//! [`crate::Connection::plan`] and [`crate::Connection::apply`].
//!
//! ```yaml
//! domains:
//!   vm1:
//!     exclusive: [disk]          # disks the document does not name are removed
//!     devices:
//!       - type: disk
//!         attrs: {source: /img/data.qcow2, format: qcow2, bus: scsi}
//!       - type: disk
//!         state: absent          # removed if present
//!         attrs: {source: /img/old.qcow2}
//!       - type: network
//!         attrs: {mac: "52:54:00:12:34:56", link: up}
//! ```
//!
//! JSON has the same schema (`{"domains": {"vm1": {"devices": [...]}}}`). Unknown keys are
//! errors naming the key and its place; attribute values may be written as strings, numbers or
//! booleans (they are passed on as the strings they spell). How entries are matched with the
//! devices a domain has is described on [`crate::DeviceTypeSchema::identity`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::attributes::Attributes;
use crate::error::{Error, Result};
use crate::types::{DeviceRef, DeviceType};

/// A desired state: for each domain (by name or id, as `vdev devices` takes it), its devices.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// The domains, by name or id; sorted by that key.
    pub domains: BTreeMap<String, DomainDocument>,
}

/// The desired devices of one domain.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainDocument {
    /// Device types whose devices not named by a `present` entry are removed. Empty (the
    /// default): nothing the document does not name is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusive: Vec<DeviceType>,
    /// The devices, in the order they are attached.
    #[serde(default)]
    pub devices: Vec<DesiredDevice>,
}

/// Whether a desired device should be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DesiredState {
    /// Attached, with these attributes (the default).
    #[default]
    Present,
    /// Not attached: removed if it is.
    Absent,
}

/// One device of a [`DomainDocument`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredDevice {
    /// Its type (`disk`, `network`, ...).
    #[serde(rename = "type")]
    pub device_type: DeviceType,
    /// Present (default) or absent.
    #[serde(default, skip_serializing_if = "is_present")]
    pub state: DesiredState,
    /// Its reference, where the document names it: it then identifies the device, and a new
    /// device gets it where the driver lets a caller choose references
    /// ([`crate::DeviceTypeSchema::reference_attribute`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<DeviceRef>,
    /// Its attributes, as `vdev attach` takes them.
    #[serde(
        default,
        deserialize_with = "scalar_attributes",
        skip_serializing_if = "Attributes::is_empty"
    )]
    pub attrs: Attributes,
}

fn is_present(s: &DesiredState) -> bool {
    *s == DesiredState::Present
}

impl Document {
    /// Read a document in JSON or YAML (JSON when the first character that is not white space
    /// is `{`). Errors are [`Error::InvalidDocument`] naming the place (the path of keys and,
    /// where the parser knows it, the line and column) and what is wrong.
    pub fn parse(text: &str) -> Result<Document> {
        if text.trim_start().starts_with('{') {
            Document::from_json(text)
        } else {
            Document::from_yaml(text)
        }
    }

    /// Read a JSON document (see [`Document::parse`]).
    pub fn from_json(text: &str) -> Result<Document> {
        let mut de = serde_json::Deserializer::from_str(text);
        let doc: Document = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let (path, inner) = (e.path().to_string(), e.into_inner());
            let place = if inner.line() > 0 {
                format!("line {} column {}", inner.line(), inner.column())
            } else {
                String::new()
            };
            invalid(&path, &place, &json_reason(&inner))
        })?;
        de.end().map_err(|e| {
            invalid(
                ".",
                &format!("line {} column {}", e.line(), e.column()),
                &json_reason(&e),
            )
        })?;
        Ok(doc)
    }

    /// Read a YAML document (see [`Document::parse`]).
    pub fn from_yaml(text: &str) -> Result<Document> {
        if text.trim().is_empty() {
            return Err(invalid(
                ".",
                "",
                "the document is empty; it needs a `domains` map",
            ));
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let (path, inner) = (e.path().to_string(), e.into_inner());
            let place = inner
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_default();
            let mut reason = inner.to_string();
            // The location is given once, in `at`, and the path too.
            if let Some(i) = reason.find(" at line ") {
                reason.truncate(i);
            }
            if let Some((head, rest)) = reason.split_once(": ") {
                if !head.contains(' ') {
                    reason = rest.to_owned();
                }
            }
            invalid(&path, &place, &reason)
        })
    }

    /// The document as JSON (pretty-printed), as `vdev export --json` writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a document serialises")
    }

    /// The document as YAML, as `vdev export` writes it.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).expect("a document serialises")
    }
}

/// serde_json's message without its " at line L column C" tail (the place is given once).
fn json_reason(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.rfind(" at line ") {
        s.truncate(i);
    }
    s
}

/// An [`Error::InvalidDocument`] at `path` (`.` for the whole document) and `place` (line and
/// column, may be empty).
pub(crate) fn invalid(path: &str, place: &str, reason: &str) -> Error {
    let path = if path.is_empty() || path == "." {
        "the document".to_owned()
    } else {
        path.to_owned()
    };
    let at = if place.is_empty() {
        path
    } else {
        format!("{path} ({place})")
    };
    Error::InvalidDocument {
        at,
        reason: reason.to_owned(),
    }
}

/// Attributes whose values may be written as strings, numbers or booleans.
fn scalar_attributes<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Attributes, D::Error> {
    struct Scalars;
    impl<'de> Visitor<'de> for Scalars {
        type Value = Attributes;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of attribute names to values (strings, numbers or booleans)")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Attributes, A::Error> {
            let mut out = Attributes::new();
            while let Some(name) = map.next_key::<String>()? {
                let Scalar(value) = map.next_value()?;
                if out.contains(&name) {
                    return Err(de::Error::custom(format!(
                        "attribute '{name}' is given twice"
                    )));
                }
                out.insert(name, value).map_err(de::Error::custom)?;
            }
            Ok(out)
        }
    }
    d.deserialize_map(Scalars)
}

/// A string, number or boolean, as the string it spells.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"domains": {"vm1": {"exclusive": ["disk"],
      "devices": [
        {"type": "disk", "attrs": {"source": "/img/data.qcow2", "format": "qcow2", "bus": "scsi"}},
        {"type": "disk", "attrs": {"media": "cdrom", "source": "/iso/tools.iso"}},
        {"type": "disk", "state": "absent", "attrs": {"source": "/img/old.qcow2"}},
        {"type": "network", "attrs": {"mac": "52:54:00:12:34:56", "link": "up"}}]}}}"#;

    #[test]
    fn the_issue_example_reads_and_yaml_says_the_same() {
        let d = Document::parse(EXAMPLE).unwrap();
        let vm = &d.domains["vm1"];
        assert_eq!(vm.exclusive, vec![DeviceType::DISK]);
        assert_eq!(vm.devices.len(), 4);
        assert_eq!(vm.devices[2].state, DesiredState::Absent);
        assert_eq!(vm.devices[3].attrs.get("mac"), Some("52:54:00:12:34:56"));
        let yaml = d.to_yaml();
        assert_eq!(Document::parse(&yaml).unwrap(), d);
        assert_eq!(Document::parse(&d.to_json()).unwrap(), d);
    }

    #[test]
    fn numbers_and_booleans_are_the_strings_they_spell() {
        let d = Document::parse(
            "domains:\n  vm1:\n    devices:\n      - type: disk\n        attrs: {readonly: true, port: 5, dev: xvdb}\n",
        )
        .unwrap();
        let a = &d.domains["vm1"].devices[0].attrs;
        assert_eq!(a.get("readonly"), Some("true"));
        assert_eq!(a.get("port"), Some("5"));
    }

    fn err(text: &str) -> (String, String) {
        match Document::parse(text).unwrap_err() {
            Error::InvalidDocument { at, reason } => (at, reason),
            e => panic!("not an InvalidDocument: {e:?}"),
        }
    }

    #[test]
    fn an_unknown_key_is_named_with_its_place() {
        let (at, reason) =
            err("domains:\n  vm1:\n    devices:\n      - type: disk\n        atrs: {dev: xvdb}\n");
        assert!(at.starts_with("domains.vm1.devices[0]"), "{at}");
        assert!(at.contains("line 5"), "{at}");
        assert!(reason.contains("atrs"), "{reason}");
        let (at, reason) = err(r#"{"domains": {"vm1": {"devices": [], "exclusiv": ["disk"]}}}"#);
        assert!(
            at.starts_with("domains.vm1") && at.contains("line 1"),
            "{at}"
        );
        assert!(reason.contains("exclusiv"), "{reason}");
    }

    #[test]
    fn bad_values_name_their_place() {
        let (at, reason) = err("domains:\n  vm1:\n    devices:\n      - type: Disk!\n");
        assert!(at.starts_with("domains.vm1.devices[0].type"), "{at}");
        assert!(reason.contains("not a device type name"), "{reason}");
        let (at, reason) =
            err("domains:\n  vm1:\n    devices:\n      - type: disk\n        state: gone\n");
        assert!(at.starts_with("domains.vm1.devices[0].state"), "{at}");
        assert!(
            reason.contains("present") && reason.contains("absent"),
            "{reason}"
        );
        let (at, reason) =
            err("domains:\n  vm1:\n    devices:\n      - type: disk\n        attrs: {'a/b': x}\n");
        assert!(at.starts_with("domains.vm1.devices[0].attrs"), "{at}");
        assert!(reason.contains("'/'"), "{reason}");
        let (_, reason) = err("{\"domains\": {\"vm1\": {\"devices\": [}}}");
        assert!(!reason.is_empty());
        let (at, reason) = err("  ");
        assert_eq!(at, "the document");
        assert!(reason.contains("empty"), "{reason}");
        let (_, reason) = err("{\"domains\": {}} trailing");
        assert!(reason.contains("trailing"), "{reason}");
    }
}
