//! Listing: the live definition of a running domain and its stored one, merged; each device
//! with the scope it is in and, where vdev's metadata records it, its pending removal.

use std::sync::Arc;

use vdev_core::{Attributes, Device, DeviceRef, DeviceState, DeviceType, Domain, Error, Result};

use crate::detach::Mark;
use crate::driver::Inner;
use crate::error::Context;
use crate::xml::{self, Detail, DevXml, DomXml, Kind};

/// The state of a device that is in the stored configuration only (of a running domain that
/// does not have it, or of a domain that does not run): it is there at the next start.
pub(crate) const CONFIGURED: &str = "configured";

/// A domain's definitions: the live one (when it runs) and the stored one (when it is
/// persistent).
#[derive(Debug, Clone)]
pub(crate) struct Definitions {
    pub live: Option<DomXml>,
    pub stored: Option<DomXml>,
}

/// `f`, asked now on another of the runtime's blocking threads (an idle one when there is one)
/// and answered by [`Beside::answer`]; without a runtime, or for a single caller (whose calls
/// run on the runtime's own thread), run when the answer is asked.
enum Beside<T> {
    Asked(tokio::runtime::Handle, tokio::task::JoinHandle<T>),
    Later(Box<dyn FnOnce() -> T + Send>),
}

impl<T: Send + 'static> Beside<T> {
    fn ask(single_caller: bool, f: impl FnOnce() -> T + Send + 'static) -> Self {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !single_caller => {
                let h = rt.spawn_blocking(f);
                Beside::Asked(rt, h)
            }
            _ => Beside::Later(Box::new(f)),
        }
    }

    /// The answer (called on a blocking thread, never on an async one).
    fn answer(self) -> Result<T> {
        match self {
            Beside::Asked(rt, h) => rt
                .block_on(h)
                .map_err(|e| Error::backend_with(crate::NAME, "a libvirt call panicked", e)),
            Beside::Later(f) => Ok(f()),
        }
    }
}

impl Definitions {
    /// Read them: the live XML, whether the domain is persistent and its stored XML, asked at
    /// once (libvirt answers the calls of one connection side by side) and the two documents
    /// parsed on two threads, so a listing waits about one round trip and one parse, not three
    /// round trips and two parses.
    pub(crate) fn read(
        d: &virt::domain::Domain,
        ctx: &Context,
        single_caller: bool,
    ) -> Result<Self> {
        let map = |e: virt::error::Error| ctx.map(e.into());
        let (d1, d2) = (d.clone(), d.clone());
        let persistent = Beside::ask(single_caller, move || d1.is_persistent());
        // Parsed on that thread too: the two documents are parsed side by side.
        let stored = Beside::ask(single_caller, move || {
            d2.xml_desc(virt_sys::VIR_DOMAIN_XML_INACTIVE)
                .map(xml::parse_domain)
        });
        let current = d.xml_desc(0).map_err(map).and_then(xml::parse_domain);
        let (persistent, stored) = (persistent.answer()?, stored.answer()?);
        let current = current?;
        if !current.running {
            return Ok(Definitions {
                live: None,
                stored: Some(current),
            });
        }
        let stored = if persistent.map_err(map)? {
            Some(stored.map_err(map)??)
        } else {
            None
        };
        Ok(Definitions {
            live: Some(current),
            stored,
        })
    }

