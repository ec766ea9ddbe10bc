//! The mock driver as a product: the default host, the proposal's vocabulary, fault injection,
//! pending removals, the call log, events and state files with their own device types.

use std::time::{Duration, Instant};

use futures::StreamExt;
use vdev_core::{
    Attributes, DetachOptions, DeviceEvent, DeviceRef, DeviceState, DeviceType, Error,
};
use vdev_driver_mock::{connect_with_control, Op, Removal};

fn disk(dev: &str) -> Attributes {
    Attributes::from_pairs([
        ("uname", "file:/img/x.img".to_owned()),
        ("dev", dev.to_owned()),
        ("mode", "w".to_owned()),
    ])
    .unwrap()
}

/// The next item of an event stream (`None` at its end), waited for at most 30 s: a missing
/// event fails the test instead of hanging it.
async fn next<S: futures::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("no event, nor the stream's end, within 30 s")
}

fn refs(devs: &[vdev_core::Device]) -> Vec<&str> {
    devs.iter().map(|d| d.reference.as_str()).collect()
}

#[tokio::test]
async fn the_default_host_has_the_documented_domains_and_devices() {
    let (conn, _) = connect_with_control("mock:///default").await.unwrap();
    let domains = conn.domains().await.unwrap();
    assert_eq!(
        domains
            .iter()
            .map(|d| (d.id, d.name.as_str()))
            .collect::<Vec<_>>(),
        [(Some(0), "Domain-0"), (Some(1), "demo")]
    );
    let demo = conn.domain("demo").await.unwrap();
    let devs = conn.devices(&demo, None).await.unwrap();
    assert_eq!(devs.len(), 2);
    let d = &devs[0];
    assert_eq!(
        (d.device_type.as_str(), d.reference.as_str()),
        ("disk", "51712")
    );
    for (k, v) in [
        ("virtual-device", "51712"),
        ("backend-id", "0"),
        ("bkdom-name", "Domain-0"),
        ("state", "4"),
        ("backend", "/local/domain/0/backend/vbd/1/51712"),
        ("dev", "xvda"),
        ("mode", "w"),
    ] {
        assert_eq!(d.attributes.get(k), Some(v), "{k}");
    }
    assert!(d.attributes.get("ring-ref").is_some() && d.attributes.get("event-channel").is_some());
    let n = &devs[1];
    assert_eq!(
        (n.device_type.as_str(), n.reference.as_str()),
        ("network", "0")
    );
    assert_eq!(n.attributes.get("mac"), Some("00:16:3e:00:00:01"));
}

#[tokio::test]
async fn disk_refs_are_xen_device_numbers_and_backend_names_become_ids() {
    let (conn, _) = connect_with_control("mock:///default").await.unwrap();
    let demo = conn.domain("demo").await.unwrap();
    for (dev, want) in [
        ("xvdb", "51728"),
        ("xvdq", "268439552"),
        ("hdc", "5632"),
        ("sdb", "2064"),
    ] {
        assert_eq!(
            conn.attach(&demo, &DeviceType::DISK, &disk(dev))
                .await
                .unwrap()
                .as_str(),
            want,
            "{dev}"
        );
    }
    // A disk served by the guest domain itself, named by id or by name.
    let mut a = disk("xvdc");
    a.insert("backend", "demo").unwrap();
    let r = conn.attach(&demo, &DeviceType::DISK, &a).await.unwrap();
    let dev = conn
        .devices(&demo, Some(&DeviceType::DISK))
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.reference == r)
        .unwrap();
    assert_eq!(dev.attributes.get("backend-id"), Some("1"));
    assert_eq!(dev.attributes.get("bkdom-name"), Some("demo"));
    assert_eq!(
        dev.attributes.get("backend"),
        Some("/local/domain/1/backend/vbd/1/51744")
    );
    // The same device number through another name is a duplicate.
    let err = conn
        .attach(&demo, &DeviceType::DISK, &disk("51728"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DeviceExists { ref reference, .. } if reference == "51728"),
        "{err:?}"
    );
}

