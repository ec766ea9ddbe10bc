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
//! All of it runs on the [`Host`] of the connection, through [`Dom0`], written once as POSIX
//! shell: on this machine through `/bin/sh`, on a remote Domain-0 (`xen+ssh://`) in the ssh
//! connection's agent, one round trip per primitive. On this machine, the block script's
//! primitives (the survey, loop devices) are done in this process instead
//! ([`BlockPrimitives`], chosen with the host). The lock is a
//! [`vdev_remote::HostLock`]: held by this process locally, by the agent's own shell remotely.
//! See docs/design/0012-xen-over-ssh.md.

use std::time::Duration;

use vdev_core::{Error, Result};
use vdev_remote::{sh_quote, HeldLock, Host, HostLock, LockError, RunOutput};

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

/// The bound on one step that runs no hotplug script.
pub(crate) const REMOTE_STEP: Duration = Duration::from_secs(30);

/// `PATH` for the commands: sshd may give a login a shorter one without the sbin folders.
pub(crate) const REMOTE_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH\n";

/// The descriptors of a remote agent's shell that hold the hotplug lock and libxl's userdata
/// locks: one each, so that a holder of one never waits for a user of the other.
const LOCK_FD: u32 = 9;
const USERDATA_LOCK_FD: u32 = 8;

/// The longest a user of libxl's userdata lock waits for this connection's other users of it
/// (remote only): 32 concurrent attaches on one connection take turns, each for a few round
/// trips, each of them bounded, so this is only a generous bound against a bug, not the lock
/// being held too long (that is `attach-timeout`).
const USERDATA_TURN_BOUND: Duration = Duration::from_secs(600);

/// The connection's host as the backend domain (Domain-0, or the host of its xenstored), with
/// its lock files: the hotplug side, each method one concern, one shell script run on the host
/// (one agent round trip on a remote host). libxl's stored configuration on the same host is
/// [`crate::libxl::Userdata`].
#[derive(Debug, Clone)]
pub(crate) struct Dom0 {
    host: Host,
    /// How the block script's primitives are done there.
    primitives: &'static dyn BlockPrimitives,
    /// The hotplug scripts' lock (`claim_lock block`).
    lock: HostLock,
    /// libxl's userdata locks.
    userdata_lock: HostLock,
}

impl Dom0 {
    /// `primitives`: how the block script's steps are done there
    /// ([`crate::hotplug_local::primitives_for`] chooses them for a host; the tests compare both
    /// on this machine).
    pub(crate) fn new(host: Host, primitives: &'static dyn BlockPrimitives) -> Self {
        Dom0 {
            primitives,
            lock: HostLock::new(host.clone(), LOCK_FD, "the hotplug lock", SCRIPT_TIMEOUT),
            userdata_lock: HostLock::new(
                host.clone(),
                USERDATA_LOCK_FD,
                "libxl's userdata lock",
                USERDATA_TURN_BOUND,
            ),
            host,
        }
    }

    /// The host.
    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    /// libxl's userdata locks on the host.
    pub(crate) fn userdata_lock(&self) -> &HostLock {
        &self.userdata_lock
    }

    /// The host, for messages.
    pub(crate) fn name(&self) -> String {
        self.host.name()
    }

    /// Run `script` on the host with the full `PATH`.
    async fn sh(&self, script: &str, timeout: Duration) -> Result<RunOutput> {
        self.host
            .run(&format!("{REMOTE_PATH}{script}"), timeout)
            .await
    }

    /// The error for a program `what` needs that the host lacks (`MissingProgram`), naming
    /// the package that provides it.
    fn missing(&self, program: &str, what: &str) -> Error {
        let package = match program {
            "losetup" | "flock" => "util-linux",
            "stat" | "timeout" | "realpath" | "head" => "coreutils",
            _ => "the package that provides it",
        };
        Error::Remote {
            host: self.host.name(),
            kind: vdev_core::RemoteErrorKind::MissingProgram,
            message: format!(
                "{what} needs `{program}`, which is not installed there: install {package} on that Domain-0"
            ),
        }
    }

    /// Run `script`; its output, or [`Self::missing`] when the shell could not find one of
    /// its programs (see [`require`]).
    async fn sh_found(&self, script: &str, timeout: Duration, what: &str) -> Result<RunOutput> {
        let out = self.sh(script, timeout).await?;
        match out.missing_program() {
            Some(program) => Err(self.missing(&program, what)),
            None => Ok(out),
        }
    }

