//! Reliability findings of issue 13, against the real Xen lab:
//! - an attach whose commit goes unanswered (outcome unknown) never releases a loop device
//!   that committed nodes may name, and a failed rollback is reported with what it left
//!   (over `xen+ssh://` into Domain-0, where the driver makes the loop devices, with XenStore
//!   through a relay on this machine that withholds the commit's answer or the commit);
//! - in those tests the disk is `recorded=yes`: libxl's stored configuration (the file, read in
//!   Domain-0) has the disk exactly when XenStore does, and is as before once it is gone (the
//!   unknown outcome keeps `recorded=no`: there the entry is kept on purpose, see the driver's
//!   docs);
//! - a detach of a disk whose backend cannot be found is refused without `force`;
//! - values a guest wrote that an attribute cannot hold do not break the listing;
//! - a backend outside Domain-0 is listed from its own path (the listing guesses Domain-0's).
//!
//! What each test checks is read with independent clients: `xenstore-ls` on the lab's socket
//! and `losetup` in Domain-0.

mod common;

use std::time::Duration;

use common::relay::{Fault, FaultRelay};
use common::{
    attrs, disk_dump, dom0, domu, entry, force, lab, open, ssh_uri, stored_config, xs_ls,
    xs_rm_all, xs_write_all, ReverseForward, StoredBackup, SERIAL,
};
use vdev_core::{DetachOptions, DeviceType, Error};
use vdev_driver_xen as _;

const DISK: DeviceType = DeviceType::DISK;

fn opts() -> DetachOptions {
    DetachOptions {
        timeout: Duration::from_secs(30),
        force: false,
        ..Default::default()
    }
}

/// Removes a test disk's nodes (and the empty parents it may leave), the loop devices backed
/// by its image and the image, also when the test fails.
struct DiskGuard {
    domid: u32,
    devid: u32,
    img: Option<String>,
}

impl DiskGuard {
    fn paths(&self) -> [String; 3] {
        let (d, n) = (self.domid, self.devid);
        [
            format!("/local/domain/{d}/device/vbd/{n}"),
            format!("/local/domain/0/backend/vbd/{d}/{n}"),
            format!("/libxl/{d}/device/vbd/{n}"),
        ]
    }
}

impl Drop for DiskGuard {
    fn drop(&mut self) {
        xs_rm_all(&self.paths());
        let d = self.domid;
        // Parents left empty (as a detach leaves none).
        let _ = dom0(&format!(
            "for p in /local/domain/{d}/device/vbd /local/domain/0/backend/vbd/{d} /local/domain/0/backend/vbd /libxl/{d}/device/vbd; do \
               [ -z \"$(xenstore-list $p 2>/dev/null)\" ] && xenstore-exists $p 2>/dev/null && [ -z \"$(xenstore-read $p 2>/dev/null)\" ] && xenstore-rm $p; done; true"
        ));
        if let Some(img) = &self.img {
            let _ = dom0(&format!(
                "for l in $(losetup -j {img} | cut -d: -f1); do losetup -d $l; done; rm -f {img}"
            ));
        }
    }
}

/// The loop devices bound to `img` in Domain-0 and not released (`losetup -l`): a device
/// `losetup -d` released while blkback still has it open stays listed until blkback closes it,
/// marked autoclear; it is free from then on, so it does not count as bound.
fn loops_of(img: &str) -> Vec<String> {
    let (ok, out) = dom0("losetup -l -n -O NAME,AUTOCLEAR,BACK-FILE");
    assert!(ok, "losetup -l: {out}");
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [name, "0", file, ..] if *file == img => Some((*name).to_owned()),
                _ => None,
            }
        })
        .collect()
}

/// The backend's `node` of disk `devid` (read with xenstore-ls), and whether its nodes exist.
fn backend_node(domid: u32, devid: u32) -> (bool, Option<String>) {
    let be = format!("/local/domain/0/backend/vbd/{domid}/{devid}");
    let dump = xs_ls(&be);
    let node = dump.lines().find_map(|l| {
        let rest = l.strip_prefix(&format!("{be}/node = \""))?;
        Some(rest.split('"').next()?.to_owned())
    });
    let fe = !xs_ls(&format!("/local/domain/{domid}/device/vbd/{devid}")).is_empty();
    (fe || !dump.is_empty(), node)
}

