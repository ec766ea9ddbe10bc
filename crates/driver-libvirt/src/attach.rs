//! Attach and update: device XML made from the attributes (checked before libvirt is asked),
//! a free target name and SCSI unit chosen from the definitions the scope touches.

use std::sync::Arc;

use vdev_core::{
    parse_bool, random_hex, unicast_mac, Attributes, DeviceEvent, DeviceRef, DeviceType,
    DeviceTypeSchema, Domain, Error, Result, Scope, BOOL_SPELLINGS,
};

use crate::driver::Inner;
use crate::error::Context;
use crate::listing::Definitions;
use crate::xml::{self, DomXml, El, Kind};

const LIVE: u32 = virt_sys::VIR_DOMAIN_AFFECT_LIVE;
const CONFIG: u32 = virt_sys::VIR_DOMAIN_AFFECT_CONFIG;

/// The user aliases vdev gives the devices it makes: the prefix, then 8 hex digits.
pub(crate) const DISK_ALIAS_PREFIX: &str = "ua-disk-";
pub(crate) const NIC_ALIAS_PREFIX: &str = "ua-net-";
/// A disk's `media` values (libvirt's `device`) vdev makes.
pub(crate) const MEDIA: &[&str] = &["disk", "cdrom"];
/// A disk's `type` values (libvirt's disk `type`).
pub(crate) const DISK_KINDS: &[&str] = &["file", "block"];
/// The NIC backends (libvirt's interface `type`) vdev makes.
pub(crate) const NETDEVS: &[&str] = &["user", "network", "bridge", "direct", "ethernet"];
/// The NIC backends that take no `source`.
pub(crate) const NETDEVS_WITHOUT_SOURCE: &[&str] = &["user", "ethernet"];
/// A NIC's `link` values.
pub(crate) const LINKS: &[&str] = &["up", "down"];
/// The defaults: bus, format, disk type; NIC model (on QEMU).
pub(crate) const DEFAULT_BUS: &str = "scsi";
pub(crate) const DEFAULT_FORMAT: &str = "raw";
pub(crate) const DEFAULT_NIC_MODEL: &str = "virtio";

/// A device to attach, before the target and address are chosen.
struct Plan {
    kind: Kind,
    el: El,
    /// Disks: the bus and the target the caller gave.
    bus: String,
    target: Option<String>,
    /// NICs: the MAC the caller gave.
    mac: Option<String>,
    /// Whether the caller placed it (`xml.address.*`).
    placed: bool,
}

fn bool_attr(name: &str, v: &str) -> Result<bool> {
    parse_bool(v).ok_or_else(|| {
        Error::invalid_attribute(
            name,
            format!("'{v}' is not a boolean: write {BOOL_SPELLINGS}"),
        )
    })
}

fn word(name: &str, v: &str, example: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_attribute(
            name,
            format!(
                "'{}' is not a name libvirt knows; for example {name}={example}",
                v.escape_default()
            ),
        ))
    }
}

fn one_of(name: &str, v: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid_attribute(
            name,
            format!(
                "'{}' is not one of {}",
                v.escape_default(),
                allowed.join(", ")
            ),
        ))
    }
}

fn absolute(name: &str, v: &str) -> Result<()> {
    if v.starts_with('/') && !v.contains('\0') {
        Ok(())
    } else {
        Err(Error::invalid_attribute(
            name,
            format!(
                "'{}' is not an absolute path on the libvirt host",
                v.escape_default()
            ),
        ))
    }
}

/// The set a schema attribute names (its description's "one of ..." from the capabilities).
fn allowed_in_schema(schemas: &[DeviceTypeSchema], t: &DeviceType, name: &str) -> Vec<String> {
    let Some(spec) = schemas
        .iter()
        .find(|s| &s.device_type == t)
        .and_then(|s| s.attribute(name))
    else {
        return Vec::new();
    };
    let Some((_, rest)) = spec.description.split_once("one of ") else {
        return Vec::new();
    };
    let list = rest.split(" (from").next().unwrap_or_default();
    list.split(", ").map(str::to_owned).collect()
}

