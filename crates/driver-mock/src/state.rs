//! The mock host's state, its file format, and the rules of each device type.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vdev_core::{
    AttributeSpec, Attributes, DeviceEvent, DeviceRef, DeviceState, DeviceType, DeviceTypeSchema,
    Domain, Error, Result,
};

/// The state file's format version.
pub const FORMAT_VERSION: u32 = 1;

/// A whole host, as kept in memory and in a state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostState {
    /// The format version (1).
    pub version: u32,
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
fn xenbus_state(s: &DeviceState) -> &'static str {
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

impl HostState {
    /// The default host: `Domain-0` (id 0) and `demo` (id 1) with one disk and one NIC.
    pub fn default_host() -> HostState {
        let mut h = HostState {
            version: FORMAT_VERSION,
            domains: BTreeMap::new(),
            device_types: Vec::new(),
            next_port: 8,
            event_seq: 0,
            journal: Default::default(),
            maybe_due: false,
        };
        for (id, name) in [(0, "Domain-0"), (1, "demo")] {
            h.domains.insert(
                id,
                DomainState {
                    id,
                    name: name.into(),
                    devices: BTreeMap::new(),
                },
            );
        }
        let mut ev = Vec::new();
        let disk = Attributes::from_pairs([
            ("uname", "file:/var/lib/xen/images/demo.img"),
            ("dev", "xvda"),
            ("mode", "w"),
        ])
        .expect("valid");
        h.attach(1, &DeviceType::DISK, &disk, &mut ev)
            .expect("default disk");
        let nic = Attributes::from_pairs([("mac", "00:16:3e:00:00:01"), ("bridge", "xenbr0")])
            .expect("valid");
        h.attach(1, &DeviceType::NETWORK, &nic, &mut ev)
            .expect("default nic");
        h
    }

