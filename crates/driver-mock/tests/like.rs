//! `like=DRIVER` and the guest's knobs: the profiles the mock embeds, the URI and state-file
//! forms, each knob's effect, and that bad input changes nothing.

use std::time::Duration;

use vdev_core::{Attributes, DetachOptions, DeviceState, DeviceType, Error};
use vdev_driver_mock::{connect_with_control, Guest, Like, Removal, PROFILE_JSON};

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

#[test]
fn every_embedded_profile_parses_and_names_its_driver() {
    for (like, json) in PROFILE_JSON {
        let p: vdev_core::profile::DriverProfile = serde_json::from_str(json).unwrap();
        assert_eq!(p.driver, like.as_str());
        assert_eq!(p.version, vdev_core::profile::PROFILE_VERSION);
        assert!(!p.device_types.is_empty() && !p.domains.is_empty());
        assert_eq!(&p, like.profile());
    }
}

#[tokio::test]
async fn the_schema_is_the_drivers() {
    let (conn, _) = connect_with_control("mock:///default?like=xen")
        .await
        .unwrap();
    let disk = conn.schema(&DeviceType::DISK).await.unwrap();
    assert_eq!(disk, &Like::Xen.profile().device_types[0].schema);
    // xl's names are accepted, as by the Xen driver.
    let d = conn.domain("demo").await.unwrap();
    let r = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("target", "/img/a.img"), ("vdev", "xvdb"), ("access", "ro")]),
        )
        .await
        .unwrap();
    assert_eq!(r.as_str(), "51728");
    let dev = &conn.devices(&d, None).await.unwrap()[0];
    assert_eq!(dev.attributes.get("mode"), Some("r"));
}

#[tokio::test]
async fn bad_input_is_refused_with_the_drivers_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.raw");
    std::fs::write(&img, b"").unwrap();
    let img = img.to_str().unwrap();
    let (conn, _) = connect_with_control("mock:///default?like=qemu")
        .await
        .unwrap();
    let d = conn.domain("demo").await.unwrap();
    conn.attach(
        &d,
        &DeviceType::DISK,
        &attrs(&[("source", img), ("format", "raw"), ("id", "d1")]),
    )
    .await
    .unwrap();
    let before = conn.devices(&d, None).await.unwrap();
    let missing = dir.path().join("missing.raw");
    for (a, code) in [
        (
            vec![("source", missing.to_str().unwrap()), ("format", "raw")],
            "invalid-attribute",
        ),
        (
            vec![("source", img), ("format", "raw"), ("bus", "floppy")],
            "invalid-attribute",
        ),
        (
            vec![("source", img), ("format", "vmdk")],
            "invalid-attribute",
        ),
        (vec![("source", img)], "missing-attribute"),
        (
            vec![("media", "cdrom"), ("bus", "virtio")],
            "invalid-attribute",
        ),
        (
            vec![("source", img), ("format", "raw"), ("force", "true")],
            "invalid-attribute",
        ),
        (
            vec![("source", img), ("format", "raw"), ("id", "d1")],
            "device-exists",
        ),
        (
            vec![("source", img), ("format", "raw"), ("id", "1x")],
            "invalid-attribute",
        ),
    ] {
        let e = conn
            .attach(&d, &DeviceType::DISK, &attrs(&a))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{a:?}: {e}");
        assert_eq!(conn.devices(&d, None).await.unwrap(), before, "{a:?}");
    }
    // Not updatable: refused by the core; a plain disk has no medium: by the rules.
    let r = vdev_core::DeviceRef::new("d1").unwrap();
    for a in [vec![("bus", "usb")], vec![("source", img)]] {
        let e = conn
            .update(&d, &DeviceType::DISK, &r, &attrs(&a))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidAttribute { .. }), "{a:?}: {e}");
        assert_eq!(conn.devices(&d, None).await.unwrap(), before, "{a:?}");
    }
}

#[tokio::test]
async fn guest_knobs_from_the_uri() {
    let (conn, _) = connect_with_control("mock:///default?like=qemu&removal=refuse")
        .await
        .unwrap();
    let d = conn.domain("demo").await.unwrap();
    let nic = conn
        .attach(&d, &DeviceType::NETWORK, &Attributes::new())
        .await
        .unwrap();
    let e = conn
        .detach(&d, &DeviceType::NETWORK, &nic, &DetachOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RemovalRefused { .. }), "{e}");
    assert_eq!(
        conn.devices(&d, None).await.unwrap()[0].state,
        DeviceState::Connected
    );
    for bad in ["tray=ajar", "busy=-1", "removal=sometimes", "like=vmware"] {
        let e = connect_with_control(&format!("mock:///default?{bad}"))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::InvalidUri { .. }), "{bad}: {e}");
    }
}

