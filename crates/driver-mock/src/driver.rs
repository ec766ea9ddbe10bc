//! The [`Driver`] implementation of the mock host.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use vdev_core::prelude::async_trait;
use vdev_core::{
    AttachOptions, Attributes, Capabilities, DetachOptions, Device, DeviceEvent, DeviceRef,
    DeviceType, DeviceTypeSchema, Domain, DomainKey, Driver, Error, EventHub, EventStream,
    NewDevice, Result, RunState, ScopeSet, UpdateOptions,
};

use crate::config::{MockConfig, Source};
use crate::control::{CallCtx, MockControl, Op, Removal};
use crate::error::MockError;
use crate::format::{now_ms, HostState};
use crate::store::Store;

/// One mock host: its state and its event channel. Shared by the driver and its control.
pub(crate) struct Host {
    store: Store,
    events: EventHub,
    is_closed: AtomicBool,
}

impl Host {
    pub(crate) async fn transact<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut HostState, &mut Vec<DeviceEvent>) -> Result<R> + Send + 'static,
    {
        if self.is_closed.load(Ordering::Acquire) {
            return Err(MockError::Closed.into());
        }
        self.store.transact(&self.events, f).await
    }

    pub(crate) async fn release_pending(&self) -> Result<usize> {
        self.transact(|st, ev| Ok(st.release_pending(ev))).await
    }
}

/// The mock driver: a simulated Xen-like host with real attach and detach.
pub struct MockDriver {
    host: Arc<Host>,
    control: MockControl,
    description: String,
    /// Whether the host's device types have updatable attributes (not those `like=xen`).
    updates: bool,
}

impl fmt::Debug for MockDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockDriver")
            .field("host", &self.description)
            .finish()
    }
}

impl MockDriver {
    /// Open a mock host as a URI's options say.
    pub fn open_blocking(config: MockConfig) -> Result<Self> {
        let (store, description, like) = match &config.source {
            Source::Default => (
                Store::Memory(Mutex::new(HostState::new_host(config.like))),
                match config.like {
                    None => "in-memory default host".to_owned(),
                    Some(l) => format!("in-memory host like {l}"),
                },
                config.like.map(|l| l.as_str().to_owned()),
            ),
            Source::File(p) => {
                let (store, like) = Store::open_file(p.clone(), config.lock_timeout, config.like)?;
                (store, format!("state file {}", p.display()), like)
            }
        };
        let updates = crate::like::profile_of(&like).is_none_or(|p| {
            p.device_types
                .iter()
                .any(|t| t.schema.attributes.iter().any(|a| a.updatable))
        });
        let host = Arc::new(Host {
            store,
            events: EventHub::new(crate::NAME),
            is_closed: AtomicBool::new(false),
        });
        let control = MockControl {
            state: Arc::new(Mutex::new(MockControl::new_state(
                config.faults,
                config.latency,
                config.guest,
            ))),
            released: Arc::new(Notify::new()),
            host: host.clone(),
        };
        Ok(MockDriver {
            host,
            control,
            description,
            updates,
        })
    }

