//! What the mock host does to its state: lookups, listings, attach, removal, update and the
//! pending removals that settle with time. The rules of each device type are in `rules`.

use vdev_core::{
    Attributes, DeviceEvent, DeviceRef, DeviceState, DeviceType, DeviceTypeSchema, Domain, Error,
    Result,
};

use std::collections::BTreeMap;

use crate::format::*;
use crate::rules::Rules;

impl HostState {
    /// The default host: `Domain-0` (id 0) and `demo` (id 1) with one disk and one NIC.
    pub fn default_host() -> HostState {
        HostState::new_host(None)
    }

    /// A new host: the default one, or for `like=DRIVER` the domains of that driver's profile
    /// (ids from 1, `Domain-0` is 0) without devices.
    pub fn new_host(like: Option<crate::Like>) -> HostState {
        if let Some(l) = like {
            let p = l.profile();
            let first = u32::from(p.domains.first().map(String::as_str) != Some("Domain-0"));
            let mut h = HostState {
                like: Some(l.as_str().to_owned()),
                ..HostState::new_host(None)
            };
            h.domains.clear();
            for (i, name) in p.domains.iter().enumerate() {
                let id = first + i as u32;
                h.domains.insert(
                    id,
                    DomainState {
                        id,
                        name: name.clone(),
                        devices: BTreeMap::new(),
                        guest: None,
                    },
                );
            }
            return h;
        }
        let mut h = HostState {
            like: None,
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
                    guest: None,
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
        h.attach(1, &DeviceType::DISK, &disk, Default::default(), &mut ev)
            .expect("default disk");
        let nic = Attributes::from_pairs([("mac", "00:16:3e:00:00:01"), ("bridge", "xenbr0")])
            .expect("valid");
        h.attach(1, &DeviceType::NETWORK, &nic, Default::default(), &mut ev)
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
        if let Some(l) = &self.like {
            l.parse::<crate::Like>()?;
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
        if let Some(p) = crate::like::profile_of(&self.like) {
            return p.device_type(t).map(Rules::Like);
        }
        match t.as_str() {
            "disk" => Some(Rules::Disk),
            "network" => Some(Rules::Network),
            _ => None,
        }
    }

    /// Every device type's schema.
    pub fn schemas(&self) -> Vec<DeviceTypeSchema> {
        let mut types: Vec<DeviceType> = match crate::like::profile_of(&self.like) {
            Some(p) => p
                .device_types
                .iter()
                .map(|tp| tp.schema.device_type.clone())
                .collect(),
            None => vec![DeviceType::DISK, DeviceType::NETWORK],
        };
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
        d.id.and_then(|id| self.domains.get(&id))
            .ok_or_else(|| Error::DomainNotFound {
                domain: d.name.clone(),
            })
    }

    pub(crate) fn domain_mut(&mut self, id: u32) -> Result<&mut DomainState> {
        self.domains
            .get_mut(&id)
            .ok_or_else(|| Error::DomainNotFound {
                domain: id.to_string(),
            })
    }

    pub(crate) fn as_domain(&self, id: u32) -> Domain {
        let name = self.domains.get(&id).map(|d| d.name.clone());
        Domain::new(Some(id), name.unwrap_or_default()).with_state(vdev_core::RunState::Running)
    }

    /// Resolve a `backend` attribute (a domain name or id) into an id.
    pub(crate) fn backend_id(&self, value: Option<&str>) -> Result<u32> {
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
                for dev in by_ref.values_mut() {
                    match dev.connect_due_ms {
                        Some(due) if due <= now_ms && dev.state != DeviceState::RemovalPending => {
                            dev.connect_due_ms = None;
                            dev.state = DeviceState::Connected;
                            events.push(DeviceEvent::StateChanged {
                                domain: domain.clone(),
                                device_type: t.clone(),
                                reference: dev.reference.clone(),
                                state: DeviceState::Connected,
                            });
                        }
                        Some(_) => still_due = true,
                        None => {}
                    }
                }
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

    /// Create a device. Validates everything before changing anything. `host_guest` is the
    /// host's guest knobs (for when the guest connects the device).
    pub fn attach(
        &mut self,
        domid: u32,
        t: &DeviceType,
        attrs: &Attributes,
        host_guest: crate::Guest,
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
        let initial = match rules {
            Rules::Like(tp) => tp.initial_state.clone(),
            _ => None,
        };
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
        let (state, connect_due_ms) = match initial {
            Some(first) if first != DeviceState::Connected => {
                let guest = self.domains[&domid]
                    .guest
                    .unwrap_or_default()
                    .or(host_guest);
                match guest.connect.unwrap_or(crate::Connect::Immediate) {
                    crate::Connect::Immediate => (DeviceState::Connected, None),
                    crate::Connect::Never => (first, None),
                    crate::Connect::After(d) => {
                        self.maybe_due = true;
                        (first, Some(now_ms() + d.as_millis() as u64))
                    }
                }
            }
            _ => (DeviceState::Connected, None),
        };
        self.domain_mut(domid)?
            .devices
            .entry(t.clone())
            .or_default()
            .insert(
                key,
                DeviceRecord {
                    device_type: t.clone(),
                    reference: reference.clone(),
                    state,
                    attrs: listed,
                    removal_due_ms: None,
                    connect_due_ms,
                    guest: None,
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

    /// The guest's own knobs for a device: the device's, then its domain's (the host's
    /// defaults are the caller's to add).
    pub fn guest_of(&self, domid: u32, t: &DeviceType, r: &DeviceRef) -> crate::Guest {
        let Some(d) = self.domains.get(&domid) else {
            return crate::Guest::default();
        };
        let dev = d
            .devices
            .get(t)
            .and_then(|m| m.get(&RefKey::of(r)))
            .and_then(|dev| dev.guest);
        dev.unwrap_or_default().or(d.guest.unwrap_or_default())
    }

    /// Change updatable attributes of a device in place. Validates everything before changing
    /// anything. `host_guest` is the host's guest knobs.
    pub fn update(
        &mut self,
        domid: u32,
        t: &DeviceType,
        r: &DeviceRef,
        attrs: &Attributes,
        host_guest: crate::Guest,
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
        let guest = self.guest_of(domid, t, r).or(host_guest);
        let changes = rules.update(dev, attrs, guest)?;
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
