//! Marshalling: every conversion between what C passes and gets back and Rust values, each
//! written once. The files with the `extern "C"` functions check and convert their arguments
//! and results only through here.
//!
//! - Handles in and out ([`handle`], [`into_handle`], [`take_handle`]) and out-pointers
//!   ([`out_arg`]).
//! - C strings in ([`str_arg`], [`utf8_arg`]) and out ([`c_string`], [`into_raw_str`],
//!   [`free_raw_str`]).
//! - Counts and ids ([`c_count`], [`domain_id_arg`]), arrays in ([`array_len`],
//!   [`array_arg`]) and out ([`export_list`], [`into_raw_array`], [`take_list`]).
//! - Device types and references ([`type_arg`], [`optional_type_arg`], [`ref_arg`]), timeouts
//!   and flags ([`detach_options`], [`wait_arg`]).
//! - Attributes in, from `vdev_attr` or `vdev_vda` arrays alike ([`attr_pairs`]), and out
//!   ([`export_attrs`], [`free_attrs`]); devices and events out ([`export_device`],
//!   [`free_device`], [`export_event`], [`free_event`]).
//! - The proposal's fixed-size fields, in (through [`attr_pairs`]) and out ([`export_vdas`]).
//! - Desired state: a document in ([`document_arg`]), apply's options ([`apply_options`]), and
//!   plans, apply reports and documents out as JSON ([`plan_json`], [`report_json`],
//!   [`export_str`]).

use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::ptr;
use std::time::Duration;

use vdev_facade::{
    ApplyOptions, ApplyReport, Attributes, DetachOptions, Device, DeviceEvent, DeviceRef,
    DeviceType, Document, Plan, Scope,
};

use crate::devices::{
    vdev_attr, vdev_device, VDEV_AFFECT_CONFIG, VDEV_AFFECT_LIVE, VDEV_DETACH_DEFAULT_TIMEOUT,
    VDEV_DETACH_FORCE,
};
use crate::error::vdev_error_code::{self, VDEV_ERR_NAME_TOO_LONG, VDEV_ERR_VALUE_TOO_LONG};
use crate::error::CError;
use crate::events::{vdev_event, vdev_event_kind};
use crate::proposal::{
    vdev_vda, VDEV_VDA_MAX_ATTRS, VDEV_VDA_MAX_DEVICES, VDEV_VDA_NAME_SIZE, VDEV_VDA_VALUE_SIZE,
};

// Handles.

/// A handle argument: not NULL.
///
/// # Safety
/// `p` is NULL or a live handle of this library.
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T, CError> {
    unsafe { p.as_ref() }.ok_or_else(|| CError::null(what))
}

/// A new handle for the caller; its free function takes it back with [`take_handle`].
pub(crate) fn into_handle<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Take back a handle from [`into_handle`] to drop it: `None` for NULL.
///
/// # Safety
/// `p` is NULL or a handle from [`into_handle`] not taken back yet.
pub(crate) unsafe fn take_handle<T>(p: *mut T) -> Option<Box<T>> {
    if p.is_null() {
        None
    } else {
        Some(unsafe { Box::from_raw(p) })
    }
}

/// An out-pointer argument (where a call stores what it hands out): not NULL. It is set to NULL
/// at once, so that it is NULL whatever fails after.
///
/// # Safety
/// `p` is NULL or points to writable storage for one pointer.
pub(crate) unsafe fn out_arg<'a, T>(p: *mut *mut T, what: &str) -> Result<&'a mut *mut T, CError> {
    let out = unsafe { p.as_mut() }.ok_or_else(|| CError::null(what))?;
    *out = ptr::null_mut();
    Ok(out)
}

// C strings.

/// A C string argument that may be empty: not NULL, UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn utf8_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, CError> {
    if p.is_null() {
        return Err(CError::null(what));
    }
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| CError::invalid(what, "it is not valid UTF-8"))
}

/// A C string argument: not NULL, not empty, UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, CError> {
    let s = unsafe { utf8_arg(p, what) }?;
    if s.is_empty() {
        return Err(CError::invalid(what, "it is an empty string"));
    }
    Ok(s)
}

/// A Rust string as a C string; a NUL inside (which the core never lets through) is escaped.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// A Rust string as a C string the caller gets; [`free_raw_str`] frees it.
pub(crate) fn into_raw_str(s: &str) -> *mut c_char {
    c_string(s).into_raw()
}

