//! Static registration of drivers, collected with `inventory`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::driver::Driver;
use crate::error::{Error, Result};
use crate::uri::ConnectUri;

/// How a driver opens a connection: given the parsed URI, return the live driver.
pub type OpenFn = fn(ConnectUri) -> BoxFuture<'static, Result<Box<dyn Driver>>>;

/// A driver's static registration record: what [`crate::register_driver!`] submits.
///
/// The record is const-constructible; the live connection is the `Box<dyn Driver>` that `open`
/// returns.
#[derive(Debug)]
pub struct DriverRegistration {
    /// The driver's name (`mock`, `qemu`, `xen`).
    pub name: &'static str,
    /// The URI schemes it handles (the part before `+transport`), lower case.
    pub schemes: &'static [&'static str],
    /// One line on what it manages.
    pub description: &'static str,
    /// Opens a connection.
    pub open: OpenFn,
}

inventory::collect!(DriverRegistration);

/// A driver this program was built without, and how to get it: what
/// [`crate::register_absent_driver!`] submits (the `vdev` facade does, for each driver behind a
/// cargo feature that is off). When no driver handles a URI's scheme, [`Error::NoDriver`]'s
/// message gives this advice instead of the one on linking.
#[derive(Debug)]
pub struct AbsentDriver {
    /// The driver's name.
    pub name: &'static str,
    /// The URI schemes it would handle.
    pub schemes: &'static [&'static str],
    /// How to get it (a sentence: the cargo feature, what it needs).
    pub how: &'static str,
}

inventory::collect!(AbsentDriver);

/// Declare a driver this program was built without, and how to get it (see [`AbsentDriver`]):
///
/// ```ignore
/// vdev_core::register_absent_driver!(
///     name: "libvirt",
///     schemes: &["libvirt"],
///     how: "This vdev was built without the libvirt driver: enable the cargo feature `libvirt`.",
/// );
/// ```
#[macro_export]
macro_rules! register_absent_driver {
    (name: $name:expr, schemes: $schemes:expr, how: $how:expr $(,)?) => {
        $crate::__private::inventory::submit! {
            $crate::AbsentDriver { name: $name, schemes: $schemes, how: $how }
        }
    };
}

/// The advice of [`Error::NoDriver`]'s message for `scheme`.
pub(crate) fn no_driver_advice(scheme: &str) -> &'static str {
    inventory::iter::<AbsentDriver>
        .into_iter()
        .find(|a| a.schemes.contains(&scheme))
        .map(|a| a.how)
        .unwrap_or(
            "If the driver is a dependency, make sure some code names its crate (see the vdev-core docs on linking)",
        )
}

/// Register a driver, in the driver crate's root (`lib.rs`):
///
/// ```ignore
/// vdev_core::register_driver!(
///     name: "mock",
///     schemes: &["mock", "test"],
///     description: "in-memory hypervisor",
///     driver: MockDriver,   // has `pub async fn open(MockConfig) -> Result<MockDriver>`
///     config: MockConfig,   // has `pub fn from_uri(&ConnectUri) -> Result<MockConfig>`
/// );
/// ```
///
/// The registration opens a connection by parsing the URI into `config` and handing it to
/// `driver`'s `open`: no open function to write. (A driver that must open some other way gives
/// `open: PATH` instead of `driver:` and `config:`, a function of the [`OpenFn`] type.)
///
/// It also defines `__link_anchor()` beside the registration: the function the `vdev` facade's
/// `link_drivers()` names, so that a static library (`libvdev.a` linked into a C program), where
/// the linker keeps only what something references, keeps the registration too.
///
/// The driver crate needs no `inventory` dependency of its own. Remember the linking rule: the
/// registration only exists in programs that link the driver crate, which Rust does only when
/// some code names it (see the crate docs).
#[macro_export]
macro_rules! register_driver {
    (
        name: $name:expr,
        schemes: $schemes:expr,
        description: $description:expr,
        driver: $driver:ty,
        config: $config:ty $(,)?
    ) => {
        #[doc(hidden)]
        pub fn __vdev_open(
            uri: $crate::ConnectUri,
        ) -> $crate::prelude::BoxFuture<'static, $crate::Result<::std::boxed::Box<dyn $crate::Driver>>>
        {
            ::std::boxed::Box::pin(async move {
                let config = <$config>::from_uri(&uri)?;
                let driver: $driver = <$driver>::open(config).await?;
                ::std::result::Result::Ok(::std::boxed::Box::new(driver) as ::std::boxed::Box<dyn $crate::Driver>)
            })
        }
        $crate::register_driver!(
            name: $name,
            schemes: $schemes,
            description: $description,
            open: __vdev_open,
        );
    };
    (
        name: $name:expr,
        schemes: $schemes:expr,
        description: $description:expr,
        open: $open:expr $(,)?
    ) => {
        $crate::__private::inventory::submit! {
            $crate::DriverRegistration {
                name: $name,
                schemes: $schemes,
                description: $description,
                open: $open,
            }
        }
        /// Keeps this crate's driver registration in a static library. Not for direct use.
        #[doc(hidden)]
        #[inline(never)]
        pub fn __link_anchor() -> &'static str {
            ::std::hint::black_box(concat!(module_path!(), "::registration"))
        }
    };
}

/// A registered driver, as listed by [`drivers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverInfo {
    /// The driver's name.
    pub name: &'static str,
    /// The schemes it handles.
    pub schemes: Vec<&'static str>,
    /// What it manages.
    pub description: &'static str,
}

struct Registry {
    by_scheme: BTreeMap<&'static str, Vec<&'static DriverRegistration>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut by_scheme: BTreeMap<&'static str, Vec<&'static DriverRegistration>> =
            BTreeMap::new();
        for reg in inventory::iter::<DriverRegistration> {
            for scheme in reg.schemes {
                by_scheme.entry(scheme).or_default().push(reg);
            }
        }
        for regs in by_scheme.values_mut() {
            regs.sort_by_key(|r| r.name);
        }
        Registry { by_scheme }
    })
}

/// Every driver linked into this program, sorted by name.
pub fn drivers() -> Vec<DriverInfo> {
    let mut v: Vec<DriverInfo> = inventory::iter::<DriverRegistration>
        .into_iter()
        .map(|r| DriverInfo {
            name: r.name,
            schemes: r.schemes.to_vec(),
            description: r.description,
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(b.name).then(a.schemes.cmp(&b.schemes)));
    v
}

/// Every registered URI scheme, sorted.
pub fn registered_schemes() -> Vec<&'static str> {
    registry().by_scheme.keys().copied().collect()
}

/// Check that no scheme is claimed by two drivers; the error names the first conflict.
pub fn check_registry() -> Result<()> {
    for (scheme, regs) in &registry().by_scheme {
        if regs.len() > 1 {
            return Err(duplicate(scheme, regs));
        }
    }
    Ok(())
}

fn duplicate(scheme: &str, regs: &[&'static DriverRegistration]) -> Error {
    Error::DuplicateScheme {
        scheme: scheme.to_owned(),
        drivers: regs.iter().map(|r| r.name.to_owned()).collect(),
    }
}

/// The one driver registered for `scheme`.
pub(crate) fn find(scheme: &str) -> Result<&'static DriverRegistration> {
    match registry().by_scheme.get(scheme).map(Vec::as_slice) {
        Some([one]) => Ok(one),
        Some(regs) if !regs.is_empty() => Err(duplicate(scheme, regs)),
        _ => Err(Error::NoDriver {
            scheme: scheme.to_owned(),
            available: registered_schemes().iter().map(|s| s.to_string()).collect(),
        }),
    }
}
