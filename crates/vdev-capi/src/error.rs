//! Error codes, the thread-local last error, and the guard every C entry point runs in.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use vdev_facade::Error;

use crate::marshal::c_string;

/// Why a call failed: the value of `vdev_last_error_code()`.
///
/// The numbers are stable: a code is never renumbered or reused. Codes 1 to 99 mirror the
/// variants of the Rust `vdev::Error` (the name `vdev_error_code_name()` returns is the Rust
/// `Error::code()`); codes from 100 are conditions of the C boundary itself.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vdev_error_code {
    /// No error: the last call on this thread succeeded.
    VDEV_OK = 0,
    /// The connection URI could not be parsed or has an option the driver does not know.
    VDEV_ERR_INVALID_URI = 1,
    /// No driver built into the library handles the URI's scheme.
    VDEV_ERR_NO_DRIVER = 2,
    /// Two drivers claim the URI's scheme.
    VDEV_ERR_DUPLICATE_SCHEME = 3,
    /// No domain has this name or id.
    VDEV_ERR_DOMAIN_NOT_FOUND = 4,
    /// The domain has no device of this type with this reference.
    VDEV_ERR_DEVICE_NOT_FOUND = 5,
    /// A device with this reference (or a conflicting one) already exists.
    VDEV_ERR_DEVICE_EXISTS = 6,
    /// An attribute name or value (or a device type or reference) is malformed or not accepted.
    VDEV_ERR_INVALID_ATTRIBUTE = 7,
    /// A required attribute was not given.
    VDEV_ERR_MISSING_ATTRIBUTE = 8,
    /// The driver does not support this operation or device type.
    VDEV_ERR_UNSUPPORTED = 9,
    /// The connection is read-only and the call would change something.
    VDEV_ERR_READ_ONLY = 10,
    /// An operation did not finish in time.
    VDEV_ERR_TIMEOUT = 11,
    /// Detach was asked for but the guest has not released the device yet: it is still there,
    /// listed with state `removal-pending`.
    VDEV_ERR_REMOVAL_PENDING = 12,
    /// The hypervisor or its control channel failed.
    VDEV_ERR_BACKEND = 13,
    /// The guest refused to release the device: the removal is over and the device stays,
    /// connected.
    VDEV_ERR_REMOVAL_REFUSED = 14,
    /// The device is held by the guest and cannot be changed as asked (a CD-ROM tray the guest
    /// has locked); the message says the way out.
    VDEV_ERR_DEVICE_BUSY = 15,
    /// The remote host of a `+ssh` URI could not be reached or used (host key, login, a
    /// dropped connection, a missing program there); the message carries ssh's own words and
    /// what to do.
    VDEV_ERR_REMOTE = 16,
    /// A desired-state document is malformed or cannot be planned (a syntax error, an unknown
    /// key, two entries with one identity); the message names the place. Nothing changed.
    VDEV_ERR_INVALID_DOCUMENT = 17,
    /// A pointer argument that must not be NULL was NULL.
    VDEV_ERR_NULL_ARGUMENT = 100,
    /// An argument is empty, negative, not UTF-8, or otherwise not acceptable.
    VDEV_ERR_INVALID_ARGUMENT = 101,
    /// The caller's `vdev_vda` array has fewer entries than the answer needs; nothing was
    /// written to it.
    VDEV_ERR_BUFFER_TOO_SMALL = 102,
    /// An attribute name does not fit the 16 bytes (15 and the NUL) of `vdev_vda.name`.
    VDEV_ERR_NAME_TOO_LONG = 103,
    /// An attribute value does not fit the 64 bytes (63 and the NUL) of `vdev_vda.value`.
    VDEV_ERR_VALUE_TOO_LONG = 104,
    /// The answer cannot be encoded: more than 65535 devices or 32767 attributes per device
    /// for `vdev_domain_get_vdevs`, or more than `INT_MAX` items.
    VDEV_ERR_TOO_MANY = 105,
    /// The connection of this handle was closed with `vdev_conn_close()`, or its event stream
    /// ended.
    VDEV_ERR_CLOSED = 106,
    /// A bug inside the library was caught at the C boundary (a Rust panic); the call did
    /// nothing it could roll back. Please report it with the message.
    VDEV_ERR_PANIC = 107,
    /// The operating system refused a resource the library needs (such as a thread).
    VDEV_ERR_SYSTEM = 108,
    /// A condition this version of the library has no code for yet.
    VDEV_ERR_UNKNOWN = 199,
}

use vdev_error_code::*;

