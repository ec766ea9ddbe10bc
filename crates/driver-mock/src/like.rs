//! `like=DRIVER`: the mock speaks a real driver's vocabulary, from the profile that driver
//! exports ([`vdev_core::profile`]; the JSON copies in `profiles/` are checked against the live
//! drivers by their drift tests). One engine reads any profile: names, aliases, spellings,
//! allowed values, defaults, forms, references, removable media (design 0017).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use vdev_core::profile::{DriverProfile, RefFormat, TypeProfile, ValueForm};
use vdev_core::{Attributes, DeviceRef, DeviceType, Error, Result};

use crate::control::Guest;
use crate::format::{DeviceRecord, HostState, RefKey};

/// A driver whose vocabulary the mock can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Like {
    /// The QEMU driver (`like=qemu`).
    Qemu,
    /// The Xen driver (`like=xen`).
    Xen,
    /// The libvirt driver (`like=libvirt`), with the domain capabilities of libvirt 9.0 and
    /// QEMU 7.2 (q35, TCG) as recorded in the driver's tests.
    Libvirt,
}

/// The exported profiles, as embedded (`profiles/DRIVER.json`). Regenerate one with
/// `VDEV_BLESS=1 cargo test -p vdev-driver-DRIVER --test profile`.
pub const PROFILE_JSON: &[(Like, &str)] = &[
    (Like::Qemu, include_str!("../profiles/qemu.json")),
    (Like::Xen, include_str!("../profiles/xen.json")),
    (Like::Libvirt, include_str!("../profiles/libvirt.json")),
];

impl Like {
    /// Every driver the mock can speak like.
    pub const ALL: [Like; 3] = [Like::Qemu, Like::Xen, Like::Libvirt];

    /// The driver's name, as in `like=NAME`.
    pub fn as_str(self) -> &'static str {
        match self {
            Like::Qemu => "qemu",
            Like::Xen => "xen",
            Like::Libvirt => "libvirt",
        }
    }

    /// The driver's profile (parsed once).
    pub fn profile(self) -> &'static DriverProfile {
        static PARSED: [OnceLock<DriverProfile>; 3] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let i = self as usize;
        PARSED[i].get_or_init(|| {
            let json = PROFILE_JSON[i].1;
            serde_json::from_str(json).expect("the embedded profile is valid (tested)")
        })
    }
}

impl fmt::Display for Like {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Like {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Like::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "like={s}: the mock speaks like {}",
                    Like::ALL.map(Like::as_str).join(", ")
                )
            })
    }
}

/// The profile of a host's `like`, if it has one (checked when the host is made or read).
pub(crate) fn profile_of(like: &Option<String>) -> Option<&'static DriverProfile> {
    like.as_deref()
        .and_then(|l| l.parse::<Like>().ok())
        .map(Like::profile)
}

/// The attributes as given, under each attribute's name, in the form the driver lists them.
struct Given<'a> {
    tp: &'static TypeProfile,
    values: Vec<(&'static str, Cow<'a, str>)>,
}

impl<'a> Given<'a> {
    fn read(tp: &'static TypeProfile, attrs: &'a Attributes) -> Given<'a> {
        let mut values = Vec::with_capacity(attrs.len());
        for spec in &tp.schema.attributes {
            if let Some(v) = spec.names().find_map(|n| attrs.get(n)) {
                values.push((spec.name.as_str(), spec.normal(v)));
            }
        }
        Given { tp, values }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The value, given or by default (a constraint of one value that applies, then the
    /// plain default).
    fn effective(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.get(name) {
            Some(v) => Some(Cow::Borrowed(v)),
            None => self.default_of(name).map(Cow::Borrowed),
        }
    }

    /// The value an attribute not given takes: a constraint of one value that applies, else
    /// the plain default.
    fn default_of(&self, name: &str) -> Option<&'static str> {
        for c in &self.tp.constraints {
            if c.attribute == name && c.values.len() == 1 && self.holds(&c.when) {
                return Some(c.values[0].as_str());
            }
        }
        self.plain_default(name)
    }

