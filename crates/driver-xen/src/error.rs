//! The Xen driver's private errors and their mapping into [`vdev_core::Error`].

use std::time::Duration;

use vdev_core::{Error, RemoteErrorKind};

/// What can go wrong talking to xenstored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum XsError {
    /// xenstored answered with an error, named as an errno (`ENOENT`, `EACCES`, `EAGAIN`, ...).
    #[error("xenstored answered {0}")]
    Errno(String),
    /// The connection is gone (xenstored exited, the socket closed, or it was closed here).
    #[error("the xenstored connection is lost: {0}")]
    Disconnected(String),
    /// xenstored did not answer in time.
    #[error("xenstored did not answer {what} within {after:?}")]
    Timeout {
        /// The request.
        what: String,
        /// How long was waited.
        after: Duration,
    },
    /// A request would exceed xenstored's 4096-byte payload limit; nothing was sent.
    #[error("a {0}-byte request exceeds xenstored's 4096-byte payload limit; nothing was sent")]
    TooLarge(usize),
    /// xenstored said something this client does not understand.
    #[error("XenStore protocol error: {0}")]
    Protocol(String),
    /// The socket could not be used.
    #[error("socket error: {0}")]
    Io(String),
    /// The remote host (`xen+ssh://`) could not be reached; mapped back to
    /// [`Error::Remote`].
    #[error("{host}: {message}")]
    Remote {
        /// The host, as `user@host:port`.
        host: String,
        /// What kind of failure.
        kind: RemoteErrorKind,
        /// What happened and what to do.
        message: String,
    },
}

impl XsError {
    /// The node does not exist.
    pub fn is_enoent(&self) -> bool {
        matches!(self, XsError::Errno(e) if e == "ENOENT")
    }

    /// The answer would exceed the payload limit (a directory of over 4 KiB of names).
    pub fn is_e2big(&self) -> bool {
        matches!(self, XsError::Errno(e) if e == "E2BIG")
    }

    /// Keep a core error met while connecting (ssh, a timeout) in a cloneable form.
    pub(crate) fn from_core(e: Error) -> XsError {
        match e {
            Error::Remote {
                host,
                kind,
                message,
            } => XsError::Remote {
                host,
                kind,
                message,
            },
            Error::Timeout { operation, after } => XsError::Timeout {
                what: operation,
                after,
            },
            e => XsError::Io(e.to_string()),
        }
    }

    /// Map into the core error: `what` says what was being done, in words.
    pub(crate) fn into_core(self, what: &str) -> Error {
        match self {
            XsError::Remote {
                host,
                kind,
                message,
            } => Error::Remote {
                host,
                kind,
                message: format!("{what}: {message}"),
            },
            XsError::Timeout { what: req, after } => Error::Timeout {
                operation: format!("{what} (XenStore {req})"),
                after,
            },
            e => Error::backend_with(crate::NAME, format!("{what} failed"), e),
        }
    }
}

/// Why libxl's stored configuration of a domain (`/var/lib/xen/userdata-d.*.libxl-json`)
/// could not be used. Reachable through [`std::error::Error::source`] of the
/// [`Error::Backend`] an attach or detach fails with (a lock held too long is
/// [`Error::Timeout`] instead); nothing was changed, neither in XenStore nor in the file.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LibxlConfigError {
    /// The domain has no stored configuration (libxl's own attach fails then too, and
    /// `xl list -l` prints nothing for it).
    #[error("{path} does not exist: libxl keeps no configuration for this domain (it was not created by xl/libxl, or the file was removed); attach with recorded=no to leave libxl's configuration alone")]
    Missing {
        /// The file.
        path: String,
    },
    /// The file is there but is not a document libxl wrote.
    #[error("{path} is not a libxl domain configuration: {reason}; libxl cannot use it either (xl list -l fails), so it is left as it is")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The domain's uuid, which names the files, is not in XenStore.
    #[error("domain {domid} has no libxl uuid in XenStore (/local/domain/{domid}/vm is missing or not /vm/UUID): it was not created by libxl; attach with recorded=no")]
    NoUuid {
        /// The domain.
        domid: u32,
    },
    /// Reading, writing or locking failed.
    #[error("{what} {path}: {reason}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The system's answer.
        reason: String,
    },
}
