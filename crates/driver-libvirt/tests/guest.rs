//! With a real guest (the project's TCG test guest, tests/qemu-guest): a virtio disk on a PCIe
//! root port is released by the guest's kernel, so detach waits for it and says gone, and no
//! removal is left recorded.

mod common;

use std::time::{Duration, Instant};

use common::{guest, Libvirtd, HANG};
use vdev_core::{Attributes, DetachOptions, DeviceType};
use vdev_driver_libvirt as _;

/// A libvirtd running the test guest as domain `g` (with `extra` on its kernel command line),
/// ready; `None` to skip.
async fn guest_domain(extra: &'static str) -> Option<Libvirtd> {
    tokio::task::spawn_blocking(move || {
        let (kernel, initrd, append) = guest()?;
        let lv = Libvirtd::start()?;
        let log = lv.dir.path().join("serial.log");
        lv.define_with(
            "g",
            4,
            true,
            &format!("<kernel>{kernel}</kernel><initrd>{initrd}</initrd><cmdline>{append} {extra}</cmdline>"),
            &format!(
                "<serial type='file'><source path='{}'/><target port='0'/></serial>",
                log.display()
            ),
        );
        wait_for_line(&lv, "VDEV-GUEST: READY");
        Some(lv)
    })
    .await
    .expect("setup")
}

/// Wait until the guest's serial console has printed `line`.
fn wait_for_line(lv: &Libvirtd, line: &str) {
    let log = lv.dir.path().join("serial.log");
    let deadline = Instant::now() + HANG + HANG;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(line)
    {
        assert!(
            Instant::now() < deadline,
            "the guest did not print {line:?}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_releases_a_virtio_disk_and_detach_says_gone() {
    let Some(lv) = guest_domain("").await else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let g = conn.domain("g").await.expect("domain");
    let img = lv.image("g.raw");
    let src = img.to_str().expect("utf-8").to_owned();
    let a = Attributes::from_pairs([("source".to_owned(), src), ("bus".into(), "virtio".into())])
        .expect("attrs");
    let r = conn
        .attach(&g, &DeviceType::DISK, &a)
        .await
        .expect("attach");
    let long = DetachOptions {
        timeout: HANG,
        ..DetachOptions::default()
    };
    conn.detach(&g, &DeviceType::DISK, &r, &long)
        .await
        .expect("the guest lets go, and detach says gone");
    let listed = lv.virsh_ok(&["domblklist", "g"]);
    assert!(!listed.contains(img.to_str().expect("utf-8")), "{listed}");
    let live = lv.virsh_ok(&["dumpxml", "g"]);
    assert!(
        !live.contains(r.as_str()),
        "a record of the removal stays: {live}"
    );
}

/// A CD-ROM drive whose tray the guest holds locked: a medium change is refused as busy, with
/// libvirt's words, and changes nothing; forced, it either changes the medium (checked by
/// virsh) or, where libvirt cannot open the tray at all (libvirt 9.0 here: the drive is
/// hot-plugged, and libvirt opens only the trays of drives the domain started with), is
/// refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdrom_the_guest_locked() {
    let Some(lv) = guest_domain("vdev_guest.holdcd").await else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let g = conn.domain("g").await.expect("domain");
    let (one, two) = (lv.image("one.iso"), lv.image("two.iso"));
    let (one, two) = (
        one.to_str().expect("utf-8").to_owned(),
        two.to_str().expect("utf-8").to_owned(),
    );
    let attrs = |pairs: &[(&str, &str)]| {
        Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .expect("attrs")
    };
    let r = conn
        .attach(
            &g,
            &DeviceType::DISK,
            &attrs(&[("media", "cdrom"), ("source", &one)]),
        )
        .await
        .expect("attach a CD-ROM drive");
    tokio::task::block_in_place(|| wait_for_line(&lv, "VDEV-GUEST: CD HELD"));
    let before = lv.dumpxml("g");
    let e = conn
        .update(&g, &DeviceType::DISK, &r, &attrs(&[("source", &two)]))
        .await
        .unwrap_err();
    match &e {
        vdev_core::Error::DeviceBusy { reason, .. } => {
            assert!(
                reason.contains("Tray") && reason.contains("force=true"),
                "{reason}"
            )
        }
        e => panic!("a held medium's change answered {e:?}"),
    }
    assert_eq!(
        lv.dumpxml("g"),
        before,
        "a refused change changed the domain"
    );
    let forced = attrs(&[("source", &two), ("force", "true")]);
    match conn.update(&g, &DeviceType::DISK, &r, &forced).await {
        Ok(()) => assert!(lv.virsh_ok(&["domblklist", "g"]).contains(&two)),
        Err(vdev_core::Error::DeviceBusy { reason, .. }) => {
            assert!(reason.contains("even with force=true"), "{reason}");
            assert_eq!(
                lv.dumpxml("g"),
                before,
                "a refused change changed the domain"
            );
        }
        Err(e) => panic!("a forced change answered {e:?}"),
    }
}
