//! Changes in place on a real QEMU: a CD-ROM drive's medium (with and without one, ejects, a
//! tray the guest has locked) and a NIC's link. An independent raw QMP client checks each step
//! (`query-block` for media and trays).

mod common;

use std::time::Duration;

use common::{guest, qemu_available, Vm, VmSpec};
use futures::StreamExt;
use serde_json::json;
use vdev_core::{Attributes, Connection, DeviceEvent, DeviceRef, DeviceType, Domain, Error};
use vdev_driver_qemu as _;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

async fn open(vm: &Vm) -> (Connection, Domain) {
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let d = conn.domain("vm").await.expect("domain vm");
    (conn, d)
}

async fn listed(conn: &Connection, d: &Domain, r: &DeviceRef) -> Attributes {
    conn.devices(d, None)
        .await
        .unwrap()
        .into_iter()
        .find(|x| &x.reference == r)
        .expect("listed")
        .attributes
}

#[tokio::test]
async fn cdrom_media_change_eject_and_insert() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let a = vm.image("a.iso", "raw");
    let b = vm.image("b.iso", "raw");
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let mut events = conn.events().await.unwrap();

    // An empty drive is a real thing.
    let empty = conn
        .attach(&d, &DeviceType::DISK, &attrs(&[("media", "cdrom")]))
        .await
        .expect("an empty CD-ROM drive");
    assert_eq!(raw.qom_get(empty.as_str(), "type"), "scsi-cd");
    assert!(raw.block(empty.as_str()).unwrap()["inserted"].is_null());
    let l = listed(&conn, &d, &empty).await;
    assert_eq!(l.get("media"), Some("cdrom"));
    assert_eq!(l.get("medium"), Some("none"));
    assert_eq!(l.get("tray"), Some("closed"));

    // Insert into the empty drive, then change, then eject.
    let nodes_before = raw.nodes().len();
    for source in [a.to_str().unwrap(), b.to_str().unwrap(), ""] {
        conn.update(&d, &DeviceType::DISK, &empty, &attrs(&[("source", source)]))
            .await
            .unwrap_or_else(|e| panic!("update source={source}: {e}"));
        let blk = raw.block(empty.as_str()).unwrap();
        if source.is_empty() {
            assert!(blk["inserted"].is_null(), "ejected: {blk}");
        } else {
            assert_eq!(blk["inserted"]["file"], source, "{blk}");
            assert_eq!(blk["inserted"]["ro"], true);
        }
        assert_eq!(blk["tray_open"], false, "closed again: {blk}");
        let l = listed(&conn, &d, &empty).await;
        if source.is_empty() {
            assert_eq!(l.get("medium"), Some("none"));
        } else {
            assert_eq!(l.get("source"), Some(source));
        }
        assert_eq!(
            raw.nodes().len(),
            nodes_before + if source.is_empty() { 0 } else { 2 },
            "no node leaks"
        );
    }
    // The event says what changed.
    let mut saw = false;
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        if let DeviceEvent::Updated {
            reference,
            attributes,
            ..
        } = &e
        {
            if reference == &empty && attributes.get("source") == Some("") {
                saw = true;
                break;
            }
        }
    }
    assert!(saw, "an Updated event for the eject");

    // Bad input changes nothing: a missing image, a medium on a plain disk, a bad format.
    let cd = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("media", "cdrom"), ("source", a.to_str().unwrap())]),
        )
        .await
        .unwrap();
    let plain = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("source", b.to_str().unwrap()), ("format", "raw")]),
        )
        .await
        .unwrap();
    let before = raw.snapshot();
    let blk_before = raw.block(cd.as_str());
    for (r, a2, name) in [
        (&cd, attrs(&[("source", "/nonexistent.iso")]), "source"),
        (
            &cd,
            attrs(&[("source", b.to_str().unwrap()), ("format", "vmdk")]),
            "format",
        ),
        (&plain, attrs(&[("source", a.to_str().unwrap())]), "source"),
    ] {
        let e = conn
            .update(&d, &DeviceType::DISK, r, &a2)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidAttribute { name: n, .. } if n == name),
            "{a2:?}: {e}"
        );
        if r == &plain {
            let why = e.to_string();
            assert!(why.contains("not a CD-ROM drive"), "{why}");
        }
    }
    let e = conn
        .update(&d, &DeviceType::DISK, &cd, &attrs(&[("serial", "X")]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidAttribute { .. }), "{e}");
    let e = conn
        .update(
            &d,
            &DeviceType::DISK,
            &DeviceRef::new("nosuch").unwrap(),
            &attrs(&[("source", a.to_str().unwrap())]),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e}");
    assert_eq!(raw.snapshot(), before, "nothing changed");
    assert_eq!(
        raw.block(cd.as_str()),
        blk_before,
        "the medium is as it was"
    );
}

#[tokio::test]
async fn a_tray_moved_by_someone_else_is_an_event_and_listed() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let a = vm.image("a.iso", "raw");
    let (conn, d) = open(&vm).await;
    let cd = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("media", "cdrom"), ("source", a.to_str().unwrap())]),
        )
        .await
        .unwrap();
    assert_eq!(listed(&conn, &d, &cd).await.get("tray"), Some("closed"));
    let mut events = conn.events().await.unwrap();
    // Another client opens the tray, as a guest's eject does: QEMU says DEVICE_TRAY_MOVED.
    let mut raw = vm.raw();
    raw.ok("blockdev-open-tray", json!({"id": cd.as_str()}));
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Ok(DeviceEvent::Updated {
                reference,
                attributes,
                ..
            })) = events.next().await
            {
                if reference == cd {
                    return attributes;
                }
            }
        }
    })
    .await
    .expect("an event");
    assert_eq!(ev.get("tray"), Some("open"));
    assert_eq!(listed(&conn, &d, &cd).await.get("tray"), Some("open"));
}

