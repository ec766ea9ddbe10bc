//! The mock speaks Xen's language: the application scenario of `vdev_conformance::scenario`,
//! written once, runs on the Xen lab's domU and on `mock:///default?like=xen` with the
//! matching guest knobs, and the two runs agree on every result, state and error kind
//! (references aside). The real guest: a domU releases a disk within seconds (late), and a
//! paused domU releases nothing (never, for the scenario: it is unpaused afterwards).

mod common;

use std::time::Duration;

use common::{dom0, domu, force, open, SERIAL};
use vdev_conformance::scenario::{self, GuestStep};
use vdev_core::prelude::BoxFuture;
use vdev_core::{DeviceRef, DeviceType};
use vdev_driver_mock::{connect_with_control, Guest, Removal};
use vdev_driver_xen as _;

/// Unpauses the domU when dropped (also when the scenario panics).
struct Unpause;

impl Drop for Unpause {
    fn drop(&mut self) {
        let _ = dom0(&format!("xl unpause {}", domu()));
    }
}

/// Remove (forced) what the scenario makes on the lab's domU, which other tests share.
async fn leave_nothing(conn: &vdev_core::Connection, d: &vdev_core::Domain) {
    for dev in conn.devices(d, None).await.unwrap() {
        let ours = dev.attributes.get("mac") == Some("00:16:3e:5c:00:01")
            || dev
                .attributes
                .get("uname")
                .is_some_and(|u| u.contains("vdev-scenario-"));
        if ours {
            let _ = conn
                .detach(d, &dev.device_type, &dev.reference, &force())
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_like_xen_agrees_with_the_xen_lab() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    leave_nothing(&conn, &d).await; // of an earlier run that failed
    leave_nothing(&conn, &d).await; // of an earlier run that failed
    let (ok, out) = dom0("cd /root/lab && for n in disk.img b.img c.img d.img e.img; do truncate -s 8M vdev-scenario-$n; done");
    assert!(ok, "images in dom0: {out}");
    let _unpause = Unpause;
    let real_guest = |step: GuestStep, _: DeviceType, _: DeviceRef| -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if step == GuestStep::NeverAnswers {
                // A paused guest releases nothing.
                let (ok, out) = dom0(&format!("xl pause {}", domu()));
                assert!(ok, "xl pause: {out}");
            }
        })
    };
    let real = tokio::time::timeout(
        Duration::from_secs(300),
        scenario::run(&conn, &scenario::xen(&d.name, "/root/lab"), &real_guest),
    )
    .await
    .expect("the scenario on the lab ends");
    drop(_unpause);
    leave_nothing(&conn, &d).await;

    // The lab's domU (shared, and busy with other tests' disks) had connected none of the
    // new devices by the end of the scenario: they stayed init-wait. So the mock's guest.
    let (mock, control) = connect_with_control("mock:///default?like=xen&connect=never")
        .await
        .unwrap();
    let knobs = move |step: GuestStep, t: DeviceType, r: DeviceRef| -> BoxFuture<'static, ()> {
        let c = control.clone();
        Box::pin(async move {
            let g = Guest {
                removal: Some(match step {
                    GuestStep::AnswersLate => Removal::After(Duration::from_millis(200)),
                    _ => Removal::Pending,
                }),
                ..Guest::default()
            };
            c.set_device_guest("demo", &t, &r, g).await.expect("knobs");
        })
    };
    let simulated = scenario::run(&mock, &scenario::xen("demo", "/root/lab"), &knobs).await;
    assert_eq!(
        simulated, real,
        "the mock like=xen and the Xen lab disagree"
    );
}