    /// Run `script`; its stdout, or an error naming `what`, its stderr and `hint`.
    async fn sh_ok(&self, script: &str, what: &str, hint: &str) -> Result<String> {
        let out = self.sh_found(script, SCRIPT_TIMEOUT, what).await?;
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
        let caps = self
            .host
            .read_file("/proc/xen/capabilities", REMOTE_STEP)
            .await?;
        Ok(matches!(caps, Ok(Some(c)) if String::from_utf8_lossy(&c).contains("control_d")))
    }

    /// Whether `path` is a block device on the host.
    pub(crate) async fn is_block_device(&self, path: &str) -> Result<bool> {
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

    /// Take the hotplug lock `name` on the host (`/var/run/xen-hotplug/NAME`, as
    /// `claim_lock` in `locking.sh`), waiting at most [`SCRIPT_TIMEOUT`]. Released when dropped.
    pub(crate) async fn lock(&self, name: &'static str) -> Result<HeldLock> {
        let path = format!("{LOCK_DIR}/{name}");
        match self.lock.acquire(&path, true, SCRIPT_TIMEOUT).await {
            Ok(held) => Ok(held),
            Err(LockError::Busy) => Err(Error::Timeout {
                operation: format!("taking the hotplug lock {path} on {}", self.host.name()),
                after: SCRIPT_TIMEOUT,
            }),
            Err(LockError::Turns(after)) => Err(Error::Timeout {
                operation: format!(
                    "waiting for this connection's other user of the hotplug lock {path}"
                ),
                after,
            }),
            Err(LockError::Failed(why)) => Err(Error::backend(
                crate::NAME,
                format!(
                    "cannot take the hotplug lock {path} on {}: {why}",
                    self.host.name()
                ),
            )),
            Err(LockError::Host(e)) => Err(e),
        }
    }

    /// Look at each of `params` in the backend domain, and list the bound loop devices, in one
    /// script (one round trip on a remote host): each one's [`Backing`], or its error naming the
    /// attribute; and every bound loop device with its backing file's device and inode.
    pub(crate) async fn survey(
        &self,
        params: &[&str],
    ) -> Result<(Vec<Result<Backing>>, Vec<LoopDev>)> {
        self.primitives.survey(self, params).await
    }

    /// The block devices Domain-0 has mounted.
    pub(crate) async fn mounts(&self) -> Result<Vec<Mount>> {
        let script = require(&["stat"])
            + r#"while read -r s m f o r; do
  case $s in /*) ;; *) continue ;; esac
  [ -b "$s" ] || continue
  printf '%s %s %s %s
' "$(stat -L -c %t:%T -- "$s")" "$s" "$m" "$o"
done </proc/mounts; true"#;
        let out = self
            .sh_ok(
                &script,
                "reading the mounts",
                "check /proc/mounts on the host",
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                let (Some(num), Some(src), Some(mnt), Some(opts)) =
                    (f.next(), f.next(), f.next(), f.next())
                else {
                    return None;
                };
                Some(Mount {
                    num: DevNum::from_xenstore(num)?,
                    source: src.to_owned(),
                    target: mnt.to_owned(),
                    read_only: opts.split(',').any(|o| o == "ro"),
                })
            })
            .collect())
    }

    /// Attach each file of `files` (path, mode) to a free loop device (read-only for mode
    /// `r`) with util-linux `losetup`, which finds the free device and retries races with
    /// other users itself, in one script (one round trip on a remote host): their
    /// devices, in order. When one fails, those made for the files before it are released
    /// and the error is `(its index, why)`; `None` for a failure of the host itself.
    pub(crate) async fn loop_attach_all(
        &self,
        files: &[(&str, &str)],
    ) -> std::result::Result<Vec<(String, DevNum)>, (Option<usize>, Error)> {
        self.primitives.loop_attach_all(self, files).await
    }

    /// Release a loop device (`losetup -d`).
    pub(crate) async fn loop_detach(&self, node: &str) -> Result<()> {
        self.primitives.loop_detach(self, node).await
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

/// A script's first lines: exit as the shell does for a command it cannot find (status 127,
/// `NAME: not found`, which [`RunOutput::missing_program`] reads) when one of `programs` is
/// not on the `PATH`. Scripts that catch their commands' failures (`x=$(cmd 2>&1) || ...`)
/// would otherwise report a missing program as that command's failure.
fn require(programs: &[&str]) -> String {
    programs
        .iter()
        .map(|p| {
            format!(
                "command -v {p} >/dev/null 2>&1 || {{ echo '{p}: not found' >&2; exit 127; }}\n"
            )
        })
        .collect()
}

/// The loop devices made, or the failed file's index and why.
pub(crate) type LoopsMade = std::result::Result<Vec<(String, DevNum)>, (Option<usize>, Error)>;

/// The hint of a failed loop device binding.
pub(crate) const LOOP_HINT: &str =
    "Domain-0 needs the loop module and a free loop device (see `losetup -a`)";

/// How the block script's primitives are done on the backend domain's host: as POSIX shell
/// scripts run on it ([`Shell`]: `/bin/sh` here, the agent over ssh), or, when the host is this
/// machine, in this process with the kernel's calls
/// ([`crate::hotplug_local::InProcess`]: design 0008, "Local Domain-0: no processes"). Chosen
/// once, with the connection's host (`hotplug_local::primitives_for`); [`Dom0`]'s methods of
/// the same names say
/// what each does.
#[vdev_core::prelude::async_trait]
pub(crate) trait BlockPrimitives: Send + Sync + std::fmt::Debug {
    /// See [`Dom0::survey`].
    async fn survey(
        &self,
        dom0: &Dom0,
        params: &[&str],
    ) -> Result<(Vec<Result<Backing>>, Vec<LoopDev>)>;
    /// See [`Dom0::loop_attach_all`].
    async fn loop_attach_all(&self, dom0: &Dom0, files: &[(&str, &str)]) -> LoopsMade;
    /// See [`Dom0::loop_detach`].
    async fn loop_detach(&self, dom0: &Dom0, node: &str) -> Result<()>;
}

/// The primitives as shell scripts run on the host, one round trip each on a remote host.
#[derive(Debug)]
pub(crate) struct Shell;

#[vdev_core::prelude::async_trait]
impl BlockPrimitives for Shell {
    async fn survey(
        &self,
        dom0: &Dom0,
        params: &[&str],
    ) -> Result<(Vec<Result<Backing>>, Vec<LoopDev>)> {
        let quoted: Vec<String> = params.iter().map(|p| sh_quote(p)).collect();
        // One record per path, each started by a line of the record separator (\036); then a
        // line of the group separator (\035) and a line per loop device.
        let script = require(&["realpath", "stat"])
            + &format!(
                r#"for p in {}; do
    printf '\036\n'
    c=$(realpath -e -- "$p" 2>&1) || {{ printf 'E%s\n' "$c"; continue; }}
    t=$(stat -L -c '%F|%t|%T|%d|%i|%a' -- "$c" 2>&1) || {{ printf 'E%s\n' "$t"; continue; }}
    printf 'K%s\n%s\n' "$t" "$c"
    done
    printf '\035\n'
    for d in /sys/block/loop*; do
      [ -r "$d/loop/backing_file" ] || continue
      IFS= read -r b <"$d/loop/backing_file" || continue
      s=$(stat -L -c %d:%i -- "$b" 2>/dev/null) || continue
      IFS= read -r n <"$d/dev" && printf '%s %s\n' "$s" "$n"
    done; true"#,
                quoted.join(" ")
            );
        let out = dom0
            .sh_found(&script, REMOTE_STEP, "looking at the backing files")
            .await?;
        let text = out.text();
        let unexpected = || {
            Error::backend(
                crate::NAME,
                format!(
                    "unexpected answer from {} about {}: {text:?}",
                    dom0.host.name(),
                    params.join(", ")
                ),
            )
        };
        let (paths, loops) = text.split_once('\u{1d}').ok_or_else(unexpected)?;
        let records: Vec<&str> = paths
            .split('\u{1e}')
            .skip(1)
            .map(|r| r.trim_matches('\n'))
            .collect();
        if records.len() != params.len() {
            return Err(unexpected());
        }
        let host = dom0.host.name();
        let backings = params
            .iter()
            .zip(records)
            .map(|(p, r)| parse_inspect(p, r, &host))
            .collect();
        let loops = loops
            .lines()
            .filter_map(|l| {
                let (file, num) = l.split_once(' ')?;
                let (dev, ino) = file.split_once(':')?;
                Some(LoopDev {
                    file: (dev.parse().ok()?, ino.parse().ok()?),
                    num: parse_decimal_devnum(num)?,
                })
            })
            .collect();
        Ok((backings, loops))
    }

    async fn loop_attach_all(&self, dom0: &Dom0, files: &[(&str, &str)]) -> LoopsMade {
        // Each file: losetup, then the new device's number; on a failure, the devices made so
        // far released and `F INDEX WHY` printed.
        // losetup's messages go with its answer (the device is its last line).
        let mut script = require(&["losetup", "stat"]);
        script.push_str(
                "made=
    nl='
    '
    fail() { for x in $made; do losetup -d \"$x\"; done; printf 'F %s %s\\n' \"$1\" \"$2\"; exit 0; }
    ",
            );
        for (i, (path, mode)) in files.iter().enumerate() {
            let ro = if *mode == "r" { " --read-only" } else { "" };
            script.push_str(&format!(
                r#"d=$(losetup --find --show{ro} -- {} 2>&1) || fail {i} "$d"
    d=${{d##*$nl}}
    made="$made $d"
    n=$(stat -L -c %t:%T -- "$d" 2>&1) || fail {i} "$n"
    printf 'K %s %s\n' "$d" "$n"
    "#,
                sh_quote(path)
            ));
        }
        let out = dom0
            .sh_ok(&script, "losetup --find --show", LOOP_HINT)
            .await
            .map_err(|e| (None, e))?;
        let mut made = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("F ") {
                let (i, why) = rest.split_once(' ').unwrap_or((rest, ""));
                let i: usize = i.parse().unwrap_or(made.len());
                return Err((
                    Some(i),
                    Error::backend(
                        crate::NAME,
                        format!(
                            "losetup --find --show {} on {} failed: {why}; {LOOP_HINT}",
                            files.get(i).map_or("", |f| f.0),
                            dom0.host.name()
                        ),
                    ),
                ));
            }
            let mut f = line.strip_prefix("K ").unwrap_or_default().split(' ');
            match (f.next(), f.next().and_then(DevNum::from_xenstore)) {
                (Some(dev), Some(n)) if dev.starts_with("/dev/") => made.push((dev.to_owned(), n)),
                _ => {
                    return Err((
                        None,
                        Error::backend(
                            crate::NAME,
                            format!(
                                "losetup on {} printed '{out}' instead of loop devices",
                                dom0.host.name()
                            ),
                        ),
                    ))
                }
            }
        }
        if made.len() != files.len() {
            return Err((
                None,
                Error::backend(
                    crate::NAME,
                    format!(
                        "losetup on {} printed '{out}': {} loop devices for {} files",
                        dom0.host.name(),
                        made.len(),
                        files.len()
                    ),
                ),
            ));
        }
        Ok(made)
    }

    async fn loop_detach(&self, dom0: &Dom0, node: &str) -> Result<()> {
        dom0.sh_ok(
            &format!("losetup -d {}", sh_quote(node)),
            "losetup -d",
            "the loop device stays attached; release it with `losetup -d` once nothing uses it",
        )
        .await
        .map(|_| ())
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
pub(crate) fn parse_decimal_devnum(s: &str) -> Option<DevNum> {
    let (a, b) = s.trim().split_once(':')?;
    Some(DevNum {
        major: a.parse().ok()?,
        minor: b.parse().ok()?,
    })
}

/// A bound loop device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoopDev {
    /// Its backing file's device and inode (`stat -c %d:%i`).
    pub file: (u64, u64),
    /// Its own number.
    pub num: DevNum,
}

/// The numbers of the loop devices of `loops` backed by the file (`dev`, `ino`).
pub(crate) fn backed_by(loops: &[LoopDev], dev: u64, ino: u64) -> Vec<DevNum> {
    loops
        .iter()
        .filter(|l| l.file == (dev, ino))
        .map(|l| l.num)
        .collect()
}

/// A block device Domain-0 has mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub num: DevNum,
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// The first mount of one of `nums` that conflicts with `mode` (any mount for `w`, a
/// read-write mount for `r`), described.
pub(crate) fn mount_conflict(mounts: &[Mount], nums: &[DevNum], mode: &str) -> Option<String> {
    mounts
        .iter()
        .filter(|m| mode == "w" || !m.read_only)
        .find(|m| nums.contains(&m.num))
        .map(|m| format!("{} mounted on {}", m.source, m.target))
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

pub(crate) fn uname_error(reason: String) -> Error {
    Error::InvalidAttribute {
        name: "uname".into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn inspect(dom0: &Dom0, params: &str) -> Result<Backing> {
        dom0.survey(&[params]).await?.0.pop().unwrap()
    }

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

    /// A script whose program is missing fails as the shell's own "not found" does, so the
    /// error is `MissingProgram` naming the program and its package, not the command's failure
    /// caught by the script.
    #[tokio::test]
    async fn a_required_program_that_is_missing_is_named_with_its_package() {
        let dom0 = Dom0::new(Host::Local, &Shell);
        let caught = "x=$(vdev-no-such-program 2>&1) || { echo \"caught: $x\"; exit 0; }";
        let out = dom0.sh(caught, REMOTE_STEP).await.unwrap();
        assert!(out.success() && out.missing_program().is_none(), "{out:?}");
        let script = require(&["sh", "vdev-no-such-program"]) + caught;
        let e = dom0
            .sh_ok(&script, "testing", "no hint")
            .await
            .expect_err("the program is missing");
        match &e {
            Error::Remote { kind, message, .. } => {
                assert_eq!(*kind, vdev_core::RemoteErrorKind::MissingProgram);
                assert!(message.contains("`vdev-no-such-program`"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(dom0
            .missing("losetup", "x")
            .to_string()
            .contains("util-linux"));
        // Nothing missing: the script runs.
        let out = dom0
            .sh_ok(&(require(&["sh", "stat"]) + "echo ran"), "testing", "")
            .await
            .unwrap();
        assert_eq!(out, "ran");
    }

    /// (The lock's own test is in vdev-remote, `lock.rs`.)
    #[tokio::test]
    async fn inspect_tells_files_from_devices_and_names_uname() {
        for primitives in [
            &crate::hotplug_local::InProcess as &'static dyn BlockPrimitives,
            &Shell,
        ] {
            inspect_with(Dom0::new(Host::Local, primitives)).await;
        }
    }

    /// The survey done in this process and by the shell script answers the same.
    #[tokio::test]
    async fn both_primitives_survey_alike() {
        let f = std::env::temp_dir().join(format!("vdev-survey-{}.img", std::process::id()));
        std::fs::write(&f, b"x").unwrap();
        let params = [f.to_str().unwrap(), "/no/such/file", "/dev/null"];
        let here = Dom0::new(Host::Local, &crate::hotplug_local::InProcess)
            .survey(&params)
            .await
            .unwrap();
        let shell = Dom0::new(Host::Local, &Shell)
            .survey(&params)
            .await
            .unwrap();
        std::fs::remove_file(&f).unwrap();
        let show = |s: &(Vec<Result<Backing>>, Vec<LoopDev>)| {
            let backings: Vec<String> =
                s.0.iter()
                    .map(|b| match b {
                        Ok(b) => format!("{b:?}"),
                        Err(Error::InvalidAttribute { name, .. }) => format!("invalid {name}"),
                        Err(e) => format!("{e}"),
                    })
                    .collect();
            let mut loops = s.1.clone();
            loops.sort_by_key(|l| (l.num.major, l.num.minor));
            (backings, loops)
        };
        assert_eq!(show(&here), show(&shell));
    }

    async fn inspect_with(dom0: Dom0) {
        let f = std::env::temp_dir().join(format!("vdev-hotplug-{}.img", std::process::id()));
        std::fs::write(&f, b"x").unwrap();
        match inspect(&dom0, f.to_str().unwrap()).await.unwrap() {
            Backing::File { writable, .. } => assert!(writable),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&f).unwrap();
        let e = inspect(&dom0, f.to_str().unwrap()).await.unwrap_err();
        assert!(
            matches!(&e, Error::InvalidAttribute { name, .. } if name == "uname"),
            "{e}"
        );
        if std::path::Path::new("/dev/null").exists() {
            assert!(
                inspect(&dom0, "/dev/null").await.is_err(),
                "a char device is refused"
            );
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
