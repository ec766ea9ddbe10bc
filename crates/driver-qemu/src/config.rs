//! Typed options parsed from a `qemu://`, `qemu+ssh://` or `qemu+tcp://` URI.

use std::path::PathBuf;
use std::time::Duration;

use vdev_core::{ConnectUri, Result};
use vdev_remote::Host;

/// What the connection talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `qemu:///PATH` or `qemu+ssh://HOST/PATH`: a QMP unix socket (one domain) or a directory
    /// whose sockets are each one domain, on the connection's [`QemuConfig::host`].
    Unix(PathBuf),
    /// `qemu+tcp://HOST:PORT`: one QEMU whose QMP listens on TCP (one domain).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// Everything a QEMU URI can say.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// What to connect to.
    pub target: Target,
    /// Where the sockets and the images are: this machine, or the remote host of a
    /// `qemu+ssh://` URI (reached with OpenSSH, see `vdev_remote`).
    pub host: Host,
    /// `timeout=DURATION`: the longest any single QMP request may take (default 10 s, within
    /// [`TIMEOUT_RANGE`]).
    pub request_timeout: Duration,
}

/// The options the QEMU driver knows.
pub const OPTIONS: &[&str] = &["timeout"];

/// The values `timeout=` accepts: 1 ms to one hour (longer waits are a hung QEMU, not a slow one).
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(3600);

/// The default bound on one QMP request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl QemuConfig {
    /// Parse a URI.
    pub fn from_uri(uri: &ConnectUri) -> Result<Self> {
        let request_timeout =
            uri.duration_option("timeout", DEFAULT_REQUEST_TIMEOUT, TIMEOUT_RANGE)?;
        // The transport takes its own options out of the URI: the check sees the driver's.
        let mut uri = uri.clone();
        let host = Host::from_uri(&mut uri, request_timeout)?;
        let uri = &uri;
        uri.check_options(OPTIONS)?;
        let target = match uri.transport() {
            None | Some("unix") | Some("ssh") => {
                if let (Some(h), true) = (uri.host(), uri.transport() != Some("ssh")) {
                    return Err(uri.invalid(format!(
                        "qemu:// is local and takes no host ('{h}'); write qemu:///ABSOLUTE/PATH, or qemu+tcp://{h}:PORT for QMP over TCP"
                    )));
                }
                let path = uri.path();
                if path.len() < 2 || !path.starts_with('/') {
                    return Err(uri.invalid(
                        "the path must be an absolute path to a QMP unix socket or to a directory of sockets, e.g. qemu:///run/vms/vm1.qmp or qemu+ssh://HOST/run/vms/vm1.qmp",
                    ));
                }
                // Most often a socket: a remote host forwards it from the login on.
                host.expect_socket(std::path::Path::new(&path));
                Target::Unix(PathBuf::from(path))
            }
            Some("tcp") => {
                let (Some(host), Some(port)) = (uri.host(), uri.port()) else {
                    return Err(uri.invalid(
                        "write qemu+tcp://HOST:PORT (QEMU started with -qmp tcp:HOST:PORT,server=on)",
                    ));
                };
                if !matches!(uri.path().as_str(), "" | "/") {
                    return Err(uri.invalid(
                        "qemu+tcp:// takes no path: one TCP endpoint is one QEMU; write qemu+tcp://HOST:PORT",
                    ));
                }
                Target::Tcp { host, port }
            }
            Some(t) => {
                return Err(uri.invalid(format!(
                    "the qemu driver has no transport '{t}'; write qemu:///PATH (unix socket), qemu+ssh://[USER@]HOST[:PORT]/PATH (a unix socket on a remote host) or qemu+tcp://HOST:PORT"
                )))
            }
        };
        Ok(QemuConfig {
            target,
            host,
            request_timeout,
        })
    }
}
