//! # vdev-capi: libvdev, the C API of vdev
//!
//! A C library (`libvdev.so`, `libvdev.a`) and its header `include/vdev.h`, faithful to the 2006
//! libvirt "vdev" proposal: `vdev_domain_get_vdevs()`, `vdev_domain_create_vdev()` and
//! `vdev_domain_destroy_vdev()` over fixed-size `vdev_vda { char name[16]; char value[64]; }`
//! entries, plus calls without fixed sizes, detach options and device events.
//!
//! - Every call that fails returns -1 or NULL and leaves a thread-local last error
//!   ([`vdev_last_error_code`], [`vdev_last_error_message`]) whose code is a
//!   [`vdev_error_code`].
//! - Each connection owns its asynchronous runtime; callers see blocking calls.
//! - No Rust panic crosses the boundary: it becomes [`vdev_error_code::VDEV_ERR_PANIC`].
//! - Drivers: the mock (`mock:///default`) always; others through cargo features.
//!
//! The header is generated from this crate by cbindgen (`cbindgen.toml`) and kept in the
//! repository; `cargo test -p vdev-capi --test header` fails when it is out of date, and
//! `VDEV_BLESS=1` rewrites it. See `docs/design/0004-c-api.md`.
#![deny(missing_docs)]
#![allow(non_camel_case_types)]

// One file per concern; the header follows this order.

// Error codes and the thread-local last error.
mod error;

// Connections: open, close, read-only, and the runtime each one owns.
mod conn;

// Domains: lookup, list, name and id.
mod domains;

// The proposal's three calls (and update) over fixed-size entries.
mod proposal;

// Devices without fixed sizes: list, attach, update, detach, and detach options.
mod devices;

// Device events.
mod events;

// Desired state: plan, apply, export (JSON results).
mod desired;

// Every conversion between C arguments and results and Rust values.
mod marshal;

pub use conn::{
    vdev_conn, vdev_conn_close, vdev_conn_is_readonly, vdev_conn_open, vdev_conn_open_readonly,
};
pub use desired::{vdev_conn_apply, vdev_conn_plan, vdev_domain_export};
pub use devices::{
    vdev_attr, vdev_device, vdev_device_list_free, vdev_domain_attach, vdev_domain_attach_flags,
    vdev_domain_detach, vdev_domain_list_devices, vdev_domain_update, vdev_domain_update_flags,
    vdev_string_free, VDEV_AFFECT_CONFIG, VDEV_AFFECT_LIVE, VDEV_DETACH_DEFAULT_TIMEOUT,
    VDEV_DETACH_FORCE,
};
pub use domains::{
    vdev_conn_list_domains, vdev_domain, vdev_domain_free, vdev_domain_get_id,
    vdev_domain_get_name, vdev_domain_list_free, vdev_domain_lookup_by_id,
    vdev_domain_lookup_by_name,
};
pub use error::{
    vdev_error_code, vdev_error_code_name, vdev_last_error_code, vdev_last_error_message,
    vdev_reset_last_error,
};
pub use events::{
    vdev_conn_watch, vdev_domain_watch, vdev_event, vdev_event_free, vdev_event_kind, vdev_watch,
    vdev_watch_free, vdev_watch_next,
};
pub use proposal::{
    vdev_domain_create_vdev, vdev_domain_destroy_vdev, vdev_domain_get_vdevs,
    vdev_domain_update_vdev, vdev_vda, VDEV_VDA_MAX_ATTRS, VDEV_VDA_MAX_DEVICES,
    VDEV_VDA_NAME_SIZE, VDEV_VDA_VALUE_SIZE,
};
