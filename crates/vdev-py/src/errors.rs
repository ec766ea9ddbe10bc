//! vdev's errors as Python exceptions: `vdev.Error` and one subclass per condition, each with
//! the stable code of `vdev_core::Error::code` as its class attribute `code`.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    vdev,
    Error,
    PyException,
    "Every error vdev raises. `code` is the stable machine-readable name of the condition (`vdev.CODES`); the message is the one the `vdev` command prints after `error: `."
);

macro_rules! conditions {
    ($($name:ident = $code:literal: $doc:literal,)+) => {
        $(create_exception!(vdev, $name, Error, $doc);)+

        /// The exception of the class for an error `code` ([`vdev::Error::code`]), with `msg`.
        pub fn from_code(code: &str, msg: String) -> PyErr {
            match code {
                $($code => $name::new_err(msg),)+
                _ => Error::new_err(msg),
            }
        }

        /// Add the classes to the module, each with its `code`.
        pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
            let py = m.py();
            m.add("Error", py.get_type::<Error>())?;
            py.get_type::<Error>().setattr("code", py.None())?;
            // Set on the instances that have them: the report of the `apply` that failed, the
            // index of the failed entry of an `attach_batch`.
            py.get_type::<Error>().setattr("report", py.None())?;
            py.get_type::<Error>().setattr("index", py.None())?;
            $(
                let t = py.get_type::<$name>();
                t.setattr("code", $code)?;
                m.add(stringify!($name), t)?;
            )+
            Ok(())
        }
    };
}

conditions! {
    InvalidUri = "invalid-uri": "The connection URI could not be parsed or has an option the driver does not know.",
    NoDriver = "no-driver": "No driver in this package handles the URI's scheme.",
    DuplicateScheme = "duplicate-scheme": "Two linked drivers claim the same URI scheme.",
    DomainNotFound = "domain-not-found": "No domain has this name or id.",
    DeviceNotFound = "device-not-found": "The domain has no device of this type with this reference.",
    DeviceExists = "device-exists": "A device with this reference (or one that conflicts with it) already exists.",
    InvalidAttribute = "invalid-attribute": "An attribute name or value (or a device type or reference) is malformed or not accepted.",
    MissingAttribute = "missing-attribute": "A required attribute was not given.",
    Unsupported = "unsupported": "The driver does not support this operation or device type.",
    ReadOnly = "read-only": "The connection is read-only and the operation would change something.",
    Timeout = "timeout": "An operation did not finish in time.",
    RemovalPending = "removal-pending": "Detach was asked for but the guest has not released the device yet: it is still there, listed as removal-pending.",
    RemovalRefused = "removal-refused": "The guest refused to release the device: it stays connected.",
    DeviceBusy = "device-busy": "The device is held by the guest and cannot be changed as asked (a locked CD-ROM tray).",
    InvalidDocument = "invalid-document": "A desired-state document is malformed or cannot be planned; the message names the place. Nothing changed.",
    Remote = "remote": "The remote host of a +ssh URI could not be reached or used (host key, login, a dropped connection); the message carries ssh's own words and what to do.",
    Backend = "backend": "The hypervisor or its control channel failed.",
}

/// The message the `vdev` command prints for an error (without `error: `): the error, then
/// `: SOURCE` for every source in its chain.
pub fn message(e: &vdev::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A vdev error as the Python exception of its condition, with [`message`]. The failed entry of a
/// batch ([`vdev::Error::InBatch`]) raises the class of the entry's own error, with the entry's
/// index as the exception's `index`.
pub fn to_py(e: vdev::Error) -> PyErr {
    let err = from_code(e.code(), message(&e));
    if let vdev::Error::InBatch { index, .. } = e {
        Python::attach(|py| {
            // Setting an attribute on a fresh exception instance does not fail in practice; if
            // it did, the exception would still be raised, without its index.
            let _ = err.value(py).setattr("index", index);
        });
    }
    err
}
