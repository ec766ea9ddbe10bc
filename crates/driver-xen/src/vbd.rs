//! Disks (vbd): attribute rules and libxl 4.17's XenStore layout.
//!
//! Attributes are accepted under this driver's names and under xl's disk-spec names where they
//! mean the same (aliases in the schema): `uname` or `target`, `dev` or `vdev`, `mode` or
//! `access`, and `format`. xl's `target` is a bare absolute path; it is read as the `uname` it
//! stands for (see [`target_as_uname`]), so both spellings write the same XenStore values.

use vdev_core::{AttributeSpec, Attributes, DeviceType, DeviceTypeSchema, Error, Result};

use crate::paths::{DevPaths, Keys};

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
    /// What to do with libxl's stored configuration.
    pub recorded: crate::libxl::Recorded,
}

/// The one of several names of an attribute that is set, with its value. The core refuses two
/// names of one attribute before the driver is called; this refuses them too for callers that
/// reach the driver directly.
fn one_of(attrs: &Attributes, names: &[&'static str]) -> Result<Option<(&'static str, String)>> {
    let mut found: Option<(&'static str, String)> = None;
    for n in names {
        if let Some(v) = attrs.get(n) {
            if let Some((m, _)) = &found {
                return Err(Error::invalid_attribute(
                    *n,
                    format!("'{m}' and '{n}' are names of the same disk attribute; give only one of them"),
                ));
            }
            found = Some((n, v.to_owned()));
        }
    }
    Ok(found)
}

/// The `uname` that xl's `target=VALUE` stands for.
///
/// A value with a `phy:` or `file:` prefix is taken as a `uname`. A bare absolute path is what xl
/// writes: xl looks at the file to choose. Here it is `phy:` when this process is in Domain-0
/// (`in_dom0`) and the path is a block device there; otherwise `phy:` for a path under `/dev/`
/// and `file:` for any other. Both kinds write the same XenStore values (`params` = the path,
/// `type` = `phy`, as libxl does for raw images), so the kind never changes what is written.
/// Anything else is refused.
#[cfg(test)]
pub(crate) fn target_as_uname(v: &str, in_dom0: impl FnOnce() -> bool) -> Result<String> {
    target_as_uname_with(v, in_dom0, |v| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(v).is_ok_and(|m| m.file_type().is_block_device())
    })
}

/// [`target_as_uname`] with the block-device check given (for a remote Domain-0, where the
/// driver asked the host beforehand).
pub(crate) fn target_as_uname_with(
    v: &str,
    in_dom0: impl FnOnce() -> bool,
    block_device: impl FnOnce(&str) -> bool,
) -> Result<String> {
    if v.starts_with("phy:") || v.starts_with("file:") {
        return Ok(v.to_owned());
    }
    if !v.starts_with('/') {
        return Err(Error::invalid_attribute(
            "target",
            format!(
                "'{}' is not an absolute path; write the image or device path, e.g. target=/var/lib/xen/images/data.img (or a uname: phy:DEVICE, file:PATH)",
                v.escape_default()
            ),
        ));
    }
    let kind = if v.starts_with("/dev/") || (in_dom0() && block_device(v)) {
        "phy"
    } else {
        "file"
    };
    Ok(format!("{kind}:{v}"))
}

/// Validate an absolute path given as a disk's backing: it becomes a XenStore value (never a
/// path), and a command-line argument of the hotplug script in the backend domain.
fn backing_path(name: &str, p: &str) -> Result<String> {
    if !p.starts_with('/') {
        return Err(Error::invalid_attribute(name, format!("'{p}' is not an absolute path; write e.g. file:/var/lib/xen/images/data.img or phy:/dev/vg0/data")));
    }
    if p.len() > 1024 {
        return Err(Error::invalid_attribute(
            name,
            "the path is longer than 1024 bytes",
        ));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(Error::invalid_attribute(
            name,
            "the path contains a control character",
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(Error::invalid_attribute(
            name,
            "the path contains '..'; give a canonical path",
        ));
    }
    Ok(p.to_owned())
}

impl DiskSpec {
    /// What its entry in libxl's stored configuration is made of.
    pub(crate) fn libxl_entry(&self) -> crate::libxl::DiskEntry<'_> {
        crate::libxl::DiskEntry {
            pdev_path: &self.params,
            vdev: &self.dev,
            readwrite: self.mode == "w",
            backend: self.backend.as_deref(),
        }
    }

    /// Interpret the attributes; changes nothing. A bare `target` path is looked at on this
    /// machine (see [`target_as_uname_with`]).
    #[cfg(test)]
    pub(crate) fn parse(attrs: &Attributes) -> Result<Self> {
        Self::parse_with(attrs, crate::config::in_dom0, |v| {
            use std::os::unix::fs::FileTypeExt;
            std::fs::metadata(v).is_ok_and(|m| m.file_type().is_block_device())
        })
    }

    /// [`parse`](Self::parse) with the Domain-0 and block-device answers given (the driver
    /// asks its host, which may be remote).
    pub(crate) fn parse_with(
        attrs: &Attributes,
        in_dom0: impl FnOnce() -> bool,
        block_device: impl FnOnce(&str) -> bool,
    ) -> Result<Self> {
        for (n, _) in attrs.iter() {
            if !DISK_ATTRS.contains(&n) {
                return Err(Error::invalid_attribute(
                    n,
                    format!("unknown disk attribute; known: {}", DISK_ATTRS.join(", ")),
                ));
            }
        }
        let params = match one_of(attrs, &["uname", "target"])? {
            None => {
                return Err(Error::MissingAttribute {
                    device_type: "disk".into(),
                    name: "uname".into(),
                    hint: "what backs the disk, e.g. uname=file:/var/lib/xen/images/data.img (or xl's target=/var/lib/xen/images/data.img)"
                        .into(),
                })
            }
            Some((n, v)) => {
                let uname = if n == "target" {
                    let uname = target_as_uname_with(&v, in_dom0, block_device)?;
                    tracing::debug!(xl_target = %v, %uname, "xl's target read as uname");
                    uname
                } else {
                    v
                };
                match uname.split_once(':') {
                    Some(("phy" | "file", p)) => backing_path(n, p)?,
                    Some((kind, _)) => {
                        return Err(Error::invalid_attribute(
                            n,
                            format!("'{kind}:' is not supported; write phy:DEVICE or file:PATH"),
                        ))
                    }
                    None => {
                        return Err(Error::invalid_attribute(
                            n,
                            format!("'{uname}' has no kind; write phy:DEVICE or file:PATH"),
                        ))
                    }
                }
            }
        };
        let (dev_name, dev) = match one_of(attrs, &["dev", "vdev"])? {
            Some(found) => found,
            None => {
                return Err(Error::MissingAttribute {
                    device_type: "disk".into(),
                    name: "dev".into(),
                    hint: "the device name in the guest, e.g. dev=xvdb (or xl's vdev=xvdb)".into(),
                })
            }
        };
        if dev.is_empty() || !dev.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::invalid_attribute(
                dev_name,
                format!(
                    "'{}' is not a Xen virtual device name (xvdX, sdX, hdX, dNpM or a number)",
                    dev.escape_default()
                ),
            ));
        }
        let devid = xen_devid::devid_from_name(&dev)
            .map_err(|e| Error::invalid_attribute(dev_name, e.to_string()))?;
        let mode = match one_of(attrs, &["mode", "access"])? {
            None => "w",
            Some((n, v)) => match v.as_str() {
                "w" | "rw" => "w",
                "r" | "ro" => "r",
                _ => {
                    return Err(Error::invalid_attribute(
                        n,
                        format!("'{v}' is not a mode; write r, ro, w or rw"),
                    ))
                }
            },
        };
        if let Some(f) = attrs.get("format") {
            if f != "raw" {
                return Err(Error::invalid_attribute(
                    "format",
                    format!(
                        "'{}' is not served: blkback, the backend this driver writes, serves raw images only; convert the image to raw (qemu-img convert -O raw IN OUT) and give format=raw, or attach it through QEMU's qdisk backend, which this driver does not support",
                        f.escape_default()
                    ),
                ));
            }
        }
        let backend = attrs.get("backend").map(str::to_owned);
        if let Some(b) = &backend {
            if b.is_empty() || b.contains(['/', '\0']) || b == "." || b == ".." {
                return Err(Error::invalid_attribute(
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
            recorded: crate::libxl::Recorded::parse(attrs.get("recorded"))?,
        })
    }
}

/// Every name the disk schema accepts, aliases included.
const DISK_ATTRS: &[&str] = &[
    "uname", "target", "dev", "vdev", "mode", "access", "format", "backend", "recorded",
];

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
            AttributeSpec::required("uname", "what backs the disk: phy:DEVICE or file:PATH (an absolute path). xl's name target takes a bare absolute path: phy when this process is in Domain-0 and the path is a block device there, else phy under /dev/ and file otherwise (both write params=PATH, type=phy); a phy: or file: prefix is accepted too", "file:/var/lib/xen/images/data.img").alias("target"),
            AttributeSpec::required("dev", "the device name in the guest (xvdX, sdX, hdX, dNpM, or a Xen device number); xl's name is vdev", "xvdb").alias("vdev"),
            AttributeSpec::optional("mode", "r or ro for read-only, w or rw for read-write (default w); xl's name is access", "w").alias("access").spelling("ro", "r").spelling("rw", "w"),
            AttributeSpec::optional("format", "the image format: raw (the default), the only one blkback serves; convert qcow2, vhd or qed images to raw (QEMU's qdisk backend is not supported)", "raw"),
            AttributeSpec::optional("backend", "the backend domain, by name or id (default Domain-0); listed as backend-id and bkdom-name", "Domain-0").not_listed(),
            crate::libxl::recorded_spec(),
        ],
        passthrough_prefixes: Vec::new(),
        identity: vec!["dev".into(), "uname".into()],
        reference_attribute: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Kind;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn keys(a: &[(&str, &str)]) -> (Keys, Keys) {
        let d = DiskSpec::parse(&attrs(a)).unwrap();
        let p = DevPaths::new(Kind::Vbd, 7, 0, d.devid);
        layout(7, 0, &d, &p)
    }

    #[test]
    fn xl_names_write_what_the_uname_dev_mode_form_writes() {
        for (xl, ours) in [
            (
                vec![
                    ("target", "/root/lab/a.img"),
                    ("vdev", "xvdq"),
                    ("access", "ro"),
                    ("format", "raw"),
                ],
                vec![
                    ("uname", "file:/root/lab/a.img"),
                    ("dev", "xvdq"),
                    ("mode", "r"),
                ],
            ),
            (
                vec![("target", "/dev/loop3"), ("vdev", "xvdr"), ("access", "rw")],
                vec![("uname", "phy:/dev/loop3"), ("dev", "xvdr"), ("mode", "w")],
            ),
            (
                vec![
                    ("target", "phy:/dev/vg/x"),
                    ("dev", "xvds"),
                    ("access", "w"),
                ],
                vec![("uname", "phy:/dev/vg/x"), ("dev", "xvds")],
            ),
            (
                vec![
                    ("target", "file:/img/b.img"),
                    ("vdev", "51936"),
                    ("mode", "r"),
                ],
                vec![
                    ("uname", "file:/img/b.img"),
                    ("dev", "51936"),
                    ("mode", "ro"),
                ],
            ),
        ] {
            assert_eq!(keys(&xl), keys(&ours), "{xl:?}");
        }
    }

    #[test]
    fn a_bare_target_is_phy_under_dev_or_for_a_block_device_seen_from_domain_0() {
        let t = |v: &str, dom0: bool| target_as_uname(v, || dom0).unwrap();
        assert_eq!(t("/root/lab/a.img", false), "file:/root/lab/a.img");
        assert_eq!(t("/root/lab/a.img", true), "file:/root/lab/a.img");
        assert_eq!(t("/dev/vg0/data", false), "phy:/dev/vg0/data");
        assert_eq!(t("/dev/vg0/data", true), "phy:/dev/vg0/data");
        assert_eq!(t("phy:/dev/sdb", true), "phy:/dev/sdb");
        assert_eq!(t("file:/a.img", false), "file:/a.img");
        // A block device outside /dev/ (a link to one): phy only when looked at from Domain-0.
        use std::os::unix::fs::FileTypeExt;
        let block = std::fs::read_dir("/dev")
            .unwrap()
            .flatten()
            .find(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.file_type().is_block_device()));
        match block {
            Some(dev) => {
                let link = std::env::temp_dir().join(format!("vdev-blk-{}", std::process::id()));
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(dev.path(), &link).unwrap();
                let l = link.to_str().unwrap();
                assert_eq!(t(l, true), format!("phy:{l}"));
                assert_eq!(t(l, false), format!("file:{l}"));
                std::fs::remove_file(&link).unwrap();
            }
            None => eprintln!("no block device in /dev: the Domain-0 case is not checked"),
        }
        for bad in ["disk.img", "nbd:/x", "", "aio:/x.img"] {
            assert!(
                matches!(target_as_uname(bad, || false), Err(Error::InvalidAttribute { ref name, .. }) if name == "target"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refusals_name_the_attribute_as_given() {
        for (a, named, says) in [
            (
                vec![("target", "/x.img"), ("dev", "xvdq"), ("format", "qcow2")],
                "format",
                "raw images only",
            ),
            (
                vec![("target", "/x.img"), ("dev", "xvdq"), ("format", "vhd")],
                "format",
                "qdisk",
            ),
            (
                vec![
                    ("target", "/x.img"),
                    ("uname", "file:/x.img"),
                    ("dev", "xvdq"),
                ],
                "target",
                "'uname' and 'target'",
            ),
            (
                vec![("target", "/x.img"), ("vdev", "xvd/q")],
                "vdev",
                "not a Xen virtual device name",
            ),
            (
                vec![("target", "/a/../x.img"), ("vdev", "xvdq")],
                "target",
                "'..'",
            ),
            (
                vec![("target", "/x.img"), ("vdev", "xvdq"), ("access", "rx")],
                "access",
                "not a mode",
            ),
        ] {
            match DiskSpec::parse(&attrs(&a)) {
                Err(Error::InvalidAttribute { name, reason }) => {
                    assert_eq!(name, named, "{a:?}: {reason}");
                    assert!(reason.contains(says), "{a:?}: {reason}");
                }
                r => panic!("{a:?}: {r:?}"),
            }
        }
    }

    #[test]
    fn the_schema_gives_xl_names_as_aliases() {
        let s = schema();
        for (name, alias) in [("uname", "target"), ("dev", "vdev"), ("mode", "access")] {
            assert_eq!(s.attribute(alias).map(|a| a.name.as_str()), Some(name));
        }
        let mut all: Vec<&str> = s.attributes.iter().flat_map(|a| a.names()).collect();
        all.sort_unstable();
        let mut known = DISK_ATTRS.to_vec();
        known.sort_unstable();
        assert_eq!(all, known);
    }
}