#[tokio::test]
async fn a_busy_guest_costs_time_or_a_timeout_and_nothing_is_requested() {
    let (conn, control) = connect_with_control("mock:///default?like=xen&busy=2")
        .await
        .unwrap();
    let d = conn.domain("demo").await.unwrap();
    let r = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("uname", "file:/a.img"), ("dev", "xvdb")]),
        )
        .await
        .unwrap();
    let short = DetachOptions {
        timeout: Duration::from_millis(10),
        ..Default::default()
    };
    let e = conn
        .detach(&d, &DeviceType::DISK, &r, &short)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert_eq!(
        conn.devices(&d, None).await.unwrap()[0].state,
        DeviceState::Connected
    );
    // Two busy answers, then the guest lets go: within the default timeout.
    conn.detach(&d, &DeviceType::DISK, &r, &DetachOptions::default())
        .await
        .unwrap();
    assert!(conn.devices(&d, None).await.unwrap().is_empty());
    // A device's own knob wins over the host's.
    let r = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("uname", "file:/a.img"), ("dev", "xvdb")]),
        )
        .await
        .unwrap();
    control
        .set_device_guest(
            "demo",
            &DeviceType::DISK,
            &r,
            Guest {
                busy: Some(0),
                removal: Some(Removal::Pending),
                ..Guest::default()
            },
        )
        .await
        .unwrap();
    let e = conn
        .detach(&d, &DeviceType::DISK, &r, &short)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RemovalPending { .. }), "{e}");
}

#[tokio::test]
async fn a_state_file_keeps_its_language_and_its_knobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.json");
    let uri = format!("mock://{}?like=qemu", path.display());
    let (conn, control) = connect_with_control(&uri).await.unwrap();
    control
        .set_domain_guest(
            "demo",
            Guest {
                removal: Some(Removal::After(Duration::from_millis(20))),
                tray_locked: Some(true),
                busy: None,
                connect: None,
            },
        )
        .await
        .unwrap();
    conn.close().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["like"], "qemu");
    assert_eq!(v["domains"][0]["guest"]["removal"], "20ms");
    assert_eq!(v["domains"][0]["guest"]["tray_locked"], true);
    // Opened again without like=: it speaks like QEMU still, with its knobs.
    let (conn, _) = connect_with_control(&format!("mock://{}", path.display()))
        .await
        .unwrap();
    assert!(conn
        .schema(&DeviceType::DISK)
        .await
        .unwrap()
        .attribute("source")
        .is_some());
    // With another like=: refused, naming the file's.
    let e = connect_with_control(&format!("mock://{}?like=xen", path.display()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidUri { .. }) && e.to_string().contains("qemu"),
        "{e}"
    );
}

