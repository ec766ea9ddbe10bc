//! The checks of the suite, one `pub async fn` each (re-exported at the crate root), and the
//! helpers they share.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use vdev_core::{
    Attributes, DetachOptions, Device, DeviceEvent, DeviceRef, DeviceType, Domain, Error,
};

use crate::Harness;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh fixture index, distinct within this process.
fn next_index(n: usize) -> usize {
    NEXT.fetch_add(n, Ordering::SeqCst)
}

async fn domain(h: &Harness) -> Domain {
    h.conn.domain(&h.fixture.domain).await.unwrap_or_else(|e| {
        panic!(
            "the fixture's domain '{}' cannot be looked up: {e}",
            h.fixture.domain
        )
    })
}

async fn refs(h: &Harness, d: &Domain) -> BTreeSet<DeviceRef> {
    h.conn
        .devices(d, Some(&h.fixture.device_type))
        .await
        .unwrap_or_else(|e| panic!("listing {} devices failed: {e}", h.fixture.device_type))
        .into_iter()
        .map(|dev| dev.reference)
        .collect()
}

async fn snapshot(h: &Harness, d: &Domain) -> Vec<Device> {
    let mut v = h
        .conn
        .devices(d, None)
        .await
        .unwrap_or_else(|e| panic!("listing devices failed: {e}"));
    v.sort_by(|a, b| (&a.device_type, &a.reference).cmp(&(&b.device_type, &b.reference)));
    v
}

fn options(h: &Harness) -> DetachOptions {
    DetachOptions {
        timeout: h.fixture.detach_timeout,
        force: false,
        ..Default::default()
    }
}

/// Attach one device, or assert that attach is refused as unsupported. `None` when unsupported.
async fn attach_one(h: &Harness, d: &Domain, attrs: &Attributes) -> Option<DeviceRef> {
    let r = h.conn.attach(d, &h.fixture.device_type, attrs).await;
    if !h.conn.capabilities().attach {
        assert!(
            matches!(r, Err(Error::Unsupported { .. })),
            "attach is declared unsupported but answered {r:?}"
        );
        return None;
    }
    Some(r.unwrap_or_else(|e| panic!("attach with {attrs:?} failed: {e}")))
}

async fn detach_one(h: &Harness, d: &Domain, r: &DeviceRef) {
    let res = h
        .conn
        .detach(d, &h.fixture.device_type, r, &options(h))
        .await;
    if !h.conn.capabilities().detach {
        assert!(
            matches!(res, Err(Error::Unsupported { .. })),
            "detach is declared unsupported but answered {res:?}"
        );
        return;
    }
    res.unwrap_or_else(|e| panic!("detach of {r} failed: {e}"));
}

/// Domains are listed; lookup by name, by id and by UUID (where the domain has them) agree; an
/// unknown name is `DomainNotFound`.
pub async fn domains_and_lookup(h: &Harness) {
    let d = domain(h).await;
    if let Some(id) = d.id {
        let by_id = h.conn.domain(&id.to_string()).await.expect("lookup by id");
        assert_eq!(by_id, d, "lookup by id and by name disagree");
    }
    if let Some(uuid) = &d.uuid {
        let by_uuid = h.conn.domain(uuid).await.expect("lookup by UUID");
        assert_eq!(by_uuid, d, "lookup by UUID and by name disagree");
        let upper = h
            .conn
            .domain(&uuid.to_ascii_uppercase())
            .await
            .expect("lookup by an upper-case UUID");
        assert_eq!(upper, d, "a UUID in upper case names another domain");
    }
    let by_name = h.conn.domain(&d.name).await.expect("lookup by name");
    assert_eq!(by_name, d);
    let all = h.conn.domains().await;
    if h.conn.capabilities().list_domains {
        assert!(
            all.expect("list domains").contains(&d),
            "the fixture's domain is not listed"
        );
    } else {
        assert!(matches!(all, Err(Error::Unsupported { .. })));
    }
    let missing = h.conn.domain("vdev-conformance-no-such-domain").await;
    assert!(
        matches!(missing, Err(Error::DomainNotFound { .. })),
        "unknown domain answered {missing:?}"
    );
}

