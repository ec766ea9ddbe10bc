//! Disks (vbd): attribute rules and libxl 4.17's XenStore layout.

use vdev_core::{AttributeSpec, Attributes, DeviceType, DeviceTypeSchema, Error, Result};

/// The script libxl names for a `phy` backend.
pub(crate) const BLOCK_SCRIPT: &str = "/etc/xen/scripts/block";

/// A disk to attach, validated.
#[derive(Debug, Clone)]
pub(crate) struct DiskSpec {
    /// What the backend opens (`params`).
    pub params: String,
    /// The guest's name for it, as given (`dev`).
    pub dev: String,
    /// Its Xen device number.
    pub devid: u32,
    /// `w` or `r`.
    pub mode: &'static str,
    /// The backend domain as given (name or id), `None` for Domain-0.
    pub backend: Option<String>,
}

fn invalid(name: &str, reason: impl Into<String>) -> Error {
    Error::InvalidAttribute {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// The first of several synonyms that is set; two different values is an error.
fn one_of(attrs: &Attributes, names: &[&'static str]) -> Result<Option<(&'static str, String)>> {
    let mut found: Option<(&'static str, String)> = None;
    for n in names {
        if let Some(v) = attrs.get(n) {
            if let Some((m, w)) = &found {
                if *w != v {
                    return Err(invalid(
                        n,
                        format!(
                            "'{n}' and '{m}' mean the same thing and disagree; give one of them"
                        ),
                    ));
                }
            } else {
                found = Some((n, v.to_owned()));
            }
        }
    }
    Ok(found)
}

/// Validate an absolute path given as a disk's backing: it becomes a XenStore value (never a
/// path), and a command-line argument of the hotplug script in the backend domain.
fn backing_path(name: &str, p: &str) -> Result<String> {
    if !p.starts_with('/') {
        return Err(invalid(name, format!("'{p}' is not an absolute path; write e.g. file:/var/lib/xen/images/data.img or phy:/dev/vg0/data")));
    }
    if p.len() > 1024 {
        return Err(invalid(name, "the path is longer than 1024 bytes"));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(invalid(name, "the path contains a control character"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(invalid(
            name,
            "the path contains '..'; give a canonical path",
        ));
    }
    Ok(p.to_owned())
}

impl DiskSpec {
    /// Interpret the attributes; changes nothing.
    pub(crate) fn parse(attrs: &Attributes) -> Result<Self> {
        for (n, _) in attrs.iter() {
            if !DISK_ATTRS.contains(&n) {
                return Err(invalid(
                    n,
                    format!("unknown disk attribute; known: {}", DISK_ATTRS.join(", ")),
                ));
            }
        }
        let params = match one_of(attrs, &["uname"])? {
            None => {
                return Err(Error::MissingAttribute {
                    device_type: "disk".into(),
                    name: "uname".into(),
                    hint: "what backs the disk, e.g. uname=file:/var/lib/xen/images/data.img"
                        .into(),
                })
            }
            Some((n, v)) => match v.split_once(':') {
                Some(("phy" | "file", p)) => backing_path(n, p)?,
                Some((kind, _)) => {
                    return Err(invalid(
                        n,
                        format!("'{kind}:' is not supported; write phy:DEVICE or file:PATH"),
                    ))
                }
                None => {
                    return Err(invalid(
                        n,
                        format!("'{v}' has no kind; write phy:DEVICE or file:PATH"),
                    ))
                }
            },
        };
        let dev = match one_of(attrs, &["dev"])? {
            Some((_, v)) => v,
            None => {
                return Err(Error::MissingAttribute {
                    device_type: "disk".into(),
                    name: "dev".into(),
                    hint: "the device name in the guest, e.g. dev=xvdb".into(),
                })
            }
        };
        if dev.is_empty() || !dev.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid(
                "dev",
                format!(
                    "'{}' is not a Xen virtual device name (xvdX, sdX, hdX, dNpM or a number)",
                    dev.escape_default()
                ),
            ));
        }
        let devid = xen_devid::devid_from_name(&dev).map_err(|e| invalid("dev", e.to_string()))?;
        let mode = match one_of(attrs, &["mode", "access"])? {
            None => "w",
            Some((n, v)) => match v.as_str() {
                "w" | "rw" => "w",
                "r" | "ro" => "r",
                _ => {
                    return Err(invalid(
                        n,
                        format!("'{v}' is not a mode; write r, ro, w or rw"),
                    ))
                }
            },
        };
        if let Some(f) = attrs.get("format") {
            if f != "raw" {
                return Err(invalid("format", format!("'{f}' needs the qdisk backend, which this driver does not write; only raw is supported")));
            }
        }
        let backend = attrs.get("backend").map(str::to_owned);
        if let Some(b) = &backend {
            if b.is_empty() || b.contains(['/', '\0']) || b == "." || b == ".." {
                return Err(invalid(
                    "backend",
                    format!("'{}' is not a domain name or id", b.escape_default()),
                ));
            }
        }
        Ok(DiskSpec {
            params,
            dev,
            devid,
            mode,
            backend,
        })
    }
}

const DISK_ATTRS: &[&str] = &["uname", "dev", "mode", "access", "format", "backend"];

/// A XenStore device class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    /// Disks.
    Vbd,
    /// Network interfaces.
    Vif,
}

impl Kind {
    pub(crate) const ALL: [Kind; 2] = [Kind::Vbd, Kind::Vif];
    /// Its name in XenStore paths.
    pub(crate) fn xs(self) -> &'static str {
        match self {
            Kind::Vbd => "vbd",
            Kind::Vif => "vif",
        }
    }
    /// Its vdev device type.
    pub(crate) fn device_type(self) -> DeviceType {
        match self {
            Kind::Vbd => DeviceType::DISK,
            Kind::Vif => DeviceType::NETWORK,
        }
    }
    pub(crate) fn of(t: &DeviceType) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.device_type() == *t)
    }
    pub(crate) fn from_xs(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.xs() == s)
    }
}

