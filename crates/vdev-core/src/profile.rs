//! A driver's device vocabulary as data: its [`DeviceTypeSchema`]s plus the facts a simulator
//! needs to answer as the driver does (allowed values, defaults, value forms, the reference
//! format, which input is refused with which error). Each real driver builds its
//! [`DriverProfile`] from its own schema declaration; the mock driver loads the exported JSON
//! (`mock:///default?like=qemu`), and a drift test fails when the two differ (design 0017).
//!
//! The facts are declarative and their errors fixed, as the real drivers answer:
//!
//! | fact | bad input | error |
//! |---|---|---|
//! | [`TypeProfile::values`], [`TypeProfile::forms`], [`Constraint`] | a value outside them | [`crate::Error::InvalidAttribute`] |
//! | [`TypeProfile::required_unless`] | missing | [`crate::Error::MissingAttribute`] |
//! | [`TypeProfile::host_path`] | no such file on the host | [`crate::Error::InvalidAttribute`] |
//! | [`TypeProfile::unique`], the reference | taken in the domain | [`crate::Error::DeviceExists`] |
//! | [`MediumRule`] | a change on a drive without removable media | [`crate::Error::InvalidAttribute`] |
//! | [`MediumRule`] | a locked tray without `force` | [`crate::Error::DeviceBusy`] |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::DeviceTypeSchema;

/// The version of the profile format.
pub const PROFILE_VERSION: u32 = 1;

/// A driver's device types and the facts of their behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverProfile {
    /// The format version ([`PROFILE_VERSION`]).
    pub version: u32,
    /// The driver's name (`qemu`, `xen`, `libvirt`).
    pub driver: String,
    /// The names of the domains a simulated host starts with (the first is the one most
    /// examples use).
    pub domains: Vec<String>,
    /// Each device type.
    pub device_types: Vec<TypeProfile>,
}

/// One device type: its schema and the facts of its behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeProfile {
    /// The schema, as the driver's `device_types` answers it.
    pub schema: DeviceTypeSchema,
    /// How the reference of a new device is made.
    pub reference: RefFormat,
    /// Attributes limited to a set of values (after the schema's spellings); others refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Vec<String>>,
    /// The value an attribute is listed with when it is not given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<String, String>,
    /// Defaults that hold instead of [`TypeProfile::defaults`] when another attribute is given
    /// (libvirt's `netdev` is `network` with a `source`): attribute → (other attribute, value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults_with: BTreeMap<String, (String, String)>,
    /// The form values of an attribute must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forms: BTreeMap<String, ValueForm>,
    /// Attributes required unless another attribute has a value (QEMU's `source` and
    /// `format`, unless `media=cdrom`): attribute → (other attribute, value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_unless: BTreeMap<String, (String, String)>,
    /// Limits that hold when other attributes have given values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Attributes that are create-only flags of update (QEMU's `force`): refused by attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_only: Vec<String>,
    /// The attribute naming a file or block device on the host, which must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// Attributes whose value (normalised) no two devices of a domain share.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unique: Vec<String>,
    /// Attributes made when absent, as a MAC address with this prefix (`52:54:00`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generated_mac: BTreeMap<String, String>,
    /// Listed attributes computed from another one: name → how.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub derived: BTreeMap<String, Derived>,
    /// The state a new device is listed in until its guest connects it (Xen: `init-wait`, the
    /// backend waiting for the frontend); `None`: connected at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_state: Option<crate::DeviceState>,
    /// Removable media (a CD-ROM drive), if this type has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<MediumRule>,
}

/// How the reference of a new device is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RefFormat {
    /// The value of `attribute` when given, else `PREFIX-` and 8 hex digits (QEMU's
    /// `disk-0a1b2c3d`).
    Attribute {
        /// The attribute.
        attribute: String,
        /// The prefix of a generated reference.
        generated_prefix: String,
    },
    /// `PREFIX` and a counter from 0 (`disk0`).
    Prefixed {
        /// The prefix.
        prefix: String,
    },
    /// `PREFIX` and 8 random hex digits, whatever is given (libvirt's user aliases
    /// `ua-disk-0a1b2c3d`).
    Generated {
        /// The prefix (`ua-disk-`).
        prefix: String,
    },
    /// The Xen device number of the device name in `attribute` (`xvdb` = 51728).
    XenDevid {
        /// The attribute.
        attribute: String,
    },
    /// A counter from 0 per domain and type (Xen's NIC handles).
    Counter,
}

/// The form a value must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueForm {
    /// A device id: a letter, then letters, digits, `-`, `.`, `_` (QEMU's rule).
    Id,
    /// A unicast MAC address (listed in lower case).
    Mac,
    /// A boolean (listed `true`/`false`).
    Bool,
    /// A Xen device name (`xvdb`, `hda`, `d0p1`) or number.
    XenDevice,
    /// `phy:PATH` or `file:PATH`, or an absolute path (listed as given).
    XenUname,
    /// IP addresses separated by spaces.
    IpList,
    /// A network interface name (1 to 15 of A-Z a-z 0-9 . _ -).
    Interface,
    /// The name or id of an existing domain.
    Domain,
}

/// A limit that holds when other attributes have given values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// When these attributes have these values (after defaults)...
    pub when: BTreeMap<String, String>,
    /// ...this attribute...
    pub attribute: String,
    /// ...may only have these values (after defaults).
    pub values: Vec<String>,
}

/// A listed attribute computed from another one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derived {
    /// The attributes it is computed from, their values joined with `+` (after defaults).
    pub from: Vec<String>,
    /// The value for each combination.
    pub map: BTreeMap<String, String>,
}

/// Removable media: a drive whose medium update may change, whose tray a guest can lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediumRule {
    /// The attribute and value that make a device such a drive (`media`, `cdrom`).
    pub when: (String, String),
    /// The attribute holding the medium (`source`); empty means no medium.
    pub medium: String,
    /// The update flag that opens a locked tray anyway (`force`).
    pub force: String,
}

impl DriverProfile {
    /// The profile of a device type.
    pub fn device_type(&self, t: &crate::DeviceType) -> Option<&TypeProfile> {
        self.device_types
            .iter()
            .find(|p| &p.schema.device_type == t)
    }

    /// The profile as the pretty JSON the mock driver embeds (one trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a profile serialises");
        s.push('\n');
        s
    }
}
