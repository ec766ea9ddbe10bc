//! Changing a device in place, and the scopes a change reaches.

use super::*;

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