#[tokio::test]
async fn network_devices_get_handles_and_unique_macs() {
    let (conn, _) = connect_with_control("mock:///default").await.unwrap();
    let demo = conn.domain("demo").await.unwrap();
    let r1 = conn
        .attach(&demo, &DeviceType::NETWORK, &Attributes::new())
        .await
        .unwrap();
    let r2 = conn
        .attach(
            &demo,
            &DeviceType::NETWORK,
            &Attributes::from_pairs([("bridge", "br1"), ("ip", "192.0.2.5")]).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!((r1.as_str(), r2.as_str()), ("1", "2"));
    let nics = conn
        .devices(&demo, Some(&DeviceType::NETWORK))
        .await
        .unwrap();
    let macs: std::collections::BTreeSet<_> = nics
        .iter()
        .map(|n| n.attributes.get("mac").unwrap().to_owned())
        .collect();
    assert_eq!(macs.len(), 3);
    assert!(macs.iter().all(|m| m.starts_with("00:16:3e:")), "{macs:?}");
    let taken = Attributes::from_pairs([("mac", "00:16:3E:00:00:01")]).unwrap();
    assert!(matches!(
        conn.attach(&demo, &DeviceType::NETWORK, &taken).await,
        Err(Error::DeviceExists { .. })
    ));
    for (name, bad) in [
        ("mac", "01:00:5e:00:00:01"),
        ("mac", "zz"),
        ("ip", "300.1.1.1"),
        ("bridge", "a/b"),
        ("backend", "nobody"),
    ] {
        let a = Attributes::from_pairs([(name, bad)]).unwrap();
        let err = conn
            .attach(&demo, &DeviceType::NETWORK, &a)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidAttribute { name: ref n, .. } if n == name),
            "{name}={bad}: {err:?}"
        );
    }
    assert_eq!(
        conn.devices(&demo, Some(&DeviceType::NETWORK))
            .await
            .unwrap(),
        nics
    );
}

#[tokio::test]
async fn injected_faults_fail_the_nth_call_and_change_nothing() {
    let (conn, control) =
        connect_with_control("mock:///default?fail=attach:2:device-exists,list_domains:1:timeout")
            .await
            .unwrap();
    assert!(matches!(conn.domains().await, Err(Error::Timeout { .. })));
    assert!(conn.domains().await.is_ok(), "only the first call fails");
    let demo = conn.domain("demo").await.unwrap();
    conn.attach(&demo, &DeviceType::DISK, &disk("xvdb"))
        .await
        .unwrap();
    let before = conn.devices(&demo, None).await.unwrap();
    let err = conn
        .attach(&demo, &DeviceType::DISK, &disk("xvdc"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DeviceExists { .. }) && err.to_string().contains("demo"),
        "{err}"
    );
    assert_eq!(conn.devices(&demo, None).await.unwrap(), before);
    conn.attach(&demo, &DeviceType::DISK, &disk("xvdc"))
        .await
        .unwrap();
    // Through the handle, counted from now.
    control.fail_nth(Op::Detach, 1, "backend");
    let err = conn
        .detach(
            &demo,
            &DeviceType::DISK,
            &"51728".parse().unwrap(),
            &DetachOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Backend { ref driver, .. } if driver == "mock"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("fault injected into detach"),
        "{err}"
    );
    assert_eq!(control.call_count(Op::Attach), 3);
    let calls = control.calls();
    let errors: Vec<_> = calls
        .iter()
        .filter_map(|c| c.error.map(|e| (c.op, e)))
        .collect();
    assert_eq!(
        errors,
        [
            (Op::ListDomains, "timeout"),
            (Op::Attach, "device-exists"),
            (Op::Detach, "backend")
        ]
    );
    let last_attach = calls.iter().rev().find(|c| c.op == Op::Attach).unwrap();
    assert_eq!(last_attach.reference.as_deref(), Some("51744"));
    assert_eq!(last_attach.domain.as_deref(), Some("demo"));
}