    /// Check what serde cannot: device types known, custom types well-formed, ids consistent.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.version != FORMAT_VERSION {
            return Err(format!(
                "version {} is not supported (expected {FORMAT_VERSION})",
                self.version
            ));
        }
        let mut seen = Vec::new();
        for t in &self.device_types {
            if seen.contains(&&t.name) {
                return Err(format!("device type '{}' is defined twice", t.name));
            }
            seen.push(&t.name);
            let mut names = Vec::new();
            for n in t
                .attributes
                .iter()
                .flat_map(|a| std::iter::once(&a.name).chain(&a.aliases))
            {
                vdev_core::AttrName::new(n.clone())
                    .map_err(|e| format!("device type '{}': {e}", t.name))?;
                if names.contains(&n) {
                    return Err(format!(
                        "device type '{}': '{n}' names two attributes (or one twice)",
                        t.name
                    ));
                }
                names.push(n);
            }
            if let Some(r) = &t.ref_attribute {
                if !t.attributes.iter().any(|a| &a.name == r && a.required) {
                    return Err(format!(
                        "device type '{}': ref_attribute '{r}' must be one of its required attributes",
                        t.name
                    ));
                }
            }
        }
        for (id, d) in &self.domains {
            for t in d.devices.keys() {
                if self.rules(t).is_none() {
                    return Err(format!("domain {id} has devices of the unknown type '{t}'"));
                }
            }
        }
        Ok(())
    }

    /// The rules of a device type, if it exists.
    pub fn rules(&self, t: &DeviceType) -> Option<Rules<'_>> {
        if let Some(c) = self.device_types.iter().find(|c| &c.name == t) {
            return Some(Rules::Custom(c));
        }
        match t.as_str() {
            "disk" => Some(Rules::Disk),
            "network" => Some(Rules::Network),
            _ => None,
        }
    }

    /// Every device type's schema.
    pub fn schemas(&self) -> Vec<DeviceTypeSchema> {
        let mut types: Vec<DeviceType> = vec![DeviceType::DISK, DeviceType::NETWORK];
        for c in &self.device_types {
            if !types.contains(&c.name) {
                types.push(c.name.clone());
            }
        }
        types
            .iter()
            .map(|t| self.rules(t).expect("known").schema(t))
            .collect()
    }

    /// The domain with this id.
    pub fn domain(&self, d: &Domain) -> Result<&DomainState> {
        self.domains
            .get(&d.id)
            .ok_or_else(|| Error::DomainNotFound {
                domain: d.name.clone(),
            })
    }

    fn domain_mut(&mut self, id: u32) -> Result<&mut DomainState> {
        self.domains
            .get_mut(&id)
            .ok_or_else(|| Error::DomainNotFound {
                domain: id.to_string(),
            })
    }

    fn as_domain(&self, id: u32) -> Domain {
        Domain {
            id,
            name: self
                .domains
                .get(&id)
                .map(|d| d.name.clone())
                .unwrap_or_default(),
        }
    }

    /// Resolve a `backend` attribute (a domain name or id) into an id.
    fn backend_id(&self, value: Option<&str>) -> Result<u32> {
        let Some(v) = value else { return Ok(0) };
        let found = match v.parse::<u32>() {
            Ok(id) if self.domains.contains_key(&id) => Some(id),
            _ => self.domains.values().find(|d| d.name == v).map(|d| d.id),
        };
        found.ok_or_else(|| {
            Error::invalid_attribute(
                "backend",
                format!("there is no domain '{v}'; give the name or id of an existing domain (default Domain-0)"),
            )
        })
    }

    /// Complete pending removals whose time has come.
    pub fn settle(&mut self, now_ms: u64, events: &mut Vec<DeviceEvent>) {
        if !self.maybe_due {
            return;
        }
        let mut still_due = false;
        let ids: Vec<u32> = self.domains.keys().copied().collect();
        for id in ids {
            let domain = self.as_domain(id);
            let dom = self.domains.get_mut(&id).expect("listed");
            for (t, by_ref) in dom.devices.iter_mut() {
                by_ref.retain(|_, dev| {
                    let due = matches!(dev.removal_due_ms, Some(due) if due <= now_ms);
                    still_due |= dev.removal_due_ms.is_some() && !due;
                    if due {
                        events.push(DeviceEvent::Removed {
                            domain: domain.clone(),
                            device_type: t.clone(),
                            reference: dev.reference.clone(),
                        });
                    }
                    !due
                });
            }
            dom.devices.retain(|_, m| !m.is_empty());
        }
        self.maybe_due = still_due;
    }

    /// The earliest time a pending removal of this device completes by itself.
    pub fn removal_due(&self, domain: u32, t: &DeviceType, r: &DeviceRef) -> Option<Option<u64>> {
        self.domains
            .get(&domain)?
            .devices
            .get(t)?
            .get(&RefKey::of(r))
            .map(|d| d.removal_due_ms)
    }

    /// The devices of a domain (their `bkdom-name` was translated from `backend-id` at attach:
    /// domains of the mock are never renamed).
    pub fn list(&self, d: &Domain, t: Option<&DeviceType>) -> Result<Vec<vdev_core::Device>> {
        let dom = self.domain(d)?;
        let mut out = Vec::new();
        let mut push = |by_ref: &BTreeMap<RefKey, DeviceRecord>| {
            out.reserve(by_ref.len());
            for dev in by_ref.values() {
                out.push(vdev_core::Device {
                    device_type: dev.device_type.clone(),
                    reference: dev.reference.clone(),
                    state: dev.state.clone(),
                    attributes: dev.attrs.clone(),
                });
            }
        };
        match t {
            Some(t) => {
                if let Some(m) = dom.devices.get(t) {
                    push(m)
                }
            }
            None => dom.devices.values().for_each(push),
        }
        Ok(out)
    }

    /// Create a device. Validates everything before changing anything.
    pub fn attach(
        &mut self,
        domid: u32,
        t: &DeviceType,
        attrs: &Attributes,
        events: &mut Vec<DeviceEvent>,
    ) -> Result<DeviceRef> {
        let rules = self.rules(t).ok_or_else(|| Error::Unsupported {
            driver: crate::NAME.into(),
            operation: format!("device type '{t}'"),
            detail: "see `vdev schema`".into(),
        })?;
        let domain = self.as_domain(domid);
        if !self.domains.contains_key(&domid) {
            return Err(Error::DomainNotFound {
                domain: domid.to_string(),
            });
        }
        let (reference, listed) = rules.create(self, domid, t, attrs)?;
        let is_xen = matches!(rules, Rules::Disk | Rules::Network);
        let key = RefKey::of(&reference);
        if self.domains[&domid]
            .devices
            .get(t)
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(Error::DeviceExists {
                domain: domain.name,
                device_type: t.to_string(),
                reference: reference.to_string(),
            });
        }
        // Validated: now change.
        if is_xen {
            self.next_port += 3; // ring refs and an event channel: distinct numbers
        }
        self.domain_mut(domid)?
            .devices
            .entry(t.clone())
            .or_default()
            .insert(
                key,
                DeviceRecord {
                    device_type: t.clone(),
                    reference: reference.clone(),
                    state: DeviceState::Connected,
                    attrs: listed,
                    removal_due_ms: None,
                },
            );
        events.push(DeviceEvent::Added {
            domain,
            device_type: t.clone(),
            reference: reference.clone(),
        });
        Ok(reference)
    }

    /// Remove a device at once.
    pub fn remove(
        &mut self,
        domid: u32,
        t: &DeviceType,
        r: &DeviceRef,
        events: &mut Vec<DeviceEvent>,
    ) -> Result<()> {
        let domain = self.as_domain(domid);
        let dom = self.domain_mut(domid)?;
        let by_ref = dom.devices.get_mut(t);
        match by_ref.and_then(|m| m.remove(&RefKey::of(r))) {
            None => Err(not_found(&domain, t, r)),
            Some(_) => {
                if dom.devices.get(t).is_some_and(BTreeMap::is_empty) {
                    dom.devices.remove(t);
                }
                events.push(DeviceEvent::Removed {
                    domain,
                    device_type: t.clone(),
                    reference: r.clone(),
                });
                Ok(())
            }
        }
    }

    /// Mark a device removal-pending (idempotent); `due_ms` is when the guest will release it.
    pub fn mark_pending(
        &mut self,
        domid: u32,
        t: &DeviceType,
        r: &DeviceRef,
        due_ms: Option<u64>,
        events: &mut Vec<DeviceEvent>,
    ) -> Result<()> {
        let domain = self.as_domain(domid);
        let dev = self
            .domain_mut(domid)?
            .devices
            .get_mut(t)
            .and_then(|m| m.get_mut(&RefKey::of(r)))
            .ok_or_else(|| not_found(&domain, t, r))?;
        if dev.state == DeviceState::RemovalPending {
            return Ok(());
        }
        dev.state = DeviceState::RemovalPending;
        dev.removal_due_ms = due_ms;
        if dev.attrs.contains("state") {
            let _ = dev
                .attrs
                .insert("state", xenbus_state(&DeviceState::RemovalPending));
        }
        self.maybe_due |= due_ms.is_some();
        events.push(DeviceEvent::StateChanged {
            domain,
            device_type: t.clone(),
            reference: r.clone(),
            state: DeviceState::RemovalPending,
        });
        Ok(())
    }

    /// Change updatable attributes of a device in place. Validates everything before changing
    /// anything.
    pub fn update(
        &mut self,
        domid: u32,
        t: &DeviceType,
        r: &DeviceRef,
        attrs: &Attributes,
        events: &mut Vec<DeviceEvent>,
    ) -> Result<()> {
        let rules = self.rules(t).ok_or_else(|| Error::Unsupported {
            driver: crate::NAME.into(),
            operation: format!("device type '{t}'"),
            detail: "see `vdev schema`".into(),
        })?;
        let domain = self.as_domain(domid);
        let dev = self
            .domain(&domain)?
            .devices
            .get(t)
            .and_then(|m| m.get(&RefKey::of(r)))
            .ok_or_else(|| not_found(&domain, t, r))?;
        let changes = rules.update(dev, attrs)?;
        // Validated: now change.
        let dev = self
            .domain_mut(domid)?
            .devices
            .get_mut(t)
            .and_then(|m| m.get_mut(&RefKey::of(r)))
            .ok_or_else(|| not_found(&domain, t, r))?;
        for (k, v) in changes.iter() {
            dev.attrs.insert(k.to_owned(), v.to_owned())?;
        }
        events.push(DeviceEvent::Updated {
            domain,
            device_type: t.clone(),
            reference: r.clone(),
            attributes: changes,
        });
        Ok(())
    }

    /// Whether a device exists.
    pub fn exists(&self, domid: u32, t: &DeviceType, r: &DeviceRef) -> Result<bool> {
        Ok(self
            .domains
            .get(&domid)
            .ok_or_else(|| Error::DomainNotFound {
                domain: domid.to_string(),
            })?
            .devices
            .get(t)
            .is_some_and(|m| m.contains_key(&RefKey::of(r))))
    }

    /// Remove every device whose removal is pending.
    pub fn release_pending(&mut self, events: &mut Vec<DeviceEvent>) -> usize {
        for d in self.domains.values_mut() {
            for m in d.devices.values_mut() {
                for dev in m.values_mut() {
                    if dev.state == DeviceState::RemovalPending {
                        dev.removal_due_ms = Some(0);
                    }
                }
            }
        }
        let before = events.len();
        self.maybe_due = true;
        self.settle(u64::MAX, events);
        events.len() - before
    }
}

