//! The rules of each device type: its schema, and how a device of it is created and updated
//! (the Xen vocabulary of the disk and network types, and the custom types of a state file).

use vdev_core::{
    AttributeSpec, Attributes, DeviceRef, DeviceType, DeviceTypeSchema, Error, Result,
};

use crate::format::*;

/// How one device type is created.
#[derive(Debug, Clone, Copy)]
pub enum Rules<'a> {
    /// Xen vbd vocabulary.
    Disk,
    /// Xen vif vocabulary.
    Network,
    /// Defined in the state file.
    Custom(&'a CustomType),
    /// A real driver's type (`like=DRIVER`), from its profile.
    Like(&'static vdev_core::profile::TypeProfile),
}

const DISK_DESC: &str = "a virtual block device (Xen vbd vocabulary); its ref is the Xen device number of `dev` (xvdb = 51728)";
const NET_DESC: &str =
    "a virtual network interface (Xen vif vocabulary); its ref is its handle (0, 1, ...)";

impl Rules<'_> {
    pub(crate) fn schema(&self, t: &DeviceType) -> DeviceTypeSchema {
        if let Rules::Like(tp) = self {
            return tp.schema.clone();
        }
        let backend = AttributeSpec::optional(
            "backend",
            "the backend domain, by name or id (default Domain-0); listed as backend-id and bkdom-name",
            "Domain-0",
        )
        .not_listed();
        let (description, attributes) = match self {
            Rules::Disk => (
                DISK_DESC.to_owned(),
                vec![
                    AttributeSpec::required("uname", "what backs the disk: phy:DEVICE or file:PATH; on a CD-ROM drive (devtype=cdrom) its medium, empty for none, and changeable by update (empty ejects)", "file:/var/lib/xen/images/data.img").updatable(),
                    AttributeSpec::optional("devtype", "disk (default) or cdrom: a CD-ROM drive, whose medium can be changed in place", "cdrom"),
                    AttributeSpec::required("dev", "the device name in the guest (xvdX, sdX, hdX, optionally with a partition number), or a Xen device number", "xvdb"),
                    AttributeSpec::required("mode", "r for read-only, w for read-write (ro and rw are accepted too)", "w").spelling("ro", "r").spelling("rw", "w"),
                    backend,
                ],
            ),
            Rules::Network => (
                NET_DESC.to_owned(),
                vec![
                    AttributeSpec::optional("mac", "the MAC address; generated in Xen's 00:16:3e range when absent; unique on the host", "00:16:3e:12:34:56").case_insensitive(),
                    AttributeSpec::optional("bridge", "the bridge in the backend domain (default xenbr0)", "xenbr0"),
                    AttributeSpec::optional("script", "the backend's hotplug script (default /etc/xen/scripts/vif-bridge)", "/etc/xen/scripts/vif-bridge"),
                    AttributeSpec::optional("ip", "the guest's IP addresses, separated by spaces", "192.0.2.10"),
                    AttributeSpec::optional("link", "up (default) or down: whether the guest sees a cable; changeable by update", "down").updatable(),
                    backend,
                ],
            ),
            Rules::Custom(c) => (
                c.description.clone(),
                c.attributes
                    .iter()
                    .map(|a| AttributeSpec {
                        name: a.name.clone(),
                        aliases: a.aliases.clone(),
                        required: a.required,
                        description: match &a.values {
                            Some(v) => format!("{} (one of: {})", a.description, v.join(", ")),
                            None => a.description.clone(),
                        },
                        updatable: a.updatable,
                        ..AttributeSpec::optional(&a.name, "", &a.example)
                    })
                    .collect(),
            ),
            Rules::Like(_) => unreachable!("answered above"),
        };
        let (identity, reference_attribute) = match self {
            Rules::Disk => (vec!["dev".into(), "uname".into()], None),
            Rules::Network => (vec!["mac".into()], None),
            Rules::Custom(c) => (
                c.ref_attribute.iter().cloned().collect(),
                c.ref_attribute.clone(),
            ),
            Rules::Like(_) => unreachable!("answered above"),
        };
        DeviceTypeSchema {
            device_type: t.clone(),
            description,
            attributes,
            passthrough_prefixes: Vec::new(),
            identity,
            reference_attribute,
        }
    }

    /// Validate attributes and compute the reference and the listed attributes. Changes nothing.
    pub(crate) fn create(
        &self,
        h: &HostState,
        domid: u32,
        t: &DeviceType,
        attrs: &Attributes,
    ) -> Result<(DeviceRef, Attributes)> {
        let mut listed = Attributes::new();
        let port = h.next_port;
        match self {
            Rules::Like(tp) => crate::like::create(tp, h, domid, t, attrs),
            Rules::Disk => {
                let cdrom = match attrs.get("devtype").unwrap_or("disk") {
                    "disk" => false,
                    "cdrom" => true,
                    v => {
                        return Err(Error::invalid_attribute(
                            "devtype",
                            format!("'{}' is not disk or cdrom", v.escape_default()),
                        ))
                    }
                };
                let uname = attrs.get("uname").unwrap_or_default();
                check_uname(uname, cdrom)?;
                let dev = attrs.get("dev").unwrap_or_default();
                let devid = xen_devid::devid_from_name(dev)
                    .map_err(|e| Error::invalid_attribute("dev", e.to_string()))?;
                let mode = match attrs.get("mode").unwrap_or_default() {
                    "r" | "ro" => "r",
                    "w" | "rw" => "w",
                    m => {
                        return Err(Error::invalid_attribute(
                            "mode",
                            format!(
                                "'{}' is not a mode; use r (read-only) or w (read-write)",
                                m.escape_default()
                            ),
                        ))
                    }
                };
                let bid = h.backend_id(attrs.get("backend"))?;
                let reference = DeviceRef::new(devid.to_string())?;
                for (n, v) in [
                    ("uname", uname.to_owned()),
                    ("dev", dev.to_owned()),
                    ("mode", mode.to_owned()),
                    ("virtual-device", devid.to_string()),
                    ("backend-id", bid.to_string()),
                    ("bkdom-name", h.domains[&bid].name.clone()),
                    ("state", "4".to_owned()),
                    (
                        "backend",
                        format!("/local/domain/{bid}/backend/vbd/{domid}/{devid}"),
                    ),
                    ("ring-ref", port.to_string()),
                    ("event-channel", (port + 1).to_string()),
                ] {
                    listed.insert(n, v)?;
                }
                if cdrom {
                    listed.insert("devtype", "cdrom".to_owned())?;
                }
                Ok((reference, listed))
            }
            Rules::Network => {
                let mac = match attrs.get("mac") {
                    Some(m) => {
                        let m = vdev_core::unicast_mac("mac", m, "00:16:3e:12:34:56")?;
                        if let Some((dom, r)) = h.mac_owner(&m) {
                            return Err(Error::DeviceExists {
                                domain: h.as_domain(domid).name,
                                device_type: t.to_string(),
                                reference: format!(
                                    "with mac {m} (network device {r} of domain {dom} has it)"
                                ),
                            });
                        }
                        m
                    }
                    None => h.free_mac(domid),
                };
                let bridge = attrs.get("bridge").unwrap_or("xenbr0");
                if bridge.is_empty()
                    || bridge.len() > 15
                    || !bridge
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                {
                    return Err(Error::invalid_attribute(
                        "bridge",
                        format!(
                            "'{}' is not an interface name (1 to 15 of A-Z a-z 0-9 . _ -)",
                            bridge.escape_default()
                        ),
                    ));
                }
                if let Some(ip) = attrs.get("ip") {
                    if ip.split_whitespace().next().is_none()
                        || ip
                            .split_whitespace()
                            .any(|a| a.parse::<std::net::IpAddr>().is_err())
                    {
                        return Err(Error::invalid_attribute(
                            "ip",
                            format!(
                                "'{}' is not a list of IP addresses separated by spaces",
                                ip.escape_default()
                            ),
                        ));
                    }
                }
                let link = check_link(attrs.get("link").unwrap_or("up"))?;
                let bid = h.backend_id(attrs.get("backend"))?;
                let handle = RefKey::next_number(
                    h.domains[&domid]
                        .devices
                        .get(t)
                        .into_iter()
                        .flat_map(|m| m.keys()),
                );
                let script = attrs.get("script").unwrap_or("/etc/xen/scripts/vif-bridge");
                for (n, v) in [
                    ("handle", handle.to_string()),
                    ("mac", mac),
                    ("bridge", bridge.to_owned()),
                    ("script", script.to_owned()),
                    ("backend-id", bid.to_string()),
                    ("bkdom-name", h.domains[&bid].name.clone()),
                    ("state", "4".to_owned()),
                    (
                        "backend",
                        format!("/local/domain/{bid}/backend/vif/{domid}/{handle}"),
                    ),
                    ("tx-ring-ref", port.to_string()),
                    ("rx-ring-ref", (port + 1).to_string()),
                    ("event-channel", (port + 2).to_string()),
                ] {
                    listed.insert(n, v)?;
                }
                if let Some(ip) = attrs.get("ip") {
                    listed.insert("ip", ip.to_owned())?;
                }
                listed.insert("link", link.to_owned())?;
                Ok((DeviceRef::new(handle.to_string())?, listed))
            }
            Rules::Custom(c) => {
                for a in &c.attributes {
                    match (given(a, attrs), &a.default) {
                        (Some((n, v)), _) => {
                            if let Some(values) = &a.values {
                                if !values.iter().any(|x| x == v) {
                                    return Err(Error::invalid_attribute(
                                        n,
                                        format!(
                                            "'{}' is not accepted; use one of: {}",
                                            v.escape_default(),
                                            values.join(", ")
                                        ),
                                    ));
                                }
                            }
                            listed.insert(a.name.clone(), v.to_owned())?;
                        }
                        (None, Some(d)) => listed.insert(a.name.clone(), d.clone())?,
                        (None, None) => {}
                    }
                }
                let reference = match &c.ref_attribute {
                    Some(name) => DeviceRef::new(
                        c.attributes
                            .iter()
                            .find(|a| &a.name == name)
                            .and_then(|a| given(a, attrs))
                            .map_or("", |(_, v)| v),
                    )
                    .map_err(|e| match e {
                        Error::InvalidAttribute { reason, .. } => {
                            Error::invalid_attribute(name, reason)
                        }
                        e => e,
                    })?,
                    None => {
                        let next = h.domains[&domid]
                            .devices
                            .get(t)
                            .and_then(|m| {
                                m.keys()
                                    .filter_map(|k| match k {
                                        RefKey::Num(n) => Some(*n),
                                        _ => None,
                                    })
                                    .max()
                            })
                            .map_or(0, |n| n + 1);
                        DeviceRef::new(next.to_string())?
                    }
                };
                Ok((reference, listed))
            }
        }
    }
}

