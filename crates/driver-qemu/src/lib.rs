#![doc = include_str!("docs.md")]
#![deny(missing_docs)]

mod attach;
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
mod qmp;
mod schema;
mod update;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use config::{QemuConfig, Target, DEFAULT_REQUEST_TIMEOUT, OPTIONS, TIMEOUT_RANGE};
pub use driver::QemuDriver;
pub use error::QmpError;

use vdev_core::prelude::BoxFuture;
use vdev_core::{ConnectUri, Driver, Result};

/// The driver's name.
pub const NAME: &str = "qemu";
/// The URI schemes it handles: `qemu://` (unix sockets), `qemu+ssh://` (unix sockets on a
/// remote host, over OpenSSH) and `qemu+tcp://` (QMP over TCP).
pub const SCHEMES: &[&str] = &["qemu"];

fn open(uri: ConnectUri) -> BoxFuture<'static, Result<Box<dyn Driver>>> {
    Box::pin(async move {
        let config = QemuConfig::from_uri(&uri)?;
        Ok(Box::new(QemuDriver::open(config).await?) as Box<dyn Driver>)
    })
}

vdev_core::register_driver!(
    name: NAME,
    schemes: SCHEMES,
    description: "running QEMU machines over QMP (unix sockets, local or over ssh, or TCP)",
    open: open,
);
vdev_core::link_anchor!();
