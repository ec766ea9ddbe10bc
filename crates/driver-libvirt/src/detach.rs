//! Detach that never says a device is gone while it is there.
//!
//! The live part is asked with `virDomainDetachDeviceAlias` (asynchronous: it returns once
//! QEMU was asked), then vdev waits for libvirt's `DEVICE_REMOVED` event, or for the device to
//! be gone from the live XML (read again every [`POLL`], also where no event comes). A
//! `DEVICE_REMOVAL_FAILED` is [`Error::RemovalRefused`]. At the deadline the removal is
//! recorded pending in the domain's metadata (see `metadata.rs`), where every process reads
//! it, and the answer is [`Error::RemovalPending`]; the record goes when the device does.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;
use vdev_core::{DetachOptions, DeviceEvent, DeviceRef, DeviceType, Domain, Error, Result};

use crate::driver::Inner;
use crate::error::{Context, LibvirtError};
use crate::events::{RawEvent, RawKind};
use crate::listing::Definitions;
use crate::metadata;
use crate::xml::{self, Kind};

const LIVE: u32 = virt_sys::VIR_DOMAIN_AFFECT_LIVE;
const CONFIG: u32 = virt_sys::VIR_DOMAIN_AFFECT_CONFIG;

/// How often the live XML is read again while waiting (events usually come first).
const POLL: Duration = Duration::from_millis(250);
/// The first pause before asking again a guest that was busy; doubled up to [`BUSY_MAX`].
const BUSY_FIRST: Duration = Duration::from_millis(100);
const BUSY_MAX: Duration = Duration::from_secs(1);

/// Remove `dev` from the definitions `flags` name: by its alias where it has one and the
/// hypervisor driver detaches by alias; otherwise by its XML (libvirt's libxl driver has no
/// `virDomainDetachDeviceAlias`, and its `virDomainDetachDeviceFlags` returns once the device
/// is gone).
fn detach_dev(
    dom: &virt::domain::Domain,
    dev: &xml::DevXml,
    alias: Option<&str>,
    flags: u32,
) -> std::result::Result<(), LibvirtError> {
    if let Some(a) = alias {
        match detach_alias(dom, a, flags) {
            Err(e) if e.is_no_support() => {}
            r => return r,
        }
    }
    dom.detach_device_flags(dev.xml(), flags)
        .map_err(LibvirtError::from)
}

/// `virDomainDetachDeviceAlias`, which `virt` does not wrap.
fn detach_alias(
    dom: &virt::domain::Domain,
    alias: &str,
    flags: u32,
) -> std::result::Result<(), LibvirtError> {
    let alias = std::ffi::CString::new(alias).map_err(|_| LibvirtError {
        message: "an alias with a NUL byte".into(),
        code: virt_sys::VIR_ERR_INVALID_ARG,
        origin: 0,
    })?;
    // SAFETY: the domain is valid while `dom` lives; the alias is a C string.
    let r = unsafe { virt_sys::virDomainDetachDeviceAlias(dom.as_ptr(), alias.as_ptr(), flags) };
    if r < 0 {
        Err(LibvirtError::last())
    } else {
        Ok(())
    }
}

/// What the first step found and did.
struct Asked {
    /// The device was recorded pending and has gone since: nothing to ask.
    gone_since: bool,
    /// The live alias asked to go, if the live part was asked.
    live_alias: Option<String>,
    /// Whether it is recorded pending already.
    recorded: bool,
    /// Whether libvirt tells no device events for this domain (libxl): vdev then sends the
    /// `Removed` of a live removal it saw complete.
    quiet: bool,
}

