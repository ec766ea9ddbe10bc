//! Helpers for the tests against the Xen lab (tests/xenlab/xenlab): they need XENSTORED_PATH
//! (printed by `xenlab up`). Without it they fail under CI (`CI` set, not `false`/`0`) and are skipped elsewhere, the skip
//! shown in the test command's summary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use vdev_core::Attributes;

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

pub fn uri() -> String {
    format!(
        "xen:///?socket={}",
        std::env::var("XENSTORED_PATH").unwrap()
    )
}

fn xenlab() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/xenlab/xenlab")
}

/// Run a shell command in dom0; its exit status and output.
pub fn dom0(cmd: &str) -> (bool, String) {
    let out = Command::new(xenlab())
        .arg("sh")
        .arg(cmd)
        .output()
        .expect("run tests/xenlab/xenlab sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
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
    }
}

/// The lab has one domU: tests of one binary take turns.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