/// The fixture's type is described; every required attribute has a description and an example,
/// and the fixture gives every required attribute (under its name or an alias); no name or alias
/// names two attributes.
pub async fn schema_describes_type(h: &Harness) {
    let schema = h
        .conn
        .schema(&h.fixture.device_type)
        .await
        .expect("schema of the fixture's type");
    assert!(
        !schema.attributes.is_empty(),
        "the schema lists no attributes"
    );
    let sample = (h.fixture.make_attrs)(next_index(1));
    for a in &schema.attributes {
        assert!(
            !a.description.is_empty(),
            "attribute {} has no description",
            a.name
        );
        assert!(!a.example.is_empty(), "attribute {} has no example", a.name);
        if a.required {
            assert!(
                a.names().any(|n| sample.contains(n)),
                "the fixture lacks required attribute {}",
                a.name
            );
        }
    }
    let mut names: Vec<&str> = schema.attributes.iter().flat_map(|a| a.names()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        panic!(
            "'{}' is the name or alias of more than one attribute (or is given twice)",
            w[0]
        );
    }
}

/// Listing or creating a device type the driver does not have is `Unsupported`.
pub async fn unknown_device_type_is_unsupported(h: &Harness) {
    let d = domain(h).await;
    let t = DeviceType::new("vdev-conformance-nosuch").expect("valid name");
    let r = h.conn.devices(&d, Some(&t)).await;
    assert!(
        matches!(r, Err(Error::Unsupported { .. })),
        "listing an unknown type answered {r:?}"
    );
    let r = h.conn.attach(&d, &t, &Attributes::new()).await;
    assert!(
        matches!(r, Err(Error::Unsupported { .. } | Error::ReadOnly { .. })),
        "attaching an unknown type answered {r:?}"
    );
}

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

/// Invalid attributes (the fixture's, and an unknown name) are refused and change nothing.
pub async fn invalid_attributes_are_refused(h: &Harness) {
    let d = domain(h).await;
    let before = snapshot(h, &d).await;
    let mut unknown = (h.fixture.make_attrs)(next_index(1));
    unknown
        .insert("vdev-conformance-bogus", "1")
        .expect("valid name");
    for attrs in h.fixture.invalid_attrs.iter().chain([&unknown]) {
        let r = h.conn.attach(&d, &h.fixture.device_type, attrs).await;
        if h.conn.capabilities().attach {
            assert!(
                matches!(r, Err(Error::InvalidAttribute { .. })),
                "attach with {attrs:?} answered {r:?}, not InvalidAttribute"
            );
        } else {
            assert!(matches!(r, Err(Error::Unsupported { .. })));
        }
        assert_eq!(
            snapshot(h, &d).await,
            before,
            "a refused attach with {attrs:?} changed the domain"
        );
    }
}

