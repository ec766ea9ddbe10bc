//! Domains, device types, references, devices, states and events.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::attributes::Attributes;
use crate::domain::Domain;
use crate::error::{Error, Result};

/// Longest device type name accepted.
pub const MAX_DEVICE_TYPE_LEN: usize = 32;
/// Longest device reference accepted.
pub const MAX_DEVICE_REF_LEN: usize = 128;

/// The name of a kind of device: [`DeviceType::DISK`], [`DeviceType::NETWORK`], or any other
/// lower-case name a driver supports (`[a-z0-9_-]`, at most [`MAX_DEVICE_TYPE_LEN`] bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceType(Cow<'static, str>);

impl DeviceType {
    /// Block devices (Xen vbd, QEMU block devices).
    pub const DISK: DeviceType = DeviceType(Cow::Borrowed("disk"));
    /// Network interfaces (Xen vif, QEMU NICs).
    pub const NETWORK: DeviceType = DeviceType(Cow::Borrowed("network"));

    /// Validate and wrap a device type name.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Result<Self> {
        let name = name.into();
        if name.is_empty()
            || name.len() > MAX_DEVICE_TYPE_LEN
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(Error::InvalidAttribute {
                name: "device type".into(),
                reason: format!(
                    "'{}' is not a device type name: use 1 to {MAX_DEVICE_TYPE_LEN} characters of a-z, 0-9, '_' and '-' (for example 'disk' or 'network')",
                    name.escape_default()
                ),
            });
        }
        Ok(DeviceType(name))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DeviceType {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        DeviceType::new(s)
    }
}

impl From<DeviceType> for String {
    fn from(t: DeviceType) -> String {
        t.0.into_owned()
    }
}

impl std::str::FromStr for DeviceType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DeviceType::new(s.to_owned())
    }
}

/// A driver-defined reference to one device of a domain (Xen: the device id, `51728`; QEMU: the
/// device id), cheap to clone. Non-empty, at most [`MAX_DEVICE_REF_LEN`] bytes of `[A-Za-z0-9._:-]`, so that a
/// reference can never form a path (`..`, `/`) in a backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceRef(Arc<str>);

impl DeviceRef {
    /// Validate and wrap a reference.
    pub fn new(r: impl Into<String>) -> Result<Self> {
        let r = r.into();
        let ok = !r.is_empty()
            && r.len() <= MAX_DEVICE_REF_LEN
            && r != "."
            && r != ".."
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !ok {
            return Err(Error::InvalidAttribute {
                name: "device reference".into(),
                reason: format!(
                    "'{}' is not a device reference: use 1 to {MAX_DEVICE_REF_LEN} characters of A-Z, a-z, 0-9, '.', '_', ':' and '-' (as listed by `vdev devices`)",
                    r.escape_default()
                ),
            });
        }
        Ok(DeviceRef(r.into()))
    }

    /// The reference as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DeviceRef {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        DeviceRef::new(s)
    }
}

impl From<DeviceRef> for String {
    fn from(r: DeviceRef) -> String {
        r.0.to_string()
    }
}

impl std::str::FromStr for DeviceRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DeviceRef::new(s)
    }
}

/// Where a device is in its life, in hypervisor-neutral terms.
///
/// Xen drivers map XenBus states onto these (1 → `Initialising`, 2 → `InitWait`, 3 →
/// `Initialised`, 4 → `Connected`, 5 → `Closing`, 6 → `Closed`); drivers whose hypervisor has no
/// handshake report `Connected` once the device exists.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DeviceState {
    /// Being set up.
    Initialising,
    /// The backend waits for the frontend.
    InitWait,
    /// The frontend has set up its side.
    Initialised,
    /// In use.
    Connected,
    /// Being shut down.
    Closing,
    /// Shut down, not yet removed.
    Closed,
    /// Detach was asked for; the guest has not released the device yet. It is still present.
    RemovalPending,
    /// A state the driver could not map; the raw value is kept.
    Unknown(String),
}