/// The update fault injection: the nth update fails with the injected condition and changes
/// nothing (the NIC keeps its link, no Updated event); the next one goes through.
#[tokio::test]
async fn an_injected_update_fault_changes_nothing() {
    let (conn, control) = connect_with_control("mock:///default?fail=update:1:device-busy")
        .await
        .unwrap();
    let demo = conn.domain("demo").await.unwrap();
    let nic: DeviceRef = "0".parse().unwrap();
    let mut events = conn.events().await.unwrap();
    let before = conn.devices(&demo, None).await.unwrap();
    let down = Attributes::from_pairs([("link", "down")]).unwrap();
    let err = conn
        .update(&demo, &DeviceType::NETWORK, &nic, &down)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DeviceBusy { .. }), "{err:?}");
    assert_eq!(conn.devices(&demo, None).await.unwrap(), before);
    control.fail_nth(Op::Update, 1, "backend");
    let err = conn
        .update(&demo, &DeviceType::NETWORK, &nic, &down)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("fault injected into update"),
        "{err}"
    );
    assert_eq!(conn.devices(&demo, None).await.unwrap(), before);
    conn.update(&demo, &DeviceType::NETWORK, &nic, &down)
        .await
        .unwrap();
    let listed = conn
        .devices(&demo, Some(&DeviceType::NETWORK))
        .await
        .unwrap();
    assert_eq!(listed[0].attributes.get("link"), Some("down"));
    // The one event is the update that went through.
    match next(&mut events).await {
        Some(Ok(DeviceEvent::Updated { attributes, .. })) => {
            assert_eq!(attributes.get("link"), Some("down"))
        }
        other => panic!("expected the Updated event of the third update, got {other:?}"),
    }
    assert_eq!(control.call_count(Op::Update), 3);
}

#[tokio::test(start_paused = true)]
async fn latency_is_added_to_every_call() {
    let (conn, control) = connect_with_control("mock:///default?latency=250ms")
        .await
        .unwrap();
    let t = tokio::time::Instant::now();
    conn.domains().await.unwrap();
    assert_eq!(t.elapsed(), Duration::from_millis(250));
    control.set_latency(Duration::ZERO);
    let t = tokio::time::Instant::now();
    conn.domains().await.unwrap();
    assert_eq!(t.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn pending_removal_is_reported_then_completed_by_release() {
    let (conn, control) = connect_with_control("mock:///default?removal=pending")
        .await
        .unwrap();
    let demo = conn.domain("demo").await.unwrap();
    let mut events = conn.watch(&demo).await.unwrap();
    let r: DeviceRef = "51712".parse().unwrap();
    let opts = DetachOptions {
        timeout: Duration::from_millis(50),
        force: false,
        ..Default::default()
    };
    let err = conn
        .detach(&demo, &DeviceType::DISK, &r, &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RemovalPending { .. }), "{err:?}");
    let listed = conn.devices(&demo, Some(&DeviceType::DISK)).await.unwrap();
    assert_eq!(refs(&listed), ["51712"], "a pending device is still listed");
    assert_eq!(listed[0].state, DeviceState::RemovalPending);
    assert!(matches!(
        next(&mut events).await.unwrap().unwrap(),
        DeviceEvent::StateChanged {
            state: DeviceState::RemovalPending,
            ..
        }
    ));
    // Detaching it again waits again rather than failing blindly; a release ends the wait.
    let waiter = {
        let (conn, r) = (&conn, r.clone());
        let demo = demo.clone();
        async move {
            conn.detach(
                &demo,
                &DeviceType::DISK,
                &r,
                &DetachOptions {
                    timeout: Duration::from_secs(30),
                    force: false,
                    ..Default::default()
                },
            )
            .await
        }
    };
    let release = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        control.release().await.unwrap()
    };
    let (res, released) = tokio::join!(waiter, release);
    res.unwrap();
    assert_eq!(released, 1);
    assert!(conn
        .devices(&demo, Some(&DeviceType::DISK))
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        next(&mut events).await.unwrap().unwrap(),
        DeviceEvent::Removed { .. }
    ));
}

