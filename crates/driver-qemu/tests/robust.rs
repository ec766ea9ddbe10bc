//! The QEMU driver where users live: block devices, empty drives, separate connections sharing
//! one VM, a QEMU made slow on purpose, full or missing root ports, sources that would hang.
//! Real `qemu-system-x86_64` (no guest OS); an independent raw QMP client checks every step.

mod common;
#[path = "common/trace.rs"]
mod trace;

use std::process::Command;
use std::time::Duration;

use common::{qemu_available, Vm, VmSpec};
use vdev_core::{Attributes, Connection, DetachOptions, DeviceType, Domain, Error};
use vdev_driver_qemu as _;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

async fn open(uri: &str) -> (Connection, Domain) {
    let conn = vdev_core::connect(uri).await.expect("connect");
    // The one domain of this socket (named after the socket: `vm`, or `second` for the VM's
    // second socket).
    let d = conn.domains().await.expect("domains").remove(0);
    (conn, d)
}

/// A loop device over a file, released when dropped.
struct Loop(String);

impl Loop {
    fn new(file: &std::path::Path) -> Option<Loop> {
        let o = match Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                vdev_conformance::missing_real_part(&format!(
                    "losetup cannot run ({e}): apt-get install util-linux"
                ));
                return None;
            }
        };
        if !o.status.success() {
            let why = String::from_utf8_lossy(&o.stderr);
            vdev_conformance::missing_real_part(&format!("no loop device ({why})"));
            return None;
        }
        Some(Loop(String::from_utf8_lossy(&o.stdout).trim().to_owned()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[tokio::test]
async fn a_block_device_is_opened_with_host_device_and_listed_like_a_file() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let img = vm.image("blk.img", "raw");
    let Some(lo) = Loop::new(&img) else { return };
    let (conn, d) = open(&vm.uri()).await;
    let r = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("source", &lo.0), ("format", "raw")]),
        )
        .await
        .expect("a block device attaches");
    let mut raw = vm.raw();
    let blocks = raw.ok("query-named-block-nodes", serde_json::json!({"flat": true}));
    let file_node = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["file"] == lo.0.as_str() && n["drv"] == "host_device")
        .cloned();
    assert!(
        file_node.is_some(),
        "QEMU opened {} with host_device: {blocks}",
        lo.0
    );
    let dev = conn
        .devices(&d, Some(&DeviceType::DISK))
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.reference == r)
        .expect("listed");
    assert_eq!(dev.attributes.get("source"), Some(lo.0.as_str()));
    assert_eq!(dev.attributes.get("format"), Some("raw"));
    assert_eq!(dev.attributes.get("bus"), Some("scsi"));
    conn.detach(&d, &DeviceType::DISK, &r, &DetachOptions::default())
        .await
        .expect("detached");
    assert!(!raw.has_device(r.as_str()));
    assert_eq!(raw.leftovers(), Vec::<String>::new(), "nothing left open");
}

#[tokio::test]
async fn an_empty_drive_is_listed() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec {
        extra: vec!["-device".into(), "scsi-cd,id=cd0,bus=scsi0.0".into()],
        ..VmSpec::default()
    });
    let (conn, d) = open(&vm.uri()).await;
    let cd = conn
        .devices(&d, Some(&DeviceType::DISK))
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.reference.as_str() == "cd0")
        .expect("the empty drive is listed");
    assert_eq!(cd.attributes.get("model"), Some("scsi-cd"));
    assert_eq!(cd.attributes.get("medium"), Some("none"));
    assert_eq!(cd.attributes.get("source"), None);
}

/// Two connections (two processes' worth: separate sockets): a removal one asked for is
/// pending for the other, which can ask again; when QEMU deletes the device, the other one
/// collects its backend although the first is closed.
#[tokio::test]
async fn separate_connections_share_pending_removals() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let mut raw = vm.raw();
    let (a, d) = open(&vm.uri()).await;
    let r = a
        .attach(
            &d,
            &DeviceType::NETWORK,
            &attrs(&[("model", "virtio-net-pci")]),
        )
        .await
        .unwrap();
    let no_wait = DetachOptions {
        timeout: Duration::ZERO,
        force: false,
        ..Default::default()
    };
    let e = a
        .detach(&d, &DeviceType::NETWORK, &r, &no_wait)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RemovalPending { .. }), "{e}");
    a.close().await.unwrap();
    let (b, d2) = open(&vm.second_uri()).await;
    let listed = b.devices(&d2, Some(&DeviceType::NETWORK)).await.unwrap();
    let nic = listed.iter().find(|x| x.reference == r).expect("listed");
    assert_eq!(nic.state, vdev_core::DeviceState::RemovalPending);
    let e = b
        .detach(&d2, &DeviceType::NETWORK, &r, &no_wait)
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::RemovalPending { .. }),
        "asked again: {e}"
    );
    assert!(raw.has_device(r.as_str()), "without a guest the NIC stays");
    assert!(
        raw.network_info().contains(&format!("vdev-{r}")),
        "its netdev stays while the device exists"
    );
    b.close().await.unwrap();
}

