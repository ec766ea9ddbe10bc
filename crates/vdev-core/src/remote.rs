//! Remote hosts: the one place where a URI's transport becomes a byte stream to a unix socket on
//! the hypervisor's host, and commands run there. Drivers never speak ssh themselves: they take a
//! [`Host`] and call [`Host::connect_unix`] and [`Host::run`]; a new driver gets remote hosts for
//! free. Design: `docs/design/0011-remote-hosts.md`.
//!
//! `DRIVER+ssh://[user@]host[:port]/...` runs the system OpenSSH client once per connection:
//!
//! - one `ssh` process, one handshake, started in batch mode (never a prompt) with strict host
//!   key checking, as the master of a private control socket;
//! - its session runs `/bin/sh` on the remote host as a small command loop (the *agent*: POSIX
//!   shell builtins only, nothing from vdev installed there): [`Host::run`] sends a script and
//!   reads its exit status, stdout and stderr, with no new process or handshake per call;
//! - a remote unix socket is reached through OpenSSH's own unix-socket forwarding, added to the
//!   running master once per socket (`ssh -O forward -L LOCAL:REMOTE`): every stream is then a
//!   channel of the same connection, and the remote host needs nothing but sshd.
//!
//! When the ssh connection drops, the calls in flight fail (an [`Error::Remote`] of kind
//! [`RemoteErrorKind::Disconnected`], or a timeout) and the next call starts a new one.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tracing::{debug, trace};

use crate::error::{Error, RemoteErrorKind, Result};
use crate::uri::ConnectUri;

/// The URI options of the `+ssh` transport, which every driver that offers it accepts beside its
/// own (see [`SshTarget::from_uri`]).
pub const SSH_OPTIONS: &[&str] = &["keyfile", "known_hosts", "no_verify", "command", "persist"];

/// The values `persist=` accepts: 1 s to one day.
pub const PERSIST_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(86400);

/// The environment variables passed to `ssh` (every other one is removed): what finds the user's
/// configuration, keys, agent and Kerberos credentials.
const ENV_ALLOW: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "XDG_RUNTIME_DIR",
    "SSH_AUTH_SOCK",
    "SSH_ASKPASS",
    "SSH_ASKPASS_REQUIRE",
    "DISPLAY",
    "KRB5CCNAME",
    "KRB5_CONFIG",
    "KRB5_KTNAME",
    "SSH_SK_PROVIDER",
];

/// The most output one [`Host::run`] call may return.
const MAX_OUTPUT: usize = 16 << 20;

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
    /// use vdev_core::{remote::SshTarget, ConnectUri};
    /// let u = ConnectUri::parse("qemu+ssh://root@vmhost:2222/run/vm.qmp?no_verify=1")?;
    /// let t = SshTarget::from_uri(&u, Duration::from_secs(10))?;
    /// assert_eq!(t.destination(), "root@vmhost:2222");
    /// assert!(t.no_verify);
    /// let bad = ConnectUri::parse("qemu+ssh://-oProxyCommand=touch%20x/run/vm.qmp")?;
    /// assert!(SshTarget::from_uri(&bad, Duration::from_secs(10)).is_err());
    /// # Ok::<(), vdev_core::Error>(())
    /// ```
    pub fn from_uri(uri: &ConnectUri, connect_timeout: Duration) -> Result<Self> {
        let host = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .ok_or_else(|| {
                uri.invalid(format!(
                    "{}+ssh:// needs a host: write {}+ssh://[USER@]HOST[:PORT]/...",
                    uri.driver(),
                    uri.driver()
                ))
            })?;
        let host = percent_decoded(&host);
        check_name(uri, "host", &host, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')
        })?;
        let user = uri.user().map(percent_decoded);
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
        let no_verify = match uri.option("no_verify") {
            None | Some("0") | Some("false") | Some("no") => false,
            Some("" | "1" | "true" | "yes") => true,
            Some(v) => {
                return Err(uri.invalid(format!(
                    "no_verify={v} is not a boolean; write no_verify=1 to accept an unknown host key on first contact"
                )))
            }
        };
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
    fn shared_key(&self) -> String {
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
    fn args(&self, control: &Path) -> Vec<OsString> {
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

fn percent_decoded(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
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

/// Quote `s` as one word for a POSIX shell (`'...'`, with `'` written `'\''`).
///
/// ```
/// assert_eq!(vdev_core::remote::sh_quote("it's"), r#"'it'\''s'"#);
/// ```
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What a command run by [`Host::run`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Its exit status (128+N when killed by signal N, as the shell reports it).
    pub status: i32,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error, as text.
    pub stderr: String,
}

impl RunOutput {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// The program the shell could not find, when that is why the command failed (status 127,
    /// `NAME: not found` on stderr): lets a driver name the package to install.
    pub fn missing_program(&self) -> Option<String> {
        if self.status != 127 {
            return None;
        }
        self.stderr.lines().find_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_suffix(": not found")
                .or_else(|| l.strip_suffix(": command not found"))?;
            // "sh: 1: NAME", "bash: NAME", "NAME"
            rest.rsplit(": ").next().map(str::to_owned)
        })
    }

    /// Standard output as text (lossy), without a trailing newline.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout)
            .trim_end_matches('\n')
            .to_owned()
    }
}

