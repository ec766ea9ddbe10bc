//! Where the host's state lives: in memory, or in a JSON file shared between processes.
//!
//! A file is read and written under an exclusive lock on a sibling `PATH.lock` file, for every
//! operation, so two processes working on one file never lose an update. The lock is waited for
//! at most the URI's `lock_timeout`; then the error names the process holding it. The lock file
//! is never opened through a symlink. Writes are atomic: a temporary file with an unpredictable
//! name, created exclusively in the same folder, fsync, rename, fsync of the folder; when any
//! step fails (a full disk), the file is left exactly as it was.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vdev_core::{DeviceEvent, EventHub, Result};

use crate::error::MockError;
use crate::format::{now_ms, HostState};

/// The state's home.
#[derive(Debug)]
pub(crate) enum Store {
    Memory(Mutex<HostState>),
    /// The file, and how long to wait for its lock.
    File(PathBuf, Duration),
}

impl Store {
    /// Open a file store, creating the file with the default state if it is missing, and
    /// refusing a malformed one (left untouched).
    /// A new file is made `like` the URI says; an existing one must have been made so.
    pub(crate) fn open_file(
        path: PathBuf,
        lock_timeout: Duration,
        like: Option<crate::Like>,
    ) -> Result<(Store, Option<String>)> {
        let _lock = lock(&path, lock_timeout)?;
        let (st, _) = load_or_create(&path, like)?;
        if let Some(l) = like {
            if st.like.as_deref() != Some(l.as_str()) {
                return Err(MockError::LikeMismatch {
                    path,
                    file: st
                        .like
                        .unwrap_or_else(|| "the mock's own vocabulary".into()),
                    uri: l.as_str(),
                }
                .into());
            }
        }
        Ok((Store::File(path, lock_timeout), st.like))
    }

    /// Run `f` on the state after completing due removals; persist any change. When `f` fails
    /// the stored state is left as it was (and `f` must not have changed the in-memory state:
    /// every rule validates before it changes anything).
    /// The events of the changes are sent on `events` (also those of completed removals when
    /// `f` fails); a state file records them in its journal instead, where every process's
    /// watchers read them.
    pub(crate) async fn transact<R, F>(&self, events: &EventHub, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut HostState, &mut Vec<DeviceEvent>) -> Result<R> + Send + 'static,
    {
        match self {
            Store::Memory(m) => {
                let mut st = m.lock().unwrap_or_else(|p| p.into_inner());
                let mut evs = Vec::new();
                st.settle(now_ms(), &mut evs);
                // Removals that completed are kept even when `f` fails.
                let r = f(&mut st, &mut evs);
                for e in evs {
                    events.send(e);
                }
                r
            }
            Store::File(path, lock_timeout) => {
                let (path, lock_timeout) = (path.clone(), *lock_timeout);
                tokio::task::spawn_blocking(move || {
                    let _lock = lock(&path, lock_timeout)?;
                    let (mut st, original) = load_or_create(&path, None)?;
                    let mut evs = Vec::new();
                    st.settle(now_ms(), &mut evs);
                    let r = f(&mut st, &mut evs);
                    st.record(&evs);
                    // `f` changes nothing when it fails, so what differs now is its work (on
                    // success) or only the completed removals (on failure): both are kept.
                    let text = serialize(&st);
                    if text != original {
                        save(&path, &text)?;
                    }
                    r
                })
                .await
                .map_err(|e| {
                    vdev_core::Error::backend_with(crate::NAME, "the state file task failed", e)
                })?
            }
        }
    }
}

fn serialize(st: &HostState) -> String {
    let mut s = serde_json::to_string_pretty(st).expect("state serializes");
    s.push('\n');
    s
}

struct LockGuard(File);

impl Drop for LockGuard {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

fn lock(path: &Path, timeout: Duration) -> Result<LockGuard, MockError> {
    let lp = lock_path(path);
    // O_NOFOLLOW: a symlink planted at PATH.lock (say, in a world-writable folder) must not make
    // vdev create or open the file it points to.
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lp)
        .map_err(|source| MockError::Io {
            action: "create the lock file (not a symlink) of",
            path: path.to_owned(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(LockGuard(f)),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(MockError::Locked {
                    path: path.to_owned(),
                    holder: lock_holder(&f),
                    after: timeout,
                })
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(MockError::Io {
                    action: "lock",
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Who holds the lock on `f`, from `/proc/locks` (its inode): "process 1234 (vdev)", or a
/// description of why it is not known.
fn lock_holder(f: &File) -> String {
    let Ok(md) = f.metadata() else {
        return "an unknown process".into();
    };
    let ino = md.ino().to_string();
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    for line in locks.lines() {
        // "1: FLOCK  ADVISORY  WRITE 12345 08:01:123456 0 EOF"
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(pos) = fields.iter().position(|x| x.matches(':').count() == 2) else {
            continue;
        };
        if pos == 0 || fields[pos].rsplit(':').next() != Some(ino.as_str()) {
            continue;
        }
        let pid = fields[pos - 1];
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        return format!("process {pid} ({})", comm.trim());
    }
    "another process".into()
}

/// Load the state (and its text), or create the file with the default state when missing.
fn load_or_create(
    path: &Path,
    like: Option<crate::Like>,
) -> Result<(HostState, String), MockError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let st: HostState = serde_json::from_str(&text).map_err(|source| MockError::Json {
                path: path.to_owned(),
                source,
            })?;
            st.validate().map_err(|reason| MockError::Malformed {
                path: path.to_owned(),
                reason,
            })?;
            Ok((st, text))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let st = HostState::new_host(like);
            let text = serialize(&st);
            save(path, &text)?;
            Ok((st, text))
        }
        Err(source) => Err(MockError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

fn save(path: &Path, text: &str) -> Result<(), MockError> {
    let io = |action, source| MockError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // A fresh file of a random name, created exclusively (O_EXCL: never through a symlink),
    // removed again when any later step fails.
    let mut tmp = tempfile::Builder::new()
        .prefix(".vdev-state.")
        .tempfile_in(dir)
        .map_err(|e| io("create a temporary file beside", e))?;
    tmp.write_all(text.as_bytes()).map_err(|e| io("write", e))?;
    tmp.as_file().sync_all().map_err(|e| io("sync", e))?;
    tmp.persist(path).map_err(|e| io("replace", e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the folder of", e))
}

/// Read a state file without taking the lock (writes replace it atomically), for watchers.
pub(crate) fn read_file(path: &Path) -> Result<HostState, MockError> {
    let text = fs::read_to_string(path).map_err(|source| MockError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| MockError::Json {
        path: path.to_owned(),
        source,
    })
}