impl Rules<'_> {
    /// Validate an update of `dev` and return what changes, with the listed new values.
    /// Changes nothing. The core has checked that every name is updatable.
    pub(crate) fn update(
        &self,
        dev: &DeviceRecord,
        attrs: &Attributes,
        guest: crate::Guest,
    ) -> Result<Attributes> {
        let mut changes = Attributes::new();
        match self {
            Rules::Like(tp) => return crate::like::update(tp, dev, attrs, guest),
            Rules::Disk => {
                if let Some(uname) = attrs.get("uname") {
                    if dev.attrs.get("devtype") != Some("cdrom") {
                        return Err(Error::invalid_attribute(
                            "uname",
                            format!(
                                "disk {} is not a CD-ROM drive: only the medium of a CD-ROM drive (devtype=cdrom) can be changed in place; detach and attach the disk instead",
                                dev.reference
                            ),
                        ));
                    }
                    check_uname(uname, true)?;
                    changes.insert("uname", uname.to_owned())?;
                }
            }
            Rules::Network => {
                if let Some(link) = attrs.get("link") {
                    changes.insert("link", check_link(link)?.to_owned())?;
                }
            }
            Rules::Custom(c) => {
                for a in c.attributes.iter().filter(|a| a.updatable) {
                    if let Some((n, v)) = given(a, attrs) {
                        if let Some(values) = &a.values {
                            if !values.iter().any(|x| x == v) {
                                return Err(Error::invalid_attribute(
                                    n,
                                    format!(
                                        "'{}' is not accepted; use one of: {}",
                                        v.escape_default(),
                                        values.join(", ")
                                    ),
                                ));
                            }
                        }
                        changes.insert(a.name.clone(), v.to_owned())?;
                    }
                }
            }
        }
        Ok(changes)
    }
}

