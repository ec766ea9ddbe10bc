//! Helpers for the tests against the Xen lab (tests/xenlab/xenlab): they need XENSTORED_PATH
//! (printed by `xenlab up`; the `xen+ssh://` tests also XENLAB_SSH_URI). Without it they fail under CI (`CI` set, not `false`/`0`) and are skipped elsewhere, the skip
//! shown in the test command's summary.
#![allow(dead_code)]

use std::process::Command;

use vdev_core::Attributes;

pub mod relay;
#[path = "../../../driver-qemu/tests/common/trace.rs"]
pub mod trace;

/// The lab's xenstored socket, or `None` (after saying so) when the lab is not configured.
pub fn lab() -> Option<String> {
    match std::env::var("XENSTORED_PATH") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            vdev_conformance::missing_real_part(
                "XENSTORED_PATH is not set (start the Xen lab: set -a; eval \"$(tests/xenlab/xenlab up)\")",
            );
            None
        }
    }
}

/// The lab's domU.
pub fn domu() -> String {
    std::env::var("XENLAB_DOMU").unwrap_or_else(|_| "domu1".into())
}

/// The `xen+ssh://` URI into the lab's Domain-0 (`XENLAB_SSH_URI` from `xenlab up`, with the
/// run's key and known_hosts), with `extra` options appended; `None` (after saying so) when
/// the lab is not configured.
pub fn ssh_uri(extra: &str) -> Option<String> {
    lab()?;
    match std::env::var("XENLAB_SSH_URI") {
        Ok(u) if !u.is_empty() => Some(if extra.is_empty() {
            u
        } else {
            format!("{u}&{extra}")
        }),
        _ => {
            vdev_conformance::missing_real_part(
                "XENLAB_SSH_URI is not set (start the Xen lab: set -a; eval \"$(tests/xenlab/xenlab up)\")",
            );
            None
        }
    }
}

/// `losetup -a` in dom0 (sorted), read through the lab's command channel.
pub fn losetup_a() -> String {
    let (ok, out) = dom0("losetup -a | sort");
    assert!(ok, "losetup -a in dom0: {out}");
    out
}

/// The conformance kit's harness for the lab's domU over `uri`: disks of the domU, attached
/// from wherever `uri` points (shared by the local and the `xen+ssh://` kit).
pub async fn harness(uri: &str) -> vdev_conformance::Harness {
    use vdev_conformance::{Fixture, Harness};
    let conn = vdev_core::connect(uri).await.expect("connect");
    let readonly = vdev_core::connect_readonly(uri)
        .await
        .expect("read-only connect");
    let invalid_attrs = vec![
        attrs(&[("uname", "/root/lab/x.img"), ("dev", "xvdz")]),
        attrs(&[("uname", "nbd:/root/lab/x.img"), ("dev", "xvdz")]),
        attrs(&[("uname", "file:relative.img"), ("dev", "xvdz")]),
        attrs(&[("uname", "file:/root/../etc/passwd"), ("dev", "xvdz")]),
        attrs(&[("uname", "file:/root/lab/x.img"), ("dev", "vda")]),
        attrs(&[("uname", "file:/root/lab/x.img"), ("dev", "xvd/../a")]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("mode", "rx"),
        ]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("format", "qcow2"),
        ]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("backend", "no-such-domain"),
        ]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("backend", "4242"),
        ]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("backend", "../0"),
        ]),
    ];
    let make_attrs = Box::new(|i: usize| {
        // From xvde on: the lab's own tests use xvdb..xvdd.
        let dev = xvd(4 + i);
        attrs(&[
            ("uname", &format!("file:/root/lab/vdev-{dev}.img")),
            ("dev", &dev),
            ("mode", "w"),
        ])
    });
    Harness {
        conn,
        readonly,
        fixture: Fixture {
            domain: domu(),
            device_type: vdev_core::DeviceType::DISK,
            make_attrs,
            invalid_attrs,
            detach_timeout: std::time::Duration::from_secs(30),
            // Xen declares nothing updatable: the checks assert the core's Unsupported.
            update: None,
            concurrency: vdev_conformance::CONCURRENCY,
        },
        // The lab has one domU: the checks take turns.
        hold: Some(Box::new(SERIAL.lock().await)),
    }
}

pub fn uri() -> String {
    format!(
        "xen:///?socket={}",
        std::env::var("XENSTORED_PATH").unwrap()
    )
}

/// The lab's command channel, one place for every crate's tests (vdev-conformance).
#[allow(unused_imports)]
pub use vdev_conformance::xenlab::{dom0, dom0_within};

/// Run a dom0 script that must succeed; its output.
pub fn dom0_ok(script: &str) -> String {
    let (ok, out) = dom0(script);
    assert!(ok, "dom0 script failed:\n{script}\n---\n{out}");
    out
}

