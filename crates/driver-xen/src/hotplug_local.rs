//! The block script's primitives done inside this process when the host is this machine
//! ([`vdev_remote::Host::Local`]): no process is started. In a PV Domain-0 every process start
//! is expensive (page-table updates are hypercalls; under the lab's TCG a `/bin/true` costs
//! 140-290 ms), and the shell versions of [`crate::hotplug::Dom0::survey`] and
//! [`crate::hotplug::Dom0::loop_attach_all`] start two processes per disk (`realpath`, `stat`)
//! plus one per bound loop device, then two more per file (`losetup`, `stat`): about 5 s of a
//! batch of 8 disks in the lab. See docs/design/0008-xen-hotplug.md ("Local Domain-0: no
//! processes"). A remote Domain-0 (`xen+ssh://`) keeps the shell versions.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::time::Duration;

use vdev_core::{Error, Result};

use crate::hotplug::{
    parse_decimal_devnum, uname_error, Backing, BlockPrimitives, DevNum, Dom0, LoopDev, LoopsMade,
    Shell, LOOP_HINT,
};

/// The host's name in messages (as [`vdev_remote::Host::name`] gives it for this machine).
const HOST: &str = "this machine";

/// The block script's primitives for `host`: [`InProcess`] when it is this machine, else
/// [`Shell`]. The one place that choice is made, when a connection opens.
pub(crate) fn primitives_for(host: &vdev_remote::Host) -> &'static dyn BlockPrimitives {
    if host.is_local() {
        &InProcess
    } else {
        &Shell
    }
}

/// The primitives done in this process, when the host is this machine.
#[derive(Debug)]
pub(crate) struct InProcess;

#[vdev_core::prelude::async_trait]
impl BlockPrimitives for InProcess {
    async fn survey(
        &self,
        _dom0: &Dom0,
        params: &[&str],
    ) -> Result<(Vec<Result<Backing>>, Vec<LoopDev>)> {
        let params: Vec<String> = params.iter().map(|p| (*p).to_owned()).collect();
        blocking("the survey of the disks' backing files", move || {
            let params: Vec<&str> = params.iter().map(String::as_str).collect();
            survey(&params)
        })
        .await
    }

    async fn loop_attach_all(&self, dom0: &Dom0, files: &[(&str, &str)]) -> LoopsMade {
        // Without /dev/loop-control (the loop module not loaded), losetup is run: it may know
        // how to get one.
        match loop_control() {
            Ok(ctl) => loop_attach_all(ctl, files, LOOP_HINT).await,
            Err(e) => {
                tracing::debug!("/dev/loop-control: {e}; running losetup");
                Shell.loop_attach_all(dom0, files).await
            }
        }
    }

    async fn loop_detach(&self, dom0: &Dom0, node: &str) -> Result<()> {
        if !node.starts_with("/dev/loop") {
            return Shell.loop_detach(dom0, node).await;
        }
        // What `losetup -d` does (LOOP_CLR_FD), without starting it.
        let dev = node.to_owned();
        blocking("releasing a loop device", move || loop_release(&dev))
            .await?
            .map_err(|e| {
                Error::backend(
                    crate::NAME,
                    format!(
                        "losetup -d {node} on {HOST} failed: {e}; the loop device stays attached; release it with `losetup -d` once nothing uses it"
                    ),
                )
            })
    }
}

/// [`Dom0::loop_attach_all`] on this machine, with the kernel's calls: on a blocking thread
/// (opening a new loop node may wait for it to appear). Should the caller stop waiting (its
/// future dropped), the devices made are released, as no one will know of them.
async fn loop_attach_all(ctl: File, files: &[(&str, &str)], hint: &str) -> LoopsMade {
    let files: Vec<(String, bool)> = files
        .iter()
        .map(|(path, mode)| ((*path).to_owned(), *mode == "r"))
        .collect();
    let hint = hint.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel::<LoopsMade>();
    tokio::task::spawn_blocking(move || {
        let release = |made: &[(String, DevNum)]| {
            for (dev, _) in made.iter().rev() {
                if let Err(e) = loop_release(dev) {
                    tracing::warn!("releasing {dev}: {e}");
                }
            }
        };
        let mut made: Vec<(String, DevNum)> = Vec::with_capacity(files.len());
        for (i, (path, read_only)) in files.iter().enumerate() {
            match loop_attach(&ctl, path, *read_only) {
                Ok(d) => made.push(d),
                Err(why) => {
                    release(&made);
                    let _ = tx.send(Err((Some(i), loop_error(path, &why, &hint))));
                    return;
                }
            }
        }
        if let Err(Ok(made)) = tx.send(Ok(made)) {
            tracing::warn!("the attach stopped waiting for its loop devices: releasing them");
            release(&made);
        }
    });
    rx.await.unwrap_or_else(|_| {
        Err((
            None,
            Error::backend(
                crate::NAME,
                "binding loop devices on this machine failed: its thread panicked; `losetup -a` shows any it left bound",
            ),
        ))
    })
}

