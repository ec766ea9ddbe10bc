//! The QEMU driver against real `qemu-system-x86_64` processes (no guest OS). After every
//! operation an independent raw QMP client checks what QEMU really has.

mod common;

use std::time::Duration;

use common::{qemu_available, Vm, VmSpec};
use futures::StreamExt;
use serde_json::json;
use vdev_core::{
    Attributes, Connection, DetachOptions, Device, DeviceEvent, DeviceRef, DeviceState, DeviceType,
    Domain, Error,
};
use vdev_driver_qemu as _;

/// Whether an error is the one a case expects.
type IsExpected = fn(&Error) -> bool;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

fn wait(t: Duration) -> DetachOptions {
    DetachOptions {
        timeout: t,
        force: false,
        ..Default::default()
    }
}

async fn open(vm: &Vm) -> (Connection, Domain) {
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let d = conn
        .domain("vm")
        .await
        .expect("the domain is named after the socket");
    (conn, d)
}

async fn listed(conn: &Connection, d: &Domain, r: &DeviceRef) -> Option<Device> {
    conn.devices(d, None)
        .await
        .expect("list")
        .into_iter()
        .find(|x| &x.reference == r)
}

/// Attach, list and detach a disk on a bus whose unplug QEMU completes without a guest.
async fn disk_round_trip(bus: &str, model: &str) {
    let vm = Vm::start(VmSpec::default());
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let before = raw.snapshot();
    let img = vm.image("d.qcow2", "qcow2");
    let r = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[
                ("source", img.to_str().unwrap()),
                ("format", "qcow2"),
                ("bus", bus),
            ]),
        )
        .await
        .expect("attach");
    assert!(
        raw.devices().contains(&(r.to_string(), model.to_owned())),
        "QEMU has no {model} {r}"
    );
    let node = raw.node_of(r.as_str()).expect("the disk has a node");
    assert!(raw.nodes().contains(&node), "node {node} missing");
    let dev = listed(&conn, &d, &r).await.expect("listed");
    assert_eq!(dev.device_type, DeviceType::DISK);
    assert_eq!(dev.state, DeviceState::Connected);
    assert_eq!(dev.attributes.get("bus"), Some(bus));
    assert_eq!(dev.attributes.get("format"), Some("qcow2"));
    assert_eq!(dev.attributes.get("source"), img.to_str());
    assert_eq!(dev.attributes.get("model"), Some(model));
    conn.detach(&d, &DeviceType::DISK, &r, &wait(Duration::from_secs(10)))
        .await
        .expect("detach completes without a guest");
    assert_eq!(raw.snapshot(), before, "device or node left behind");
    assert!(listed(&conn, &d, &r).await.is_none());
}

#[tokio::test]
async fn scsi_disk_attach_list_detach() {
    if qemu_available() {
        disk_round_trip("scsi", "scsi-hd").await;
    }
}

#[tokio::test]
async fn usb_disk_attach_list_detach() {
    if qemu_available() {
        disk_round_trip("usb", "usb-storage").await;
    }
}

#[tokio::test]
async fn virtio_disk_without_guest_stays_pending() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let img = vm.image("v.raw", "raw");
    let mut events = conn.watch(&d).await.unwrap();
    let r = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[
                ("source", img.to_str().unwrap()),
                ("format", "raw"),
                ("bus", "virtio"),
                ("id", "vd1"),
            ]),
        )
        .await
        .expect("attach");
    assert_eq!(r.as_str(), "vd1");
    assert!(raw
        .devices()
        .contains(&("vd1".into(), "virtio-blk-pci".into())));
    let e = conn
        .detach(&d, &DeviceType::DISK, &r, &wait(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RemovalPending { .. }), "{e:?}");
    // Still there, with its node, and reported as pending (not removed).
    assert!(raw.has_device("vd1"));
    let node = raw.qom_get("vd1", "drive");
    assert!(raw.nodes().contains(&node.as_str().unwrap().to_owned()));
    assert_eq!(
        listed(&conn, &d, &r).await.unwrap().state,
        DeviceState::RemovalPending
    );
    // Detaching again waits again: the same answer, not an error from QEMU.
    let e = conn
        .detach(&d, &DeviceType::DISK, &r, &wait(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RemovalPending { .. }), "{e:?}");
    assert!(raw.has_device("vd1"));
    let mut seen = Vec::new();
    while let Ok(Some(Ok(ev))) =
        tokio::time::timeout(Duration::from_millis(200), events.next()).await
    {
        seen.push(ev);
    }
    assert!(seen
        .iter()
        .any(|e| matches!(e, DeviceEvent::Added { reference, .. } if reference == &r)));
    assert!(seen.iter().any(|e| matches!(
        e,
        DeviceEvent::StateChanged {
            state: DeviceState::RemovalPending,
            ..
        }
    )));
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, DeviceEvent::Removed { .. })),
        "reported removed: {seen:?}"
    );
}