    /// Read what a change of `scope` touches, and its `VIR_DOMAIN_AFFECT_*` flags: the live
    /// XML (which tells whether the domain runs), and the stored XML only when the change goes
    /// there too (one round trip fewer for a live change); `detail` of each device.
    pub(crate) fn read_for(
        d: &virt::domain::Domain,
        ctx: &Context,
        scope: Option<vdev_core::Scope>,
        detail: Detail,
    ) -> Result<(Self, u32)> {
        let map = |e: virt::error::Error| ctx.map(e.into());
        let parse = |text| xml::parse_domain_with(text, detail);
        let current = parse(d.xml_desc(0).map_err(map)?)?;
        let flags = crate::driver::affect(scope, current.running);
        if !current.running {
            let defs = Definitions {
                live: None,
                stored: Some(current),
            };
            return Ok((defs, flags));
        }
        let stored = if flags & virt_sys::VIR_DOMAIN_AFFECT_CONFIG != 0 {
            Some(parse(
                d.xml_desc(virt_sys::VIR_DOMAIN_XML_INACTIVE).map_err(map)?,
            )?)
        } else {
            None
        };
        let defs = Definitions {
            live: Some(current),
            stored,
        };
        Ok((defs, flags))
    }

    /// The pending records of devices no longer in the live definition.
    pub(crate) fn stale_pending(&self) -> Vec<(Kind, String)> {
        let Some(live) = &self.live else {
            return Vec::new();
        };
        live.removals
            .iter()
            .filter(|r| !r.gone)
            .filter_map(|r| {
                let kind = Kind::of(&DeviceType::new(r.device_type.clone()).ok()?)?;
                let present = live
                    .devices
                    .iter()
                    .any(|d| d.kind == kind && d.answers_to(&r.reference));
                (!present).then(|| (kind, r.reference.clone()))
            })
            .collect()
    }

