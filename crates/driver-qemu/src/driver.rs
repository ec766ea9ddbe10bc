//! The [`Driver`] implementation: the driver type, [`QemuDriver::open`] and the trait's
//! methods, each handing over to the module of its concern.

use std::fmt;
use std::sync::Arc;

use tracing::debug;
use vdev_core::prelude::async_trait;
use vdev_core::{
    AttachOptions, Attributes, Capabilities, DetachOptions, Device, DeviceEvent, DeviceRef,
    DeviceType, DeviceTypeSchema, Domain, DomainKey, Driver, Error, EventStream, NewDevice, Result,
    ScopeSet, UpdateOptions,
};
use vdev_remote::{Endpoint, Host, PathKind};

use crate::config::{QemuConfig, Target};
use crate::domain::went_away;
use crate::domains::{stem, Domains};
use crate::{attach, batch, detach, listing, schema, update};

/// The QEMU driver: each domain is one running QEMU reached through its QMP socket.
pub struct QemuDriver {
    inner: Arc<Domains>,
}

impl fmt::Debug for QemuDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QemuDriver")
            .field("target", &self.inner.config.target)
            .finish()
    }
}

impl QemuDriver {
    /// Open a connection as the URI's options say. A single socket (or TCP endpoint) must answer
    /// QMP now; a directory may hold no socket yet.
    pub async fn open(config: QemuConfig) -> Result<Self> {
        let mut directory = None;
        let mut first = None;
        match &config.target {
            // A remote socket the shared ssh connection (persist=) already forwards is known to
            // be a socket: the QMP greeting will say what it is, with nothing started on the host.
            Target::Unix(p) => match config.host.path_kind(p, config.request_timeout).await? {
                PathKind::Directory => directory = Some(p.clone()),
                PathKind::Socket => first = Some((Endpoint::Unix(p.clone()), stem(p))),
                PathKind::Missing => {
                    return Err(Error::backend(
                        crate::NAME,
                        format!(
                            "no QMP socket or directory at {}{}: start QEMU with -qmp unix:{},server=on,wait=off",
                            p.display(),
                            on_host(&config.host),
                            p.display()
                        ),
                    ))
                }
                PathKind::Other => {
                    return Err(Error::InvalidUri {
                        uri: format!("qemu://{}", p.display()),
                        reason: format!(
                            "the path is neither a unix socket nor a directory{}",
                            on_host(&config.host)
                        ),
                    })
                }
            },
            Target::Tcp { host, port } => {
                let ep = Endpoint::tcp(host, *port);
                let Endpoint::Tcp(addr) = &ep else {
                    unreachable!("a TCP endpoint")
                };
                let name = addr.clone();
                first = Some((ep, name));
            }
        }
        let driver = QemuDriver {
            inner: Arc::new(Domains::new(config, directory)),
        };
        if let Some((ep, stem)) = first {
            let entry = driver.inner.entry_for(ep, stem);
            driver.inner.session(&entry).await?;
        }
        Ok(driver)
    }
}

/// ` on HOST` for a remote host, else nothing (messages only: on this machine, paths need no
/// host name).
fn on_host(host: &Host) -> String {
    if host.is_local() {
        String::new()
    } else {
        format!(" on {}", host.name())
    }
}

#[async_trait]
impl Driver for QemuDriver {
    fn capabilities(&self) -> Capabilities {
        // QMP reaches the running machine only: no stored configuration to change.
        Capabilities {
            force_detach: false,
            scopes: ScopeSet::LIVE,
            ..Capabilities::ALL
        }
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        self.inner.check_open()?;
        let entries = self.inner.entries().await?;
        let sessions =
            futures::future::join_all(entries.iter().map(|e| self.inner.session(e))).await;
        let mut out = Vec::new();
        for (e, s) in entries.iter().zip(sessions) {
            match s {
                Ok(_) => out.push(e.domain()),
                Err(err) => {
                    debug!(endpoint = %e.endpoint, error = %err, "domain skipped: QEMU does not answer")
                }
            }
        }
        Ok(out)
    }