/// Whether a socket path on the host can be used, as seen there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketState {
    /// A unix socket this user may connect to.
    Ready,
    /// Nothing is at the path.
    Missing,
    /// Something that is not a socket is at the path.
    NotSocket,
    /// A socket this user may not connect to.
    Denied,
}

/// Where a driver's hypervisor runs: this machine, or a remote host reached with OpenSSH.
/// Cheap to clone; the clones share one ssh connection.
#[derive(Clone, Debug)]
pub enum Host {
    /// This machine.
    Local,
    /// A remote host over ssh.
    Ssh(Arc<SshHost>),
}

impl Host {
    /// The host of `uri`: [`Host::Ssh`] for the `+ssh` transport (nothing is started until the
    /// first call), [`Host::Local`] otherwise.
    pub fn from_uri(uri: &ConnectUri, connect_timeout: Duration) -> Result<Host> {
        match uri.transport() {
            Some("ssh") => Ok(Host::ssh(SshTarget::from_uri(uri, connect_timeout)?)),
            _ => Ok(Host::Local),
        }
    }

    /// A remote host reached with `target`.
    pub fn ssh(target: SshTarget) -> Host {
        Host::Ssh(Arc::new(SshHost {
            target,
            session: tokio::sync::Mutex::new(None),
            expected: Mutex::new(Vec::new()),
        }))
    }

    /// Say that the driver will connect to the unix socket `path` (its hypervisor's control
    /// socket): a remote host then forwards it from the ssh login on, which saves a step at the
    /// first [`Host::connect_unix`]. Nothing to do for [`Host::Local`].
    pub fn expect_socket(&self, path: &Path) {
        if let Host::Ssh(s) = self {
            let mut e = s.expected.lock().unwrap_or_else(|p| p.into_inner());
            if !e.iter().any(|p| p == path) {
                e.push(path.to_owned());
            }
        }
    }

    /// Whether this is this machine.
    pub fn is_local(&self) -> bool {
        matches!(self, Host::Local)
    }

    /// The host's name for messages: `this machine`, or `user@host:port`.
    pub fn name(&self) -> String {
        match self {
            Host::Local => "this machine".into(),
            Host::Ssh(s) => s.target.destination(),
        }
    }

    /// Open the ssh connection now (it is otherwise opened by the first call), so that a bad
    /// host, key or login is reported at connect time. Nothing to do for [`Host::Local`].
    pub async fn ensure_connected(&self) -> Result<()> {
        match self {
            Host::Local => Ok(()),
            Host::Ssh(s) => s.session().await.map(|_| ()),
        }
    }

    /// Connect to the unix socket at `path` on the host. The outer error is the transport's (ssh
    /// could not be reached); the inner one is the socket's, as `connect(2)` would report it
    /// (`NotFound`, `PermissionDenied`, ...), so drivers handle both hosts alike.
    pub async fn connect_unix(&self, path: &Path) -> Result<std::io::Result<UnixStream>> {
        match self {
            Host::Local => Ok(UnixStream::connect(path).await),
            Host::Ssh(s) => s.connect_unix(path).await,
        }
    }

    /// What is at `path` on the host (one round trip for a remote host).
    pub async fn socket_state(&self, path: &Path, timeout: Duration) -> Result<SocketState> {
        match self {
            Host::Local => Ok(local_socket_state(path)),
            Host::Ssh(s) => {
                let session = s.session().await?;
                session.socket_state(path, timeout).await
            }
        }
    }

    /// Run `script` with `/bin/sh` on the host (stdin empty) and wait at most `timeout`; its
    /// exit status and output, whatever the status. On a remote host it runs in the agent
    /// loop of the connection's ssh session: no new ssh process or login.
    pub async fn run(&self, script: &str, timeout: Duration) -> Result<RunOutput> {
        match self {
            Host::Local => run_local(script, timeout).await,
            Host::Ssh(s) => {
                let session = s.session().await?;
                session.request(script, false, timeout).await
            }
        }
    }

    /// Run `script` in the agent's own shell rather than a subshell, so that what it does to
    /// the shell (open a file descriptor, for instance to hold a lock) stays until a later call
    /// undoes it. It is also the cheaper way to run a script of shell builtins only: no subshell
    /// is forked on the host. Scripts must not `exit`, and should name their variables
    /// `__vdev_*`. For [`Host::Local`] this is [`Host::run`].
    pub async fn run_in_session(&self, script: &str, timeout: Duration) -> Result<RunOutput> {
        match self {
            Host::Local => run_local(script, timeout).await,
            Host::Ssh(s) => {
                let session = s.session().await?;
                session.request(script, true, timeout).await
            }
        }
    }

