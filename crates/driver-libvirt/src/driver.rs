//! The driver type, its `open`, and the `Driver` implementation (thin: the operations live in
//! `listing`, `attach` and `detach`).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;
use vdev_core::prelude::async_trait;
use vdev_core::{
    AttachOptions, Attributes, Capabilities, DetachOptions, Device, DeviceRef, DeviceType,
    DeviceTypeSchema, Domain, DomainKey, Driver, Error, EventHub, EventStream, Result, RunState,
    Scope, UpdateOptions,
};

use crate::config::LibvirtConfig;
use crate::error::{backend, Context, LibvirtError};
use crate::events::{self, RawEvent, RawKind};
use crate::schema::{self, DomainCaps};
use crate::session::{self, Health, Seen, Session};
use crate::xml::Kind;

/// A connection to libvirt (`virConnectPtr`), with the event callbacks it registered.
pub struct LibvirtDriver {
    pub(crate) inner: Arc<Inner>,
}

/// What the operations share.
pub(crate) struct Inner {
    pub session: RwLock<Session>,
    pub health: Arc<Health>,
    /// Renewals of the connection, one at a time.
    pub renewing: Mutex<()>,
    /// Whether the device events are registered (see [`Inner::ensure_events`]).
    pub events_on: AtomicBool,
    /// Domains looked up, by UUID: a handle is a local object, and asking for it again is a
    /// round trip. Emptied when the connection is renewed.
    pub handles: Mutex<HashMap<String, virt::domain::Domain>>,
    /// What a watcher of events has seen, for the differences after a renewal (`None` until
    /// events are asked for).
    pub seen: Mutex<Option<Seen>>,
    pub config: LibvirtConfig,
    pub hub: EventHub,
    pub raw: broadcast::Sender<Arc<RawEvent>>,
    pub closed: AtomicBool,
    /// The type of every alias seen, for events whose alias does not say it.
    pub kinds: Mutex<HashMap<String, Kind>>,
    /// Attaches of this connection, one at a time: the free target and unit are chosen from
    /// the XML read just before.
    pub attach_lock: tokio::sync::Mutex<()>,
    /// Changes of vdev's metadata by this connection, one at a time.
    pub metadata_lock: tokio::sync::Mutex<()>,
    pub schemas: tokio::sync::OnceCell<Vec<DeviceTypeSchema>>,
}

impl fmt::Debug for LibvirtDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibvirtDriver")
            .field("uri", &self.inner.config.uri)
            .field("readonly", &self.inner.config.readonly)
            .finish()
    }
}