/// Detach `reference`; see the module docs.
pub(crate) async fn detach(
    inner: &Arc<Inner>,
    domain: &Domain,
    t: &DeviceType,
    reference: &DeviceRef,
    options: &DetachOptions,
) -> Result<()> {
    let kind = Kind::of(t).ok_or_else(|| Error::Unsupported {
        driver: crate::NAME.into(),
        operation: format!("detach of a {t}"),
        detail: "the libvirt driver detaches disk and network devices".into(),
    })?;
    let deadline = Instant::now() + options.timeout;
    // Listen before asking, so that a removal that comes at once is not missed.
    let mut rx = inner.raw.subscribe();
    let (d, t2, r, scope) = (domain.clone(), t.clone(), reference.clone(), options.scope);
    let asked = inner
        .call(move |inner| {
            let ctx = Context::new("detach", &d.name).device(t2.as_str(), r.as_str());
            // The wait below listens to DEVICE_REMOVED: registered before anything is asked.
            inner.ensure_events()?;
            let dom = inner.lookup(&d, &ctx)?;
            let (defs, flags) = Definitions::read_for(&dom, &ctx, scope, xml::Detail::Listing)?;
            let find = |x: Option<&xml::DomXml>| {
                x.and_then(|x| {
                    x.devices
                        .iter()
                        .find(|dev| dev.kind == kind && dev.answers_to(r.as_str()))
                        .cloned()
                })
            };
            let live = if flags & LIVE != 0 {
                find(defs.live.as_ref())
            } else {
                None
            };
            let stored = if flags & CONFIG != 0 {
                find(defs.stored.as_ref())
            } else {
                None
            };
            let wanted_live = flags & LIVE != 0 && defs.live.is_some();
            // Both: from wherever it is; one scope: it must be there.
            let missing = match scope {
                Some(vdev_core::Scope::Both) => live.is_none() && stored.is_none(),
                _ => (wanted_live && live.is_none()) || (!wanted_live && stored.is_none()),
            };
            let record = defs
                .live
                .as_ref()
                .and_then(|l| l.removals.iter().find(|x| x.is(t2.as_str(), r.as_str())));
            let recorded = record.is_some();
            if missing && recorded {
                // The removal asked earlier (by any process) has completed.
                return Ok(Asked {
                    gone_since: true,
                    live_alias: Some(r.to_string()),
                    recorded,
                    quiet: false,
                });
            }
            if missing {
                return Err(Error::DeviceNotFound {
                    domain: d.name.clone(),
                    device_type: t2.to_string(),
                    reference: r.to_string(),
                });
            }
            let mut live_alias = None;
            if let Some(dev) = &live {
                let alias = dev.alias.clone().unwrap_or_else(|| dev.key.clone());
                ask(&dom, dev, &alias, &ctx, deadline)?;
                live_alias = Some(alias);
            }
            if let Some(dev) = &stored {
                let alias = dev.alias.as_deref().filter(|a| xml::is_user_alias(a));
                detach_dev(&dom, dev, alias, CONFIG).map_err(|e| ctx.map(e))?;
            }
            let quiet = defs
                .live
                .as_ref()
                .is_some_and(|x| !crate::attach::tells_device_events(&x.hypervisor));
            Ok(Asked {
                gone_since: false,
                live_alias,
                recorded,
                quiet,
            })
        })
        .await?;
    let Some(alias) = asked.live_alias else {
        // The stored configuration only: done, and libvirt tells no event for it.
        inner.hub.send(DeviceEvent::Removed {
            domain: domain.clone(),
            device_type: t.clone(),
            reference: reference.clone(),
        });
        return Ok(());
    };
    if asked.gone_since {
        return finish(inner, domain, kind, &alias, true).await;
    }
    let uuid = domain.uuid.clone();
    let ours = |ev: &RawEvent| ev.alias == alias && ev.domain.uuid == uuid;
    let mut next_poll = Instant::now() + POLL;
    loop {
        let wake = next_poll.min(deadline);
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) if ours(&ev) && ev.kind == RawKind::RemovalFailed => {
                    return Err(Error::RemovalRefused {
                        domain: domain.name.clone(),
                        device_type: t.to_string(),
                        reference: reference.to_string(),
                    });
                }
                Ok(ev) if ours(&ev) && ev.kind == RawKind::Removed => {
                    if gone(inner, domain, kind, &alias).await? {
                        return finish(inner, domain, kind, &alias, asked.recorded).await;
                    }
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => next_poll = Instant::now(),
                Err(broadcast::error::RecvError::Closed) => {
                    rx = inner.raw.subscribe();
                }
            },
            _ = tokio::time::sleep_until(wake) => {
                if gone(inner, domain, kind, &alias).await? {
                    if asked.quiet {
                        inner.hub.send(DeviceEvent::Removed {
                            domain: domain.clone(),
                            device_type: t.clone(),
                            reference: reference.clone(),
                        });
                    }
                    return finish(inner, domain, kind, &alias, asked.recorded).await;
                }
                if Instant::now() >= deadline {
                    break;
                }
                next_poll = Instant::now() + POLL;
            }
        }
    }
    // The guest has not let go: record it, then look once more (it may have gone meanwhile).
    if !asked.recorded {
        change_record(inner, domain, kind, &alias, Mark::Pending).await?;
    }
    if gone(inner, domain, kind, &alias).await? {
        return finish(inner, domain, kind, &alias, true).await;
    }
    Err(Error::RemovalPending {
        domain: domain.name.clone(),
        device_type: t.to_string(),
        reference: reference.to_string(),
    })
}

/// Ask libvirt to remove the live device: a second ask of a removal under way is fine; a busy
/// guest is asked again, with back-off, until the deadline.
fn ask(
    dom: &virt::domain::Domain,
    dev: &xml::DevXml,
    alias: &str,
    ctx: &Context,
    deadline: Instant,
) -> Result<()> {
    let mut pause = BUSY_FIRST;
    loop {
        match detach_dev(dom, dev, Some(alias), LIVE) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_unplug_in_progress() => return Ok(()),
            Err(e) if e.is_guest_busy() && Instant::now() + pause < deadline => {
                tracing::debug!(error = %e, "the guest is busy: asking again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(BUSY_MAX);
            }
            Err(e) => return Err(ctx.map(e)),
        }
    }
}