    async fn lookup_domain(&self, key: &DomainKey) -> Result<Domain> {
        self.list_domains()
            .await?
            .into_iter()
            .find(|d| key.matches(d))
            .ok_or_else(|| Error::DomainNotFound {
                domain: key.to_string(),
            })
    }

    async fn device_types(&self) -> Result<Vec<DeviceTypeSchema>> {
        Ok(schema::schemas())
    }

    async fn list_devices(
        &self,
        domain: &Domain,
        device_type: Option<&DeviceType>,
    ) -> Result<Vec<Device>> {
        let entry = self.inner.entry(domain).await?;
        let session = self.inner.session(&entry).await?;
        let all = match listing::list(&session, &entry).await {
            // The session died under us (QEMU exited or restarted): listing is safe to retry on
            // a new session, which also says clearly when QEMU is not there.
            Err(_) if !session.qmp.is_alive() => {
                let session = self.inner.session(&entry).await?;
                listing::list(&session, &entry).await?
            }
            r => r?,
        };
        entry.remember_all(&all);
        Ok(all
            .into_iter()
            .filter(|d| device_type.is_none_or(|t| &d.device_type == t))
            .collect())
    }

    async fn attach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        attributes: &Attributes,
        _options: &AttachOptions,
    ) -> Result<DeviceRef> {
        // Whole (`run_whole`): a caller that drops this future never stops an attach between its
        // backend and its device (it finishes, or rolls back).
        let inner = self.inner.clone();
        let (d, t, a) = (domain.clone(), device_type.clone(), attributes.clone());
        vdev_core::run_whole(crate::NAME, async move {
            attach::attach(&inner, &d, &t, &a).await
        })
        .await
    }

    /// Every backend and device of the batch in one pipelined write; on a failure, what the
    /// batch made is detached and its backends removed (see the crate docs).
    async fn attach_batch(
        &self,
        domain: &Domain,
        devices: &[NewDevice],
        _options: &AttachOptions,
    ) -> Result<Vec<DeviceRef>> {
        // Whole, as attach: a dropped caller never stops a batch between its write and its
        // rollback.
        let inner = self.inner.clone();
        let (d, devices) = (domain.clone(), devices.to_vec());
        vdev_core::run_whole(crate::NAME, async move {
            batch::attach_batch(&inner, &d, &devices).await
        })
        .await
    }

    async fn detach(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        options: &DetachOptions,
    ) -> Result<()> {
        // Whole, as attach: a dropped caller never leaves a removal half recorded.
        let inner = self.inner.clone();
        let (d, t, r, o) = (
            domain.clone(),
            device_type.clone(),
            reference.clone(),
            options.clone(),
        );
        vdev_core::run_whole(crate::NAME, async move {
            let entry = inner.entry(&d).await?;
            let session = inner.session(&entry).await?;
            detach::detach(&entry, &session, &inner.events, &d, &t, &r, &o).await
        })
        .await
    }

    async fn update(
        &self,
        domain: &Domain,
        device_type: &DeviceType,
        reference: &DeviceRef,
        attributes: &Attributes,
        _options: &UpdateOptions,
    ) -> Result<()> {
        let entry = self.inner.entry(domain).await?;
        let session = self.inner.session(&entry).await?;
        let id = reference.as_str();
        let changes = update::update(&session, &entry, device_type, id, attributes)
            .await
            .map_err(|e| went_away(&entry, &session, "update", e))?
            .ok_or_else(|| Error::DeviceNotFound {
                domain: domain.name.clone(),
                device_type: device_type.to_string(),
                reference: id.to_owned(),
            })?;
        self.inner.events.send(DeviceEvent::Updated {
            domain: entry.domain(),
            device_type: device_type.clone(),
            reference: reference.clone(),
            attributes: changes,
        });
        Ok(())
    }

    async fn events(&self) -> Result<EventStream> {
        self.inner.check_open()?;
        Ok(self.inner.events.subscribe())
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await;
        Ok(())
    }
}