    /// Every device, merged: (device, scope attribute, state). A device is matched between the
    /// definitions by its identity (user alias, else target or MAC), through a set: listing
    /// stays linear in the number of devices.
    pub(crate) fn into_devices(self) -> Vec<(DevXml, &'static str, DeviceState)> {
        use std::collections::HashSet;
        fn ids(x: Option<&DomXml>) -> HashSet<(Kind, &str)> {
            x.map(|x| x.devices.iter().map(|d| (d.kind, d.identity())).collect())
                .unwrap_or_default()
        }
        // What each device is, decided on the borrowed definitions: (from the live one, index).
        let mut decided: Vec<(bool, usize, &'static str, DeviceState)> = Vec::new();
        {
            let (in_live, in_stored) = (ids(self.live.as_ref()), ids(self.stored.as_ref()));
            if let Some(live) = &self.live {
                let pending: HashSet<(&str, &str)> = live
                    .removals
                    .iter()
                    .filter(|r| !r.gone)
                    .map(|r| (r.device_type.as_str(), r.reference.as_str()))
                    .collect();
                for (i, dev) in live.devices.iter().enumerate() {
                    let stored = in_stored.contains(&(dev.kind, dev.identity()));
                    let t = dev.kind.device_type();
                    let is_pending = pending.contains(&(t.as_str(), dev.reference()))
                        || pending.contains(&(t.as_str(), dev.key.as_str()));
                    let state = if is_pending {
                        DeviceState::RemovalPending
                    } else {
                        DeviceState::Connected
                    };
                    decided.push((true, i, if stored { "both" } else { "live" }, state));
                }
            }
            if let Some(stored) = &self.stored {
                for (i, dev) in stored.devices.iter().enumerate() {
                    if !in_live.contains(&(dev.kind, dev.identity())) {
                        let state = DeviceState::Unknown(CONFIGURED.into());
                        decided.push((false, i, "persistent", state));
                    }
                }
            }
        }
        let mut live: Vec<Option<DevXml>> = self
            .live
            .map(|x| x.devices.into_iter().map(Some).collect())
            .unwrap_or_default();
        let mut stored: Vec<Option<DevXml>> = self
            .stored
            .map(|x| x.devices.into_iter().map(Some).collect())
            .unwrap_or_default();
        decided
            .into_iter()
            .filter_map(|(from_live, i, scope, state)| {
                let dev = if from_live {
                    live[i].take()
                } else {
                    stored[i].take()
                }?;
                Some((dev, scope, state))
            })
            .collect()
    }
}

impl Definitions {
    /// The devices as a listing gives them (of kind `want`, or all): merged, ordered by type
    /// and reference, each reference once. `remember` is told the kind of each alias whose
    /// name does not say it (for events about it later).
    pub(crate) fn listed(
        self,
        want: Option<Kind>,
        mut remember: impl FnMut(&str, Kind),
    ) -> Vec<Device> {
        let mut v: Vec<Device> = self
            .into_devices()
            .into_iter()
            .filter(|(dev, _, _)| want.is_none_or(|k| dev.kind == k))
            .filter_map(|(dev, scope, state)| {
                if let Some(a) = dev
                    .alias
                    .as_ref()
                    .filter(|a| crate::events::kind_of_alias(a).is_none())
                {
                    remember(a, dev.kind);
                }
                to_device(dev, scope, state)
            })
            .collect();
        v.sort_by(|a, b| (&a.device_type, &a.reference).cmp(&(&b.device_type, &b.reference)));
        v.dedup_by(|a, b| a.device_type == b.device_type && a.reference == b.reference);
        v
    }
}

fn to_device(dev: DevXml, scope: &'static str, state: DeviceState) -> Option<Device> {
    let reference = DeviceRef::new(dev.reference().to_owned()).ok()?;
    use std::borrow::Cow;
    let kind = dev.kind;
    let pairs = dev
        .attrs
        .into_iter()
        .map(|(k, v)| (Cow::Borrowed(k), Cow::Owned(v)))
        .chain(std::iter::once((
            Cow::Borrowed("scope"),
            Cow::Borrowed(scope),
        )));
    let attributes = Attributes::from_pairs(pairs).ok()?;
    Some(Device {
        device_type: kind.device_type(),
        reference,
        state,
        attributes,
    })
}

/// The devices of `domain`, of one type or all.
pub(crate) async fn list(
    inner: &Arc<Inner>,
    domain: &Domain,
    device_type: Option<&DeviceType>,
) -> Result<Vec<Device>> {
    let want = match device_type {
        None => None,
        Some(t) => Some(Kind::of(t).ok_or_else(|| Error::Unsupported {
            driver: crate::NAME.into(),
            operation: format!("device type '{t}'"),
            detail: "the libvirt driver manages disk and network devices".into(),
        })?),
    };
    let domain_for_cleanup = domain.clone();
    let domain = domain.clone();
    inner
        .call(move |inner| {
            let ctx = Context::new("list devices", &domain.name);
            let d = inner.lookup(&domain, &ctx)?;
            let defs = Definitions::read(&d, &ctx, inner.config.single_caller)?;
            let stale = defs.stale_pending();
            let v = defs.listed(want, |alias, kind| inner.remember(alias, kind));
            Ok((v, stale))
        })
        .await
        .map(|(v, stale)| {
            if !stale.is_empty() && !inner.config.readonly {
                // Removals recorded pending that have completed: marked gone in the background.
                let (inner, d) = (Arc::clone(inner), domain_for_cleanup);
                tokio::spawn(async move {
                    for (kind, alias) in stale {
                        crate::detach::record(&inner, &d, kind, &alias, Mark::Gone).await;
                    }
                });
            }
            v
        })
}

/// The kind of the live device with `alias`, read from the live XML (for an event whose alias
/// does not say it).
pub(crate) async fn kind_in_live_xml(inner: &Arc<Inner>, d: &Domain, alias: &str) -> Option<Kind> {
    let (d, alias) = (d.clone(), alias.to_owned());
    inner
        .call(move |inner| {
            let ctx = Context::new("read the domain", &d.name);
            let dom = inner.lookup(&d, &ctx)?;
            let x = xml::parse_domain(dom.xml_desc(0).map_err(|e| ctx.map(e.into()))?)?;
            Ok(x.devices
                .iter()
                .find(|dev| dev.alias.as_deref() == Some(alias.as_str()))
                .map(|dev| dev.kind))
        })
        .await
        .ok()
        .flatten()
}
