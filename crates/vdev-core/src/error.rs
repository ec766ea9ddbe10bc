//! The one public error type of vdev.

use std::time::Duration;

/// A boxed error from a backend (QMP, XenStore, the file system, ...), kept as the
/// [`std::error::Error::source`] of [`Error::Backend`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for `Result<T, vdev_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error vdev returns.
///
/// Variants are *conditions a caller branches on* (`DeviceNotFound`, `ReadOnly`, ...), not the
/// place where something failed. Messages are sentences that say what went wrong and what to do.
/// Drivers keep their own private error types and map them into this enum; the original error of
/// a backend stays reachable through [`std::error::Error::source`] on [`Error::Backend`].
///
/// The enum is `#[non_exhaustive]`: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URI could not be parsed or has an option the driver does not know.
    #[error("invalid connection URI '{uri}': {reason}")]
    InvalidUri {
        /// The URI as given (without any password).
        uri: String,
        /// What is wrong with it and what to write instead.
        reason: String,
    },

    /// No registered driver handles the URI's scheme.
    #[error("no driver handles the URI scheme '{scheme}'; registered schemes: {}. {}", list_or_none(.available), crate::registry::no_driver_advice(.scheme))]
    NoDriver {
        /// The scheme of the URI (the part before `+transport`).
        scheme: String,
        /// Every scheme that is registered, sorted.
        available: Vec<String>,
    },

    /// Two linked drivers claim the same URI scheme, so vdev refuses to pick one by link order.
    #[error("URI scheme '{scheme}' is claimed by more than one driver ({}); link only one of them", .drivers.join(", "))]
    DuplicateScheme {
        /// The contested scheme.
        scheme: String,
        /// The names of the drivers that claim it.
        drivers: Vec<String>,
    },

    /// No domain has this name or id.
    #[error("domain '{domain}' not found; `vdev domains` lists the domains that exist")]
    DomainNotFound {
        /// The name or id that was asked for.
        domain: String,
    },

    /// The domain has no device of this type with this reference.
    #[error("{device_type} device '{reference}' not found in domain '{domain}'; `vdev devices {domain} {device_type}` lists them")]
    DeviceNotFound {
        /// The domain that was searched.
        domain: String,
        /// The device type.
        device_type: String,
        /// The reference that was asked for.
        reference: String,
    },

    /// A device with this reference (or one that conflicts with it) already exists.
    #[error("{device_type} device '{reference}' already exists in domain '{domain}'; choose another one or detach it first")]
    DeviceExists {
        /// The domain.
        domain: String,
        /// The device type.
        device_type: String,
        /// The reference (or the attribute value) that is taken.
        reference: String,
    },

    /// An attribute name or value is malformed or not accepted.
    #[error("invalid attribute '{name}': {reason}")]
    InvalidAttribute {
        /// The attribute name (possibly sanitised for display).
        name: String,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// A required attribute was not given.
    #[error("missing attribute '{name}' for a {device_type} device: {hint}")]
    MissingAttribute {
        /// The device type being created.
        device_type: String,
        /// The attribute that is required.
        name: String,
        /// What the attribute means, with an example value.
        hint: String,
    },

    /// The driver does not support this operation or device type.
    #[error("{operation} is not supported by the {driver} driver{}", detail_suffix(.detail))]
    Unsupported {
        /// The driver's name.
        driver: String,
        /// The operation that was asked for.
        operation: String,
        /// Extra explanation (what is supported instead), may be empty.
        detail: String,
    },

    /// The connection is read-only and the operation would change something.
    #[error("{operation} refused: the connection is read-only; connect without --readonly / ?readonly to make changes")]
    ReadOnly {
        /// The operation that was refused.
        operation: String,
    },

    /// An operation did not finish in time.
    #[error("{operation} did not finish within {after:?}; the hypervisor may be busy, retry with a longer timeout")]
    Timeout {
        /// The operation.
        operation: String,
        /// How long was waited.
        after: Duration,
    },

    /// Detach was asked for, but the guest has not released the device yet. The device is *not*
    /// removed; it is listed with state `removal-pending` and disappears when the guest lets go.
    #[error("{device_type} device '{reference}' in domain '{domain}' is not removed yet: removal is pending until the guest releases it; wait and list again, or detach with --force")]
    RemovalPending {
        /// The domain.
        domain: String,
        /// The device type.
        device_type: String,
        /// The device reference.
        reference: String,
    },

    /// The device is held by the guest and cannot be changed as asked: a CD-ROM tray the guest
    /// has locked. `reason` says what holds it and the way out (such as `force=true`).
    #[error("{device_type} device '{reference}' in domain '{domain}' is busy: {reason}")]
    DeviceBusy {
        /// The domain.
        domain: String,
        /// The device type.
        device_type: String,
        /// The device reference.
        reference: String,
        /// What holds it, and what to do.
        reason: String,
    },

    /// The guest refused to release the device: the removal is over and the device stays,
    /// connected (QEMU's `DEVICE_UNPLUG_GUEST_ERROR`). Detaching again asks the guest again.
    #[error("the guest of domain '{domain}' refused to release {device_type} device '{reference}': it stays connected; find out why the guest keeps it (in use, mounted) and detach again")]
    RemovalRefused {
        /// The domain.
        domain: String,
        /// The device type.
        device_type: String,
        /// The device reference.
        reference: String,
    },

    /// The remote host of a `+ssh` URI could not be reached or used: ssh refused the host key or
    /// the login, the connection dropped, or something the host needs is missing. `message`
    /// carries ssh's own words and what to do; `kind` is what to branch on.
    #[error("remote host {host}: {message}")]
    Remote {
        /// The destination (`user@host:port`).
        host: String,
        /// What kind of failure it is.
        kind: RemoteErrorKind,
        /// What happened (ssh's own message included) and what to do.
        message: String,
    },

    /// A desired-state document ([`crate::desired::Document`]) is malformed or cannot be
    /// planned: a syntax error, an unknown key, a device type or attribute the driver does not
    /// know, two entries with one identity, an entry that matches two devices. Nothing was
    /// changed.
    #[error("{at}: {reason}")]
    InvalidDocument {
        /// Where: the path of the entry in the document (`domains.vm1.devices[2].attrs`), with
        /// the line and column where the parser knows them.
        at: String,
        /// What is wrong and what to write instead.
        reason: String,
    },

    /// One entry of a batch ([`crate::Connection::attach_batch`], `apply`) failed, so the whole
    /// batch was rolled back: what it made was removed, or, for a device the guest must release
    /// first, asked to go (`entry` then ends with what the rollback left, removal pending).
    /// `error` is that entry's own error, the condition to branch on (see [`Error::condition`]);
    /// [`Error::code`] returns its code.
    #[error("entry {index} ({entry}) failed, and its batch was rolled back: {error}")]
    InBatch {
        /// The failed entry's index: in the batch, or in the document's device list for
        /// `apply`.
        index: usize,
        /// What the entry is, in words (its type and identity).
        entry: String,
        /// Why it failed.
        error: Box<Error>,
    },

    /// The hypervisor or its control channel failed. `source` holds the original error.
    #[error("{driver} driver: {message}")]
    Backend {
        /// The driver's name.
        driver: String,
        /// What failed, in words (the context of the operation included).
        message: String,
        /// The backend's original error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

/// What kind of failure an [`Error::Remote`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// The host did not answer: a wrong name or port, no sshd, a network failure or no login
    /// within the connect timeout.
    Unreachable,
    /// The host's key is unknown (and `no_verify` was not given) or has changed.
    HostKey,
    /// The login was refused: no key the host accepts.
    Authentication,
    /// The ssh connection closed while in use. The next operation reconnects.
    Disconnected,
    /// The remote host lacks a program the operation needs; the message names the package.
    MissingProgram,
    /// The remote sshd refused what vdev asked of it (such as forwarding a unix socket).
    Refused,
    /// The local ssh program could not be run.
    LocalProgram,
}

impl RemoteErrorKind {
    /// A short stable name (`host-key`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteErrorKind::Unreachable => "unreachable",
            RemoteErrorKind::HostKey => "host-key",
            RemoteErrorKind::Authentication => "authentication",
            RemoteErrorKind::Disconnected => "disconnected",
            RemoteErrorKind::MissingProgram => "missing-program",
            RemoteErrorKind::Refused => "refused",
            RemoteErrorKind::LocalProgram => "local-program",
        }
    }
}