    /// Call the shell function `name` (defined by `body`, POSIX shell) with `args`, each
    /// quoted, on the host. On a remote host the function is defined in the agent's own shell
    /// once per ssh session and every later call sends only its name and arguments: the
    /// cheapest way to run the same check often (the agent reads its input byte by byte). The
    /// body runs in the agent's shell (no process is forked for builtins): it must `return`,
    /// never `exit`, and name its variables `__vdev_*` (declare them `local` if it likes).
    pub async fn call(
        &self,
        name: &'static str,
        body: &'static str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<RunOutput> {
        let mut call = String::from(name);
        for a in args {
            call.push(' ');
            call.push_str(&sh_quote(a));
        }
        match self {
            Host::Local => run_local(&format!("{name}() {{\n{body}\n}}\n{call}"), timeout).await,
            Host::Ssh(s) => {
                let session = s.session().await?;
                let first = session
                    .defined
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name);
                let script = if first {
                    format!("{name}() {{\n{body}\n}}\n{call}")
                } else {
                    call
                };
                let r = session.request(&script, true, timeout).await;
                if r.is_err() && first {
                    session
                        .defined
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(name);
                }
                r
            }
        }
    }

    /// An identity of the current ssh session (it changes when the connection was re-opened),
    /// or 0 for [`Host::Local`]: lets a caller tell whether session state it set up (such as a
    /// lock held by [`Host::run_in_session`]) is still there.
    pub async fn session_id(&self) -> u64 {
        match self {
            Host::Local => 0,
            Host::Ssh(s) => s
                .session
                .lock()
                .await
                .as_ref()
                .filter(|x| x.is_alive())
                .map(|x| x.id)
                .unwrap_or(0),
        }
    }

    /// Why a stream from [`Host::connect_unix`] to `path` closed before its peer said
    /// anything, when ssh knows: the host's sshd refused to open the channel (forwarding
    /// forbidden for this user, or the socket gone). Waits briefly for ssh to report it; `None`
    /// for [`Host::Local`] or when ssh reported nothing. Each report is returned once.
    pub async fn stream_failure(&self, path: &Path) -> Option<Error> {
        let Host::Ssh(s) = self else { return None };
        let session = s.session.lock().await.clone()?;
        let mut said = None;
        for _ in 0..20 {
            said = session.take_channel_failure();
            if said.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let said = said?;
        let state = session
            .socket_state(path, session.target.connect_timeout)
            .await
            .ok()?;
        let todo = match state {
            SocketState::Ready => format!(
                "{} is there and usable, so the host's sshd does not forward unix sockets for this user: set AllowStreamLocalForwarding yes (and not DisableForwarding) in its sshd_config, and no 'restrict' or 'no-port-forwarding' on the key in authorized_keys",
                path.display()
            ),
            SocketState::Missing => format!("{} is gone", path.display()),
            SocketState::NotSocket => format!("{} is not a socket", path.display()),
            SocketState::Denied => format!("the login user may not use {}", path.display()),
        };
        Some(Error::Remote {
            host: s.target.destination(),
            kind: RemoteErrorKind::Refused,
            message: format!("ssh said: {said}; {todo}"),
        })
    }

    /// Whether a stream to `path` can be had without starting anything: on this machine, or
    /// (with `persist=`) through a forward the shared ssh connection already has. Lets a
    /// driver skip checks it would otherwise ask the host for, when the stream itself answers
    /// them.
    pub fn has_ready_stream(&self, path: &Path) -> bool {
        match self {
            Host::Local => true,
            Host::Ssh(s) => s.shared_forward(path).is_some(),
        }
    }

    /// Close the ssh connection (if any); the next call opens a new one.
    pub async fn disconnect(&self) {
        if let Host::Ssh(s) = self {
            if let Some(session) = s.session.lock().await.take() {
                session.kill();
            }
        }
    }
}

fn local_socket_state(path: &Path) -> SocketState {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Err(_) => SocketState::Missing,
        Ok(m) if !m.file_type().is_socket() => SocketState::NotSocket,
        Ok(_) => SocketState::Ready,
    }
}

