//! Domains, device types, references, devices, states and events.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::attributes::Attributes;
use crate::error::{Error, Result};

/// A virtual machine (Xen domain, QEMU process, ...) as a driver knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Domain {
    /// The numeric id. Stable while the connection is open.
    pub id: u32,
    /// The name.
    pub name: String,
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (id {})", self.name, self.id)
    }
}

/// How a caller names a domain: by numeric id or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainKey {
    /// A numeric id.
    Id(u32),
    /// A name.
    Name(String),
}

impl DomainKey {
    /// Parse what a user typed: all digits is an id, anything else a name.
    ///
    /// Drivers' [`crate::Driver::lookup_domain`] receive the parsed key; [`crate::Connection::domain`]
    /// falls back to a name lookup when an all-digit key is not an id (a domain may be *named* `7`).
    pub fn parse(s: &str) -> Self {
        match s.parse::<u32>() {
            Ok(id) if !s.starts_with('+') => DomainKey::Id(id),
            _ => DomainKey::Name(s.to_owned()),
        }
    }

    /// Whether `domain` is the one this key names.
    pub fn matches(&self, domain: &Domain) -> bool {
        match self {
            DomainKey::Id(id) => domain.id == *id,
            DomainKey::Name(n) => domain.name == *n,
        }
    }
}

impl fmt::Display for DomainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainKey::Id(id) => write!(f, "{id}"),
            DomainKey::Name(n) => f.write_str(n),
        }
    }
}

impl From<&Domain> for DomainKey {
    fn from(d: &Domain) -> Self {
        DomainKey::Id(d.id)
    }
}

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeSpec {
    /// The name.
    pub name: String,
    /// Whether attach refuses to go on without it.
    pub required: bool,
    /// What it means and which values it takes.
    pub description: String,
    /// An example value.
    pub example: String,
}

impl AttributeSpec {
    /// A required attribute.
    pub fn required(name: &str, description: &str, example: &str) -> Self {
        AttributeSpec {
            name: name.into(),
            required: true,
            description: description.into(),
            example: example.into(),
        }
    }

    /// An optional attribute.
    pub fn optional(name: &str, description: &str, example: &str) -> Self {
        AttributeSpec {
            required: false,
            ..AttributeSpec::required(name, description, example)
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
}

impl DeviceTypeSchema {
    /// Whether an attribute called `name` is accepted (named, or under a pass-through prefix).
    pub fn accepts(&self, name: &str) -> bool {
        self.attributes.iter().any(|a| a.name == name)
            || self
                .passthrough_prefixes
                .iter()
                .any(|p| name.len() > p.len() && name.starts_with(p.as_str()))
    }
}

/// How detach behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachOptions {
    /// How long to wait for the guest to release the device before answering
    /// [`Error::RemovalPending`]. Zero means: ask, do not wait.
    pub timeout: Duration,
    /// Remove the device at once without waiting for the guest (as `xl block-detach --force`).
    /// Requires [`crate::Capabilities::force_detach`].
    pub force: bool,
}

impl DetachOptions {
    /// The default timeout: 10 s, as libxl's `LIBXL_DESTROY_TIMEOUT`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for DetachOptions {
    fn default() -> Self {
        DetachOptions {
            timeout: Self::DEFAULT_TIMEOUT,
            force: false,
        }
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
    /// The domain the event is about.
    pub fn domain(&self) -> &Domain {
        match self {
            DeviceEvent::Added { domain, .. }
            | DeviceEvent::StateChanged { domain, .. }
            | DeviceEvent::Removed { domain, .. } => domain,
        }
    }

    /// The device the event is about.
    pub fn reference(&self) -> &DeviceRef {
        match self {
            DeviceEvent::Added { reference, .. }
            | DeviceEvent::StateChanged { reference, .. }
            | DeviceEvent::Removed { reference, .. } => reference,
        }
    }

    /// The device type the event is about.
    pub fn device_type(&self) -> &DeviceType {
        match self {
            DeviceEvent::Added { device_type, .. }
            | DeviceEvent::StateChanged { device_type, .. }
            | DeviceEvent::Removed { device_type, .. } => device_type,
        }
    }
}
