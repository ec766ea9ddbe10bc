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
