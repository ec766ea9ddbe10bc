#![doc = include_str!("docs.md")]
#![deny(missing_docs)]

mod attach;
mod config;
mod detach;
mod driver;
mod error;
mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod listing;
mod metadata;
mod profile;
mod read;
#[cfg(any(test, feature = "fuzzing"))]
mod read_tree;
mod schema;
mod session;
mod xml;

pub use config::LibvirtConfig;
pub use driver::LibvirtDriver;
pub use error::LibvirtError;
pub use profile::{profile, RECORDED_DOMAIN_CAPABILITIES};

/// The driver's name.
pub const NAME: &str = "libvirt";
/// The URI scheme it handles: `libvirt+` followed by any libvirt URI (`libvirt+qemu:///system`,
/// `libvirt+qemu+ssh://user@host/system`, `libvirt+xen:///system`, `libvirt+test:///default`).
pub const SCHEMES: &[&str] = &["libvirt"];

vdev_core::register_driver!(
    name: NAME,
    schemes: SCHEMES,
    description: "libvirt domains through libvirt's C library (any libvirt URI after libvirt+)",
    driver: LibvirtDriver,
    config: LibvirtConfig,
);
