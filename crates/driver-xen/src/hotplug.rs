//! What runs in the backend domain when a device comes and goes: libxl's hotplug scripts, or,
//! for disks served by the standard `block` script, the same work done here directly ("native"
//! hotplug, see docs/design/0008-xen-hotplug.md).
//!
//! The standard `/etc/xen/scripts/block` does, for `add`: decide from `params` whether it is a
//! block device or a regular file; refuse if it is shared in a way its mode forbids (mounted in
//! Domain-0, or served to another domain by a vbd whose `physical-device` is the same device);
//! for a file, attach it to a free loop device (read-only for mode `r`) and write `node`; write
//! `physical-device` (hex `major:minor`), `physical-device-path` and `hotplug-status=connected`.
//! For `remove`: release the loop device named by `node`. It serialises all of that on the lock
//! file `/var/run/xen-hotplug/block`. The native path does the same under the same lock, so it
//! and the script (run by `xl` or by this driver) exclude each other, and either can undo what
//! the other did.
//!
//! All of it runs on the [`Host`] of the connection, through [`Dom0`]: on this machine
//! natively (file system calls, `losetup` and the scripts as child processes), on a remote
//! Domain-0 (`xen+ssh://`) as POSIX shell run by the ssh connection's agent, one round trip per
//! primitive. The lock is then held by the agent's own shell (an `flock`ed descriptor opened
//! with [`Host::run_in_session`]) until released, and the lock users of one connection take
//! turns on a local mutex first, so that a second one never blocks the agent in `flock` while
//! the first needs the agent to release it. See docs/design/0012-xen-over-ssh.md.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vdev_core::{Error, Result};
use vdev_remote::{sh_quote, Host, RunOutput};

/// The directory of the hotplug scripts' lock files.
const LOCK_DIR: &str = "/var/run/xen-hotplug";

/// The longest a hotplug script may run (libxl's own bound).
pub(crate) const SCRIPT_TIMEOUT: Duration = Duration::from_secs(40);

/// A device number as `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    fn of(rdev: u64) -> Self {
        DevNum {
            major: libc::major(rdev as libc::dev_t),
            minor: libc::minor(rdev as libc::dev_t),
        }
    }

    /// The form the block script writes to `physical-device` (`stat -c %t:%T`): hex.
    pub fn to_xenstore(self) -> String {
        format!("{:x}:{:x}", self.major, self.minor)
    }

    /// Parse a `physical-device` value (hex `major:minor`).
    pub fn from_xenstore(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once(':')?;
        Some(DevNum {
            major: u32::from_str_radix(a, 16).ok()?,
            minor: u32::from_str_radix(b, 16).ok()?,
        })
    }
}

/// The lock the hotplug scripts take (`claim_lock block`): an exclusive `flock` on
/// `/var/run/xen-hotplug/NAME`, held while the file opened is still the one at that path (the
/// releaser removes it), released by removing the file and closing it, as `locking.sh` does.
/// Released when dropped.
#[derive(Debug)]
pub(crate) enum ScriptLock {
    /// Held by this process (kept for its release on drop).
    Local(#[allow(dead_code)] LocalLock),
    /// Held by the agent's shell on the remote host.
    Remote(RemoteLock),
}

impl ScriptLock {
    /// Whether the lock is still held: a remote one is lost with the ssh connection that
    /// held it (its shell, and so its descriptor, is gone).
    pub(crate) async fn still_held(&self) -> bool {
        match self {
            ScriptLock::Local(_) => true,
            ScriptLock::Remote(r) => r.host.session_id().await == r.session,
        }
    }
}

/// [`ScriptLock`] held by this process.
#[derive(Debug)]
pub(crate) struct LocalLock {
    file: Option<File>,
    path: PathBuf,
}

impl LocalLock {
    /// Wait for the lock (blocking: call from `spawn_blocking`).
    fn acquire_blocking(dir: &Path, name: &str) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(name);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            file.lock()?;
            let held = file.metadata()?;
            match fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(LocalLock {
                        file: Some(file),
                        path,
                    })
                }
                // Removed or replaced by the previous holder: try again with the new file.
                _ => continue,
            }
        }
    }

    /// Take the lock named `name`, waiting at most [`SCRIPT_TIMEOUT`].
    async fn acquire(name: &'static str) -> Result<Self> {
        let task =
            tokio::task::spawn_blocking(move || Self::acquire_blocking(Path::new(LOCK_DIR), name));
        match tokio::time::timeout(SCRIPT_TIMEOUT, task).await {
            Err(_) => Err(Error::Timeout {
                operation: format!("taking the hotplug lock {LOCK_DIR}/{name}"),
                after: SCRIPT_TIMEOUT,
            }),
            Ok(Err(e)) => Err(Error::backend(crate::NAME, format!("hotplug lock: {e}"))),
            Ok(Ok(Err(e))) => Err(Error::backend_with(
                crate::NAME,
                format!("cannot take the hotplug lock {LOCK_DIR}/{name}"),
                e,
            )),
            Ok(Ok(Ok(l))) => Ok(l),
        }
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        // Remove while still holding it, then close: the next waiter sees the path changed.
        let _ = fs::remove_file(&self.path);
        self.file.take();
    }
}

