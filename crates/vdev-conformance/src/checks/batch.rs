//! Batches and desired-state documents.

use super::*;

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
