//! Where an ssh connection keeps its files on this machine: a private folder per session, or
//! the user's shared folder for `persist=` connections (their control sockets, forwards and
//! the lock for mending a forward).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use crate::lock::{lock_here, HeldLock};
use crate::target::fnv;

/// A private folder (mode 0700) for the control socket and the forwards, removed with the
/// session. In `/tmp` when the temporary folder's path is long: unix socket paths are limited
/// to 107 bytes.
pub(crate) struct SocketDir(PathBuf);

impl SocketDir {
    pub(crate) fn new() -> std::io::Result<SocketDir> {
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

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The files a shared (`persist=`) ssh connection keeps on this machine: see
/// [`Host::shared_files`](crate::Host::shared_files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFiles {
    /// The connection's control socket.
    pub control: PathBuf,
    /// The local end of its forward to the remote socket asked about.
    pub forward: PathBuf,
}

/// Where a session's sockets are: its own private folder, or (with `persist=`) the user's
/// shared folder, whose control socket and forwards outlive the process.
pub(crate) enum Sockets {
    Private(SocketDir),
    Shared { dir: PathBuf, key: String },
}

impl Sockets {
    pub(crate) fn control(&self) -> PathBuf {
        match self {
            Sockets::Private(d) => d.path().join("c"),
            Sockets::Shared { dir, key } => shared_file(dir, key, CONTROL),
        }
    }

    pub(crate) fn forward(&self, n: u32, remote: &Path) -> PathBuf {
        match self {
            Sockets::Private(d) => d.path().join(format!("f{n}")),
            Sockets::Shared { dir, key } => shared_file(
                dir,
                key,
                &format!(
                    "{FORWARD}{:016x}",
                    fnv(remote.as_os_str().as_encoded_bytes())
                ),
            ),
        }
    }

    /// The lock file for mending the shared master's forwards; none for a private master
    /// (nobody else uses its forwards).
    pub(crate) fn mending_lock(&self) -> Option<PathBuf> {
        match self {
            Sockets::Private(_) => None,
            Sockets::Shared { dir, key } => Some(shared_file(dir, key, LOCK)),
        }
    }

    /// Before a shared connection logs in: removes what shared masters now gone left in the
    /// shared folder (every master leaves its forwards' files behind, a killed one its control
    /// socket too), so that the folder holds no more than the live masters' files and a new
    /// master never meets an earlier one's forward. A master is gone when its control socket is
    /// missing or refuses a connection; any other answer counts as alive, and files this crate
    /// did not name are left alone. Each master's files are removed under its lock
    /// ([`Sockets::mending_lock`]): another master's lock is only tried (taken now or its
    /// files left for a later sweep); this connection's own is waited for up to `wait` and,
    /// when its master is gone, returned held, so that the caller's login, which starts the new
    /// master, takes its turn with anyone else starting or mending the same one. `None` for a
    /// private folder, when this connection's master is alive, and when its lock could not be
    /// had (the login then goes on as before there was one).
    pub(crate) async fn clear_gone_masters(&self, wait: Duration) -> Option<HeldLock> {
        let Sockets::Shared { dir, key: own } = self else {
            return None;
        };
        // Every master named in the folder: its control socket and forwards' files as found.
        let mut masters: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        masters.entry(own.clone()).or_default();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some((key, what)) = name.to_str().and_then(|n| n.split_once('.')) else {
                continue;
            };
            let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
            let forward = what.strip_prefix(FORWARD).is_some_and(hex16);
            if hex16(key) && (what == CONTROL || what == LOCK || forward) {
                let files = masters.entry(key.to_owned()).or_default();
                if what != LOCK {
                    files.push(entry.path());
                }
            }
        }
        let mut own_turn = None;
        for (key, files) in masters {
            let control = shared_file(dir, &key, CONTROL);
            if !gone(&control).await {
                continue;
            }
            let lock = shared_file(dir, &key, LOCK);
            let limit = if &key == own { wait } else { Duration::ZERO };
            let Ok(turn) = lock_here(&lock.to_string_lossy(), limit).await else {
                continue;
            };
            // Checked again in its turn: a master started meanwhile is left alone.
            if !gone(&control).await {
                continue;
            }
            let removed = files
                .iter()
                .filter(|f| std::fs::remove_file(f).is_ok())
                .count();
            debug!(master = %key, removed, "the files of a shared ssh master that is gone");
            if &key == own {
                own_turn = Some(turn);
            }
        }
        own_turn
    }
}

/// A shared master's files in the shared folder are `KEY.WHAT` (KEY: 16 hex digits of its
/// destination and options): its control socket, its lock, and a forward per remote socket
/// (`KEY.fHASH`, HASH: 16 hex digits of the remote path).
const CONTROL: &str = "c";
const LOCK: &str = "lock";
const FORWARD: char = 'f';

fn shared_file(dir: &Path, key: &str, what: &str) -> PathBuf {
    dir.join(format!("{key}.{what}"))
}

/// Whether no shared master answers on `control`: the socket is missing or refuses.
async fn gone(control: &Path) -> bool {
    match tokio::net::UnixStream::connect(control).await {
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        ),
    }
}

/// Whether OpenSSH's `-L LOCAL:REMOTE` can carry the path.
pub(crate) fn forwardable(remote: &Path) -> bool {
    let r = remote.to_string_lossy();
    !(r.contains([':', '%', '[', ']']) || r.contains("${") || r.chars().any(char::is_control))
}

/// The user's folder for shared ssh connections: `$XDG_RUNTIME_DIR/vdev-ssh`, else
/// `/tmp/vdev-ssh-UID`; made 0700 and checked to be a real folder owned by this user with no
/// access for others (anyone who can reach a control socket can use the connection).
pub(crate) fn shared_dir() -> std::io::Result<PathBuf> {
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
    pub(crate) fn libc_getuid() -> u32;
}
