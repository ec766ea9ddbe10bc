//! libvirt's errors, kept whole, and their mapping into [`vdev_core::Error`].

use vdev_core::Error;

/// An error libvirt reported: its own message, code and origin, as `virGetLastError` gave them.
/// It is the `source()` of the [`vdev_core::Error::Backend`] the driver returns, and its message
/// is quoted in the other variants' reasons.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LibvirtError {
    /// libvirt's message ("Cannot access storage file '/x' ...").
    pub message: String,
    /// libvirt's `virErrorNumber` (`VIR_ERR_NO_DOMAIN` = 42, ...).
    pub code: u32,
    /// libvirt's `virErrorDomain`: where in libvirt it arose (`VIR_FROM_QEMU` = 10, ...).
    pub origin: u32,
}

impl From<virt::error::Error> for LibvirtError {
    fn from(e: virt::error::Error) -> Self {
        LibvirtError {
            message: e.message().to_owned(),
            code: e.code().to_raw(),
            origin: e.domain().to_raw(),
        }
    }
}

impl LibvirtError {
    /// The error libvirt recorded for the calling thread (after a raw `virt-sys` call failed).
    pub(crate) fn last() -> Self {
        virt::error::Error::last_error().into()
    }

    fn says(&self, words: &[&str]) -> bool {
        let m = self.message.to_ascii_lowercase();
        words.iter().any(|w| m.contains(w))
    }

    /// Whether libvirt says the device is already being unplugged (a second detach).
    pub(crate) fn is_unplug_in_progress(&self) -> bool {
        self.says(&["already in the process of unplug"])
    }

    /// Whether the guest is busy and the request may be asked again.
    pub(crate) fn is_guest_busy(&self) -> bool {
        self.says(&["guest is busy", "is busy", "device is busy"])
            && !self.says(&["tray", "locked"])
    }

    /// Whether libvirt says the domain has no metadata of that namespace.
    pub(crate) fn is_no_metadata(&self) -> bool {
        self.code == virt_sys::VIR_ERR_NO_DOMAIN_METADATA
    }

    /// Whether the hypervisor driver does not implement the call (libxl has no
    /// `virDomainDetachDeviceAlias`).
    pub(crate) fn is_no_support(&self) -> bool {
        self.code == virt_sys::VIR_ERR_NO_SUPPORT
    }

    /// Whether libvirt says there is no such domain.
    pub(crate) fn is_no_domain(&self) -> bool {
        self.code == virt_sys::VIR_ERR_NO_DOMAIN
    }
}

/// What the failing call was about, for the mapping into the core's variants.
#[derive(Debug, Clone, Default)]
pub(crate) struct Context {
    /// The operation, in words ("attach", "list devices", ...).
    pub operation: &'static str,
    /// The domain as the caller named it.
    pub domain: String,
    /// The device type, where one is concerned.
    pub device_type: String,
    /// The device's reference (or the attribute value that identifies it).
    pub reference: String,
}

impl Context {
    pub(crate) fn new(operation: &'static str, domain: &str) -> Self {
        Context {
            operation,
            domain: domain.to_owned(),
            ..Context::default()
        }
    }

    pub(crate) fn device(mut self, device_type: &str, reference: &str) -> Self {
        self.device_type = device_type.to_owned();
        self.reference = reference.to_owned();
        self
    }

    /// Map libvirt's error into the core's variant for its condition. libvirt's own message
    /// stays in the reason (typed variants) or as the source (`Backend`).
    pub(crate) fn map(&self, e: LibvirtError) -> Error {
        use virt_sys as s;
        let msg = e.message.clone();
        match e.code {
            s::VIR_ERR_NO_DOMAIN => {
                return Error::DomainNotFound {
                    domain: self.domain.clone(),
                }
            }
            s::VIR_ERR_DEVICE_MISSING if !self.reference.is_empty() => {
                return Error::DeviceNotFound {
                    domain: self.domain.clone(),
                    device_type: self.device_type.clone(),
                    reference: self.reference.clone(),
                }
            }
            s::VIR_ERR_OPERATION_DENIED | s::VIR_ERR_ACCESS_DENIED if e.says(&["read only"]) => {
                return Error::ReadOnly {
                    operation: self.operation.to_owned(),
                }
            }
            _ => {}
        }
        if e.says(&[
            "already exists",
            "already contains",
            "duplicate",
            "non unique alias",
            "is already in use",
        ]) {
            return Error::DeviceExists {
                domain: self.domain.clone(),
                device_type: self.device_type.clone(),
                reference: format!("{} (libvirt: {msg})", self.reference),
            };
        }
        if e.says(&[
            "storage file",
            "no such file",
            "cannot access",
            "permission denied",
        ]) && matches!(
            e.code,
            s::VIR_ERR_SYSTEM_ERROR
                | s::VIR_ERR_OPERATION_FAILED
                | s::VIR_ERR_INTERNAL_ERROR
                | s::VIR_ERR_NO_SOURCE
        ) {
            return Error::invalid_attribute("source", format!("libvirt cannot use it: {msg}"));
        }
        let unsupported_or_malformed = matches!(
            e.code,
            s::VIR_ERR_CONFIG_UNSUPPORTED
                | s::VIR_ERR_XML_ERROR
                | s::VIR_ERR_XML_DETAIL
                | s::VIR_ERR_INVALID_ARG
                | s::VIR_ERR_XML_INVALID_SCHEMA
                | s::VIR_ERR_INVALID_MAC
        );
        if unsupported_or_malformed {
            let name = if e.says(&["bus"]) {
                "bus"
            } else if e.says(&["model"]) {
                "model"
            } else if e.says(&["mac"]) {
                "mac"
            } else if e.says(&["format", "driver type"]) {
                "format"
            } else {
                "xml"
            };
            return Error::invalid_attribute(name, format!("libvirt refused the device: {msg}"));
        }
        if e.says(&[
            "support hotplugging",
            "cannot be hotplugged",
            "hotplug is not supported",
        ]) {
            return Error::invalid_attribute(
                if e.says(&["bus"]) { "bus" } else { "xml" },
                format!("libvirt cannot add this device to a running domain: {msg}; attach it to the stored configuration (scope persistent), or choose another bus (bus=scsi)"),
            );
        }
        // A locked tray: libvirt waited for it in vain, or (a drive hot-plugged since the
        // domain started, whose tray libvirt 9.0 never asks QEMU to open) found it closed.
        if (e.says(&["tray of device"]) && e.says(&["is not open", "locked"]))
            || e.says(&["waiting to open tray"])
        {
            return Error::DeviceBusy {
                domain: self.domain.clone(),
                device_type: self.device_type.clone(),
                reference: self.reference.clone(),
                reason: format!(
                    "its tray did not open for libvirt ({msg}): the guest may hold it locked, or (libvirt 9.0) the drive was hot-plugged after the domain started; update with force=true to open it anyway"
                ),
            };
        }
        if e.says(&["no more available pci slots", "no free pci"]) {
            return Error::backend_with(
                crate::NAME,
                format!(
                    "{} on domain '{}': no free PCI slot for the device; give the domain more pcie-root-port controllers, or use bus=scsi",
                    self.operation, self.domain
                ),
                e,
            );
        }
        Error::backend_with(
            crate::NAME,
            format!("{} on domain '{}' failed", self.operation, self.domain),
            e,
        )
    }
}

/// A libvirt failure outside any domain (open, list domains): `Backend` with libvirt's error.
pub(crate) fn backend(what: impl Into<String>, e: LibvirtError) -> Error {
    Error::backend_with(crate::NAME, what, e)
}
