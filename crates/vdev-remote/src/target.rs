//! Where and how to reach a remote host: the ssh part of a `DRIVER+ssh://` URI, checked and
//! turned into the arguments of the master `ssh`.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vdev_core::{ConnectUri, Result};

/// The URI options of the `+ssh` transport, which every driver that offers it accepts beside its
/// own (see [`SshTarget::from_uri`]).
pub const SSH_OPTIONS: &[&str] = &["keyfile", "known_hosts", "no_verify", "command", "persist"];

/// The values `persist=` accepts: 1 s to one day.
pub const PERSIST_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(86400);

/// Where and how to reach a remote host with OpenSSH, from a `DRIVER+ssh://` URI.
#[derive(Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The login name (`user@`), or the user's ssh configuration's default.
    pub user: Option<String>,
    /// The host name or address (IPv6 without brackets).
    pub host: String,
    /// The port, or the ssh configuration's default (22).
    pub port: Option<u16>,
    /// `keyfile=PATH`: the private key to log in with (`ssh -i PATH`, only that key).
    pub keyfile: Option<PathBuf>,
    /// `known_hosts=PATH`: the known-hosts file to check the host key against.
    pub known_hosts: Option<PathBuf>,
    /// `no_verify=1`: accept an unknown host key on first contact and record it (OpenSSH's
    /// `StrictHostKeyChecking=accept-new`); a *changed* key is still refused.
    pub no_verify: bool,
    /// `command=PATH`: the local ssh program (default `ssh`, found in `PATH`).
    pub command: PathBuf,
    /// `persist=DURATION`: keep the ssh connection open this long after the last vdev
    /// connection that used it closes (in the background, OpenSSH's `ControlPersist`), and
    /// share it with every vdev connection of this user to the same destination with the same
    /// options, in this and later processes: a one-shot `vdev` command then needs no login.
    /// `None` (the default): each vdev connection has its own ssh connection, closed with it.
    pub persist: Option<Duration>,
    /// The bound on logging in, from the driver's timeout.
    pub connect_timeout: Duration,
}

impl fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SshTarget({})", self.destination())
    }
}

impl SshTarget {
    /// Read the ssh part of a `DRIVER+ssh://[user@]host[:port]/...` URI: its user, host, port and
    /// the options in [`SSH_OPTIONS`] (the driver checks that no other option is given). A host
    /// or user that `ssh` could read as an option (a leading `-`) or that holds anything but the
    /// characters of host and user names is refused here, before anything runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vdev_core::ConnectUri;
    /// use vdev_remote::SshTarget;
    /// let u = ConnectUri::parse("qemu+ssh://root@vmhost:2222/run/vm.qmp?no_verify=1")?;
    /// let t = SshTarget::from_uri(&u, Duration::from_secs(10))?;
    /// assert_eq!(t.destination(), "root@vmhost:2222");
    /// assert!(t.no_verify);
    /// let bad = ConnectUri::parse("qemu+ssh://-oProxyCommand=touch%20x/run/vm.qmp")?;
    /// assert!(SshTarget::from_uri(&bad, Duration::from_secs(10)).is_err());
    /// # Ok::<(), vdev_core::Error>(())
    /// ```
    pub fn from_uri(uri: &ConnectUri, connect_timeout: Duration) -> Result<Self> {
        let host = uri.host().ok_or_else(|| {
            uri.invalid(format!(
                "{}+ssh:// needs a host: write {}+ssh://[USER@]HOST[:PORT]/...",
                uri.driver(),
                uri.driver()
            ))
        })?;
        check_name(uri, "host", &host, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')
        })?;
        let user = uri.user();
        if let Some(u) = &user {
            check_name(uri, "user", u, |c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '$')
            })?;
        }
        let path_option = |name: &str| -> Result<Option<PathBuf>> {
            let Some(v) = uri.option(name) else {
                return Ok(None);
            };
            if v.is_empty()
                || v.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | '%')
                })
            {
                return Err(uri.invalid(format!(
                    "{name}={v:?} must be a non-empty path without spaces, quotes, backslashes or '%' (OpenSSH would read them)"
                )));
            }
            Ok(Some(PathBuf::from(v)))
        };
        let keyfile = path_option("keyfile")?;
        if let Some(k) = &keyfile {
            if !k.is_file() {
                return Err(uri.invalid(format!(
                    "keyfile={}: no such file here; give the path of the private key to log in with",
                    k.display()
                )));
            }
        }
        let known_hosts = path_option("known_hosts")?;
        let no_verify = uri
            .bool_option(
                "no_verify",
                "to accept an unknown host key on first contact",
            )?
            .unwrap_or(false);
        let command = match uri.option("command") {
            None => PathBuf::from("ssh"),
            Some(c) if !c.is_empty() && !c.starts_with('-') && !c.chars().any(char::is_control) => {
                PathBuf::from(c)
            }
            Some(c) => {
                return Err(uri.invalid(format!(
                    "command={c:?} must name the local ssh program, e.g. command=/usr/bin/ssh"
                )))
            }
        };
        let persist = match uri.option("persist") {
            None => None,
            Some(_) => Some(uri.duration_option("persist", Duration::ZERO, PERSIST_RANGE)?),
        };
        Ok(SshTarget {
            user,
            host,
            port: uri.port(),
            keyfile,
            known_hosts,
            no_verify,
            command,
            persist,
            connect_timeout,
        })
    }

    /// The name of this target's shared connection (`persist=`): one per destination and
    /// options.
    pub(crate) fn shared_key(&self) -> String {
        format!(
            "{:016x}",
            fnv(format!(
                "{:?}|{:?}|{:?}|{}|{:?}|{:?}",
                self.user,
                self.host,
                self.port,
                self.no_verify,
                self.keyfile,
                (&self.known_hosts, &self.command)
            )
            .as_bytes())
        )
    }

    /// `user@host:port` as given, for messages.
    pub fn destination(&self) -> String {
        let mut s = String::new();
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        if self.host.contains(':') {
            s.push_str(&format!("[{}]", self.host));
        } else {
            s.push_str(&self.host);
        }
        if let Some(p) = self.port {
            s.push_str(&format!(":{p}"));
        }
        s
    }

    /// The arguments of the master `ssh` (without the remote command). Nothing from the URI
    /// becomes free-form `-o` text: each option is one fixed keyword with a checked value, and
    /// the destination follows `--`.
    pub(crate) fn args(&self, control: &Path) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut o = |s: String| {
            a.push("-o".into());
            a.push(s.into());
        };
        o("BatchMode=yes".into());
        o(format!(
            "StrictHostKeyChecking={}",
            if self.no_verify { "accept-new" } else { "yes" }
        ));
        o(format!("ControlPath={}", control.display()));
        match self.persist {
            None => {
                o("ControlMaster=yes".into());
                o("ControlPersist=no".into());
            }
            Some(d) => {
                // Use the shared master when it runs, else become it and stay d after the last
                // user.
                o("ControlMaster=auto".into());
                o(format!("ControlPersist={}", d.as_secs().max(1)));
            }
        }
        o(format!(
            "ConnectTimeout={}",
            self.connect_timeout.as_secs_f64().ceil().max(1.0) as u64
        ));
        o("PermitLocalCommand=no".into());
        o("ForwardAgent=no".into());
        o("ForwardX11=no".into());
        o("StreamLocalBindUnlink=yes".into());
        if let Some(k) = &self.known_hosts {
            o(format!("UserKnownHostsFile={}", k.display()));
        }
        if let Some(k) = &self.keyfile {
            o("IdentitiesOnly=yes".into());
            a.push("-i".into());
            a.push(k.as_os_str().into());
        }
        a.extend(["-T".into(), "-e".into(), "none".into()]);
        if let Some(p) = self.port {
            a.push("-p".into());
            a.push(p.to_string().into());
        }
        if let Some(u) = &self.user {
            a.push("-l".into());
            a.push(u.into());
        }
        a.push("--".into());
        a.push(self.host.clone().into());
        a
    }
}

