//! Typed options parsed from a `xen://` or `xen+ssh://` URI.

use std::path::PathBuf;
use std::time::Duration;

use vdev_core::{ConnectUri, Result};
use vdev_remote::Host;

/// The xenstored socket used by `xen:///` when `XENSTORED_PATH` is not set, and by
/// `xen+ssh://HOST/` on the remote host when no `socket=` is given.
pub const DEFAULT_SOCKET: &str = "/run/xenstored/socket";

/// The xenbus device used by `xen:///` when no xenstored socket exists (a domain without a
/// local xenstored, such as a driver domain).
pub const DEFAULT_DEVICE: &str = "/dev/xen/xenbus";

/// The options the Xen driver knows (`xen+ssh://` also takes
/// [`SSH_OPTIONS`](vdev_remote::SSH_OPTIONS), and not `device`).
pub const OPTIONS: &[&str] = &["socket", "device", "timeout", "attach-timeout", "hotplug"];

/// Where XenStore is reached on the connection's host: xenstored's unix socket or the xenbus
/// device. (Not the URI's transport: that is [`XenConfig::host`], this machine or ssh.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEndpoint {
    /// A xenstored unix socket.
    Socket(PathBuf),
    /// The kernel's xenbus device (`/dev/xen/xenbus`), which relays to xenstored wherever it
    /// runs.
    Device(PathBuf),
}

impl std::fmt::Display for StoreEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreEndpoint::Socket(p) => write!(f, "socket {}", p.display()),
            StoreEndpoint::Device(p) => write!(f, "xenbus device {}", p.display()),
        }
    }
}

/// The default bound on one XenStore request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The default bound on waiting for a new backend to come up, and on waiting for libxl's
/// userdata lock (URI option `attach-timeout`).
pub const DEFAULT_ATTACH_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything a `xen://` or `xen+ssh://` URI can say.
#[derive(Debug, Clone)]
pub struct XenConfig {
    /// Where Domain-0 (or whichever domain runs xenstored) is: [`Host::Local`] for `xen:///`,
    /// [`Host::Ssh`] for `xen+ssh://[USER@]HOST[:PORT]/`. XenStore is reached through it, and
    /// the hotplug work (lock, loop devices, scripts) runs on it.
    pub host: Host,
    /// Where XenStore is, on [`host`](Self::host). Locally: `?socket=PATH` or `?device=PATH`;
    /// else `$XENSTORED_PATH`; else [`DEFAULT_SOCKET`] when it exists; else [`DEFAULT_DEVICE`]
    /// when it exists; else [`DEFAULT_SOCKET`] (and connecting says that neither exists).
    /// Over ssh: `?socket=PATH` on the remote host, else [`DEFAULT_SOCKET`] there (never the
    /// local `XENSTORED_PATH`); the xenbus device is not offered.
    pub endpoint: StoreEndpoint,
    /// `timeout=DURATION`: the longest one XenStore request may take.
    pub request_timeout: Duration,
    /// `attach-timeout=DURATION`: how long attach waits for the backend to reach InitWait,
    /// and attach or detach for libxl's userdata lock of the domain (held by `xl` meanwhile).
    pub attach_timeout: Duration,
    /// `hotplug=auto|script|no`: who does a device's hotplug work in the backend domain (the
    /// loop device and `physical-device` of a disk, the bridge port of a NIC). See [`Hotplug`].
    pub hotplug: Hotplug,
}

/// Who does the hotplug work of devices served by Domain-0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hotplug {
    /// `hotplug=auto` (the default): when the host runs in Domain-0
    /// (`/proc/xen/capabilities` says `control_d`; over ssh, the remote host's), the driver does
    /// it, on that host. For disks of the
    /// standard `/etc/xen/scripts/block` (`phy:` and `file:`) it does the script's work itself
    /// (same sharing checks, same lock, same keys, the loop device through `losetup`) and writes
    /// the result with the device, so the backend connects at once; any other script, and
    /// `vif-bridge` for NICs, is run as libxl runs it. Outside Domain-0 nothing is run.
    Auto,
    /// `hotplug=script`: always run the backend's script, as libxl does (after the backend
    /// reaches InitWait), also for the standard block script. The host must be Domain-0.
    Script,
    /// `hotplug=no`: never; something else (udev, a daemon) does it, or nothing does.
    No,
}