/// A lock file held on a remote host by the agent's shell, on one of its descriptors (9 for
/// [`ScriptLock`], 8 for libxl's userdata lock). Dropping it sends the release (remove the file,
/// close the descriptor: the locking protocol libxl and the hotplug scripts share) in the
/// background, and lets the next lock user of the connection go once that is done.
#[derive(Debug)]
pub(crate) struct RemoteLock {
    host: Host,
    /// The ssh session that holds it.
    session: u64,
    path: String,
    fd: u32,
    /// What the lock is, for messages.
    what: &'static str,
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// The descriptor the agent's shell holds the remote hotplug lock on.
const LOCK_FD: u32 = 9;

impl RemoteLock {
    /// The lock `path` that the agent's shell of `session` holds on descriptor `fd`; `turn` is
    /// the connection's own queue of users of this kind of lock.
    pub(crate) fn new(
        host: Host,
        session: u64,
        path: String,
        fd: u32,
        what: &'static str,
        turn: tokio::sync::OwnedMutexGuard<()>,
    ) -> Self {
        RemoteLock {
            host,
            session,
            path,
            fd,
            what,
            turn: Some(turn),
        }
    }

    /// Whether it is still held: it goes with the ssh session that took it.
    pub(crate) async fn still_held(&self) -> bool {
        self.host.session_id().await == self.session
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        let (host, session, path, fd, what, turn) = (
            self.host.clone(),
            self.session,
            self.path.clone(),
            self.fd,
            self.what,
            self.turn.take(),
        );
        let release = async move {
            // Lost with its session: nothing is held any more (the file stays, which the
            // protocol allows: the next locker checks the inode).
            if host.session_id().await == session {
                let script = format!("rm -f -- {}; exec {fd}<&-", sh_quote(&path));
                if let Err(e) = host.run_in_session(&script, REMOTE_STEP).await {
                    tracing::warn!(%path, "releasing {what} on {}: {e}", host.name());
                }
            }
            drop(turn);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(release);
            }
            Err(_) => {
                tracing::warn!(path = %self.path, "{what} dropped outside a runtime; it is released when the ssh connection closes")
            }
        }
    }
}

/// The bound on one remote step that runs no hotplug script.
pub(crate) const REMOTE_STEP: Duration = Duration::from_secs(30);

/// `PATH` for remote commands: sshd may give a login a shorter one without the sbin folders.
pub(crate) const REMOTE_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH\n";

/// The backend domain's side of hotplug, on the connection's [`Host`]: each method is one
/// concern, done natively on this machine or as one agent round trip on a remote host.
#[derive(Debug, Clone)]
pub(crate) struct Dom0 {
    host: Host,
    /// Lock users of this connection take turns here before asking the host (remote only).
    turns: Arc<tokio::sync::Mutex<()>>,
    /// The same for libxl's userdata locks (another descriptor of the agent's shell, see
    /// [`crate::libxl`]), so that a holder of one lock never waits for a user of the other.
    pub(crate) config_turns: Arc<tokio::sync::Mutex<()>>,
}