fn not_found(domain: &Domain, t: &DeviceType, r: &DeviceRef) -> Error {
    Error::DeviceNotFound {
        domain: domain.name.clone(),
        device_type: t.to_string(),
        reference: r.to_string(),
    }
}

/// How one device type is created.
#[derive(Debug, Clone, Copy)]
pub enum Rules<'a> {
    /// Xen vbd vocabulary.
    Disk,
    /// Xen vif vocabulary.
    Network,
    /// Defined in the state file.
    Custom(&'a CustomType),
}

const DISK_DESC: &str = "a virtual block device (Xen vbd vocabulary); its ref is the Xen device number of `dev` (xvdb = 51728)";
const NET_DESC: &str =
    "a virtual network interface (Xen vif vocabulary); its ref is its handle (0, 1, ...)";

impl Rules<'_> {
    fn schema(&self, t: &DeviceType) -> DeviceTypeSchema {
        let backend = AttributeSpec::optional(
            "backend",
            "the backend domain, by name or id (default Domain-0); listed as backend-id and bkdom-name",
            "Domain-0",
        );
        let (description, attributes) = match self {
            Rules::Disk => (
                DISK_DESC.to_owned(),
                vec![
                    AttributeSpec::required("uname", "what backs the disk: phy:DEVICE or file:PATH; on a CD-ROM drive (devtype=cdrom) its medium, empty for none, and changeable by update (empty ejects)", "file:/var/lib/xen/images/data.img").updatable(),
                    AttributeSpec::optional("devtype", "disk (default) or cdrom: a CD-ROM drive, whose medium can be changed in place", "cdrom"),
                    AttributeSpec::required("dev", "the device name in the guest (xvdX, sdX, hdX, optionally with a partition number), or a Xen device number", "xvdb"),
                    AttributeSpec::required("mode", "r for read-only, w for read-write (ro and rw are accepted too)", "w"),
                    backend,
                ],
            ),
            Rules::Network => (
                NET_DESC.to_owned(),
                vec![
                    AttributeSpec::optional("mac", "the MAC address; generated in Xen's 00:16:3e range when absent; unique on the host", "00:16:3e:12:34:56"),
                    AttributeSpec::optional("bridge", "the bridge in the backend domain (default xenbr0)", "xenbr0"),
                    AttributeSpec::optional("script", "the backend's hotplug script (default /etc/xen/scripts/vif-bridge)", "/etc/xen/scripts/vif-bridge"),
                    AttributeSpec::optional("ip", "the guest's IP addresses, separated by spaces", "192.0.2.10"),
                    AttributeSpec::optional("link", "up (default) or down: whether the guest sees a cable; changeable by update", "down").updatable(),
                    backend,
                ],
            ),
            Rules::Custom(c) => (
                c.description.clone(),
                c.attributes
                    .iter()
                    .map(|a| AttributeSpec {
                        name: a.name.clone(),
                        aliases: a.aliases.clone(),
                        required: a.required,
                        description: match &a.values {
                            Some(v) => format!("{} (one of: {})", a.description, v.join(", ")),
                            None => a.description.clone(),
                        },
                        example: a.example.clone(),
                        updatable: a.updatable,
                    })
                    .collect(),
            ),
        };
        DeviceTypeSchema {
            device_type: t.clone(),
            description,
            attributes,
            passthrough_prefixes: Vec::new(),
        }
    }

    /// Validate attributes and compute the reference and the listed attributes. Changes nothing.
    fn create(
        &self,
        h: &HostState,
        domid: u32,
        t: &DeviceType,
        attrs: &Attributes,
    ) -> Result<(DeviceRef, Attributes)> {
        let mut listed = Attributes::new();
        let port = h.next_port;
        match self {
            Rules::Disk => {
                let cdrom = match attrs.get("devtype").unwrap_or("disk") {
                    "disk" => false,
                    "cdrom" => true,
                    v => {
                        return Err(Error::invalid_attribute(
                            "devtype",
                            format!("'{}' is not disk or cdrom", v.escape_default()),
                        ))
                    }
                };
                let uname = attrs.get("uname").unwrap_or_default();
                check_uname(uname, cdrom)?;
                let dev = attrs.get("dev").unwrap_or_default();
                let devid = xen_devid::devid_from_name(dev)
                    .map_err(|e| Error::invalid_attribute("dev", e.to_string()))?;
                let mode = match attrs.get("mode").unwrap_or_default() {
                    "r" | "ro" => "r",
                    "w" | "rw" => "w",
                    m => {
                        return Err(Error::invalid_attribute(
                            "mode",
                            format!(
                                "'{}' is not a mode; use r (read-only) or w (read-write)",
                                m.escape_default()
                            ),
                        ))
                    }
                };
                let bid = h.backend_id(attrs.get("backend"))?;
                let reference = DeviceRef::new(devid.to_string())?;
                for (n, v) in [
                    ("uname", uname.to_owned()),
                    ("dev", dev.to_owned()),
                    ("mode", mode.to_owned()),
                    ("virtual-device", devid.to_string()),
                    ("backend-id", bid.to_string()),
                    ("bkdom-name", h.domains[&bid].name.clone()),
                    ("state", "4".to_owned()),
                    (
                        "backend",
                        format!("/local/domain/{bid}/backend/vbd/{domid}/{devid}"),
                    ),
                    ("ring-ref", port.to_string()),
                    ("event-channel", (port + 1).to_string()),
                ] {
                    listed.insert(n, v)?;
                }
                if cdrom {
                    listed.insert("devtype", "cdrom".to_owned())?;
                }
                Ok((reference, listed))
            }
            Rules::Network => {
                let mac = match attrs.get("mac") {
                    Some(m) => {
                        let m = parse_mac(m).ok_or_else(|| {
                            Error::invalid_attribute(
                                "mac",
                                format!(
                                    "'{}' is not a unicast MAC address such as 00:16:3e:12:34:56",
                                    m.escape_default()
                                ),
                            )
                        })?;
                        if let Some((dom, r)) = h.mac_owner(&m) {
                            return Err(Error::DeviceExists {
                                domain: h.as_domain(domid).name,
                                device_type: t.to_string(),
                                reference: format!(
                                    "with mac {m} (network device {r} of domain {dom} has it)"
                                ),
                            });
                        }
                        m
                    }
                    None => h.free_mac(domid),
                };
                let bridge = attrs.get("bridge").unwrap_or("xenbr0");
                if bridge.is_empty()
                    || bridge.len() > 15
                    || !bridge
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                {
                    return Err(Error::invalid_attribute(
                        "bridge",
                        format!(
                            "'{}' is not an interface name (1 to 15 of A-Z a-z 0-9 . _ -)",
                            bridge.escape_default()
                        ),
                    ));
                }
                if let Some(ip) = attrs.get("ip") {
                    if ip.split_whitespace().next().is_none()
                        || ip
                            .split_whitespace()
                            .any(|a| a.parse::<std::net::IpAddr>().is_err())
                    {
                        return Err(Error::invalid_attribute(
                            "ip",
                            format!(
                                "'{}' is not a list of IP addresses separated by spaces",
                                ip.escape_default()
                            ),
                        ));
                    }
                }
                let link = check_link(attrs.get("link").unwrap_or("up"))?;
                let bid = h.backend_id(attrs.get("backend"))?;
                let handle = h.domains[&domid]
                    .devices
                    .get(t)
                    .and_then(|m| {
                        m.keys()
                            .filter_map(|k| match k {
                                RefKey::Num(n) => Some(*n),
                                _ => None,
                            })
                            .max()
                    })
                    .map_or(0, |n| n + 1);
                let script = attrs.get("script").unwrap_or("/etc/xen/scripts/vif-bridge");
                for (n, v) in [
                    ("handle", handle.to_string()),
                    ("mac", mac),
                    ("bridge", bridge.to_owned()),
                    ("script", script.to_owned()),
                    ("backend-id", bid.to_string()),
                    ("bkdom-name", h.domains[&bid].name.clone()),
                    ("state", "4".to_owned()),
                    (
                        "backend",
                        format!("/local/domain/{bid}/backend/vif/{domid}/{handle}"),
                    ),
                    ("tx-ring-ref", port.to_string()),
                    ("rx-ring-ref", (port + 1).to_string()),
                    ("event-channel", (port + 2).to_string()),
                ] {
                    listed.insert(n, v)?;
                }
                if let Some(ip) = attrs.get("ip") {
                    listed.insert("ip", ip.to_owned())?;
                }
                listed.insert("link", link.to_owned())?;
                Ok((DeviceRef::new(handle.to_string())?, listed))
            }
            Rules::Custom(c) => {
                for a in &c.attributes {
                    match (given(a, attrs), &a.default) {
                        (Some((n, v)), _) => {
                            if let Some(values) = &a.values {
                                if !values.iter().any(|x| x == v) {
                                    return Err(Error::invalid_attribute(
                                        n,
                                        format!(
                                            "'{}' is not accepted; use one of: {}",
                                            v.escape_default(),
                                            values.join(", ")
                                        ),
                                    ));
                                }
                            }
                            listed.insert(a.name.clone(), v.to_owned())?;
                        }
                        (None, Some(d)) => listed.insert(a.name.clone(), d.clone())?,
                        (None, None) => {}
                    }
                }
                let reference = match &c.ref_attribute {
                    Some(name) => DeviceRef::new(
                        c.attributes
                            .iter()
                            .find(|a| &a.name == name)
                            .and_then(|a| given(a, attrs))
                            .map_or("", |(_, v)| v),
                    )
                    .map_err(|e| match e {
                        Error::InvalidAttribute { reason, .. } => {
                            Error::invalid_attribute(name, reason)
                        }
                        e => e,
                    })?,
                    None => {
                        let next = h.domains[&domid]
                            .devices
                            .get(t)
                            .and_then(|m| {
                                m.keys()
                                    .filter_map(|k| match k {
                                        RefKey::Num(n) => Some(*n),
                                        _ => None,
                                    })
                                    .max()
                            })
                            .map_or(0, |n| n + 1);
                        DeviceRef::new(next.to_string())?
                    }
                };
                Ok((reference, listed))
            }
        }
    }
}

