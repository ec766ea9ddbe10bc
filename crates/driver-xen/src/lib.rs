#![doc = include_str!("docs.md")]
#![deny(missing_docs)]

mod attach;
mod batch;
mod config;
mod detach;
mod driver;
mod error;
mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hotplug;
mod hotplug_local;
mod libxl;
mod listing;
mod paths;
mod plug;
mod profile;
mod rollback;
mod vbd;
mod vif;
mod xenstore;

pub use config::{
    Hotplug, StoreEndpoint, XenConfig, DEFAULT_ATTACH_TIMEOUT, DEFAULT_DEVICE,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SOCKET, DURATION_RANGE, OPTIONS,
};
pub use driver::XenDriver;
pub use error::{LibxlConfigError, XsError};
pub use profile::profile;
pub use xenstore::MAX_PAYLOAD;

/// The driver's name.
pub const NAME: &str = "xen";
/// The URI schemes it handles: `xen://` (a local XenStore) and `xen+ssh://` (a remote Domain-0,
/// over OpenSSH).
pub const SCHEMES: &[&str] = &["xen"];

vdev_core::register_driver!(
    name: NAME,
    schemes: SCHEMES,
    description: "Xen domains through XenStore (libxl's layout; disks as vbd, NICs as vif)",
    driver: XenDriver,
    config: XenConfig,
);