impl DeviceState {
    /// The kebab-case name (`connected`, `removal-pending`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            DeviceState::Initialising => "initialising",
            DeviceState::InitWait => "init-wait",
            DeviceState::Initialised => "initialised",
            DeviceState::Connected => "connected",
            DeviceState::Closing => "closing",
            DeviceState::Closed => "closed",
            DeviceState::RemovalPending => "removal-pending",
            DeviceState::Unknown(s) => s,
        }
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One device of a domain, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its type.
    pub device_type: DeviceType,
    /// Its reference, unique within the domain and type.
    pub reference: DeviceRef,
    /// Its state.
    pub state: DeviceState,
    /// Its attributes, opaque strings as the hypervisor reports them.
    pub attributes: Attributes,
}

/// One attribute a device type accepts when a device is created.
///
/// An attribute has one name and may have aliases: other names that mean the same attribute
/// (Xen's `uname` is also accepted as xl's `target`). The core accepts any of them, lets an alias
/// satisfy a required attribute, and refuses two names of one attribute in the same call; it
/// passes the name the caller gave to the driver unchanged, so a driver that gives a name an
/// alias reads whichever of them is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeSpec {
    /// The name.
    pub name: String,
    /// Other names accepted for the same attribute (see [`AttributeSpec::alias`]); empty for
    /// most attributes.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Whether attach refuses to go on without it (given under its name or an alias).
    pub required: bool,
    /// What it means and which values it takes.
    pub description: String,
    /// An example value.
    pub example: String,
    /// Whether [`crate::Connection::update`] may change it on an existing device (a CD-ROM's
    /// medium, a NIC's link state). Only such attributes are accepted by an update.
    #[serde(default)]
    pub updatable: bool,
    /// Whether the driver's listing reports this attribute under this name with the same
    /// meaning (true for most). A plan compares only such attributes with a desired state, and
    /// `export` writes only them; an attribute listed with another meaning (Xen's `backend`,
    /// given as a domain, listed as a XenStore path) or not listed at all says `false`.
    #[serde(default = "yes")]
    pub listed: bool,
    /// Whether values differing only in letter case are the same value (a MAC address).
    #[serde(default)]
    pub case_insensitive: bool,
    /// Other spellings of a value, each mapped to the one the driver lists (`rw` → `w`,
    /// `on` → `true`): a plan compares values after this mapping, so that a desired state
    /// written either way matches what the hypervisor reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spellings: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl AttributeSpec {
    /// A required attribute.
    pub fn required(name: &str, description: &str, example: &str) -> Self {
        AttributeSpec {
            name: name.into(),
            aliases: Vec::new(),
            required: true,
            description: description.into(),
            example: example.into(),
            updatable: false,
            listed: true,
            case_insensitive: false,
            spellings: BTreeMap::new(),
        }
    }

    /// An optional attribute.
    pub fn optional(name: &str, description: &str, example: &str) -> Self {
        AttributeSpec {
            required: false,
            ..AttributeSpec::required(name, description, example)
        }
    }

    /// Accept `name` too, as another name of this attribute:
    /// `AttributeSpec::required("uname", ..).alias("target")`.
    ///
    /// `name` must be a valid attribute name (see [`crate::AttrName`]) and no other name or alias
    /// of the same device type. The driver decides what a value given under an alias means; the
    /// core only checks names.
    pub fn alias(mut self, name: &str) -> Self {
        self.aliases.push(name.into());
        self
    }

    /// Mark it changeable on an existing device by [`crate::Connection::update`].
    pub fn updatable(mut self) -> Self {
        self.updatable = true;
        self
    }

    /// Mark it as not listed under this name with this meaning (see [`AttributeSpec::listed`]):
    /// plans do not compare it and `export` does not write it.
    pub fn not_listed(mut self) -> Self {
        self.listed = false;
        self
    }

    /// Mark its values as equal when they differ only in letter case (a MAC address).
    pub fn case_insensitive(mut self) -> Self {
        self.case_insensitive = true;
        self
    }

    /// Accept `other` as another spelling of the listed value `listed`
    /// (`.spelling("rw", "w")`); see [`AttributeSpec::spellings`].
    pub fn spelling(mut self, other: &str, listed: &str) -> Self {
        self.spellings.insert(other.to_owned(), listed.to_owned());
        self
    }

    /// A boolean listed as `true` or `false`: every spelling of [`crate::BOOL_SPELLINGS`] is
    /// mapped onto those two.
    pub fn boolean(mut self) -> Self {
        for (t, f) in crate::values::BOOL_PAIRS {
            self.spellings.insert((*t).to_owned(), "true".to_owned());
            self.spellings.insert((*f).to_owned(), "false".to_owned());
        }
        self
    }

    /// `value` as the driver would list it: letter case folded for a
    /// [`AttributeSpec::case_insensitive`] attribute, then another spelling replaced by the
    /// listed one. Two values mean the same when their normal forms are equal.
    pub fn normal<'a>(&self, value: &'a str) -> Cow<'a, str> {
        let v: Cow<'a, str> = if self.case_insensitive {
            Cow::Owned(value.to_lowercase())
        } else {
            Cow::Borrowed(value)
        };
        match self.spellings.get(v.as_ref()) {
            Some(listed) => Cow::Owned(listed.clone()),
            None => v,
        }
    }

    /// Its name, then its aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    /// Whether `name` is this attribute's name or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        self.names().any(|n| n == name)
    }

    /// The name with its aliases, for messages: `mode (or access)`.
    fn display_names(&self) -> String {
        if self.aliases.is_empty() {
            self.name.clone()
        } else {
            format!("{} (or {})", self.name, self.aliases.join(" or "))
        }
    }
}