fn check_name(uri: &ConnectUri, what: &str, v: &str, ok: impl Fn(char) -> bool) -> Result<()> {
    if v.is_empty() || v.starts_with('-') || !v.chars().all(ok) {
        return Err(uri.invalid(format!(
            "the {what} {v:?} is refused: a {what} must not begin with '-' and may hold only letters, digits and . - _{}; ssh would read anything else as an option or a shell word",
            if what == "host" { " :" } else { " $" }
        )));
    }
    Ok(())
}

/// FNV-1a: a stable short name for a destination or a remote path (not a security measure: the
/// folder is private to the user).
pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdev_core::Error;

    fn target(uri: &str) -> Result<SshTarget> {
        SshTarget::from_uri(&ConnectUri::parse(uri)?, Duration::from_secs(5))
    }

    #[test]
    fn hosts_and_users_that_ssh_could_read_as_options_are_refused() {
        for bad in [
            "qemu+ssh://-oProxyCommand=x/p",
            "qemu+ssh://-oProxyCommand%3Dtouch%20%2Ftmp%2Fx/p",
            "qemu+ssh://-h/p",
            "qemu+ssh://-oProxyCommand=x@host/p",
            "qemu+ssh://a%20b@host/p",
            "qemu+ssh://host%3Bx/p",
        ] {
            match target(bad) {
                Err(Error::InvalidUri { .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        let t = target("xen+ssh://root@dom0.example:2222/").unwrap();
        assert_eq!(t.host, "dom0.example");
        assert_eq!(t.user.as_deref(), Some("root"));
        assert_eq!(t.port, Some(2222));
    }

    #[test]
    fn options_never_become_free_form_ssh_options() {
        for bad in [
            "qemu+ssh://h/p?known_hosts=/tmp/a%20-oProxyCommand=x",
            "qemu+ssh://h/p?known_hosts=/tmp/%25d",
            "qemu+ssh://h/p?command=-oProxyCommand=x",
            "qemu+ssh://h/p?no_verify=maybe",
            "qemu+ssh://h/p?keyfile=/nonexistent/key",
        ] {
            assert!(target(bad).is_err(), "{bad} was accepted");
        }
        let t = target("qemu+ssh://h/p?known_hosts=/tmp/kh&no_verify=1").unwrap();
        let args: Vec<String> = t
            .args(Path::new("/tmp/c"))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let dashdash = args.iter().position(|a| a == "--").unwrap();
        assert_eq!(&args[dashdash + 1..], ["h"]);
        assert!(args.contains(&"UserKnownHostsFile=/tmp/kh".to_owned()));
        assert!(args.contains(&"StrictHostKeyChecking=accept-new".to_owned()));
        assert!(args.contains(&"BatchMode=yes".to_owned()));
        let strict = target("qemu+ssh://h/p").unwrap();
        assert!(strict
            .args(Path::new("/tmp/c"))
            .contains(&OsString::from("StrictHostKeyChecking=yes")));
    }
}