/// The invariant a loop device must keep: bound to the image exactly when the disk's nodes
/// exist, and then the very device the nodes name. Returns the loop device if any.
fn assert_loop_matches_nodes(domid: u32, devid: u32, img: &str) -> Option<String> {
    let loops = loops_of(img);
    let (nodes, node) = backend_node(domid, devid);
    match (nodes, &node) {
        (false, _) => assert!(
            loops.is_empty(),
            "loop devices {loops:?} are bound to {img} but no disk {devid} exists"
        ),
        (true, Some(n)) => assert!(
            loops.contains(n),
            "disk {devid}'s nodes name {n}, which is not bound to {img} (bound: {loops:?})"
        ),
        (true, None) => panic!("disk {devid}'s nodes exist without a node key"),
    }
    node
}

/// A `xen+ssh://` connection into Domain-0 (so the driver makes loop devices there) whose
/// XenStore goes through a [`FaultRelay`] on this machine: Domain-0's socket `remote` is an
/// `ssh -R` back to the relay, which forwards to the lab's socket.
struct Via {
    relay: FaultRelay,
    _fwd: ReverseForward,
    uri: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn via_relay(tag: &str) -> Option<Via> {
    let lab = lab()?;
    ssh_uri("")?;
    let dir = std::env::temp_dir().join(format!("vdev-findings-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let local = dir.join("relay.sock");
    let relay = FaultRelay::start(&local, &lab);
    let remote = format!("/tmp/vdev-relay-{}-{tag}.sock", std::process::id());
    let fwd = tokio::task::block_in_place(|| ReverseForward::start(&remote, &local));
    // A short request bound: the withheld answer is given up on after 10 s (the ssh login, bounded by it too, takes ~5 s in the lab).
    let uri = ssh_uri(&format!("socket={remote}&timeout=10s"))?;
    Some(Via {
        relay,
        _fwd: fwd,
        uri,
        _dir: TempDir(dir),
    })
}

fn disk_attrs(img: &str, dev: &str) -> vdev_core::Attributes {
    disk_recorded(img, dev, "no")
}

/// A disk in libxl's stored configuration too (`recorded=yes`).
fn recorded_disk(img: &str, dev: &str) -> vdev_core::Attributes {
    disk_recorded(img, dev, "yes")
}

fn disk_recorded(img: &str, dev: &str, recorded: &str) -> vdev_core::Attributes {
    attrs(&[
        ("uname", &format!("file:{img}")),
        ("dev", dev),
        ("recorded", recorded),
    ])
}

/// XenStore and libxl's stored configuration (the file itself, read in Domain-0) agree about
/// disk `dev`: both have it or neither does. Its entry, if any.
fn assert_recorded_matches_nodes(domid: u32, dev: &str) -> Option<serde_json::Value> {
    let nodes = backend_node(domid, num(dev)).0;
    let stored = stored_config(&domu());
    let recorded = entry(&stored["disks"], "vdev", &dev.into()).cloned();
    assert_eq!(
        nodes,
        recorded.is_some(),
        "XenStore and libxl's stored configuration disagree about {dev}: nodes {nodes}, entry {recorded:?}"
    );
    recorded
}

/// The Xen number of disk `dev`.
fn num(dev: &str) -> u32 {
    xen_devid::devid_from_name(dev).expect("a disk name")
}

fn make_image(img: &str) {
    let (ok, out) = dom0(&format!("truncate -s 16M {img}"));
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_commit_that_landed_is_an_attached_disk_with_its_loop() {
    let _turn = SERIAL.lock().await;
    let Some(v) = via_relay("landed").await else {
        return;
    };
    let img = "/root/lab/vdev-unknown-landed.img";
    let conn = vdev_core::connect(&v.uri).await.expect("connect");
    let d = conn.domain(&domu()).await.unwrap();
    let _g = DiskGuard {
        domid: d.id.expect("a Xen domain has an id"),
        devid: num("xvdt"),
        img: Some(img.into()),
    };
    make_image(img);
    let (_backup, before) = StoredBackup::new(&domu());
    v.relay.arm(Fault::DropCommitReply);
    let r = conn.attach(&d, &DISK, &recorded_disk(img, "xvdt")).await;
    assert!(
        v.relay.fired(),
        "the attach committed nothing through the relay"
    );
    let node = assert_loop_matches_nodes(d.id.expect("a Xen domain has an id"), num("xvdt"), img);
    let recorded = assert_recorded_matches_nodes(d.id.expect("a Xen domain has an id"), "xvdt");
    let r = r.expect("the commit landed: the disk is attached");
    assert_eq!(r.as_str(), num("xvdt").to_string());
    assert!(node.is_some(), "the attached disk has no loop device");
    assert_eq!(recorded.map(|e| e["pdev_path"].clone()), Some(img.into()));
    conn.detach(&d, &DISK, &r, &force()).await.expect("detach");
    assert_loop_matches_nodes(d.id.expect("a Xen domain has an id"), num("xvdt"), img);
    assert!(loops_of(img).is_empty());
    assert_eq!(stored_config(&domu()), before);
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_commit_that_did_not_land_releases_the_loop() {
    let _turn = SERIAL.lock().await;
    let Some(v) = via_relay("held").await else {
        return;
    };
    let img = "/root/lab/vdev-unknown-held.img";
    let conn = vdev_core::connect(&v.uri).await.expect("connect");
    let d = conn.domain(&domu()).await.unwrap();
    let _g = DiskGuard {
        domid: d.id.expect("a Xen domain has an id"),
        devid: num("xvdu"),
        img: Some(img.into()),
    };
    make_image(img);
    let (_backup, before) = StoredBackup::new(&domu());
    v.relay.arm(Fault::HoldCommit);
    let e = conn
        .attach(&d, &DISK, &recorded_disk(img, "xvdu"))
        .await
        .expect_err("the commit never reached xenstored");
    assert!(
        v.relay.fired(),
        "the attach committed nothing through the relay"
    );
    eprintln!("{e}");
    assert_loop_matches_nodes(d.id.expect("a Xen domain has an id"), num("xvdu"), img);
    assert!(loops_of(img).is_empty());
    assert_recorded_matches_nodes(d.id.expect("a Xen domain has an id"), "xvdu");
    assert_eq!(stored_config(&domu()), before, "the file was not put back");
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_commit_outcome_leaves_the_loop_bound_and_names_it() {
    let _turn = SERIAL.lock().await;
    let Some(v) = via_relay("unknown").await else {
        return;
    };
    let img = "/root/lab/vdev-unknown-lost.img";
    let conn = vdev_core::connect(&v.uri).await.expect("connect");
    let d = conn.domain(&domu()).await.unwrap();
    let _g = DiskGuard {
        domid: d.id.expect("a Xen domain has an id"),
        devid: num("xvdv"),
        img: Some(img.into()),
    };
    make_image(img);
    // The commit is swallowed and, from then on, xenstored cannot be reached again: nothing
    // can be learnt about the outcome.
    v.relay.arm(Fault::HoldCommit);
    let a = disk_attrs(img, "xvdv");
    let attach = conn.attach(&d, &DISK, &a);
    let refuse = async {
        while !v.relay.fired() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        v.relay.refuse(true);
    };
    let (e, ()) = tokio::time::timeout(Duration::from_secs(300), async {
        tokio::join!(attach, refuse)
    })
    .await
    .expect("the attach hung");
    let e = e.expect_err("xenstored could not be reached");
    let msg = e.to_string();
    eprintln!("{msg}");
    let loops = loops_of(img);
    assert_eq!(loops.len(), 1, "one loop device stays bound: {loops:?}");
    assert!(
        msg.contains("unknown"),
        "the error does not say the outcome is unknown: {msg}"
    );
    assert!(
        msg.contains(&loops[0]),
        "the error does not name {}: {msg}",
        loops[0]
    );
    v.relay.refuse(false);
    // The commit never reached xenstored: no nodes, and the loop is the guard's to release.
    assert!(!backend_node(d.id.expect("a Xen domain has an id"), num("xvdv")).0);
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollback_says_what_it_left_and_keeps_their_loop() {
    let _turn = SERIAL.lock().await;
    let Some(v) = via_relay("rollback").await else {
        return;
    };
    let img = "/root/lab/vdev-rollback.img";
    let conn = vdev_core::connect(&v.uri).await.expect("connect");
    let d = conn.domain(&domu()).await.unwrap();
    let _g = DiskGuard {
        domid: d.id.expect("a Xen domain has an id"),
        devid: num("xvdw"),
        img: Some(img.into()),
    };
    make_image(img);
    let (_backup, before) = StoredBackup::new(&domu());
    // The commit is answered; then xenstored cannot be reached, so neither the wait for the
    // backend nor the rollback can be done.
    v.relay.arm(Fault::CutAfterCommitReply);
    let e = tokio::time::timeout(
        Duration::from_secs(300),
        conn.attach(&d, &DISK, &recorded_disk(img, "xvdw")),
    )
    .await
    .expect("the attach hung")
    .expect_err("xenstored went away after the commit");
    assert!(
        v.relay.fired(),
        "the attach committed nothing through the relay"
    );
    let msg = e.to_string();
    eprintln!("{msg}");
    v.relay.refuse(false);
    assert!(msg.contains("rollback failed"), "{msg}");
    assert!(
        msg.contains(&format!(
            "/local/domain/0/backend/vbd/{}/{}",
            d.id.expect("a Xen domain has an id"),
            num("xvdw")
        )),
        "{msg}"
    );
    let node = assert_loop_matches_nodes(d.id.expect("a Xen domain has an id"), num("xvdw"), img)
        .expect("the nodes are left");
    assert!(msg.contains(&node), "the error does not name {node}: {msg}");
    // The file keeps the entry of what was left (its removal failed with the nodes').
    assert!(assert_recorded_matches_nodes(d.id.expect("a Xen domain has an id"), "xvdw").is_some());
    // What was left is removed as the error says: a forced detach.
    let r = vdev_core::DeviceRef::new(num("xvdw").to_string()).unwrap();
    conn.detach(&d, &DISK, &r, &force()).await.expect("detach");
    assert_loop_matches_nodes(d.id.expect("a Xen domain has an id"), num("xvdw"), img);
    assert!(loops_of(img).is_empty());
    assert_eq!(stored_config(&domu()), before);
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detach_without_a_usable_backend_is_refused_unless_forced() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let id = d.id.expect("a Xen domain has an id");
    let g = DiskGuard {
        domid: id,
        devid: num("xvdq"),
        img: None,
    };
    let r = conn
        .attach(
            &d,
            &DISK,
            &attrs(&[("uname", "file:/root/lab/vdev-bogus.img"), ("dev", "xvdq")]),
        )
        .await
        .expect("attach");
    assert_eq!(r.as_str(), num("xvdq").to_string());
    let [fe, _be, lx] = g.paths();
    // No libxl record, and the guest points its backend key elsewhere (it owns the frontend).
    xs_rm_all(std::slice::from_ref(&lx));
    xs_write_all(&[(
        format!("{fe}/backend"),
        format!("/local/domain/0/backend/vbd/{id}/1").into_bytes(),
    )]);
    let before = disk_dump(id);
    let e = conn
        .detach(&d, &DISK, &r, &opts())
        .await
        .expect_err("detached a disk whose backend cannot be found");
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(matches!(e, Error::DeviceBusy { .. }), "{e:?}");
    assert!(msg.contains("backend cannot be found"), "{msg}");
    assert!(msg.contains("guest"), "{msg}");
    assert!(msg.contains("force=true"), "{msg}");
    assert_eq!(disk_dump(id), before, "a refused detach changed XenStore");
    // With force, the frontend goes (the backend is the guard's to remove).
    conn.detach(&d, &DISK, &r, &force())
        .await
        .expect("forced detach");
    assert!(xs_ls(&fe).is_empty(), "the frontend is still there");
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_values_an_attribute_cannot_hold_do_not_break_the_listing() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let id = d.id.expect("a Xen domain has an id");
    let _g1 = DiskGuard {
        domid: id,
        devid: num("xvdr"),
        img: None,
    };
    let _g2 = DiskGuard {
        domid: id,
        devid: num("xvds"),
        img: None,
    };
    let mut refs = Vec::new();
    for dev in ["xvdr", "xvds"] {
        refs.push(
            conn.attach(
                &d,
                &DISK,
                &attrs(&[
                    ("uname", &format!("file:/root/lab/vdev-{dev}.img")),
                    ("dev", dev),
                ]),
            )
            .await
            .expect("attach"),
        );
    }
    // What a guest may write into its own frontend: 3000 bytes, and a NUL.
    let fe = format!("/local/domain/{id}/device/vbd/{}", num("xvdr"));
    xs_write_all(&[
        (format!("{fe}/protocol"), vec![b'x'; 3000]),
        (format!("{fe}/ring-ref"), b"8\0junk".to_vec()),
    ]);
    let devs = conn
        .devices(&d, Some(&DISK))
        .await
        .expect("the listing failed");
    for r in &refs {
        assert!(
            devs.iter().any(|x| &x.reference == r),
            "disk {r} is not listed"
        );
    }
    let bad = devs
        .iter()
        .find(|x| x.reference.as_str() == num("xvdr").to_string())
        .unwrap();
    let a = &bad.attributes;
    assert_eq!(a.get("protocol"), None);
    assert_eq!(a.get("ring-ref"), None);
    let omitted = a.get("omitted").expect("no 'omitted' attribute");
    assert!(
        omitted.contains("protocol") && omitted.contains("3000 bytes"),
        "{omitted}"
    );
    assert!(
        omitted.contains("ring-ref") && omitted.contains("NUL"),
        "{omitted}"
    );
    assert_eq!(a.get("uname"), Some("file:/root/lab/vdev-xvdr.img"));
    assert_eq!(a.get("dev"), Some("xvdr"));
    assert_eq!(a.get("backend-id"), Some("0"));
    assert_eq!(a.get("virtual-device"), Some(&*num("xvdr").to_string()));
    let good = devs
        .iter()
        .find(|x| x.reference.as_str() == num("xvds").to_string())
        .unwrap();
    assert_eq!(good.attributes.get("omitted"), None);
    for r in &refs {
        conn.detach(&d, &DISK, r, &force()).await.expect("detach");
    }
    conn.close().await.unwrap();
}

/// The listing reads backend keys at Domain-0's backend path beside the frontend's and checks
/// that guess afterwards: a backend elsewhere (a driver domain; here the domU itself, by raw
/// writes) is read from its own path in one more round trip, also when a stale directory sits
/// at the guessed path, and a disk at the guessed path beside them is listed as before.
#[tokio::test]
async fn backends_outside_domain0_are_listed_from_their_own_path() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let id = d.id.expect("a Xen domain has an id");
    // Removed whole afterwards: it must not be there before.
    let (there, _) = dom0(&format!("xenstore-exists /local/domain/{id}/backend"));
    assert!(!there, "the domU has a backend directory already");
    let guards: Vec<DiskGuard> = ["xvdt", "xvdu", "xvdv"]
        .iter()
        .map(|dev| DiskGuard {
            domid: id,
            devid: num(dev),
            img: None,
        })
        .collect();
    let elsewhere = |dev: &str| format!("/local/domain/{id}/backend/vbd/{id}/{}", num(dev));
    let in_dom0 = |dev: &str| format!("/local/domain/0/backend/vbd/{id}/{}", num(dev));
    let mut w: Vec<(String, Vec<u8>)> = Vec::new();
    for (dev, be, params) in [
        ("xvdt", elsewhere("xvdt"), "/dev/vg/t"),
        ("xvdu", in_dom0("xvdu"), "/root/lab/u.img"),
        ("xvdv", elsewhere("xvdv"), "/dev/vg/v"),
    ] {
        let fe = format!("/local/domain/{id}/device/vbd/{}", num(dev));
        for (k, v) in [
            (format!("{fe}/backend"), be.clone()),
            (format!("{fe}/state"), "1".into()),
            (format!("{be}/params"), params.into()),
            (format!("{be}/dev"), dev.into()),
            (format!("{be}/state"), "2".into()),
        ] {
            w.push((k, v.into_bytes()));
        }
    }
    // A stale directory at the guessed path of xvdv: not its backend.
    w.push((format!("{}/params", in_dom0("xvdv")), b"/stale".to_vec()));
    xs_write_all(&w);
    let listed = conn.devices(&d, Some(&DISK)).await;
    xs_rm_all(&[format!("/local/domain/{id}/backend")]);
    drop(guards);
    let devs = listed.expect("the listing failed");
    let get = |dev: &str| {
        devs.iter()
            .find(|x| x.reference.as_str() == num(dev).to_string())
            .unwrap_or_else(|| panic!("{dev} is not listed"))
    };
    for (dev, bk, bkname, uname) in [
        ("xvdt", id, d.name.as_str(), "phy:/dev/vg/t"),
        ("xvdu", 0, "Domain-0", "file:/root/lab/u.img"),
        ("xvdv", id, d.name.as_str(), "phy:/dev/vg/v"),
    ] {
        let a = &get(dev).attributes;
        assert_eq!(a.get("backend-id"), Some(&*bk.to_string()), "{dev}");
        assert_eq!(a.get("bkdom-name"), Some(bkname), "{dev}");
        assert_eq!(a.get("uname"), Some(uname), "{dev}");
        assert_eq!(a.get("dev"), Some(dev), "{dev}");
        assert_eq!(a.get("backend-state"), Some("2"), "{dev}");
        assert_eq!(get(dev).state, vdev_core::DeviceState::InitWait, "{dev}");
    }
    conn.close().await.unwrap();
}