/// Refuse a disk bus that the schemas' set (from libvirt's domain capabilities) does not name;
/// schemas made without the capabilities name no set and allow any.
pub(crate) fn check_bus(schemas: &[DeviceTypeSchema], bus: &str) -> Result<()> {
    let buses = allowed_in_schema(schemas, &DeviceType::DISK, "bus");
    if !buses.is_empty() && !buses.iter().any(|b| b == bus) {
        return Err(Error::invalid_attribute(
            "bus",
            format!("'{bus}' is not a disk bus this hypervisor offers; libvirt's domain capabilities list {}", buses.join(", ")),
        ));
    }
    Ok(())
}

fn disk_plan(schemas: &[DeviceTypeSchema], a: &Attributes) -> Result<Plan> {
    let media = a.get("media").unwrap_or("disk");
    one_of("media", media, MEDIA)?;
    let cdrom = media == "cdrom";
    let source = a.get("source").filter(|s| !s.is_empty());
    match source {
        Some(s) => absolute("source", s)?,
        None if cdrom => {}
        None => {
            return Err(Error::MissingAttribute {
                device_type: "disk".into(),
                name: "source".into(),
                hint: "a disk needs an image: the path of a file or block device on the libvirt host (for example source=/var/lib/libvirt/images/data.qcow2)".into(),
            })
        }
    }
    let kind = a.get("type").unwrap_or(DISK_KINDS[0]);
    one_of("type", kind, DISK_KINDS)?;
    let format = a.get("format").unwrap_or(DEFAULT_FORMAT);
    word("format", format, "qcow2")?;
    let bus = a.get("bus").unwrap_or(DEFAULT_BUS);
    word("bus", bus, "scsi")?;
    check_bus(schemas, bus)?;
    let readonly = match a.get("readonly") {
        Some(v) => bool_attr("readonly", v)?,
        None => cdrom,
    };
    if let Some(t) = a.get("target") {
        word("target", t, "sdb")?;
    }
    if let Some(f) = a.get("force") {
        return Err(Error::invalid_attribute(
            "force",
            format!("force={f} applies to an update of a CD-ROM drive, not to attach"),
        ));
    }
    let mut el = El::new("disk").attr("type", kind).attr("device", media);
    el = el.child(El::new("driver").attr("type", format));
    if let Some(s) = source {
        el = el.child(El::new("source").attr(if kind == "block" { "dev" } else { "file" }, s));
    }
    if readonly {
        el = el.child(El::new("readonly"));
    }
    if let Some(s) = a.get("serial") {
        el = el.child(El::new("serial").with_text(s));
    }
    el.apply_passthrough(a)?;
    let placed = a.names().any(|n| n.starts_with("xml.address."));
    Ok(Plan {
        kind: Kind::Disk,
        el,
        bus: bus.to_owned(),
        target: a.get("target").map(str::to_owned),
        mac: None,
        placed,
    })
}

fn nic_plan(a: &Attributes) -> Result<Plan> {
    let source = a.get("source").filter(|s| !s.is_empty());
    let netdev = a
        .get("netdev")
        .unwrap_or(if source.is_some() { "network" } else { "user" });
    one_of("netdev", netdev, NETDEVS)?;
    let mut el = El::new("interface").attr("type", netdev);
    let mac = match a.get("mac") {
        Some(m) => Some(unicast_mac("mac", m, "52:54:00:12:34:56")?),
        None => None,
    };
    if let Some(m) = &mac {
        el = el.child(El::new("mac").attr("address", m));
    }
    match (netdev, source) {
        (n, Some(_)) if NETDEVS_WITHOUT_SOURCE.contains(&n) => {
            return Err(Error::invalid_attribute(
                "source",
                format!("netdev={netdev} takes no source; give netdev=network, bridge or direct with it"),
            ))
        }
        ("network" | "bridge" | "direct", None) => {
            return Err(Error::invalid_attribute(
                "source",
                format!("netdev={netdev} needs a source: the libvirt network, host bridge or host interface"),
            ))
        }
        (_, Some(s)) => {
            word("source", s, "default")?;
            let key = match netdev {
                "network" => "network",
                "bridge" => "bridge",
                _ => "dev",
            };
            el = el.child(El::new("source").attr(key, s));
        }
        (_, None) => {}
    }
    if let Some(m) = a.get("model") {
        word("model", m, "virtio")?;
        let m = if m == "virtio-net-pci" { "virtio" } else { m };
        el = el.child(El::new("model").attr("type", m));
    }
    if let Some(i) = a.get("ifname") {
        word("ifname", i, "vnet7")?;
        el = el.child(El::new("target").attr("dev", i));
    }
    if let Some(l) = a.get("link") {
        one_of("link", l, LINKS)?;
        el = el.child(El::new("link").attr("state", l));
    }
    if let Some(f) = a.get("force") {
        return Err(Error::invalid_attribute(
            "force",
            format!("force={f} is no NIC attribute"),
        ));
    }
    el.apply_passthrough(a)?;
    Ok(Plan {
        kind: Kind::Nic,
        el,
        bus: String::new(),
        target: None,
        mac,
        placed: true,
    })
}

