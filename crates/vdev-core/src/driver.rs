//! The contract between the core and a hypervisor driver.

use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::attributes::Attributes;
use crate::domain::{Domain, DomainKey};
use crate::error::Result;
use crate::options::{AttachOptions, DetachOptions, ScopeSet, UpdateOptions};
use crate::types::{Device, DeviceEvent, DeviceRef, DeviceType, DeviceTypeSchema};

/// A stream of device events. It ends when the connection is closed. An `Err` item reports that
/// events were lost (the consumer was too slow, or the backend's event channel broke); the
/// stream goes on after it, and the consumer should list devices again to resynchronise.
pub type EventStream = BoxStream<'static, Result<DeviceEvent>>;

/// What a driver can do. The core checks these before it calls the driver and answers
/// [`crate::Error::Unsupported`] itself, so a driver never sees a call it declared unsupported.
///
/// Build one from [`Capabilities::ALL`] or [`Capabilities::NONE`] with struct update syntax:
/// `Capabilities { events: false, ..Capabilities::ALL }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capabilities {
    /// [`Driver::list_domains`] works.
    pub list_domains: bool,
    /// [`Driver::list_devices`] works.
    pub list_devices: bool,
    /// [`Driver::attach`] works.
    pub attach: bool,
    /// [`Driver::detach`] works.
    pub detach: bool,
    /// [`Driver::detach`] honours [`DetachOptions::force`].
    pub force_detach: bool,
    /// [`Driver::events`] works.
    pub events: bool,
    /// [`Driver::update`] changes something: some device type has an
    /// [`crate::AttributeSpec::updatable`] attribute.
    pub update: bool,
    /// The [`crate::Scope`]s that attach, detach and update may be given explicitly (an
    /// operation given none gets the driver's default, always allowed).
    pub scopes: ScopeSet,
}

impl Capabilities {
    /// Everything.
    pub const ALL: Capabilities = Capabilities {
        list_domains: true,
        list_devices: true,
        attach: true,
        detach: true,
        force_detach: true,
        events: true,
        update: true,
        scopes: ScopeSet::ALL,
    };
    /// Nothing.
    pub const NONE: Capabilities = Capabilities {
        list_domains: false,
        list_devices: false,
        attach: false,
        detach: false,
        force_detach: false,
        events: false,
        update: false,
        scopes: ScopeSet::NONE,
    };
}

/// An open connection to one hypervisor, as a driver implements it.
///
/// Applications do not call this trait: they use [`crate::Connection`], which checks read-only
/// mode and [`Capabilities`], validates attributes against [`Driver::device_types`], and adds
/// context to errors before and after calling the driver. Every method is required except
/// [`Driver::attach_batch`], whose default is correct for every driver (it loops over
/// [`Driver::attach`] and rolls back), only slower than a driver's own.
///
/// # Contract
/// - The trait is object-safe; the core holds a driver as `Box<dyn Driver>`.
/// - Methods may be called concurrently from many tasks; a driver serialises what its hypervisor
///   needs serialised.
/// - Attribute names and values handed to the driver are already validated by the core (see
///   [`crate::attributes`]); the driver owns any interpretation or conversion of values.
/// - Every failure is an [`crate::Error`] whose variant is the condition (`DeviceNotFound`,
///   `DeviceExists`, ...), with the backend's own error as the source of `Backend`.
/// - A failed operation leaves the hypervisor as it was: half-done work is rolled back.
/// - `Debug` shows what the driver is connected to, never secrets.
#[async_trait]
pub trait Driver: Send + Sync + fmt::Debug {
    /// What this connection supports.
    ///
    /// # Behavior
    /// - Constant for the life of the connection; the core reads it once, when it opens.
    fn capabilities(&self) -> Capabilities;

    /// All domains on the host.
    ///
    /// # Behavior
    /// - Returns every domain the connection can see, in a stable order (by id).
    /// - A domain's id does not change while the connection is open.
    async fn list_domains(&self) -> Result<Vec<Domain>>;

    /// One domain, by id or name.
    ///
    /// # Behavior
    /// - Returns [`crate::Error::DomainNotFound`] when no domain matches.
    /// - Never falls back from id to name: the core does that.
    async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain>;

