//! The QEMU driver over `qemu+ssh://`, against a real QEMU and a real OpenSSH server on
//! loopback (`vdev_conformance::sshd`): the conformance kit, attach/list/detach checked by an
//! independent raw QMP client on its own socket, and bad input and faults, each leaving QEMU as
//! it was.

mod common;
#[path = "common/harness.rs"]
mod harness;

use std::sync::Arc;
use std::time::Duration;

use common::{qemu_available, Vm, VmSpec};
use vdev_conformance::sshd::Sshd;
use vdev_core::{Attributes, DetachOptions, DeviceType, Error, RemoteErrorKind};
use vdev_driver_qemu as _;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

fn ssh_uri(sshd: &Sshd, path: &std::path::Path, extra: &str) -> String {
    format!(
        "qemu+ssh://{}{}?{}{extra}",
        sshd.authority(),
        path.display(),
        sshd.query()
    )
}

/// The conformance kit, every check over its own ssh connection.
mod conformance_over_ssh {
    use super::*;
    use vdev_conformance::Harness;

    async fn setup() -> Option<Harness> {
        // No sshd: a skip, reported by sshd::start (a failure under CI).
        let sshd = Arc::new(vdev_conformance::sshd::start()?);
        let s = sshd.clone();
        harness::harness(move |socket| ssh_uri(&s, socket, ""), Some(sshd)).await
    }