/// The definitions a change with `flags` touches.
fn touched(defs: &Definitions, flags: u32) -> Vec<&DomXml> {
    let mut v = Vec::new();
    if flags & LIVE != 0 {
        v.extend(defs.live.as_ref());
    }
    if flags & CONFIG != 0 {
        v.extend(defs.stored.as_ref());
    }
    v
}

/// Attach a device; see the crate docs for the attributes.
pub(crate) async fn attach(
    inner: &Arc<Inner>,
    schemas: &[DeviceTypeSchema],
    domain: &Domain,
    t: &DeviceType,
    attrs: &Attributes,
    scope: Option<Scope>,
) -> Result<DeviceRef> {
    let plan = match Kind::of(t) {
        Some(Kind::Disk) => disk_plan(schemas, attrs)?,
        Some(Kind::Nic) => nic_plan(attrs)?,
        None => {
            return Err(Error::Unsupported {
                driver: crate::NAME.into(),
                operation: format!("attach of a {t}"),
                detail: "the libvirt driver attaches disk and network devices".into(),
            })
        }
    };
    let passthrough: Vec<String> = attrs
        .names()
        .filter(|n| n.starts_with(xml::PASSTHROUGH))
        .map(str::to_owned)
        .collect();
    let prefix = if plan.kind == Kind::Disk {
        DISK_ALIAS_PREFIX
    } else {
        NIC_ALIAS_PREFIX
    };
    let alias = format!("{prefix}{}", random_hex());
    let reference = DeviceRef::new(alias.clone())?;
    let _one_at_a_time = inner.attach_lock.lock().await;
    let d = domain.clone();
    let t2 = t.clone();
    let (flags, hypervisor) = inner
        .call(move |inner| {
            // Another client may take the free target or unit vdev chose between its reading
            // and libvirt's attach: choose again, twice at most.
            let mut attempt = 0;
            loop {
                match try_attach(inner, &d, &t2, &plan, &alias, scope, &passthrough) {
                    Err(Error::DeviceExists { .. })
                        if attempt < 2 && (plan.target.is_none() || !plan.placed) =>
                    {
                        attempt += 1;
                    }
                    r => return r,
                }
            }
        })
        .await?;
    if flags & LIVE == 0 || !tells_device_events(&hypervisor) {
        // libvirt tells no event for a change of the stored configuration, nor libxl for any.
        inner.hub.send(DeviceEvent::Added {
            domain: domain.clone(),
            device_type: t.clone(),
            reference: reference.clone(),
        });
    }
    Ok(reference)
}

/// Whether libvirt's driver for domains of `hypervisor` (the domain XML's `type`) sends device
/// events: libxl (`xen`) sends none, so vdev sends those of its own changes itself.
pub(crate) fn tells_device_events(hypervisor: &str) -> bool {
    hypervisor != "xen"
}