/// What a device type accepts: the answer to `vdev schema TYPE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTypeSchema {
    /// The device type.
    pub device_type: DeviceType,
    /// What such a device is.
    pub description: String,
    /// The named attributes it accepts.
    pub attributes: Vec<AttributeSpec>,
    /// Name prefixes (such as `device.`) under which any attribute is passed through to the
    /// hypervisor untouched. Empty when the type accepts only the named attributes.
    #[serde(default)]
    pub passthrough_prefixes: Vec<String>,
    /// The attributes that identify a device of this type, most stable first (QEMU's disk:
    /// `id`, then `source`; a NIC: `id`, then `mac`). A desired state ([`crate::desired`]) is
    /// matched with listed devices by the first of these an entry gives, compared in their
    /// normal form ([`AttributeSpec::normal`]). Empty: only an entry's explicit `id` (the
    /// device's reference) identifies it.
    #[serde(default)]
    pub identity: Vec<String>,
    /// The attribute that chooses the reference of a new device (QEMU's `id`), if the driver
    /// lets the caller choose it; a desired entry's `id` is passed under this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_attribute: Option<String>,
}

impl DeviceTypeSchema {
    /// Whether an attribute called `name` is accepted (by its name, an alias, or under a
    /// pass-through prefix).
    pub fn accepts(&self, name: &str) -> bool {
        self.attribute(name).is_some()
            || self
                .passthrough_prefixes
                .iter()
                .any(|p| name.len() > p.len() && name.starts_with(p.as_str()))
    }

    /// The named attribute that answers to `name` (its name or an alias).
    pub fn attribute(&self, name: &str) -> Option<&AttributeSpec> {
        self.attributes.iter().find(|a| a.answers_to(name))
    }

