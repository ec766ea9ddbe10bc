//! # vdev-core
//!
//! The hypervisor-neutral core of **vdev**: list, attach and detach the virtual devices (disks,
//! network interfaces, ...) of virtual machines on any hypervisor through one API, with the
//! hypervisor chosen by a connection URI.
//!
//! - [`connect`] opens a [`Connection`]; the driver is chosen by the URI scheme
//!   (`driver[+transport]://[user@][host][:port]/path[?options]`, see [`ConnectUri`]).
//! - Device attributes are opaque name/value strings ([`Attributes`]) passed to the hypervisor
//!   without the core interpreting them; the core only validates their form.
//! - Drivers implement [`Driver`] and register with [`register_driver!`]; [`drivers`] lists them.
//! - Every error is an [`Error`].
//!
//! ## Linking drivers
//!
//! Drivers register themselves through `inventory`. **A driver crate that no code in your
//! program names is not linked, and its registration silently disappears**: `connect` then
//! answers [`Error::NoDriver`]. Either depend on the `vdev` facade crate with the drivers' cargo
//! features (it names them for you), or name each driver crate once:
//!
//! ```ignore
//! use vdev_driver_mock as _;
//! ```
//!
//! The same holds in a driver crate's own integration tests (`tests/*.rs`).
//!
//! ## Writing a driver
//!
//! See `docs/driver-guide.md` in the repository: one crate, one `impl Driver`, one
//! `register_driver!` line, and the conformance suite (`vdev-conformance`) to prove it.
#![deny(missing_docs)]

mod apply;
pub mod attributes;
mod connection;
pub mod desired;
mod domain;
mod driver;
mod error;
mod events;
mod options;
pub mod plan;
pub mod profile;
mod registry;
mod types;
mod uri;
mod values;

pub use apply::{Applied, ApplyOptions, ApplyReport, Outcome, Progress};
pub use attributes::{AttrName, AttrValue, Attributes};
pub use connection::{connect, connect_readonly, Connection};
pub use desired::{DesiredDevice, DesiredState, Document, DomainDocument};
pub use domain::{Domain, DomainKey, RunState};
pub use driver::{run_whole, Capabilities, Driver, EventStream, NewDevice};
pub use error::{BoxError, Error, RemoteErrorKind, Result};
pub use events::{events_lost, EventHub};
pub use options::{AttachOptions, DetachOptions, Scope, ScopeSet, UpdateOptions};
pub use plan::{Change, ChangeOp, Plan};
pub use registry::{
    check_registry, drivers, registered_schemes, AbsentDriver, DriverInfo, DriverRegistration,
    OpenFn,
};
pub use types::{
    AttributeSpec, Device, DeviceEvent, DeviceRef, DeviceState, DeviceType, DeviceTypeSchema,
    MAX_DEVICE_REF_LEN, MAX_DEVICE_TYPE_LEN,
};
pub use uri::ConnectUri;
pub use values::{parse_bool, parse_mac, random_hex, unicast_mac, BOOL_SPELLINGS};

/// Re-exports for drivers: `async_trait` and the `BoxFuture`/stream helpers, so that a driver
/// crate needs only `vdev-core`.
pub mod prelude {
    pub use async_trait::async_trait;
    pub use futures::future::BoxFuture;
    pub use futures::stream::BoxStream;
}

#[doc(hidden)]
pub mod __private {
    pub use inventory;
}
