//! The conformance kit against a real libvirtd (started by the test, QEMU under TCG): every
//! check on a domain of its own.

mod common;

use std::time::Duration;

use common::Libvirtd;
use vdev_conformance::{Fixture, Harness, UpdateFixture};
use vdev_core::{Attributes, DeviceType};
use vdev_driver_libvirt as _;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .expect("valid attributes")
}

async fn setup() -> Option<Harness> {
    let lv = tokio::task::spawn_blocking(|| {
        let lv = Libvirtd::start()?;
        lv.define("kit", 8, true);
        Some(lv)
    })
    .await
    .expect("setup")?;
    let uri = lv.vdev_uri();
    let img = lv.dir.path().join("img");
    let img2 = img.clone();
    Some(Harness {
        conn: vdev_core::connect(&uri).await.expect("connect"),
        readonly: vdev_core::connect_readonly(&uri)
            .await
            .expect("connect read-only"),
        fixture: Fixture {
            domain: "kit".into(),
            device_type: DeviceType::DISK,
            make_attrs: Box::new(move |i| {
                let p = img.join(format!("kit-{i}.raw"));
                std::fs::File::create(&p)
                    .and_then(|f| f.set_len(1 << 20))
                    .expect("image");
                let p = p.to_str().expect("utf-8").to_owned();
                attrs(&[("source", &p), ("format", "raw"), ("bus", "scsi")])
            }),
            invalid_attrs: vec![
                attrs(&[("source", "relative.raw")]),
                attrs(&[("source", "/nonexistent/vdev-kit.raw")]),
                attrs(&[
                    ("source", &format!("{}/x.raw", img2.display())),
                    ("readonly", "maybe"),
                ]),
                attrs(&[
                    ("source", &format!("{}/x.raw", img2.display())),
                    ("bus", "nosuchbus"),
                ]),
            ],
            detach_timeout: Duration::from_secs(5),
            update: Some(UpdateFixture {
                device_type: DeviceType::NETWORK,
                make_attrs: Box::new(|i| {
                    let mac = format!("52:54:00:5e:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff);
                    attrs(&[("netdev", "user"), ("mac", &mac)])
                }),
                valid: attrs(&[("link", "down")]),
                malformed: vec![attrs(&[("link", "sideways")])],
            }),
            concurrency: vdev_conformance::CONCURRENCY,
        },
        hold: Some(Box::new(lv)),
    })
}

vdev_conformance::conformance_tests!(setup);
