//! The public connection applications use.

use std::fmt;

use futures::StreamExt;
use tokio::sync::OnceCell;
use tracing::debug;

use crate::attributes::Attributes;
use crate::domain::{Domain, DomainKey};
use crate::driver::{Capabilities, Driver, EventStream};
use crate::error::{Error, Result};
use crate::options::{AttachOptions, DetachOptions, Scope, UpdateOptions};
use crate::registry;
use crate::types::{Device, DeviceRef, DeviceType, DeviceTypeSchema};
use crate::uri::ConnectUri;

/// Open a connection; the driver is chosen by the URI's scheme.
///
/// The driver must be linked into the program (see "Linking drivers" in the crate docs); the
/// `vdev` facade crate's documentation has this example in runnable form.
///
/// ```ignore
/// let conn = vdev_core::connect("mock:///default").await?;
/// let demo = conn.domain("demo").await?;
/// let disks = conn.devices(&demo, Some(&vdev_core::DeviceType::DISK)).await?;
/// assert_eq!(disks[0].attributes.get("virtual-device"), Some("51712"));
/// ```
pub async fn connect(uri: &str) -> Result<Connection> {
    Connection::open(ConnectUri::parse(uri)?).await
}

/// Open a read-only connection: every change is refused with [`Error::ReadOnly`] before the
/// driver is called. The same as adding `?readonly` to the URI.
pub async fn connect_readonly(uri: &str) -> Result<Connection> {
    let mut u = ConnectUri::parse(uri)?;
    u.set_read_only(true);
    Connection::open(u).await
}

/// An open connection to one hypervisor.
///
/// It wraps a driver and, in one place for every driver: refuses changes on read-only
/// connections, refuses operations the driver declared unsupported, checks device types and
/// attribute names against the driver's schema, and adds the driver's name and the domain to
/// errors.
pub struct Connection {
    pub(crate) driver: Box<dyn Driver>,
    pub(crate) driver_name: &'static str,
    uri: ConnectUri,
    pub(crate) capabilities: Capabilities,
    schemas: OnceCell<Vec<DeviceTypeSchema>>,
    /// The schemas of the checks ([`Driver::device_types_for_checks`]), when asked before the
    /// full ones.
    checks: OnceCell<Vec<DeviceTypeSchema>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("driver", &self.driver_name)
            .field("uri", &self.uri.to_string())
            .field("readonly", &self.uri.is_read_only())
            .finish()
    }
}

impl Connection {
    /// Open a connection for a parsed URI, choosing the driver by its scheme.
    pub async fn open(uri: ConnectUri) -> Result<Self> {
        let reg = registry::find(uri.driver())?;
        debug!(driver = reg.name, uri = %uri, "opening connection");
        let driver = (reg.open)(uri.clone())
            .await
            .map_err(|e| e.with_context(reg.name, None))?;
        Ok(Connection::from_driver(reg.name, uri, driver))
    }

    /// Wrap a driver that was opened directly (not through the registry), for example by a
    /// driver crate that hands out a control handle beside the connection.
    pub fn from_driver(
        driver_name: &'static str,
        uri: ConnectUri,
        driver: Box<dyn Driver>,
    ) -> Self {
        let capabilities = driver.capabilities();
        Connection {
            driver,
            driver_name,
            uri,
            capabilities,
            schemas: OnceCell::new(),
            checks: OnceCell::new(),
        }
    }