/// `realpath -e` and `stat -L` of each of `params`, and every bound loop device with its
/// backing file's device and inode: what the shell survey prints, read directly.
pub(crate) fn survey(params: &[&str]) -> (Vec<Result<Backing>>, Vec<LoopDev>) {
    (params.iter().map(|p| inspect(p)).collect(), bound_loops())
}

fn inspect(params: &str) -> Result<Backing> {
    let cannot = |e: io::Error| {
        uname_error(format!(
            "'{params}' cannot be opened in the backend domain on {HOST} ({e}); give an existing file or block device"
        ))
    };
    let canonical = std::fs::canonicalize(params).map_err(cannot)?;
    let md = std::fs::metadata(&canonical).map_err(cannot)?;
    let Some(path) = canonical.to_str().map(str::to_owned) else {
        return Err(uname_error(format!(
            "'{params}' resolves to a path that is not UTF-8 ({})",
            canonical.display()
        )));
    };
    let ft = md.file_type();
    if ft.is_block_device() {
        Ok(Backing::Device {
            path,
            num: devnum(md.rdev()),
        })
    } else if ft.is_file() {
        Ok(Backing::File {
            path,
            dev: md.dev(),
            ino: md.ino(),
            writable: md.mode() & 0o222 != 0,
        })
    } else {
        Err(uname_error(format!(
            "'{path}' is neither a regular file nor a block device on {HOST}; give file:PATH of an image or phy:PATH of a block device"
        )))
    }
}

fn devnum(rdev: u64) -> DevNum {
    DevNum {
        major: libc::major(rdev as libc::dev_t),
        minor: libc::minor(rdev as libc::dev_t),
    }
}

/// Every bound loop device (`/sys/block/loop*/loop/backing_file`) whose backing file can be
/// looked at, with that file's device and inode.
fn bound_loops() -> Vec<LoopDev> {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut loops = Vec::new();
    for e in dir.flatten() {
        if !e.file_name().to_string_lossy().starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let backing = backing.strip_suffix('\n').unwrap_or(&backing);
        let Ok(md) = std::fs::metadata(backing) else {
            continue;
        };
        let Some(num) = std::fs::read_to_string(e.path().join("dev"))
            .ok()
            .and_then(|n| parse_decimal_devnum(&n))
        else {
            continue;
        };
        loops.push(LoopDev {
            file: (md.dev(), md.ino()),
            num,
        });
    }
    loops
}

// The loop driver's interface (linux/loop.h; documented in loop(4)).
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// How many times a free loop device is asked for when others keep taking the one offered.
const FREE_TRIES: usize = 64;