    /// One domain, by id or name, for an operation on its devices: the identity (id, name,
    /// UUID) [`Driver::lookup_domain`] gives, where the run state may be
    /// [`crate::RunState::Unknown`].
    ///
    /// # Behavior
    /// - Returns [`crate::Error::DomainNotFound`] when no domain matches; never falls back from
    ///   id to name, as `lookup_domain`.
    /// - The core calls it for [`crate::Connection::resolve_domain`], which the device
    ///   operations of the `vdev` command, of Python (given a domain's name or id) and of
    ///   `apply` use, so that a one-shot command does not pay for a state nobody reads. No
    ///   device operation may depend on the state it carries; events of a change made on such a
    ///   domain may carry it as it is.
    /// - The default answers [`Driver::lookup_domain`]. A driver whose state costs a round trip
    ///   more than the lookup overrides it; the conformance kit checks that the two agree on the
    ///   identity.
    async fn resolve_domain(&self, key: &DomainKey) -> Result<Domain> {
        self.lookup_domain(key).await
    }

    /// The device types this driver supports, with the attributes each accepts.
    ///
    /// # Behavior
    /// - The core calls it once per connection and caches the answer; it uses it to refuse
    ///   unknown device types, unknown attribute names, two names of one attribute (an
    ///   [`crate::AttributeSpec`]'s name and an alias) and missing required attributes before
    ///   [`Driver::attach`] is called ([`DeviceTypeSchema::check_names`]).
    async fn device_types(&self) -> Result<Vec<DeviceTypeSchema>>;

    /// The device types as the core's checks need them: the same types, attribute names,
    /// aliases, flags (required, updatable, listed, boolean, case), pass-through prefixes and
    /// identity as [`Driver::device_types`], where only descriptions and examples may say less.
    ///
    /// # Behavior
    /// - The core calls it instead of [`Driver::device_types`] for its checks of a call when the
    ///   full schemas are not cached yet, so that a one-shot command does not pay for what only
    ///   a description needs (libvirt's domain capabilities: a round trip and work in libvirtd).
    /// - The default answers [`Driver::device_types`]. A driver overriding it tests that the two
    ///   agree on everything but descriptions and examples.
    async fn device_types_for_checks(&self) -> Result<Vec<DeviceTypeSchema>> {
        self.device_types().await
    }

    /// The devices of `domain`, of one type or of every type.
    ///
    /// # Behavior
    /// - Reads the hypervisor's real state, including devices vdev did not create.
    /// - Devices whose removal is pending are listed with [`crate::DeviceState::RemovalPending`].
    /// - Order: by device type, then by reference as the driver orders them (stable between calls).
    /// - Returns [`crate::Error::DomainNotFound`] when the domain has gone.
    async fn list_devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>>;