#[tokio::test]
async fn a_xen_guest_connects_new_devices_when_its_knob_says() {
    for (uri, first) in [
        ("mock:///default?like=xen", DeviceState::Connected),
        (
            "mock:///default?like=xen&connect=never",
            DeviceState::InitWait,
        ),
        (
            "mock:///default?like=xen&connect=20ms",
            DeviceState::InitWait,
        ),
    ] {
        let (conn, _) = connect_with_control(uri).await.unwrap();
        let d = conn.domain("demo").await.unwrap();
        conn.attach(&d, &DeviceType::NETWORK, &Attributes::new())
            .await
            .unwrap();
        assert_eq!(
            conn.devices(&d, None).await.unwrap()[0].state,
            first,
            "{uri}"
        );
        if uri.ends_with("20ms") {
            // Connected once the delay has passed (bounded wait, not a timing claim).
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while conn.devices(&d, None).await.unwrap()[0].state != DeviceState::Connected {
                assert!(std::time::Instant::now() < deadline, "never connected");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// `like=libvirt`: libvirt's aliases, the driver's defaults, and the errors it gives.
#[tokio::test]
async fn the_mock_speaks_like_libvirt() {
    let dir = tempfile::tempdir().unwrap();
    let img = |n: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, b"").unwrap();
        p.display().to_string()
    };
    let (a, b) = (img("a.raw"), img("b.iso"));
    let (conn, control) = connect_with_control("mock:///default?like=libvirt")
        .await
        .unwrap();
    let d = conn.domain("demo").await.unwrap();
    let disk = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[
                ("source", &a),
                ("target", "sdb"),
                ("xml.driver.cache", "none"),
            ]),
        )
        .await
        .unwrap();
    let hex = disk.as_str().strip_prefix("ua-disk-").unwrap();
    assert!(
        hex.len() == 8 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
        "{disk}"
    );
    let cd = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("media", "cdrom"), ("source", &b), ("target", "sdc")]),
        )
        .await
        .unwrap();
    let nic = conn
        .attach(
            &d,
            &DeviceType::NETWORK,
            &attrs(&[("mac", "52:54:00:AA:00:01")]),
        )
        .await
        .unwrap();
    assert!(nic.as_str().starts_with("ua-net-"), "{nic}");
    let bridged = conn
        .attach(&d, &DeviceType::NETWORK, &attrs(&[("source", "default")]))
        .await
        .unwrap();
    let list = conn.devices(&d, None).await.unwrap();
    let get = |r: &vdev_core::DeviceRef, n: &str| {
        list.iter()
            .find(|x| &x.reference == r)
            .and_then(|x| x.attributes.get(n).map(str::to_owned))
    };
    assert_eq!(get(&disk, "bus").as_deref(), Some("scsi"));
    assert_eq!(get(&disk, "format").as_deref(), Some("raw"));
    assert_eq!(get(&disk, "readonly").as_deref(), Some("false"));
    // Pass-through attributes are taken and not listed, as the driver lists none.
    assert_eq!(get(&disk, "xml.driver.cache"), None);
    // libvirt makes a CD-ROM drive read-only.
    assert_eq!(get(&cd, "readonly").as_deref(), Some("true"));
    assert_eq!(get(&nic, "mac").as_deref(), Some("52:54:00:aa:00:01"));
    assert_eq!(get(&nic, "netdev").as_deref(), Some("user"));
    assert_eq!(get(&nic, "model").as_deref(), Some("virtio"));
    assert_eq!(get(&nic, "link").as_deref(), Some("up"));
    assert_eq!(get(&bridged, "netdev").as_deref(), Some("network"));
    assert!(get(&bridged, "mac").unwrap().starts_with("52:54:00:"));

    let before = conn.devices(&d, None).await.unwrap();
    for (t, a, code) in [
        (
            DeviceType::DISK,
            vec![("source", "/no/such.raw")],
            "invalid-attribute",
        ),
        (
            DeviceType::DISK,
            vec![("source", &a), ("bus", "floppy")],
            "invalid-attribute",
        ),
        (
            DeviceType::DISK,
            vec![("media", "disk")],
            "missing-attribute",
        ),
        (
            DeviceType::DISK,
            vec![("source", &a), ("target", "sdb")],
            "device-exists",
        ),
        (
            DeviceType::NETWORK,
            vec![("mac", "52:54:00:aa:00:01")],
            "device-exists",
        ),
        (
            DeviceType::NETWORK,
            vec![("netdev", "user"), ("source", "default")],
            "invalid-attribute",
        ),
        (
            DeviceType::NETWORK,
            vec![("netdev", "slirp")],
            "invalid-attribute",
        ),
    ] {
        let e = conn.attach(&d, &t, &attrs(&a)).await.unwrap_err();
        assert_eq!(e.code(), code, "{a:?}: {e}");
        assert_eq!(conn.devices(&d, None).await.unwrap(), before, "{a:?}");
    }
    let e = conn
        .update(&d, &DeviceType::DISK, &disk, &attrs(&[("bus", "usb")]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidAttribute { .. }), "{e}");
    // A medium change, an eject; a locked tray is DeviceBusy unless forced.
    conn.update(&d, &DeviceType::DISK, &cd, &attrs(&[("source", &a)]))
        .await
        .unwrap();
    conn.update(&d, &DeviceType::DISK, &cd, &attrs(&[("source", "")]))
        .await
        .unwrap();
    let guest = Guest {
        tray_locked: Some(true),
        ..Guest::default()
    };
    control
        .set_device_guest("demo", &DeviceType::DISK, &cd, guest)
        .await
        .unwrap();
    let e = conn
        .update(&d, &DeviceType::DISK, &cd, &attrs(&[("source", &b)]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DeviceBusy { .. }), "{e}");
}