/// Whether the live device with `alias` is gone (or the domain stopped running).
async fn gone(inner: &Arc<Inner>, domain: &Domain, kind: Kind, alias: &str) -> Result<bool> {
    let (d, alias) = (domain.clone(), alias.to_owned());
    inner
        .call(move |inner| {
            let ctx = Context::new("detach", &d.name);
            let dom = inner.lookup(&d, &ctx)?;
            let x = xml::parse_domain(dom.xml_desc(0).map_err(|e| ctx.map(e.into()))?)?;
            Ok(!x.running
                || !x
                    .devices
                    .iter()
                    .any(|dev| dev.kind == kind && dev.answers_to(&alias)))
        })
        .await
}

async fn finish(
    inner: &Arc<Inner>,
    domain: &Domain,
    kind: Kind,
    alias: &str,
    recorded: bool,
) -> Result<()> {
    if recorded {
        change_record(inner, domain, kind, alias, Mark::Remove).await?;
    }
    Ok(())
}

/// A change of the record of one removal in vdev's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Record the removal pending (the detach that asked has timed out).
    Pending,
    /// The device has gone: a pending record becomes a tombstone (no record is made).
    Gone,
    /// Drop the record (a detach has said the device is gone).
    Remove,
}

/// Change the record of the removal of `alias` in the domain's live metadata.
pub(crate) async fn change_record(
    inner: &Arc<Inner>,
    domain: &Domain,
    kind: Kind,
    alias: &str,
    mark: Mark,
) -> Result<()> {
    let _one_at_a_time = inner.metadata_lock.lock().await;
    let (d, alias) = (domain.clone(), alias.to_owned());
    inner
        .call(move |inner| {
            let ctx = Context::new("record a pending removal", &d.name);
            let dom = inner.lookup(&d, &ctx)?;
            let t = kind.device_type().to_string();
            let ns = metadata::namespace(&t, &alias);
            let current = match dom.metadata(
                virt_sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                Some(&ns),
                LIVE,
            ) {
                Ok(text) => metadata::parse_fetched(&text),
                Err(e) => {
                    let e = LibvirtError::from(e);
                    if !e.is_no_metadata() {
                        return Err(ctx.map(e));
                    }
                    None
                }
            };
            let now = metadata::now();
            let next = match (mark, current) {
                (Mark::Pending, Some(r)) if !r.gone => return Ok(()),
                (Mark::Pending, _) => Some(metadata::Record {
                    device_type: t,
                    reference: alias,
                    gone: false,
                    at: now,
                }),
                (Mark::Gone, Some(r)) if !r.gone => Some(metadata::Record {
                    gone: true,
                    at: now,
                    ..r
                }),
                (Mark::Gone, _) | (Mark::Remove, None) => return Ok(()),
                (Mark::Remove, Some(_)) => None,
            };
            let set = |ns: &str, record: Option<&metadata::Record>| {
                let el = record.map(metadata::Record::element);
                dom.set_metadata(
                    virt_sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                    el.as_deref(),
                    el.as_ref().map(|_| metadata::PREFIX),
                    Some(ns),
                    LIVE,
                )
                .map_err(|e| ctx.map(e.into()))
            };
            set(&ns, next.as_ref())?;
            // Tombstones past their time, of any device, go with this change (a reference is
            // rarely detached again, so its own detach would seldom drop it). Best effort: a
            // failure leaves them for the next change.
            if let Ok(xml) = dom.xml_desc(0) {
                if let Ok(doc) = roxmltree::Document::parse(&xml) {
                    let expired = doc
                        .root_element()
                        .children()
                        .filter(|n| n.has_tag_name("metadata"))
                        .flat_map(metadata::read)
                        .filter(|r| r.expired(now));
                    for r in expired {
                        if let Err(e) =
                            set(&metadata::namespace(&r.device_type, &r.reference), None)
                        {
                            tracing::debug!(error = %e, "an old tombstone could not be dropped");
                        }
                    }
                }
            }
            Ok(())
        })
        .await
}

/// [`change_record`] where a failure only leaves the record for the next listing or detach.
pub(crate) async fn record(
    inner: &Arc<Inner>,
    domain: &Domain,
    kind: Kind,
    alias: &str,
    mark: Mark,
) {
    if let Err(e) = change_record(inner, domain, kind, alias, mark).await {
        tracing::debug!(error = %e, ?mark, "the removal's record could not be changed");
    }
}