/// Free a string from [`into_raw_str`]. NULL does nothing.
///
/// # Safety
/// `p` is NULL or a string from [`into_raw_str`] not freed yet.
pub(crate) unsafe fn free_raw_str(p: *const c_char) {
    if !p.is_null() {
        drop(unsafe { CString::from_raw(p.cast_mut()) });
    }
}

// Counts, ids and arrays.

/// A count as a C `int`.
pub(crate) fn c_count(n: usize, what: &str) -> Result<c_int, CError> {
    c_int::try_from(n).map_err(|_| {
        CError::new(
            vdev_error_code::VDEV_ERR_TOO_MANY,
            format!("there are {n} {what}, more than a C int can count"),
        )
    })
}

/// A domain id argument: 0 or more.
pub(crate) fn domain_id_arg(id: c_int) -> Result<u32, CError> {
    u32::try_from(id)
        .map_err(|_| CError::invalid("id", format!("{id} is negative; domain ids are 0 or more")))
}

/// The length of a caller's array argument `what` of `n` entries (the argument `count`): `n`
/// is not negative, and the array is not NULL unless `n` is 0.
pub(crate) fn array_len<T>(
    p: *const T,
    n: c_int,
    what: &str,
    count: &str,
) -> Result<usize, CError> {
    let len = usize::try_from(n).map_err(|_| {
        CError::invalid(
            count,
            format!("{n} is negative; give the number of entries of {what}"),
        )
    })?;
    if p.is_null() && len > 0 {
        return Err(CError::null(what));
    }
    Ok(len)
}

/// A caller's array argument as a slice, checked by [`array_len`].
///
/// # Safety
/// `p` is NULL or points to `n` readable entries.
pub(crate) unsafe fn array_arg<'a, T>(
    p: *const T,
    n: c_int,
    what: &str,
    count: &str,
) -> Result<&'a [T], CError> {
    let len = array_len(p, n, what, count)?;
    Ok(if len == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(p, len) }
    })
}

/// Items as a library-owned array: its pointer (NULL when there are none) and length. Taken
/// back with [`take_list`] (or [`take_array`]).
pub(crate) fn into_raw_array<T>(items: impl IntoIterator<Item = T>) -> (*mut T, usize) {
    let array: Box<[T]> = items.into_iter().collect();
    match array.len() {
        0 => (ptr::null_mut(), 0),
        n => (Box::into_raw(array).cast(), n),
    }
}

/// Take back an array from [`into_raw_array`] to drop it: empty for NULL or 0 entries.
///
/// # Safety
/// `p` is NULL or an array of `n` entries from [`into_raw_array`] not taken back yet.
pub(crate) unsafe fn take_array<T>(p: *mut T, n: usize) -> Box<[T]> {
    if p.is_null() || n == 0 {
        Box::new([])
    } else {
        unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, n)) }
    }
}

/// Hand a list out: set `*out` to a library-owned array of the items (NULL when there are none)
/// and return their number (`what` names them in the error when they are more than a C `int`
/// counts). The list's free function takes it back with [`take_list`].
pub(crate) fn export_list<T>(
    out: &mut *mut T,
    items: impl ExactSizeIterator<Item = T>,
    what: &str,
) -> Result<c_int, CError> {
    let n = c_count(items.len(), what)?;
    *out = into_raw_array(items).0;
    Ok(n)
}

/// Take back a list from [`export_list`], given the count it returned: empty for NULL or a
/// count of 0 or less.
///
/// # Safety
/// `p` is NULL or a list of `n` entries from [`export_list`] not taken back yet.
pub(crate) unsafe fn take_list<T>(p: *mut T, n: c_int) -> Box<[T]> {
    unsafe { take_array(p, usize::try_from(n).unwrap_or(0)) }
}

// Device types and references, timeouts and flags.

/// A device type argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn type_arg(p: *const c_char) -> Result<DeviceType, CError> {
    let t = unsafe { str_arg(p, "type") }?;
    DeviceType::new(t.to_owned()).map_err(CError::from)
}

/// A device type argument where NULL means every type.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn optional_type_arg(p: *const c_char) -> Result<Option<DeviceType>, CError> {
    if p.is_null() {
        Ok(None)
    } else {
        unsafe { type_arg(p) }.map(Some)
    }
}

/// A device reference argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn ref_arg(p: *const c_char) -> Result<DeviceRef, CError> {
    let r = unsafe { str_arg(p, "ref") }?;
    DeviceRef::new(r).map_err(CError::from)
}