async fn nic_round_trip(model: &str, completes: bool) {
    let vm = Vm::start(VmSpec::default());
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let before = raw.snapshot();
    let r = conn
        .attach(
            &d,
            &DeviceType::NETWORK,
            &attrs(&[("model", model), ("netdev", "user")]),
        )
        .await
        .expect("attach");
    assert!(raw.devices().contains(&(r.to_string(), model.to_owned())));
    let mac = raw.qom_get(r.as_str(), "mac");
    let mac = mac.as_str().unwrap();
    assert!(mac.starts_with("52:54:00:"), "{mac}");
    let netdev = raw.qom_get(r.as_str(), "netdev");
    let netdev = netdev.as_str().unwrap().to_owned();
    assert!(
        raw.network_info().contains(&netdev),
        "netdev {netdev} missing"
    );
    let dev = listed(&conn, &d, &r).await.expect("listed");
    assert_eq!(dev.device_type, DeviceType::NETWORK);
    assert_eq!(dev.attributes.get("mac"), Some(mac));
    assert_eq!(dev.attributes.get("model"), Some(model));
    let res = conn
        .detach(
            &d,
            &DeviceType::NETWORK,
            &r,
            &wait(Duration::from_millis(if completes { 10_000 } else { 500 })),
        )
        .await;
    if completes {
        res.expect("detach");
        assert_eq!(raw.snapshot(), before, "device or netdev left behind");
    } else {
        assert!(matches!(res, Err(Error::RemovalPending { .. })), "{res:?}");
        assert!(raw.has_device(r.as_str()));
        assert!(raw.network_info().contains(&netdev));
        assert_eq!(
            listed(&conn, &d, &r).await.unwrap().state,
            DeviceState::RemovalPending
        );
    }
}

#[tokio::test]
async fn usb_net_attach_list_detach() {
    if qemu_available() {
        nic_round_trip("usb-net", true).await;
    }
}

#[tokio::test]
async fn virtio_net_without_guest_stays_pending() {
    if qemu_available() {
        nic_round_trip("virtio-net-pci", false).await;
    }
}

#[tokio::test]
async fn e1000_without_guest_stays_pending() {
    if qemu_available() {
        nic_round_trip("e1000", false).await;
    }
}

