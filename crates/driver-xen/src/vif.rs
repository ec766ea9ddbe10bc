//! Network interfaces (vif): attribute rules and libxl 4.17's XenStore layout.

use vdev_core::{AttributeSpec, Attributes, DeviceType, DeviceTypeSchema, Error, Result};

use crate::paths::{DevPaths, Keys};

/// A NIC's hotplug script: a vif script of `/etc/xen/scripts` (`vif-bridge`, `vif-route`,
/// `vif-nat`, `vif-openvswitch`, `vif2`, ...), given by name or by full path. Scripts run as
/// root in Domain-0, so nothing else is accepted: not another kind of script (`block`), not a
/// path out of the folder.
pub(crate) fn vif_script(s: &str) -> Result<String> {
    let name = s.strip_prefix("/etc/xen/scripts/").unwrap_or(s);
    let ok = (name.starts_with("vif-") || name.starts_with("vif2"))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.contains("..");
    if ok {
        Ok(format!("/etc/xen/scripts/{name}"))
    } else {
        Err(Error::invalid_attribute(
            "script",
            format!(
                "'{}' is not a vif script of /etc/xen/scripts (vif-bridge, vif-route, vif-nat, vif-openvswitch, ...): scripts run as root in Domain-0, so a NIC may name only a vif script",
                s.escape_default()
            ),
        ))
    }
}

/// The script libxl names by default.
pub(crate) const BRIDGE_SCRIPT: &str = "/etc/xen/scripts/vif-bridge";

/// The frontend keys listed.
pub(crate) const FE_KEYS: &[&str] = &[
    "backend",
    "backend-id",
    "state",
    "handle",
    "tx-ring-ref",
    "rx-ring-ref",
    "event-channel-tx",
    "event-channel-rx",
];
/// The backend keys listed (`state` as `backend-state`).
pub(crate) const BE_KEYS: &[&str] = &[
    "mac",
    "bridge",
    "script",
    "ip",
    "type",
    "state",
    "online",
    "hotplug-status",
];

/// A network interface to attach, validated.
#[derive(Debug, Clone)]
pub(crate) struct NicSpec {
    pub mac: String,
    pub bridge: String,
    pub script: String,
    pub ip: Option<String>,
    pub backend: Option<String>,
    /// The bridge as given (libxl stores only what was given).
    pub bridge_given: Option<String>,
    /// The script as given.
    pub script_given: Option<String>,
    /// What to do with libxl's stored configuration.
    pub recorded: crate::libxl::Recorded,
}

fn random_mac() -> String {
    // Xen's OUI; the rest from the clock and a counter (not cryptographic, only distinct).
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = (t ^ (t >> 24) ^ ((std::process::id() as u64) << 7))
        .wrapping_add(N.fetch_add(1, Ordering::Relaxed) as u64 * 0x9e37_79b9)
        & 0x7f_ffff;
    format!(
        "00:16:3e:{:02x}:{:02x}:{:02x}",
        (x >> 16) & 0x7f,
        (x >> 8) & 0xff,
        x & 0xff
    )
}

impl NicSpec {
    /// What its entry in libxl's stored configuration is made of.
    pub(crate) fn libxl_entry(&self) -> crate::libxl::NicEntry<'_> {
        crate::libxl::NicEntry {
            mac: &self.mac,
            ip: self.ip.as_deref(),
            bridge: self.bridge_given.as_deref(),
            script: self.script_given.as_deref(),
            backend: self.backend.as_deref(),
        }
    }

    /// Interpret the attributes; changes nothing.
    pub(crate) fn parse(attrs: &Attributes) -> Result<Self> {
        let mac = match attrs.get("mac") {
            None => random_mac(),
            Some(m) => vdev_core::unicast_mac("mac", m, "00:16:3e:12:34:56")?,
        };
        let bridge = attrs.get("bridge").unwrap_or("xenbr0").to_owned();
        if bridge.is_empty()
            || bridge.len() > 15
            || !bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            || bridge.starts_with('.')
        {
            return Err(Error::invalid_attribute(
                "bridge",
                format!(
                    "'{}' is not a network interface name",
                    bridge.escape_default()
                ),
            ));
        }
        let script = match attrs.get("script") {
            None => BRIDGE_SCRIPT.to_owned(),
            Some(s) => vif_script(s)?,
        };
        let ip = match attrs.get("ip") {
            None => None,
            Some(v)
                if !v.trim().is_empty()
                    && v.bytes().all(|b| {
                        b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'/' | b' ')
                    }) =>
            {
                Some(v.to_owned())
            }
            Some(v) => {
                return Err(Error::invalid_attribute(
                    "ip",
                    format!("'{}' is not a list of IP addresses", v.escape_default()),
                ))
            }
        };
        let backend = attrs.get("backend").map(str::to_owned);
        if let Some(b) = &backend {
            if b.is_empty() || b.contains(['/', '\0']) || b == "." || b == ".." {
                return Err(Error::invalid_attribute(
                    "backend",
                    format!("'{}' is not a domain name or id", b.escape_default()),
                ));
            }
        }
        for (n, _) in attrs.iter() {
            if !NIC_ATTRS.contains(&n) {
                return Err(Error::invalid_attribute(
                    n,
                    format!("unknown network attribute; known: {}", NIC_ATTRS.join(", ")),
                ));
            }
        }
        Ok(NicSpec {
            mac,
            bridge_given: attrs.get("bridge").map(|_| bridge.clone()),
            bridge,
            script_given: attrs.get("script").map(str::to_owned),
            script,
            ip,
            backend,
            recorded: crate::libxl::Recorded::parse(attrs.get("recorded"))?,
        })
    }
}

