//! The domains, the schema and the device types a driver names.

use super::*;

/// Domains are listed; lookup by name, by id and by UUID (where the domain has them) agree; an
/// unknown name is `DomainNotFound`; [`vdev_core::Connection::resolve_domain`] names the same
/// domain by each key.
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
    // The lookup for device operations names the same domain; its state is the lookup's or
    // unknown (a driver may skip the round trip the state costs).
    let keys = [
        Some(d.name.clone()),
        d.id.map(|i| i.to_string()),
        d.uuid.clone(),
    ];
    for key in keys.into_iter().flatten() {
        let r = h
            .conn
            .resolve_domain(&key)
            .await
            .unwrap_or_else(|e| panic!("resolve_domain({key}): {e}"));
        assert_eq!(
            (r.id, &r.name, &r.uuid),
            (d.id, &d.name, &d.uuid),
            "resolve_domain({key}) and domain disagree on the identity"
        );
        assert!(
            r.state == d.state || r.state == vdev_core::RunState::Unknown,
            "resolve_domain({key}) says {} where domain says {}",
            r.state,
            d.state
        );
    }
    let missing = h
        .conn
        .resolve_domain("vdev-conformance-no-such-domain")
        .await;
    assert!(
        matches!(missing, Err(Error::DomainNotFound { .. })),
        "resolve_domain of an unknown domain answered {missing:?}"
    );
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
