//! The typed options of a `template:///NAME` URI.

use vdev_core::{ConnectUri, Result};

/// What a template URI says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateConfig {
    /// The host's name (the URI's path without its `/`): connections to one name share a host.
    pub host: String,
}

impl TemplateConfig {
    /// Parse a URI, refusing what the driver does not know.
    pub fn from_uri(uri: &ConnectUri) -> Result<Self> {
        uri.check_options(&[])?; // no options of its own: refuse every one, naming it
        if uri.transport().is_some() || uri.host().is_some() {
            return Err(uri.invalid("write template:///NAME: the hosts live in this process"));
        }
        let host = uri.path().trim_start_matches('/').to_owned();
        if host.is_empty() {
            return Err(uri.invalid("name the host: template:///NAME"));
        }
        Ok(TemplateConfig { host })
    }
}
