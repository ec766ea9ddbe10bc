//! # vdev-conformance
//!
//! One conformance suite that every vdev driver runs, against its real hypervisor (the mock runs
//! it in memory). Each check is a `pub async fn` taking a [`Harness`]; it panics with a message
//! saying what the driver did wrong. Checks are gated by [`vdev_core::Capabilities`]: where a
//! driver declares an operation unsupported, the check asserts that the core refuses it with
//! `Unsupported` instead of skipping.
//!
//! Run the whole suite, one `#[tokio::test]` per check, with one line in a driver's test file
//! (the test crate needs `tokio` with the `macros` and `rt-multi-thread` features):
//!
//! ```ignore
//! use vdev_driver_mock as _; // link the driver (see the vdev-core docs on linking)
//!
//! async fn setup() -> vdev_conformance::Harness { /* open connections, describe a fixture */ }
//!
//! vdev_conformance::conformance_tests!(setup);
//! ```
//!
//! Why a crate of its own rather than a module of the workspace's `tests/` member: every driver
//! crate runs the suite from its own tests, and a library that driver crates depend on cannot
//! live in the test-only member that itself depends on every driver.
#![deny(missing_docs)]

mod checks;
pub mod guest;
pub mod process;
pub mod profile;
pub mod scenario;
pub mod sshd;
pub mod xenlab;

pub use checks::*;
use std::time::Duration;

use vdev_core::{Attributes, Connection, DeviceType};

/// Valid attributes for the `i`-th distinct device of the fixture's type.
pub type MakeAttrs = Box<dyn Fn(usize) -> Attributes + Send + Sync>;