/// A disk's `uname`: `phy:DEVICE` or `file:PATH`, or empty for a CD-ROM drive without a medium.
fn check_uname(uname: &str, cdrom: bool) -> Result<()> {
    if cdrom && uname.is_empty() {
        return Ok(());
    }
    let ok = ["phy:", "file:"]
        .iter()
        .any(|p| uname.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
    if ok {
        return Ok(());
    }
    let empty = if cdrom {
        ", or empty for no medium"
    } else {
        ""
    };
    Err(Error::invalid_attribute("uname", format!("'{}' is not phy:DEVICE or file:PATH{empty}; for example file:/var/lib/xen/images/data.img or phy:/dev/vg0/data", uname.escape_default())))
}

/// A NIC's `link`: `up` or `down`.
fn check_link(link: &str) -> Result<&'static str> {
    match link {
        "up" => Ok("up"),
        "down" => Ok("down"),
        v => Err(Error::invalid_attribute(
            "link",
            format!("'{}' is not up or down", v.escape_default()),
        )),
    }
}

/// The name an attribute of a custom type was given under (its name or an alias) and its value.
/// The core has refused two names of one attribute, so at most one is set.
fn given<'a>(a: &'a CustomAttr, attrs: &'a Attributes) -> Option<(&'a str, &'a str)> {
    std::iter::once(&a.name)
        .chain(&a.aliases)
        .find_map(|n| Some((n.as_str(), attrs.get(n)?)))
}

impl HostState {
    pub(crate) fn mac_owner(&self, mac: &str) -> Option<(String, String)> {
        self.domains.values().find_map(|d| {
            d.devices
                .get(&DeviceType::NETWORK)?
                .values()
                .find_map(|dev| {
                    (dev.attrs.get("mac") == Some(mac))
                        .then(|| (d.name.clone(), dev.reference.to_string()))
                })
        })
    }

    pub(crate) fn free_mac(&self, domid: u32) -> String {
        let mut n = self.next_port.wrapping_mul(2_654_435_761) ^ u64::from(domid);
        loop {
            let mac = format!(
                "00:16:3e:{:02x}:{:02x}:{:02x}",
                (n >> 16) as u8 & 0x7f,
                (n >> 8) as u8,
                n as u8
            );
            if self.mac_owner(&mac).is_none() {
                return mac;
            }
            n = n.wrapping_add(1);
        }
    }
}