fn ioctl(fd: &File, request: libc::c_ulong, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the requests used here take an integer or a pointer to a live, correctly laid out
    // struct of this module, which the kernel only reads.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Attach `path` to a free loop device, read-only for `read_only`, as util-linux
/// `losetup --find --show [--read-only] PATH` does: the backing file opened read-write (read-only
/// if that is refused as read-only file system or permission, as losetup falls back), a free
/// device from `LOOP_CTL_GET_FREE`, bound with `LOOP_CONFIGURE` (`LOOP_SET_FD` and
/// `LOOP_SET_STATUS64` on a kernel without it), the next free device asked for when another
/// process bound this one first (`EBUSY`). The device's path and number.
pub(crate) fn loop_attach(
    ctl: &File,
    path: &str,
    read_only: bool,
) -> std::result::Result<(String, DevNum), String> {
    let failed = |what: &str, e: io::Error| format!("{what}: {e}");
    let mut ro = read_only;
    let backing = match OpenOptions::new()
        .read(true)
        .write(!ro)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Err(e) if !ro && matches!(e.raw_os_error(), Some(libc::EROFS | libc::EACCES)) => {
            ro = true;
            File::open(path)
        }
        other => other,
    }
    .map_err(|e| failed(&format!("opening {path}"), e))?;
    let mut name = [0u8; LO_NAME_SIZE];
    let n = path.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&path.as_bytes()[..n]);
    let info = || LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: if ro { LO_FLAGS_READ_ONLY } else { 0 },
        lo_file_name: name,
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    };
    let mut configure = true;
    for _ in 0..FREE_TRIES {
        let free = ioctl(ctl, LOOP_CTL_GET_FREE, 0)
            .map_err(|e| failed("asking /dev/loop-control for a free loop device", e))?;
        let dev = format!("/dev/loop{free}");
        let lo = open_loop(&dev, ro).map_err(|e| failed(&format!("opening {dev}"), e))?;
        let bound = if configure {
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info: info(),
                reserved: [0; 8],
            };
            match ioctl(&lo, LOOP_CONFIGURE, &config as *const _ as libc::c_ulong) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY)) => {
                    configure = false;
                    set_fd(&lo, &backing, &info())
                }
                r => r.map(drop),
            }
        } else {
            set_fd(&lo, &backing, &info())
        };
        match bound {
            Ok(()) => {
                let md = lo
                    .metadata()
                    .map_err(|e| failed(&format!("stat {dev}"), e))?;
                return Ok((dev, devnum(md.rdev())));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(failed(&format!("binding {dev} to {path}"), e)),
        }
    }
    Err(format!(
        "no free loop device after {FREE_TRIES} tries (others kept taking the one offered)"
    ))
}

/// `LOOP_SET_FD`, then `LOOP_SET_STATUS64` (undone if that fails).
fn set_fd(lo: &File, backing: &File, info: &LoopInfo64) -> io::Result<()> {
    ioctl(lo, LOOP_SET_FD, backing.as_raw_fd() as libc::c_ulong)?;
    if let Err(e) = ioctl(lo, LOOP_SET_STATUS64, info as *const _ as libc::c_ulong) {
        let _ = ioctl(lo, LOOP_CLR_FD, 0);
        return Err(e);
    }
    Ok(())
}

/// Open a loop device node, waiting a little for it to appear (the kernel adds the node of a
/// device `LOOP_CTL_GET_FREE` just made).
fn open_loop(dev: &str, ro: bool) -> io::Result<File> {
    let mut waited = Duration::ZERO;
    loop {
        match OpenOptions::new()
            .read(true)
            .write(!ro)
            .custom_flags(libc::O_CLOEXEC)
            .open(dev)
        {
            Err(e) if e.kind() == io::ErrorKind::NotFound && waited < Duration::from_secs(2) => {
                std::thread::sleep(Duration::from_millis(10));
                waited += Duration::from_millis(10);
            }
            r => return r,
        }
    }
}

/// Release a loop device this module bound (`LOOP_CLR_FD`).
pub(crate) fn loop_release(dev: &str) -> io::Result<()> {
    let lo = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dev)?;
    ioctl(&lo, LOOP_CLR_FD, 0).map(drop)
}

/// `/dev/loop-control`, opened.
pub(crate) fn loop_control() -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
}

/// An error about `losetup` work, in the words of the shell version.
pub(crate) fn loop_error(path: &str, why: &str, hint: &str) -> Error {
    Error::backend(
        crate::NAME,
        format!("attaching {path} to a loop device on {HOST} failed: {why}; {hint}"),
    )
}

/// `f` on tokio's blocking threads, for the kernel calls and file reads the local Domain-0 makes
/// in-process (design 0008, "Local Domain-0: no processes"), so that the runtime's threads do
/// not wait on them. `what` names the work if its thread panicked.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend(crate::NAME, format!("{what} on this machine failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_structs_have_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn inspect_tells_files_from_devices_and_names_uname() {
        let f = std::env::temp_dir().join(format!("vdev-hotplug-local-{}.img", std::process::id()));
        std::fs::write(&f, b"x").unwrap();
        let p = f.to_str().unwrap();
        let (b, _) = survey(&[p]);
        match &b[0] {
            Ok(Backing::File { writable, path, .. }) => {
                assert!(writable);
                assert_eq!(path, std::fs::canonicalize(&f).unwrap().to_str().unwrap());
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&f).unwrap();
        let (b, _) = survey(&[p, "/dev/null"]);
        for r in b {
            let e = r.unwrap_err();
            assert!(
                matches!(&e, Error::InvalidAttribute { name, .. } if name == "uname"),
                "{e}"
            );
        }
    }
}