#[tokio::test]
async fn a_slow_guest_releases_within_the_timeout_and_force_does_not_wait() {
    let (conn, control) = connect_with_control("mock:///default?removal=100ms")
        .await
        .unwrap();
    let demo = conn.domain("demo").await.unwrap();
    let t = Instant::now();
    conn.detach(
        &demo,
        &DeviceType::DISK,
        &"51712".parse().unwrap(),
        &DetachOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "removed before the guest released it"
    );
    control.set_removal(Removal::Pending);
    conn.detach(
        &demo,
        &DeviceType::NETWORK,
        &"0".parse().unwrap(),
        &DetachOptions {
            timeout: Duration::from_secs(30),
            force: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(conn.devices(&demo, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_report_every_change_in_order() {
    let (conn, _) = connect_with_control("mock:///default").await.unwrap();
    let demo = conn.domain("demo").await.unwrap();
    let dom0 = conn.domain("Domain-0").await.unwrap();
    let mut all = conn.events().await.unwrap();
    let mut only_demo = conn.watch(&demo).await.unwrap();
    conn.attach(&dom0, &DeviceType::DISK, &disk("xvdb"))
        .await
        .unwrap();
    let r = conn
        .attach(&demo, &DeviceType::DISK, &disk("xvdb"))
        .await
        .unwrap();
    conn.detach(&demo, &DeviceType::DISK, &r, &DetachOptions::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut all).await);
    }
    let kinds: Vec<(String, &'static str)> = got
        .into_iter()
        .map(|e| match e.unwrap().unwrap() {
            DeviceEvent::Added { domain, .. } => (domain.name, "added"),
            DeviceEvent::Removed { domain, .. } => (domain.name, "removed"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("Domain-0".into(), "added"),
            ("demo".into(), "added"),
            ("demo".into(), "removed")
        ]
    );
    assert!(
        matches!(next(&mut only_demo).await.unwrap().unwrap(), DeviceEvent::Added { ref domain, .. } if domain.name == "demo")
    );
    conn.close().await.unwrap();
    assert!(
        next(&mut only_demo).await.is_some(),
        "the removal was sent before close"
    );
    assert!(
        next(&mut all).await.is_none(),
        "streams end when the connection closes"
    );
}

#[tokio::test]
async fn a_state_file_defines_its_own_domains_and_device_types() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mock-custom");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("custom-{}.json", std::process::id()));
    std::fs::write(&path, r#"{
      "version": 1,
      "domains": [ { "id": 0, "name": "Domain-0" }, { "id": 7, "name": "db" } ],
      "device_types": [ { "name": "gpu", "description": "a passed-through GPU", "ref_attribute": "slot",
        "attributes": [
          { "name": "slot", "required": true, "description": "PCI address", "example": "0000:01:00.0" },
          { "name": "model", "values": ["a100", "h100"], "default": "a100", "description": "model", "example": "h100" } ] } ]
    }"#).unwrap();
    let uri = format!("mock://{}", path.display());
    let conn = vdev_core::connect(&uri).await.unwrap();
    let db = conn.domain("7").await.unwrap();
    assert_eq!(db.name, "db");
    let gpu = DeviceType::new("gpu").unwrap();
    let schema = conn.schema(&gpu).await.unwrap();
    assert!(schema.attributes[1].description.contains("a100, h100"));
    let r = conn
        .attach(
            &db,
            &gpu,
            &Attributes::from_pairs([("slot", "0000:01:00.0")]).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.as_str(), "0000:01:00.0");
    let err = conn
        .attach(
            &db,
            &gpu,
            &Attributes::from_pairs([("slot", "0000:02:00.0"), ("model", "v100")]).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("use one of: a100, h100"), "{err}");
    assert!(
        matches!(conn.attach(&db, &gpu, &Attributes::new()).await, Err(Error::MissingAttribute { ref name, .. }) if name == "slot")
    );
    // Another connection (as another process would) sees the device, with its default.
    let other = vdev_core::connect(&uri).await.unwrap();
    let devs = other.devices(&db, Some(&gpu)).await.unwrap();
    assert_eq!(devs[0].attributes.get("model"), Some("a100"));
    // Built-in types are still there.
    assert!(conn.schema(&DeviceType::DISK).await.is_ok());
}

#[tokio::test]
async fn aliases_stand_for_their_attribute_and_refusals_never_reach_the_driver() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mock-custom");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("aliases-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, r#"{
      "version": 1,
      "domains": [ { "id": 0, "name": "Domain-0" }, { "id": 7, "name": "db" } ],
      "device_types": [ { "name": "gpu", "description": "a passed-through GPU", "ref_attribute": "slot",
        "attributes": [
          { "name": "slot", "aliases": ["pci"], "required": true, "description": "PCI address", "example": "0000:01:00.0" },
          { "name": "model", "aliases": ["kind"], "values": ["a100", "h100"], "description": "model", "example": "h100" } ] } ]
    }"#).unwrap();
    let (conn, control) = connect_with_control(&format!("mock://{}", path.display()))
        .await
        .unwrap();
    let db = conn.domain("db").await.unwrap();
    let gpu = DeviceType::new("gpu").unwrap();
    let schema = conn.schema(&gpu).await.unwrap();
    assert_eq!(schema.attributes[0].aliases, ["pci"]);
    // The required slot given as pci, the model as kind: listed under their names.
    let r = conn
        .attach(
            &db,
            &gpu,
            &Attributes::from_pairs([("pci", "0000:01:00.0"), ("kind", "h100")]).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.as_str(), "0000:01:00.0");
    let before = conn.devices(&db, None).await.unwrap();
    assert_eq!(before[0].attributes.get("slot"), Some("0000:01:00.0"));
    assert_eq!(before[0].attributes.get("model"), Some("h100"));
    // A bad value under an alias is named by the alias.
    let err = conn
        .attach(
            &db,
            &gpu,
            &Attributes::from_pairs([("pci", "0000:02:00.0"), ("kind", "v100")]).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidAttribute { ref name, .. } if name == "kind"),
        "{err:?}"
    );
    // Two names of one attribute, an unknown name, none of a required attribute's names: refused
    // by the core, before the driver is called, and nothing changes.
    let attaches = control.call_count(Op::Attach);
    for (pairs, code, named) in [
        (
            vec![("slot", "0000:03:00.0"), ("pci", "0000:03:00.0")],
            "invalid-attribute",
            "pci",
        ),
        (
            vec![
                ("slot", "0000:03:00.0"),
                ("model", "a100"),
                ("kind", "h100"),
            ],
            "invalid-attribute",
            "kind",
        ),
        (
            vec![("slot", "0000:03:00.0"), ("pcie", "0000:03:00.0")],
            "invalid-attribute",
            "pcie",
        ),
        (vec![("kind", "a100")], "missing-attribute", "slot"),
    ] {
        let err = conn
            .attach(&db, &gpu, &Attributes::from_pairs(pairs.clone()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{pairs:?}: {err}");
        match &err {
            Error::InvalidAttribute { name, .. } | Error::MissingAttribute { name, .. } => {
                assert_eq!(name, named, "{err}")
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(conn.devices(&db, None).await.unwrap(), before, "{pairs:?}");
    }
    assert_eq!(
        control.call_count(Op::Attach),
        attaches,
        "the driver was called"
    );
    let err = conn
        .attach(
            &db,
            &gpu,
            &Attributes::from_pairs([("slot", "0000:03:00.0"), ("pci", "0000:03:00.0")]).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("'slot' and 'pci'") && err.to_string().contains("give only one"),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
    // An alias that is another attribute's name makes the file malformed.
    let bad = dir.join(format!("aliases-bad-{}.json", std::process::id()));
    std::fs::write(
        &bad,
        r#"{ "version": 1, "domains": [ { "id": 0, "name": "Domain-0" } ],
      "device_types": [ { "name": "gpu", "attributes": [
        { "name": "slot", "aliases": ["model"] }, { "name": "model" } ] } ] }"#,
    )
    .unwrap();
    let err = vdev_core::connect(&format!("mock://{}", bad.display()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("'model' names two attributes"),
        "{err}"
    );
    std::fs::remove_file(&bad).unwrap();
}

#[tokio::test]
async fn attribute_names_that_could_form_paths_never_reach_a_driver() {
    for bad in [
        "../x",
        "a/b",
        "",
        ".hidden",
        "a..b",
        "x\0y",
        &"n".repeat(65),
    ] {
        assert!(
            matches!(
                Attributes::from_pairs([(bad.to_owned(), "1".to_owned())]),
                Err(Error::InvalidAttribute { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(Attributes::from_pairs([("ok", "a\0b")]).is_err());
    assert!(Attributes::from_pairs([("ok", "v".repeat(2049))]).is_err());
    assert!(Attributes::from_pairs([("a", "1"), ("a", "2")]).is_err());
    for bad in ["..", "a/b", "", "x y"] {
        assert!(DeviceRef::new(bad).is_err(), "{bad:?}");
    }
}