/// One try of an attach: read the definitions the scope touches, choose a free target and
/// SCSI unit, ask libvirt. Blocking.
fn try_attach(
    inner: &Inner,
    d: &Domain,
    t2: &DeviceType,
    plan: &Plan,
    alias: &str,
    scope: Option<Scope>,
    passthrough: &[String],
) -> Result<(u32, String)> {
    let mut el = plan.el.clone();
    let mut ctx = Context::new("attach", &d.name);
    let dom = inner.lookup(d, &ctx)?;
    // Only what the choice needs: no device's attributes.
    let (defs, flags) = Definitions::read_for(&dom, &ctx, scope, xml::Detail::Keys)?;
    let defs_touched = touched(&defs, flags);
    match plan.kind {
        Kind::Disk => {
            let taken = |name: &str| {
                defs_touched.iter().any(|x| {
                    x.devices
                        .iter()
                        .any(|dev| dev.kind == Kind::Disk && dev.key == name)
                })
            };
            let target = match &plan.target {
                Some(tg) if taken(tg) => {
                    return Err(Error::DeviceExists {
                        domain: d.name.clone(),
                        device_type: t2.to_string(),
                        reference: format!("target {tg}"),
                    })
                }
                Some(tg) => tg.clone(),
                None => (0..)
                    .map(|i| xml::target_name(xml::target_prefix(&plan.bus), i))
                    .find(|n| !taken(n))
                    .expect("an unbounded range has a free name"),
            };
            ctx = ctx.device(t2.as_str(), &target);
            el.child_mut("target").set("dev", &target);
            el.child_mut("target").set("bus", &plan.bus);
            if plan.bus == "scsi" && !plan.placed {
                if let Some((c, u)) = free_scsi_unit(&defs_touched) {
                    el.children.push(
                        El::new("address")
                            .attr("type", "drive")
                            .attr("controller", &c.to_string())
                            .attr("bus", "0")
                            .attr("target", "0")
                            .attr("unit", &u.to_string()),
                    );
                }
            }
        }
        Kind::Nic => {
            // As the QEMU driver: virtio unless asked (libvirt's own default on q35 is
            // a conventional PCI model that fits no PCIe root port).
            let qemu = defs_touched
                .iter()
                .any(|x| matches!(x.hypervisor.as_str(), "qemu" | "kvm"));
            if qemu && !el.children.iter().any(|c| c.name == "model") {
                el.children
                    .push(El::new("model").attr("type", DEFAULT_NIC_MODEL));
            }
            if let Some(m) = &plan.mac {
                ctx = ctx.device(t2.as_str(), m);
                if defs_touched.iter().any(|x| {
                    x.devices
                        .iter()
                        .any(|dev| dev.kind == Kind::Nic && &dev.key == m)
                }) {
                    return Err(Error::DeviceExists {
                        domain: d.name.clone(),
                        device_type: t2.to_string(),
                        reference: format!("mac {m}"),
                    });
                }
            }
        }
    }
    el.remove_children("alias");
    el.children.push(El::new("alias").attr("name", alias));
    let text = el.to_xml();
    tracing::debug!(xml = %text, flags, "attach");
    dom.attach_device_flags(&text, flags)
        .map_err(|e| name_passthrough(ctx.map(e.into()), passthrough))?;
    inner.remember(alias, plan.kind);
    let hypervisor = defs_touched
        .first()
        .map(|x| x.hypervisor.clone())
        .unwrap_or_default();
    Ok((flags, hypervisor))
}

/// libvirt's refusal of the device XML names the XML attribute and element it refused: name the
/// pass-through attribute that wrote it (`xml.driver.cache` for `'cache' in element 'driver'`).
fn name_passthrough(e: Error, given: &[String]) -> Error {
    match e {
        Error::InvalidAttribute { name, reason } if name == "xml" => {
            let quoted = |w: &str| reason.contains(&format!("'{w}'"));
            let named = given.iter().find(|g| {
                let parts: Vec<&str> = g[xml::PASSTHROUGH.len()..].split('.').collect();
                parts.iter().all(|p| quoted(p))
            });
            Error::InvalidAttribute {
                name: named.cloned().unwrap_or(name),
                reason,
            }
        }
        e => e,
    }
}

/// The first SCSI controller every touched definition has, and its lowest unit free in all.
fn free_scsi_unit(defs: &[&DomXml]) -> Option<(u32, u32)> {
    let first = defs.first()?;
    let controller = *first
        .scsi_controllers
        .iter()
        .find(|c| defs.iter().all(|d| d.scsi_controllers.contains(c)))?;
    let unit = (0..16384u32).find(|u| {
        defs.iter()
            .all(|d| !d.scsi_units.contains(&(controller, *u)))
    })?;
    Some((controller, unit))
}