    /// [`MockDriver::open_blocking`] on a blocking thread: opening a state file waits for its lock (at
    /// most the URI's `lock_timeout`), which must not stall an async worker.
    pub async fn open(config: MockConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || MockDriver::open_blocking(config))
            .await
            .map_err(|e| Error::backend_with(crate::NAME, "opening the mock host failed", e))?
    }

    /// The host-wide guest knobs.
    fn host_guest(&self) -> crate::Guest {
        self.control
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .guest
    }

    /// The control handle of this host.
    pub fn control(&self) -> MockControl {
        self.control.clone()
    }

    /// Run one operation: count it, apply latency and injected faults, log the outcome.
    async fn call<R, Fut>(
        &self,
        op: Op,
        ctx: CallCtx<'_>,
        body: Fut,
        log_ref: impl Fn(&R) -> Option<String>,
    ) -> Result<R>
    where
        Fut: std::future::Future<Output = Result<R>>,
    {
        let result = match self.control.enter(op, &ctx).await {
            Ok(()) => body.await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(r) => self.control.log(op, &ctx, log_ref(r).as_deref(), None),
            Err(e) => self.control.log(op, &ctx, None, Some(e)),
        }
        result
    }

    async fn detach_inner(
        &self,
        domain: &Domain,
        t: &DeviceType,
        r: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        let started = Instant::now();
        let host_guest = self
            .control
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .guest;
        let deadline = started + options.timeout;
        let (id, force) = (domid(domain)?, options.force);
        // The busy answers come first; the request is then made in the same transaction that
        // reads the knobs, so a guest that is never busy costs one transaction.
        let mut busy_left: Option<u32> = None;
        let mut backoff = Duration::from_millis(20);
        let done = loop {
            let (t2, r2) = (t.clone(), r.clone());
            let step = self
                .host
                .transact(move |st, ev| {
                    if !st.exists(id, &t2, &r2)? {
                        st.remove(id, &t2, &r2, ev)?; // answers DeviceNotFound
                    }
                    let guest = st.guest_of(id, &t2, &r2).or(host_guest);
                    let busy = busy_left.unwrap_or(guest.busy.unwrap_or(0));
                    if busy > 0 && !force {
                        return Ok(Err(busy));
                    }
                    match (force, guest.removal.unwrap_or(Removal::Immediate)) {
                        (true, _) | (false, Removal::Immediate) => {
                            st.remove(id, &t2, &r2, ev).map(|()| Ok(true))
                        }
                        (false, Removal::Refuse) => Err(Error::RemovalRefused {
                            domain: st.as_domain(id).name,
                            device_type: t2.to_string(),
                            reference: r2.to_string(),
                        }),
                        (false, Removal::Pending) => {
                            st.mark_pending(id, &t2, &r2, None, ev).map(|()| Ok(false))
                        }
                        (false, Removal::After(d)) => st
                            .mark_pending(id, &t2, &r2, Some(now_ms() + d.as_millis() as u64), ev)
                            .map(|()| Ok(false)),
                    }
                })
                .await?;
            match step {
                Ok(done) => break done,
                Err(busy) => {
                    // A busy guest: ask again with back-off, as the QEMU driver does.
                    if Instant::now() + backoff >= deadline {
                        return Err(Error::Timeout {
                            operation: format!(
                                "detach of {t} {r}: the guest was busy the whole time, and nothing was requested; detach again with a longer timeout"
                            ),
                            after: options.timeout,
                        });
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    busy_left = Some(busy - 1);
                }
            }
        };
        if done {
            return Ok(());
        }
        // Wait for the simulated guest: until the removal's due time, a release, or the timeout.
        loop {
            let released = self.control.released.notified();
            let (id, t2, r2) = (domid(domain)?, t.clone(), r.clone());
            let due = self
                .host
                .transact(move |st, _| Ok(st.removal_due(id, &t2, &r2)))
                .await?;
            let Some(due_ms) = due else { return Ok(()) }; // gone
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::RemovalPending {
                    domain: domain.name.clone(),
                    device_type: t.to_string(),
                    reference: r.to_string(),
                });
            }
            let mut wake = deadline;
            if let Some(due_ms) = due_ms {
                let in_ms = due_ms.saturating_sub(now_ms());
                wake = wake.min(now + Duration::from_millis(in_ms));
            }
            tokio::select! {
                _ = released => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }
}

#[async_trait]
impl Driver for MockDriver {
    fn capabilities(&self) -> Capabilities {
        // A mock domain has one configuration, the running one.
        Capabilities {
            scopes: ScopeSet::LIVE,
            update: self.updates,
            ..Capabilities::ALL
        }
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        let body = self.host.transact(|st, _| {
            Ok(st
                .domains
                .values()
                .map(|d| Domain::new(Some(d.id), d.name.clone()).with_state(RunState::Running))
                .collect())
        });
        self.call(Op::ListDomains, CallCtx::default(), body, |_| None)
            .await
    }

    async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain> {
        let k = key.clone();
        let body = self.host.transact(move |st, _| {
            st.domains
                .values()
                .map(|d| Domain::new(Some(d.id), d.name.clone()).with_state(RunState::Running))
                .find(|d| k.matches(d))
                .ok_or_else(|| Error::DomainNotFound {
                    domain: k.to_string(),
                })
        });
        self.call(Op::LookupDomain, CallCtx::default(), body, |_| None)
            .await
    }

    async fn device_types(&self) -> Result<Vec<DeviceTypeSchema>> {
        let body = self.host.transact(|st, _| Ok(st.schemas()));
        self.call(Op::DeviceTypes, CallCtx::default(), body, |_| None)
            .await
    }

    async fn list_devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>> {
        let (d, t) = (domain.clone(), device_type.cloned());
        let body = self.host.transact(move |st, _| st.list(&d, t.as_ref()));
        let ctx = CallCtx {
            domain: Some(domain),
            device_type,
            reference: None,
        };
        self.call(Op::ListDevices, ctx, body, |_| None).await
    }

