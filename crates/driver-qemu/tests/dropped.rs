//! A caller that drops an attach or detach future midway (a timeout around the call, a cancelled
//! request) leaves a whole device or none: the operation runs to its end on its own. Cut at many
//! points of a real QEMU's attach; an independent raw QMP client checks that nothing of vdev's
//! is left half made (a block node no device uses) and that vdev lists what QEMU has.

mod common;

use std::time::{Duration, Instant};

use common::{qemu_available, Raw, Vm, VmSpec};
use vdev_core::{Attributes, DetachOptions, DeviceRef, DeviceType};
use vdev_driver_qemu as _;

/// How long the operation left running may take to settle on a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

/// Wait until nothing vdev made is left unused, failing with what stays.
fn settled(raw: &mut Raw, what: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = raw.leftovers();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: half a device stays {SETTLE:?} after the caller dropped the call: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The disks vdev lists in `d`.
async fn listed_disks(conn: &vdev_core::Connection, d: &vdev_core::Domain) -> Vec<DeviceRef> {
    conn.devices(d, Some(&DeviceType::DISK))
        .await
        .expect("list")
        .into_iter()
        .map(|x| x.reference)
        .collect()
}

/// An attach that QEMU refuses at its last step (the device's realize: a block size that is not a
/// power of two) after the block node was made: the attach rolls the node back, also when the
/// caller has dropped it by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_attach_that_fails_still_rolls_back() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let mut raw = vm.raw();
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let d = conn.domains().await.expect("domains").remove(0);
    let before = raw.devices();
    let img = vm.image("refused.qcow2", "qcow2");
    let attrs = Attributes::from_pairs([
        ("source", img.display().to_string()),
        ("format", "qcow2".into()),
        ("bus", "scsi".into()),
        ("device.physical_block_size", "1000".into()),
    ])
    .unwrap();
    // Awaited, the attach fails and leaves nothing: the premise of the cuts below.
    let e = conn.attach(&d, &DeviceType::DISK, &attrs).await;
    assert!(e.is_err(), "QEMU accepted a block size of 1000: {e:?}");
    settled(&mut raw, "an attach QEMU refused");
    for us in [
        0u64, 300, 600, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 7000, 10000,
    ] {
        let cut = Duration::from_micros(us);
        let _ = tokio::time::timeout(cut, conn.attach(&d, &DeviceType::DISK, &attrs)).await;
        settled(&mut raw, &format!("a refused attach dropped after {cut:?}"));
        assert_eq!(raw.devices(), before, "a refused attach left a device");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_attach_or_detach_leaves_a_whole_device_or_none() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let mut raw = vm.raw();
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let d = conn.domains().await.expect("domains").remove(0);
    let cuts_us = [0u64, 200, 500, 1000, 1500, 2000, 3000, 5000, 8000, 13000];
    let mut images = Vec::new();
    for (i, cut) in cuts_us
        .iter()
        .map(|us| Duration::from_micros(*us))
        .enumerate()
    {
        let img = vm.image(&format!("cut-{i}.qcow2"), "qcow2");
        images.push((img.clone(), cut));
        let attrs = Attributes::from_pairs([
            ("source", img.display().to_string()),
            ("format", "qcow2".into()),
            ("bus", "scsi".into()),
        ])
        .unwrap();
        let done = tokio::time::timeout(cut, conn.attach(&d, &DeviceType::DISK, &attrs)).await;
        let what = format!("an attach dropped after {cut:?}");
        settled(&mut raw, &what);
        // This attach's device, told by its image: the attach left running may still be going
        // on (it then ends whole, checked at the end), and an earlier one may end meanwhile.
        let added = raw.devices_on(&img);
        // Whole or none: at most one new device, with its node, and vdev lists what QEMU has.
        assert!(added.len() <= 1, "{what}: QEMU has {added:?}");
        let listed: Vec<DeviceRef> = listed_disks(&conn, &d).await;
        if let Ok(Ok(r)) = &done {
            assert_eq!(added, [r.to_string()], "{what}: the attach that returned");
        }
        let Some(id) = added.first() else {
            continue;
        };
        assert!(raw.node_of(id).is_some(), "{what}: {id} has no node");
        let r = DeviceRef::new(id.clone()).unwrap();
        assert!(listed.contains(&r), "{what}: vdev does not list {id}");

        // Detach the new disk, dropping that call at the same point: the removal goes on.
        let wait = DetachOptions {
            timeout: SETTLE,
            ..Default::default()
        };
        let _ = tokio::time::timeout(cut, conn.detach(&d, &DeviceType::DISK, &r, &wait)).await;
        let what = format!("a detach dropped after {cut:?}");
        assert!(raw.wait_gone(id), "{what}: {id} stays in QEMU");
        settled(&mut raw, &what);
        let deadline = Instant::now() + SETTLE;
        while listed_disks(&conn, &d).await.contains(&r) {
            assert!(Instant::now() < deadline, "{what}: vdev still lists {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // An attach found with no device above may have ended since, or may end now: whole (one
    // device with its node, listed by vdev) or none, for each image.
    let deadline = Instant::now() + SETTLE;
    loop {
        let listed: Vec<DeviceRef> = listed_disks(&conn, &d).await;
        let mut unsettled = Vec::new();
        for (img, cut) in &images {
            let late = raw.devices_on(img);
            assert!(
                late.len() <= 1,
                "an attach dropped after {cut:?}: QEMU has {late:?}"
            );
            for id in late {
                let whole = raw.node_of(&id).is_some();
                if !whole || !listed.contains(&DeviceRef::new(id.clone()).unwrap()) {
                    unsettled.push(format!("{id} (dropped after {cut:?}; node: {whole})"));
                }
            }
        }
        if unsettled.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not whole, or not listed by vdev, {SETTLE:?} after the last attach: {unsettled:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settled(&mut raw, "the end");
}