/// Change a CD-ROM's medium or a NIC's link in place.
pub(crate) async fn update(
    inner: &Arc<Inner>,
    domain: &Domain,
    t: &DeviceType,
    reference: &DeviceRef,
    attrs: &Attributes,
    scope: Option<Scope>,
) -> Result<()> {
    let kind = Kind::of(t).ok_or_else(|| Error::Unsupported {
        driver: crate::NAME.into(),
        operation: format!("update of a {t}"),
        detail: "the libvirt driver updates disk and network devices".into(),
    })?;
    // Check the values before anything is read or changed.
    crate::xml::check_chars(attrs)?;
    let force = match attrs.get("force") {
        Some(v) => bool_attr("force", v)?,
        None => false,
    };
    if let Some(s) = attrs.get("source").filter(|s| !s.is_empty()) {
        absolute("source", s)?;
    }
    if let Some(f) = attrs.get("format") {
        word("format", f, "raw")?;
    }
    if let Some(l) = attrs.get("link") {
        one_of("link", l, LINKS)?;
    }
    let (d, t2, r, a) = (domain.clone(), t.clone(), reference.clone(), attrs.clone());
    inner
        .call(move |inner| {
            let ctx = Context::new("update", &d.name).device(t2.as_str(), r.as_str());
            let dom = inner.lookup(&d, &ctx)?;
            let (defs, mut flags) =
                Definitions::read_for(&dom, &ctx, scope, xml::Detail::Listing)?;
            let def = if flags & LIVE != 0 { defs.live.as_ref() } else { defs.stored.as_ref() };
            let dev = def
                .into_iter()
                .chain(touched(&defs, flags))
                .flat_map(|x| x.devices.iter())
                .find(|dev| dev.kind == kind && dev.answers_to(r.as_str()))
                .ok_or_else(|| Error::DeviceNotFound {
                    domain: d.name.clone(),
                    device_type: t2.to_string(),
                    reference: r.to_string(),
                })?;
            let mut el = dev.el()?;
            match kind {
                Kind::Disk => {
                    let medium = a.get("source").is_some() || a.get("format").is_some();
                    if medium && dev.get("media") != Some("cdrom") {
                        return Err(Error::invalid_attribute(
                            if a.get("source").is_some() { "source" } else { "format" },
                            "only a CD-ROM drive's medium changes in place; detach the disk and attach another",
                        ));
                    }
                    if let Some(s) = a.get("source") {
                        el.remove_children("source");
                        el.remove_children("backingStore");
                        if !s.is_empty() {
                            let key = if el.attrs.iter().any(|(k, v)| k == "type" && v == "block") { "dev" } else { "file" };
                            el.children.push(El::new("source").attr(key, s));
                        }
                    }
                    if let Some(f) = a.get("format") {
                        el.child_mut("driver").set("type", f);
                    }
                    if force {
                        flags |= virt_sys::VIR_DOMAIN_DEVICE_MODIFY_FORCE;
                    }
                }
                Kind::Nic => {
                    if let Some(l) = a.get("link") {
                        el.child_mut("link").set("state", l);
                    }
                }
            }
            let text = el.to_xml();
            tracing::debug!(xml = %text, flags, "update");
            dom.update_device_flags(&text, flags)
                .map_err(|e| match ctx.map(e.into()) {
                    Error::DeviceBusy {
                        domain,
                        device_type,
                        reference,
                        reason,
                    } if force => Error::DeviceBusy {
                        domain,
                        device_type,
                        reference,
                        reason: format!("even with force=true, {reason}")
                            .replace("; update with force=true to open it anyway", ""),
                    },
                    e => e,
                })
        })
        .await?;
    let changed: Vec<(String, String)> = attrs
        .iter()
        .filter(|(n, _)| *n != "force")
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    if let Ok(attributes) = Attributes::from_pairs(changed) {
        inner.hub.send(DeviceEvent::Updated {
            domain: domain.clone(),
            device_type: t.clone(),
            reference: reference.clone(),
            attributes,
        });
    }
    Ok(())
}

/// Whether attach would accept a disk with these attributes (before libvirt is asked).
#[cfg(test)]
pub(crate) fn check_disk(schemas: &[DeviceTypeSchema], a: &Attributes) -> Result<()> {
    disk_plan(schemas, a).map(|_| ())
}