impl Dom0 {
    pub(crate) fn new(host: Host) -> Self {
        Dom0 {
            host,
            turns: Arc::new(tokio::sync::Mutex::new(())),
            config_turns: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The host.
    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    /// The host, for messages.
    pub(crate) fn name(&self) -> String {
        self.host.name()
    }

    /// Run `script` on the remote host with the full `PATH`.
    async fn sh(&self, script: &str, timeout: Duration) -> Result<RunOutput> {
        self.host
            .run(&format!("{REMOTE_PATH}{script}"), timeout)
            .await
    }

    /// Run `script`; its stdout, or an error naming `what`, its stderr and `hint`.
    async fn sh_ok(&self, script: &str, what: &str, hint: &str) -> Result<String> {
        let out = self.sh(script, SCRIPT_TIMEOUT).await?;
        if let Some(program) = out.missing_program() {
            let package = match program.as_str() {
                "losetup" | "flock" => "util-linux",
                "stat" | "timeout" | "realpath" | "head" => "coreutils",
                _ => "the package that provides it",
            };
            return Err(Error::Remote {
                host: self.host.name(),
                kind: vdev_core::RemoteErrorKind::MissingProgram,
                message: format!(
                    "{what} needs `{program}`, which is not installed there: install {package} on that Domain-0"
                ),
            });
        }
        if !out.success() {
            return Err(Error::backend(
                crate::NAME,
                format!(
                    "{what} on {} failed (exit status {}): {}; {hint}",
                    self.host.name(),
                    out.status,
                    out.stderr.trim()
                ),
            ));
        }
        Ok(out.text())
    }

    /// Whether the host is Domain-0 (`/proc/xen/capabilities` says `control_d`).
    pub(crate) async fn in_dom0(&self) -> Result<bool> {
        if self.host.is_local() {
            return Ok(crate::config::in_dom0());
        }
        // Builtins only: no process is started.
        let out = self
            .sh(
                "c=; read -r c </proc/xen/capabilities 2>/dev/null; case $c in *control_d*) echo yes;; *) echo no;; esac",
                REMOTE_STEP,
            )
            .await?;
        Ok(out.text() == "yes")
    }

    /// Whether `path` is a block device on the host.
    pub(crate) async fn is_block_device(&self, path: &str) -> Result<bool> {
        if self.host.is_local() {
            return Ok(fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device()));
        }
        let out = self
            .sh(
                &format!(
                    "if [ -b {} ]; then echo yes; else echo no; fi",
                    sh_quote(path)
                ),
                REMOTE_STEP,
            )
            .await?;
        Ok(out.text() == "yes")
    }

    /// Take the lock file `path` on the remote host in the agent's own shell, on descriptor
    /// `fd`, by the protocol libxl and the hotplug scripts share (open, `flock`, keep it only if
    /// the file locked is still the one at the path: the previous holder removes it to
    /// release). `prepare` runs first, `then` once it is held (its output is the answer's).
    ///
    /// Each try is `flock -n`, one round trip that never blocks the agent: between tries the
    /// connection's other commands go on, and the tries go on from here (every 20-250 ms)
    /// until `wait` has passed. `None` when it has, with the lock still held by someone else.
    /// Otherwise the status of the answer is 0 (held, `then` succeeded), 3 (held, `then`
    /// failed) or anything else (not held: an error, said on stderr).
    pub(crate) async fn lock_remote(
        &self,
        path: &str,
        fd: u32,
        prepare: &str,
        then: &str,
        wait: Duration,
    ) -> Result<Option<RunOutput>> {
        // The last command's status is the answer. Never `exit`: this is the agent's shell.
        let script = format!(
            r#"{REMOTE_PATH}__vdev_f={p}; __vdev_r=1
if {prepare}; then
  while :; do
    exec {fd}<>"$__vdev_f" || break
    if ! flock -n {fd}; then exec {fd}<&-; __vdev_r=2; break; fi
    __vdev_a=$(stat -L -c %d:%i -- "$__vdev_f" /proc/$$/fd/{fd} 2>/dev/null)
    __vdev_1=${{__vdev_a%%[!0-9:]*}}; __vdev_2=${{__vdev_a##*[!0-9:]}}
    if [ -n "$__vdev_1" ] && [ "$__vdev_1" = "$__vdev_2" ] && [ "$__vdev_a" != "$__vdev_1" ]; then __vdev_r=0; break; fi
    exec {fd}<&-
  done
fi
case $__vdev_r in 0) {{ {then}; }} || (exit 3) ;; 2) (exit 2) ;; *) false ;; esac"#,
            p = sh_quote(path),
        );
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(20);
        loop {
            let out = self.host.run_in_session(&script, REMOTE_STEP).await?;
            if out.status != 2 {
                return Ok(Some(out));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// Take the hotplug lock `name` on the host, waiting at most [`SCRIPT_TIMEOUT`].
    pub(crate) async fn lock(&self, name: &'static str) -> Result<ScriptLock> {
        if self.host.is_local() {
            return LocalLock::acquire(name).await.map(ScriptLock::Local);
        }
        let turn = tokio::time::timeout(SCRIPT_TIMEOUT, self.turns.clone().lock_owned())
            .await
            .map_err(|_| Error::Timeout {
                operation: format!("waiting for this connection's other user of the hotplug lock {LOCK_DIR}/{name}"),
                after: SCRIPT_TIMEOUT,
            })?;
        let path = format!("{LOCK_DIR}/{name}");
        let prepare = format!("mkdir -p {}", sh_quote(LOCK_DIR));
        let Some(out) = self
            .lock_remote(&path, LOCK_FD, &prepare, "true", SCRIPT_TIMEOUT)
            .await?
        else {
            return Err(Error::Timeout {
                operation: format!("taking the hotplug lock {path} on {}", self.host.name()),
                after: SCRIPT_TIMEOUT,
            });
        };
        let session = self.host.session_id().await;
        match out.status {
            0 => Ok(ScriptLock::Remote(RemoteLock::new(
                self.host.clone(),
                session,
                path,
                LOCK_FD,
                "the hotplug lock",
                turn,
            ))),
            s => Err(Error::backend(
                crate::NAME,
                format!(
                    "cannot take the hotplug lock {path} on {} (status {s}): {}",
                    self.host.name(),
                    out.stderr.trim()
                ),
            )),
        }
    }

    /// Look at `params` in the backend domain. Errors name the attribute.
    pub(crate) async fn inspect(&self, params: &str) -> Result<Backing> {
        if self.host.is_local() {
            return inspect(params);
        }
        let script = format!(
            r#"p={}
c=$(realpath -e -- "$p" 2>&1) || {{ printf 'E%s
' "$c"; exit 0; }}
t=$(stat -L -c '%F|%t|%T|%d|%i|%a' -- "$c" 2>&1) || {{ printf 'E%s
' "$t"; exit 0; }}
printf 'K%s
%s
' "$t" "$c""#,
            sh_quote(params)
        );
        let out = self.sh(&script, REMOTE_STEP).await?;
        parse_inspect(params, &out.text(), &self.host.name())
    }

    /// The loop devices currently backed by the file (`dev`, `ino`), by their numbers.
    pub(crate) async fn loops_backed_by(&self, dev: u64, ino: u64) -> Result<Vec<DevNum>> {
        if self.host.is_local() {
            return Ok(loops_backed_by(dev, ino));
        }
        let script = format!(
            r#"for d in /sys/block/loop*; do
  [ -r "$d/loop/backing_file" ] || continue
  IFS= read -r b <"$d/loop/backing_file" || continue
  [ "$(stat -L -c %d:%i -- "$b" 2>/dev/null)" = {dev}:{ino} ] || continue
  IFS= read -r n <"$d/dev" && printf '%s
' "$n"
done; true"#
        );
        let out = self
            .sh_ok(
                &script,
                "listing loop devices",
                "check /sys/block on the host",
            )
            .await?;
        Ok(out.lines().filter_map(parse_decimal_devnum).collect())
    }

    /// The first block device among `nums` that Domain-0 has mounted in a way that conflicts
    /// with `mode` (any mount for `w`, a read-write mount for `r`), as the block script checks.
    pub(crate) async fn mounted_conflict(
        &self,
        nums: &[DevNum],
        mode: &str,
    ) -> Result<Option<String>> {
        if self.host.is_local() {
            return Ok(mounted_conflict(nums, mode));
        }
        let script = r#"while read -r s m f o r; do
  case $s in /*) ;; *) continue ;; esac
  [ -b "$s" ] || continue
  printf '%s %s %s %s
' "$(stat -L -c %t:%T -- "$s")" "$s" "$m" "$o"
done </proc/mounts; true"#;
        let out = self
            .sh_ok(
                script,
                "reading the mounts",
                "check /proc/mounts on the host",
            )
            .await?;
        for line in out.lines() {
            let mut f = line.split_whitespace();
            let (Some(num), Some(src), Some(mnt), Some(opts)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            if mode != "w" && opts.split(',').any(|o| o == "ro") {
                continue;
            }
            if DevNum::from_xenstore(num).is_some_and(|n| nums.contains(&n)) {
                return Ok(Some(format!("{src} mounted on {mnt}")));
            }
        }
        Ok(None)
    }

    /// Attach `path` to a free loop device (read-only for mode `r`) with util-linux `losetup`,
    /// which finds the free device and retries races with other users itself. The device's
    /// path and number (one round trip on a remote host).
    pub(crate) async fn loop_attach(&self, path: &str, mode: &str) -> Result<(String, DevNum)> {
        const HINT: &str =
            "Domain-0 needs the loop module and a free loop device (see `losetup -a`)";
        let ro = if mode == "r" { " --read-only" } else { "" };
        let (dev, num) = if self.host.is_local() {
            let dev = loop_attach(path, mode).await?;
            match devnum_of(&dev) {
                Ok(n) => (dev, n),
                Err(e) => {
                    let _ = loop_detach(&dev).await;
                    return Err(e);
                }
            }
        } else {
            // losetup, then the new device's number; release it again if that fails.
            let script = format!(
                r#"d=$(losetup --find --show{ro} -- {}) || exit 1
n=$(stat -L -c %t:%T -- "$d") || {{ losetup -d "$d"; exit 1; }}
printf '%s
%s
' "$d" "$n""#,
                sh_quote(path)
            );
            let out = self.sh_ok(&script, "losetup --find --show", HINT).await?;
            let mut l = out.lines();
            let dev = l.next().unwrap_or_default().to_owned();
            let num = l.next().and_then(DevNum::from_xenstore);
            match num {
                Some(n) if dev.starts_with("/dev/") => (dev, n),
                _ => {
                    return Err(Error::backend(
                        crate::NAME,
                        format!(
                            "losetup on {} printed '{out}' instead of a loop device",
                            self.host.name()
                        ),
                    ))
                }
            }
        };
        Ok((dev, num))
    }

    /// Release a loop device (`losetup -d`).
    pub(crate) async fn loop_detach(&self, node: &str) -> Result<()> {
        if self.host.is_local() {
            return loop_detach(node).await;
        }
        self.sh_ok(
            &format!("losetup -d {}", sh_quote(node)),
            "losetup -d",
            "the loop device stays attached; release it with `losetup -d` once nothing uses it",
        )
        .await
        .map(|_| ())
    }

    /// Run a hotplug script as libxl does: `SCRIPT ACTION` with libxl's environment plus
    /// `extra`, bounded by [`SCRIPT_TIMEOUT`]. Its outcome, whatever its exit status (the
    /// caller reads the script's `hotplug-error`).
    pub(crate) async fn run_script(
        &self,
        script: &str,
        action: &str,
        xenbus_type: &str,
        be: &str,
        extra: &[(&str, String)],
    ) -> Result<ScriptOutcome> {
        if self.host.is_local() {
            let out = run_script(script, action, xenbus_type, be, extra).await?;
            return Ok(ScriptOutcome {
                success: out.status.success(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        let mut env = vec![
            ("SCRIPTNAME", script.to_owned()),
            ("XENBUS_TYPE", xenbus_type.to_owned()),
            ("XENBUS_PATH", be.to_owned()),
            ("XENBUS_BASE_PATH", "backend".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let mut cmd = String::new();
        for (k, v) in &env {
            debug_assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            cmd.push_str(&format!(
                "{k}={}; export {k}
",
                sh_quote(v)
            ));
        }
        // The bound is kept on the host (`timeout`), so the ssh connection survives a script
        // that runs too long; 124 is timeout's status for it.
        let secs = SCRIPT_TIMEOUT.as_secs();
        cmd.push_str(&format!(
            "timeout -k 5 {secs} {} {}",
            sh_quote(script),
            sh_quote(action)
        ));
        let out = self
            .sh(&cmd, SCRIPT_TIMEOUT + Duration::from_secs(15))
            .await?;
        if out.status == 124 {
            return Err(Error::Timeout {
                operation: format!(
                    "hotplug script {script} {action} for {be} on {}",
                    self.host.name()
                ),
                after: SCRIPT_TIMEOUT,
            });
        }
        Ok(ScriptOutcome {
            success: out.success(),
            status: format!("exit status: {}", out.status),
            stderr: out.stderr,
        })
    }
}

/// How a hotplug script ended.
#[derive(Debug)]
pub(crate) struct ScriptOutcome {
    pub success: bool,
    /// Its exit status, in words.
    pub status: String,
    pub stderr: String,
}

/// `major:minor` in decimal, as `/sys/block/*/dev` has it.
fn parse_decimal_devnum(s: &str) -> Option<DevNum> {
    let (a, b) = s.trim().split_once(':')?;
    Some(DevNum {
        major: a.parse().ok()?,
        minor: b.parse().ok()?,
    })
}

/// Read the remote inspect's answer: `E<error>`, or `K<%F|%t|%T|%d|%i|%a>` and the canonical
/// path.
fn parse_inspect(params: &str, out: &str, host: &str) -> Result<Backing> {
    let mut lines = out.splitn(2, '\n');
    let first = lines.next().unwrap_or_default();
    if let Some(e) = first.strip_prefix('E') {
        return Err(uname_error(format!(
            "'{params}' cannot be opened in the backend domain on {host} ({e}); give an existing file or block device"
        )));
    }
    let path = lines.next().unwrap_or_default().to_owned();
    let bad = || {
        Error::backend(
            crate::NAME,
            format!("unexpected answer from {host} about {params}: {out:?}"),
        )
    };
    let f: Vec<&str> = first
        .strip_prefix('K')
        .ok_or_else(bad)?
        .split('|')
        .collect();
    let [kind, major, minor, dev, ino, mode] = f[..] else {
        return Err(bad());
    };
    let hex = |s: &str| u32::from_str_radix(s, 16).map_err(|_| bad());
    match kind {
        "block special file" => Ok(Backing::Device {
            path,
            num: DevNum {
                major: hex(major)?,
                minor: hex(minor)?,
            },
        }),
        "regular file" | "regular empty file" => Ok(Backing::File {
            path,
            dev: dev.parse().map_err(|_| bad())?,
            ino: ino.parse().map_err(|_| bad())?,
            writable: u32::from_str_radix(mode, 8).map_err(|_| bad())? & 0o222 != 0,
        }),
        _ => Err(uname_error(format!(
            "'{path}' is neither a regular file nor a block device on {host}; give file:PATH of an image or phy:PATH of a block device"
        ))),
    }
}

/// What `params` names, seen from the backend domain.
#[derive(Debug, Clone)]
pub(crate) enum Backing {
    /// A block device (canonical path, number).
    Device { path: String, num: DevNum },
    /// A regular file (canonical path, the device it lives on, inode, any write bit set).
    File {
        path: String,
        dev: u64,
        ino: u64,
        writable: bool,
    },
}

fn uname_error(reason: String) -> Error {
    Error::InvalidAttribute {
        name: "uname".into(),
        reason,
    }
}

/// Look at `params` in this (the backend) domain. Errors name the attribute.
fn inspect(params: &str) -> Result<Backing> {
    let canon = fs::canonicalize(params).map_err(|e| {
        uname_error(format!(
            "'{params}' cannot be opened in the backend domain ({e}); give an existing file or block device"
        ))
    })?;
    let md =
        fs::metadata(&canon).map_err(|e| uname_error(format!("'{}': {e}", canon.display())))?;
    let path = canon.to_string_lossy().into_owned();
    if md.file_type().is_block_device() {
        Ok(Backing::Device {
            path,
            num: DevNum::of(md.rdev()),
        })
    } else if md.is_file() {
        Ok(Backing::File {
            path,
            dev: md.dev(),
            ino: md.ino(),
            writable: md.permissions().mode() & 0o222 != 0,
        })
    } else {
        Err(uname_error(format!(
            "'{path}' is neither a regular file nor a block device; give file:PATH of an image or phy:PATH of a block device"
        )))
    }
}

/// The loop devices currently backed by the file (`dev`, `ino`), by their numbers.
fn loops_backed_by(dev: u64, ino: u64) -> Vec<DevNum> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/sys/block") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        let base = Path::new("/sys/block").join(name);
        let Ok(backing) = fs::read_to_string(base.join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let same = fs::metadata(backing)
            .map(|m| m.dev() == dev && m.ino() == ino)
            .unwrap_or(false);
        if !same {
            continue;
        }
        if let Some(num) = fs::read_to_string(base.join("dev")).ok().and_then(|s| {
            let (a, b) = s.trim().split_once(':')?;
            Some(DevNum {
                major: a.parse().ok()?,
                minor: b.parse().ok()?,
            })
        }) {
            out.push(num);
        }
    }
    out
}

/// The first block device among `nums` that Domain-0 has mounted in a way that conflicts with
/// `mode` (any mount for `w`, a read-write mount for `r`), as the block script checks.
fn mounted_conflict(nums: &[DevNum], mode: &str) -> Option<String> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(src), Some(mnt), Some(_fs), Some(opts)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if mode != "w" && opts.split(',').any(|o| o == "ro") {
            continue;
        }
        let Ok(md) = fs::metadata(src) else { continue };
        if md.file_type().is_block_device() && nums.contains(&DevNum::of(md.rdev())) {
            return Some(format!("{src} mounted on {mnt}"));
        }
    }
    None
}

/// Attach `path` to a free loop device (read-only for mode `r`) with util-linux `losetup`, which
/// finds the free device and retries races with other users itself. The device's path.
async fn loop_attach(path: &str, mode: &str) -> Result<String> {
    let mut cmd = tokio::process::Command::new("losetup");
    cmd.args(["--find", "--show"]);
    if mode == "r" {
        cmd.arg("--read-only");
    }
    cmd.arg(path);
    let out = run(
        cmd,
        "losetup --find --show",
        "Domain-0 needs the loop module and a free loop device (see `losetup -a`)",
    )
    .await?;
    let dev = String::from_utf8_lossy(&out).trim().to_owned();
    if !dev.starts_with("/dev/") {
        return Err(Error::backend(
            crate::NAME,
            format!("losetup printed '{dev}' instead of a loop device"),
        ));
    }
    Ok(dev)
}

/// Release a loop device (`losetup -d`).
async fn loop_detach(node: &str) -> Result<()> {
    let mut cmd = tokio::process::Command::new("losetup");
    cmd.arg("-d").arg(node);
    run(
        cmd,
        "losetup -d",
        "the loop device stays attached; release it with `losetup -d` once nothing uses it",
    )
    .await
    .map(|_| ())
}

/// The number of a block device node.
fn devnum_of(path: &str) -> Result<DevNum> {
    let md = fs::metadata(path)
        .map_err(|e| Error::backend_with(crate::NAME, format!("cannot stat {path}"), e))?;
    Ok(DevNum::of(md.rdev()))
}

/// Run `cmd` to completion within [`SCRIPT_TIMEOUT`] (killed after it); its output, whatever
/// its exit status.
async fn output(mut cmd: tokio::process::Command, what: &str) -> Result<std::process::Output> {
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| Error::Timeout {
            operation: what.to_owned(),
            after: SCRIPT_TIMEOUT,
        })?
        .map_err(|e| Error::backend_with(crate::NAME, format!("cannot run {what}"), e))
}

/// Run `cmd`; its stdout, or an error with its stderr and `hint` when it fails.
async fn run(cmd: tokio::process::Command, what: &str, hint: &str) -> Result<Vec<u8>> {
    let out = output(cmd, what).await?;
    if !out.status.success() {
        return Err(Error::backend(
            crate::NAME,
            format!(
                "{what} failed ({}): {}; {hint}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(out.stdout)
}

/// Run a hotplug script as libxl does: `SCRIPT ACTION` with libxl's environment plus `extra`.
/// Its output, whatever its exit status (the caller reads the script's `hotplug-error`).
async fn run_script(
    script: &str,
    action: &str,
    xenbus_type: &str,
    be: &str,
    extra: &[(&str, String)],
) -> Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new(script);
    cmd.arg(action)
        .env("SCRIPTNAME", script)
        .env("XENBUS_TYPE", xenbus_type)
        .env("XENBUS_PATH", be)
        .env("XENBUS_BASE_PATH", "backend")
        .envs(extra.iter().map(|(k, v)| (k, v)));
    output(cmd, &format!("hotplug script {script} {action} for {be}")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn physical_device_is_hex_like_the_block_script() {
        let n = DevNum {
            major: 254,
            minor: 16,
        };
        assert_eq!(n.to_xenstore(), "fe:10");
        assert_eq!(DevNum::from_xenstore("fe:10"), Some(n));
        assert_eq!(DevNum::from_xenstore("7:0").map(|d| d.major), Some(7));
        assert_eq!(DevNum::from_xenstore("nonsense"), None);
    }

    #[test]
    fn the_lock_excludes_and_is_removed_on_release() {
        let dir = std::env::temp_dir().join(format!("vdev-hotplug-lock-{}", std::process::id()));
        let held = LocalLock::acquire_blocking(&dir, "block").unwrap();
        let path = held.path.clone();
        assert!(path.exists());
        // Another open file description of the lock file cannot take it while it is held.
        let probe = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        assert!(
            matches!(probe.try_lock(), Err(fs::TryLockError::WouldBlock)),
            "a second holder could take the lock while it was held"
        );
        drop(probe);
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        let waiter = std::thread::spawn(move || {
            let l = LocalLock::acquire_blocking(&d, "block").unwrap();
            tx.send(()).unwrap();
            drop(l);
        });
        drop(held);
        // A bound against a hang, not a speed requirement.
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the waiter got the lock after release");
        waiter.join().unwrap();
        assert!(!path.exists(), "the lock file is removed on release");
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn inspect_tells_files_from_devices_and_names_uname() {
        let f = std::env::temp_dir().join(format!("vdev-hotplug-{}.img", std::process::id()));
        fs::write(&f, b"x").unwrap();
        match inspect(f.to_str().unwrap()).unwrap() {
            Backing::File { writable, .. } => assert!(writable),
            other => panic!("{other:?}"),
        }
        fs::remove_file(&f).unwrap();
        let e = inspect(f.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidAttribute { name, .. } if name == "uname"),
            "{e}"
        );
        if Path::new("/dev/null").exists() {
            assert!(inspect("/dev/null").is_err(), "a char device is refused");
        }
    }

    #[test]
    fn the_remote_inspect_answer_is_read_like_the_local_one() {
        match parse_inspect("/x", "Kregular file|0|0|2049|1234|644\n/root/x.img", "h").unwrap() {
            Backing::File {
                path,
                dev,
                ino,
                writable,
            } => {
                assert_eq!(
                    (path.as_str(), dev, ino, writable),
                    ("/root/x.img", 2049, 1234, true)
                );
            }
            other => panic!("{other:?}"),
        }
        match parse_inspect("/x", "Kregular empty file|0|0|1|2|444\n/x", "h").unwrap() {
            Backing::File { writable, .. } => assert!(!writable),
            other => panic!("{other:?}"),
        }
        match parse_inspect("/d", "Kblock special file|fe|10|5|6|660\n/dev/dm-0", "h").unwrap() {
            Backing::Device { path, num } => {
                assert_eq!(path, "/dev/dm-0");
                assert_eq!(
                    num,
                    DevNum {
                        major: 254,
                        minor: 16
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "Erealpath: /x: No such file or directory",
            "Kcharacter special file|1|3|5|6|666\n/dev/null",
        ] {
            let e = parse_inspect("/x", bad, "h").unwrap_err();
            assert!(
                matches!(&e, Error::InvalidAttribute { name, .. } if name == "uname"),
                "{e}"
            );
        }
        assert!(parse_inspect("/x", "garbage", "h").is_err());
    }
}