async fn run_local(script: &str, timeout: Duration) -> Result<RunOutput> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| Error::Timeout {
            operation: "a command on this machine".into(),
            after: timeout,
        })?
        .map_err(|e| Error::backend_with("", "cannot run /bin/sh", e))?;
    use std::os::unix::process::ExitStatusExt;
    let status = out
        .status
        .code()
        .or_else(|| out.status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok(RunOutput {
        status,
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A remote host reached with OpenSSH: the target and its current ssh session.
pub struct SshHost {
    target: SshTarget,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// Sockets to forward from the login on ([`Host::expect_socket`]).
    expected: Mutex<Vec<PathBuf>>,
}

impl fmt::Debug for SshHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SshHost({})", self.target.destination())
    }
}

impl SshHost {
    /// The target.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// The live session, (re)connecting when there is none or it died.
    async fn session(&self) -> Result<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if s.is_alive() {
                return Ok(s.clone());
            }
            debug!(host = %self.target.destination(), "ssh connection lost; reconnecting");
            s.kill();
        }
        *slot = None;
        let expected = self
            .expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let s = Arc::new(Session::start(&self.target, &expected).await?);
        *slot = Some(s.clone());
        Ok(s)
    }

    /// With `persist=`, the local end of a forward the shared connection already has for
    /// `path` (made by an earlier connection, perhaps of another process), if its file exists.
    fn shared_forward(&self, path: &Path) -> Option<PathBuf> {
        self.target.persist?;
        let dir = shared_dir().ok()?;
        let local = Sockets::Shared {
            dir,
            key: self.target.shared_key(),
        }
        .forward(0, path);
        local.exists().then_some(local)
    }

    async fn connect_unix(&self, path: &Path) -> Result<std::io::Result<UnixStream>> {
        // With persist=, a live shared forward needs no ssh process of ours at all: the agent
        // is started only when something needs it.
        let live = self
            .session
            .lock()
            .await
            .as_ref()
            .is_some_and(|s| s.is_alive());
        if !live {
            if let Some(local) = self.shared_forward(path) {
                if let Ok(s) = UnixStream::connect(&local).await {
                    debug!(host = %self.target.destination(), path = %path.display(), "through the shared connection's forward");
                    return Ok(Ok(s));
                }
            }
        }
        let session = self.session().await?;
        let local = match session.forward(path, false).await? {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        match UnixStream::connect(&local).await {
            // A shared master's forward from an earlier master that is gone: forward again.
            Err(e)
                if matches!(session.sockets, Sockets::Shared { .. })
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                    ) =>
            {
                let local = match session.forward(path, true).await? {
                    Ok(l) => l,
                    Err(e) => return Ok(Err(e)),
                };
                Ok(UnixStream::connect(&local).await)
            }
            r => Ok(r),
        }
    }
}

/// The agent: a POSIX shell loop on the remote host, run by the master's session. A request is
/// a token line, the script's lines, and the token line again; the answer is the script's stdout,
/// a line `TOKEN STATUS`, its stderr and a line `TOKEN end`. Tokens are random, so no output can
/// imitate them. Requests whose token starts with `M` run in the loop's own shell, others in a
/// subshell. Only builtins run between requests: an exec costs much on a slow host.
const AGENT: &str = r#"umask 077
__vdev_e=$(mktemp 2>/dev/null) || __vdev_e=/tmp/vdev-agent.$$
trap 'rm -f "$__vdev_e"' EXIT
printf '\nVDEV-AGENT-1 READY\n'
while IFS= read -r __vdev_t; do
  __vdev_s=
  while IFS= read -r __vdev_l; do
    [ "$__vdev_l" = "$__vdev_t" ] && break
    __vdev_s="$__vdev_s$__vdev_l
"
  done
  case $__vdev_t in
  M*) eval "$__vdev_s" </dev/null 2>"$__vdev_e"; __vdev_r=$? ;;
  *) (eval "$__vdev_s") </dev/null 2>"$__vdev_e"; __vdev_r=$? ;;
  esac
  printf '\n%s %d\n' "$__vdev_t" "$__vdev_r"
  while IFS= read -r __vdev_l || [ -n "$__vdev_l" ]; do printf '%s\n' "$__vdev_l"; done <"$__vdev_e"
  printf '%s end\n' "$__vdev_t"
done
"#;

static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One ssh connection: the master process, its control socket, the agent on its stdio, and the
/// unix-socket forwards added so far.
struct Session {
    id: u64,
    target: SshTarget,
    sockets: Sockets,
    control: PathBuf,
    child: Mutex<Child>,
    agent: tokio::sync::Mutex<Agent>,
    broken: AtomicBool,
    /// Remote socket → (local end, whether the remote socket was checked through the agent).
    forwards: tokio::sync::Mutex<HashMap<PathBuf, (PathBuf, bool)>>,
    next_forward: AtomicU32,
    /// The shell functions [`Host::call`] has defined in the agent.
    defined: Mutex<std::collections::HashSet<&'static str>>,
    stderr: Arc<Mutex<String>>,
}