    /// Create a device in `domain` from `attributes` and return its reference.
    ///
    /// # Behavior
    /// - Interprets the attributes (the core does not); refuses malformed values with
    ///   [`crate::Error::InvalidAttribute`] before changing anything.
    /// - Receives attribute names as the caller gave them: an attribute with aliases arrives
    ///   under exactly one of its names (the core has refused two), which the driver reads.
    /// - Translates a backend domain given by name into its id where the hypervisor wants ids.
    /// - Returns [`crate::Error::DeviceExists`] when the reference (or an equivalent device) is taken.
    /// - Is atomic: on any error the domain is left exactly as it was.
    /// - Emits [`DeviceEvent::Added`] on success.
    /// - Honours `options.scope` (only scopes in [`Capabilities::scopes`] reach it; `None` is the
    ///   driver's documented default).
    /// - If the caller drops the future before it completes, the domain ends with the whole
    ///   device or none of it, or what is left is cleaned up by the next operation of any process
    ///   on the domain, as after a timeout (the driver's documentation says which).
    async fn attach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
        options: &AttachOptions,
    ) -> Result<DeviceRef>;

    /// Remove device `reference` of type `device_type` from `domain`.
    ///
    /// # Behavior
    /// - Returns `Ok(())` only when the device is really gone.
    /// - When the guest has not released it within `options.timeout`, returns
    ///   [`crate::Error::RemovalPending`]: the device stays listed as removal-pending and is removed
    ///   (with a [`DeviceEvent::Removed`]) when the guest lets go. It is never reported removed
    ///   while it is still there.
    /// - Detaching a device whose removal is already pending waits again; it does not fail.
    /// - With `options.force`, removes the device at once without waiting for the guest.
    /// - Returns [`crate::Error::DeviceNotFound`] for an unknown reference, changing nothing.
    /// - Honours `options.scope` as [`Driver::attach`] does.
    /// - If the caller drops the future, the removal that was asked goes on (the device is then
    ///   listed removal-pending until the guest lets go), as after a timeout.
    async fn detach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()>;

    /// Change attributes of device `reference` of type `device_type` in `domain`, in place (a
    /// CD-ROM's medium, a NIC's link state), without detaching it.
    ///
    /// # Behavior
    /// - Only called when [`Capabilities::update`] is set, and with attributes the type's schema
    ///   marks [`crate::AttributeSpec::updatable`] (the core refuses the others, naming them, with
    ///   [`crate::Error::InvalidAttribute`]); the driver refuses malformed values the same way
    ///   before changing anything.
    /// - Returns [`crate::Error::DeviceNotFound`] for an unknown reference (or one of another
    ///   type), changing nothing.
    /// - Is atomic: on any error the device is as it was.
    /// - Emits [`DeviceEvent::Updated`] naming what changed, with the new values.
    /// - Honours `options.scope` as [`Driver::attach`] does.
    async fn update(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        attributes: &Attributes,
        options: &UpdateOptions,
    ) -> Result<()>;

    /// Create several devices in `domain`, all or none: the references of all, in order, or an
    /// error after which none of them is attached.
    ///
    /// # Behavior
    /// - Receives entries the core has checked as for [`Driver::attach`] (and never an empty
    ///   slice).
    /// - On the failure of entry `i`, removes the devices of the batch already created (a
    ///   device the guest must release first is asked to go, and named in the error's `entry`
    ///   when it has not gone) and returns [`crate::Error::InBatch`] with `index: i` and that
    ///   entry's error. Except when what the batch made cannot be known (the hypervisor's connection was lost
    ///   midway), the error says so and is not an `InBatch`, which says the batch was
    ///   rolled back.
    /// - Emits [`DeviceEvent::Added`] for each device that stays.
    /// - Honours `options.scope` as [`Driver::attach`] does.
    ///
    /// The default calls [`Driver::attach`] for each entry in turn and, when one fails, detaches
    /// those it made, newest first (forced where [`Capabilities::force_detach`] says the driver
    /// can, since a device just attached has nothing of the guest's to lose). A driver whose
    /// hypervisor can take several devices at once (one write, one transaction) overrides it.
    async fn attach_batch(
        &self,
        domain: &Domain,
        devices: &[NewDevice],
        options: &AttachOptions,
    ) -> Result<Vec<DeviceRef>> {
        let mut made: Vec<(usize, DeviceRef)> = Vec::with_capacity(devices.len());
        for (i, d) in devices.iter().enumerate() {
            match self
                .attach(domain, &d.device_type, &d.attributes, options)
                .await
            {
                Ok(r) => made.push((i, r)),
                Err(e) => {
                    let undo = DetachOptions {
                        force: self.capabilities().force_detach,
                        scope: options.scope,
                        ..DetachOptions::default()
                    };
                    let mut left = Vec::new();
                    for (j, r) in made.iter().rev() {
                        let t = &devices[*j].device_type;
                        if let Err(u) = self.detach(domain, t, r, &undo).await {
                            tracing::warn!(domain = %domain.name, reference = %r, error = %u, "rolling back a batch: a device it attached could not be removed");
                            left.push(format!("{t} {r} ({u})"));
                        }
                    }
                    let mut entry = d.to_string();
                    if !left.is_empty() {
                        entry.push_str(&format!(
                            "; the rollback could not remove everything: {}",
                            left.join("; ")
                        ));
                    }
                    return Err(crate::Error::InBatch {
                        index: i,
                        entry,
                        error: Box::new(e),
                    });
                }
            }
        }
        Ok(made.into_iter().map(|(_, r)| r).collect())
    }

    /// A stream of device events for every domain, from now on.
    ///
    /// # Behavior
    /// - Each call returns an independent stream; dropping it unsubscribes.
    /// - Delivers [`DeviceEvent::Added`], [`DeviceEvent::StateChanged`], [`DeviceEvent::Updated`]
    ///   and [`DeviceEvent::Removed`] for changes made through any connection the driver can
    ///   observe.
    async fn events(&self) -> Result<EventStream>;

    /// Close the connection.
    ///
    /// # Behavior
    /// - Releases the hypervisor connection; event streams end.
    /// - Calls after close fail with [`crate::Error::Backend`].
    /// - Closing twice is not an error.
    async fn close(&self) -> Result<()>;
}

