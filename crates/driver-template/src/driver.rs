//! The [`Driver`] implementation: a host kept in this process, shared by every connection that
//! names it, with one domain (`vm1`) that takes disks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use vdev_core::prelude::async_trait;
use vdev_core::{
    AttachOptions, AttributeSpec, Attributes, Capabilities, DetachOptions, Device, DeviceEvent,
    DeviceRef, DeviceState, DeviceType, DeviceTypeSchema, Domain, DomainKey, Driver, Error,
    EventHub, EventStream, Result, RunState, ScopeSet, UpdateOptions,
};

use crate::config::TemplateConfig;
use crate::error::TemplateError;

/// The one domain of every template host: id, name, UUID.
const VM: (u32, &str, &str) = (1, "vm1", "6b2f3c1e-0d4a-4e5b-9c8d-7a6f5e4d3c2b");

/// A template host: its devices, and the event hubs of the connections open to it.
#[derive(Default)]
struct Host {
    state: Mutex<State>,
    hubs: Mutex<Vec<EventHub>>,
}

#[derive(Default)]
struct State {
    next: u64,
    /// (type, ref) → the attributes as listed.
    devices: BTreeMap<(DeviceType, DeviceRef), Attributes>,
}

impl std::fmt::Debug for TemplateDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TemplateDriver(template:///{})", self.name)
    }
}

/// The hosts of this process, by name.
fn host(name: &str) -> Arc<Host> {
    static HOSTS: OnceLock<Mutex<BTreeMap<String, Arc<Host>>>> = OnceLock::new();
    let hosts = HOSTS.get_or_init(Default::default);
    let mut hosts = hosts.lock().unwrap_or_else(|p| p.into_inner());
    hosts.entry(name.to_owned()).or_default().clone()
}

/// A connection to a template host.
pub struct TemplateDriver {
    name: String,
    host: Arc<Host>,
    events: EventHub,
    closed: AtomicBool,
}

impl TemplateDriver {
    /// Open a connection to the host the config names (made on first use).
    pub async fn open(config: TemplateConfig) -> Result<Self> {
        let host = host(&config.host);
        let events = EventHub::new(crate::NAME);
        host.hubs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(events.clone());
        Ok(TemplateDriver {
            name: config.host,
            host,
            events,
            closed: AtomicBool::new(false),
        })
    }

    fn check_open(&self) -> Result<()> {
        match self.closed.load(Ordering::Acquire) {
            true => Err(TemplateError::Closed.into()),
            false => Ok(()),
        }
    }

    /// The host's state, unless this connection is closed.
    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.check_open()?;
        Ok(self.host.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn vm() -> Domain {
        let vm = Domain::new(Some(VM.0), VM.1).with_uuid(VM.2);
        vm.with_state(RunState::Running)
    }

    fn check_domain(domain: &Domain) -> Result<()> {
        match domain.name == VM.1 {
            true => Ok(()),
            false => Err(TemplateError::NoDomain(domain.name.clone()).into()),
        }
    }

    /// Send an event to every connection open to this host.
    fn send(&self, event: DeviceEvent) {
        let mut hubs = self.host.hubs.lock().unwrap_or_else(|p| p.into_inner());
        hubs.retain(|h| !h.is_closed());
        for h in hubs.iter() {
            h.send(event.clone());
        }
    }
}

fn schemas() -> Vec<DeviceTypeSchema> {
    vec![DeviceTypeSchema {
        device_type: DeviceType::DISK,
        description: "a disk image".into(),
        attributes: vec![
            AttributeSpec::required("source", "the image's absolute path", "/img/data.raw"),
            AttributeSpec::optional("readonly", "on or off (default off)", "on").updatable(),
        ],
        passthrough_prefixes: vec![],
        identity: vec!["source".into()],
        reference_attribute: None,
    }]
}

/// The attributes a new disk is listed with: the given ones checked, defaults filled in.
fn listed(given: &Attributes) -> Result<Attributes> {
    let source = given.get("source").unwrap_or_default().to_owned();
    if !source.starts_with('/') {
        let why = "give the image's absolute path, /img/a.raw";
        return Err(Error::invalid_attribute("source", why));
    }
    let readonly = readonly(given.get("readonly").unwrap_or("off"))?;
    Attributes::from_pairs([("source", source), ("readonly", readonly.to_owned())])
}

fn readonly(v: &str) -> Result<&'static str> {
    match vdev_core::parse_bool(v) {
        Some(on) => Ok(if on { "on" } else { "off" }),
        None => {
            let why = format!("'{v}' is not {}", vdev_core::BOOL_SPELLINGS);
            Err(Error::invalid_attribute("readonly", why))
        }
    }
}