impl Rules<'_> {
    /// Validate an update of `dev` and return what changes, with the listed new values.
    /// Changes nothing. The core has checked that every name is updatable.
    fn update(&self, dev: &DeviceRecord, attrs: &Attributes) -> Result<Attributes> {
        let mut changes = Attributes::new();
        match self {
            Rules::Disk => {
                if let Some(uname) = attrs.get("uname") {
                    if dev.attrs.get("devtype") != Some("cdrom") {
                        return Err(Error::invalid_attribute(
                            "uname",
                            format!(
                                "disk {} is not a CD-ROM drive: only the medium of a CD-ROM drive (devtype=cdrom) can be changed in place; detach and attach the disk instead",
                                dev.reference
                            ),
                        ));
                    }
                    check_uname(uname, true)?;
                    changes.insert("uname", uname.to_owned())?;
                }
            }
            Rules::Network => {
                if let Some(link) = attrs.get("link") {
                    changes.insert("link", check_link(link)?.to_owned())?;
                }
            }
            Rules::Custom(c) => {
                for a in c.attributes.iter().filter(|a| a.updatable) {
                    if let Some((n, v)) = given(a, attrs) {
                        if let Some(values) = &a.values {
                            if !values.iter().any(|x| x == v) {
                                return Err(Error::invalid_attribute(
                                    n,
                                    format!(
                                        "'{}' is not accepted; use one of: {}",
                                        v.escape_default(),
                                        values.join(", ")
                                    ),
                                ));
                            }
                        }
                        changes.insert(a.name.clone(), v.to_owned())?;
                    }
                }
            }
        }
        Ok(changes)
    }
}