    /// The default of `defaults_with` when its other attribute is given, else of `defaults`.
    fn plain_default(&self, name: &str) -> Option<&'static str> {
        if let Some((other, v)) = self.tp.defaults_with.get(name) {
            if self.get(other).is_some_and(|o| !o.is_empty()) {
                return Some(v.as_str());
            }
        }
        self.tp.defaults.get(name).map(String::as_str)
    }

    fn holds(&self, when: &std::collections::BTreeMap<String, String>) -> bool {
        when.iter()
            .all(|(k, v)| self.get(k).or_else(|| self.plain_default(k)) == Some(v))
    }
}

/// Validate attributes and compute the reference and the listed attributes. Changes nothing.
pub(crate) fn create(
    tp: &'static TypeProfile,
    h: &HostState,
    domid: u32,
    t: &DeviceType,
    attrs: &Attributes,
) -> Result<(DeviceRef, Attributes)> {
    for n in &tp.update_only {
        if tp
            .schema
            .attribute(n)
            .is_some_and(|s| s.names().any(|x| attrs.contains(x)))
        {
            return Err(Error::invalid_attribute(
                n,
                format!("{n} is for an update of an existing {t}, not for attach"),
            ));
        }
    }
    let g = Given::read(tp, attrs);
    for (name, v) in &g.values {
        let name = *name;
        if let Some(allowed) = tp.values.get(name) {
            if !allowed.iter().any(|a| a == v.as_ref()) {
                return Err(Error::invalid_attribute(
                    name,
                    format!("'{}' is not {}", v.escape_default(), allowed.join(", ")),
                ));
            }
        }
        if let Some(form) = tp.forms.get(name) {
            check_form(h, name, v, form)?;
        }
    }
    for (name, (other, value)) in &tp.required_unless {
        let absent = g.get(name).is_none_or(str::is_empty);
        if absent && g.effective(other).as_deref() != Some(value.as_str()) {
            return Err(Error::MissingAttribute {
                device_type: t.to_string(),
                name: name.clone(),
                hint: format!("a {t} needs {name} unless {other}={value}"),
            });
        }
    }
    for c in &tp.constraints {
        if let Some(v) = g.get(&c.attribute) {
            if g.holds(&c.when) && !c.values.iter().any(|a| a == v) {
                let when: Vec<String> = c.when.iter().map(|(k, v)| format!("{k}={v}")).collect();
                return Err(Error::invalid_attribute(
                    &c.attribute,
                    if c.values.is_empty() {
                        format!("{} is not accepted with {}", c.attribute, when.join(", "))
                    } else {
                        format!(
                            "with {} it is {}, not '{}'",
                            when.join(", "),
                            c.values.join(", "),
                            v.escape_default()
                        )
                    },
                ));
            }
        }
    }
    if let Some(p) = tp
        .host_path
        .as_deref()
        .and_then(|n| g.get(n).map(|v| (n, v)))
    {
        let (name, path) = p;
        if !path.is_empty() && std::fs::metadata(path).is_err() {
            return Err(Error::invalid_attribute(
                name,
                format!(
                    "cannot open '{}': no such file or block device on the host",
                    path.escape_default()
                ),
            ));
        }
    }
    let dom = &h.domains[&domid];
    let siblings = || dom.devices.get(t).into_iter().flat_map(|m| m.values());
    let next_number = || RefKey::next_number(dom.devices.get(t).into_iter().flat_map(|m| m.keys()));
    let reference = match &tp.reference {
        RefFormat::Attribute {
            attribute,
            generated_prefix,
        } => match g.get(attribute) {
            Some(v) => {
                DeviceRef::new(v).map_err(|e| Error::invalid_attribute(attribute, e.to_string()))?
            }
            None => DeviceRef::new(format!("{generated_prefix}-{}", vdev_core::random_hex()))?,
        },
        RefFormat::Prefixed { prefix } => {
            let n = siblings()
                .filter_map(|d| {
                    d.reference
                        .as_str()
                        .strip_prefix(prefix.as_str())?
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .map_or(0, |n| n + 1);
            DeviceRef::new(format!("{prefix}{n}"))?
        }
        RefFormat::Generated { prefix } => {
            DeviceRef::new(format!("{prefix}{}", vdev_core::random_hex()))?
        }
        RefFormat::XenDevid { attribute } => {
            let dev = g.get(attribute).unwrap_or_default();
            let n = xen_devid::devid_from_name(dev)
                .map_err(|e| Error::invalid_attribute(attribute, e.to_string()))?;
            DeviceRef::new(n.to_string())?
        }
        RefFormat::Counter => DeviceRef::new(next_number().to_string())?,
    };
    let mut listed = Attributes::new();
    for spec in tp.schema.attributes.iter().filter(|s| s.listed) {
        let name = spec.name.as_str();
        match g.get(name) {
            Some(v) => listed.insert(name, v.to_owned())?,
            None => {
                if let Some(d) = g.default_of(name) {
                    listed.insert(name, d)?;
                }
            }
        }
    }
    if let RefFormat::Attribute { attribute, .. } = &tp.reference {
        listed.insert(attribute.as_str(), reference.to_string())?;
    }
    for (name, prefix) in &tp.generated_mac {
        if g.get(name).is_none() {
            let mut n = u32::from_str_radix(&vdev_core::random_hex(), 16).unwrap_or(0);
            let mac = loop {
                let m = format!(
                    "{prefix}:{:02x}:{:02x}:{:02x}",
                    (n >> 16) as u8 & 0x7f,
                    (n >> 8) as u8,
                    n as u8
                );
                if !siblings().any(|d| d.attrs.get(name) == Some(m.as_str())) {
                    break m;
                }
                n = n.wrapping_add(1);
            };
            listed.insert(name.as_str(), mac)?;
        }
    }
    for name in &tp.unique {
        if let Some(v) = g.get(name) {
            if let Some(d) = siblings().find(|d| d.attrs.get(name) == Some(v)) {
                return Err(Error::DeviceExists {
                    domain: dom.name.clone(),
                    device_type: t.to_string(),
                    reference: format!("with {name} {v} ({t} {} has it)", d.reference),
                });
            }
        }
    }
    if let Some(m) = &tp.medium {
        if g.effective(&m.when.0).as_deref() == Some(m.when.1.as_str())
            && g.get(&m.medium).is_none_or(str::is_empty)
        {
            // An empty drive lists no medium.
            listed.remove(&m.medium);
        }
    }
    for (name, d) in &tp.derived {
        let mut key = String::new();
        for (i, f) in d.from.iter().enumerate() {
            if i > 0 {
                key.push('+');
            }
            key.push_str(g.effective(f).as_deref().unwrap_or_default());
        }
        // Combinations are written with every attribute; a default-less one may be absent.
        let found = d
            .map
            .get(&key)
            .or_else(|| d.map.get(key.trim_end_matches('+')));
        if let Some(v) = found {
            listed.insert(name.as_str(), v.as_str())?;
        }
    }
    Ok((reference, listed))
}

fn check_form(h: &HostState, name: &str, v: &str, form: &ValueForm) -> Result<()> {
    let bad = |what: &str| {
        Err(Error::invalid_attribute(
            name,
            format!("'{}' is not {what}", v.escape_default()),
        ))
    };
    match form {
        ValueForm::Id => {
            let mut c = v.chars();
            let ok = c.next().is_some_and(|f| f.is_ascii_alphabetic())
                && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '-' | '.' | '_'));
            if !ok {
                return bad(
                    "a device id: start with a letter, then use letters, digits, '-', '.' and '_'",
                );
            }
        }
        ValueForm::Mac => {
            vdev_core::unicast_mac(name, v, "52:54:00:12:34:56")?;
        }
        ValueForm::Bool => {
            if vdev_core::parse_bool(v).is_none() {
                return bad(&format!("a boolean: write {}", vdev_core::BOOL_SPELLINGS));
            }
        }
        ValueForm::XenDevice => {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
                return bad("a Xen virtual device name (xvdX, sdX, hdX, dNpM or a number)");
            }
            xen_devid::devid_from_name(v)
                .map_err(|e| Error::invalid_attribute(name, e.to_string()))?;
        }
        ValueForm::XenUname => {
            let path = match v.split_once(':') {
                Some(("phy" | "file", p)) => p,
                _ if v.starts_with('/') => v,
                _ => return bad("phy:DEVICE or file:PATH"),
            };
            if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                return bad("an absolute, canonical path");
            }
        }
        ValueForm::IpList => {
            if v.split_whitespace().next().is_none()
                || v.split_whitespace().any(|a| {
                    a.split('/')
                        .next()
                        .unwrap_or("")
                        .parse::<std::net::IpAddr>()
                        .is_err()
                })
            {
                return bad("a list of IP addresses separated by spaces");
            }
        }
        ValueForm::Interface => {
            if v.is_empty()
                || v.len() > 15
                || v.starts_with('.')
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return bad("a network interface name");
            }
        }
        ValueForm::Domain => {
            h.backend_id(Some(v)).map_err(|_| {
                Error::invalid_attribute(
                    name,
                    format!("there is no domain '{}'", v.escape_default()),
                )
            })?;
        }
    }
    Ok(())
}

