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
//! | `libvirt` (off, and not in `drivers`) | libvirt domains through libvirt's C library; needs libvirt-dev and pkg-config to build | `libvirt+` any libvirt URI | the driver MIT OR Apache-2.0; it links `virt`/`virt-sys` (LGPL-2.1) and libvirt.so |
//!
//! Without the `libvirt` feature, a `libvirt+...` URI answers [`Error::NoDriver`] saying how to
//! get the driver.
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

/// The one list of drivers the facade offers: for each, its cargo feature, its crate and the
/// name it is re-exported under. The re-exports and [`link_drivers`] come from it.
macro_rules! drivers {
    ($($feature:literal => $krate:ident as $alias:ident: $doc:literal;)*) => {
        $(
            #[doc = $doc]
            #[cfg(feature = $feature)]
            pub use $krate as $alias;
        )*

        /// Keep every enabled driver's registration in the program, also where the linker
        /// drops what nothing calls: a static library (`libvdev.a`) linked into a C program
        /// keeps only the objects that something references. Call it once (cheap: it does
        /// nothing at run time) from code that opens connections; programs built by cargo do
        /// not need it.
        pub fn link_drivers() {
            if std::hint::black_box(false) {
                $(
                    #[cfg(feature = $feature)]
                    std::hint::black_box($krate::__link_anchor());
                )*
            }
        }
    };
}

drivers! {
    "mock" => vdev_driver_mock as driver_mock: "The mock driver crate (feature `mock`).";
    "qemu" => vdev_driver_qemu as driver_qemu: "The QEMU driver crate (feature `qemu`).";
    "xen" => vdev_driver_xen as driver_xen: "The Xen driver crate (feature `xen`).";
    "libvirt" => vdev_driver_libvirt as driver_libvirt: "The libvirt driver crate (feature `libvirt`).";
}

// A `libvirt+...` URI in a build without the driver says how to get it.
#[cfg(not(feature = "libvirt"))]
vdev_core::register_absent_driver!(
    name: "libvirt",
    schemes: &["libvirt"],
    how: "This vdev was built without the libvirt driver: rebuild with the cargo feature `libvirt` (of vdev, vdev-cli, vdev-capi or vdev-py), with libvirt's headers and pkg-config installed (Debian: apt-get install libvirt-dev pkg-config); it links libvirt's C library through the LGPL-2.1 `virt` crate",
);

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