impl std::fmt::Display for RemoteErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

fn detail_suffix(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

impl Error {
    /// A backend error without a source.
    pub fn backend(driver: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Backend {
            driver: driver.into(),
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::InvalidAttribute`]: attribute `name` was refused, for `reason` (a sentence
    /// that says what to write instead).
    pub fn invalid_attribute(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidAttribute {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// A backend error that keeps `source` reachable through [`std::error::Error::source`].
    pub fn backend_with(
        driver: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            driver: driver.into(),
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A short, stable, machine-readable name of the variant (`"device-not-found"`, ...), as used
    /// in JSON output and by the mock driver's fault injection.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidUri { .. } => "invalid-uri",
            Error::NoDriver { .. } => "no-driver",
            Error::DuplicateScheme { .. } => "duplicate-scheme",
            Error::DomainNotFound { .. } => "domain-not-found",
            Error::DeviceNotFound { .. } => "device-not-found",
            Error::DeviceExists { .. } => "device-exists",
            Error::InvalidAttribute { .. } => "invalid-attribute",
            Error::MissingAttribute { .. } => "missing-attribute",
            Error::Unsupported { .. } => "unsupported",
            Error::ReadOnly { .. } => "read-only",
            Error::Timeout { .. } => "timeout",
            Error::RemovalPending { .. } => "removal-pending",
            Error::RemovalRefused { .. } => "removal-refused",
            Error::DeviceBusy { .. } => "device-busy",
            Error::Remote { .. } => "remote",
            Error::Backend { .. } => "backend",
            Error::InvalidDocument { .. } => "invalid-document",
            Error::InBatch { error, .. } => error.code(),
        }
    }

    /// The condition to branch on: the entry's own error for an [`Error::InBatch`], else this
    /// error itself.
    pub fn condition(&self) -> &Error {
        match self {
            Error::InBatch { error, .. } => error.condition(),
            e => e,
        }
    }

    /// Every code [`Error::code`] can return.
    pub const CODES: &'static [&'static str] = &[
        "invalid-uri",
        "no-driver",
        "duplicate-scheme",
        "domain-not-found",
        "device-not-found",
        "device-exists",
        "invalid-attribute",
        "missing-attribute",
        "unsupported",
        "read-only",
        "timeout",
        "removal-pending",
        "removal-refused",
        "device-busy",
        "remote",
        "backend",
        "invalid-document",
    ];

    /// Fill in the context the connection knows (driver name, domain) where a driver left it
    /// empty. Called in one place, by [`crate::Connection`].
    pub(crate) fn with_context(mut self, driver: &str, domain: Option<&str>) -> Self {
        match &mut self {
            Error::Backend { driver: d, .. } | Error::Unsupported { driver: d, .. }
                if d.is_empty() =>
            {
                *d = driver.to_owned();
            }
            Error::DeviceNotFound { domain: d, .. }
            | Error::DeviceExists { domain: d, .. }
            | Error::RemovalPending { domain: d, .. }
            | Error::RemovalRefused { domain: d, .. }
            | Error::DeviceBusy { domain: d, .. }
                if d.is_empty() =>
            {
                if let Some(dom) = domain {
                    *d = dom.to_owned();
                }
            }
            Error::InBatch { error, .. } => {
                let inner = std::mem::replace(
                    error.as_mut(),
                    Error::ReadOnly {
                        operation: String::new(),
                    },
                );
                **error = inner.with_context(driver, domain);
            }
            _ => {}
        }
        self
    }
}