/// One device of a batch ([`Driver::attach_batch`]): its type and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// The device type.
    pub device_type: DeviceType,
    /// Its attributes, as [`Driver::attach`] takes them.
    pub attributes: Attributes,
}

impl fmt::Display for NewDevice {
    /// `disk source=/img/a.qcow2 format=qcow2`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.device_type.as_str())?;
        for (n, v) in self.attributes.iter() {
            write!(f, " {n}={v}")?;
        }
        Ok(())
    }
}

/// Run a driver operation so that it finishes even when its caller stops waiting: when the caller
/// drops the returned future (a timeout around `attach`, a cancelled request), `op` still runs to
/// its end as a task of its own, finishing or rolling back as if it had been awaited, and only its
/// result is lost. For drivers whose operations take several steps on the hypervisor (a block
/// node, then a device), so that a dropped attach never leaves half a device.
///
/// While the caller waits, `op` runs inside the caller's own task (no task is spawned and no
/// thread woken for it: the common case costs nothing); only a dropped, unfinished `op` moves to
/// a task of its own on the tokio runtime it was started on. Dropped outside any tokio runtime,
/// it cannot finish and is dropped. A panic in `op` becomes an [`crate::Error::Backend`] of
/// `driver`.
pub async fn run_whole<T, F>(driver: &'static str, op: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    Whole {
        op: Some(Box::pin(op)),
        runtime: tokio::runtime::Handle::try_current().ok(),
        driver,
    }
    .await
}

/// The future of [`run_whole`]: polls `op` in place, hands it to the runtime when dropped early.
struct Whole<F: std::future::Future + Send + 'static> {
    op: Option<std::pin::Pin<Box<F>>>,
    runtime: Option<tokio::runtime::Handle>,
    driver: &'static str,
}

impl<T, F> std::future::Future for Whole<F>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    type Output = Result<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<T>> {
        let Some(op) = self.op.as_mut() else {
            panic!("run_whole polled after it completed");
        };
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.as_mut().poll(cx)));
        let out = match polled {
            Ok(std::task::Poll::Pending) => return std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(r)) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                Err(crate::Error::backend_with(
                    self.driver,
                    "the operation failed (a bug in the driver: please report it)",
                    std::io::Error::other(format!("panicked: {what}")),
                ))
            }
        };
        self.op = None;
        std::task::Poll::Ready(out)
    }
}

impl<F: std::future::Future + Send + 'static> Drop for Whole<F> {
    fn drop(&mut self) {
        if let (Some(op), Some(runtime)) = (self.op.take(), self.runtime.as_ref()) {
            // The caller stopped waiting midway: the rest runs on its own, its result unread.
            drop(runtime.spawn(async move {
                let _ = op.await;
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::oneshot;

    /// A bound for waits that only a bug makes long.
    const HANG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_dropped_operation_still_runs_to_its_end() {
        let (go, wait) = oneshot::channel::<()>();
        let (finished, done) = oneshot::channel();
        let mut call = Box::pin(run_whole("test", async move {
            let _ = wait.await;
            let _ = finished.send("second step ran");
            Ok(())
        }));
        // The operation starts, reaches its first wait, and its caller gives up.
        assert!(futures::poll!(call.as_mut()).is_pending());
        drop(call);
        go.send(())
            .expect("the operation still waits for its next step");
        let said = tokio::time::timeout(HANG, done).await.expect("finished");
        assert_eq!(said, Ok("second step ran"));
    }

    #[tokio::test]
    async fn an_awaited_operation_gives_its_result() {
        let r = run_whole("test", async { Ok::<_, crate::Error>(7) }).await;
        assert_eq!(r.expect("result"), 7);
    }

    #[tokio::test]
    async fn a_panic_is_a_backend_error_of_the_driver() {
        let r: Result<()> = run_whole("test", async { panic!("boom") }).await;
        match r {
            Err(crate::Error::Backend { driver, source, .. }) => {
                assert_eq!(driver, "test");
                let why = source.expect("the panic").to_string();
                assert!(why.contains("boom"), "{why}");
            }
            other => panic!("not a backend error: {other:?}"),
        }
    }
}
