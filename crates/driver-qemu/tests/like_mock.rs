//! The mock speaks QEMU's language: one application scenario (`vdev_conformance::scenario`),
//! written once, runs on a real QEMU with the test guest and on `mock:///default?like=qemu`
//! with the matching guest knobs, and the two runs agree on every result, state and error
//! kind (references aside). The real guest: native PCIe hotplug (a virtio disk is released
//! some 6 s after the request: late; a NIC not within 1 s: never, for the scenario) and
//! `vdev_guest.holdcd` (the guest holds the first CD-ROM drive and locks its tray).

mod common;

use std::time::Duration;

use common::{guest, qemu_available, Vm, VmSpec};
use vdev_conformance::scenario::{self, GuestStep};
use vdev_core::prelude::BoxFuture;
use vdev_core::{DeviceRef, DeviceType};
use vdev_driver_mock::{connect_with_control, Guest, Removal};
use vdev_driver_qemu as _;

#[tokio::test(flavor = "multi_thread")]
async fn the_mock_like_qemu_agrees_with_a_real_qemu() {
    if !qemu_available() {
        return;
    }
    let Some(mut g) = guest() else { return };
    g.append.push_str(" vdev_guest.holdcd");
    let vm = Vm::start(VmSpec {
        guest: Some(g),
        extra: vec![
            "-global".into(),
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off".into(),
        ],
        ..VmSpec::default()
    });
    let images = tempfile::tempdir().unwrap();
    let log = vm.dir.path().join("serial.log");
    let real_guest =
        move |step: GuestStep, _: DeviceType, _: DeviceRef| -> BoxFuture<'static, ()> {
            let log = log.clone();
            Box::pin(async move {
                if step == GuestStep::LocksTray {
                    // The guest holds the first CD-ROM drive (sr0) and locks its door.
                    let deadline = std::time::Instant::now() + Duration::from_secs(120);
                    while !std::fs::read_to_string(&log)
                        .unwrap_or_default()
                        .contains("CD HELD")
                    {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the guest never held the drive"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        };
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let real = tokio::time::timeout(
        Duration::from_secs(300),
        scenario::run(&conn, &scenario::qemu("vm", images.path()), &real_guest),
    )
    .await
    .expect("the scenario on QEMU ends");

    let (mock, control) = connect_with_control("mock:///default?like=qemu")
        .await
        .unwrap();
    let knobs = move |step: GuestStep, t: DeviceType, r: DeviceRef| -> BoxFuture<'static, ()> {
        let c = control.clone();
        Box::pin(async move {
            let g = match step {
                GuestStep::AnswersLate => Guest {
                    removal: Some(Removal::After(Duration::from_millis(200))),
                    ..Guest::default()
                },
                GuestStep::NeverAnswers => Guest {
                    removal: Some(Removal::Pending),
                    ..Guest::default()
                },
                GuestStep::LocksTray => Guest {
                    tray_locked: Some(true),
                    ..Guest::default()
                },
            };
            c.set_device_guest("demo", &t, &r, g).await.expect("knobs");
        })
    };
    let simulated = scenario::run(&mock, &scenario::qemu("demo", images.path()), &knobs).await;
    assert_eq!(
        simulated, real,
        "the mock like=qemu and the real QEMU disagree"
    );
}
