#![doc = include_str!("docs.md")]
#![deny(missing_docs)]

mod attach;
mod batch;
mod config;
mod detach;
mod domain;
mod domains;
mod driver;
mod error;
mod events;
mod image;
mod introspect;
mod listing;
mod markers;
mod placement;
mod profile;
mod qmp;
mod schema;
mod update;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use config::{QemuConfig, Target, DEFAULT_REQUEST_TIMEOUT, OPTIONS, TIMEOUT_RANGE};
pub use driver::QemuDriver;
pub use error::QmpError;
pub use profile::profile;

/// The driver's name.
pub const NAME: &str = "qemu";
/// The URI schemes it handles: `qemu://` (unix sockets), `qemu+ssh://` (unix sockets on a
/// remote host, over OpenSSH) and `qemu+tcp://` (QMP over TCP).
pub const SCHEMES: &[&str] = &["qemu"];

vdev_core::register_driver!(
    name: NAME,
    schemes: SCHEMES,
    description: "running QEMU machines over QMP (unix sockets, local or over ssh, or TCP)",
    driver: QemuDriver,
    config: QemuConfig,
);
