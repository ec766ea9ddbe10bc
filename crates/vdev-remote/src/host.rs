//! [`Host`]: this machine or a remote one, behind one interface.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UnixStream;

use vdev_core::{ConnectUri, Error, RemoteErrorKind, Result};

use crate::session::SshHost;
use crate::target::SshTarget;

/// Quote `s` as one word for a POSIX shell (`'...'`, with `'` written `'\''`).
///
/// ```
/// assert_eq!(vdev_remote::sh_quote("it's"), r#"'it'\''s'"#);
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
    /// first call), [`Host::Local`] otherwise. The `+ssh` transport's options ([`SSH_OPTIONS`])
    /// are read and taken out of `uri`, so that the driver's
    /// [`check_options`](ConnectUri::check_options) sees only its own.
    ///
    /// [`SSH_OPTIONS`]: crate::SSH_OPTIONS
    pub fn from_uri(uri: &mut ConnectUri, connect_timeout: Duration) -> Result<Host> {
        match uri.transport() {
            Some("ssh") => {
                let target = SshTarget::from_uri(uri, connect_timeout)?;
                uri.take_transport_options(crate::SSH_OPTIONS);
                Ok(Host::ssh(target))
            }
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

    /// With `persist=`, where the shared ssh connection to this host keeps its files on this
    /// machine: its control socket (`ssh -O check -o ControlPath=...` asks after it) and the
    /// local end of its forward to the host's unix socket `remote`, whether or not they exist
    /// now. `None` for [`Host::Local`] and without `persist=`; an error when the user's shared
    /// folder (`$XDG_RUNTIME_DIR/vdev-ssh`, else `/tmp/vdev-ssh-UID`) cannot be made or is not
    /// this user's alone.
    pub fn shared_files(&self, remote: &Path) -> Option<std::io::Result<crate::SharedFiles>> {
        match self {
            Host::Local => None,
            Host::Ssh(s) => s.shared_files(remote),
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_transport_takes_its_options_and_the_driver_check_names_them() {
        let mut uri =
            ConnectUri::parse("qemu+ssh://h/p?no_verify=1&persist=5s&timeout=3s&bogus=1").unwrap();
        let host = Host::from_uri(&mut uri, Duration::from_secs(5)).unwrap();
        assert!(!host.is_local());
        assert_eq!(uri.option("no_verify"), None);
        assert_eq!(uri.option("timeout"), Some("3s"));
        let err = uri.check_options(&["timeout"]).unwrap_err().to_string();
        assert!(err.contains("unknown option 'bogus'"), "{err}");
        assert!(err.contains("the ssh transport's: keyfile"), "{err}");
        // Without +ssh, the transport takes nothing: keyfile= is the driver's to refuse.
        let mut local = ConnectUri::parse("qemu:///p?keyfile=/k").unwrap();
        assert!(Host::from_uri(&mut local, Duration::from_secs(5))
            .unwrap()
            .is_local());
        let err = local.check_options(&["timeout"]).unwrap_err().to_string();
        assert!(
            err.contains("unknown option 'keyfile'") && !err.contains("transport"),
            "{err}"
        );
    }
}