#[async_trait]
impl Driver for TemplateDriver {
    fn capabilities(&self) -> Capabilities {
        // One configuration per domain: only the live scope.
        Capabilities {
            scopes: ScopeSet::LIVE,
            ..Capabilities::ALL
        }
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        self.check_open()?;
        Ok(vec![Self::vm()])
    }

    async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain> {
        self.check_open()?;
        let vm = Self::vm();
        match key.matches(&vm) {
            true => Ok(vm),
            false => Err(TemplateError::NoDomain(key.to_string()).into()),
        }
    }

    async fn device_types(&self) -> Result<Vec<DeviceTypeSchema>> {
        Ok(schemas())
    }

    async fn list_devices(&self, domain: &Domain, t: Option<&DeviceType>) -> Result<Vec<Device>> {
        Self::check_domain(domain)?;
        let st = self.state()?;
        let wanted = st
            .devices
            .iter()
            .filter(|((dt, _), _)| t.is_none_or(|t| t == dt));
        Ok(wanted
            .map(|((dt, r), a)| Device {
                device_type: dt.clone(),
                reference: r.clone(),
                state: DeviceState::Connected,
                attributes: a.clone(),
            })
            .collect())
    }

    async fn attach(
        &self,
        domain: &Domain,
        t: &DeviceType,
        attributes: &Attributes,
        _options: &AttachOptions,
    ) -> Result<DeviceRef> {
        Self::check_domain(domain)?;
        // Check everything before changing anything: a refused attach leaves no trace.
        let attrs = listed(attributes)?;
        let mut st = self.state()?;
        let source = attrs.get("source").unwrap_or_default().to_owned();
        if st
            .devices
            .values()
            .any(|a| a.get("source") == Some(&source))
        {
            let taken = TemplateError::Taken(domain.name.clone(), t.to_string(), source);
            return Err(taken.into());
        }
        st.next += 1;
        let r = DeviceRef::new(format!("disk-{}", st.next))?;
        st.devices.insert((t.clone(), r.clone()), attrs);
        drop(st);
        let (domain, device_type, reference) = (domain.clone(), t.clone(), r.clone());
        self.send(DeviceEvent::Added {
            domain,
            device_type,
            reference,
        });
        Ok(r)
    }

    async fn detach(
        &self,
        domain: &Domain,
        t: &DeviceType,
        r: &DeviceRef,
        _: &DetachOptions,
    ) -> Result<()> {
        Self::check_domain(domain)?;
        // No guest to ask: the device goes at once, so detach never waits or stays pending.
        let gone = self.state()?.devices.remove(&(t.clone(), r.clone()));
        if gone.is_none() {
            return Err(not_found(domain, t, r));
        }
        self.send(DeviceEvent::Removed {
            domain: domain.clone(),
            device_type: t.clone(),
            reference: r.clone(),
        });
        Ok(())
    }

    async fn update(
        &self,
        domain: &Domain,
        t: &DeviceType,
        r: &DeviceRef,
        attributes: &Attributes,
        _options: &UpdateOptions,
    ) -> Result<()> {
        Self::check_domain(domain)?;
        // The core lets through only `readonly`, the one updatable attribute.
        let new = readonly(attributes.get("readonly").unwrap_or_default())?;
        let mut st = self.state()?;
        let Some(a) = st.devices.get_mut(&(t.clone(), r.clone())) else {
            return Err(not_found(domain, t, r));
        };
        a.insert("readonly", new)?;
        drop(st);
        let changed = Attributes::from_pairs([("readonly", new)])?;
        let (domain, device_type, reference) = (domain.clone(), t.clone(), r.clone());
        self.send(DeviceEvent::Updated {
            domain,
            device_type,
            reference,
            attributes: changed,
        });
        Ok(())
    }

    async fn events(&self) -> Result<EventStream> {
        self.check_open()?;
        Ok(self.events.subscribe())
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.events.close();
        Ok(())
    }
}

fn not_found(domain: &Domain, t: &DeviceType, r: &DeviceRef) -> Error {
    TemplateError::NoDevice(domain.name.clone(), t.to_string(), r.to_string()).into()
}
