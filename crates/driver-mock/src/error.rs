//! The mock driver's private errors and their mapping into [`vdev_core::Error`].

use std::path::PathBuf;

use vdev_core::Error;

/// What can go wrong with a state file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MockError {
    #[error("cannot {action} the state file {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {} is malformed: {reason}; fix it or remove it (a missing file is created with the default state); it was left untouched", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("the state file {} is malformed: {source}; fix it or remove it (a missing file is created with the default state); it was left untouched", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the state file {} speaks {file}, not like={uri}: leave like= out to use it as it is, or name another file", path.display())]
    LikeMismatch {
        path: PathBuf,
        file: String,
        uri: &'static str,
    },
    #[error("the connection is closed; open a new one")]
    Closed,
    #[error("the state file {} is locked by {holder}", path.display())]
    Locked {
        path: PathBuf,
        holder: String,
        after: std::time::Duration,
    },
}

impl From<MockError> for Error {
    fn from(e: MockError) -> Error {
        let message = e.to_string();
        match e {
            MockError::Io { source, .. } => Error::backend_with(crate::NAME, message, source),
            // The JSON problem is part of the message already: no source, so it is not repeated.
            MockError::Json { .. } | MockError::Malformed { .. } | MockError::Closed => {
                Error::backend(crate::NAME, message)
            }
            MockError::LikeMismatch { path, .. } => Error::InvalidUri {
                uri: format!("mock://{}", path.display()),
                reason: message,
            },
            MockError::Locked { path, holder, after } => Error::Timeout {
                operation: format!(
                    "waiting for the lock of the state file {} (held by {holder}; a stopped process keeps it until it ends: end it, or give lock_timeout=DURATION for a longer wait)",
                    path.display()
                ),
                after,
            },
        }
    }
}