/// Leaving out any required attribute (under all its names) is `MissingAttribute` naming it,
/// and changes nothing.
pub async fn missing_attributes_are_refused(h: &Harness) {
    let d = domain(h).await;
    let before = snapshot(h, &d).await;
    let schema = h
        .conn
        .schema(&h.fixture.device_type)
        .await
        .expect("schema")
        .clone();
    for a in schema.attributes.iter().filter(|a| a.required) {
        let mut attrs = (h.fixture.make_attrs)(next_index(1));
        for n in a.names() {
            attrs.remove(n);
        }
        let r = h.conn.attach(&d, &h.fixture.device_type, &attrs).await;
        match r {
            Err(Error::MissingAttribute { ref name, .. }) => assert_eq!(name, &a.name),
            Err(Error::Unsupported { .. }) if !h.conn.capabilities().attach => {}
            other => panic!(
                "attach without {} answered {other:?}, not MissingAttribute",
                a.name
            ),
        }
        assert_eq!(
            snapshot(h, &d).await,
            before,
            "a refused attach changed the domain"
        );
    }
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

async fn next_event(
    s: &mut vdev_core::EventStream,
    want: impl Fn(&DeviceEvent) -> bool,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Err(_) => panic!("no {what} event within 30 s"),
            Ok(None) => panic!("the event stream ended before the {what} event"),
            Ok(Some(Err(e))) => panic!("the event stream failed before the {what} event: {e}"),
            Ok(Some(Ok(ev))) if want(&ev) => return,
            Ok(Some(Ok(_))) => {}
        }
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

/// A read-only connection lists like the read-write one but refuses attach and detach.
pub async fn readonly_refuses_changes(h: &Harness) {
    assert!(
        h.readonly.is_read_only(),
        "the harness's read-only connection is not read-only"
    );
    let d = h
        .readonly
        .domain(&h.fixture.domain)
        .await
        .expect("lookup on the read-only connection");
    let before = snapshot(h, &d).await;
    let attrs = (h.fixture.make_attrs)(next_index(1));
    let r = h.readonly.attach(&d, &h.fixture.device_type, &attrs).await;
    assert!(
        matches!(r, Err(Error::ReadOnly { .. })),
        "read-only attach answered {r:?}"
    );
    let target = before
        .iter()
        .find(|dev| dev.device_type == h.fixture.device_type)
        .map(|dev| dev.reference.clone())
        .unwrap_or_else(|| DeviceRef::new("0").expect("valid"));
    let r = h
        .readonly
        .detach(&d, &h.fixture.device_type, &target, &options(h))
        .await;
    assert!(
        matches!(r, Err(Error::ReadOnly { .. })),
        "read-only detach answered {r:?}"
    );
    if let Some(u) = &h.fixture.update {
        let r = h
            .readonly
            .update(&d, &u.device_type, &target, &u.valid)
            .await;
        assert!(
            matches!(r, Err(Error::ReadOnly { .. })),
            "read-only update answered {r:?}"
        );
    }
    assert_eq!(
        snapshot(h, &d).await,
        before,
        "a refused change altered the domain"
    );
    let mut seen = h
        .readonly
        .devices(&d, None)
        .await
        .expect("listing on the read-only connection");
    seen.sort_by(|a, b| (&a.device_type, &a.reference).cmp(&(&b.device_type, &b.reference)));
    assert_eq!(
        seen, before,
        "the read-only connection lists something else than the read-write one"
    );
}

/// Without an update fixture: the core answers `Unsupported` for any update. With one: an
/// update is listed back value for value, and an `Updated` event names what changed.
pub async fn update_is_listed_back(h: &Harness) {
    let d = domain(h).await;
    let Some(u) = &h.fixture.update else {
        let target = snapshot(h, &d)
            .await
            .into_iter()
            .map(|dev| (dev.device_type, dev.reference))
            .next()
            .unwrap_or((
                h.fixture.device_type.clone(),
                DeviceRef::new("0").expect("valid"),
            ));
        let any = Attributes::from_pairs([("x", "y")]).expect("valid");
        let r = h.conn.update(&d, &target.0, &target.1, &any).await;
        assert!(
            !h.conn.capabilities().update
                && matches!(&r, Err(Error::Unsupported { operation, detail, .. }) if operation == "update" && !detail.is_empty()),
            "a driver without an update fixture must declare no update capability, and the core must answer Unsupported with its reason: {r:?}"
        );
        return;
    };
    assert!(
        h.conn.capabilities().update,
        "an update fixture is given, but the driver declares no update capability"
    );
    let schema = h.conn.schema(&u.device_type).await.expect("schema");
    for (name, _) in u.valid.iter() {
        assert!(
            schema.attribute(name).is_some_and(|a| a.updatable),
            "the fixture updates '{name}', which the schema does not mark updatable"
        );
    }
    let mut events = h.conn.watch(&d).await.expect("events");
    let attrs = (u.make_attrs)(next_index(1));
    let r = h
        .conn
        .attach(&d, &u.device_type, &attrs)
        .await
        .unwrap_or_else(|e| panic!("attach of the device to update failed: {e}"));
    h.conn
        .update(&d, &u.device_type, &r, &u.valid)
        .await
        .unwrap_or_else(|e| panic!("update {:?} of {r} failed: {e}", u.valid));
    let dev = h
        .conn
        .devices(&d, Some(&u.device_type))
        .await
        .expect("list")
        .into_iter()
        .find(|x| x.reference == r)
        .expect("the updated device is listed");
    for (name, value) in u.valid.iter() {
        assert_eq!(
            dev.attributes.get(name),
            Some(value),
            "'{name}' is not listed with its new value after the update"
        );
    }
    let t = u.device_type.clone();
    let want = u.valid.clone();
    next_event(
        &mut events,
        |e| matches!(e, DeviceEvent::Updated { reference, device_type, attributes, .. } if *reference == r && *device_type == t && want.iter().all(|(n, v)| attributes.get(n) == Some(v))),
        "Updated",
    )
    .await;
    let _ = h.conn.detach(&d, &u.device_type, &r, &options(h)).await;
}

/// Refused updates change nothing: an attribute that is not updatable, each malformed value,
/// and an unknown reference.
pub async fn refused_updates_change_nothing(h: &Harness) {
    let Some(u) = &h.fixture.update else {
        return; // update_is_listed_back asserts Unsupported.
    };
    let d = domain(h).await;
    let attrs = (u.make_attrs)(next_index(1));
    let r = h
        .conn
        .attach(&d, &u.device_type, &attrs)
        .await
        .unwrap_or_else(|e| panic!("attach of the device to update failed: {e}"));
    let before = snapshot(h, &d).await;
    let schema = h.conn.schema(&u.device_type).await.expect("schema").clone();
    let fixed = schema
        .attributes
        .iter()
        .find(|a| !a.updatable)
        .expect("some attribute of the type is not updatable");
    let not_updatable =
        Attributes::from_pairs([(fixed.name.clone(), fixed.example.clone())]).expect("valid");
    let mut tries: Vec<(Attributes, &str)> = vec![(not_updatable, "not updatable")];
    tries.extend(u.malformed.iter().map(|a| (a.clone(), "malformed")));
    for (a, why) in &tries {
        let res = h.conn.update(&d, &u.device_type, &r, a).await;
        assert!(
            matches!(res, Err(Error::InvalidAttribute { .. })),
            "a {why} update {a:?} answered {res:?}"
        );
    }
    let unknown = DeviceRef::new("vdev-conformance-no-such-device").expect("valid");
    let res = h.conn.update(&d, &u.device_type, &unknown, &u.valid).await;
    assert!(
        matches!(res, Err(Error::DeviceNotFound { .. })),
        "an update of an unknown ref answered {res:?}"
    );
    assert_eq!(
        snapshot(h, &d).await,
        before,
        "a refused update altered the domain"
    );
    let _ = h.conn.detach(&d, &u.device_type, &r, &options(h)).await;
}

/// Close the harness's connections.
/// Scopes: every [`vdev_core::Scope`] the driver does not declare in
/// [`vdev_core::Capabilities::scopes`] is refused with `Unsupported` by attach, detach and update,
/// changing nothing; a device attached with a declared scope (live first) is listed and
/// detached like one attached without.
pub async fn scopes_are_enforced(h: &Harness) {
    use vdev_core::{AttachOptions, Scope, UpdateOptions};
    let d = domain(h).await;
    let offered = h.conn.capabilities().scopes;
    let before = snapshot(h, &d).await;
    let target = before
        .first()
        .map(|dev| (dev.device_type.clone(), dev.reference.clone()));
    for scope in Scope::ALL.into_iter().filter(|s| !offered.contains(*s)) {
        let attrs = (h.fixture.make_attrs)(next_index(1));
        let opts = AttachOptions { scope: Some(scope) };
        match h
            .conn
            .attach_with(&d, &h.fixture.device_type, &attrs, &opts)
            .await
        {
            Err(Error::Unsupported { .. }) => {}
            other => panic!(
                "attach with the undeclared scope {scope}: expected Unsupported, got {other:?}"
            ),
        }
        if let Some((t, r)) = &target {
            let opts = DetachOptions {
                scope: Some(scope),
                ..options(h)
            };
            match h.conn.detach(&d, t, r, &opts).await {
                Err(Error::Unsupported { .. }) => {}
                other => panic!(
                    "detach with the undeclared scope {scope}: expected Unsupported, got {other:?}"
                ),
            }
            let opts = UpdateOptions { scope: Some(scope) };
            match h
                .conn
                .update_with(&d, t, r, &Attributes::new(), &opts)
                .await
            {
                Err(Error::Unsupported { .. }) => {}
                other => panic!(
                    "update with the undeclared scope {scope}: expected Unsupported, got {other:?}"
                ),
            }
        }
    }
    assert_eq!(
        snapshot(h, &d).await,
        before,
        "a refused scope changed the devices"
    );
    if let Some(scope) = offered.iter().next() {
        let attrs = (h.fixture.make_attrs)(next_index(1));
        let opts = AttachOptions { scope: Some(scope) };
        let r = h
            .conn
            .attach_with(&d, &h.fixture.device_type, &attrs, &opts)
            .await
            .unwrap_or_else(|e| panic!("attach with the declared scope {scope} failed: {e}"));
        assert!(
            refs(h, &d).await.contains(&r),
            "a device attached with scope {scope} is not listed"
        );
        h.conn
            .detach(&d, &h.fixture.device_type, &r, &options(h))
            .await
            .unwrap_or_else(|e| panic!("detaching the device attached with scope {scope}: {e}"));
    }
}

/// A batch is all or nothing: one whose third entry the driver refuses (the fixture's first
/// invalid attribute set) leaves the domain as it was and names entry 2; one whose third entry
/// repeats the first either attaches all three or nothing; a valid batch attaches every device,
/// each listed once, in order.
pub async fn batch_is_all_or_nothing(h: &Harness) {
    let d = domain(h).await;
    let before = snapshot(h, &d).await;
    let base = next_index(3);
    let new = |attributes: Attributes| vdev_core::NewDevice {
        device_type: h.fixture.device_type.clone(),
        attributes,
    };
    let valid: Vec<vdev_core::NewDevice> = (0..3)
        .map(|i| new((h.fixture.make_attrs)(base + i)))
        .collect();
    let no_options = vdev_core::AttachOptions::default();
    if !h.conn.capabilities().attach {
        let r = h.conn.attach_batch(&d, &valid, &no_options).await;
        assert!(
            matches!(r, Err(Error::Unsupported { .. })),
            "attach is declared unsupported but a batch answered {r:?}"
        );
        return;
    }
    if let Some(bad) = h.fixture.invalid_attrs.first() {
        let batch = vec![
            valid[0].clone(),
            valid[1].clone(),
            new(bad.clone()),
            valid[2].clone(),
        ];
        let r = h.conn.attach_batch(&d, &batch, &no_options).await;
        match &r {
            Err(Error::InBatch { index: 2, error, .. })
                if matches!(**error, Error::InvalidAttribute { .. }) => {}
            other => panic!("a batch whose entry 2 is invalid ({bad:?}) answered {other:?}, not InBatch {{ index: 2, InvalidAttribute }}"),
        }
        assert_eq!(
            snapshot(h, &d).await,
            before,
            "a refused batch left something behind"
        );
    }
    let again = vec![valid[0].clone(), valid[1].clone(), valid[0].clone()];
    match h.conn.attach_batch(&d, &again, &no_options).await {
        Ok(made) => {
            // The driver lets the same attributes make two devices: all three are there.
            assert_eq!(made.len(), 3);
            for r in &made {
                detach_one(h, &d, r).await;
            }
        }
        Err(Error::InBatch { index: 2, .. }) => {}
        Err(e) => panic!(
            "a batch repeating its first entry failed with {e:?}, not InBatch {{ index: 2 }}"
        ),
    }
    assert_eq!(
        snapshot(h, &d).await,
        before,
        "a batch repeating its first entry left the domain changed after its failure (or cleanup)"
    );
    let made = h
        .conn
        .attach_batch(&d, &valid, &no_options)
        .await
        .unwrap_or_else(|e| panic!("a valid batch failed: {e}"));
    assert_eq!(made.len(), 3, "a batch of 3 returned {made:?}");
    let listed = refs(h, &d).await;
    for r in &made {
        assert!(listed.contains(r), "device {r} of the batch is not listed");
    }
    assert_eq!(made.iter().collect::<BTreeSet<_>>().len(), 3, "{made:?}");
    for r in made.iter().rev() {
        detach_one(h, &d, r).await;
    }
    assert_eq!(snapshot(h, &d).await, before);
}

/// Desired states: the export of the domain plans to nothing (the driver's identity and
/// normal-form declarations agree with its listing); a document adding two devices plans two
/// adds, applies them (listed back) and plans to nothing once applied; marking them absent
/// removes them.
pub async fn desired_state_round_trip(h: &Harness) {
    use vdev_core::{ApplyOptions, ChangeOp, DesiredDevice, DesiredState, Document, Outcome};
    let d = domain(h).await;
    let before = snapshot(h, &d).await;
    let exported = h.conn.export(&h.fixture.domain).await.expect("export");
    let plan = h.conn.plan(&exported).await.expect("plan of the export");
    assert!(
        plan.is_empty(),
        "the export of the domain plans changes (the schema's identity, listed or spellings disagree with the listing): {plan:?}\nexport: {}",
        exported.to_yaml()
    );
    if !h.conn.capabilities().attach || !h.conn.capabilities().detach {
        return;
    }
    let base = next_index(2);
    let entries = |state| -> Document {
        let devices = (0..2)
            .map(|i| DesiredDevice {
                device_type: h.fixture.device_type.clone(),
                state,
                id: None,
                attrs: (h.fixture.make_attrs)(base + i),
            })
            .collect();
        Document {
            domains: [(
                h.fixture.domain.clone(),
                vdev_core::DomainDocument {
                    exclusive: vec![],
                    devices,
                },
            )]
            .into_iter()
            .collect(),
        }
    };
    let present = entries(DesiredState::Present);
    let plan = h.conn.plan(&present).await.expect("plan");
    assert_eq!(plan.count(ChangeOp::Add), 2, "{plan:?}");
    assert_eq!(plan.changes.len(), 2, "{plan:?}");
    assert_eq!(snapshot(h, &d).await, before, "a plan changed the domain");
    let options = ApplyOptions {
        timeout: h.fixture.detach_timeout,
        scope: None,
    };
    let report = h
        .conn
        .apply(&present, &options)
        .await
        .expect("apply")
        .into_result()
        .unwrap_or_else(|e| panic!("apply failed: {e}"));
    assert_eq!(report.count(&Outcome::Done), 2, "{report:?}");
    let listed = refs(h, &d).await;
    for a in &report.changes {
        let r = a.change.reference.as_ref().expect("an add's reference");
        assert!(listed.contains(r), "device {r} applied is not listed");
    }
    let again = h.conn.plan(&present).await.expect("plan again");
    assert!(
        again.is_empty(),
        "once applied, the document still plans {again:?}"
    );
    let absent = entries(DesiredState::Absent);
    let report = h
        .conn
        .apply(&absent, &options)
        .await
        .expect("apply absent")
        .into_result()
        .unwrap_or_else(|e| panic!("apply of absent entries failed: {e}"));
    assert_eq!(report.count(&Outcome::Done), 2, "{report:?}");
    assert_eq!(
        snapshot(h, &d).await,
        before,
        "the absent entries were not all removed"
    );
}
