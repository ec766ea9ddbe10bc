//! The QEMU driver's private errors and their mapping into [`vdev_core::Error`].

use std::time::Duration;

use vdev_core::Error;

/// What can go wrong on a QMP session.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QmpError {
    /// QEMU answered with an error: its class (`GenericError`, `DeviceNotFound`,
    /// `CommandNotFound`, ...) and description.
    #[error("QEMU answered {class}: {desc}")]
    Qemu {
        /// QEMU's error class. Match on this, not on `desc` (descriptions change between versions).
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// The session ended (QEMU exited, the socket closed, or QEMU broke the protocol).
    #[error("the QMP session ended: {0}")]
    Disconnected(String),
    /// QEMU did not answer in time.
    #[error("QEMU did not answer {command} within {after:?}")]
    Timeout {
        /// The command.
        command: String,
        /// How long was waited.
        after: Duration,
    },
    /// QEMU said something that is not QMP.
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// The socket could not be used.
    #[error("socket error: {0}")]
    Io(String),
}

impl From<std::io::Error> for QmpError {
    fn from(e: std::io::Error) -> Self {
        QmpError::Io(e.to_string())
    }
}

impl QmpError {
    /// QEMU's error class, when QEMU answered with an error.
    pub fn class(&self) -> Option<&str> {
        match self {
            QmpError::Qemu { class, .. } => Some(class),
            _ => None,
        }
    }

    /// QEMU's description, when QEMU answered with an error.
    pub fn desc(&self) -> Option<&str> {
        match self {
            QmpError::Qemu { desc, .. } => Some(desc),
            _ => None,
        }
    }

    /// Map into the core error: `what` says what was being done, in words.
    pub(crate) fn into_core(self, what: &str) -> Error {
        match self {
            QmpError::Timeout { command, after } => Error::Timeout {
                operation: format!("{what} (QMP command {command})"),
                after,
            },
            e => Error::backend_with(crate::NAME, format!("{what} failed"), e),
        }
    }
}
