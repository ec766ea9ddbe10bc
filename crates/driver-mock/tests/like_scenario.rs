//! The application scenario of `vdev_conformance::scenario`, written for the QEMU, the Xen and
//! the libvirt driver, on the mock speaking like each (with the guest knobs that match the real
//! guests). The drivers' `tests/like_mock.rs` run it on the real hypervisors too and compare.

use std::time::Duration;

use vdev_conformance::scenario::{self, GuestStep};
use vdev_core::{DeviceRef, DeviceType};
use vdev_driver_mock::{connect_with_control, Guest, MockControl, Removal};

/// The guest knobs for each step, on the scenario's domain.
fn knobs(
    control: MockControl,
    domain: &'static str,
) -> impl Fn(GuestStep, DeviceType, DeviceRef) -> futures::future::BoxFuture<'static, ()> + Sync {
    move |step, t, r| {
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
            c.set_device_guest(domain, &t, &r, g).await.expect("knobs");
        })
    }
}

#[tokio::test]
async fn the_qemu_scenario_runs_on_the_mock_like_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let (conn, control) = connect_with_control("mock:///default?like=qemu")
        .await
        .unwrap();
    let t = scenario::run(
        &conn,
        &scenario::qemu("demo", dir.path()),
        &knobs(control, "demo"),
    )
    .await;
    eprintln!("{t:#?}");
    assert!(
        t.iter()
            .any(|(s, o)| s == "change medium, tray locked" && o == "device-busy"),
        "{t:#?}"
    );
}

#[tokio::test]
async fn the_xen_scenario_runs_on_the_mock_like_xen() {
    let (conn, control) = connect_with_control("mock:///default?like=xen")
        .await
        .unwrap();
    let t = scenario::run(
        &conn,
        &scenario::xen("demo", "/root/lab"),
        &knobs(control, "demo"),
    )
    .await;
    assert!(
        t.iter()
            .any(|(s, o)| s == "update of what cannot change" && o == "unsupported"),
        "{t:#?}"
    );
}

#[tokio::test]
async fn the_libvirt_scenario_runs_on_the_mock_like_libvirt() {
    let dir = tempfile::tempdir().unwrap();
    let (conn, control) = connect_with_control("mock:///default?like=libvirt")
        .await
        .unwrap();
    let s = scenario::libvirt("demo", dir.path());
    // The CD-ROM drives the domain started with.
    let demo = conn.domain("demo").await.unwrap();
    let (held, cd, _) = s.cdrom.as_ref().unwrap();
    for a in [held, cd] {
        conn.attach(&demo, &DeviceType::DISK, a).await.unwrap();
    }
    let t = scenario::run(&conn, &s, &knobs(control, "demo")).await;
    for (step, outcome) in [
        ("change medium", "ok"),
        ("bad attach 2", "device-exists"),
        ("change medium, tray locked", "device-busy"),
        ("detach, guest never answering", "removal-pending"),
    ] {
        assert!(
            t.iter().any(|(s, o)| s == step && o == outcome),
            "{step}: {t:#?}"
        );
    }
}
