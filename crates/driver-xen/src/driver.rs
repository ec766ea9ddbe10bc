//! The [`Driver`]: the connection's type, [`XenDriver::open`] and the trait's methods, each
//! handing over to the module of its concern (`listing`, `attach`, `detach`, `events`), which
//! add their methods to [`Inner`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vdev_core::prelude::async_trait;
use vdev_core::{
    AttachOptions, Attributes, Capabilities, DetachOptions, Device, DeviceRef, DeviceType,
    DeviceTypeSchema, Domain, DomainKey, Driver, Error, EventStream, NewDevice, Result, Scope,
    ScopeSet, UpdateOptions,
};

use crate::config::{Hotplug, XenConfig};
use crate::error::XsError;
use crate::hotplug::Dom0;
use crate::xenstore::{XenStore, NO_TX};

/// An open connection to xenstored.
pub struct XenDriver {
    inner: Arc<Inner>,
    /// Background completions of removals left pending (aborted on close and drop).
    pending: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The connection's state, shared with background completions. Its methods live in the
/// modules of their concerns.
pub(crate) struct Inner {
    pub(crate) xs: Arc<XenStore>,
    pub(crate) config: XenConfig,
    closed: AtomicBool,
    /// Whether the host is Domain-0.
    pub(crate) is_dom0: bool,
    /// The connection's host (Domain-0, or the host of its xenstored), where the hotplug work
    /// and libxl's stored configuration are.
    pub(crate) dom0_host: Dom0,
    /// Whether a remote host is Domain-0, asked once when `is_dom0` was not (`hotplug=no`).
    pub(crate) remote_dom0: tokio::sync::OnceCell<bool>,
}

impl Drop for XenDriver {
    fn drop(&mut self) {
        for t in self
            .pending
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default()
        {
            t.abort();
        }
    }
}

impl std::fmt::Debug for XenDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XenDriver")
            .field("host", &self.inner.config.host.name())
            .field("endpoint", &self.inner.config.endpoint)
            .field("closed", &self.inner.closed.load(Ordering::SeqCst))
            .finish()
    }
}

/// An [`XsError`] as the core error, saying what was being done.
pub(crate) fn xs_err(what: &str) -> impl Fn(XsError) -> Error + '_ {
    move |e| e.into_core(what)
}

impl XenDriver {
    /// Connect to xenstored as `config` says (over ssh: log in, then reach the remote socket
    /// through the same connection).
    pub async fn open(config: XenConfig) -> Result<Self> {
        let xs = XenStore::connect(&config.endpoint, &config.host, config.request_timeout)
            .await
            .map_err(xs_err("connecting to xenstored"))?;
        let xs = Arc::new(xs);
        // One request proves it is a xenstored (a read: listing /local/domain costs one
        // request per 4 KiB of domain ids).
        xs.read(NO_TX, "/local/domain")
            .await
            .map_err(xs_err("reading /local/domain"))?;
        let dom0_host = Dom0::new(
            config.host.clone(),
            crate::hotplug_local::primitives_for(&config.host),
        );
        // is_local: asked at connect time where it is cheap (this machine) or needed (hotplug);
        // over ssh with hotplug=no it would cost a round trip that only a listing or an
        // attach's stored configuration needs, so it is asked then (`config_reachable`).
        let dom0 = if config.host.is_local() || config.hotplug != Hotplug::No {
            dom0_host.in_dom0().await?
        } else {
            false
        };
        if config.hotplug == Hotplug::Script && !dom0 {
            return Err(Error::InvalidUri {
                uri: format!("xen+ssh://{}/", config.host.name()),
                reason: format!(
                    "hotplug=script runs libxl's hotplug scripts, which work only in Domain-0, and {} is not Domain-0 (/proc/xen/capabilities does not say control_d); leave hotplug out (auto) or write hotplug=no",
                    config.host.name()
                ),
            });
        }
        Ok(XenDriver {
            inner: Arc::new(Inner {
                xs,
                config,
                closed: AtomicBool::new(false),
                is_dom0: dom0,
                dom0_host,
                remote_dom0: tokio::sync::OnceCell::new(),
            }),
            pending: Default::default(),
        })
    }
}