/// Native PCIe hotplug completes a virtio-net unplug without a guest: the connection that asked
/// is closed before QEMU deletes the NIC, and the next connection (another socket) removes the
/// netdev it left.
#[tokio::test]
async fn the_next_connection_collects_what_a_closed_one_left() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec {
        extra: vec![
            "-global".into(),
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off".into(),
        ],
        ..VmSpec::default()
    });
    let mut raw = vm.raw();
    for model in ["virtio-net-pci", "e1000"] {
        let (a, d) = open(&vm.uri()).await;
        let r = a
            .attach(&d, &DeviceType::NETWORK, &attrs(&[("model", model)]))
            .await
            .unwrap();
        let no_wait = DetachOptions {
            timeout: Duration::ZERO,
            force: false,
            ..Default::default()
        };
        // Usually pending; without a guest QEMU sometimes completes the unplug while it runs
        // device_del, and then the event is there before the zero timeout is checked. Either
        // way the checks below hold.
        let e = a.detach(&d, &DeviceType::NETWORK, &r, &no_wait).await;
        assert!(
            matches!(e, Err(Error::RemovalPending { .. }) | Ok(())),
            "{model}: {e:?}"
        );
        a.close().await.unwrap();
        assert!(raw.wait_gone(r.as_str()), "{model}: QEMU deleted it");
        let (b, d2) = open(&vm.second_uri()).await;
        assert!(b
            .devices(&d2, None)
            .await
            .unwrap()
            .iter()
            .all(|x| x.reference != r));
        assert_eq!(raw.leftovers(), Vec::<String>::new(), "{model}");
        assert_eq!(raw.marked(), Vec::<String>::new(), "{model}");
        b.close().await.unwrap();
    }
}

/// QEMU made slow on purpose (SIGSTOP) while an attach is in flight: the attach's request
/// times out, QEMU resumes (SIGCONT) and runs what it had queued; the answer matches what QEMU
/// has: success with the device there, or an error with nothing left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_that_times_out_answers_what_qemu_really_has() {
    if !qemu_available() {
        return;
    }
    // The driver says (at debug level) when a request has timed out.
    trace::install(tracing::Level::DEBUG);
    for kind in ["disk", "network"] {
        let vm = Vm::start(VmSpec::default());
        let img = vm.image("slow.img", "raw");
        // QEMU resumes once a request has timed out, and must then answer what the driver
        // asks next within this bound: generous for a loaded machine.
        let uri = format!("{}?timeout=5s", vm.uri());
        let (conn, d) = open(&uri).await;
        conn.devices(&d, None).await.unwrap();
        let pid = vm.pid().to_string();
        let (t, a) = if kind == "disk" {
            (
                DeviceType::DISK,
                attrs(&[
                    ("source", img.to_str().unwrap()),
                    ("format", "raw"),
                    ("id", "slow0"),
                ]),
            )
        } else {
            (
                DeviceType::NETWORK,
                attrs(&[("id", "slow0"), ("model", "e1000")]),
            )
        };
        let mark = trace::mark();
        let resume = {
            let pid = pid.clone();
            std::thread::spawn(move || {
                // Resumed once a request of the attach has timed out (the driver's debug
                // event, told from other tests' by the 5 s that only this test gives).
                let waited = std::panic::catch_unwind(|| {
                    trace::wait_for_blocking(
                        mark,
                        Duration::from_secs(90),
                        "a request of the attach to time out (the driver's debug 'QMP command failed': 'QEMU did not answer ... within 5s')",
                        |seen| {
                            seen.iter().any(|e| {
                                e.message == "QMP command failed"
                                    && e.field("error").is_some_and(|m| {
                                        m.starts_with("QEMU did not answer")
                                            && m.ends_with("within 5s")
                                    })
                            })
                        },
                    )
                });
                Command::new("kill").args(["-CONT", &pid]).status().unwrap();
                if let Err(p) = waited {
                    std::panic::resume_unwind(p);
                }
            })
        };
        Command::new("kill").args(["-STOP", &pid]).status().unwrap();
        let r = conn.attach(&d, &t, &a).await;
        if let Err(p) = resume.join() {
            std::panic::resume_unwind(p);
        }
        let mut raw = vm.raw();
        let exists = raw.has_device("slow0");
        match &r {
            Ok(x) => {
                assert_eq!(x.as_str(), "slow0");
                assert!(exists, "{kind}: success only for a device that is there");
            }
            Err(e) => {
                assert!(!exists, "{kind}: an error, yet the device exists: {e}");
                assert_eq!(
                    raw.leftovers(),
                    Vec::<String>::new(),
                    "{kind}: half-made: {e}"
                );
            }
        }
        if exists {
            let listed = conn.devices(&d, Some(&t)).await.unwrap();
            assert!(listed.iter().any(|x| x.reference.as_str() == "slow0"));
        }
    }
}