/// A disk's `uname`: `phy:DEVICE` or `file:PATH`, or empty for a CD-ROM drive without a medium.
fn check_uname(uname: &str, cdrom: bool) -> Result<()> {
    if cdrom && uname.is_empty() {
        return Ok(());
    }
    let ok = ["phy:", "file:"]
        .iter()
        .any(|p| uname.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
    if ok {
        return Ok(());
    }
    let empty = if cdrom {
        ", or empty for no medium"
    } else {
        ""
    };
    Err(Error::invalid_attribute("uname", format!("'{}' is not phy:DEVICE or file:PATH{empty}; for example file:/var/lib/xen/images/data.img or phy:/dev/vg0/data", uname.escape_default())))
}

/// A NIC's `link`: `up` or `down`.
fn check_link(link: &str) -> Result<&'static str> {
    match link {
        "up" => Ok("up"),
        "down" => Ok("down"),
        v => Err(Error::invalid_attribute(
            "link",
            format!("'{}' is not up or down", v.escape_default()),
        )),
    }
}

/// The name an attribute of a custom type was given under (its name or an alias) and its value.
/// The core has refused two names of one attribute, so at most one is set.
fn given<'a>(a: &'a CustomAttr, attrs: &'a Attributes) -> Option<(&'a str, &'a str)> {
    std::iter::once(&a.name)
        .chain(&a.aliases)
        .find_map(|n| Some((n.as_str(), attrs.get(n)?)))
}

fn parse_mac(m: &str) -> Option<String> {
    let parts: Vec<&str> = m.split(':').collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let first = u8::from_str_radix(parts[0], 16).ok()?;
    if first & 1 == 1 {
        return None; // multicast
    }
    Some(m.to_ascii_lowercase())
}

impl HostState {
    fn mac_owner(&self, mac: &str) -> Option<(String, String)> {
        self.domains.values().find_map(|d| {
            d.devices
                .get(&DeviceType::NETWORK)?
                .values()
                .find_map(|dev| {
                    (dev.attrs.get("mac") == Some(mac))
                        .then(|| (d.name.clone(), dev.reference.to_string()))
                })
        })
    }

    fn free_mac(&self, domid: u32) -> String {
        let mut n = self.next_port.wrapping_mul(2_654_435_761) ^ u64::from(domid);
        loop {
            let mac = format!(
                "00:16:3e:{:02x}:{:02x}:{:02x}",
                (n >> 16) as u8 & 0x7f,
                (n >> 8) as u8,
                n as u8
            );
            if self.mac_owner(&mac).is_none() {
                return mac;
            }
            n = n.wrapping_add(1);
        }
    }
}
