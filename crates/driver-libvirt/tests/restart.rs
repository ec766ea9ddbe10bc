//! libvirtd killed and started again under an open vdev connection: the connection is opened
//! again, events keep coming, and an attach cut off by the kill either landed whole or not at
//! all, with vdev's listing and virsh's agreeing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Libvirtd, HANG};
use futures::StreamExt;
use vdev_core::{Attributes, Connection, DeviceEvent, DeviceType, Domain};
use vdev_driver_libvirt as _;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .expect("valid attributes")
}

async fn lab() -> Option<Libvirtd> {
    tokio::task::spawn_blocking(|| {
        let lv = Libvirtd::start()?;
        lv.define("vm", 8, true);
        Some(lv)
    })
    .await
    .expect("lab")
}

/// Wait until the connection answers again (the first calls after the restart may fail while
/// libvirtd comes up).
async fn until_answering(conn: &Connection, vm: &Domain) {
    let deadline = tokio::time::Instant::now() + HANG;
    while conn.devices(vm, None).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sources(lv: &Libvirtd) -> Vec<String> {
    lv.virsh_ok(&["domblklist", "vm"])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

async fn vdev_sources(conn: &Connection, vm: &Domain) -> Vec<String> {
    conn.devices(vm, Some(&DeviceType::DISK))
        .await
        .expect("list")
        .into_iter()
        .filter_map(|d| d.attributes.get("source").map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_libvirtd_restarting() {
    let Some(mut lv) = lab().await else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let vm = conn.domain("vm").await.expect("domain");
    let mut events = conn.watch(&vm).await.expect("watch");
    tokio::task::block_in_place(|| {
        lv.kill();
        lv.restart();
    });
    until_answering(&conn, &vm).await;
    // A change by another client after the restart reaches the watcher.
    let img = lv.image("after.raw");
    let xml = lv.dir.path().join("after.xml");
    std::fs::write(
        &xml,
        format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/>\
             <target dev='sdc' bus='scsi'/><address type='drive' controller='0' bus='0' target='0' unit='9'/>\
             <alias name='ua-other-1'/></disk>",
            img.display()
        ),
    )
    .expect("xml");
    lv.virsh_ok(&[
        "attach-device",
        "vm",
        xml.to_str().expect("utf-8"),
        "--live",
    ]);
    let added = tokio::time::timeout(HANG, async {
        while let Some(ev) = events.next().await {
            if let Ok(DeviceEvent::Added { reference, .. }) = ev {
                if reference.as_str() == "ua-other-1" {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(added, Ok(true), "no Added event after libvirtd restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libvirtd_killed_mid_attach_and_restarted() {
    let Some(mut lv) = lab().await else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let vm = conn.domain("vm").await.expect("domain");
    let img = lv.image("cut.raw");
    let img = img.to_str().expect("utf-8").to_owned();
    // The schema is asked once per connection: asked now, so that the attach's first request
    // is about the domain.
    conn.schema(&DeviceType::DISK).await.expect("schema");
    // libvirtd stops reading; an attach goes out; once its request waits unread, libvirtd is
    // killed and started again.
    let stop = Command::new("kill")
        .args(["-STOP", &lv.pid().to_string()])
        .status();
    assert!(stop.is_ok_and(|s| s.success()));
    let conn = std::sync::Arc::new(conn);
    let attach = {
        let (conn, vm, a) = (conn.clone(), vm.clone(), attrs(&[("source", &img)]));
        tokio::spawn(async move { conn.attach(&vm, &DeviceType::DISK, &a).await })
    };
    tokio::task::block_in_place(|| {
        common::wait_for("the attach's request waiting in libvirtd's socket", || {
            lv.has_unread_request()
        });
        lv.kill();
        lv.restart();
    });
    let result = tokio::time::timeout(HANG, attach)
        .await
        .expect("the attach did not hang")
        .expect("the attach task");
    until_answering(&conn, &vm).await;
    let theirs = sources(&lv);
    let ours = vdev_sources(&conn, &vm).await;
    eprintln!("the attach cut by the kill answered {result:?}");
    match &result {
        Ok(r) => assert!(
            theirs.contains(&img),
            "attach said {r} but virsh lists {theirs:?}"
        ),
        Err(e) => assert!(
            !theirs.contains(&img),
            "attach failed ({e}) but virsh lists the disk"
        ),
    }
    let mut sorted = (theirs.clone(), ours.clone());
    sorted.0.sort();
    sorted.1.sort();
    assert_eq!(
        sorted.0, sorted.1,
        "vdev and virsh disagree after the restart"
    );
    // The same connection works on.
    let again = lv.image("again.raw");
    let r = conn
        .attach(
            &vm,
            &DeviceType::DISK,
            &attrs(&[("source", again.to_str().expect("utf-8"))]),
        )
        .await
        .expect("attach after the restart");
    assert!(
        sources(&lv).contains(&again.to_str().expect("utf-8").to_owned()),
        "{r}"
    );
}