    vdev_conformance::conformance_tests!(setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_list_detach_over_ssh_checked_by_a_raw_client() {
    if !qemu_available() {
        return;
    }
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let vm = Vm::start(VmSpec::default());
    let mut raw = vm.raw();
    let conn = vdev_core::connect(&ssh_uri(&sshd, &vm.socket, ""))
        .await
        .unwrap();
    let domains = conn.domains().await.unwrap();
    assert_eq!(domains.len(), 1);
    let dom = domains[0].clone();
    let img = vm.image("disk.qcow2", "qcow2");
    let r = conn
        .attach(
            &dom,
            &DeviceType::DISK,
            &attrs(&[("source", img.to_str().unwrap()), ("format", "qcow2")]),
        )
        .await
        .unwrap();
    assert!(raw.has_device(r.as_str()), "QEMU has no device {r}");
    let node = raw.node_of(r.as_str()).expect("the disk has a node");
    assert!(node.starts_with("vdev-"), "{node}");
    let listed = conn.devices(&dom, Some(&DeviceType::DISK)).await.unwrap();
    let d = listed.iter().find(|d| d.reference == r).expect("listed");
    assert_eq!(d.attributes.get("source"), Some(img.to_str().unwrap()));
    let nic = conn
        .attach(
            &dom,
            &DeviceType::NETWORK,
            &attrs(&[("mac", "52:54:00:12:34:56")]),
        )
        .await
        .unwrap();
    assert!(raw.has_device(nic.as_str()));
    conn.detach(&dom, &DeviceType::DISK, &r, &DetachOptions::default())
        .await
        .unwrap();
    assert!(raw.wait_gone(r.as_str()), "{r} is still there");
    // A PCI NIC needs a guest to let go (there is none): its removal is pending, recorded in
    // QEMU where every client sees it.
    match conn
        .detach(&dom, &DeviceType::NETWORK, &nic, &DetachOptions::default())
        .await
    {
        Err(Error::RemovalPending { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(raw.marked(), vec![nic.to_string()]);
    assert_eq!(raw.leftovers(), Vec::<String>::new());
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_sockets_over_ssh() {
    if !qemu_available() {
        return;
    }
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sockets = dir.path().join("vms");
    std::fs::create_dir(&sockets).unwrap();
    let vms: Vec<Vm> = ["alpha", "beta"]
        .iter()
        .map(|n| {
            Vm::start_at(
                VmSpec {
                    name: Some(n.to_string()),
                    ..VmSpec::default()
                },
                tempfile::tempdir().unwrap(),
                sockets.join(format!("{n}.qmp")),
            )
        })
        .collect();
    let conn = vdev_core::connect(&ssh_uri(&sshd, &sockets, ""))
        .await
        .unwrap();
    let mut names: Vec<String> = conn
        .domains()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    drop(vms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_over_ssh_changes_nothing() {
    if !qemu_available() {
        return;
    }
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let vm = Vm::start(VmSpec::default());
    let mut raw = vm.raw();
    let before = raw.snapshot();

    // A remote socket that does not exist: the error names it and the host.
    let missing = vm.dir.path().join("nope.qmp");
    let e = vdev_core::connect(&ssh_uri(&sshd, &missing, ""))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("nope.qmp") && msg.contains("127.0.0.1"),
        "{msg}"
    );
    // A host that ssh would read as an option: refused before anything runs.
    let e = vdev_core::connect(&format!(
        "qemu+ssh://-oProxyCommand=touch%20{}/pwned{}",
        vm.dir.path().display(),
        vm.socket.display()
    ))
    .await
    .unwrap_err();
    assert!(matches!(e, Error::InvalidUri { .. }), "{e}");
    assert!(!vm.dir.path().join("pwned").exists());
    // An unknown host key (strict checking).
    let kh = sshd.dir.path().join("empty_kh");
    std::fs::write(&kh, "").unwrap();
    let e = vdev_core::connect(&format!(
        "qemu+ssh://{}{}?keyfile={}&known_hosts={}",
        sshd.authority(),
        vm.socket.display(),
        sshd.key.display(),
        kh.display()
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                kind: RemoteErrorKind::HostKey,
                ..
            }
        ),
        "{e}"
    );
    // A wrong key.
    let wrong = sshd.dir.path().join("wrong");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong)
        .status()
        .unwrap();
    let e = vdev_core::connect(&format!(
        "qemu+ssh://{}{}?keyfile={}&known_hosts={}",
        sshd.authority(),
        vm.socket.display(),
        wrong.display(),
        sshd.known_hosts.display()
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Remote {
                kind: RemoteErrorKind::Authentication,
                ..
            }
        ),
        "{e}"
    );
    // An option the transport does not know, and a local option over ssh.
    for q in ["&bogus=1", "&socket=/x"] {
        let e = vdev_core::connect(&ssh_uri(&sshd, &vm.socket, q))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidUri { .. }), "{q}: {e}");
    }
    // An image that does not exist on the host, over a good connection.
    let conn = vdev_core::connect(&ssh_uri(&sshd, &vm.socket, ""))
        .await
        .unwrap();
    let dom = conn.domains().await.unwrap()[0].clone();
    let e = conn
        .attach(
            &dom,
            &DeviceType::DISK,
            &attrs(&[("source", "/nonexistent/disk.raw"), ("format", "raw")]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidAttribute { name, .. } if name == "source"),
        "{e}"
    );
    let plain = vm.image("plain.raw", "raw");
    let e = conn
        .attach(
            &dom,
            &DeviceType::DISK,
            &attrs(&[("source", plain.to_str().unwrap()), ("format", "qcow2")]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidAttribute { name, .. } if name == "format"),
        "{e}"
    );
    assert_eq!(raw.snapshot(), before, "a refused operation changed QEMU");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sshd_that_forbids_socket_forwarding_is_a_clear_error() {
    if !qemu_available() {
        return;
    }
    let Some(sshd) = vdev_conformance::sshd::start_with("AllowStreamLocalForwarding no") else {
        return;
    };
    let vm = Vm::start(VmSpec::default());
    let e = vdev_core::connect(&ssh_uri(&sshd, &vm.socket, ""))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("AllowStreamLocalForwarding"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_killed_in_the_middle_of_an_attach() {
    if !qemu_available() {
        return;
    }
    let Some(mut sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let vm = Vm::start(VmSpec::default());
    let mut raw = vm.raw();
    let conn = Arc::new(
        vdev_core::connect(&ssh_uri(&sshd, &vm.socket, "&timeout=20s"))
            .await
            .unwrap(),
    );
    let dom = conn.domains().await.unwrap()[0].clone();
    let before = raw.snapshot();
    let img = vm.image("mid.raw", "raw");
    // QEMU stopped: the attach's requests wait in its socket while sshd dies.
    let pid = vm.pid().to_string();
    let signal = |s: &str| {
        assert!(std::process::Command::new("kill")
            .args([s, &pid])
            .status()
            .unwrap()
            .success())
    };
    signal("-STOP");
    let c = conn.clone();
    let d = dom.clone();
    let a = attrs(&[
        ("source", img.to_str().unwrap()),
        ("format", "raw"),
        ("id", "mid0"),
    ]);
    let attach = tokio::spawn(async move { c.attach(&d, &DeviceType::DISK, &a).await });
    // Until the attach's first request waits, unread, in the stopped QEMU's socket.
    let socket = vm.socket.clone();
    tokio::task::spawn_blocking(move || common::wait_unread(&socket, "the attach's request"))
        .await
        .unwrap();
    sshd.kill();
    sshd.restart();
    signal("-CONT");
    let outcome = tokio::time::timeout(Duration::from_secs(120), attach)
        .await
        .expect("the attach ended")
        .unwrap();
    // Whatever the outcome, it is the truth, seen by an independent client.
    match &outcome {
        Ok(r) => {
            assert_eq!(r.as_str(), "mid0");
            assert!(raw.has_device("mid0"), "attach said Ok, QEMU has no device");
        }
        Err(e) => {
            assert!(
                !raw.has_device("mid0"),
                "attach failed ({e}) but the device is there"
            );
            assert_eq!(
                raw.snapshot(),
                before,
                "a failed attach left something: {e}"
            );
        }
    }
    assert_eq!(raw.leftovers(), Vec::<String>::new());
    // The next operation works over a new ssh connection.
    let listed = conn.devices(&dom, Some(&DeviceType::DISK)).await.unwrap();
    assert_eq!(
        listed.iter().any(|d| d.reference.as_str() == "mid0"),
        outcome.is_ok()
    );
}

/// `persist=`: the first connection logs in and leaves its ssh connection behind; a later
/// connection (as in a later `vdev` process) lists and attaches through it without starting any
/// ssh process or logging in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_lets_later_connections_skip_the_login() {
    if !qemu_available() {
        return;
    }
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let vm = Vm::start(VmSpec::default());
    let mut raw = vm.raw();
    let uri = ssh_uri(&sshd, &vm.socket, "&persist=30s");
    let logins = || sshd.log().matches("Accepted publickey").count();
    let first = vdev_core::connect(&uri).await.unwrap();
    let dom = first.domains().await.unwrap()[0].clone();
    first.close().await.unwrap();
    assert_eq!(logins(), 1);
    let later = vdev_core::connect(&uri).await.unwrap();
    let listed = later.devices(&dom, Some(&DeviceType::DISK)).await.unwrap();
    // Only this test's (other tests of this binary run beside it, with sshds of their own).
    let started = sshd.ssh_clients();
    assert!(
        started.is_empty(),
        "a later connection started ssh although the shared one was there: {started:?}"
    );
    let img = vm.image("p.raw", "raw");
    let r = later
        .attach(
            &dom,
            &DeviceType::DISK,
            &attrs(&[("source", img.to_str().unwrap()), ("format", "raw")]),
        )
        .await
        .unwrap();
    assert!(raw.has_device(r.as_str()));
    let after = later.devices(&dom, Some(&DeviceType::DISK)).await.unwrap();
    assert_eq!(after.len(), listed.len() + 1);
    later.close().await.unwrap();
    assert_eq!(logins(), 1, "{}", sshd.log());
}

/// `persist=` with a directory of sockets (the README's `qemu+ssh://HOST/run/vms?persist=60s`):
/// a later connection, as in a later `vdev` process, still sees a directory and lists its
/// machine. The shared connection once forwarded the directory's path as if it were a socket, and
/// every later connection took it for one ("QEMU of domain 'vms' does not answer").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_with_a_directory_of_sockets_lists_it_again_later() {
    if !qemu_available() {
        return;
    }
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let vms = dir.path().join("vms");
    std::fs::create_dir(&vms).expect("vms dir");
    let _vm = Vm::start_at(VmSpec::default(), dir, vms.join("vm1.qmp"));
    let uri = ssh_uri(&sshd, &vms, "&persist=30s");
    for n in 1..=3 {
        let conn = vdev_core::connect(&uri)
            .await
            .unwrap_or_else(|e| panic!("connection {n}: {e}"));
        let names: Vec<String> = conn
            .domains()
            .await
            .unwrap_or_else(|e| panic!("connection {n}: listing: {e}"))
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["vm1"], "connection {n}");
        conn.close().await.unwrap();
    }
}

/// `persist=` after the shared ssh connection ended without its users (stopped, as when its host
/// goes away): OpenSSH leaves the forwards' socket files behind, and the next connection still
/// reaches QEMU through a new shared connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_works_again_after_the_shared_connection_ended() {
    if !qemu_available() {
        return;
    }
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let vm = Vm::start(VmSpec::default());
    let uri = ssh_uri(&sshd, &vm.socket, "&persist=30s");
    // Where the shared connection keeps its control socket and its forward to QEMU's socket.
    let files = vdev_remote::Host::from_uri(
        &mut vdev_core::ConnectUri::parse(&uri).unwrap(),
        Duration::from_secs(30),
    )
    .unwrap()
    .shared_files(&vm.socket)
    .expect("persist= has shared files")
    .unwrap();
    let first = vdev_core::connect(&uri).await.unwrap();
    let dom = first.domains().await.unwrap()[0].clone();
    first.devices(&dom, None).await.unwrap();
    first.close().await.unwrap();
    assert!(
        files.control.exists() && files.forward.exists(),
        "the shared connection's files after the first connection: {files:?}"
    );
    // End the shared connection as its host going away would, leaving its files.
    let ssh_o = |op: &str| {
        std::process::Command::new("ssh")
            .arg("-o")
            .arg(format!("ControlPath={}", files.control.display()))
            .args(["-O", op, "unused"])
            .output()
    };
    let st = ssh_o("exit").expect("ssh -O exit");
    assert!(st.status.success(), "ssh -O exit: {st:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ssh_o("check").is_ok_and(|o| o.status.success()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the shared connection did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        files.forward.exists(),
        "OpenSSH removed the forward's file when its connection ended: this test has nothing to check"
    );
    let later = vdev_core::connect(&uri).await.unwrap();
    let listed = later.devices(&dom, None).await;
    assert!(
        listed.is_ok(),
        "after the shared connection ended: {listed:?}"
    );
    later.close().await.unwrap();
}
