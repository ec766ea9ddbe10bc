//! Lock files on a [`Host`], by the `flock` protocol that libxl's userdata lock and Xen's
//! hotplug scripts (`locking.sh`) share: open or create the file, `flock` it exclusively, keep
//! it only if the file locked is still the one at the path (a holder releases by removing the
//! file, then closing it), else try again with the new file.
//!
//! On [`Host::Local`] the lock is held by this process: tried without blocking every 10 ms
//! until the wait is over. On a remote host it is held by the agent's own shell on a
//! descriptor of its own (opened with [`Host::run_in_session`]), so that it lasts between
//! requests as long as the holder needs it, and is gone with the ssh session. Each remote try
//! is `flock -n`, one round trip that never blocks the agent, repeated from this side every
//! 20-250 ms: a `flock -w` in the agent would block every other command of the connection.
//! The users of one [`HostLock`] take turns on a local mutex before asking the agent, since
//! the agent runs one request at a time: a second user waiting there would keep the first
//! from ever sending its release. See docs/design/0012-xen-over-ssh.md.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::files::{read_answer, read_local, read_script};
use crate::host::{sh_quote, Host, RunOutput};

/// The bound on one remote request of the lock protocol (a try, or the release).
const REMOTE_STEP: Duration = Duration::from_secs(30);

/// `PATH` for the remote commands: sshd may give a login a shorter one.
const REMOTE_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH\n";

/// How often a local lock held by someone else is tried again.
const LOCAL_PAUSE: Duration = Duration::from_millis(10);

/// One kind of lock file on a host (for instance Xen's hotplug lock, or libxl's userdata
/// locks), shared by the users of one connection. Cheap to clone; clones share the turns.
#[derive(Debug, Clone)]
pub struct HostLock {
    host: Host,
    /// The descriptor of the agent's shell that holds it on a remote host.
    fd: u32,
    /// What it is, for messages.
    what: &'static str,
    /// The users of this lock on this connection take turns here (remote only).
    turns: Arc<tokio::sync::Mutex<()>>,
    turn_bound: Duration,
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Someone else held it for the whole wait.
    Busy,
    /// This connection's other users of the lock kept their turns for the whole turn bound
    /// (remote hosts only).
    Turns(Duration),
    /// It could not be taken (the file cannot be opened, locked or checked): why.
    Failed(String),
    /// The host could not be asked.
    Host(vdev_core::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy => write!(f, "held by someone else for the whole wait"),
            LockError::Turns(d) => write!(
                f,
                "this connection's other users of the lock kept it for {d:?}"
            ),
            LockError::Failed(why) => write!(f, "{why}"),
            LockError::Host(e) => write!(f, "{e}"),
        }
    }
}

/// A lock taken with [`HostLock::acquire`]; released when dropped (the file removed, then
/// closed; on a remote host in the background).
#[derive(Debug)]
pub struct HeldLock(Held);

#[derive(Debug)]
enum Held {
    Local {
        file: Option<std::fs::File>,
        path: String,
    },
    Remote {
        host: Host,
        /// The ssh session whose shell holds it.
        session: u64,
        path: String,
        fd: u32,
        what: &'static str,
        turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    },
}

impl HostLock {
    /// A kind of lock on `host`, held on descriptor `fd` of a remote agent's shell (each kind
    /// needs its own), called `what` in messages. `turn_bound`: how long one user waits at
    /// most for this connection's other users of the lock (remote hosts only).
    pub fn new(host: Host, fd: u32, what: &'static str, turn_bound: Duration) -> Self {
        HostLock {
            host,
            fd,
            what,
            turns: Arc::new(tokio::sync::Mutex::new(())),
            turn_bound,
        }
    }

    /// Take the lock file `path` (its folder made first when `make_dir`), waiting at most
    /// `wait` for another holder.
    pub async fn acquire(
        &self,
        path: &str,
        make_dir: bool,
        wait: Duration,
    ) -> Result<HeldLock, LockError> {
        match &self.host {
            // Held by this process: no agent, so no turns to take.
            Host::Local => Ok(HeldLock(lock_local(path, make_dir, wait).await?)),
            Host::Ssh(_) => Ok(self.acquire_remote(path, make_dir, wait, None).await?.0),
        }
    }

    /// Take the lock file `path` as [`acquire`](Self::acquire) does, then read the file
    /// `file` (on a remote host in the same round trip): its bytes, or `None` when it does not
    /// exist. The lock is held whether the read succeeded or not.
    pub async fn acquire_then_read(
        &self,
        path: &str,
        wait: Duration,
        file: &str,
    ) -> Result<(HeldLock, std::io::Result<Option<Vec<u8>>>), LockError> {
        match &self.host {
            Host::Local => {
                let held = HeldLock(lock_local(path, false, wait).await?);
                Ok((held, read_local(file)))
            }
            Host::Ssh(_) => {
                let (held, out) = self
                    .acquire_remote(path, false, wait, Some(&read_script(file)))
                    .await?;
                let out = out.expect("a script was given");
                Ok((held, read_answer(&out, &self.host)))
            }
        }
    }