    async fn attach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
        _options: &AttachOptions,
    ) -> Result<DeviceRef> {
        let (id, t, a) = (domid(domain)?, device_type.clone(), attributes.clone());
        let guest = self.host_guest();
        let body = self
            .host
            .transact(move |st, ev| st.attach(id, &t, &a, guest, ev));
        let ctx = CallCtx {
            domain: Some(domain),
            device_type: Some(device_type),
            reference: None,
        };
        self.call(Op::Attach, ctx, body, |r: &DeviceRef| Some(r.to_string()))
            .await
    }

    /// One state change for the whole batch (one state-file write): every device is created,
    /// or, when one is refused, none. Latency and injected faults apply to each device as to
    /// one attach; an injected fault fails its entry, so the batch.
    async fn attach_batch(
        &self,
        domain: &Domain,
        devices: &[NewDevice],
        _options: &AttachOptions,
    ) -> Result<Vec<DeviceRef>> {
        let id = domid(domain)?;
        let in_batch = |index: usize, d: &NewDevice, e: Error| Error::InBatch {
            index,
            entry: d.to_string(),
            error: Box::new(e),
        };
        for (i, d) in devices.iter().enumerate() {
            let ctx = CallCtx {
                domain: Some(domain),
                device_type: Some(&d.device_type),
                reference: None,
            };
            if let Err(e) = self.control.enter(Op::Attach, &ctx).await {
                self.control.log(Op::Attach, &ctx, None, Some(&e));
                return Err(in_batch(i, d, e));
            }
        }
        let batch = devices.to_vec();
        let guest = self.host_guest();
        let result = self
            .host
            .transact(move |st, ev| {
                let (before, seen) = (st.clone(), ev.len());
                let mut refs = Vec::with_capacity(batch.len());
                for (i, d) in batch.iter().enumerate() {
                    match st.attach(id, &d.device_type, &d.attributes, guest, ev) {
                        Ok(r) => refs.push(r),
                        Err(e) => {
                            *st = before;
                            ev.truncate(seen);
                            return Err(in_batch(i, d, e));
                        }
                    }
                }
                Ok(refs)
            })
            .await;
        for (i, d) in devices.iter().enumerate() {
            let ctx = CallCtx {
                domain: Some(domain),
                device_type: Some(&d.device_type),
                reference: None,
            };
            match &result {
                Ok(refs) => self
                    .control
                    .log(Op::Attach, &ctx, Some(refs[i].as_str()), None),
                Err(Error::InBatch { index, error, .. }) if *index == i => {
                    self.control.log(Op::Attach, &ctx, None, Some(error))
                }
                Err(_) => {}
            }
        }
        result
    }

    async fn detach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        let body = self.detach_inner(domain, device_type, reference, options);
        let ctx = CallCtx {
            domain: Some(domain),
            device_type: Some(device_type),
            reference: Some(reference),
        };
        self.call(Op::Detach, ctx, body, |_| None).await
    }

    async fn update(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        attributes: &Attributes,
        _options: &UpdateOptions,
    ) -> Result<()> {
        let (id, t, r, a) = (
            domid(domain)?,
            device_type.clone(),
            reference.clone(),
            attributes.clone(),
        );
        let guest = self
            .control
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .guest;
        let body = self
            .host
            .transact(move |st, ev| st.update(id, &t, &r, &a, guest, ev));
        let ctx = CallCtx {
            domain: Some(domain),
            device_type: Some(device_type),
            reference: Some(reference),
        };
        self.call(Op::Update, ctx, body, |_| None).await
    }

    async fn events(&self) -> Result<EventStream> {
        let body = async {
            if self.host.is_closed.load(Ordering::Acquire) {
                return Err(MockError::Closed.into());
            }
            match &self.host.store {
                Store::Memory(_) => Ok(self.host.events.subscribe()),
                Store::File(path, _) => {
                    crate::events::file_events(path.clone(), self.host.events.closed_signal())
                }
            }
        };
        self.call(Op::Events, CallCtx::default(), body, |_| None)
            .await
    }

    async fn close(&self) -> Result<()> {
        self.host.is_closed.store(true, Ordering::Release);
        self.host.events.close();
        Ok(())
    }
}

/// The id of a mock domain (every mock domain has one): a domain without one is not the mock's.
fn domid(d: &Domain) -> Result<u32> {
    d.id.ok_or_else(|| Error::DomainNotFound {
        domain: d.name.clone(),
    })
}
