//! `qemu+ssh://` beside the local socket, on loopback, in one run (issue: remote hosts):
//!
//! - attach, list and detach (SCSI disk, no guest) over ssh beside the same on the local socket
//!   of the same QEMU, interleaved, medians;
//! - connect time (a new `Connection`: ssh login, agent, forward, QMP greeting) beside a local
//!   connect;
//! - a one-shot `vdev devices` over ssh beside a local one and beside `virsh -c
//!   qemu+ssh://... domblklist` listing a domain through libvirtd (started by
//!   `../shared/tools/libvirt-lab.sh`; the remote end is `nc -U` of its socket);
//! - 16 `qemu+ssh://` connections to 16 QEMUs opened concurrently from one process, beside one.
//!
//! sshd is a real OpenSSH server on 127.0.0.1 (`vdev_conformance::sshd`).
//! `cargo bench -p vdev-driver-qemu --bench ssh`.

#[path = "../tests/common/mod.rs"]
mod common;
mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Vm, VmSpec};
use util::{disk, median, ms};
use vdev_conformance::sshd::Sshd;
use vdev_core::{Connection, DetachOptions, DeviceType, Domain};
use vdev_driver_qemu as _;

const RUNS: usize = 40;
const ONE_SHOT_RUNS: usize = 15;

fn ssh_uri(sshd: &Sshd, path: &std::path::Path) -> String {
    format!(
        "qemu+ssh://{}{}?{}",
        sshd.authority(),
        path.display(),
        sshd.query()
    )
}

#[derive(Default)]
struct Ops {
    attach: Vec<Duration>,
    list: Vec<Duration>,
    detach: Vec<Duration>,
}

async fn cycle(conn: &Connection, d: &Domain, img: &str, ops: &mut Ops) {
    let t = Instant::now();
    let r = conn
        .attach(d, &DeviceType::DISK, &disk(img))
        .await
        .expect("attach");
    ops.attach.push(t.elapsed());
    let t = Instant::now();
    let listed = conn
        .devices(d, Some(&DeviceType::DISK))
        .await
        .expect("list");
    ops.list.push(t.elapsed());
    assert!(listed.iter().any(|x| x.reference == r));
    let t = Instant::now();
    conn.detach(d, &DeviceType::DISK, &r, &DetachOptions::default())
        .await
        .expect("detach");
    ops.detach.push(t.elapsed());
}

/// Build the `vdev` command (release) once; its path.
fn vdev_binary() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "vdev-cli",
            "--bin",
            "vdev",
        ])
        .current_dir(&root)
        .status()
        .expect("cargo build");
    assert!(st.success(), "building vdev failed");
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("release/vdev")
}

fn time_command(cmd: &mut Command) -> Result<Duration, String> {
    let t = Instant::now();
    let out = cmd.output().map_err(|e| e.to_string())?;
    let d = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(d)
}