#[tokio::test]
async fn nic_link_down_and_up() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let nic = conn
        .attach(
            &d,
            &DeviceType::NETWORK,
            &attrs(&[("model", "e1000"), ("link", "down")]),
        )
        .await
        .unwrap();
    assert_eq!(listed(&conn, &d, &nic).await.get("link"), Some("down"));
    // Another connection (another process's view) lists the same.
    let second = vdev_core::connect(&vm.second_uri()).await.unwrap();
    let d2 = second.domains().await.unwrap().remove(0);
    assert_eq!(listed(&second, &d2, &nic).await.get("link"), Some("down"));
    second.close().await.unwrap();
    for link in ["up", "down", "up"] {
        conn.update(&d, &DeviceType::NETWORK, &nic, &attrs(&[("link", link)]))
            .await
            .unwrap();
        assert_eq!(listed(&conn, &d, &nic).await.get("link"), Some(link));
    }
    let before = raw.snapshot();
    let e = conn
        .update(
            &d,
            &DeviceType::NETWORK,
            &nic,
            &attrs(&[("link", "sideways")]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidAttribute { name, .. } if name == "link"),
        "{e}"
    );
    let e = conn
        .update(
            &d,
            &DeviceType::NETWORK,
            &nic,
            &attrs(&[("mac", "52:54:00:00:00:09")]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidAttribute { name, .. } if name == "mac"),
        "{e}"
    );
    assert_eq!(raw.snapshot(), before);
    assert_eq!(listed(&conn, &d, &nic).await.get("link"), Some("up"));
}

/// A real guest holds the CD-ROM drive open and locks its tray: a change without force is a
/// typed error naming force=true, and leaves the medium; with force it goes through.
#[tokio::test]
async fn a_tray_the_guest_locked_needs_force() {
    if !qemu_available() {
        return;
    }
    let Some(mut g) = guest() else { return };
    g.append.push_str(" vdev_guest.holdcd");
    let vm = Vm::start(VmSpec {
        guest: Some(g),
        ..VmSpec::default()
    });
    let a = vm.image("a.iso", "raw");
    let b = vm.image("b.iso", "raw");
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let cd = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("media", "cdrom"), ("source", a.to_str().unwrap())]),
        )
        .await
        .unwrap();
    // The guest opens the drive and locks its door.
    serial_line_after(&vm, 0, "CD HELD").await;
    assert_eq!(raw.block(cd.as_str()).unwrap()["locked"], true);
    assert_eq!(listed(&conn, &d, &cd).await.get("locked"), Some("true"));
    let e = conn
        .update(
            &d,
            &DeviceType::DISK,
            &cd,
            &attrs(&[("source", b.to_str().unwrap())]),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::DeviceBusy { .. }), "{e}");
    assert!(e.to_string().contains("force=true"), "{e}");
    let blk = raw.block(cd.as_str()).unwrap();
    assert_eq!(
        blk["inserted"]["file"],
        a.to_str().unwrap(),
        "the medium stays: {blk}"
    );
    conn.update(
        &d,
        &DeviceType::DISK,
        &cd,
        &attrs(&[("source", b.to_str().unwrap()), ("force", "true")]),
    )
    .await
    .expect("forced");
    let blk = raw.block(cd.as_str()).unwrap();
    assert_eq!(blk["inserted"]["file"], b.to_str().unwrap(), "{blk}");
    assert_eq!(blk["tray_open"], false);
}

/// The serial log of `vm` from byte `from` on, once it holds `line`: where that line ends.
/// Bounded for a loaded machine (TCG guest, checked every 0.2 s by the guest).
async fn serial_line_after(vm: &Vm, from: usize, line: &str) -> usize {
    let log = vm.dir.path().join("serial.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.get(from..).and_then(|t| t.find(line)) {
            return from + at + line.len();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guest never printed {line:?} after byte {from}; serial: {}",
            &text[from.min(text.len())..]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A NIC's link as the guest sees it: a real guest (`vdev_guest.carrier`) reports its carrier
/// going away on `link=down` and coming back on `link=up`; the NIC's removal then completes
/// through the guest.
#[tokio::test]
async fn a_link_down_is_a_lost_carrier_in_the_guest() {
    if !qemu_available() {
        return;
    }
    let Some(mut g) = guest() else { return };
    g.append.push_str(" vdev_guest.carrier");
    let vm = Vm::start(VmSpec {
        guest: Some(g),
        ..VmSpec::default()
    });
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let nic = conn
        .attach(
            &d,
            &DeviceType::NETWORK,
            &attrs(&[("model", "virtio-net-pci")]),
        )
        .await
        .unwrap();
    let at = serial_line_after(&vm, 0, "VDEV-GUEST: CARRIER eth0 1").await;
    conn.update(&d, &DeviceType::NETWORK, &nic, &attrs(&[("link", "down")]))
        .await
        .unwrap();
    let at = serial_line_after(&vm, at, "VDEV-GUEST: CARRIER eth0 0").await;
    assert_eq!(listed(&conn, &d, &nic).await.get("link"), Some("down"));
    conn.update(&d, &DeviceType::NETWORK, &nic, &attrs(&[("link", "up")]))
        .await
        .unwrap();
    serial_line_after(&vm, at, "VDEV-GUEST: CARRIER eth0 1").await;
    let detach = vdev_core::DetachOptions {
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    conn.detach(&d, &DeviceType::NETWORK, &nic, &detach)
        .await
        .unwrap();
    assert!(!raw.has_device(nic.as_str()), "gone through the guest");
    assert_eq!(raw.marked(), Vec::<String>::new(), "no link marker left");
}