impl Inner {
    /// Run blocking libvirt calls off the async executor (on the caller's thread for a single
    /// caller, see [`Inner::call_raw`]), on a connection opened again first if libvirt closed it.
    pub(crate) async fn call<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        self.call_raw(move |inner| {
            inner.renew_if_broken()?;
            match f(inner) {
                Err(Error::Backend {
                    driver,
                    message,
                    source,
                }) if session::lost(&inner.conn()) => {
                    inner.health.broken.store(true, Ordering::SeqCst);
                    inner.health.wake.notify_one();
                    Err(Error::Backend {
                        driver,
                        message: format!(
                            "{message}: the connection to libvirt broke before libvirt answered (whether a change was made, a listing tells); it is opened again at the next call"
                        ),
                        source,
                    })
                }
                r => r,
            }
        })
        .await
    }

    /// Run blocking calls off the async executor, as they are: on one of the runtime's blocking
    /// threads, or on the caller's thread when the program said it is a single caller
    /// ([`LibvirtConfig::single_caller`]).
    pub(crate) async fn call_raw<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::backend(
                crate::NAME,
                "the connection is closed; open a new one",
            ));
        }
        if self.config.single_caller {
            // The program makes one call at a time and its runtime has nothing else to run.
            // A panic is an error here too, as from a blocking thread.
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)))
                .map_err(|_| Error::backend(crate::NAME, "a libvirt call panicked"))?;
        }
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| Error::backend_with(crate::NAME, "a libvirt call panicked", e))?
    }

    /// The libvirt domain `d` names (by UUID where it has one).
    pub(crate) fn lookup(&self, d: &Domain, ctx: &Context) -> Result<virt::domain::Domain> {
        if let Some(h) = d
            .uuid
            .as_ref()
            .and_then(|u| self.handles.lock().ok()?.get(u).cloned())
        {
            return Ok(h);
        }
        let conn = self.conn();
        let r = match (&d.uuid, d.id) {
            (Some(u), _) => conn.lookup_domain_by_uuid_string(u),
            (None, Some(id)) => conn.lookup_domain_by_id(id),
            (None, None) => conn.lookup_domain_by_name(&d.name),
        };
        let h = r.map_err(|e| ctx.map(e.into()))?;
        if let Some(u) = &d.uuid {
            self.keep_handle(u, &h);
        }
        Ok(h)
    }

    /// The schemas, from libvirt's domain capabilities (asked once per connection, when first
    /// needed: the core's checks use [`schema::schemas`] of no capabilities, which names the
    /// same attributes).
    pub(crate) async fn schemas(self: &Arc<Self>) -> Result<Vec<DeviceTypeSchema>> {
        let inner = Arc::clone(self);
        self.schemas
            .get_or_try_init(|| async move {
                let caps = inner
                    .call(|inner| {
                        Ok(inner
                            .conn()
                            .domain_capabilities(None, None, None, None, 0)
                            .map(|x| schema::parse_caps(&x))
                            .unwrap_or_else(|e| {
                                tracing::debug!(error = %e, "no domain capabilities: the schema names no sets");
                                DomainCaps::default()
                            }))
                    })
                    .await?;
                Ok(schema::schemas(&caps))
            })
            .await
            .cloned()
    }

    /// Keep a domain's handle for the next operations on it (a bounded number of them).
    pub(crate) fn keep_handle(&self, uuid: &str, h: &virt::domain::Domain) {
        if let Ok(mut m) = self.handles.lock() {
            if m.len() >= 256 {
                m.clear();
            }
            m.insert(uuid.to_owned(), h.clone());
        }
    }

    pub(crate) fn remember(&self, alias: &str, kind: Kind) {
        if let Ok(mut k) = self.kinds.lock() {
            k.insert(alias.to_owned(), kind);
        }
    }

    pub(crate) fn kind_of(&self, alias: &str) -> Option<Kind> {
        self.kinds
            .lock()
            .ok()
            .and_then(|k| k.get(alias).copied())
            .or_else(|| events::kind_of_alias(alias))
    }
}

/// A vdev domain from a libvirt one, with its run state (a round trip to libvirtd).
pub(crate) fn to_domain(d: &virt::domain::Domain) -> std::result::Result<Domain, LibvirtError> {
    use virt::domain::DomainState as S;
    use virt::enumutil::Enum;
    let domain = identity(d)?;
    let (state, _) = d.state()?;
    let state = match state {
        Enum::Known(S::Running) => RunState::Running,
        Enum::Known(S::Blocked) => RunState::Blocked,
        Enum::Known(S::Paused) => RunState::Paused,
        Enum::Known(S::Shutdown) => RunState::ShuttingDown,
        Enum::Known(S::Shutoff) => RunState::ShutOff,
        Enum::Known(S::Crashed) => RunState::Crashed,
        Enum::Known(S::PMSuspended) => RunState::Suspended,
        _ => RunState::Unknown,
    };
    Ok(domain.with_state(state))
}

/// A vdev domain from a libvirt one without its run state: the id, name and UUID come with
/// libvirt's handle, no round trip.
fn identity(d: &virt::domain::Domain) -> std::result::Result<Domain, LibvirtError> {
    Ok(Domain::new(d.id(), d.name()?).with_uuid(d.uuid_string()?))
}

/// libvirt's `VIR_DOMAIN_AFFECT_*` flags for a scope; `None` is libvirt's CURRENT: the running
/// domain when it runs, else its stored configuration.
pub(crate) fn affect(scope: Option<Scope>, running: bool) -> u32 {
    match scope {
        Some(Scope::Live) => virt_sys::VIR_DOMAIN_AFFECT_LIVE,
        Some(Scope::Persistent) => virt_sys::VIR_DOMAIN_AFFECT_CONFIG,
        Some(Scope::Both) => virt_sys::VIR_DOMAIN_AFFECT_LIVE | virt_sys::VIR_DOMAIN_AFFECT_CONFIG,
        None if running => virt_sys::VIR_DOMAIN_AFFECT_LIVE,
        None => virt_sys::VIR_DOMAIN_AFFECT_CONFIG,
    }
}