struct Agent {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private folder (mode 0700) for the control socket and the forwards, removed with the
/// session. In `/tmp` when the temporary folder's path is long: unix socket paths are limited
/// to 107 bytes.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new() -> std::io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let base = if base.as_os_str().len() > 60 {
            PathBuf::from("/tmp")
        } else {
            base
        };
        loop {
            let p = base.join(format!(
                "vdev-ssh-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(SocketDir(p)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a session's sockets are: its own private folder, or (with `persist=`) the user's
/// shared folder, whose control socket and forwards outlive the process.
enum Sockets {
    Private(SocketDir),
    Shared { dir: PathBuf, key: String },
}

impl Sockets {
    fn control(&self) -> PathBuf {
        match self {
            Sockets::Private(d) => d.path().join("c"),
            Sockets::Shared { dir, key } => dir.join(format!("{key}.c")),
        }
    }

    fn forward(&self, n: u32, remote: &Path) -> PathBuf {
        match self {
            Sockets::Private(d) => d.path().join(format!("f{n}")),
            Sockets::Shared { dir, key } => dir.join(format!(
                "{key}.f{:016x}",
                fnv(remote.as_os_str().as_encoded_bytes())
            )),
        }
    }
}

/// Whether OpenSSH's `-L LOCAL:REMOTE` can carry the path.
fn forwardable(remote: &Path) -> bool {
    let r = remote.to_string_lossy();
    !(r.contains([':', '%', '[', ']']) || r.contains("${") || r.chars().any(char::is_control))
}

/// FNV-1a: a stable short name for a destination or a remote path (not a security measure: the
/// folder is private to the user).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The user's folder for shared ssh connections: `$XDG_RUNTIME_DIR/vdev-ssh`, else
/// `/tmp/vdev-ssh-UID`; made 0700 and checked to be a real folder owned by this user with no
/// access for others (anyone who can reach a control socket can use the connection).
fn shared_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // SAFETY: getuid(2) has no failure mode.
    let uid = unsafe { libc_getuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() && d.as_os_str().len() < 60 => d.join("vdev-ssh"),
        _ => PathBuf::from(format!("/tmp/vdev-ssh-{uid}")),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let md = std::fs::symlink_metadata(&dir)?;
    if !md.is_dir() || md.uid() != uid || md.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} must be a folder of this user with mode 0700 (it holds the shared ssh connections); remove it",
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}

impl Session {
    async fn start(target: &SshTarget, expected: &[PathBuf]) -> Result<Session> {
        let dest = target.destination();
        let remote = |kind, message: String| Error::Remote {
            host: dest.clone(),
            kind,
            message,
        };
        let sockets = match target.persist {
            None => SocketDir::new().map(Sockets::Private),
            Some(_) => shared_dir().map(|dir| Sockets::Shared {
                dir,
                key: target.shared_key(),
            }),
        }
        .map_err(|e| {
            remote(
                RemoteErrorKind::LocalProgram,
                format!("cannot make a private folder for the ssh control socket: {e}"),
            )
        })?;
        let control = sockets.control();
        let mut cmd = tokio::process::Command::new(&target.command);
        let mut args = target.args(&control);
        // The expected sockets are forwarded by the login itself (before `--` and the host).
        let mut forwards = HashMap::new();
        for (n, remote) in expected.iter().filter(|r| forwardable(r)).enumerate() {
            let local = sockets.forward(n as u32, remote);
            let mut spec = OsString::from(local.as_os_str());
            spec.push(":");
            spec.push(remote.as_os_str());
            let at = args.len() - 2;
            args.splice(at..at, [OsString::from("-L"), spec]);
            forwards.insert(remote.clone(), (local, false));
        }
        cmd.args(args).arg("/bin/sh");
        cmd.env_clear();
        for k in ENV_ALLOW {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        debug!(host = %dest, command = ?target.command, "starting ssh");
        let mut child = cmd.spawn().map_err(|e| {
            remote(
                RemoteErrorKind::LocalProgram,
                format!(
                    "cannot run the ssh program '{}': {e}; install openssh-client, or give command=PATH",
                    target.command.display()
                ),
            )
        })?;
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect_stderr(err, stderr.clone(), dest.clone()));
        }
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let session = Session {
            id: SESSIONS.fetch_add(1, Ordering::Relaxed),
            target: target.clone(),
            sockets,
            control,
            child: Mutex::new(child),
            agent: tokio::sync::Mutex::new(Agent {
                stdin: {
                    // ssh keeps this until the session channel is open.
                    let _ = stdin.write_all(AGENT.as_bytes()).await;
                    let _ = stdin.flush().await;
                    stdin
                },
                stdout,
            }),
            broken: AtomicBool::new(false),
            next_forward: AtomicU32::new(forwards.len() as u32),
            forwards: tokio::sync::Mutex::new(forwards),
            defined: Mutex::new(std::collections::HashSet::new()),
            stderr,
        };
        let ready = async {
            let mut agent = session.agent.lock().await;
            let mut line = Vec::new();
            loop {
                line.clear();
                match agent.stdout.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) if line.starts_with(b"VDEV-AGENT-1 READY") => return true,
                    // A login script may print something first.
                    Ok(_) => {
                        trace!(host = %dest, line = %String::from_utf8_lossy(&line).trim_end(), "ssh: before the agent")
                    }
                }
            }
        };
        match tokio::time::timeout(target.connect_timeout, ready).await {
            Ok(true) => {
                debug!(host = %dest, "ssh connected");
                Ok(session)
            }
            Ok(false) => {
                // ssh ended: wait briefly for its last words.
                let status = session.wait_exit(Duration::from_secs(2)).await;
                Err(session.login_error(status))
            }
            Err(_) => {
                session.kill();
                Err(remote(
                    RemoteErrorKind::Unreachable,
                    format!(
                        "no ssh login within {}{}; check that the host is up and its sshd listens on that port, or raise timeout=",
                        humantime::format_duration(target.connect_timeout),
                        session.ssh_said()
                    ),
                ))
            }
        }
    }

    fn is_alive(&self) -> bool {
        if self.broken.load(Ordering::Acquire) {
            return false;
        }
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        matches!(c.try_wait(), Ok(None))
    }

    fn kill(&self) {
        self.broken.store(true, Ordering::Release);
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.start_kill();
    }

    async fn wait_exit(&self, bound: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let exited = self
                .child
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .try_wait();
            if let Ok(Some(s)) = exited {
                // Let the stderr collector catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Some(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What ssh said about a channel the remote sshd refused to open ("open failed"), once.
    fn take_channel_failure(&self) -> Option<String> {
        let mut said = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let at = said.find("open failed")?;
        let start = said[..at].rfind("channel ").unwrap_or(at);
        let end = said[at..]
            .find(" channel ")
            .map(|e| at + e)
            .unwrap_or(said.len());
        let what = said[start..end].trim().to_owned();
        said.replace_range(..end, "");
        Some(what)
    }

    /// `; ssh said: ...` with ssh's last words, or nothing.
    fn ssh_said(&self) -> String {
        let s = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let s = s.trim();
        if s.is_empty() {
            String::new()
        } else {
            format!("; ssh said: {s}")
        }
    }

    /// The error for an ssh that ended before the agent greeted: classified from ssh's own
    /// message, with what to do.
    fn login_error(&self, status: Option<std::process::ExitStatus>) -> Error {
        let said = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (kind, todo) = classify(&said, &self.target);
        let status = status
            .and_then(|s| s.code())
            .map(|c| format!(" (exit status {c})"))
            .unwrap_or_default();
        Error::Remote {
            host: self.target.destination(),
            kind,
            message: format!(
                "ssh could not open a session{status}{}; {todo}",
                self.ssh_said()
            ),
        }
    }

    /// The error for a connection that ended while in use.
    fn lost(&self, doing: &str) -> Error {
        self.kill();
        Error::Remote {
            host: self.target.destination(),
            kind: RemoteErrorKind::Disconnected,
            message: format!(
                "the ssh connection closed while {doing}{}; the next operation reconnects",
                self.ssh_said()
            ),
        }
    }

    /// Run one request in the agent.
    async fn request(&self, script: &str, main: bool, timeout: Duration) -> Result<RunOutput> {
        let doing = "running a command on the host";
        // Waiting for the connection's other commands is bounded by `timeout` too, but it says
        // nothing about this session: only a command sent and not answered in time closes it.
        let Ok(mut agent) = tokio::time::timeout(timeout, self.agent.lock()).await else {
            return Err(Error::Timeout {
                operation: format!(
                    "waiting for this connection's other commands on {}",
                    self.target.destination()
                ),
                after: timeout,
            });
        };
        let work = async {
            if !self.is_alive() {
                return Err(self.lost(doing));
            }
            let token = format!(
                "{}{:016x}{:016x}",
                if main { 'M' } else { 'S' },
                rand::random::<u64>(),
                rand::random::<u64>()
            );
            let mut msg = String::with_capacity(script.len() + 80);
            msg.push_str(&token);
            msg.push('\n');
            msg.push_str(script);
            if !script.ends_with('\n') {
                msg.push('\n');
            }
            msg.push_str(&token);
            msg.push('\n');
            trace!(target: "vdev::ssh", host = %self.target.destination(), %script, "agent request");
            if agent.stdin.write_all(msg.as_bytes()).await.is_err()
                || agent.stdin.flush().await.is_err()
            {
                return Err(self.lost(doing));
            }
            let (status, stdout, stderr) = match read_reply(&mut agent.stdout, &token, MAX_OUTPUT)
                .await
            {
                Ok(r) => r,
                Err(ReplyError::Closed) => return Err(self.lost(doing)),
                Err(ReplyError::TooLong) => {
                    self.kill();
                    return Err(Error::Remote {
                            host: self.target.destination(),
                            kind: RemoteErrorKind::Disconnected,
                            message: format!("a command printed more than {MAX_OUTPUT} bytes; the connection was closed"),
                        });
                }
            };
            let out = RunOutput {
                status,
                stdout,
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            };
            trace!(target: "vdev::ssh", host = %self.target.destination(), status, stdout = %String::from_utf8_lossy(&out.stdout), stderr = %out.stderr, "agent reply");
            Ok(out)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => {
                // The agent is somewhere in the middle of the script: this session cannot be
                // trusted any more. The next call reconnects.
                self.kill();
                Err(Error::Timeout {
                    operation: format!("a command on {}", self.target.destination()),
                    after: timeout,
                })
            }
        }
    }

    async fn socket_state(&self, path: &Path, timeout: Duration) -> Result<SocketState> {
        let p = sh_quote(&path.to_string_lossy());
        // Builtins only: in the agent's own shell, no process on the host.
        let out = self
            .request(
                &format!(
                    "__vdev_p={p}; if [ -S \"$__vdev_p\" ]; then if [ -r \"$__vdev_p\" ] && [ -w \"$__vdev_p\" ]; then echo ready; else echo denied; fi; elif [ -e \"$__vdev_p\" ]; then echo other; else echo missing; fi"
                ),
                true,
                timeout,
            )
            .await?;
        Ok(match out.text().as_str() {
            "ready" => SocketState::Ready,
            "denied" => SocketState::Denied,
            "other" => SocketState::NotSocket,
            _ => SocketState::Missing,
        })
    }

    /// The local end of the forward to `remote` (added on first use). The inner error says why
    /// the remote socket cannot be used.
    async fn forward(&self, remote: &Path, fresh: bool) -> Result<std::io::Result<PathBuf>> {
        let mut forwards = self.forwards.lock().await;
        if fresh {
            forwards.remove(remote);
        }
        if let Some((l, true)) = forwards.get(remote) {
            return Ok(Ok(l.clone()));
        }
        let r = remote.to_string_lossy();
        if !forwardable(remote) {
            return Ok(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the remote socket path {r} holds ':', '%', '[', ']', '${{' or a control character, which OpenSSH's forwarding cannot carry; move or link the socket to a plain path"),
            )));
        }
        let host = self.target.destination();
        match self
            .socket_state(remote, self.target.connect_timeout)
            .await?
        {
            SocketState::Ready => {}
            SocketState::Missing => {
                return Ok(Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no such socket on {host}"),
                )))
            }
            SocketState::NotSocket => {
                return Ok(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("not a unix socket on {host}"),
                )))
            }
            SocketState::Denied => {
                return Ok(Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("the login user on {host} may not connect to it"),
                )))
            }
        }
        // Forwarded by the login already: now checked.
        if let Some((l, checked)) = forwards.get_mut(remote) {
            *checked = true;
            return Ok(Ok(l.clone()));
        }
        let n = self.next_forward.fetch_add(1, Ordering::Relaxed);
        let local = self.sockets.forward(n, remote);
        // A shared master may forward this socket already (for an earlier process); if that
        // forward is stale, connect_unix asks again with `fresh`.
        if !fresh && matches!(self.sockets, Sockets::Shared { .. }) && local.exists() {
            forwards.insert(remote.to_owned(), (local.clone(), true));
            return Ok(Ok(local));
        }
        let mut spec = OsString::from(local.as_os_str());
        spec.push(":");
        spec.push(remote.as_os_str());
        let mut cmd = tokio::process::Command::new(&self.target.command);
        cmd.arg("-o")
            .arg(format!("ControlPath={}", self.control.display()))
            .args(["-O", "forward", "-L"])
            .arg(&spec)
            .arg("--")
            .arg(&self.target.host)
            .env_clear()
            .envs(
                ENV_ALLOW
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
            )
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(self.target.connect_timeout, cmd.output()).await;
        let failed = |why: String| {
            Error::Remote {
            host: host.clone(),
            kind: RemoteErrorKind::Refused,
            message: format!(
                "ssh could not forward {r}: {why}; the host's sshd must allow unix-socket forwarding (AllowStreamLocalForwarding yes, DisableForwarding no)"
            ),
        }
        };
        match out {
            Err(_) => {
                return Err(Error::Timeout {
                    operation: format!("adding an ssh forward to {r} on {host}"),
                    after: self.target.connect_timeout,
                })
            }
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Ok(Ok(o)) if !o.status.success() => {
                return Err(failed(String::from_utf8_lossy(&o.stderr).trim().to_owned()))
            }
            Ok(Ok(_)) => {}
        }
        debug!(%host, remote = %r, local = %local.display(), "ssh forward added");
        forwards.insert(remote.to_owned(), (local.clone(), true));
        Ok(Ok(local))
    }
}