/// The median one-shot `virsh domblklist` over ssh through libvirtd, or why not measured.
fn virsh_one_shot(sshd: &Sshd) -> Result<Duration, String> {
    if Command::new("nc").arg("-h").output().is_err() {
        return Err("nc (netcat-openbsd) is not installed".into());
    }
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    util::with_libvirt_lab(base.path(), |local_uri| {
        let socket = local_uri
            .split_once("socket=")
            .map(|(_, s)| s.to_owned())
            .ok_or("libvirt-lab.sh printed no socket")?;
        // libvirt's OpenSSH transport has no known_hosts option: a wrapper gives ssh the
        // same strict known-hosts file vdev uses.
        let wrapper = base.path().join("ssh-kh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec ssh -o UserKnownHostsFile={} \"$@\"\n",
                sshd.known_hosts.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let uri = format!(
            "qemu+ssh://{}/system?socket={socket}&keyfile={}&command={}&proxy=netcat",
            sshd.authority(),
            sshd.key.display(),
            wrapper.display()
        );
        let mut v = Vec::new();
        for _ in 0..ONE_SHOT_RUNS {
            v.push(time_command(
                Command::new("virsh")
                    .args(["-q", "-c", &uri, "domblklist", "lvbench"])
                    .stdin(std::process::Stdio::null()),
            )?);
        }
        Ok(median(v))
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sshd = vdev_conformance::sshd::start()
        .expect("the ssh bench needs sshd (apt-get install openssh-server)");
    let vm = Vm::start(VmSpec::default());
    let second = vm.dir.path().join(common::SECOND_SOCKET);
    let img = vm.image("b.raw", "raw");
    let img = img.to_str().unwrap();

    // Connect time.
    let mut local_connect = Vec::new();
    let mut ssh_connect = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let c = vdev_core::connect(&vm.uri()).await.unwrap();
        local_connect.push(t.elapsed());
        c.close().await.unwrap();
        let t = Instant::now();
        let c = vdev_core::connect(&ssh_uri(&sshd, &second)).await.unwrap();
        ssh_connect.push(t.elapsed());
        c.close().await.unwrap();
    }

    // Operations once connected, interleaved.
    let local = vdev_core::connect(&vm.uri()).await.unwrap();
    let remote = vdev_core::connect(&ssh_uri(&sshd, &second)).await.unwrap();
    let dl = local.domains().await.unwrap().remove(0);
    let dr = remote.domains().await.unwrap().remove(0);
    let (mut l, mut r) = (Ops::default(), Ops::default());
    for _ in 0..3 {
        cycle(&local, &dl, img, &mut Ops::default()).await;
        cycle(&remote, &dr, img, &mut Ops::default()).await;
    }
    for _ in 0..RUNS {
        cycle(&local, &dl, img, &mut l).await;
        cycle(&remote, &dr, img, &mut r).await;
    }
    local.close().await.unwrap();
    remote.close().await.unwrap();

    println!("qemu+ssh:// on loopback beside the local socket, one QEMU, medians of {RUNS}:");
    println!("| operation | local | over ssh | difference |");
    println!("|---|---|---|---|");
    for (name, a, b) in [
        ("connect", local_connect, ssh_connect),
        ("attach (scsi-hd)", l.attach, r.attach),
        ("list disks", l.list, r.list),
        ("detach to gone", l.detach, r.detach),
    ] {
        let (a, b) = (median(a), median(b));
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:+.2} ms |",
            ms(a),
            ms(b),
            ms(b) - ms(a)
        );
    }

    if std::env::var_os("VDEV_BENCH_SSH_QUICK").is_some() {
        return;
    }
    // One-shot commands.
    let vdev = vdev_binary();
    let one_shot = |uri: String| -> Duration {
        let mut v = Vec::new();
        for _ in 0..ONE_SHOT_RUNS {
            v.push(
                time_command(
                    Command::new(&vdev)
                        .args(["-c", &uri, "devices", "vm"])
                        .env_remove("RUST_LOG")
                        .stdin(std::process::Stdio::null()),
                )
                .expect("vdev devices"),
            );
        }
        median(v)
    };
    let vdev_local = one_shot(vm.uri());
    let vdev_ssh = one_shot(ssh_uri(&sshd, &vm.socket));
    // With persist=: the first process logs in and leaves the connection to later ones.
    let persist_uri = format!("{}&persist=60s", ssh_uri(&sshd, &vm.socket));
    let vdev_persist = one_shot(persist_uri.clone());
    println!();
    println!("one-shot listing, medians of {ONE_SHOT_RUNS} processes:");
    println!("| command | time |");
    println!("|---|---|");
    println!("| `vdev devices` local | {:.1} ms |", ms(vdev_local));
    println!("| `vdev devices` over qemu+ssh | {:.1} ms |", ms(vdev_ssh));
    println!(
        "| `vdev devices` over qemu+ssh with persist=60s (a login shared with earlier processes) | {:.1} ms |",
        ms(vdev_persist)
    );
    match virsh_one_shot(&sshd) {
        Ok(v) => println!(
            "| `virsh domblklist` over qemu+ssh (libvirtd, nc -U) | {:.1} ms ({:.2}x vdev's time; {:.1}x vdev's with persist) |",
            ms(v),
            ms(v) / ms(vdev_ssh),
            ms(v) / ms(vdev_persist)
        ),
        Err(why) => println!("| `virsh domblklist` over qemu+ssh | not measured: {why} |"),
    }

    // 16 connections to 16 QEMUs at once, beside one.
    let vms: Vec<Vm> = (0..16).map(|_| Vm::start(VmSpec::default())).collect();
    let mut one = Vec::new();
    let mut sixteen = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let c = vdev_core::connect(&ssh_uri(&sshd, &vms[0].socket))
            .await
            .unwrap();
        c.domains().await.unwrap();
        one.push(t.elapsed());
        c.close().await.unwrap();
        let t = Instant::now();
        let conns = futures::future::join_all(vms.iter().map(|v| async {
            let c = vdev_core::connect(&ssh_uri(&sshd, &v.socket))
                .await
                .unwrap();
            c.domains().await.unwrap();
            c
        }))
        .await;
        sixteen.push(t.elapsed());
        for c in conns {
            c.close().await.unwrap();
        }
    }
    println!();
    println!("opening qemu+ssh:// connections and listing domains, medians of 5:");
    println!("| | wall time |");
    println!("|---|---|");
    println!("| 1 connection to 1 QEMU | {:.1} ms |", ms(median(one)));
    println!(
        "| 16 connections to 16 QEMUs, concurrently, one process | {:.1} ms |",
        ms(median(sixteen))
    );
    drop(vms);
}