/// The domain's configuration as `xl list -l` prints it (what save and migrate use). libxl
/// leaves out entries whose device is not in XenStore: [`stored_config`] has them.
pub fn xl_list_l(name: &str) -> serde_json::Value {
    let out = dom0_ok(&format!("xl list -l {name} 2>/dev/null"));
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("xl list -l: {e}: {out}"));
    v[0]["config"].clone()
}

/// libxl's stored configuration of the domain as the file in Domain-0 holds it
/// (`/var/lib/xen/userdata-d.<domid>.<uuid>.libxl-json`, JSON ended by a NUL), parsed.
pub fn stored_config(name: &str) -> serde_json::Value {
    let out = dom0_ok(&format!(
        r#"id=$(xl domid {name}); f=$(ls /var/lib/xen/userdata-d.$id.*.libxl-json); tr -d '\0' < "$f""#
    ));
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("libxl's stored configuration: {e}: {out}"))
}

/// The entry of the array `arr` whose `key` is `val`.
pub fn entry<'a>(
    arr: &'a serde_json::Value,
    key: &str,
    val: &serde_json::Value,
) -> Option<&'a serde_json::Value> {
    arr.as_array()?.iter().find(|e| &e[key] == val)
}

/// A copy of a domain's stored configuration, put back when dropped if a test left the file
/// otherwise (a failed test must not leave entries in the lab's domU for the next).
pub struct StoredBackup(String);

impl StoredBackup {
    /// The backup, and the configuration as [`stored_config`] reads it (one call into Domain-0).
    pub fn new(name: &str) -> (StoredBackup, serde_json::Value) {
        let out = dom0_ok(&format!(
            r#"id=$(xl domid {name}); f=$(ls /var/lib/xen/userdata-d.$id.*.libxl-json); cp -p "$f" "$f.vdev-backup"; echo "$f"; tr -d '\0' < "$f""#
        ));
        let (file, text) = out
            .split_once('\n')
            .expect("the file's name, then the file");
        let config = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("libxl's stored configuration: {e}: {text}"));
        (StoredBackup(file.trim().to_owned()), config)
    }
}

impl Drop for StoredBackup {
    fn drop(&mut self) {
        let f = &self.0;
        let _ = dom0(&format!(
            "cmp -s '{f}' '{f}.vdev-backup' || cp -p '{f}.vdev-backup' '{f}'; rm -f '{f}.vdev-backup'"
        ));
    }
}

/// The lab's domU, paused (so that its guest cannot release a device) until this is dropped.
pub struct Paused;

impl Paused {
    pub fn new() -> Self {
        let (ok, out) = dom0(&format!("xl pause {}", domu()));
        assert!(ok, "xl pause: {out}");
        Paused
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let (ok, out) = dom0(&format!("xl unpause {}", domu()));
        assert!(ok || std::thread::panicking(), "xl unpause: {out}");
    }
}