/// Every name the network schema accepts.
const NIC_ATTRS: &[&str] = &["mac", "bridge", "script", "ip", "backend", "recorded"];

/// libxl 4.17's keys, in its order: backend, frontend.
pub(crate) fn layout(
    domid: u32,
    backend: u32,
    handle: u32,
    n: &NicSpec,
    p: &DevPaths,
) -> (Keys, Keys) {
    let mut be: Keys = vec![
        ("frontend", p.frontend.clone()),
        ("frontend-id", domid.to_string()),
        ("online", "1".into()),
        ("state", "1".into()),
        ("script", n.script.clone()),
        ("mac", n.mac.clone()),
    ];
    if let Some(ip) = &n.ip {
        be.push(("ip", ip.clone()));
    }
    be.extend([
        ("bridge", n.bridge.clone()),
        ("handle", handle.to_string()),
        ("type", "vif".into()),
        ("hotplug-status", String::new()),
    ]);
    let fe = vec![
        ("backend", p.backend.clone()),
        ("backend-id", backend.to_string()),
        ("state", "1".into()),
        ("handle", handle.to_string()),
        ("mac", n.mac.clone()),
        ("trusted", "1".into()),
        ("mtu", "1500".into()),
    ];
    (be, fe)
}

/// The network schema.
pub(crate) fn schema() -> DeviceTypeSchema {
    DeviceTypeSchema {
        device_type: DeviceType::NETWORK,
        description: "a Xen virtual network interface (vif) served by netback; its ref is its handle (0, 1, ...)".into(),
        attributes: vec![
            AttributeSpec::optional("mac", "the MAC address; generated in Xen's 00:16:3e range when absent", "00:16:3e:12:34:56").case_insensitive(),
            AttributeSpec::optional("bridge", "the bridge in the backend domain (default xenbr0)", "xenbr0"),
            AttributeSpec::optional("script", "the backend's hotplug script: a vif script of /etc/xen/scripts (default vif-bridge; vif-route, vif-nat, vif-openvswitch, ...)", "vif-bridge"),
            AttributeSpec::optional("ip", "the guest's IP addresses, separated by spaces", "192.0.2.10"),
            AttributeSpec::optional("backend", "the backend domain, by name or id (default Domain-0); listed as backend-id and bkdom-name", "Domain-0").not_listed(),
            crate::libxl::recorded_spec(),
        ],
        passthrough_prefixes: Vec::new(),
        identity: vec!["mac".into()],
        reference_attribute: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vif_scripts_of_the_scripts_folder() {
        for (given, want) in [
            ("vif-bridge", "/etc/xen/scripts/vif-bridge"),
            ("/etc/xen/scripts/vif-route", "/etc/xen/scripts/vif-route"),
            ("vif-openvswitch", "/etc/xen/scripts/vif-openvswitch"),
            ("vif2", "/etc/xen/scripts/vif2"),
        ] {
            assert_eq!(vif_script(given).unwrap(), want);
        }
        for bad in [
            "block",
            "/etc/xen/scripts/block",
            "hotplugpath.sh",
            "/etc/xen/scripts/vif-../block",
            "vif-bridge/../../../bin/sh",
            "/usr/local/bin/vif-bridge",
            "",
            "vif-bridge;id",
        ] {
            assert!(
                matches!(vif_script(bad), Err(Error::InvalidAttribute { .. })),
                "{bad}"
            );
        }
    }
}