/// The detach options of `vdev_domain_detach()`'s `timeout_ms` and `flags`.
pub(crate) fn detach_options(timeout_ms: c_int, flags: c_uint) -> Result<DetachOptions, CError> {
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
    let scope = scope_flags(flags, VDEV_DETACH_FORCE, "VDEV_DETACH_FORCE, ")?;
    Ok(DetachOptions {
        timeout,
        force: flags & VDEV_DETACH_FORCE != 0,
        scope,
    })
}

/// The scope of `flags` (`VDEV_AFFECT_LIVE`, `VDEV_AFFECT_CONFIG`, both, or neither for the
/// driver's default), refusing bits other than those and `other` (named in `others`, each
/// followed by ", ").
pub(crate) fn scope_flags(
    flags: c_uint,
    other: c_uint,
    others: &str,
) -> Result<Option<Scope>, CError> {
    let scopes = VDEV_AFFECT_LIVE | VDEV_AFFECT_CONFIG;
    if flags & !(scopes | other) != 0 {
        return Err(CError::invalid(
            "flags",
            format!(
                "{flags:#x} has unknown bits; the flags are {others}VDEV_AFFECT_LIVE and VDEV_AFFECT_CONFIG"
            ),
        ));
    }
    Ok(match flags & scopes {
        0 => None,
        VDEV_AFFECT_LIVE => Some(Scope::Live),
        VDEV_AFFECT_CONFIG => Some(Scope::Persistent),
        _ => Some(Scope::Both),
    })
}

/// A wait's `timeout_ms`: `None` (no limit) when negative.
pub(crate) fn wait_arg(timeout_ms: c_int) -> Option<Duration> {
    u64::try_from(timeout_ms).ok().map(Duration::from_millis)
}

// Attributes, devices and events.

/// An entry of a caller's attribute array: a `vdev_attr` (C strings) or a `vdev_vda` (the
/// proposal's fixed-size fields).
pub(crate) trait AttrEntry {
    /// The entry's name and value; `array` and `index` name the entry in errors.
    ///
    /// # Safety
    /// The entry's pointers, if it has any, are NULL or NUL-terminated strings.
    unsafe fn read(&self, array: &str, index: usize) -> Result<(&str, &str), CError>;
}

impl AttrEntry for vdev_attr {
    unsafe fn read(&self, array: &str, index: usize) -> Result<(&str, &str), CError> {
        let name = unsafe { str_arg(self.name, &format!("{array}[{index}].name")) }?;
        let value = unsafe { utf8_arg(self.value, &format!("{array}[{index}].value")) }?;
        Ok((name, value))
    }
}

impl AttrEntry for vdev_vda {
    unsafe fn read(&self, array: &str, index: usize) -> Result<(&str, &str), CError> {
        let name = read_field(&self.name, array, index, "name", VDEV_ERR_NAME_TOO_LONG)?;
        let value = read_field(&self.value, array, index, "value", VDEV_ERR_VALUE_TOO_LONG)?;
        if name.is_empty() {
            return Err(CError::invalid(
                array,
                format!("{array}[{index}].name is empty; every entry must name an attribute"),
            ));
        }
        Ok((name, value))
    }
}