    /// The driver's name.
    pub fn driver_name(&self) -> &'static str {
        self.driver_name
    }

    /// The URI this connection was opened with (without any password).
    pub fn uri(&self) -> &ConnectUri {
        &self.uri
    }

    /// Whether changes are refused.
    pub fn is_read_only(&self) -> bool {
        self.uri.is_read_only()
    }

    /// What the driver supports.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    pub(crate) fn require(&self, supported: bool, operation: &str) -> Result<()> {
        if supported {
            Ok(())
        } else {
            Err(Error::Unsupported {
                driver: self.driver_name.to_owned(),
                operation: operation.to_owned(),
                detail: String::new(),
            })
        }
    }

    pub(crate) fn require_scope(&self, scope: Option<Scope>, operation: &str) -> Result<()> {
        match scope {
            Some(s) if !self.capabilities.scopes.contains(s) => Err(Error::Unsupported {
                driver: self.driver_name.to_owned(),
                operation: format!("{operation} with scope {s}"),
                detail: {
                    let offered: Vec<&str> =
                        self.capabilities.scopes.iter().map(Scope::as_str).collect();
                    if offered.is_empty() {
                        format!(
                            "the {} driver takes no explicit scope: leave it out for the driver's default",
                            self.driver_name
                        )
                    } else {
                        format!(
                            "the {} driver offers the scopes {} (or none, for its default)",
                            self.driver_name,
                            offered.join(", ")
                        )
                    }
                },
            }),
            _ => Ok(()),
        }
    }

    pub(crate) fn writable(&self, operation: &str) -> Result<()> {
        if self.is_read_only() {
            Err(Error::ReadOnly {
                operation: operation.to_owned(),
            })
        } else {
            Ok(())
        }
    }

    pub(crate) fn ctx(&self, domain: Option<&Domain>) -> impl Fn(Error) -> Error + '_ {
        let name = domain.map(|d| d.name.clone());
        move |e| e.with_context(self.driver_name, name.as_deref())
    }

    /// Every domain on the host.
    pub async fn domains(&self) -> Result<Vec<Domain>> {
        self.require(self.capabilities.list_domains, "listing domains")?;
        self.driver.list_domains().await.map_err(self.ctx(None))
    }

    /// Find a domain by what a user typed: an id (all digits) or a name. An all-digit key that is
    /// no domain's id is tried as a name too.
    pub async fn domain(&self, key: &str) -> Result<Domain> {
        self.find(key, false).await
    }

    /// Find a domain as [`Connection::domain`] does, for an operation on its devices: the same
    /// id, name and UUID, where the run state may be [`crate::RunState::Unknown`] (see
    /// [`Driver::resolve_domain`]). A one-shot command that does not show the state uses it and
    /// saves the round trip some hypervisors need for the state.
    pub async fn resolve_domain(&self, key: &str) -> Result<Domain> {
        self.find(key, true).await
    }

    async fn find(&self, key: &str, resolve: bool) -> Result<Domain> {
        let look = |k: DomainKey| async move {
            if resolve {
                self.driver.resolve_domain(&k).await
            } else {
                self.driver.lookup_domain(&k).await
            }
        };
        let parsed = DomainKey::parse(key);
        let by_name = matches!(parsed, DomainKey::Name(_));
        match look(parsed).await {
            Err(Error::DomainNotFound { .. }) if !by_name => look(DomainKey::Name(key.to_owned()))
                .await
                .map_err(|e| match e {
                    Error::DomainNotFound { .. } => Error::DomainNotFound {
                        domain: key.to_owned(),
                    },
                    e => e,
                }),
            r => r,
        }
        .map_err(self.ctx(None))
    }

    /// Find a domain by a typed key.
    pub async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain> {
        self.driver.lookup_domain(key).await.map_err(self.ctx(None))
    }

    /// The device types the driver supports, with their attributes (cached per connection).
    pub async fn device_types(&self) -> Result<&[DeviceTypeSchema]> {
        self.schemas
            .get_or_try_init(|| async { self.driver.device_types().await.map_err(self.ctx(None)) })
            .await
            .map(Vec::as_slice)
    }

    /// The attributes `device_type` accepts; [`Error::Unsupported`] naming the supported types
    /// when the driver has no such type.
    pub async fn schema(&self, device_type: &DeviceType) -> Result<&DeviceTypeSchema> {
        let all = self.device_types().await?;
        self.find_schema(all, device_type)
    }

    /// The schema the checks of a call use: the full one when cached, else the driver's
    /// [`Driver::device_types_for_checks`] (the same names and rules, maybe shorter
    /// descriptions), so that a one-shot call does not wait for what only descriptions need.
    pub(crate) async fn check_schema(&self, device_type: &DeviceType) -> Result<&DeviceTypeSchema> {
        let all = self.check_types().await?;
        self.find_schema(all, device_type)
    }

    /// Every schema as the checks use them (see [`Connection::check_schema`]).
    pub(crate) async fn check_types(&self) -> Result<&[DeviceTypeSchema]> {
        if let Some(all) = self.schemas.get() {
            return Ok(all);
        }
        self.checks
            .get_or_try_init(|| async {
                self.driver
                    .device_types_for_checks()
                    .await
                    .map_err(self.ctx(None))
            })
            .await
            .map(Vec::as_slice)
    }

    fn find_schema<'a>(
        &self,
        all: &'a [DeviceTypeSchema],
        device_type: &DeviceType,
    ) -> Result<&'a DeviceTypeSchema> {
        all.iter()
            .find(|s| &s.device_type == device_type)
            .ok_or_else(|| Error::Unsupported {
                driver: self.driver_name.to_owned(),
                operation: format!("device type '{device_type}'"),
                detail: format!(
                    "supported types: {}",
                    all.iter()
                        .map(|s| s.device_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// The devices of `domain`, of one type or all.
    pub async fn devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>> {
        self.require(self.capabilities.list_devices, "listing devices")?;
        if let Some(t) = device_type {
            self.check_schema(t).await?;
        }
        self.driver
            .list_devices(domain, device_type)
            .await
            .map_err(self.ctx(Some(domain)))
    }

    /// Create a device of `device_type` in `domain` from `attributes`; returns its reference.
    ///
    /// Before the driver is called: refused on a read-only connection, when the driver cannot
    /// attach, for an unknown device type, for an attribute name the type does not accept, for
    /// two names of one attribute (its name and an alias), and when a required attribute is
    /// missing under all its names ([`DeviceTypeSchema::check_names`]). The names are passed to
    /// the driver as given. See [`Driver::attach`] for the rest.
    pub async fn attach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
    ) -> Result<DeviceRef> {
        self.attach_with(domain, device_type, attributes, &AttachOptions::default())
            .await
    }

    /// [`Connection::attach`] with options: a [`crate::Scope`] (refused with
    /// [`Error::Unsupported`] when not in [`Capabilities::scopes`]).
    pub async fn attach_with(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
        options: &AttachOptions,
    ) -> Result<DeviceRef> {
        self.writable("attach")?;
        self.require(self.capabilities.attach, "attach")?;
        self.require_scope(options.scope, "attach")?;
        self.check_schema(device_type)
            .await?
            .check_names(attributes)?;
        debug!(driver = self.driver_name, domain = %domain.name, %device_type, scope = ?options.scope, "attach");
        self.driver
            .attach(domain, device_type, attributes, options)
            .await
            .map_err(self.ctx(Some(domain)))
    }

    /// Remove a device. `Ok(())` means it is gone; [`Error::RemovalPending`] means the guest has
    /// not released it within `options.timeout` (it is still there, listed as removal-pending).
    pub async fn detach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        self.writable("detach")?;
        self.require(self.capabilities.detach, "detach")?;
        if options.force {
            self.require(self.capabilities.force_detach, "forced detach")?;
        }
        self.require_scope(options.scope, "detach")?;
        self.check_schema(device_type).await?;
        debug!(driver = self.driver_name, domain = %domain.name, %device_type, %reference, force = options.force, "detach");
        self.driver
            .detach(domain, device_type, reference, options)
            .await
            .map_err(self.ctx(Some(domain)))
    }

    /// Change attributes of an existing device in place: a CD-ROM's medium, a NIC's link state.
    ///
    /// Before the driver is called: refused on a read-only connection, with
    /// [`Error::Unsupported`] when the driver updates nothing ([`Capabilities::update`]), for an
    /// unknown device type, and with [`Error::InvalidAttribute`] naming every attribute that is
    /// unknown or not [`crate::AttributeSpec::updatable`] ([`DeviceTypeSchema::check_update`]).
    /// See [`Driver::update`] for the rest: atomic, [`Error::DeviceNotFound`] for an unknown
    /// reference, a [`crate::DeviceEvent::Updated`] on success.
    pub async fn update(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        attributes: &Attributes,
    ) -> Result<()> {
        self.update_with(
            domain,
            device_type,
            reference,
            attributes,
            &UpdateOptions::default(),
        )
        .await
    }

    /// [`Connection::update`] with options: a [`crate::Scope`] (refused with
    /// [`Error::Unsupported`] when not in [`Capabilities::scopes`]).
    pub async fn update_with(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        attributes: &Attributes,
        options: &UpdateOptions,
    ) -> Result<()> {
        self.writable("update")?;
        if !self.capabilities.update {
            return Err(Error::Unsupported {
                driver: self.driver_name.to_owned(),
                operation: "update".to_owned(),
                detail: format!(
                    "the {} driver changes no attribute of an existing device; detach and attach again",
                    self.driver_name
                ),
            });
        }
        self.require_scope(options.scope, "update")?;
        self.check_schema(device_type)
            .await?
            .check_update(attributes)?;
        debug!(driver = self.driver_name, domain = %domain.name, %device_type, %reference, "update");
        self.driver
            .update(domain, device_type, reference, attributes, options)
            .await
            .map_err(self.ctx(Some(domain)))
    }

    /// Device events for every domain, from now on.
    pub async fn events(&self) -> Result<EventStream> {
        self.require(self.capabilities.events, "device events")?;
        self.driver.events().await.map_err(self.ctx(None))
    }

    /// Device events of one domain, from now on.
    pub async fn watch(&self, domain: &Domain) -> Result<EventStream> {
        let key = DomainKey::from(domain);
        let stream = self.events().await?;
        Ok(stream
            .filter(move |e| {
                let keep = match e {
                    Ok(ev) => key.matches(ev.domain()),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .boxed())
    }

    /// Close the connection.
    pub async fn close(self) -> Result<()> {
        self.driver.close().await.map_err(self.ctx(None))
    }
}
