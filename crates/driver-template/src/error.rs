//! The driver's own errors, and how each becomes a [`vdev_core::Error`].

use vdev_core::Error;

/// What can go wrong inside the template hypervisor.
#[derive(Debug)]
pub(crate) enum TemplateError {
    /// The connection was closed.
    Closed,
    /// No domain of that name or id.
    NoDomain(String),
    /// No device of that (domain, type, reference).
    NoDevice(String, String, String),
    /// Another device of the (domain, type) already has this source.
    Taken(String, String, String),
}

impl From<TemplateError> for Error {
    fn from(e: TemplateError) -> Error {
        match e {
            TemplateError::Closed => Error::Backend {
                driver: crate::NAME.into(),
                message: "the connection is closed; open a new one".into(),
                source: None,
            },
            TemplateError::NoDomain(domain) => Error::DomainNotFound { domain },
            TemplateError::NoDevice(domain, device_type, reference) => Error::DeviceNotFound {
                domain,
                device_type,
                reference,
            },
            TemplateError::Taken(domain, device_type, reference) => Error::DeviceExists {
                domain,
                device_type,
                reference,
            },
        }
    }
}
