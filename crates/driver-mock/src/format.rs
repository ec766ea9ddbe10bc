//! The mock host's state as its state file holds it: the format (version, domains, devices,
//! custom types, the event journal) and its serde form.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vdev_core::{Attributes, DeviceEvent, DeviceRef, DeviceState, DeviceType};

/// The state file's format version.
pub const FORMAT_VERSION: u32 = 1;

/// A whole host, as kept in memory and in a state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostState {
    /// The format version (1).
    pub version: u32,
    /// The driver whose vocabulary the host speaks (`qemu`, `xen`, `libvirt`: its device
    /// types, attributes, references and errors, from the profile that driver exports), or
    /// `None` for the mock's own Xen-like vocabulary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub like: Option<String>,
    /// The domains, by id in the file.
    #[serde(with = "domains_as_list")]
    pub domains: BTreeMap<u32, DomainState>,
    /// Device types defined by the file, beside (or replacing) the built-in `disk` and `network`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_types: Vec<CustomType>,
    /// Counter for the simulated ring references and event channels.
    #[serde(default)]
    pub next_port: u64,
    /// The number of the last event recorded in [`HostState::journal`].
    #[serde(default)]
    pub event_seq: u64,
    /// The latest events (at most [`JOURNAL_LEN`]), numbered, so that every process watching a
    /// state file sees every change, whichever process made it.
    #[serde(default, skip_serializing_if = "std::collections::VecDeque::is_empty")]
    pub journal: std::collections::VecDeque<JournalEntry>,
    /// Whether some device may have a removal due (skips the scan in [`HostState::settle`]).
    #[serde(skip, default = "yes")]
    pub maybe_due: bool,
}

/// How many events a state file keeps for its watchers.
pub const JOURNAL_LEN: usize = 256;

/// One recorded event of a state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// Its number, from 1.
    pub seq: u64,
    /// The event.
    pub event: DeviceEvent,
}

impl HostState {
    /// Record events in the journal, numbering them.
    pub fn record(&mut self, events: &[DeviceEvent]) {
        for e in events {
            self.event_seq += 1;
            self.journal.push_back(JournalEntry {
                seq: self.event_seq,
                event: e.clone(),
            });
        }
        while self.journal.len() > JOURNAL_LEN {
            self.journal.pop_front();
        }
    }
}

fn yes() -> bool {
    true
}

/// One domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainState {
    /// Its id (repeated from the key, for the file).
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its devices, by type then reference.
    #[serde(default, with = "devices_as_list")]
    pub devices: BTreeMap<DeviceType, BTreeMap<RefKey, DeviceRecord>>,
    /// Its guest's behaviour, where it differs from the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<crate::Guest>,
}

/// Orders references numerically when they are numbers (Xen device ids, handles), else by text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefKey {
    /// A numeric reference.
    Num(u64),
    /// Any other reference.
    Text(String),
}

impl RefKey {
    /// The number after the highest numeric key of `keys`, 0 when there is none: the next
    /// handle of a type whose references count up.
    pub(crate) fn next_number<'a>(keys: impl Iterator<Item = &'a RefKey>) -> u64 {
        keys.filter_map(|k| match k {
            RefKey::Num(n) => Some(*n),
            RefKey::Text(_) => None,
        })
        .max()
        .map_or(0, |n| n + 1)
    }

    /// The key of a reference.
    pub fn of(r: &DeviceRef) -> RefKey {
        match r.as_str().parse::<u64>() {
            Ok(n) if !r.as_str().starts_with('0') || r.as_str() == "0" => RefKey::Num(n),
            _ => RefKey::Text(r.as_str().to_owned()),
        }
    }
}

/// One device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceRecord {
    /// Its type.
    #[serde(rename = "type")]
    pub device_type: DeviceType,
    /// Its reference.
    #[serde(rename = "ref")]
    pub reference: DeviceRef,
    /// Its state.
    pub state: DeviceState,
    /// Its listed attributes.
    pub attrs: Attributes,
    /// When a pending removal completes by itself (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal_due_ms: Option<u64>,
    /// When the guest connects the device (milliseconds since the Unix epoch), while it waits
    /// for the guest (`init-wait`); absent while waiting: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_due_ms: Option<u64>,
    /// The guest's behaviour towards this device, where it differs from its domain's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<crate::Guest>,
}

/// A device type defined in a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomType {
    /// Its name.
    pub name: DeviceType,
    /// What it is.
    #[serde(default)]
    pub description: String,
    /// The attribute whose value becomes the device reference; without it, references are
    /// numbers counted from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_attribute: Option<String>,
    /// The attributes it accepts.
    pub attributes: Vec<CustomAttr>,
}

/// An attribute of a [`CustomType`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomAttr {
    /// Its name.
    pub name: String,
    /// Other names it is accepted under (listed under `name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Whether it must be given.
    #[serde(default)]
    pub required: bool,
    /// What it means.
    #[serde(default)]
    pub description: String,
    /// An example value.
    #[serde(default)]
    pub example: String,
    /// When set, the only values accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// The value used when it is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Whether `update` may change it on an existing device.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub updatable: bool,
}

mod domains_as_list {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<u32, DomainState>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, DomainState>, D::Error> {
        let list = Vec::<DomainState>::deserialize(d)?;
        let mut m = BTreeMap::new();
        for dom in list {
            if m.values().any(|o: &DomainState| o.name == dom.name) {
                return Err(serde::de::Error::custom(format!(
                    "two domains are named '{}'",
                    dom.name
                )));
            }
            let id = dom.id;
            if m.insert(id, dom).is_some() {
                return Err(serde::de::Error::custom(format!(
                    "two domains have the id {id}"
                )));
            }
        }
        Ok(m)
    }
}

type DeviceMap = BTreeMap<DeviceType, BTreeMap<RefKey, DeviceRecord>>;

mod devices_as_list {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &DeviceMap, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.values().flat_map(|by_ref| by_ref.values()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DeviceMap, D::Error> {
        let list = Vec::<DeviceRecord>::deserialize(d)?;
        let mut m = DeviceMap::new();
        for dev in list {
            let (t, r) = (dev.device_type.clone(), dev.reference.clone());
            if m.entry(t.clone())
                .or_default()
                .insert(RefKey::of(&r), dev)
                .is_some()
            {
                return Err(serde::de::Error::custom(format!(
                    "two {t} devices have the ref {r}"
                )));
            }
        }
        Ok(m)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The XenBus state number shown in the `state` attribute.
pub(crate) fn xenbus_state(s: &DeviceState) -> &'static str {
    match s {
        DeviceState::Initialising => "1",
        DeviceState::InitWait => "2",
        DeviceState::Initialised => "3",
        DeviceState::Connected => "4",
        DeviceState::Closing | DeviceState::RemovalPending => "5",
        DeviceState::Closed => "6",
        _ => "0",
    }
}
