//! The calls without fixed sizes: attributes as heap strings the library allocates and frees.

use std::ffi::{c_char, c_int, c_uint, CString};
use std::ptr;
use std::time::Duration;

use vdev_facade::{DetachOptions, Device};

use crate::conn::{c_count, c_string, handle, str_arg, vdev_domain};
use crate::error::{guard, CError};
use crate::proposal::{attach_pairs, detach, ref_arg, type_arg, update_pairs};

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

/// `timeout_ms` of `vdev_domain_detach()`: the default wait of 10 seconds.
pub const VDEV_DETACH_DEFAULT_TIMEOUT: c_int = -1;

fn into_raw_str(s: &str) -> *const c_char {
    c_string(s).into_raw()
}

unsafe fn free_raw_str(p: *const c_char) {
    if !p.is_null() {
        drop(unsafe { CString::from_raw(p as *mut c_char) });
    }
}

/// Attributes as a library-owned array of `vdev_attr` (NULL when empty) and its length; free
/// with [`free_attrs`].
pub(crate) fn export_attrs(a: &vdev_facade::Attributes) -> (*const vdev_attr, usize) {
    let attrs: Box<[vdev_attr]> = a
        .iter()
        .map(|(n, v)| vdev_attr {
            name: into_raw_str(n),
            value: into_raw_str(v),
        })
        .collect();
    let n = attrs.len();
    if n == 0 {
        (ptr::null(), 0)
    } else {
        (Box::into_raw(attrs).cast(), n)
    }
}

/// Free an array from [`export_attrs`].
///
/// # Safety
/// `attrs` and `n` come from one [`export_attrs`] call, not freed yet.
pub(crate) unsafe fn free_attrs(attrs: *const vdev_attr, n: usize) {
    if attrs.is_null() {
        return;
    }
    let attrs = unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(attrs as *mut vdev_attr, n)) };
    for a in attrs.iter() {
        unsafe {
            free_raw_str(a.name);
            free_raw_str(a.value);
        }
    }
}

fn export_device(d: &Device) -> vdev_device {
    let (attrs, nattrs) = export_attrs(&d.attributes);
    vdev_device {
        device_type: into_raw_str(d.device_type.as_str()),
        reference: into_raw_str(d.reference.as_str()),
        state: into_raw_str(d.state.as_str()),
        attrs,
        nattrs,
    }
}

unsafe fn free_device(d: &vdev_device) {
    unsafe {
        free_raw_str(d.device_type);
        free_raw_str(d.reference);
        free_raw_str(d.state);
        free_attrs(d.attrs, d.nattrs);
    }
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
        if devices.is_null() {
            return Err(CError::null("devices"));
        }
        unsafe { *devices = ptr::null_mut() };
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = if r#type.is_null() {
            None
        } else {
            Some(unsafe { type_arg(r#type) }?)
        };
        let domain = dom.domain.clone();
        let list = dom
            .conn
            .run(|c| async move { Ok(c.devices(&domain, device_type.as_ref()).await?) })?;
        let n = c_count(list.len(), "devices")?;
        if n > 0 {
            let out: Box<[vdev_device]> = list.iter().map(export_device).collect();
            unsafe { *devices = Box::into_raw(out).cast() };
        }
        Ok(n)
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
        if devices.is_null() || n <= 0 {
            return Ok(());
        }
        let list = unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(devices, n as usize)) };
        for d in list.iter() {
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
    guard(ptr::null_mut(), || {
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { type_arg(r#type) }?;
        let pairs = unsafe { attr_pairs(attrs, nattrs) }?;
        let reference = attach_pairs(dom, device_type, pairs)?;
        Ok(c_string(reference.as_str()).into_raw())
    })
}

/// The pairs of a caller's `vdev_attr` array.
///
/// # Safety
/// `attrs` is NULL or points to `nattrs` entries whose strings are NULL or NUL-terminated.
unsafe fn attr_pairs(
    attrs: *const vdev_attr,
    nattrs: c_int,
) -> Result<Vec<(String, String)>, CError> {
    if nattrs < 0 {
        return Err(CError::invalid(
            "nattrs",
            format!("{nattrs} is negative; give the number of entries of attrs"),
        ));
    }
    if attrs.is_null() && nattrs > 0 {
        return Err(CError::null("attrs"));
    }
    let entries: &[vdev_attr] = if nattrs == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(attrs, nattrs as usize) }
    };
    let mut pairs = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let name = unsafe { str_arg(e.name, &format!("attrs[{i}].name")) }?;
        let value = if e.value.is_null() {
            return Err(CError::null(&format!("attrs[{i}].value")));
        } else {
            unsafe { std::ffi::CStr::from_ptr(e.value) }
                .to_str()
                .map_err(|_| {
                    CError::invalid(&format!("attrs[{i}].value"), "it is not valid UTF-8")
                })?
        };
        pairs.push((name.to_owned(), value.to_owned()));
    }
    Ok(pairs)
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
    guard(-1, || {
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { type_arg(r#type) }?;
        let reference = unsafe { ref_arg(r#ref) }?;
        let pairs = unsafe { attr_pairs(attrs, nattrs) }?;
        update_pairs(dom, device_type, reference, pairs)?;
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
/// when the guest lets go. `flags`: 0 or `VDEV_DETACH_FORCE`; other bits are
/// `VDEV_ERR_INVALID_ARGUMENT`.
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
        let timeout = match timeout_ms {
            VDEV_DETACH_DEFAULT_TIMEOUT => DetachOptions::DEFAULT_TIMEOUT,
            t if t >= 0 => Duration::from_millis(t as u64),
            t => {
                return Err(CError::invalid(
                    "timeout_ms",
                    format!("{t} is negative; give milliseconds, or VDEV_DETACH_DEFAULT_TIMEOUT"),
                ))
            }
        };
        if flags & !VDEV_DETACH_FORCE != 0 {
            return Err(CError::invalid(
                "flags",
                format!("{flags:#x} has unknown bits; the only flag is VDEV_DETACH_FORCE"),
            ));
        }
        let options = DetachOptions {
            timeout,
            force: flags & VDEV_DETACH_FORCE != 0,
            ..Default::default()
        };
        detach(dom, device_type, reference, options)?;
        Ok(0)
    })
}
