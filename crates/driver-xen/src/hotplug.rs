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

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use vdev_core::{Error, Result};

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
#[derive(Debug)]
pub(crate) struct ScriptLock {
    file: Option<File>,
    path: PathBuf,
}

impl ScriptLock {
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
                    return Ok(ScriptLock {
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
    pub(crate) async fn acquire(name: &'static str) -> Result<Self> {
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

impl Drop for ScriptLock {
    fn drop(&mut self) {
        // Remove while still holding it, then close: the next waiter sees the path changed.
        let _ = fs::remove_file(&self.path);
        self.file.take();
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
pub(crate) fn inspect(params: &str) -> Result<Backing> {
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
pub(crate) fn loops_backed_by(dev: u64, ino: u64) -> Vec<DevNum> {
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
pub(crate) fn mounted_conflict(nums: &[DevNum], mode: &str) -> Option<String> {
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
pub(crate) async fn loop_attach(path: &str, mode: &str) -> Result<String> {
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
pub(crate) async fn loop_detach(node: &str) -> Result<()> {
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
pub(crate) fn devnum_of(path: &str) -> Result<DevNum> {
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
pub(crate) async fn run_script(
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
        let held = ScriptLock::acquire_blocking(&dir, "block").unwrap();
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
            let l = ScriptLock::acquire_blocking(&d, "block").unwrap();
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
}
