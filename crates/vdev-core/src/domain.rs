//! Domains: what a driver knows of a virtual machine, and how a caller names one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A virtual machine (Xen domain, QEMU process, libvirt domain, ...) as a driver knows it.
///
/// Made with [`Domain::new`] and the `with_*` methods (the struct may gain fields).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Domain {
    /// The numeric id, stable while the connection is open; `None` where the hypervisor gives
    /// none (a libvirt domain that is shut off, Cloud Hypervisor).
    pub id: Option<u32>,
    /// The name.
    pub name: String,
    /// The UUID, in its usual hyphenated lower-case form, where the hypervisor has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Whether it runs (as the driver last saw it).
    #[serde(default)]
    pub state: RunState,
}

impl Domain {
    /// A domain with an id (or none) and a name; no UUID, state [`RunState::Unknown`].
    pub fn new(id: Option<u32>, name: impl Into<String>) -> Self {
        Domain {
            id,
            name: name.into(),
            uuid: None,
            state: RunState::Unknown,
        }
    }

    /// With its UUID (lower-cased).
    pub fn with_uuid(mut self, uuid: impl Into<String>) -> Self {
        self.uuid = Some(uuid.into().to_ascii_lowercase());
        self
    }

    /// With its run state.
    pub fn with_state(mut self, state: RunState) -> Self {
        self.state = state;
        self
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{} (id {id})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Whether a domain runs, in libvirt's vocabulary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RunState {
    /// Running.
    Running,
    /// Blocked on a resource (Xen's `b`).
    Blocked,
    /// Paused (stopped by the hypervisor or an admin, memory kept).
    Paused,
    /// Shutting down.
    ShuttingDown,
    /// Shut off: defined, not running (only persistent-scope changes apply).
    ShutOff,
    /// Crashed.
    Crashed,
    /// Suspended by the guest's power management.
    Suspended,
    /// The driver does not know.
    #[default]
    Unknown,
}

impl RunState {
    /// Its name: `running`, `paused`, `shut-off`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Blocked => "blocked",
            RunState::Paused => "paused",
            RunState::ShuttingDown => "shutting-down",
            RunState::ShutOff => "shut-off",
            RunState::Crashed => "crashed",
            RunState::Suspended => "suspended",
            RunState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a caller names a domain: by numeric id, UUID or name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainKey {
    /// A numeric id.
    Id(u32),
    /// A UUID (hyphenated, lower case).
    Uuid(String),
    /// A name.
    Name(String),
}

impl DomainKey {
    /// Parse what a user typed: all digits is an id, a hyphenated UUID
    /// (`8-4-4-4-12` hex digits) a UUID, anything else a name.
    ///
    /// Drivers' [`crate::Driver::lookup_domain`] receive the parsed key; [`crate::Connection::domain`]
    /// falls back to a name lookup when an id or UUID names no domain (a domain may be *named*
    /// `7`).
    ///
    /// ```
    /// use vdev_core::DomainKey;
    /// assert_eq!(DomainKey::parse("7"), DomainKey::Id(7));
    /// assert_eq!(
    ///     DomainKey::parse("4DEA22B3-1D52-D8F3-2516-782E98AB3FA0"),
    ///     DomainKey::Uuid("4dea22b3-1d52-d8f3-2516-782e98ab3fa0".into())
    /// );
    /// assert_eq!(DomainKey::parse("vm1"), DomainKey::Name("vm1".into()));
    /// ```
    pub fn parse(s: &str) -> Self {
        if let Ok(id) = s.parse::<u32>() {
            if !s.starts_with('+') {
                return DomainKey::Id(id);
            }
        }
        let groups: Vec<&str> = s.split('-').collect();
        let is_uuid = groups.len() == 5
            && groups
                .iter()
                .zip([8, 4, 4, 4, 12])
                .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
        if is_uuid {
            DomainKey::Uuid(s.to_ascii_lowercase())
        } else {
            DomainKey::Name(s.to_owned())
        }
    }

    /// Whether `domain` is the one this key names.
    pub fn matches(&self, domain: &Domain) -> bool {
        match self {
            DomainKey::Id(id) => domain.id == Some(*id),
            DomainKey::Uuid(u) => domain.uuid.as_deref() == Some(u.as_str()),
            DomainKey::Name(n) => domain.name == *n,
        }
    }
}

impl fmt::Display for DomainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainKey::Id(id) => write!(f, "{id}"),
            DomainKey::Uuid(u) => f.write_str(u),
            DomainKey::Name(n) => f.write_str(n),
        }
    }
}

/// The key that names `d` best: its id, else its UUID, else its name.
impl From<&Domain> for DomainKey {
    fn from(d: &Domain) -> Self {
        match (d.id, &d.uuid) {
            (Some(id), _) => DomainKey::Id(id),
            (None, Some(u)) => DomainKey::Uuid(u.clone()),
            (None, None) => DomainKey::Name(d.name.clone()),
        }
    }
}
