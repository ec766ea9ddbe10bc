//! The three calls of the 2006 proposal, over fixed-size `vdev_vda` entries.

use std::ffi::{c_char, c_int};

use vdev_facade::DetachOptions;

use crate::devices;
use crate::domains::vdev_domain;
use crate::error::guard;
use crate::marshal::{array_len, attr_pairs, export_vdas, handle, ref_arg, type_arg};

/// Size of `vdev_vda.name`, the NUL included: names have at most 15 bytes.
pub const VDEV_VDA_NAME_SIZE: usize = 16;
/// Size of `vdev_vda.value`, the NUL included: values have at most 63 bytes.
pub const VDEV_VDA_VALUE_SIZE: usize = 64;
/// The largest number of devices `vdev_domain_get_vdevs()` can encode (the low 16 bits).
pub const VDEV_VDA_MAX_DEVICES: c_int = 0xFFFF;
/// The largest number of attributes per device `vdev_domain_get_vdevs()` can encode (the high
/// bits, keeping the result positive).
pub const VDEV_VDA_MAX_ATTRS: c_int = 0x7FFF;

/// One attribute of a device, in fixed-size fields (the proposal's `virVDA`): a NUL-terminated
/// name (at most 15 bytes) and a NUL-terminated value (at most 63 bytes).
///
/// An entry whose `name[0]` is NUL is an empty entry: `vdev_domain_get_vdevs()` uses it to pad
/// a device that has fewer attributes than the others (its value is then empty too);
/// `vdev_domain_create_vdev()` refuses it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vdev_vda {
    /// The attribute name, NUL-terminated.
    pub name: [c_char; 16],
    /// The attribute value, NUL-terminated.
    pub value: [c_char; 64],
}