impl vdev_error_code {
    /// Every code, for tests and for `vdev_error_code_name()`.
    pub const ALL: &'static [vdev_error_code] = &[
        VDEV_OK,
        VDEV_ERR_INVALID_URI,
        VDEV_ERR_NO_DRIVER,
        VDEV_ERR_DUPLICATE_SCHEME,
        VDEV_ERR_DOMAIN_NOT_FOUND,
        VDEV_ERR_DEVICE_NOT_FOUND,
        VDEV_ERR_DEVICE_EXISTS,
        VDEV_ERR_INVALID_ATTRIBUTE,
        VDEV_ERR_MISSING_ATTRIBUTE,
        VDEV_ERR_UNSUPPORTED,
        VDEV_ERR_READ_ONLY,
        VDEV_ERR_TIMEOUT,
        VDEV_ERR_REMOVAL_PENDING,
        VDEV_ERR_BACKEND,
        VDEV_ERR_REMOVAL_REFUSED,
        VDEV_ERR_DEVICE_BUSY,
        VDEV_ERR_REMOTE,
        VDEV_ERR_INVALID_DOCUMENT,
        VDEV_ERR_NULL_ARGUMENT,
        VDEV_ERR_INVALID_ARGUMENT,
        VDEV_ERR_BUFFER_TOO_SMALL,
        VDEV_ERR_NAME_TOO_LONG,
        VDEV_ERR_VALUE_TOO_LONG,
        VDEV_ERR_TOO_MANY,
        VDEV_ERR_CLOSED,
        VDEV_ERR_PANIC,
        VDEV_ERR_SYSTEM,
        VDEV_ERR_UNKNOWN,
    ];

    /// The code of a core error, from its stable `Error::code()` name.
    pub fn from_core_code(code: &str) -> Self {
        match code {
            "invalid-uri" => VDEV_ERR_INVALID_URI,
            "no-driver" => VDEV_ERR_NO_DRIVER,
            "duplicate-scheme" => VDEV_ERR_DUPLICATE_SCHEME,
            "domain-not-found" => VDEV_ERR_DOMAIN_NOT_FOUND,
            "device-not-found" => VDEV_ERR_DEVICE_NOT_FOUND,
            "device-exists" => VDEV_ERR_DEVICE_EXISTS,
            "invalid-attribute" => VDEV_ERR_INVALID_ATTRIBUTE,
            "missing-attribute" => VDEV_ERR_MISSING_ATTRIBUTE,
            "unsupported" => VDEV_ERR_UNSUPPORTED,
            "read-only" => VDEV_ERR_READ_ONLY,
            "timeout" => VDEV_ERR_TIMEOUT,
            "removal-pending" => VDEV_ERR_REMOVAL_PENDING,
            "backend" => VDEV_ERR_BACKEND,
            "removal-refused" => VDEV_ERR_REMOVAL_REFUSED,
            "device-busy" => VDEV_ERR_DEVICE_BUSY,
            "invalid-document" => VDEV_ERR_INVALID_DOCUMENT,
            "remote" => VDEV_ERR_REMOTE,
            _ => VDEV_ERR_UNKNOWN,
        }
    }

    /// The short stable name (`"device-not-found"`, `"null-argument"`, ...).
    pub fn name(self) -> &'static CStr {
        match self {
            VDEV_OK => c"ok",
            VDEV_ERR_INVALID_URI => c"invalid-uri",
            VDEV_ERR_NO_DRIVER => c"no-driver",
            VDEV_ERR_DUPLICATE_SCHEME => c"duplicate-scheme",
            VDEV_ERR_DOMAIN_NOT_FOUND => c"domain-not-found",
            VDEV_ERR_DEVICE_NOT_FOUND => c"device-not-found",
            VDEV_ERR_DEVICE_EXISTS => c"device-exists",
            VDEV_ERR_INVALID_ATTRIBUTE => c"invalid-attribute",
            VDEV_ERR_MISSING_ATTRIBUTE => c"missing-attribute",
            VDEV_ERR_UNSUPPORTED => c"unsupported",
            VDEV_ERR_READ_ONLY => c"read-only",
            VDEV_ERR_TIMEOUT => c"timeout",
            VDEV_ERR_REMOVAL_PENDING => c"removal-pending",
            VDEV_ERR_BACKEND => c"backend",
            VDEV_ERR_REMOVAL_REFUSED => c"removal-refused",
            VDEV_ERR_DEVICE_BUSY => c"device-busy",
            VDEV_ERR_INVALID_DOCUMENT => c"invalid-document",
            VDEV_ERR_REMOTE => c"remote",
            VDEV_ERR_NULL_ARGUMENT => c"null-argument",
            VDEV_ERR_INVALID_ARGUMENT => c"invalid-argument",
            VDEV_ERR_BUFFER_TOO_SMALL => c"buffer-too-small",
            VDEV_ERR_NAME_TOO_LONG => c"name-too-long",
            VDEV_ERR_VALUE_TOO_LONG => c"value-too-long",
            VDEV_ERR_TOO_MANY => c"too-many",
            VDEV_ERR_CLOSED => c"closed",
            VDEV_ERR_PANIC => c"panic",
            VDEV_ERR_SYSTEM => c"system",
            VDEV_ERR_UNKNOWN => c"unknown",
        }
    }
}

/// An error on its way to the C caller.
#[derive(Debug)]
pub(crate) struct CError {
    pub(crate) code: vdev_error_code,
    pub(crate) message: String,
}

