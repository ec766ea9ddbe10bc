//! Devices: list, attach, update and detach, in the calls without fixed sizes (attributes as
//! heap strings the library allocates and frees), and the operations the proposal's calls share
//! with them.

use std::ffi::{c_char, c_int, c_uint};
use std::ptr;

use vdev_facade::{
    AttachOptions, Attributes, DetachOptions, Device, DeviceRef, DeviceType, DomainKey, Error,
    UpdateOptions,
};

use crate::domains::vdev_domain;
use crate::error::{guard, vdev_error_code::VDEV_ERR_DOMAIN_NOT_FOUND, CError};
use crate::marshal::{
    attr_pairs, detach_options, export_device, export_list, free_device, free_raw_str, handle,
    into_raw_str, optional_type_arg, out_arg, ref_arg, scope_flags, take_list, type_arg,
};

/// One attribute as a pair of NUL-terminated strings of any length.
///
/// In devices the library hands out, both strings belong to the library (freed by
/// `vdev_device_list_free()`). As input to `vdev_domain_attach()`, they belong to the caller.
#[repr(C)]
#[derive(Debug)]
pub struct vdev_attr {
    /// The attribute name.
    pub name: *const c_char,
    /// The attribute value.
    pub value: *const c_char,
}

/// One device of a domain, as `vdev_domain_list_devices()` hands it out. Every pointer in it
/// belongs to the library.
#[repr(C)]
#[derive(Debug)]
pub struct vdev_device {
    /// The device type (`"disk"`, `"network"`, ...).
    pub device_type: *const c_char,
    /// The device's reference, as `vdev_domain_destroy_vdev()` and `vdev_domain_detach()` take
    /// it.
    pub reference: *const c_char,
    /// Its state (`"connected"`, `"removal-pending"`, ...).
    pub state: *const c_char,
    /// Its attributes, in name order: `nattrs` entries (NULL when there are none).
    pub attrs: *const vdev_attr,
    /// The number of entries of `attrs`.
    pub nattrs: usize,
}

/// `flags` of `vdev_domain_detach()`: remove the device at once, without waiting for the guest
/// (as `xl block-detach --force`). Fails with `VDEV_ERR_UNSUPPORTED` where the driver cannot.
pub const VDEV_DETACH_FORCE: c_uint = 1;

/// A scope flag of `vdev_domain_attach_flags()`, `vdev_domain_update_flags()`,
/// `vdev_domain_detach()` and `vdev_conn_apply()`: change the running domain (libvirt's
/// `VIR_DOMAIN_AFFECT_LIVE`, `vdev --live`). With `VDEV_AFFECT_CONFIG` too: both. Neither: the
/// driver's default. A scope the driver does not offer fails with `VDEV_ERR_UNSUPPORTED`.
pub const VDEV_AFFECT_LIVE: c_uint = 2;

/// A scope flag (see `VDEV_AFFECT_LIVE`): change the domain's stored configuration (libvirt's
/// `VIR_DOMAIN_AFFECT_CONFIG`, `vdev --config`); with `VDEV_AFFECT_LIVE` too: both (`vdev
/// --persistent`).
pub const VDEV_AFFECT_CONFIG: c_uint = 4;

/// `timeout_ms` of `vdev_domain_detach()`: the default wait of 10 seconds.
pub const VDEV_DETACH_DEFAULT_TIMEOUT: c_int = -1;

/// The devices of a domain, of one type or of every type.
pub(crate) fn list(
    dom: &vdev_domain,
    device_type: Option<&DeviceType>,
) -> Result<Vec<Device>, CError> {
    let domain = dom.domain.clone();
    let device_type = device_type.cloned();
    dom.conn
        .run(|c| async move { Ok(c.devices(&domain, device_type.as_ref()).await?) })
}

/// The attribute whose value names the backend domain, translated from a name into an id.
pub(crate) const BACKEND_ATTR: &str = "backend";