/// The name/value pairs of a caller's attribute array `what` of `n` entries (the argument
/// `count`), checked by [`array_len`] and entry by entry ([`AttrEntry`]).
///
/// # Safety
/// `p` is NULL or points to `n` readable entries, whose strings are NULL or NUL-terminated.
pub(crate) unsafe fn attr_pairs<E: AttrEntry>(
    p: *const E,
    n: c_int,
    what: &str,
    count: &str,
) -> Result<Vec<(String, String)>, CError> {
    let entries = unsafe { array_arg(p, n, what, count) }?;
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (name, value) = unsafe { e.read(what, i) }?;
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Attributes as a library-owned array of `vdev_attr` (NULL when empty) and its length; free
/// with [`free_attrs`].
pub(crate) fn export_attrs(a: &Attributes) -> (*const vdev_attr, usize) {
    let (attrs, n) = into_raw_array(a.iter().map(|(name, value)| vdev_attr {
        name: into_raw_str(name),
        value: into_raw_str(value),
    }));
    (attrs.cast_const(), n)
}

/// Free an array from [`export_attrs`].
///
/// # Safety
/// `attrs` and `n` come from one [`export_attrs`] call, not freed yet.
pub(crate) unsafe fn free_attrs(attrs: *const vdev_attr, n: usize) {
    for a in unsafe { take_array(attrs.cast_mut(), n) }.iter() {
        unsafe {
            free_raw_str(a.name);
            free_raw_str(a.value);
        }
    }
}

/// A device as the caller gets it; free with [`free_device`].
pub(crate) fn export_device(d: &Device) -> vdev_device {
    let (attrs, nattrs) = export_attrs(&d.attributes);
    vdev_device {
        device_type: into_raw_str(d.device_type.as_str()),
        reference: into_raw_str(d.reference.as_str()),
        state: into_raw_str(d.state.as_str()),
        attrs,
        nattrs,
    }
}

/// Free the strings and attributes of a device from [`export_device`].
///
/// # Safety
/// `d` comes from [`export_device`], not freed yet.
pub(crate) unsafe fn free_device(d: &vdev_device) {
    unsafe {
        free_raw_str(d.device_type);
        free_raw_str(d.reference);
        free_raw_str(d.state);
        free_attrs(d.attrs, d.nattrs);
    }
}

/// An event as the caller gets it; free with [`free_event`].
pub(crate) fn export_event(e: &DeviceEvent) -> vdev_event {
    let (kind, state) = match e {
        DeviceEvent::Added { .. } => (vdev_event_kind::VDEV_EVENT_ADDED, ptr::null_mut()),
        DeviceEvent::StateChanged { state, .. } => (
            vdev_event_kind::VDEV_EVENT_STATE_CHANGED,
            into_raw_str(state.as_str()),
        ),
        DeviceEvent::Removed { .. } => (vdev_event_kind::VDEV_EVENT_REMOVED, ptr::null_mut()),
        DeviceEvent::Updated { .. } => (vdev_event_kind::VDEV_EVENT_UPDATED, ptr::null_mut()),
        _ => (vdev_event_kind::VDEV_EVENT_OTHER, ptr::null_mut()),
    };
    let (attrs, nattrs) = match e {
        DeviceEvent::Updated { attributes, .. } => export_attrs(attributes),
        _ => (ptr::null(), 0),
    };
    vdev_event {
        kind: kind as c_int,
        domain_id: e.domain().id.unwrap_or(c_uint::MAX),
        domain_name: into_raw_str(&e.domain().name),
        device_type: into_raw_str(e.device_type().as_str()),
        reference: into_raw_str(e.reference().as_str()),
        state,
        attrs,
        nattrs,
    }
}

/// Free the strings and attributes of an event from [`export_event`].
///
/// # Safety
/// `e` comes from [`export_event`], not freed yet.
pub(crate) unsafe fn free_event(e: &vdev_event) {
    for p in [e.domain_name, e.device_type, e.reference, e.state] {
        unsafe { free_raw_str(p) };
    }
    unsafe { free_attrs(e.attrs, e.nattrs) };
}

// The proposal's fixed-size fields.

/// Copy `s` into a fixed field, NUL-padded. The caller checked that it fits.
fn fill(field: &mut [c_char], s: &str) {
    field.fill(0);
    for (d, b) in field.iter_mut().zip(s.bytes()) {
        *d = b as c_char;
    }
}

/// Read a fixed field of entry `index` of `array`: it must hold a NUL (else `code`).
fn read_field<'a>(
    field: &'a [c_char],
    array: &str,
    index: usize,
    what: &str,
    code: vdev_error_code,
) -> Result<&'a str, CError> {
    let bytes = unsafe { &*(field as *const [c_char] as *const [u8]) };
    let s = CStr::from_bytes_until_nul(bytes).map_err(|_| {
        CError::new(
            code,
            format!(
                "{array}[{index}].{what} has no NUL within its {} bytes: a {what} has at most {} bytes; use vdev_domain_attach() for longer ones",
                field.len(),
                field.len() - 1
            ),
        )
    })?;
    s.to_str()
        .map_err(|_| CError::invalid(array, format!("{array}[{index}].{what} is not valid UTF-8")))
}

/// The attributes of `d` that `vdev_domain_get_vdevs()` returns: those whose names fit
/// `vdev_vda.name`.
fn listed(d: &Device) -> Vec<(&str, &str)> {
    d.attributes
        .iter()
        .filter(|(name, _)| name.len() < VDEV_VDA_NAME_SIZE)
        .collect()
}