/// Whether this process runs in Domain-0.
pub(crate) fn in_dom0() -> bool {
    std::fs::read_to_string("/proc/xen/capabilities")
        .map(|c| c.contains("control_d"))
        .unwrap_or(false)
}

/// The bounds of every duration option: at least 1 ms, at most one hour.
pub const DURATION_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(1)..=Duration::from_secs(3600);

fn duration(uri: &ConnectUri, name: &str, default: Duration) -> Result<Duration> {
    uri.duration_option(name, default, DURATION_RANGE)
}

impl XenConfig {
    /// Parse a URI: `xen:///[?OPTIONS]` (this machine) or
    /// `xen+ssh://[USER@]HOST[:PORT]/[?OPTIONS]` (a remote Domain-0 reached with OpenSSH).
    ///
    /// ```
    /// use vdev_core::ConnectUri;
    /// use vdev_driver_xen::{StoreEndpoint, XenConfig};
    /// let u = ConnectUri::parse("xen+ssh://root@dom0.example/?socket=/run/xenstored/socket&no_verify=1")?;
    /// let c = XenConfig::from_uri(&u)?;
    /// assert!(!c.host.is_local());
    /// assert_eq!(c.endpoint, StoreEndpoint::Socket("/run/xenstored/socket".into()));
    /// let bad = ConnectUri::parse("xen+ssh://dom0.example/?device=/dev/xen/xenbus")?;
    /// assert!(XenConfig::from_uri(&bad).is_err());
    /// # Ok::<(), vdev_core::Error>(())
    /// ```
    pub fn from_uri(uri: &ConnectUri) -> Result<Self> {
        let ssh = match uri.transport() {
            None => false,
            Some("ssh") => true,
            Some(t) => {
                return Err(uri.invalid(format!(
                    "the xen driver has no transport '{t}'; write xen:/// (local xenstored), xen:///?socket=PATH, or xen+ssh://[USER@]HOST[:PORT]/ (a remote Domain-0 over OpenSSH)"
                )))
            }
        };
        let request_timeout = duration(uri, "timeout", DEFAULT_REQUEST_TIMEOUT)?;
        // The transport takes its own options out of the URI: the check below sees the driver's.
        let mut uri = uri.clone();
        let host = Host::from_uri(&mut uri, request_timeout)?;
        let uri = &uri;
        if ssh {
            uri.check_options(OPTIONS)?;
            if uri.option("device").is_some() {
                return Err(uri.invalid(
                    "device= is not offered over ssh: the xenbus device cannot be forwarded; xen+ssh:// reaches the remote xenstored's socket (socket=PATH on the remote host, default /run/xenstored/socket)",
                ));
            }
        } else {
            uri.check_options(OPTIONS)?;
            if let Some(h) = uri.host() {
                return Err(uri.invalid(format!(
                    "xen:// is local and takes no host ('{h}'); write xen:/// or xen:///?socket=PATH, or xen+ssh://{h}/ for a remote Domain-0"
                )));
            }
        }
        if !matches!(uri.path().as_str(), "" | "/") {
            return Err(uri.invalid(
                "xen:/// takes no path; give the xenstored socket as xen:///?socket=PATH",
            ));
        }
        let abs = |name: &str, p: &str, eg: &str| -> Result<PathBuf> {
            if p.starts_with('/') {
                Ok(PathBuf::from(p))
            } else {
                Err(uri.invalid(format!(
                    "{name}={p} is not an absolute path; write {name}={eg}"
                )))
            }
        };
        let endpoint = match (uri.option("socket"), uri.option("device")) {
            (Some(_), Some(_)) => {
                return Err(uri.invalid(
                    "give socket=PATH or device=PATH, not both: they are two ways to one xenstored",
                ))
            }
            (Some(p), None) => StoreEndpoint::Socket(abs("socket", p, DEFAULT_SOCKET)?),
            (None, Some(p)) => StoreEndpoint::Device(abs("device", p, DEFAULT_DEVICE)?),
            // Over ssh: the remote host's default, whatever this machine's environment says.
            (None, None) if ssh => StoreEndpoint::Socket(PathBuf::from(DEFAULT_SOCKET)),
            (None, None) => match std::env::var_os("XENSTORED_PATH").filter(|p| !p.is_empty()) {
                Some(p) => StoreEndpoint::Socket(PathBuf::from(p)),
                None if !std::path::Path::new(DEFAULT_SOCKET).exists()
                    && std::path::Path::new(DEFAULT_DEVICE).exists() =>
                {
                    StoreEndpoint::Device(PathBuf::from(DEFAULT_DEVICE))
                }
                None => StoreEndpoint::Socket(PathBuf::from(DEFAULT_SOCKET)),
            },
        };
        if let StoreEndpoint::Socket(p) = &endpoint {
            host.expect_socket(p);
        }
        let hotplug = match uri.option("hotplug") {
            None | Some("auto") => Hotplug::Auto,
            // libxl's scripts work on Domain-0's devices (loop devices, bridges): run from
            // anywhere else they would act on the wrong machine. Over ssh the remote host is
            // checked when connecting.
            Some("script") if !ssh && !in_dom0() => {
                return Err(uri.invalid(
                    "hotplug=script runs libxl's hotplug scripts, which work only in Domain-0, and this process is not in Domain-0 (/proc/xen/capabilities does not say control_d); leave hotplug out (auto) or write hotplug=no",
                ))
            }
            Some("script") => Hotplug::Script,
            Some("no") => Hotplug::No,
            Some(v) => {
                return Err(uri.invalid(format!(
                    "hotplug={v}: write hotplug=auto, hotplug=script or hotplug=no"
                )))
            }
        };
        Ok(XenConfig {
            host,
            hotplug,
            endpoint,
            request_timeout,
            attach_timeout: duration(uri, "attach-timeout", DEFAULT_ATTACH_TIMEOUT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hotplug_script_is_refused_outside_domain_0() {
        let uri = ConnectUri::parse("xen:///?socket=/nonexistent&hotplug=script").unwrap();
        let r = XenConfig::from_uri(&uri);
        if in_dom0() {
            assert!(r.is_ok(), "{r:?}");
        } else {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("only in Domain-0"), "{e}");
        }
        let uri = ConnectUri::parse("xen:///?socket=/nonexistent&hotplug=no").unwrap();
        assert!(XenConfig::from_uri(&uri).is_ok());
    }

    #[test]
    fn ssh_takes_a_host_the_ssh_options_and_a_remote_socket() {
        let c = XenConfig::from_uri(
            &ConnectUri::parse("xen+ssh://root@dom0:2222/?known_hosts=/tmp/kh&hotplug=script")
                .unwrap(),
        )
        .unwrap();
        assert!(!c.host.is_local());
        assert_eq!(c.host.name(), "root@dom0:2222");
        // Never this machine's XENSTORED_PATH: the default is the remote host's own.
        assert_eq!(c.endpoint, StoreEndpoint::Socket(DEFAULT_SOCKET.into()));
        assert_eq!(c.hotplug, Hotplug::Script);
        let c = XenConfig::from_uri(
            &ConnectUri::parse("xen+ssh://dom0/?socket=/var/run/xs.sock").unwrap(),
        )
        .unwrap();
        assert_eq!(c.endpoint, StoreEndpoint::Socket("/var/run/xs.sock".into()));
        for (bad, says) in [
            (
                "xen+ssh://dom0/?device=/dev/xen/xenbus",
                "not offered over ssh",
            ),
            ("xen+ssh:///", "needs a host"),
            ("xen+ssh://dom0/?bogus=1", "bogus"),
            ("xen:///?keyfile=/etc/hostname", "keyfile"),
            ("xen+tcp://dom0/", "no transport 'tcp'"),
            ("xen://dom0/", "xen+ssh://dom0/"),
            ("xen+ssh://dom0/?socket=relative", "absolute"),
        ] {
            let e = XenConfig::from_uri(&ConnectUri::parse(bad).unwrap()).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }
}