/// Create a device from name/value pairs, translating a backend domain name into its id.
pub(crate) fn attach(
    dom: &vdev_domain,
    device_type: DeviceType,
    mut pairs: Vec<(String, String)>,
    options: AttachOptions,
) -> Result<DeviceRef, CError> {
    let domain = dom.domain.clone();
    dom.conn.run(|c| async move {
        for (name, value) in pairs.iter_mut() {
            if name != BACKEND_ATTR || value.is_empty() || value.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            match c.lookup_domain(&DomainKey::Name(value.clone())).await {
                Ok(backend) => match backend.id {
                    Some(id) => *value = id.to_string(),
                    None => {
                        return Err(CError::new(
                            crate::error::vdev_error_code::VDEV_ERR_INVALID_ATTRIBUTE,
                            format!(
                                "backend domain '{value}' has no id (it is not running): start it, or give the backend by id"
                            ),
                        ))
                    }
                },
                Err(Error::DomainNotFound { .. }) => {
                    return Err(CError::new(
                        VDEV_ERR_DOMAIN_NOT_FOUND,
                        format!(
                            "backend domain '{value}' not found: the '{BACKEND_ATTR}' attribute names the domain that serves the device, by name (translated into its id) or by id; vdev_conn_list_domains() lists them"
                        ),
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let attrs = Attributes::from_pairs(pairs)?;
        Ok(c.attach_with(&domain, &device_type, &attrs, &options).await?)
    })
}

/// Remove a device.
pub(crate) fn detach(
    dom: &vdev_domain,
    device_type: DeviceType,
    reference: DeviceRef,
    options: DetachOptions,
) -> Result<(), CError> {
    let domain = dom.domain.clone();
    dom.conn.run(|c| async move {
        Ok(c.detach(&domain, &device_type, &reference, &options)
            .await?)
    })
}

/// Change attributes of a device in place, from name/value pairs.
pub(crate) fn update(
    dom: &vdev_domain,
    device_type: DeviceType,
    reference: DeviceRef,
    pairs: Vec<(String, String)>,
    options: UpdateOptions,
) -> Result<(), CError> {
    let domain = dom.domain.clone();
    dom.conn.run(|c| async move {
        let attrs = Attributes::from_pairs(pairs)?;
        Ok(
            c.update_with(&domain, &device_type, &reference, &attrs, &options)
                .await?,
        )
    })
}

/// Every device of a domain, of one type (`type` non-NULL) or of every type (`type` NULL), with
/// all their attributes and no size limit.
///
/// On success returns the number of devices and sets `*devices` to a library-owned array of
/// them (NULL when there are none); release it with `vdev_device_list_free(*devices, n)`. On
/// failure returns -1 and sets `*devices` to NULL (unless `devices` itself is NULL). Order: by
/// type, then as the driver lists them.
///
/// # Safety
/// `dom` is NULL or a live domain handle; `type` is NULL or a NUL-terminated string; `devices`
/// is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_list_devices(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    devices: *mut *mut vdev_device,
) -> c_int {
    guard(-1, || {
        let devices = unsafe { out_arg(devices, "devices") }?;
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { optional_type_arg(r#type) }?;
        let found = list(dom, device_type.as_ref())?;
        export_list(devices, found.iter().map(export_device), "devices")
    })
}

/// Free an array from `vdev_domain_list_devices()` and every string in it. `n` is the count
/// that call returned. NULL is accepted and does nothing.
///
/// # Safety
/// `devices` is NULL or an array from `vdev_domain_list_devices()` of `n` devices, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn vdev_device_list_free(devices: *mut vdev_device, n: c_int) {
    guard((), || {
        for d in unsafe { take_list(devices, n) }.iter() {
            unsafe { free_device(d) };
        }
        Ok(())
    })
}

/// Create a device of `type` in a domain from `nattrs` attributes of any length, and return its
/// reference: a string to free with `vdev_string_free()`. NULL on failure.
///
/// As `vdev_domain_create_vdev()`: a `backend` attribute holding a domain name is translated
/// into the domain's id; a NULL name or value is `VDEV_ERR_NULL_ARGUMENT`, an empty name
/// `VDEV_ERR_INVALID_ARGUMENT`. `nattrs` may be 0 (then `attrs` may be NULL).
///
/// # Safety
/// `dom` is NULL or a live domain handle; `type` is NULL or a NUL-terminated string; `attrs` is
/// NULL or points to `nattrs` entries whose strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_attach(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    attrs: *const vdev_attr,
    nattrs: c_int,
) -> *mut c_char {
    unsafe { vdev_domain_attach_flags(dom, r#type, attrs, nattrs, 0) }
}

/// `vdev_domain_attach()` with `flags`: 0, or a scope (`VDEV_AFFECT_LIVE`, `VDEV_AFFECT_CONFIG`,
/// or both) where the driver has scopes (libvirt's `virDomainAttachDeviceFlags()`). Other bits
/// are `VDEV_ERR_INVALID_ARGUMENT`; a scope the driver does not offer, `VDEV_ERR_UNSUPPORTED`.
/// Either way nothing changes.
///
/// # Safety
/// As `vdev_domain_attach()`.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_attach_flags(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    attrs: *const vdev_attr,
    nattrs: c_int,
    flags: c_uint,
) -> *mut c_char {
    guard(ptr::null_mut(), || {
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { type_arg(r#type) }?;
        let pairs = unsafe { attr_pairs(attrs, nattrs, "attrs", "nattrs") }?;
        let scope = scope_flags(flags, 0, "")?;
        let reference = attach(dom, device_type, pairs, AttachOptions { scope })?;
        Ok(into_raw_str(reference.as_str()))
    })
}

/// Free a string the library handed out (such as the reference `vdev_domain_attach()`
/// returns). NULL is accepted and does nothing.
///
/// # Safety
/// `s` is NULL or a string from this library documented as freed by `vdev_string_free()`.
#[no_mangle]
pub unsafe extern "C" fn vdev_string_free(s: *mut c_char) {
    guard((), || {
        unsafe { free_raw_str(s) };
        Ok(())
    })
}

/// Change attributes of device `ref` of `type` in place, from `nattrs` attributes of any
/// length (a CD-ROM drive's medium, a NIC's link): the unbounded form of
/// `vdev_domain_update_vdev()`, with the same rules. Returns 0 on success, -1 on failure.
///
/// # Safety
/// `dom` is NULL or a live domain handle; `type` and `ref` are NULL or NUL-terminated strings;
/// `attrs` is NULL or points to `nattrs` entries whose strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_update(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    r#ref: *const c_char,
    attrs: *const vdev_attr,
    nattrs: c_int,
) -> c_int {
    unsafe { vdev_domain_update_flags(dom, r#type, r#ref, attrs, nattrs, 0) }
}

/// `vdev_domain_update()` with `flags`: 0, or a scope (`VDEV_AFFECT_LIVE`,
/// `VDEV_AFFECT_CONFIG`, or both) where the driver has scopes. Other bits are
/// `VDEV_ERR_INVALID_ARGUMENT`; a scope the driver does not offer, `VDEV_ERR_UNSUPPORTED`.
/// Either way nothing changes. Returns 0 on success, -1 on failure.
///
/// # Safety
/// As `vdev_domain_update()`.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_update_flags(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    r#ref: *const c_char,
    attrs: *const vdev_attr,
    nattrs: c_int,
    flags: c_uint,
) -> c_int {
    guard(-1, || {
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { type_arg(r#type) }?;
        let reference = unsafe { ref_arg(r#ref) }?;
        let pairs = unsafe { attr_pairs(attrs, nattrs, "attrs", "nattrs") }?;
        let scope = scope_flags(flags, 0, "")?;
        update(dom, device_type, reference, pairs, UpdateOptions { scope })?;
        Ok(0)
    })
}

/// Remove device `ref` of `type` from a domain, with options. Returns 0 when the device is gone,
/// -1 on failure.
///
/// `timeout_ms`: how long to wait for the guest to release the device; 0 asks and does not
/// wait; `VDEV_DETACH_DEFAULT_TIMEOUT` (-1) waits the default 10 seconds; other negative values
/// are `VDEV_ERR_INVALID_ARGUMENT`. When the guest has not released the device in time, fails
/// with `VDEV_ERR_REMOVAL_PENDING`: the device is still there (state `removal-pending`) and goes
/// when the guest lets go. `flags`: 0, or any of `VDEV_DETACH_FORCE` and a scope
/// (`VDEV_AFFECT_LIVE`, `VDEV_AFFECT_CONFIG`, or both; see `vdev_domain_attach_flags()`); other
/// bits are `VDEV_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `dom` is NULL or a live domain handle; `type` and `ref` are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_detach(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    r#ref: *const c_char,
    timeout_ms: c_int,
    flags: c_uint,
) -> c_int {
    guard(-1, || {
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { type_arg(r#type) }?;
        let reference = unsafe { ref_arg(r#ref) }?;
        let options = detach_options(timeout_ms, flags)?;
        detach(dom, device_type, reference, options)?;
        Ok(0)
    })
}