/// Write `devices` (of `device_type`, in domain `domain`) into the caller's array `attr` of
/// `maxattr` entries, checked by [`array_len`], in the layout `vdev_domain_get_vdevs()`
/// documents, and return its `(A << 16) + N`. With `attr` NULL (and `maxattr` 0) it only
/// computes the answer's size. On every error nothing is written.
///
/// # Safety
/// `attr` is NULL or points to `maxattr` writable entries.
pub(crate) unsafe fn export_vdas(
    devices: &[Device],
    device_type: &DeviceType,
    domain: &str,
    attr: *mut vdev_vda,
    maxattr: usize,
) -> Result<c_int, CError> {
    let n = devices.len();
    let a = devices.iter().map(|d| listed(d).len()).max().unwrap_or(0);
    if n > VDEV_VDA_MAX_DEVICES as usize || a > VDEV_VDA_MAX_ATTRS as usize {
        return Err(CError::new(
            vdev_error_code::VDEV_ERR_TOO_MANY,
            format!("domain '{domain}' has {n} {device_type} devices with up to {a} attributes each; vdev_domain_get_vdevs() encodes at most {VDEV_VDA_MAX_DEVICES} devices and {VDEV_VDA_MAX_ATTRS} attributes; use vdev_domain_list_devices()"),
        ));
    }
    for d in devices {
        for (name, value) in listed(d) {
            if value.len() >= VDEV_VDA_VALUE_SIZE {
                return Err(CError::new(
                    VDEV_ERR_VALUE_TOO_LONG,
                    format!("{device_type} device '{}' has an attribute '{name}' whose value is {} bytes long; vdev_vda.value holds at most {}; use vdev_domain_list_devices() to read it", d.reference, value.len(), VDEV_VDA_VALUE_SIZE - 1),
                ));
            }
        }
    }
    let needed = n * a;
    let size_query = attr.is_null();
    if !size_query && needed > maxattr {
        return Err(CError::new(
            vdev_error_code::VDEV_ERR_BUFFER_TOO_SMALL,
            format!("the answer needs {needed} vdev_vda entries ({n} devices x {a} attributes) but maxattr is {maxattr}; nothing was written"),
        ));
    }
    if !size_query && needed > 0 {
        let out = unsafe { std::slice::from_raw_parts_mut(attr, needed) };
        for (d, slots) in devices.iter().zip(out.chunks_mut(a)) {
            let mut attrs = listed(d).into_iter();
            for slot in slots {
                let (name, value) = attrs.next().unwrap_or(("", ""));
                fill(&mut slot.name, name);
                fill(&mut slot.value, value);
            }
        }
    }
    Ok(((a as c_int) << 16) + n as c_int)
}

// Desired state.

/// A desired-state document argument (JSON or YAML text): not NULL, UTF-8, and a document;
/// otherwise `VDEV_ERR_INVALID_DOCUMENT` naming the place.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn document_arg(p: *const c_char, what: &str) -> Result<Document, CError> {
    let text = unsafe { utf8_arg(p, what) }?;
    Ok(Document::parse(text)?)
}

/// Apply's options: the wait of each removal (as [`detach_options`]), and the scope of `flags`
/// (as [`scope_flags`]).
pub(crate) fn apply_options(timeout_ms: c_int, flags: c_uint) -> Result<ApplyOptions, CError> {
    let scope = scope_flags(flags, 0, "")?;
    let detach = detach_options(timeout_ms, 0)?;
    Ok(ApplyOptions {
        timeout: detach.timeout,
        scope,
    })
}

/// A plan as `vdev plan --json` writes it (the core's one JSON form), `{"changes": [...]}`,
/// for the caller to free with [`free_raw_str`].
pub(crate) fn plan_json(plan: &Plan) -> *mut c_char {
    into_raw_str(&serde_json::to_string(plan).expect("a plan serialises"))
}

/// An apply report as `vdev apply --json` writes it (the core's one JSON form):
/// `{"changed": bool, "changes": [...]}`, each change with its `outcome`; for the caller to free
/// with [`free_raw_str`].
pub(crate) fn report_json(report: &ApplyReport) -> *mut c_char {
    into_raw_str(&serde_json::to_string(report).expect("a report serialises"))
}

/// A document as JSON text (as `vdev export --json` writes it), for the caller to free with
/// [`free_raw_str`].
pub(crate) fn export_str(doc: &Document) -> *mut c_char {
    into_raw_str(&doc.to_json())
}
