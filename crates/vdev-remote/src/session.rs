//! One ssh connection: the master process, its control socket, the agent on its stdio, and the
//! unix-socket forwards added so far.

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

use vdev_core::{Error, RemoteErrorKind, Result};

use crate::agent::{read_reply, ReplyError, AGENT};
use crate::host::{sh_quote, RunOutput, SocketState};
use crate::sockets::{forwardable, shared_dir, SharedFiles, SocketDir, Sockets};
use crate::target::SshTarget;

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

/// A remote host reached with OpenSSH: the target and its current ssh session.
pub struct SshHost {
    pub(crate) target: SshTarget,
    pub(crate) session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// Sockets to forward from the login on ([`Host::expect_socket`]).
    pub(crate) expected: Mutex<Vec<PathBuf>>,
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
    pub(crate) async fn session(&self) -> Result<Arc<Session>> {
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
    pub(crate) fn shared_forward(&self, path: &Path) -> Option<PathBuf> {
        let local = self.shared_files(path)?.ok()?.forward;
        local.exists().then_some(local)
    }

    pub(crate) fn shared_files(&self, remote: &Path) -> Option<std::io::Result<SharedFiles>> {
        self.target.persist?;
        Some(shared_dir().map(|dir| {
            let s = Sockets::Shared {
                dir,
                key: self.target.shared_key(),
            };
            SharedFiles {
                control: s.control(),
                forward: s.forward(0, remote),
            }
        }))
    }

    pub(crate) async fn connect_unix(&self, path: &Path) -> Result<std::io::Result<UnixStream>> {
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
                // One user of the shared master at a time mends it (threads and processes
                // alike): two at once would each cancel the forward the other had just made
                // again, between its bind and its connect (seen in a test run: "Connection
                // refused" through a forward made a moment before). The one before may have
                // mended it already: that is tried first.
                let _mending = session.mending_turn(path).await;
                if let Ok(s) = UnixStream::connect(&local).await {
                    return Ok(Ok(s));
                }
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

static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One ssh connection: the master process, its control socket, the agent on its stdio, and the
/// unix-socket forwards added so far.
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) target: SshTarget,
    sockets: Sockets,
    pub(crate) control: PathBuf,
    pub(crate) child: Mutex<Child>,
    agent: tokio::sync::Mutex<Agent>,
    pub(crate) broken: AtomicBool,
    /// Remote socket → (local end, whether the remote socket was checked through the agent).
    pub(crate) forwards: tokio::sync::Mutex<HashMap<PathBuf, (PathBuf, bool)>>,
    pub(crate) next_forward: AtomicU32,
    /// The shell functions [`Host::call`] has defined in the agent.
    pub(crate) defined: Mutex<std::collections::HashSet<&'static str>>,
    pub(crate) stderr: Arc<Mutex<String>>,
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

impl Session {
    pub(crate) async fn start(target: &SshTarget, expected: &[PathBuf]) -> Result<Session> {
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
        // With persist=: the files of shared masters now gone are removed first; when this
        // connection's own master is gone, its turn is held until the login below has started
        // the new one. The wait for that turn counts against the login's bound.
        let started = tokio::time::Instant::now();
        let _starting = sockets.clear_gone_masters(target.connect_timeout).await;
        let mut cmd = tokio::process::Command::new(&target.command);
        let mut args = target.args(&control);
        // The expected sockets are forwarded by the login itself (before `--` and the host).
        // Not on a shared connection: its forwards outlive this process, and a later one takes
        // an existing forward as proof that the path is a socket (`shared_forward`), so there
        // only a checked socket is forwarded (`forward`). An expected path may be a directory
        // of sockets.
        let mut forwards = HashMap::new();
        let login_forwards: &[PathBuf] = match sockets {
            Sockets::Private(_) => expected,
            Sockets::Shared { .. } => &[],
        };
        for (n, remote) in login_forwards.iter().filter(|r| forwardable(r)).enumerate() {
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
        let left = target.connect_timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, ready).await {
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

    pub(crate) fn is_alive(&self) -> bool {
        if self.broken.load(Ordering::Acquire) {
            return false;
        }
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        matches!(c.try_wait(), Ok(None))
    }

    pub(crate) fn kill(&self) {
        self.broken.store(true, Ordering::Release);
        let mut c = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = c.start_kill();
    }

    pub(crate) async fn wait_exit(&self, bound: Duration) -> Option<std::process::ExitStatus> {
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
    pub(crate) fn take_channel_failure(&self) -> Option<String> {
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
    pub(crate) fn ssh_said(&self) -> String {
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
    pub(crate) fn login_error(&self, status: Option<std::process::ExitStatus>) -> Error {
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
    pub(crate) fn lost(&self, doing: &str) -> Error {
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
    pub(crate) async fn request(
        &self,
        script: &str,
        main: bool,
        timeout: Duration,
    ) -> Result<RunOutput> {
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

    pub(crate) async fn socket_state(&self, path: &Path, timeout: Duration) -> Result<SocketState> {
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

    /// The turn to mend the shared master's forward of `remote`: a lock file beside the
    /// master's control socket, held until dropped. `None` for a private master (nobody else
    /// uses its forwards), and when the lock cannot be had within the connect timeout or at
    /// all: the forward is then mended without it, as before there was one.
    async fn mending_turn(&self, remote: &Path) -> Option<crate::lock::HeldLock> {
        let path = self.sockets.mending_lock()?;
        let path = path.to_string_lossy();
        match crate::lock::lock_here(&path, self.target.connect_timeout).await {
            Ok(held) => Some(held),
            Err(e) => {
                debug!(host = %self.target.destination(), remote = %remote.display(), "mending the shared forward without its lock ({path}: {e})");
                None
            }
        }
    }

    /// `ssh -O OP -L SPEC` to this session's master (`forward` or `cancel`).
    fn mux_command(&self, op: &str, spec: &OsString) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.target.command);
        cmd.arg("-o")
            .arg(format!("ControlPath={}", self.control.display()))
            .args(["-O", op, "-L"])
            .arg(spec)
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
        cmd
    }

    /// The local end of the forward to `remote` (added on first use). The inner error says why
    /// the remote socket cannot be used.
    pub(crate) async fn forward(
        &self,
        remote: &Path,
        fresh: bool,
    ) -> Result<std::io::Result<PathBuf>> {
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
        if fresh && matches!(self.sockets, Sockets::Shared { .. }) {
            // The shared master may still list this forward while its file is another's (a
            // listener gone, its file left): OpenSSH then answers a new `-O forward` of the same
            // spec as already done, and every connect is refused. Cancel it first, so that the
            // forward below binds anew (StreamLocalBindUnlink takes the stale file away). Its
            // failure (no such forward) is the usual case and says nothing.
            let cancelled = tokio::time::timeout(
                self.target.connect_timeout,
                self.mux_command("cancel", &spec).output(),
            )
            .await;
            debug!(%host, remote = %r, ?cancelled, "asked the shared master to cancel a stale forward");
        }
        let out = tokio::time::timeout(
            self.target.connect_timeout,
            self.mux_command("forward", &spec).output(),
        )
        .await;
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