    /// Check the names of an update before the driver is called: at least one attribute, each
    /// one the type knows (by name or alias) and marks [`AttributeSpec::updatable`], and no two
    /// names of one attribute. Every attribute that may not be updated is named in the error.
    pub fn check_update(&self, attributes: &Attributes) -> Result<()> {
        if attributes.is_empty() {
            return Err(Error::InvalidAttribute {
                name: "(none)".into(),
                reason: format!(
                    "an update of a {} needs at least one NAME=VALUE; updatable: {}",
                    self.device_type,
                    self.updatable_names()
                ),
            });
        }
        let mut refused = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (name, _) in attributes.iter() {
            match self.attribute(name) {
                Some(spec) if spec.updatable => {
                    if seen.contains(&spec.name.as_str()) {
                        return Err(Error::InvalidAttribute {
                            name: name.to_owned(),
                            reason: format!(
                                "'{name}' is another name of '{}', given already; give it once",
                                spec.name
                            ),
                        });
                    }
                    seen.push(spec.name.as_str());
                }
                _ => refused.push(name.to_owned()),
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(Error::InvalidAttribute {
            name: refused.join(","),
            reason: format!(
                "{} cannot be changed on an existing {} (detach and attach again instead); updatable: {}",
                refused.join(", "),
                self.device_type,
                self.updatable_names()
            ),
        })
    }

    /// The names of the updatable attributes, for messages (`none` when there are none).
    fn updatable_names(&self) -> String {
        let v: Vec<&str> = self
            .attributes
            .iter()
            .filter(|a| a.updatable)
            .map(|a| a.name.as_str())
            .collect();
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    }

    /// The checks the core makes on `attributes` before a driver's attach is called, on names
    /// only (values are never looked at):
    ///
    /// - a name the type does not accept is [`Error::InvalidAttribute`] listing the accepted
    ///   names and aliases;
    /// - two names of the same attribute (its name and an alias, or two aliases) are
    ///   [`Error::InvalidAttribute`] naming both;
    /// - a required attribute given under none of its names is [`Error::MissingAttribute`].
    pub fn check_names(&self, attributes: &Attributes) -> Result<()> {
        let device_type = &self.device_type;
        if let Some(name) = attributes.names().find(|n| !self.accepts(n)) {
            let mut accepted: Vec<String> = self
                .attributes
                .iter()
                .map(AttributeSpec::display_names)
                .collect();
            accepted.extend(self.passthrough_prefixes.iter().map(|p| format!("{p}*")));
            return Err(Error::InvalidAttribute {
                name: name.to_owned(),
                reason: format!(
                    "a {device_type} device has no such attribute; accepted: {} (`vdev schema {device_type}`)",
                    accepted.join(", ")
                ),
            });
        }
        for spec in &self.attributes {
            let given: Vec<&str> = spec.names().filter(|n| attributes.contains(n)).collect();
            if let [_, .., last] = given.as_slice() {
                return Err(Error::InvalidAttribute {
                    name: (*last).to_owned(),
                    reason: format!(
                        "{} are names of the same {device_type} attribute; give only one of them",
                        given
                            .iter()
                            .map(|n| format!("'{n}'"))
                            .collect::<Vec<_>>()
                            .join(" and "),
                    ),
                });
            }
        }
        if let Some(spec) = self
            .attributes
            .iter()
            .find(|a| a.required && !a.names().any(|n| attributes.contains(n)))
        {
            let also = if spec.aliases.is_empty() {
                String::new()
            } else {
                format!("; also accepted as {}", spec.aliases.join(" or "))
            };
            return Err(Error::MissingAttribute {
                device_type: device_type.to_string(),
                name: spec.name.clone(),
                hint: format!(
                    "{} (for example {}={}{also})",
                    spec.description, spec.name, spec.example
                ),
            });
        }
        Ok(())
    }
}

/// What happened to a device, as delivered by [`crate::Connection::events`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DeviceEvent {
    /// A device appeared.
    Added {
        /// The domain.
        domain: Domain,
        /// The device type.
        device_type: DeviceType,
        /// The new device's reference.
        reference: DeviceRef,
    },
    /// A device's state changed (including to [`DeviceState::RemovalPending`]).
    StateChanged {
        /// The domain.
        domain: Domain,
        /// The device type.
        device_type: DeviceType,
        /// The device's reference.
        reference: DeviceRef,
        /// The new state.
        state: DeviceState,
    },
    /// Attributes of a device were changed in place ([`crate::Connection::update`]): the
    /// attributes that changed, with their new values (an empty value: removed, such as an
    /// ejected medium).
    Updated {
        /// The domain.
        domain: Domain,
        /// The device type.
        device_type: DeviceType,
        /// The device's reference.
        reference: DeviceRef,
        /// What changed, with the new values.
        attributes: Attributes,
    },
    /// A device is gone.
    Removed {
        /// The domain.
        domain: Domain,
        /// The device type.
        device_type: DeviceType,
        /// The removed device's reference.
        reference: DeviceRef,
    },
}

impl DeviceEvent {
    /// The domain the event is about: its id, name and UUID name it. Its run state is what the
    /// driver knew when it sent the event and may be [`crate::RunState::Unknown`] (an event of
    /// a change made on a domain from [`crate::Connection::resolve_domain`]): compare domains
    /// by name or UUID, not whole.
    pub fn domain(&self) -> &Domain {
        match self {
            DeviceEvent::Added { domain, .. }
            | DeviceEvent::StateChanged { domain, .. }
            | DeviceEvent::Updated { domain, .. }
            | DeviceEvent::Removed { domain, .. } => domain,
        }
    }

