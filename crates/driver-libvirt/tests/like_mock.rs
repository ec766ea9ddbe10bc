//! The mock speaks libvirt's language: the application scenario of
//! `vdev_conformance::scenario`, written once, runs on a real libvirtd (QEMU under TCG, the
//! project's test guest) and on `mock:///default?like=libvirt` with the matching guest knobs,
//! and the two runs agree on every result, state and error kind (references aside).
//!
//! The real guest: native PCIe hotplug (a virtio disk is released some seconds after the
//! request: late; a virtio NIC not within 1 s: never, for the scenario), and
//! `vdev_guest.holdcd` (the guest holds its first CD-ROM drive and locks its tray: libvirt
//! waits for the tray in vain and says "timed out waiting to open tray"). The CD-ROM drives
//! are the domain's own from its start: libvirt 9.0 does not open the tray of a drive
//! hot-plugged later, so no medium of such a drive changes (see `tests/libvirt.rs`).

mod common;

use std::time::{Duration, Instant};

use common::{guest, Libvirtd, HANG};
use vdev_conformance::scenario::{self, GuestStep};
use vdev_core::prelude::BoxFuture;
use vdev_core::{DeviceRef, DeviceType};
use vdev_driver_libvirt as _;
use vdev_driver_mock::{connect_with_control, Guest, Removal};

/// Wait until the guest's serial console has printed `line`.
fn wait_for_line(log: &std::path::Path, line: &str) {
    let deadline = Instant::now() + HANG + HANG;
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(line)
    {
        assert!(
            Instant::now() < deadline,
            "the guest did not print {line:?}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The scenario's CD-ROM drive `which` (0: the held one, 1: the other) as device XML.
fn drive_xml(s: &scenario::Scenario, which: usize) -> String {
    let (held, cd, _) = s
        .cdrom
        .as_ref()
        .expect("the libvirt scenario has CD-ROM drives");
    let a = [held, cd][which];
    format!(
        "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
         <source file='{}'/><target dev='{}' bus='scsi'/><readonly/></disk>",
        a.get("source").expect("source"),
        a.get("target").expect("target"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_like_libvirt_agrees_with_a_real_libvirtd() {
    let images = tempfile::tempdir().unwrap();
    let real_scenario = scenario::libvirt("g", images.path());
    let devices = format!(
        "{}{}",
        drive_xml(&real_scenario, 0),
        drive_xml(&real_scenario, 1)
    );
    let Some(lv) = tokio::task::spawn_blocking(move || {
        let (kernel, initrd, append) = guest()?;
        let lv = Libvirtd::start()?;
        let log = lv.dir.path().join("serial.log");
        // Native PCIe hotplug, as the QEMU driver's scenario has it (QEMU 7.2's q35 default,
        // ACPI hotplug, lets the guest release a NIC within the second).
        lv.define_full(
            "g",
            6,
            true,
            &format!(
                "<kernel>{kernel}</kernel><initrd>{initrd}</initrd>\
                 <cmdline>{append} vdev_guest.holdcd</cmdline>"
            ),
            &format!(
                "{devices}<serial type='file'><source path='{}'/><target port='0'/></serial>",
                log.display()
            ),
            "<qemu:commandline><qemu:arg value='-global'/>\
             <qemu:arg value='ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off'/>\
             </qemu:commandline>",
        );
        wait_for_line(&log, "VDEV-GUEST: READY");
        Some(lv)
    })
    .await
    .expect("setup") else {
        return;
    };
    let log = lv.dir.path().join("serial.log");
    let real_guest =
        move |step: GuestStep, _: DeviceType, _: DeviceRef| -> BoxFuture<'static, ()> {
            let log = log.clone();
            Box::pin(async move {
                if step == GuestStep::LocksTray {
                    // The guest holds its first CD-ROM drive (sr0, the scenario's sda).
                    tokio::task::spawn_blocking(move || wait_for_line(&log, "CD HELD"))
                        .await
                        .expect("wait");
                }
            })
        };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let real = tokio::time::timeout(
        Duration::from_secs(300),
        scenario::run(&conn, &real_scenario, &real_guest),
    )
    .await
    .expect("the scenario on libvirt ends");

    let (mock, control) = connect_with_control("mock:///default?like=libvirt")
        .await
        .unwrap();
    let simulated_scenario = scenario::libvirt("demo", images.path());
    // The domain's own CD-ROM drives.
    let demo = mock.domain("demo").await.unwrap();
    let (held, cd, _) = simulated_scenario.cdrom.as_ref().unwrap();
    for a in [held, cd] {
        mock.attach(&demo, &DeviceType::DISK, a).await.unwrap();
    }
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
    let simulated = scenario::run(&mock, &simulated_scenario, &knobs).await;
    assert_eq!(
        simulated, real,
        "the mock like=libvirt and the real libvirtd disagree"
    );
}
