//! Typed options parsed from a `xen://` URI.

use std::path::PathBuf;
use std::time::Duration;

use vdev_core::{ConnectUri, Result};

/// The xenstored socket used by `xen:///` when `XENSTORED_PATH` is not set.
pub const DEFAULT_SOCKET: &str = "/run/xenstored/socket";

/// The options the Xen driver knows.
pub const OPTIONS: &[&str] = &["socket", "timeout", "attach-timeout", "hotplug"];

/// The default bound on one XenStore request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The default bound on waiting for a new backend to come up (libxl waits 10 s too).
pub const DEFAULT_ATTACH_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything a `xen://` URI can say.
#[derive(Debug, Clone)]
pub struct XenConfig {
    /// The xenstored unix socket: `?socket=PATH`, else `$XENSTORED_PATH`, else
    /// [`DEFAULT_SOCKET`].
    pub socket: PathBuf,
    /// `timeout=DURATION`: the longest one XenStore request may take.
    pub request_timeout: Duration,
    /// `attach-timeout=DURATION`: how long attach waits for the backend to reach InitWait.
    pub attach_timeout: Duration,
    /// `hotplug=auto|yes|no`: whether attach and detach run the backend's hotplug script
    /// (`/etc/xen/scripts/block add|remove`) themselves, as libxl does. `auto` (the default) runs
    /// it when this process is in Domain-0 (`/proc/xen/capabilities` says `control_d`) and the
    /// backend is Domain-0.
    pub hotplug: Hotplug,
}

/// When the driver runs hotplug scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hotplug {
    /// When running in Domain-0 and the backend is Domain-0.
    Auto,
    /// Always for Domain-0 backends (this process must be in Domain-0).
    Yes,
    /// Never: something else (udev, a daemon) runs them, or nothing does.
    No,
}

/// Whether this process runs in Domain-0.
pub(crate) fn in_dom0() -> bool {
    std::fs::read_to_string("/proc/xen/capabilities")
        .map(|c| c.contains("control_d"))
        .unwrap_or(false)
}

fn duration(uri: &ConnectUri, name: &str, default: Duration) -> Result<Duration> {
    match uri.option(name) {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                uri.invalid(format!(
                    "{name}={v} is not a duration; write for example {name}=5s"
                ))
            }),
    }
}

impl XenConfig {
    /// Parse a URI.
    pub fn from_uri(uri: &ConnectUri) -> Result<Self> {
        uri.check_options(OPTIONS)?;
        if let Some(t) = uri.transport() {
            return Err(uri.invalid(format!(
                "the xen driver has no transport '{t}'; write xen:/// (local xenstored) or xen:///?socket=PATH"
            )));
        }
        if let Some(h) = uri.host() {
            return Err(uri.invalid(format!(
                "xen:// is local and takes no host ('{h}'); write xen:/// or xen:///?socket=PATH"
            )));
        }
        if !matches!(uri.path().as_str(), "" | "/") {
            return Err(uri.invalid(
                "xen:/// takes no path; give the xenstored socket as xen:///?socket=PATH",
            ));
        }
        let socket = match uri.option("socket") {
            Some(p) if p.starts_with('/') => PathBuf::from(p),
            Some(p) => {
                return Err(uri.invalid(format!(
                    "socket={p} is not an absolute path; write socket=/run/xenstored/socket"
                )))
            }
            None => std::env::var_os("XENSTORED_PATH")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        };
        let hotplug = match uri.option("hotplug") {
            None | Some("auto") => Hotplug::Auto,
            Some("yes") => Hotplug::Yes,
            Some("no") => Hotplug::No,
            Some(v) => {
                return Err(uri.invalid(format!(
                    "hotplug={v}: write hotplug=auto, hotplug=yes or hotplug=no"
                )))
            }
        };
        Ok(XenConfig {
            hotplug,
            socket,
            request_timeout: duration(uri, "timeout", DEFAULT_REQUEST_TIMEOUT)?,
            attach_timeout: duration(uri, "attach-timeout", DEFAULT_ATTACH_TIMEOUT)?,
        })
    }
}