#[tokio::test]
async fn root_ports_full_or_missing_name_the_fix() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec {
        root_ports: 1,
        ..VmSpec::default()
    });
    let (conn, d) = open(&vm.uri()).await;
    let img = vm.image("a.img", "raw");
    let img2 = vm.image("b.img", "raw");
    // The only port is taken by another client right before vdev's attach.
    let mut raw = vm.raw();
    raw.ok(
        "netdev_add",
        serde_json::json!({"type": "user", "id": "theirs"}),
    );
    raw.ok(
        "device_add",
        serde_json::json!({"driver": "virtio-net-pci", "id": "theirnic", "netdev": "theirs", "bus": "rp1"}),
    );
    let before = raw.snapshot();
    let e = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[
                ("source", img.to_str().unwrap()),
                ("format", "raw"),
                ("bus", "virtio"),
            ]),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pcie-root-port"), "{e}");
    assert!(
        !e.to_string().contains("source"),
        "does not blame source: {e}"
    );
    assert_eq!(raw.snapshot(), before, "nothing changed");
    drop(conn);

    let bare = Vm::start(VmSpec {
        root_ports: 0,
        ..VmSpec::default()
    });
    let (conn, d) = open(&bare.uri()).await;
    let mut raw = bare.raw();
    let before = raw.snapshot();
    let e = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[
                ("source", img2.to_str().unwrap()),
                ("format", "raw"),
                ("bus", "virtio"),
            ]),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("-device pcie-root-port"), "{e}");
    assert_eq!(raw.snapshot(), before, "nothing changed");
}

#[tokio::test]
async fn a_fifo_or_directory_source_is_refused_within_the_timeout() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let fifo = vm.dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (conn, d) = open(&format!("{}?timeout=2s", vm.uri())).await;
    let mut raw = vm.raw();
    let before = raw.snapshot();
    for (source, format) in [
        (fifo.to_str().unwrap(), "raw"),
        (fifo.to_str().unwrap(), "qcow2"),
        (vm.dir.path().to_str().unwrap(), "raw"),
    ] {
        let e = tokio::time::timeout(
            Duration::from_secs(30),
            conn.attach(
                &d,
                &DeviceType::DISK,
                &attrs(&[("source", source), ("format", format)]),
            ),
        )
        .await
        .expect("answered, not hung")
        .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidAttribute { name, .. } if name == "source"),
            "{source}: {e}"
        );
    }
    assert_eq!(raw.snapshot(), before);
}

/// QEMU killed in the middle of an attach: an error, not a hang; once QEMU is back at the same
/// socket, the next operation works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_killed_during_an_attach_is_an_error_and_the_next_operation_works() {
    if !qemu_available() {
        return;
    }
    let mut vm = Vm::start(VmSpec::default());
    let img = vm.image("k.raw", "raw");
    let (conn, d) = open(&format!("{}?timeout=2s", vm.uri())).await;
    conn.devices(&d, None).await.unwrap();
    // Stopped first, so that the attach is surely in flight when QEMU dies: killed once the
    // attach's request waits, unread, in its socket.
    let killer = common::kill_once_unread(vm.pid(), &vm.socket, "the attach's request");
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        conn.attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("source", img.to_str().unwrap()), ("format", "raw")]),
        ),
    )
    .await
    .expect("the attach ended instead of hanging");
    if let Err(p) = killer.join() {
        std::panic::resume_unwind(p);
    }
    assert!(
        r.is_err(),
        "QEMU died during the attach, yet it succeeded: {r:?}"
    );
    vm.kill(); // reap the process
    vm.restart();
    let d = conn.domains().await.expect("the domain is back").remove(0);
    let r = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("source", img.to_str().unwrap()), ("format", "raw")]),
        )
        .await
        .expect("the next attach works once QEMU is back");
    assert!(vm.raw().has_device(r.as_str()));
}