async fn collect_stderr(err: impl AsyncRead + Unpin, buf: Arc<Mutex<String>>, host: String) {
    let mut lines = BufReader::new(err).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        trace!(target: "vdev::ssh", %host, "ssh: {l}");
        let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
        if !b.is_empty() {
            b.push(' ');
        }
        b.push_str(l.trim());
        if b.len() > 4096 {
            let cut = b.len() - 4096;
            let cut = (cut..b.len()).find(|i| b.is_char_boundary(*i)).unwrap_or(0);
            b.drain(..cut);
        }
    }
}

/// What kind of failure ssh's message describes, and what to do about it.
fn classify(said: &str, t: &SshTarget) -> (RemoteErrorKind, String) {
    let has = |s: &str| said.contains(s);
    if has("REMOTE HOST IDENTIFICATION HAS CHANGED") || has("Host key for") && has("has changed") {
        (RemoteErrorKind::HostKey, "the host's key has CHANGED since it was recorded: this may be an attack; if the host was really re-installed, remove its old line from known_hosts (ssh-keygen -R HOST) and connect again".into())
    } else if has("Host key verification failed") || has("No ") && has("host key is known") {
        (RemoteErrorKind::HostKey, format!("the host's key is not in {}: check it and record it (ssh-keyscan, or one interactive ssh), or add no_verify=1 to accept a new key on first contact", t.known_hosts.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "~/.ssh/known_hosts".into())))
    } else if has("Permission denied") || has("Too many authentication failures") {
        (RemoteErrorKind::Authentication, "the login was refused: give keyfile=PATH of a key the host accepts (in the user's authorized_keys), or load it into ssh-agent; ssh never asks for a password here".into())
    } else if has("Could not resolve hostname")
        || has("Connection refused")
        || has("No route to host")
        || has("timed out")
        || has("Network is unreachable")
        || has("Connection closed by")
        || has("kex_exchange_identification")
    {
        (
            RemoteErrorKind::Unreachable,
            "check the host name and port, and that sshd runs there".into(),
        )
    } else if has("not found") || has("No such file") {
        (
            RemoteErrorKind::MissingProgram,
            "the host needs a POSIX shell at /bin/sh for the login user".into(),
        )
    } else {
        (
            RemoteErrorKind::Unreachable,
            "run the same ssh by hand (ssh -v) to see why".into(),
        )
    }
}

