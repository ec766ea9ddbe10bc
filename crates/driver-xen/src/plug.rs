//! Who does a device's hotplug work in the backend domain, and doing it: the block script's
//! work natively, other scripts run as libxl runs them, and undoing either at removal. The
//! primitives run on the host through [`crate::hotplug::Dom0`]; design 0008.

use vdev_core::{Error, Result};
use vdev_remote::HeldLock;

use crate::config::Hotplug;
use crate::driver::{xs_err, Inner};
use crate::hotplug::{self, Backing};
use crate::paths::{self, Kind};
use crate::vbd::{self, DiskSpec};
use crate::xenstore::{opt, utf8, Req, NO_TX};

/// What [`Inner::native_block_prepare`] did for one disk: the backend keys to write with it,
/// and the loop device made for a file.
pub(crate) struct Native {
    pub keys: Vec<(&'static str, String)>,
    pub node: Option<String>,
}

/// A vbd Domain-0 serves.
pub(crate) struct VbdUser {
    /// The frontend domain's id, as in the path.
    pub domain: String,
    pub dev: String,
    pub num: hotplug::DevNum,
    pub mode: String,
}

/// A vbd of `users` served to another domain than `frontend` that uses one of `nums` in a way
/// `mode` conflicts with (the block script's check), described.
pub(crate) fn vbd_conflict(
    users: &[VbdUser],
    nums: &[hotplug::DevNum],
    mode: &str,
    frontend: u32,
) -> Option<String> {
    users
        .iter()
        .filter(|u| nums.contains(&u.num) && u.domain != frontend.to_string())
        .find(|u| mode == "w" || u.mode.contains('w'))
        .map(|u| {
            format!(
                "domain {} has it as vbd {} (mode {})",
                u.domain, u.dev, u.mode
            )
        })
}

/// Who does a new device's hotplug work.
pub(crate) enum Plug {
    /// Nobody here (another domain, udev, or `hotplug=no`).
    None,
    /// The backend's script, once the backend is in InitWait.
    Script,
    /// Done already ([`Inner::native_block_add`]): backend keys to write with the device, the
    /// loop device made, and the hotplug lock, held until the keys are written.
    Native {
        keys: Vec<(&'static str, String)>,
        node: Option<String>,
        lock: HeldLock,
    },
}

impl Inner {
    /// Whether this driver does the hotplug work of a device served by `backend`.
    pub(crate) fn runs_hotplug(&self, backend: u32) -> bool {
        backend == 0
            && match self.config.hotplug {
                Hotplug::Auto => self.is_dom0,
                Hotplug::Script => true,
                Hotplug::No => false,
            }
    }

    /// Run the backend's hotplug script as libxl does: for a vbd `block add|remove`, for a vif
    /// `vif-bridge online|offline` (with `vif=vifDOMID.HANDLE`). Bounded by libxl's 40 s.
    pub(crate) async fn run_hotplug(
        &self,
        kind: Kind,
        be: &str,
        add: bool,
        domid: u32,
        devid: u32,
    ) -> Result<()> {
        let default = match kind {
            Kind::Vbd => vbd::BLOCK_SCRIPT,
            Kind::Vif => crate::vif::BRIDGE_SCRIPT,
        };
        let script = self
            .xs
            .read(NO_TX, &format!("{be}/script"))
            .await
            .map_err(xs_err("reading the hotplug script"))?
            .unwrap_or_else(|| default.to_owned());
        if !script.starts_with("/etc/xen/scripts/") || script.contains("..") {
            return Err(Error::backend(
                crate::NAME,
                format!("refusing to run hotplug script '{script}': not under /etc/xen/scripts"),
            ));
        }
        let (action, extra) = match kind {
            Kind::Vbd => (if add { "add" } else { "remove" }, Vec::new()),
            Kind::Vif => (
                if add { "online" } else { "offline" },
                vec![("vif", format!("vif{domid}.{devid}"))],
            ),
        };
        tracing::debug!(%script, action, %be, "running hotplug script");
        let out = self
            .dom0_host
            .run_script(&script, action, kind.xs(), be, &extra)
            .await?;
        if out.success {
            return Ok(());
        }
        // The scripts say why in hotplug-error; stderr otherwise.
        let why = self
            .xs
            .read(NO_TX, &format!("{be}/hotplug-error"))
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| out.stderr.trim().to_owned());
        Err(Error::backend(
            crate::NAME,
            format!(
                "hotplug script {script} {action} failed ({}): {why}",
                out.status
            ),
        ))
    }