    /// The device the event is about.
    pub fn reference(&self) -> &DeviceRef {
        match self {
            DeviceEvent::Added { reference, .. }
            | DeviceEvent::StateChanged { reference, .. }
            | DeviceEvent::Updated { reference, .. }
            | DeviceEvent::Removed { reference, .. } => reference,
        }
    }

    /// The device type the event is about.
    pub fn device_type(&self) -> &DeviceType {
        match self {
            DeviceEvent::Added { device_type, .. }
            | DeviceEvent::StateChanged { device_type, .. }
            | DeviceEvent::Updated { device_type, .. }
            | DeviceEvent::Removed { device_type, .. } => device_type,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk in Xen's vocabulary with xl's names as aliases.
    fn disk() -> DeviceTypeSchema {
        DeviceTypeSchema {
            device_type: DeviceType::DISK,
            description: "a disk".into(),
            attributes: vec![
                AttributeSpec::required("uname", "what backs it", "file:/x.img").alias("target"),
                AttributeSpec::required("dev", "the guest's name", "xvdb").alias("vdev"),
                AttributeSpec::optional("mode", "r or w", "w").alias("access"),
                AttributeSpec::optional("backend", "the backend domain", "Domain-0"),
            ],
            passthrough_prefixes: vec!["x.".into()],
            identity: vec!["dev".into(), "uname".into()],
            reference_attribute: None,
        }
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn an_alias_is_accepted_in_place_of_the_name() {
        let s = disk();
        assert!(s.accepts("access") && s.accepts("mode") && s.accepts("x.y"));
        assert_eq!(s.attribute("access").map(|a| a.name.as_str()), Some("mode"));
        s.check_names(&attrs(&[
            ("uname", "file:/x.img"),
            ("dev", "xvdb"),
            ("access", "ro"),
        ]))
        .unwrap();
    }

    #[test]
    fn a_required_attribute_is_satisfied_by_an_alias() {
        disk()
            .check_names(&attrs(&[("target", "/x.img"), ("vdev", "xvdb")]))
            .unwrap();
        disk()
            .check_names(&attrs(&[("target", "/x.img"), ("dev", "xvdb")]))
            .unwrap();
    }

    #[test]
    fn a_required_attribute_under_none_of_its_names_is_missing() {
        let e = disk()
            .check_names(&attrs(&[("dev", "xvdb"), ("mode", "w")]))
            .unwrap_err();
        match e {
            Error::MissingAttribute { name, hint, .. } => {
                assert_eq!(name, "uname");
                assert!(hint.contains("also accepted as target"), "{hint}");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn two_names_of_one_attribute_are_refused_naming_both() {
        for (pairs, first, second) in [
            (
                vec![
                    ("uname", "file:/x"),
                    ("dev", "xvdb"),
                    ("mode", "r"),
                    ("access", "rw"),
                ],
                "mode",
                "access",
            ),
            (
                vec![("uname", "file:/x"), ("target", "/x"), ("dev", "xvdb")],
                "uname",
                "target",
            ),
            // Even when the values agree: the core never compares values.
            (
                vec![("uname", "file:/x"), ("vdev", "xvdb"), ("dev", "xvdb")],
                "dev",
                "vdev",
            ),
        ] {
            let e = disk().check_names(&attrs(&pairs)).unwrap_err();
            match &e {
                Error::InvalidAttribute { name, reason } => {
                    assert_eq!(name, second, "{e}");
                    assert!(
                        reason.contains(&format!("'{first}' and '{second}'"))
                            && reason.contains("give only one"),
                        "{e}"
                    );
                }
                e => panic!("{pairs:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_name_is_still_refused_listing_names_and_aliases() {
        let e = disk()
            .check_names(&attrs(&[
                ("uname", "file:/x"),
                ("dev", "xvdb"),
                ("targets", "/x"),
            ]))
            .unwrap_err();
        match e {
            Error::InvalidAttribute { name, reason } => {
                assert_eq!(name, "targets");
                assert!(
                    reason.contains(
                        "uname (or target), dev (or vdev), mode (or access), backend, x.*"
                    ),
                    "{reason}"
                );
            }
            e => panic!("{e:?}"),
        }
        // A pass-through prefix alone is no name.
        assert!(disk().check_names(&attrs(&[("x.", "1")])).is_err());
    }
}