/// Why an agent reply could not be read to its end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplyError {
    /// The stream ended (or failed) before the reply's end line.
    Closed,
    /// The command printed more than the bound.
    TooLong,
}

/// Read one framed agent reply for `token` from `r`: the script's stdout, up to the status line
/// `TOKEN STATUS`, then its stderr up to `TOKEN end`. Lines that only look like a status line
/// (another token, no number) are output. At most `max` bytes of stdout are kept. Returns the
/// status, stdout (without the newline the agent adds before the status) and stderr.
pub(crate) async fn read_reply<R>(
    r: &mut R,
    token: &str,
    max: usize,
) -> std::result::Result<(i32, Vec<u8>, Vec<u8>), ReplyError>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let status_prefix = format!("{token} ");
    let end = format!("{token} end\n");
    let mut stdout = Vec::new();
    let mut line = Vec::new();
    let status = loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return Err(ReplyError::Closed),
            Ok(_) => {}
        }
        if let Some(rest) = line.strip_prefix(status_prefix.as_bytes()) {
            if let Some(code) = std::str::from_utf8(rest)
                .ok()
                .and_then(|r| r.trim_end().parse::<i32>().ok())
            {
                break code;
            }
        }
        stdout.extend_from_slice(&line);
        if stdout.len() > max {
            return Err(ReplyError::TooLong);
        }
    };
    // The agent printed a newline before the status line.
    if stdout.last() == Some(&b'\n') {
        stdout.pop();
    }
    let mut stderr = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return Err(ReplyError::Closed),
            Ok(_) if line == end.as_bytes() => break,
            Ok(_) => {
                stderr.extend_from_slice(&line);
                if stderr.len() > max {
                    return Err(ReplyError::TooLong);
                }
            }
        }
    }
    Ok((status, stdout, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn quoting_survives_the_shell() {
        let s = "a b'c\"d$e`f\\g\nh";
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh_quote(s)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), s);
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let out = Host::Local
            .run("vdev-no-such-program-xyz --help", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            out.missing_program().as_deref(),
            Some("vdev-no-such-program-xyz"),
            "{out:?}"
        );
        let ok = Host::Local
            .run("true", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(ok.missing_program(), None);
    }

    #[tokio::test]
    async fn local_run_reports_status_and_both_streams() {
        let out = Host::Local
            .run("echo out; echo err >&2; exit 3", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.text(), "out");
        assert_eq!(out.stderr.trim(), "err");
    }
}