/// Get the devices of one type of a domain into the caller's array of `maxattr` entries: the
/// proposal's `virDomainGetVdevs`.
///
/// Returns `(A << 16) + N`, where N is the number of devices and A the number of entries each
/// device occupies, or -1 on failure. Decode with `n = r & 0xFFFF; a = r >> 16;`.
///
/// **Layout.** Device `d` (0 <= d < N, in the driver's listing order) occupies entries
/// `attr[d*A]` to `attr[d*A + A - 1]`, its attributes in name order. Entries from `N*A` on are
/// not touched. The device's reference is one of its attributes when the driver lists it (the
/// mock and Xen: `virtual-device` for disks, `handle` for network devices);
/// `vdev_domain_list_devices()` always gives it.
///
/// **Devices with different numbers of attributes.** A is the largest number of attributes
/// of any of the devices. A device with fewer attributes is padded at the end of its A entries
/// with empty entries: `name[0] == '\0'` and `value[0] == '\0'` (every byte of a padding entry is
/// 0). An attribute never has an empty name, so an empty name always means padding.
///
/// **No device.** Returns 0 and writes nothing. Devices without attributes give A = 0.
///
/// **Array too small.** When `maxattr < N*A`, returns -1 with `VDEV_ERR_BUFFER_TOO_SMALL` and
/// writes nothing; the message says how many entries are needed. To ask for the size first, call
/// with `attr == NULL` and `maxattr == 0`: the result is the same `(A << 16) + N` and nothing is
/// written. (`attr == NULL` with `maxattr > 0` is `VDEV_ERR_NULL_ARGUMENT`; `maxattr < 0` is
/// `VDEV_ERR_INVALID_ARGUMENT`.)
///
/// **Names that do not fit are left out.** `name[16]` holds names of at most 15 bytes. An
/// attribute whose name is longer is not in the answer (and not counted in A), for every
/// device: such names belong to a driver's vocabulary, not to one device, so this call could
/// never return them (Xen network devices have two, `event-channel-tx` and `event-channel-rx`).
/// `vdev_domain_list_devices()`, which has no size limits, lists them.
///
/// **Values that do not fit fail.** `value[64]` holds values of at most 63 bytes. If any
/// listed attribute of any device has a longer value (a long image path, say), the call
/// returns -1 with `VDEV_ERR_VALUE_TOO_LONG` (the message names the device, the attribute and
/// its length) and writes nothing: the library never truncates a value, nor drops one that a
/// device of the same kind may show. Use `vdev_domain_list_devices()` for such devices.
///
/// **Too many.** More than 65535 devices or 32767 attributes per device: -1 with
/// `VDEV_ERR_TOO_MANY`.
///
/// # Safety
/// `dom` is NULL or a live domain handle; `type` is NULL or a NUL-terminated string; `attr` is
/// NULL or points to `maxattr` writable entries.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_get_vdevs(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    attr: *mut vdev_vda,
    maxattr: c_int,
) -> c_int {
    guard(-1, || {
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { type_arg(r#type) }?;
        let maxattr = array_len(attr, maxattr, "attr", "maxattr")?;
        let found = devices::list(dom, Some(&device_type))?;
        unsafe { export_vdas(&found, &device_type, &dom.domain.name, attr, maxattr) }
    })
}

/// Create a device of `type` in a domain from `nbattr` attributes: the proposal's
/// `virDomainCreateVdev`. Returns 0 on success, -1 on failure.
///
/// **Backend domain.** When the `backend` attribute holds a domain *name* (anything but
/// digits), the library looks the domain up and passes its id to the driver instead, for every
/// driver; an unknown name fails with `VDEV_ERR_DOMAIN_NOT_FOUND`. Digits are passed on as an id.
///
/// **Entries.** Each `attr[i].name` and `attr[i].value` must be NUL-terminated within its field:
/// a name without a NUL in its 16 bytes fails with `VDEV_ERR_NAME_TOO_LONG`, a value without a
/// NUL in its 64 bytes with `VDEV_ERR_VALUE_TOO_LONG` (nothing is created, nothing truncated). An
/// empty name (a padding entry) fails with `VDEV_ERR_INVALID_ARGUMENT`; a name given twice with
/// `VDEV_ERR_INVALID_ATTRIBUTE`. `nbattr` may be 0 (then `attr` may be NULL), but the device type
/// may require attributes (`VDEV_ERR_MISSING_ATTRIBUTE`).
///
/// The new device's reference is not returned (the proposal's signature): list the devices, or
/// use `vdev_domain_attach()`, which returns it.
///
/// # Safety
/// `dom` is NULL or a live domain handle; `type` is NULL or a NUL-terminated string; `attr` is
/// NULL or points to `nbattr` readable entries.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_create_vdev(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    attr: *const vdev_vda,
    nbattr: c_int,
) -> c_int {
    guard(-1, || {
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { type_arg(r#type) }?;
        let pairs = unsafe { attr_pairs(attr, nbattr, "attr", "nbattr") }?;
        devices::attach(dom, device_type, pairs, Default::default())?;
        Ok(0)
    })
}

/// Change attributes of device `ref` of `type` in a domain in place, from `nbattr` attributes:
/// a CD-ROM drive's medium, a NIC's link state (`vdev schema TYPE` and the driver's docs say
/// which attributes are updatable). In the style of the proposal's three calls. Returns 0 on
/// success, -1 on failure.
///
/// The entries follow `vdev_domain_create_vdev()`'s rules (NUL within each field, else
/// `VDEV_ERR_NAME_TOO_LONG` / `VDEV_ERR_VALUE_TOO_LONG`; no empty name). An attribute that is
/// not updatable fails with `VDEV_ERR_INVALID_ATTRIBUTE` before the hypervisor is asked; an
/// unknown `ref` with `VDEV_ERR_DEVICE_NOT_FOUND`; a driver that updates nothing with
/// `VDEV_ERR_UNSUPPORTED`; a read-only connection with `VDEV_ERR_READ_ONLY`; a CD-ROM tray the
/// guest has locked with `VDEV_ERR_DEVICE_BUSY` (give `force` = `true`). On failure the device
/// is as it was. A value longer than 63 bytes (a long medium path) needs `vdev_domain_update()`.
///
/// # Safety
/// `dom` is NULL or a live domain handle; `type` and `ref` are NULL or NUL-terminated strings;
/// `attr` is NULL or points to `nbattr` readable entries.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_update_vdev(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    r#ref: *const c_char,
    attr: *const vdev_vda,
    nbattr: c_int,
) -> c_int {
    guard(-1, || {
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { type_arg(r#type) }?;
        let reference = unsafe { ref_arg(r#ref) }?;
        let pairs = unsafe { attr_pairs(attr, nbattr, "attr", "nbattr") }?;
        devices::update(dom, device_type, reference, pairs, Default::default())?;
        Ok(0)
    })
}

/// Remove device `ref` of `type` from a domain: the proposal's `virDomainDestroyVdev`. Returns
/// 0 when the device is gone, -1 on failure.
///
/// It waits up to 10 seconds for the guest to release the device. If the guest has not, it
/// fails with `VDEV_ERR_REMOVAL_PENDING`: the device is still there, listed with state
/// `removal-pending`, and goes when the guest lets go. `vdev_domain_detach()` takes a timeout and
/// a force flag.
///
/// # Safety
/// `dom` is NULL or a live domain handle; `type` and `ref` are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_destroy_vdev(
    dom: *mut vdev_domain,
    r#type: *const c_char,
    r#ref: *const c_char,
) -> c_int {
    guard(-1, || {
        let dom = unsafe { handle(dom, "dom") }?;
        let device_type = unsafe { type_arg(r#type) }?;
        let reference = unsafe { ref_arg(r#ref) }?;
        devices::detach(dom, device_type, reference, DetachOptions::default())?;
        Ok(0)
    })
}
