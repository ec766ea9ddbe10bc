//! # vdev-driver-template
//!
//! A vdev driver to copy when you add a hypervisor: an in-memory one, written the way
//! `docs/driver-guide.md` walks through it, that passes the whole conformance kit. Every host
//! named in a `template:///NAME` URI lives in this process (connections to one name share it),
//! with one domain, `vm1`, that takes disks (a `source` path each, and `readonly`, which
//! `update` changes).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use vdev_driver_template as _; // link the driver
//! let conn = vdev_core::connect("template:///doc").await?;
//! let vm = conn.domain("vm1").await?;
//! let disk = vdev_core::Attributes::from_pairs([("source", "/img/a.raw")])?;
//! let r = conn.attach(&vm, &vdev_core::DeviceType::DISK, &disk).await?;
//! assert_eq!(r.as_str(), "disk-1");
//! # Ok::<(), vdev_core::Error>(()) }).unwrap();
//! ```
#![deny(missing_docs)]

mod config;
mod driver;
mod error;

pub use config::TemplateConfig;
pub use driver::TemplateDriver;

/// The driver's name.
pub const NAME: &str = "template";
/// The URI schemes it handles.
pub const SCHEMES: &[&str] = &["template"];

vdev_core::register_driver!(
    name: NAME,
    schemes: SCHEMES,
    description: "an in-memory hypervisor to copy when writing a driver",
    driver: TemplateDriver,
    config: TemplateConfig,
);