impl CError {
    pub(crate) fn new(code: vdev_error_code, message: impl Into<String>) -> Self {
        CError {
            code,
            message: message.into(),
        }
    }

    /// A NULL where a pointer is required.
    pub(crate) fn null(what: &str) -> Self {
        CError::new(
            VDEV_ERR_NULL_ARGUMENT,
            format!("the argument '{what}' is NULL; pass a valid pointer"),
        )
    }

    /// An argument that is present but not acceptable.
    pub(crate) fn invalid(what: &str, why: impl std::fmt::Display) -> Self {
        CError::new(
            VDEV_ERR_INVALID_ARGUMENT,
            format!("the argument '{what}' is invalid: {why}"),
        )
    }
}

impl From<Error> for CError {
    fn from(e: Error) -> Self {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(&format!(" (caused by: {s})"));
            source = s.source();
        }
        CError::new(vdev_error_code::from_core_code(e.code()), message)
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<(vdev_error_code, CString)>> = const { RefCell::new(None) };
}

fn set_last_error(e: CError) {
    let msg = c_string(&e.message);
    // `try_with`: during thread teardown the slot may be gone; the error is then dropped.
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = Some((e.code, msg)));
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = None);
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Run the body of a C entry point: clear the last error, catch any panic, and turn an error
/// into `fail` plus the thread's last error.
pub(crate) fn guard<T>(fail: T, body: impl FnOnce() -> Result<T, CError>) -> T {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(e);
            fail
        }
        Err(payload) => {
            let what = panic_message(payload.as_ref());
            // Dropping a panic payload can itself panic; never let that cross the boundary.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            set_last_error(CError::new(
                VDEV_ERR_PANIC,
                format!("internal error in libvdev (a Rust panic was caught at the C boundary): {what}; please report it"),
            ));
            fail
        }
    }
}

/// The code of the last error on the calling thread: a `vdev_error_code`, `VDEV_OK` (0) when
/// the last vdev call on this thread succeeded.
///
/// Every vdev call except `vdev_last_error_code()`, `vdev_last_error_message()` and
/// `vdev_error_code_name()` resets the last error when it starts, so read it right after the
/// call that failed.
#[no_mangle]
pub extern "C" fn vdev_last_error_code() -> c_int {
    LAST_ERROR
        .try_with(|l| l.borrow().as_ref().map_or(VDEV_OK, |(c, _)| *c))
        .unwrap_or(VDEV_OK) as c_int
}

/// The message of the last error on the calling thread: a sentence that says what went wrong
/// and what to do. Never NULL: `"no error"` when the last call succeeded.
///
/// The string belongs to the library and stays valid until the next vdev call on the same
/// thread (other than `vdev_last_error_code()` and `vdev_last_error_message()`); copy it to
/// keep it. Do not free it.
#[no_mangle]
pub extern "C" fn vdev_last_error_message() -> *const c_char {
    LAST_ERROR
        .try_with(|l| l.borrow().as_ref().map(|(_, m)| m.as_ptr()))
        .ok()
        .flatten()
        .unwrap_or(c"no error".as_ptr())
}

/// Forget the last error of the calling thread (`vdev_last_error_code()` answers `VDEV_OK`).
#[no_mangle]
pub extern "C" fn vdev_reset_last_error() {
    clear_last_error();
}

/// The short stable name of an error code (`"device-not-found"`, `"null-argument"`, ...), for
/// logs and for mapping to other languages' errors. Never NULL: `"unknown"` for a number that is
/// no code. A static string: do not free it.
#[no_mangle]
pub extern "C" fn vdev_error_code_name(code: c_int) -> *const c_char {
    vdev_error_code::ALL
        .iter()
        .find(|c| **c as c_int == code)
        .copied()
        .unwrap_or(VDEV_ERR_UNKNOWN)
        .name()
        .as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_code_has_a_c_code_of_the_same_name() {
        for code in Error::CODES {
            let c = vdev_error_code::from_core_code(code);
            assert_ne!(c, VDEV_ERR_UNKNOWN, "core code {code} has no C code");
            assert_eq!(c.name().to_str().unwrap(), *code);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = vdev_error_code::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), vdev_error_code::ALL.len());
    }

    #[test]
    fn a_panic_becomes_an_error() {
        let r: c_int = guard(-1, || panic!("boom"));
        assert_eq!(r, -1);
        assert_eq!(vdev_last_error_code(), VDEV_ERR_PANIC as c_int);
        let msg = unsafe { CStr::from_ptr(vdev_last_error_message()) };
        assert!(msg.to_str().unwrap().contains("boom"));
        let ok: c_int = guard(-1, || Ok(0));
        assert_eq!(ok, 0);
        assert_eq!(vdev_last_error_code(), 0);
        let msg = unsafe { CStr::from_ptr(vdev_last_error_message()) };
        assert_eq!(msg.to_str().unwrap(), "no error");
    }
}