/// Validate an update of `dev` and return what changes. Changes nothing. The core has checked
/// that every name is updatable. `guest` is the guest's behaviour towards the device.
pub(crate) fn update(
    tp: &'static TypeProfile,
    dev: &DeviceRecord,
    attrs: &Attributes,
    guest: Guest,
) -> Result<Attributes> {
    let g = Given::read(tp, attrs);
    let mut changes = Attributes::new();
    let force = match &tp.medium {
        Some(m) => match g.get(&m.force) {
            None => false,
            Some(v) => vdev_core::parse_bool(v).ok_or_else(|| {
                Error::invalid_attribute(
                    &m.force,
                    format!(
                        "'{v}' is not a boolean: write {}",
                        vdev_core::BOOL_SPELLINGS
                    ),
                )
            })?,
        },
        None => false,
    };
    for (name, v) in &g.values {
        if let Some(allowed) = tp.values.get(*name) {
            // An empty medium (an eject) is no value to check.
            let eject = v.is_empty() && tp.medium.as_ref().is_some_and(|m| m.medium == *name);
            if !eject && !allowed.iter().any(|a| a == v.as_ref()) {
                return Err(Error::invalid_attribute(
                    *name,
                    format!("'{}' is not {}", v.escape_default(), allowed.join(", ")),
                ));
            }
        }
    }
    let mut medium_change = false;
    if let Some(m) = &tp.medium {
        // Every updatable attribute of a type with removable media is about the medium.
        if !g.values.is_empty() {
            if dev.attrs.get(&m.when.0) != Some(m.when.1.as_str()) {
                return Err(Error::invalid_attribute(
                    &m.medium,
                    format!(
                        "{} {} has no removable medium ({}={} only): detach it and attach it again instead",
                        dev.device_type, dev.reference, m.when.0, m.when.1
                    ),
                ));
            }
            let Some(source) = g.get(&m.medium) else {
                return Err(Error::invalid_attribute(
                    &m.force,
                    format!(
                        "give {}=... (the new medium; empty ejects) to change it",
                        m.medium
                    ),
                ));
            };
            if let Some(p) = &tp.host_path {
                if !source.is_empty() && std::fs::metadata(source).is_err() {
                    return Err(Error::invalid_attribute(
                        p,
                        format!(
                            "cannot open '{}': no such file or block device on the host",
                            source.escape_default()
                        ),
                    ));
                }
            }
            if guest.tray_locked == Some(true) && !force {
                return Err(Error::DeviceBusy {
                    domain: String::new(),
                    device_type: dev.device_type.to_string(),
                    reference: dev.reference.to_string(),
                    reason: format!(
                        "the guest has locked the tray of {}; give {}=true to open it anyway (the guest loses its medium at once), or have the guest unlock it",
                        dev.reference, m.force
                    ),
                });
            }
            medium_change = true;
        }
    }
    for (name, v) in &g.values {
        if tp.medium.as_ref().is_some_and(|m| m.force == *name) {
            continue;
        }
        changes.insert((*name).to_owned(), v.clone().into_owned())?;
    }
    if medium_change {
        let m = tp.medium.as_ref().expect("medium");
        if g.get(&m.medium).is_some_and(|s| !s.is_empty()) {
            // A new medium is listed with the defaults of what comes with it (its format).
            for spec in tp
                .schema
                .attributes
                .iter()
                .filter(|a| a.updatable && a.listed)
            {
                if changes.get(&spec.name).is_none() && spec.name != m.medium {
                    if let Some(d) = tp.defaults.get(&spec.name) {
                        changes.insert(spec.name.clone(), d.clone())?;
                    }
                }
            }
        }
    }
    Ok(changes)
}