impl LibvirtDriver {
    /// Open libvirt at `config.uri` (read-only when asked), register the device events, and
    /// start the task that turns them into vdev events.
    pub async fn open(config: LibvirtConfig) -> Result<Self> {
        events::quiet();
        let (raw, _) = broadcast::channel(1024);
        let health = Arc::new(Health::default());
        let (c, tx, h) = (config.clone(), raw.clone(), Arc::clone(&health));
        let session = if c.single_caller {
            session::open(&c, &tx, &h, false)?
        } else {
            tokio::task::spawn_blocking(move || session::open(&c, &tx, &h, false))
                .await
                .map_err(|e| Error::backend_with(crate::NAME, "opening libvirt panicked", e))??
        };
        let inner = Arc::new(Inner {
            session: RwLock::new(session),
            health: Arc::clone(&health),
            renewing: Mutex::new(()),
            events_on: AtomicBool::new(false),
            handles: Mutex::new(HashMap::new()),
            seen: Mutex::new(None),
            config,
            hub: EventHub::new(crate::NAME),
            raw,
            closed: AtomicBool::new(false),
            kinds: Mutex::new(HashMap::new()),
            attach_lock: tokio::sync::Mutex::new(()),
            metadata_lock: tokio::sync::Mutex::new(()),
            schemas: tokio::sync::OnceCell::new(),
        });
        tokio::spawn(translate(Arc::downgrade(&inner), inner.raw.subscribe()));
        tokio::spawn(session::keep(Arc::downgrade(&inner), health));
        Ok(LibvirtDriver { inner })
    }

    /// Look a domain up, with its run state when `state`.
    async fn find(&self, key: &DomainKey, state: bool) -> Result<Domain> {
        let key = key.clone();
        self.inner
            .call(move |inner| {
                let ctx = Context::new("look up the domain", &key.to_string());
                let conn = inner.conn();
                let d = match &key {
                    DomainKey::Id(id) => conn.lookup_domain_by_id(*id),
                    DomainKey::Uuid(u) => conn.lookup_domain_by_uuid_string(u),
                    DomainKey::Name(n) => conn.lookup_domain_by_name(n),
                }
                .map_err(|e| ctx.map(e.into()))?;
                let domain = if state { to_domain(&d) } else { identity(&d) };
                let domain = domain.map_err(|e| ctx.map(e))?;
                if let Some(u) = &domain.uuid {
                    inner.keep_handle(u, &d);
                }
                Ok(domain)
            })
            .await
    }
}

/// Turn libvirt's events into vdev's, for as long as the connection lives.
async fn translate(inner: std::sync::Weak<Inner>, mut rx: broadcast::Receiver<Arc<RawEvent>>) {
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(lost = n, "libvirt events were lost");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut kind = inner.kind_of(&ev.alias);
        if kind.is_none() && ev.kind == RawKind::Added {
            kind = crate::listing::kind_in_live_xml(&inner, &ev.domain, &ev.alias).await;
        }
        let Some(kind) = kind else {
            continue;
        };
        inner.remember(&ev.alias, kind);
        if ev.kind == RawKind::Removed && !inner.config.readonly {
            crate::detach::record(
                &inner,
                &ev.domain,
                kind,
                &ev.alias,
                crate::detach::Mark::Gone,
            )
            .await;
        }
        if let (Some(uuid), Ok(mut seen)) = (&ev.domain.uuid, inner.seen.lock()) {
            if let Some(seen) = seen.as_mut() {
                let entry = seen
                    .entry(uuid.clone())
                    .or_insert_with(|| (ev.domain.clone(), Default::default()));
                match ev.kind {
                    RawKind::Added => {
                        entry.1.insert((kind, ev.alias.clone()));
                    }
                    RawKind::Removed => {
                        entry.1.remove(&(kind, ev.alias.clone()));
                    }
                    _ => {}
                }
            }
        }
        if let Some(e) = events::device_event(&ev, kind) {
            inner.hub.send(e);
        }
    }
}

