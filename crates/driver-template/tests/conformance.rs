//! The whole conformance kit against the template driver: one fresh host per check.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vdev_conformance::{Fixture, Harness, UpdateFixture};
use vdev_core::{Attributes, DeviceType};
use vdev_driver_template as _; // link the driver

fn attrs(pairs: &[(&str, String)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.clone()))).expect("valid")
}

async fn setup() -> Harness {
    static N: AtomicUsize = AtomicUsize::new(0);
    let uri = format!("template:///kit-{}", N.fetch_add(1, Ordering::SeqCst));
    Harness {
        conn: vdev_core::connect(&uri).await.expect("connect"),
        readonly: vdev_core::connect_readonly(&uri).await.expect("connect"),
        fixture: Fixture {
            domain: "vm1".into(),
            device_type: DeviceType::DISK,
            make_attrs: Box::new(|i| attrs(&[("source", format!("/img/kit-{i}.raw"))])),
            invalid_attrs: vec![
                attrs(&[("source", "relative.raw".into())]),
                attrs(&[
                    ("source", "/img/x.raw".into()),
                    ("readonly", "maybe".into()),
                ]),
            ],
            detach_timeout: Duration::from_secs(5),
            update: Some(UpdateFixture {
                device_type: DeviceType::DISK,
                make_attrs: Box::new(|i| attrs(&[("source", format!("/img/upd-{i}.raw"))])),
                valid: attrs(&[("readonly", "on".into())]),
                malformed: vec![attrs(&[("readonly", "maybe".into())])],
            }),
            concurrency: vdev_conformance::CONCURRENCY,
        },
        hold: None,
    }
}

vdev_conformance::conformance_tests!(setup);