    /// Do what `/etc/xen/scripts/block add` does, before the disk's nodes are written (see
    /// [`hotplug`]): the sharing checks, the loop device for a file, and the keys the script
    /// would write. The lock is held until the caller has written the nodes.
    pub(crate) async fn native_block_add(&self, frontend: u32, spec: &DiskSpec) -> Result<Plug> {
        let lock = self.dom0_host.lock("block").await?;
        let mut prepared = self
            .native_block_prepare(frontend, &[spec])
            .await
            .map_err(|(_, e)| e)?;
        let Native { keys, node } = prepared.pop().expect("one per disk");
        Ok(Plug::Native { keys, node, lock })
    }

    /// [`Self::native_block_add`]'s work for every disk of `specs` (all for `frontend`), with
    /// the hotplug lock already held by the caller: each step once for all of them (one script
    /// on the host per step, one read of the disks Domain-0 serves). Disks of one frontend may
    /// share a backing, as the block script allows. On failure, the loop devices made are
    /// released and the error is `(the disk's index, why)`, `None` for a failure of the host.
    pub(crate) async fn native_block_prepare(
        &self,
        frontend: u32,
        specs: &[&DiskSpec],
    ) -> std::result::Result<Vec<Native>, (Option<usize>, Error)> {
        let host = |e: Error| (None, e);
        let params: Vec<&str> = specs.iter().map(|s| s.params.as_str()).collect();
        let (backings, loops) = self.dom0_host.survey(&params).await.map_err(host)?;
        let mut ok = Vec::with_capacity(specs.len());
        for (i, (b, spec)) in backings.into_iter().zip(specs).enumerate() {
            let b = b.map_err(|e| (Some(i), e))?;
            if let Backing::File { path, writable, .. } = &b {
                if spec.mode == "w" && !writable {
                    return Err((Some(i), Error::InvalidAttribute {
                        name: "uname".into(),
                        reason: format!(
                            "{path} is read-only and cannot be given to a guest read-write; attach it with mode=r"
                        ),
                    }));
                }
            }
            ok.push(b);
        }
        let backings = ok;
        let nums: Vec<Vec<hotplug::DevNum>> = backings
            .iter()
            .map(|b| match b {
                Backing::Device { num, .. } => vec![*num],
                Backing::File { dev, ino, .. } => hotplug::backed_by(&loops, *dev, *ino),
            })
            .collect();
        if nums.iter().any(|n| !n.is_empty()) {
            let mounts = self.dom0_host.mounts().await.map_err(host)?;
            let users = self.vbd_users().await.map_err(host)?;
            for (i, (n, spec)) in nums.iter().zip(specs).enumerate() {
                if n.is_empty() {
                    continue;
                }
                let how = match hotplug::mount_conflict(&mounts, n, spec.mode) {
                    Some(m) => format!("{m} in Domain-0"),
                    None => match vbd_conflict(&users, n, spec.mode, frontend) {
                        Some(g) => g,
                        None => continue,
                    },
                };
                return Err((Some(i), Error::InvalidAttribute {
                    name: "uname".into(),
                    reason: format!(
                        "{} is in use: {how}, which mode={} does not allow (read-write needs it unused; read-only needs it nowhere read-write)",
                        spec.params, spec.mode
                    ),
                }));
            }
        }
        // The files' loop devices, in one go; `files[k]` is disk `of_file[k]`.
        let (files, of_file): (Vec<(&str, &str)>, Vec<usize>) = backings
            .iter()
            .zip(specs)
            .enumerate()
            .filter_map(|(i, (b, spec))| match b {
                Backing::File { path, .. } => Some(((path.as_str(), spec.mode), i)),
                Backing::Device { .. } => None,
            })
            .unzip();
        let mut loops = if files.is_empty() {
            Vec::new()
        } else {
            self.dom0_host
                .loop_attach_all(&files)
                .await
                .map_err(|(k, e)| (k.map(|k| of_file[k]), e))?
        }
        .into_iter();
        Ok(backings
            .into_iter()
            .map(|b| {
                let mut keys = match b {
                    Backing::Device { path, num } => vec![
                        ("physical-device", num.to_xenstore()),
                        ("physical-device-path", path),
                    ],
                    Backing::File { .. } => {
                        let (node, num) = loops.next().expect("one loop device per file");
                        let keys = vec![
                            ("node", node.clone()),
                            ("physical-device", num.to_xenstore()),
                            ("physical-device-path", node.clone()),
                        ];
                        keys
                    }
                };
                let node = keys
                    .iter()
                    .find(|(k, _)| *k == "node")
                    .map(|(_, v)| v.clone());
                keys.push(("hotplug-status", "connected".into()));
                Native { keys, node }
            })
            .collect())
    }

