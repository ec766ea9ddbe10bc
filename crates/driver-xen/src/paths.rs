//! Where a device lives in XenStore, for disks and NICs alike: its class ([`Kind`]), the
//! paths of its frontend, backend and libxl record, and the checks on a backend path.

use vdev_core::{DeviceType, Error};

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

/// Keys and values of one directory, in writing order.
pub(crate) type Keys = Vec<(&'static str, String)>;

/// A device type this driver does not have.
pub(crate) fn unsupported_type(t: &DeviceType) -> Error {
    Error::Unsupported {
        driver: crate::NAME.into(),
        operation: format!("device type '{t}'"),
        detail: "the xen driver supports disk and network".into(),
    }
}

/// Xen's `DOMID_INVALID`: names no domain.
const DOMID_INVALID: u32 = 0x7ff4;

/// The Xen domain id of a [`Domain`](vdev_core::Domain). Every domain this driver lists has one; a
/// domain without one (from another driver) gets `DOMID_INVALID`, which names no domain, so the
/// lookup that follows answers `DomainNotFound`.
pub(crate) trait Domid {
    /// The domain id.
    fn domid(&self) -> u32;
}

impl Domid for vdev_core::Domain {
    fn domid(&self) -> u32 {
        self.id.unwrap_or(DOMID_INVALID)
    }
}
