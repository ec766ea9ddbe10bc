//! Attach, list, detach and the events they send, one at a time and concurrently.

use super::*;

/// Attach → listed with its attributes → detach → gone, and the domain is as before.
pub async fn attach_list_detach(h: &Harness) {
    let d = domain(h).await;
    let before = snapshot(h, &d).await;
    let attrs = (h.fixture.make_attrs)(next_index(1));
    let Some(r) = attach_one(h, &d, &attrs).await else {
        return;
    };
    let listed = h
        .conn
        .devices(&d, Some(&h.fixture.device_type))
        .await
        .expect("list after attach");
    let dev = listed
        .iter()
        .find(|dev| dev.reference == r)
        .unwrap_or_else(|| panic!("attached device {r} is not listed"));
    assert_eq!(dev.device_type, h.fixture.device_type);
    for (name, value) in attrs.iter() {
        assert_eq!(
            dev.attributes.get(name),
            Some(value),
            "attribute {name} of {r} is not listed as given"
        );
    }
    detach_one(h, &d, &r).await;
    if h.conn.capabilities().detach {
        assert!(
            !refs(h, &d).await.contains(&r),
            "detached device {r} is still listed"
        );
        assert_eq!(
            snapshot(h, &d).await,
            before,
            "the domain differs from before attach + detach"
        );
    }
}

/// Detaching an unknown reference is `DeviceNotFound` and changes nothing.
pub async fn detach_unknown_ref_is_not_found(h: &Harness) {
    let d = domain(h).await;
    let before = snapshot(h, &d).await;
    let r = DeviceRef::new("424242").expect("valid ref");
    let res = h
        .conn
        .detach(&d, &h.fixture.device_type, &r, &options(h))
        .await;
    if h.conn.capabilities().detach {
        assert!(
            matches!(res, Err(Error::DeviceNotFound { .. })),
            "detach of an unknown ref answered {res:?}"
        );
    } else {
        assert!(matches!(res, Err(Error::Unsupported { .. })));
    }
    assert_eq!(
        snapshot(h, &d).await,
        before,
        "a failed detach changed the domain"
    );
}

/// 32 concurrent attaches give 32 distinct references, all listed; then all are detached.
pub async fn concurrent_attaches_get_distinct_refs(h: &Harness) {
    let n = h.fixture.concurrency;
    let d = domain(h).await;
    let before = snapshot(h, &d).await;
    let base = next_index(n);
    let attrs: Vec<Attributes> = (0..n).map(|i| (h.fixture.make_attrs)(base + i)).collect();
    let results = futures::future::join_all(
        attrs
            .iter()
            .map(|a| h.conn.attach(&d, &h.fixture.device_type, a)),
    )
    .await;
    if !h.conn.capabilities().attach {
        assert!(results
            .iter()
            .all(|r| matches!(r, Err(Error::Unsupported { .. }))));
        return;
    }
    let made: Vec<DeviceRef> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("a concurrent attach failed: {e}")))
        .collect();
    let distinct: BTreeSet<&DeviceRef> = made.iter().collect();
    assert_eq!(
        distinct.len(),
        n,
        "concurrent attaches returned duplicate refs: {made:?}"
    );
    let listed = refs(h, &d).await;
    for r in &made {
        assert!(
            listed.contains(r),
            "device {r} attached concurrently is not listed"
        );
    }
    let opts = options(h);
    let results = futures::future::join_all(
        made.iter()
            .map(|r| h.conn.detach(&d, &h.fixture.device_type, r, &opts)),
    )
    .await;
    if h.conn.capabilities().detach {
        for r in results {
            r.unwrap_or_else(|e| panic!("a concurrent detach failed: {e}"));
        }
        assert_eq!(
            snapshot(h, &d).await,
            before,
            "the domain differs after detaching everything"
        );
    }
}

/// A watcher of the domain sees `Added` for an attach and `Removed` for its detach.
pub async fn events_for_attach_and_detach(h: &Harness) {
    let d = domain(h).await;
    if !h.conn.capabilities().events {
        assert!(matches!(
            h.conn.watch(&d).await,
            Err(Error::Unsupported { .. })
        ));
        return;
    }
    let mut events = h.conn.watch(&d).await.expect("watch");
    let attrs = (h.fixture.make_attrs)(next_index(1));
    let Some(r) = attach_one(h, &d, &attrs).await else {
        return;
    };
    let t = h.fixture.device_type.clone();
    next_event(&mut events, |e| matches!(e, DeviceEvent::Added { reference, device_type, .. } if *reference == r && *device_type == t), "Added").await;
    detach_one(h, &d, &r).await;
    next_event(&mut events, |e| matches!(e, DeviceEvent::Removed { reference, device_type, .. } if *reference == r && *device_type == t), "Removed").await;
}