impl Inner {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::backend(crate::NAME, "the connection is closed"));
        }
        Ok(())
    }
}

/// What the Xen driver answers to an update (the core answers so itself, from the capability).
fn update_unsupported() -> Error {
    Error::Unsupported {
        driver: crate::NAME.into(),
        operation: "update".into(),
        detail: "no attribute of a Xen device can be changed in place yet (libxl changes media of HVM guests only); detach and attach again".into(),
    }
}

#[async_trait]
impl Driver for XenDriver {
    fn capabilities(&self) -> Capabilities {
        // Nothing is updatable: libxl's media change (`xl cd-insert`) exists for HVM guests
        // only, which the lab cannot run under TCG; the schema stays honest instead of half
        // implementing it.
        // Scopes: live (recorded=no) and both (recorded=yes); libxl's stored configuration
        // of a domain is never changed without the running domain.
        Capabilities {
            update: false,
            scopes: ScopeSet::LIVE.with(Scope::Both),
            ..Capabilities::ALL
        }
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        self.inner.check_open()?;
        self.inner.domains().await
    }

    async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain> {
        self.inner.check_open()?;
        self.inner.lookup_domain(key).await
    }

    async fn device_types(&self) -> Result<Vec<DeviceTypeSchema>> {
        Ok(self.inner.device_types())
    }

    async fn list_devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>> {
        self.inner.check_open()?;
        self.inner.list_devices(domain, device_type).await
    }

    async fn attach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
        options: &AttachOptions,
    ) -> Result<DeviceRef> {
        self.inner.check_open()?;
        // Whole (`run_whole`): a caller that drops this future never stops an attach between its
        // XenStore commit and its backend's bring-up (it finishes, or rolls back).
        let inner = self.inner.clone();
        let (d, t, a, o) = (
            domain.clone(),
            device_type.clone(),
            attributes.clone(),
            options.clone(),
        );
        vdev_core::run_whole(
            crate::NAME,
            async move { inner.attach(&d, &t, &a, &o).await },
        )
        .await
    }

    /// The batch's devices attached side by side (their backends' hotplug work runs in
    /// parallel), each in its own XenStore transaction as one attach; when any fails, those
    /// made are removed again (forced: they hold nothing of the guest's yet). Every entry is
    /// checked before any is made.
    async fn attach_batch(
        &self,
        domain: &Domain,
        devices: &[NewDevice],
        options: &AttachOptions,
    ) -> Result<Vec<DeviceRef>> {
        self.inner.check_open()?;
        self.inner.attach_batch(domain, devices, options).await
    }

    async fn detach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        self.inner.check_open()?;
        // Whole, as attach.
        let inner = self.inner.clone();
        let (d, t, r, o) = (
            domain.clone(),
            device_type.clone(),
            reference.clone(),
            options.clone(),
        );
        let asked = vdev_core::run_whole(
            crate::NAME,
            async move { inner.detach(&d, &t, &r, &o).await },
        );
        let Some((task, pending)) = asked.await? else {
            return Ok(());
        };
        // Pending: finished in the background while this connection lives (a later detach
        // finishes it too).
        if let Ok(mut p) = self.pending.lock() {
            p.retain(|t| !t.is_finished());
            p.push(task);
        }
        Err(pending)
    }

    async fn update(
        &self,
        _domain: &Domain,
        _device_type: &DeviceType,
        _reference: &DeviceRef,
        _attributes: &Attributes,
        _options: &UpdateOptions,
    ) -> Result<()> {
        Err(update_unsupported())
    }

    async fn events(&self) -> Result<EventStream> {
        self.inner.check_open()?;
        self.inner.events().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Ok(mut p) = self.pending.lock() {
            for t in p.drain(..) {
                t.abort();
            }
        }
        self.inner.xs.close();
        Ok(())
    }
}