    /// Every vbd Domain-0 serves: the frontend domain, the device, its `physical-device` and
    /// its `mode`, read in two round trips.
    pub(crate) async fn vbd_users(&self) -> Result<Vec<VbdUser>> {
        let f = xs_err("reading the disks Domain-0 serves");
        let base = "/local/domain/0/backend/vbd";
        let doms: Vec<String> = self.xs.directory(NO_TX, base).await.map_err(&f)?;
        let paths: Vec<String> = doms.iter().map(|d| format!("{base}/{d}")).collect();
        let lists = self.xs.directories(NO_TX, &paths).await.map_err(&f)?;
        let mut devs = Vec::new();
        for (d, list) in doms.iter().zip(lists) {
            devs.extend(list.into_iter().map(|dev| (d.clone(), dev)));
        }
        let mut reqs = Vec::new();
        for (d, dev) in &devs {
            reqs.push(Req::read(&format!("{base}/{d}/{dev}/physical-device")));
            reqs.push(Req::read(&format!("{base}/{d}/{dev}/mode")));
        }
        let vals = self.xs.batch(NO_TX, reqs).await.map_err(&f)?;
        let mut vals = vals.into_iter();
        let mut users = Vec::new();
        for (d, dev) in devs {
            let pd = vals.next().map(opt).transpose().map_err(&f)?.flatten();
            let m = vals.next().map(opt).transpose().map_err(&f)?.flatten();
            let Some(num) = pd
                .map(utf8)
                .and_then(|s| hotplug::DevNum::from_xenstore(&s))
            else {
                continue;
            };
            users.push(VbdUser {
                domain: d,
                dev,
                num,
                mode: m.map(utf8).unwrap_or_default(),
            });
        }
        Ok(users)
    }

    /// Undo a device's hotplug work when this driver does it and it was done (`hotplug-status`
    /// present, libxl's test), before its nodes are removed: the script's `remove`/`offline`
    /// runs now (it reads the nodes); for disks of the standard block script, done natively,
    /// the loop device in `node` is returned instead, to be released only once the nodes
    /// naming it are gone ([`Self::release_after_removal`]). Script failures are logged.
    pub(crate) async fn hotplug_remove(
        &self,
        kind: Kind,
        be: &str,
        domid: u32,
        devid: u32,
    ) -> Option<String> {
        let b = paths::check_backend_path(kind, be, domid, devid)?;
        if !self.runs_hotplug(b) {
            return None;
        }
        let keys = ["hotplug-status", "script", "node"]
            .iter()
            .map(|k| Req::read(&format!("{be}/{k}")))
            .collect();
        let Ok(vals) = self.xs.batch(NO_TX, keys).await else {
            return None;
        };
        let v: Vec<Option<String>> = vals
            .into_iter()
            .map(|r| opt(r).ok().flatten().map(utf8))
            .collect();
        v[0].as_ref()?;
        let native = kind == Kind::Vbd
            && self.config.hotplug == Hotplug::Auto
            && v[1].as_deref().is_none_or(|s| s == vbd::BLOCK_SCRIPT);
        if native {
            return v[2].clone().filter(|node| node.starts_with("/dev/loop"));
        }
        if let Err(e) = self.run_hotplug(kind, be, false, domid, devid).await {
            tracing::warn!(%be, "{e}");
        }
        None
    }
}