#[async_trait]
impl Driver for LibvirtDriver {
    fn capabilities(&self) -> Capabilities {
        // libvirt has no forced removal: a detach waits for the guest, or is pending.
        Capabilities {
            force_detach: false,
            ..Capabilities::ALL
        }
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        self.inner
            .call(|inner| {
                let all = inner
                    .conn()
                    .list_all_domains(0)
                    .map_err(|e| backend("listing the domains failed", e.into()))?;
                let mut v = Vec::with_capacity(all.len());
                for d in &all {
                    match to_domain(d) {
                        Ok(d) => v.push(d),
                        // Gone between the listing and the question: not a domain any more.
                        Err(e) if e.is_no_domain() => {}
                        Err(e) => return Err(backend("reading a domain failed", e)),
                    }
                }
                v.sort_by(|a, b| {
                    (a.id.is_none(), a.id, &a.name).cmp(&(b.id.is_none(), b.id, &b.name))
                });
                Ok(v)
            })
            .await
    }

    async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain> {
        self.find(key, true).await
    }

    /// The lookup without `virDomainGetState`: the id, name and UUID come with libvirt's
    /// handle, the state would be one more round trip to libvirtd that no device operation
    /// reads (they take "running" from the domain's XML).
    async fn resolve_domain(&self, key: &DomainKey) -> Result<Domain> {
        self.find(key, false).await
    }

    async fn device_types(&self) -> Result<Vec<DeviceTypeSchema>> {
        self.inner.schemas().await
    }

    /// The same types, names and rules without asking libvirt's domain capabilities, which
    /// only the descriptions name (a round trip and work in libvirtd that a one-shot command
    /// would otherwise wait for); the full schemas once they were asked.
    async fn device_types_for_checks(&self) -> Result<Vec<DeviceTypeSchema>> {
        match self.inner.schemas.get() {
            Some(full) => Ok(full.clone()),
            None => Ok(schema::schemas(&DomainCaps::default())),
        }
    }

    async fn list_devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>> {
        crate::listing::list(&self.inner, domain, device_type).await
    }

    async fn attach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
        options: &AttachOptions,
    ) -> Result<DeviceRef> {
        // A bus the caller names is checked against libvirt's domain capabilities first (a
        // round trip, once per connection). The default bus is checked only if libvirt refuses
        // the attach, so that a one-shot attach does not wait for the capabilities.
        let default_bus = device_type == &DeviceType::DISK && attributes.get("bus").is_none();
        let unchecked = default_bus && self.inner.schemas.get().is_none();
        let schemas = if default_bus {
            self.device_types_for_checks().await?
        } else {
            self.device_types().await?
        };
        let r = crate::attach::attach(
            &self.inner,
            &schemas,
            domain,
            device_type,
            attributes,
            options.scope,
        )
        .await;
        match r {
            Err(e) if unchecked => match self.device_types().await {
                Ok(full) => crate::attach::check_bus(&full, crate::attach::DEFAULT_BUS).and(Err(e)),
                Err(_) => Err(e),
            },
            r => r,
        }
    }

    async fn detach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        crate::detach::detach(&self.inner, domain, device_type, reference, options).await
    }

    async fn update(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        attributes: &Attributes,
        options: &UpdateOptions,
    ) -> Result<()> {
        crate::attach::update(
            &self.inner,
            domain,
            device_type,
            reference,
            attributes,
            options.scope,
        )
        .await
    }

    async fn events(&self) -> Result<EventStream> {
        let stream = self.inner.hub.subscribe();
        self.inner.call(|inner| inner.ensure_events()).await?;
        let watched = self.inner.seen.lock().expect("not poisoned").is_some();
        if !watched {
            // What is there now, for the differences after libvirtd comes back.
            let seen = self
                .inner
                .call(|inner| session::survey(&inner.conn()))
                .await?;
            let mut slot = self.inner.seen.lock().expect("not poisoned");
            if slot.is_none() {
                *slot = Some(seen);
            }
        }
        Ok(stream)
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.hub.close();
        self.inner.health.wake.notify_one();
        let inner = Arc::clone(&self.inner);
        let stop = move || {
            inner
                .session
                .write()
                .expect("not poisoned")
                .stop_listening();
        };
        if self.inner.config.single_caller {
            stop();
        } else {
            let _ = tokio::task::spawn_blocking(stop).await;
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(s) = self.session.get_mut() {
            s.stop_listening();
        }
    }
}
