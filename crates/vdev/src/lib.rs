//! # vdev
//!
//! The facade applications depend on: everything from [`vdev_core`], plus the drivers enabled
//! by cargo features, **linked for you** (a driver crate that no code names is otherwise
//! silently left out of the program, and its URI scheme answers "no driver").
//!
//! | feature | driver | schemes | licence |
//! |---|---|---|---|
//! | `mock` (default) | in-memory hypervisor for tests and demos | `mock`, `test` | MIT OR Apache-2.0 |
//! | `qemu` | running QEMU machines over QMP (unix sockets, local or over ssh, or TCP) | `qemu`, `qemu+ssh`, `qemu+tcp` | MIT OR Apache-2.0 |
//! | `xen` | Xen domains through XenStore, in libxl's layout | `xen`, `xen+ssh` | MIT OR Apache-2.0 |
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let conn = vdev::connect("mock:///default").await?;
//! let demo = conn.domain("demo").await?;
//! let attrs = vdev::Attributes::from_pairs([("uname", "file:/img/b.raw"), ("dev", "xvdb"), ("mode", "w")])?;
//! let r = conn.attach(&demo, &vdev::DeviceType::DISK, &attrs).await?;
//! assert_eq!(r.as_str(), "51728");
//! # Ok::<(), vdev::Error>(()) }).unwrap();
//! ```
#![deny(missing_docs)]

pub use vdev_core::*;

/// The mock driver crate (feature `mock`).
#[cfg(feature = "mock")]
pub use vdev_driver_mock as driver_mock;

/// The QEMU driver crate (feature `qemu`).
#[cfg(feature = "qemu")]
pub use vdev_driver_qemu as driver_qemu;

/// The Xen driver crate (feature `xen`).
#[cfg(feature = "xen")]
pub use vdev_driver_xen as driver_xen;

/// Keep every enabled driver's registration in the program, also where the linker drops what
/// nothing calls: a static library (`libvdev.a`) linked into a C program keeps only the objects
/// that something references. Call it once (cheap: it does nothing at run time) from code that
/// opens connections; programs built by cargo do not need it.
pub fn link_drivers() {
    if std::hint::black_box(false) {
        #[cfg(feature = "mock")]
        std::hint::black_box(vdev_driver_mock::__link_anchor());
        #[cfg(feature = "qemu")]
        std::hint::black_box(vdev_driver_qemu::__link_anchor());
        #[cfg(feature = "xen")]
        std::hint::black_box(vdev_driver_xen::__link_anchor());
    }
}

#[cfg(all(doctest, feature = "mock"))]
mod listing_example {
    //! ```
    //! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    //! let conn = vdev::connect("mock:///default").await?;
    //! let demo = conn.domain("demo").await?;
    //! let disks = conn.devices(&demo, Some(&vdev::DeviceType::DISK)).await?;
    //! assert_eq!(disks[0].attributes.get("virtual-device"), Some("51712"));
    //! assert_eq!(disks[0].attributes.get("bkdom-name"), Some("Domain-0"));
    //! # Ok::<(), vdev::Error>(()) }).unwrap();
    //! ```
}

/// The README's examples, compiled and run as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
