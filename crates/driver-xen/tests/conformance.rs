//! The conformance kit against the real Xen lab: disks of the lab's domU, attached from the
//! host. The lab's backend runs no hotplug script for host-made disks, so a new disk stays at
//! backend InitWait (2) / frontend Initialised (3): attach waits for "backend at least InitWait".

mod common;

use std::time::Duration;

use vdev_conformance::{Fixture, Harness};
use vdev_core::DeviceType;
use vdev_driver_xen as _;

use common::{attrs, domu, lab, uri, xvd};

async fn setup() -> Option<Harness> {
    lab()?;
    let conn = vdev_core::connect(&uri()).await.expect("connect");
    let readonly = vdev_core::connect_readonly(&uri())
        .await
        .expect("read-only connect");
    let invalid_attrs = vec![
        attrs(&[("uname", "/root/lab/x.img"), ("dev", "xvdz")]),
        attrs(&[("uname", "nbd:/root/lab/x.img"), ("dev", "xvdz")]),
        attrs(&[("uname", "file:relative.img"), ("dev", "xvdz")]),
        attrs(&[("uname", "file:/root/../etc/passwd"), ("dev", "xvdz")]),
        attrs(&[("uname", "file:/root/lab/x.img"), ("dev", "vda")]),
        attrs(&[("uname", "file:/root/lab/x.img"), ("dev", "xvd/../a")]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("mode", "rx"),
        ]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("format", "qcow2"),
        ]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("backend", "no-such-domain"),
        ]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("backend", "4242"),
        ]),
        attrs(&[
            ("uname", "file:/root/lab/x.img"),
            ("dev", "xvdz"),
            ("backend", "../0"),
        ]),
    ];
    let make_attrs = Box::new(|i: usize| {
        // From xvde on: the lab's own tests use xvdb..xvdd.
        let dev = xvd(4 + i);
        attrs(&[
            ("uname", &format!("file:/root/lab/vdev-{dev}.img")),
            ("dev", &dev),
            ("mode", "w"),
        ])
    });
    Some(Harness {
        conn,
        readonly,
        fixture: Fixture {
            domain: domu(),
            device_type: DeviceType::DISK,
            make_attrs,
            invalid_attrs,
            detach_timeout: Duration::from_secs(30),
            // Nothing is updatable on Xen yet: the checks assert the core's Unsupported.
            update: None,
        },
    })
}

// The kit's checks, one test each, skipped when the lab is not configured (the kit's own
// `conformance_tests!` cannot skip).
macro_rules! checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let _turn = common::SERIAL.lock().await;
            let Some(h) = setup().await else { return };
            vdev_conformance::$check(&h).await;
            vdev_conformance::finish(h).await;
        }
    )*};
}

checks!(
    domains_and_lookup,
    schema_describes_type,
    unknown_device_type_is_unsupported,
    attach_list_detach,
    detach_unknown_ref_is_not_found,
    invalid_attributes_are_refused,
    missing_attributes_are_refused,
    concurrent_attaches_get_distinct_refs,
    events_for_attach_and_detach,
    readonly_refuses_changes,
);