/// Paths of one device.
#[derive(Debug, Clone)]
pub(crate) struct DevPaths {
    pub frontend: String,
    pub backend: String,
    pub libxl: String,
}

impl DevPaths {
    pub(crate) fn new(kind: Kind, domid: u32, backend: u32, devid: u32) -> Self {
        DevPaths {
            frontend: frontend_path(kind, domid, devid),
            backend: format!(
                "/local/domain/{backend}/backend/{}/{domid}/{devid}",
                kind.xs()
            ),
            libxl: libxl_path(kind, domid, devid),
        }
    }
}

pub(crate) fn frontend_dir(kind: Kind, domid: u32) -> String {
    format!("/local/domain/{domid}/device/{}", kind.xs())
}
pub(crate) fn frontend_path(kind: Kind, domid: u32, devid: u32) -> String {
    format!("{}/{devid}", frontend_dir(kind, domid))
}
pub(crate) fn libxl_dir(kind: Kind, domid: u32) -> String {
    format!("/libxl/{domid}/device/{}", kind.xs())
}
pub(crate) fn libxl_path(kind: Kind, domid: u32, devid: u32) -> String {
    format!("{}/{devid}", libxl_dir(kind, domid))
}

/// Whether `p` is a plausible backend path of device `devid` of `domid`:
/// `/local/domain/N/backend/KIND/DOMID/DEVID`. The frontend's `backend` key is written by the
/// guest's side too, so it is never followed unchecked.
pub(crate) fn check_backend_path(kind: Kind, p: &str, domid: u32, devid: u32) -> Option<u32> {
    let rest = p.strip_prefix("/local/domain/")?;
    let (n, rest) = rest.split_once('/')?;
    let n: u32 = n
        .parse()
        .ok()
        .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))?;
    (rest == format!("backend/{}/{domid}/{devid}", kind.xs())).then_some(n)
}

/// The frontend keys listed.
pub(crate) const FE_KEYS: &[&str] = &[
    "backend",
    "backend-id",
    "state",
    "virtual-device",
    "ring-ref",
    "event-channel",
    "protocol",
];
/// The backend keys listed (`state` as `backend-state`).
pub(crate) const BE_KEYS: &[&str] = &[
    "params",
    "mode",
    "type",
    "dev",
    "physical-device",
    "state",
    "online",
    "script",
    "hotplug-status",
];

/// Keys and values of one directory, in writing order.
pub(crate) type Keys = Vec<(&'static str, String)>;

/// The keys libxl 4.17 writes, in its order: backend dir, frontend dir; the `/libxl` record is
/// `frontend`, `backend`, then the backend's keys.
pub(crate) fn layout(domid: u32, backend: u32, d: &DiskSpec, p: &DevPaths) -> (Keys, Keys) {
    let be = vec![
        ("frontend", p.frontend.clone()),
        ("params", d.params.clone()),
        ("script", BLOCK_SCRIPT.to_owned()),
        ("frontend-id", domid.to_string()),
        ("online", "1".into()),
        ("removable", "0".into()),
        ("bootable", "1".into()),
        ("state", "1".into()),
        ("dev", d.dev.clone()),
        ("type", "phy".into()),
        ("mode", d.mode.into()),
        ("device-type", "disk".into()),
        ("discard-enable", "1".into()),
        ("specification", "xen".into()),
    ];
    let fe = vec![
        ("backend", p.backend.clone()),
        ("backend-id", backend.to_string()),
        ("state", "1".into()),
        ("virtual-device", d.devid.to_string()),
        ("device-type", "disk".into()),
        ("trusted", "1".into()),
    ];
    (be, fe)
}

/// The disk schema.
pub(crate) fn schema() -> DeviceTypeSchema {
    DeviceTypeSchema {
        device_type: DeviceType::DISK,
        description: "a Xen virtual block device (vbd) served by blkback in the backend domain; its ref is its Xen device number (xvdb = 51728)".into(),
        attributes: vec![
            AttributeSpec::required("uname", "what backs the disk: phy:DEVICE or file:PATH", "file:/var/lib/xen/images/data.img"),
            AttributeSpec::required("dev", "the device name in the guest (xvdX, sdX, hdX, dNpM, or a Xen device number)", "xvdb"),
            AttributeSpec::optional("mode", "r or ro for read-only, w or rw for read-write (default w)", "w"),
            AttributeSpec::optional("access", "xl's name for mode", "rw"),
            AttributeSpec::optional("format", "the image format; only raw is supported", "raw"),
            AttributeSpec::optional("backend", "the backend domain, by name or id (default Domain-0); listed as backend-id and bkdom-name", "Domain-0"),
        ],
        passthrough_prefixes: Vec::new(),
    }
}