/// `xenstore-ls -fp PATH` run on the host through the lab's socket (empty when absent).
pub fn xs_ls(path: &str) -> String {
    let out = Command::new("xenstore-ls")
        .arg("-fp")
        .arg(path)
        .env("XENSTORED_PATH", std::env::var("XENSTORED_PATH").unwrap())
        .output()
        .expect("xenstore-ls (package xenstore-utils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every XenStore node of a domain's disks: frontend, backend and libxl record.
pub fn disk_dump(domid: u32) -> String {
    [
        format!("/local/domain/{domid}/device/vbd"),
        "/local/domain/0/backend/vbd".to_owned(),
        format!("/libxl/{domid}/device/vbd"),
    ]
    .iter()
    .map(|p| xs_ls(p))
    .collect::<Vec<_>>()
    .join("")
}

pub fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

/// `xvd` + the letters of disk `k` (0 = a, 26 = aa).
pub fn xvd(k: usize) -> String {
    xen_devid::xvd_name(k as u32)
}

/// A connection to the lab's xenstored and its domU, or `None` when the lab is not configured.
pub async fn open() -> Option<(vdev_core::Connection, vdev_core::Domain)> {
    lab()?;
    let conn = vdev_core::connect(&uri()).await.expect("connect");
    let d = conn.domain(&domu()).await.expect("the lab's domU");
    Some((conn, d))
}

/// Detach options for `--force`.
pub fn force() -> vdev_core::DetachOptions {
    vdev_core::DetachOptions {
        timeout: std::time::Duration::from_secs(30),
        force: true,
        ..Default::default()
    }
}

/// The lab has one domU: tests of one binary take turns.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests to the lab's xenstored on one connection of the test's own, pipelined (all sent,
/// then every answer read): `(type, payload)` each, answered in order with the reply's payload
/// or the errno xenstored named. For the tests' own writes (fake domains, values a guest could
/// write), in few round trips.
pub fn xs_raw(reqs: &[(u32, Vec<u8>)]) -> Vec<Result<Vec<u8>, String>> {
    use std::io::{Read, Write};
    let path = std::env::var("XENSTORED_PATH").expect("XENSTORED_PATH");
    let mut s = std::os::unix::net::UnixStream::connect(&path).expect("connect to xenstored");
    s.set_read_timeout(Some(std::time::Duration::from_secs(300)))
        .unwrap();
    let mut rd = s.try_clone().unwrap();
    let n = reqs.len();
    let reader = std::thread::spawn(move || {
        let mut out: Vec<Option<Result<Vec<u8>, String>>> = vec![None; n];
        for _ in 0..n {
            let mut hdr = [0u8; 16];
            rd.read_exact(&mut hdr).expect("a reply from xenstored");
            let w = |i: usize| u32::from_le_bytes(hdr[i * 4..i * 4 + 4].try_into().unwrap());
            let mut body = vec![0u8; w(3) as usize];
            rd.read_exact(&mut body).expect("a reply from xenstored");
            let i = w(1) as usize - 1;
            out[i] = Some(if w(0) == 16 {
                Err(String::from_utf8_lossy(&body)
                    .trim_end_matches('\0')
                    .to_owned())
            } else {
                Ok(body)
            });
        }
        out.into_iter().map(|o| o.unwrap()).collect::<Vec<_>>()
    });
    let mut buf = Vec::new();
    for (i, (ty, payload)) in reqs.iter().enumerate() {
        for w in [*ty, i as u32 + 1, 0, payload.len() as u32] {
            buf.extend_from_slice(&w.to_le_bytes());
        }
        buf.extend_from_slice(payload);
    }
    s.write_all(&buf).expect("write to xenstored");
    reader.join().expect("the reader")
}

/// WRITE `path` = `value` (raw bytes: a NUL, or any length xenstored takes) for each pair.
pub fn xs_write_all(pairs: &[(String, Vec<u8>)]) {
    let reqs: Vec<(u32, Vec<u8>)> = pairs
        .iter()
        .map(|(p, v)| {
            let mut b = p.as_bytes().to_vec();
            b.push(0);
            b.extend_from_slice(v);
            (11, b)
        })
        .collect();
    for (r, (p, _)) in xs_raw(&reqs).into_iter().zip(pairs) {
        r.unwrap_or_else(|e| panic!("writing {p}: {e}"));
    }
}

/// RM each path (missing ones are fine).
pub fn xs_rm_all(paths: &[String]) {
    let reqs: Vec<(u32, Vec<u8>)> = paths
        .iter()
        .map(|p| {
            let mut b = p.as_bytes().to_vec();
            b.push(0);
            (13, b)
        })
        .collect();
    for (r, p) in xs_raw(&reqs).into_iter().zip(paths) {
        if let Err(e) = r {
            assert!(e == "ENOENT", "removing {p}: {e}");
        }
    }
}

/// An `ssh -R` from the lab's Domain-0 back to this machine: a unix socket at `remote` in
/// Domain-0 whose connections reach `local` here. Killed by pid, and the socket removed, on drop.
pub struct ReverseForward {
    child: std::process::Child,
    pub remote: String,
}

impl ReverseForward {
    pub fn start(remote: &str, local: &std::path::Path) -> ReverseForward {
        let key = std::env::var("XENLAB_SSH_KEY").expect("XENLAB_SSH_KEY");
        let kh = std::env::var("XENLAB_SSH_KNOWN_HOSTS").expect("XENLAB_SSH_KNOWN_HOSTS");
        let port = std::env::var("XENLAB_SSH_PORT").unwrap_or_else(|_| "12022".into());
        let child = Command::new("ssh")
            .args(["-i", &key, "-o"])
            .arg(format!("UserKnownHostsFile={kh}"))
            .args([
                "-o",
                "ExitOnForwardFailure=yes",
                "-o",
                "BatchMode=yes",
                "-p",
                &port,
                "-N",
                "-R",
            ])
            .arg(format!("{remote}:{}", local.display()))
            .arg("root@127.0.0.1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ssh");
        let f = ReverseForward {
            child,
            remote: remote.to_owned(),
        };
        for _ in 0..60 {
            if dom0(&format!("test -S {remote}")).0 {
                return f;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        panic!("the reverse forward {remote} did not appear in Domain-0");
    }
}

impl Drop for ReverseForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = dom0(&format!("rm -f {}", self.remote));
    }
}