/// What the checks work on: a read-write and a read-only connection to the same host, and how
/// to make devices there.
pub struct Harness {
    /// A read-write connection.
    pub conn: Connection,
    /// A read-only connection to the same host. It may need an endpoint of its own where the
    /// hypervisor serves one client per socket (QEMU's QMP).
    pub readonly: Connection,
    /// The device the checks create.
    pub fixture: Fixture,
    /// Held for as long as the check runs, then dropped: for instance the guard of a lock that
    /// takes the checks one at a time where they share a real part (the Xen lab's domU).
    pub hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// What a setup function may return to the kit's tests: a [`Harness`], or `Option<Harness>`
/// where `None` skips the check (the setup has already said why through
/// [`missing_real_part`], which fails the test under CI).
pub trait IntoHarness {
    /// The harness, or `None` to skip.
    fn into_harness(self) -> Option<Harness>;
}

impl IntoHarness for Harness {
    fn into_harness(self) -> Option<Harness> {
        Some(self)
    }
}

impl IntoHarness for Option<Harness> {
    fn into_harness(self) -> Option<Harness> {
        self
    }
}

/// A check the driver's test file declares skipped, with its reason (`conformance_tests!(setup,
/// skip: { check: "reason" })`): printed, and listed in the test command's summary through
/// `VDEV_SKIP_LOG` like every skip. Unlike [`missing_real_part`] it does not fail under CI: it
/// is a decision written in the test file, for a reviewer to judge.
pub fn declared_skip(check: &str, reason: &str) {
    say(&format!(
        "SKIPPED {check} (declared by the driver's tests): {reason}"
    ));
    skip_log(&format!("{check} (declared): {reason}"));
}

/// Write a line to the test's stderr past libtest's capture (which takes only the print
/// macros), so that a plain `cargo test` shows every skip beside its `ok`.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn skip_log(line: &str) {
    if let Some(log) = std::env::var_os("VDEV_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// How the checks create devices on this driver.
pub struct Fixture {
    /// The domain (name or id) the checks attach devices to.
    pub domain: String,
    /// The device type the checks create.
    pub device_type: DeviceType,
    /// Valid attributes for the `i`-th distinct device (distinct `i` must give devices that can
    /// exist side by side: at least 33 of them). Every attribute given must be listed back with
    /// the same value, so give only attributes the driver lists (pass-through ones usually are
    /// not).
    pub make_attrs: MakeAttrs,
    /// Attribute sets the driver must refuse with an `InvalidAttribute` error, changing nothing.
    pub invalid_attrs: Vec<Attributes>,
    /// The timeout the checks give detach.
    pub detach_timeout: Duration,
    /// How to check [`Connection::update`]; `None` for a driver that updates nothing (the
    /// checks then assert that the core answers `Unsupported`).
    pub update: Option<UpdateFixture>,
    /// How many attaches the concurrency check starts at once ([`CONCURRENCY`] unless a
    /// driver's every attach is slow enough that fewer prove the point in the time a test run
    /// can give: libvirt's Xen driver runs Xen's hotplug script, about 13 s an attach in the
    /// lab).
    pub concurrency: usize,
}

/// How many attaches the concurrency check starts at once by default.
pub const CONCURRENCY: usize = 32;

/// A device the checks update, and the updates to try on it.
pub struct UpdateFixture {
    /// The device type.
    pub device_type: DeviceType,
    /// Valid attributes for the `i`-th distinct device of that type (as [`Fixture::make_attrs`]).
    pub make_attrs: MakeAttrs,
    /// An update the driver must accept and list back, value for value.
    pub valid: Attributes,
    /// Updates of updatable attributes with malformed values: each refused with
    /// `InvalidAttribute`, changing nothing.
    pub malformed: Vec<Attributes>,
}

/// Whether the tests run under CI: `CI` set to anything but empty, `false` or `0`. Under CI a
/// missing real part (QEMU, the Xen lab, a loop device, the test guest) fails the test.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A real part the calling test needs is missing. Under CI ([`under_ci`]) this panics with
/// `reason`: a test that cannot run there has failed. Elsewhere the test should return (a
/// skip): the reason goes to stderr and, when `VDEV_SKIP_LOG` names a file, is appended to it
/// with the test's name, so that the test command's summary shows every skip (cargo hides a
/// passing test's output, and would print the skipped test as `ok`).
pub fn missing_real_part(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_owned();
    if under_ci() {
        panic!("{test}: {reason}, and CI is set: a missing real part is a failure under CI");
    }
    say(&format!("SKIPPED {test}: {reason}"));
    skip_log(&format!("{test}: {reason}"));
}

/// Every check, by name, in the order [`conformance_tests!`] runs them.
pub const CHECKS: &[&str] = &[
    "domains_and_lookup",
    "schema_describes_type",
    "unknown_device_type_is_unsupported",
    "attach_list_detach",
    "detach_unknown_ref_is_not_found",
    "invalid_attributes_are_refused",
    "missing_attributes_are_refused",
    "concurrent_attaches_get_distinct_refs",
    "events_for_attach_and_detach",
    "readonly_refuses_changes",
    "update_is_listed_back",
    "refused_updates_change_nothing",
    "scopes_are_enforced",
    "batch_is_all_or_nothing",
    "desired_state_round_trip",
];

/// Close a harness's connections (the kit's tests call it after each check).
pub async fn finish(h: Harness) {
    let _ = h.readonly.close().await;
    h.conn.close().await.expect("close");
}

/// Expand to one `#[tokio::test]` per check of the suite, each calling `$setup` (an `async fn`
/// returning a [`Harness`], or `Option<Harness>` to skip: see [`IntoHarness`]) for a fresh
/// harness. Checks may be declared skipped with a reason, each reported by [`declared_skip`]:
///
/// ```ignore
/// vdev_conformance::conformance_tests!(setup);
/// vdev_conformance::conformance_tests!(setup, skip: {
///     events_for_attach_and_detach: "this hypervisor reports no device events",
/// });
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!($setup, skip: {});
    };
    ($setup:path, skip: { $($skip:ident : $why:literal),* $(,)? }) => {
        $crate::__conformance_tests!(@each $setup, [$($skip: $why),*],
            domains_and_lookup,
            schema_describes_type,
            unknown_device_type_is_unsupported,
            attach_list_detach,
            detach_unknown_ref_is_not_found,
            invalid_attributes_are_refused,
            missing_attributes_are_refused,
            concurrent_attaches_get_distinct_refs,
            events_for_attach_and_detach,
            readonly_refuses_changes,
            update_is_listed_back,
            refused_updates_change_nothing,
            scopes_are_enforced,
            batch_is_all_or_nothing,
            desired_state_round_trip,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    (@each $setup:path, $skips:tt, $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let skips: &[(&str, &str)] = $crate::__skips!($skips);
                if let Some((_, why)) = skips.iter().find(|(c, _)| *c == stringify!($check)) {
                    $crate::declared_skip(stringify!($check), why);
                    return;
                }
                let Some(h) = $crate::IntoHarness::into_harness($setup().await) else {
                    return;
                };
                $crate::$check(&h).await;
                $crate::finish(h).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __skips {
    ([$($skip:ident : $why:literal),*]) => {
        &[$((stringify!($skip), $why)),*]
    };
}