#[tokio::test]
async fn options_and_passthrough_reach_qemu_typed() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let img = vm.image("p.qcow2", "qcow2");
    let r = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[
                ("source", img.to_str().unwrap()),
                ("format", "qcow2"),
                ("readonly", "true"),
                ("serial", "SER123"),
                ("device.rotation_rate", "7200"),
                ("device.removable", "on"),
                ("blockdev.l2-cache-size", "1048576"),
                ("blockdev.file.locking", "off"),
            ]),
        )
        .await
        .expect("attach with pass-through");
    assert_eq!(raw.qom_get(r.as_str(), "serial"), json!("SER123"));
    assert_eq!(raw.qom_get(r.as_str(), "rotation_rate"), json!(7200));
    assert_eq!(raw.qom_get(r.as_str(), "removable"), json!(true));
    let dev = listed(&conn, &d, &r).await.unwrap();
    assert_eq!(dev.attributes.get("readonly"), Some("true"));
    let blocks = raw.ok("query-block", json!({}));
    let b = blocks
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["qdev"] == json!(r.as_str()))
        .expect("query-block entry");
    assert_eq!(b["inserted"]["ro"], json!(true));
    let mac = "52:54:00:aa:bb:cc";
    let n = conn
        .attach(
            &d,
            &DeviceType::NETWORK,
            &attrs(&[("model", "usb-net"), ("mac", mac), ("netdev.ipv6", "off")]),
        )
        .await
        .expect("NIC with pass-through");
    assert_eq!(raw.qom_get(n.as_str(), "mac"), json!(mac));
    // The MAC is taken now.
    let before = raw.snapshot();
    let e = conn
        .attach(
            &d,
            &DeviceType::NETWORK,
            &attrs(&[("model", "usb-net"), ("mac", mac)]),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceExists { .. }), "{e:?}");
    assert_eq!(raw.snapshot(), before);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let rawimg = vm.image("r.raw", "raw");
    let src = rawimg.to_str().unwrap();
    let first = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("source", src), ("format", "raw"), ("id", "taken")]),
        )
        .await
        .expect("first disk");
    let other = vm.image("o.raw", "raw");
    let other = other.to_str().unwrap();
    let before = raw.snapshot();
    let before_listed = conn.devices(&d, None).await.unwrap();
    let cases: Vec<(&str, Attributes, IsExpected)> = vec![
        (
            "missing image",
            attrs(&[("source", "/nonexistent/x.raw"), ("format", "raw")]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "source"),
        ),
        (
            "wrong format",
            attrs(&[("source", other), ("format", "qcow2")]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "format"),
        ),
        (
            "unknown format",
            attrs(&[("source", other), ("format", "vmdk")]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "format"),
        ),
        (
            "unknown bus",
            attrs(&[("source", other), ("format", "raw"), ("bus", "floppy")]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "bus"),
        ),
        (
            "unknown device property",
            attrs(&[("source", other), ("format", "raw"), ("device.bogus", "1")]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "device.bogus"),
        ),
        (
            "bad value type",
            attrs(&[
                ("source", other),
                ("format", "raw"),
                ("device.rotation_rate", "fast"),
            ]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "device.rotation_rate"),
        ),
        (
            "unknown blockdev option",
            attrs(&[
                ("source", other),
                ("format", "raw"),
                ("blockdev.bogus", "1"),
            ]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "blockdev.bogus"),
        ),
        (
            "bad blockdev enum",
            attrs(&[
                ("source", other),
                ("format", "raw"),
                ("blockdev.file.locking", "maybe"),
            ]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "blockdev.file.locking"),
        ),
        // Passes the type check, refused by QEMU at device_add: the node must be rolled back.
        (
            "value QEMU refuses",
            attrs(&[
                ("source", other),
                ("format", "raw"),
                ("device.werror", "bogus"),
            ]),
            |e| matches!(e, Error::InvalidAttribute { .. }),
        ),
        (
            "duplicate id",
            attrs(&[("source", other), ("format", "raw"), ("id", "taken")]),
            |e| matches!(e, Error::DeviceExists { reference, .. } if reference == "taken"),
        ),
        // QEMU's image lock refuses it at device_add: the new node is rolled back.
        (
            "image in use",
            attrs(&[("source", src), ("format", "raw")]),
            |e| matches!(e, Error::InvalidAttribute { name, reason } if name == "source" && reason.contains("lock")),
        ),
        (
            "bad id",
            attrs(&[("source", other), ("format", "raw"), ("id", "9x")]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "id"),
        ),
        (
            "unknown attribute",
            attrs(&[("source", other), ("format", "raw"), ("speed", "1")]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "speed"),
        ),
    ];
    for (what, a, ok) in cases {
        let e = conn
            .attach(&d, &DeviceType::DISK, &a)
            .await
            .expect_err(what);
        assert!(ok(&e), "{what}: {e:?}");
        assert_eq!(raw.snapshot(), before, "{what} changed the machine");
    }
    let nic_cases: Vec<(&str, Attributes)> = vec![
        ("unknown model", attrs(&[("model", "ne2k_isa")])),
        ("bad mac", attrs(&[("mac", "52:54:00:zz:00:01")])),
        ("unknown netdev option", attrs(&[("netdev.bogus", "1")])),
        ("bad netdev value", attrs(&[("netdev.ipv6", "maybe")])),
        ("unknown netdev", attrs(&[("netdev", "vde")])),
    ];
    for (what, a) in nic_cases {
        let e = conn
            .attach(&d, &DeviceType::NETWORK, &a)
            .await
            .expect_err(what);
        assert!(matches!(e, Error::InvalidAttribute { .. }), "{what}: {e:?}");
        assert_eq!(raw.snapshot(), before, "{what} changed the machine");
    }
    let unknown = DeviceRef::new("nosuch").unwrap();
    let e = conn
        .detach(
            &d,
            &DeviceType::DISK,
            &unknown,
            &wait(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    // A disk's ref is not a NIC.
    let e = conn
        .detach(
            &d,
            &DeviceType::NETWORK,
            &first,
            &wait(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
    assert_eq!(raw.snapshot(), before);
    assert_eq!(conn.devices(&d, None).await.unwrap(), before_listed);
}

#[tokio::test]
async fn command_line_devices_are_listed_and_named_domain() {
    if !qemu_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("cl.raw");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let spec = VmSpec {
        name: Some("web1".into()),
        extra: vec![
            "-blockdev".into(),
            format!(
                "driver=raw,node-name=clnode,file.driver=file,file.filename={}",
                img.display()
            ),
            "-device".into(),
            "scsi-hd,drive=clnode,id=clsd,bus=scsi0.0".into(),
            "-netdev".into(),
            "user,id=cln0".into(),
            "-device".into(),
            "e1000,netdev=cln0,id=clnic,mac=52:54:00:01:02:03".into(),
        ],
        ..VmSpec::default()
    };
    let socket = dir.path().join("vm.qmp");
    let vm = Vm::start_at(spec, dir, socket);
    let conn = vdev_core::connect(&vm.uri()).await.unwrap();
    let d = conn.domain("web1").await.expect("named by -name");
    let devs = conn.devices(&d, None).await.unwrap();
    let disk = devs
        .iter()
        .find(|x| x.reference.as_str() == "clsd")
        .expect("command-line disk listed");
    assert_eq!(disk.device_type, DeviceType::DISK);
    assert_eq!(disk.attributes.get("source"), img.to_str());
    assert_eq!(disk.attributes.get("format"), Some("raw"));
    assert_eq!(disk.attributes.get("bus"), Some("scsi"));
    let nic = devs
        .iter()
        .find(|x| x.reference.as_str() == "clnic")
        .expect("command-line NIC listed");
    assert_eq!(nic.device_type, DeviceType::NETWORK);
    assert_eq!(nic.attributes.get("mac"), Some("52:54:00:01:02:03"));
    assert_eq!(nic.attributes.get("netdev-id"), Some("cln0"));
    // Controllers and root ports are not devices vdev manages.
    assert_eq!(devs.len(), 2, "{devs:?}");
    // A command-line disk is detached like any other; its node is not vdev's, so it stays.
    conn.detach(
        &d,
        &DeviceType::DISK,
        &disk.reference,
        &wait(Duration::from_secs(10)),
    )
    .await
    .expect("detach");
    let mut raw = vm.raw();
    assert!(!raw.has_device("clsd"));
    assert!(raw.nodes().contains(&"clnode".to_owned()));
}

#[tokio::test]
async fn directory_of_sockets_is_one_domain_each() {
    if !qemu_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = Vm::start_at(
        VmSpec::default(),
        tempfile::tempdir().unwrap(),
        dir.path().join("alpha.qmp"),
    );
    let b = Vm::start_at(
        VmSpec {
            name: Some("named-beta".into()),
            ..VmSpec::default()
        },
        tempfile::tempdir().unwrap(),
        dir.path().join("beta.qmp"),
    );
    let conn = vdev_core::connect(&format!("qemu://{}", dir.path().display()))
        .await
        .unwrap();
    let doms = conn.domains().await.unwrap();
    let names: Vec<&str> = doms.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["alpha", "named-beta"]);
    let ids: Vec<Option<u32>> = doms.iter().map(|d| d.id).collect();
    assert_eq!(
        conn.domains()
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect::<Vec<_>>(),
        ids,
        "ids are stable"
    );
    assert_eq!(
        conn.domain(&ids[1].expect("QEMU domains have ids").to_string())
            .await
            .unwrap()
            .name,
        "named-beta"
    );
    drop((a, b));
}

#[tokio::test]
async fn qemu_going_away_and_coming_back() {
    if !qemu_available() {
        return;
    }
    let mut vm = Vm::start(VmSpec::default());
    let (conn, d) = open(&vm).await;
    conn.devices(&d, None).await.expect("list while running");
    vm.kill();
    let e = conn.devices(&d, None).await.expect_err("QEMU is gone");
    assert!(
        matches!(e, Error::Backend { .. } | Error::DomainNotFound { .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("domain 'vm'"),
        "the error names the domain: {e}"
    );
    vm.restart();
    let d2 = conn.domain("vm").await.expect("picked up again");
    assert_eq!(d2.id, d.id, "same socket, same id");
    let img = vm.image("after.raw", "raw");
    let r = conn
        .attach(
            &d2,
            &DeviceType::DISK,
            &attrs(&[("source", img.to_str().unwrap()), ("format", "raw")]),
        )
        .await
        .expect("attach after restart");
    assert!(vm.raw().has_device(r.as_str()));
}

#[tokio::test]
async fn qemu_dying_during_detach_is_an_error_not_a_hang() {
    if !qemu_available() {
        return;
    }
    let mut vm = Vm::start(VmSpec::default());
    let (conn, d) = open(&vm).await;
    let img = vm.image("x.raw", "raw");
    let r = conn
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
        .unwrap();
    // Long enough for a guest, short enough that a hung detach fails the test within minutes.
    let long = wait(Duration::from_secs(120));
    let detach = conn.detach(&d, &DeviceType::DISK, &r, &long);
    let mut raw = vm.raw();
    let kill = async {
        // Once the detach waits for the guest: it has sent device_del and recorded the
        // pending removal (its marker object), within 60 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !raw.marked().contains(&r.as_str().to_owned()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the detach of {r} did not record its pending removal within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        vm.kill();
    };
    let (res, ()) = tokio::join!(detach, kill);
    let e = res.expect_err("QEMU died");
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
}

#[tokio::test]
async fn uri_options_and_tcp() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let e = vdev_core::connect(&format!("{}?bogus=1", vm.uri()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidUri { .. }), "{e:?}");
    vdev_core::connect(&format!("{}?timeout=5s", vm.uri()))
        .await
        .expect("known option");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tvm = Vm::start(VmSpec {
        tcp_port: Some(port),
        name: Some("tcpvm".into()),
        ..VmSpec::default()
    });
    let conn = vdev_core::connect(&format!("qemu+tcp://127.0.0.1:{port}"))
        .await
        .expect("tcp");
    let d = conn.domain("tcpvm").await.unwrap();
    let n = conn
        .attach(&d, &DeviceType::NETWORK, &attrs(&[("model", "usb-net")]))
        .await
        .unwrap();
    conn.detach(&d, &DeviceType::NETWORK, &n, &wait(Duration::from_secs(10)))
        .await
        .unwrap();
    drop(tvm);
}

#[tokio::test]
async fn changes_by_another_client_are_listed() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let one = vm.image("one.raw", "raw");
    let two = vm.image("two.raw", "raw");
    let add = |raw: &mut common::Raw, node: &str, img: &std::path::Path| {
        raw.ok("blockdev-add", json!({"driver": "raw", "node-name": node, "file": {"driver": "file", "filename": img}}));
        raw.ok(
            "device_add",
            json!({"driver": "scsi-hd", "id": "other", "drive": node, "bus": "scsi0.0"}),
        );
    };
    add(&mut raw, "o1", &one);
    let r = DeviceRef::new("other").unwrap();
    assert_eq!(
        listed(&conn, &d, &r)
            .await
            .expect("listed")
            .attributes
            .get("source"),
        one.to_str()
    );
    // Another client replaces the device under the same id with another image.
    raw.ok("device_del", json!({"id": "other"}));
    while !raw
        .events
        .iter()
        .any(|e| e["event"] == "DEVICE_DELETED" && e["data"]["device"] == "other")
    {
        let m = raw.next_message();
        raw.events.push(m);
    }
    raw.ok("blockdev-del", json!({"node-name": "o1"}));
    add(&mut raw, "o2", &two);
    // The driver learns of the deletion through QEMU's DEVICE_DELETED event: within 30 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = listed(&conn, &d, &r)
            .await
            .and_then(|x| x.attributes.get("source").map(str::to_owned));
        if seen.as_deref() == two.to_str() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listing does not show the device as it is now (source {}) within 30 s: {seen:?}",
            two.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