    async fn acquire_remote(
        &self,
        path: &str,
        make_dir: bool,
        wait: Duration,
        then: Option<&str>,
    ) -> Result<(HeldLock, Option<RunOutput>), LockError> {
        let turn = tokio::time::timeout(self.turn_bound, self.turns.clone().lock_owned())
            .await
            .map_err(|_| LockError::Turns(self.turn_bound))?;
        let prepare = match Path::new(path).parent() {
            Some(dir) if make_dir => format!("mkdir -p {}", sh_quote(&dir.to_string_lossy())),
            _ => "true".to_owned(),
        };
        let fd = self.fd;
        // The last command's status is the answer: 0 held and `then` succeeded, 3 held and
        // `then` failed, 2 held by someone else, anything else an error (on stderr). Never
        // `exit`: this is the agent's shell.
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
            then = then.unwrap_or("true"),
        );
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(20);
        let out = loop {
            let out = self
                .host
                .run_in_session(&script, REMOTE_STEP)
                .await
                .map_err(LockError::Host)?;
            if out.status != 2 {
                break out;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(LockError::Busy);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        };
        if out.status != 0 && out.status != 3 {
            return Err(LockError::Failed(format!(
                "status {} on {}: {}",
                out.status,
                self.host.name(),
                out.stderr.trim()
            )));
        }
        let held = HeldLock(Held::Remote {
            host: self.host.clone(),
            session: self.host.session_id().await,
            path: path.to_owned(),
            fd,
            what: self.what,
            turn: Some(turn),
        });
        Ok((held, then.map(|_| out)))
    }
}

/// Take the lock file `path` on this machine (its folder exists), waiting at most `wait`: for
/// this crate's own turns between processes, such as mending a shared ssh forward.
pub(crate) async fn lock_here(path: &str, wait: Duration) -> Result<HeldLock, LockError> {
    Ok(HeldLock(lock_local(path, false, wait).await?))
}

/// Take the lock at `path` on this machine, polled without blocking so that the wait is
/// bounded.
async fn lock_local(path: &str, make_dir: bool, wait: Duration) -> Result<Held, LockError> {
    use std::os::unix::fs::MetadataExt;
    let failed =
        |what: &str, e: std::io::Error| LockError::Failed(format!("cannot {what} {path}: {e}"));
    if make_dir {
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed("make the folder of", e))?;
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| failed("open", e))?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LockError::Busy);
                    }
                    tokio::time::sleep(LOCAL_PAUSE).await;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(failed("lock", e)),
            }
        }
        let held = file.metadata().map_err(|e| failed("stat", e))?;
        match std::fs::metadata(path) {
            Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                return Ok(Held::Local {
                    file: Some(file),
                    path: path.to_owned(),
                })
            }
            // Released (removed) by the previous holder meanwhile: lock the new file.
            _ => continue,
        }
    }
}

impl HeldLock {
    /// What and where, for messages.
    fn describe(&self) -> String {
        match &self.0 {
            Held::Local { path, .. } => path.clone(),
            Held::Remote { what, path, .. } => format!("{what} {path}"),
        }
    }

    /// Whether it is still held: a remote one is lost with the ssh session that took it (its
    /// shell, and so its descriptor, is gone).
    pub async fn still_held(&self) -> bool {
        match &self.0 {
            Held::Local { .. } => true,
            Held::Remote { host, session, .. } => host.session_id().await == *session,
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        match &mut self.0 {
            Held::Local { file, path } => {
                // Removed while still held, then closed: the next waiter sees the path changed.
                let _ = std::fs::remove_file(&*path);
                file.take();
            }
            Held::Remote {
                host,
                session,
                path,
                fd,
                what,
                turn,
            } => {
                let (host, session, path, fd, what, turn) = (
                    host.clone(),
                    *session,
                    path.clone(),
                    *fd,
                    *what,
                    turn.take(),
                );
                let release = async move {
                    // Lost with its session: nothing is held any more (the file stays, which
                    // the protocol allows: the next locker checks the inode).
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
                        tracing::warn!("{} dropped outside a runtime; it is released when the ssh connection closes", self.describe())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_lock_excludes_times_out_and_goes_with_its_file() {
        let dir = std::env::temp_dir().join(format!("vdev-lock-{}", std::process::id()));
        let path = dir.join("sub/block");
        let path = path.to_str().unwrap();
        let lock = HostLock::new(Host::Local, 9, "a test lock", Duration::from_secs(5));
        let held = lock
            .acquire(path, true, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(Path::new(path).exists());
        // Another open file description of the lock file cannot take it while it is held.
        let probe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        assert!(matches!(
            probe.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(probe);
        let e = lock
            .acquire(path, true, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(e, LockError::Busy), "{e}");
        let waiter = {
            let (lock, path) = (lock.clone(), path.to_owned());
            tokio::spawn(async move {
                lock.acquire(&path, true, Duration::from_secs(60))
                    .await
                    .map(|_| ())
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(held.still_held().await);
        drop(held);
        waiter
            .await
            .unwrap()
            .expect("the waiter got the lock after release");
        assert!(
            !Path::new(path).exists(),
            "the lock file is removed on release"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
