//! What a driver refuses, and that a refusal changes nothing.

use super::*;

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
