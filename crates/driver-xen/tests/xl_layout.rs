//! The Xen driver against the real Xen lab, beyond the conformance kit: the XenStore layout and
//! permissions match what `xl block-attach` (libxl 4.17) writes; disks made by xl are listed and
//! detached by vdev and the other way round; bad input is refused before anything is written.

mod common;

use std::time::Duration;

use common::{attrs, disk_dump, dom0, domu, open, Paused, SERIAL};
use vdev_core::{Connection, DetachOptions, DeviceRef, DeviceState, DeviceType, Domain, Error};
use vdev_driver_xen as _;

const DISK: DeviceType = DeviceType::DISK;

fn opts() -> DetachOptions {
    DetachOptions {
        timeout: Duration::from_secs(30),
        force: false,
        ..Default::default()
    }
}

fn xl_attach(dev: &str, img: &str) {
    let (ok, out) = dom0(&format!(
        "truncate -s 16M {img} && xl block-attach {} 'format=raw, vdev={dev}, access=rw, target={img}'",
        domu()
    ));
    assert!(ok, "xl block-attach failed: {out}");
}

/// `path = "value" (perms)` lines of a dump, under `prefix`, keyed by the path relative to it.
fn nodes(dump: &str, prefix: &str) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = dump
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (key, rest) = rest.split_once(" = ")?;
            let (value, perms) = rest.rsplit_once("   ")?;
            Some((key.to_owned(), value.to_owned(), perms.to_owned()))
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_and_permissions_match_xl_block_attach() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let id = d.id.expect("a Xen domain has an id");
    let img = "/root/lab/vdev-layout.img";
    xl_attach("xvdc", img); // 51744
    let r = conn
        .attach(
            &d,
            &DISK,
            &attrs(&[
                ("uname", &format!("file:{img}")),
                ("dev", "xvdd"),
                ("mode", "rw"),
            ]),
        )
        .await
        .expect("vdev attach");
    assert_eq!(r.as_str(), "51760");
    let dump = disk_dump(id);
    let xl = |base: &str| nodes(&dump, &format!("{base}/51744"));
    let us = |base: &str| nodes(&dump, &format!("{base}/51760"));
    let norm = |v: &str| {
        v.replace("51744", "N")
            .replace("51760", "N")
            .replace("xvdc", "D")
            .replace("xvdd", "D")
    };
    let be = format!("/local/domain/0/backend/vbd/{id}");
    let fe = format!("/local/domain/{id}/device/vbd");
    let lx = format!("/libxl/{id}/device/vbd");
    // The /libxl record is libxl's own: identical key set, values and permissions.
    let a: Vec<_> = xl(&lx)
        .iter()
        .map(|(k, v, p)| (k.clone(), norm(v), p.clone()))
        .collect();
    let b: Vec<_> = us(&lx)
        .iter()
        .map(|(k, v, p)| (k.clone(), norm(v), p.clone()))
        .collect();
    assert_eq!(a, b, "the /libxl records differ");
    // Backend and frontend: every key libxl writes (the record's keys; the frontend's six) is
    // there with the same value and permissions; state and what blkback, blkfront and the hotplug
    // script add later are run-dependent.
    let libxl_keys: Vec<String> = a
        .iter()
        .map(|(k, _, _)| k.clone())
        .filter(|k| k != "/frontend" && k != "/backend")
        .collect();
    for (base, keys) in [
        (&be, libxl_keys.clone()),
        (
            &fe,
            [
                "",
                "/backend",
                "/backend-id",
                "/virtual-device",
                "/device-type",
                "/trusted",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ] {
        let (a, b) = (xl(base), us(base));
        for k in keys.iter().filter(|k| *k != "/state") {
            let find = |v: &Vec<(String, String, String)>| {
                v.iter()
                    .find(|(kk, _, _)| kk == k)
                    .map(|(_, v, p)| (norm(v), p.clone()))
            };
            assert_eq!(find(&a), find(&b), "{base}/N{k} differs (xl vs vdev)");
            assert!(find(&a).is_some(), "{base}/N{k} is missing in xl's dump");
        }
    }
    // Both are listed, xl's too, with the attributes vdev reads.
    let listed = conn.devices(&d, Some(&DISK)).await.unwrap();
    let x = listed
        .iter()
        .find(|x| x.reference.as_str() == "51744")
        .expect("xl's disk listed");
    assert_eq!(x.attributes.get("uname"), Some(&*format!("file:{img}")));
    assert_eq!(x.attributes.get("dev"), Some("xvdc"));
    assert_eq!(x.attributes.get("bkdom-name"), Some("Domain-0"));
    assert_eq!(x.attributes.get("backend-id"), Some("0"));
    assert_eq!(x.state, DeviceState::Connected);
    let v = listed
        .iter()
        .find(|x| x.reference.as_str() == "51760")
        .expect("vdev's disk listed");
    assert_eq!(v.attributes.get("virtual-device"), Some("51760"));
    assert_eq!(v.attributes.get("mode"), Some("w"));
    assert!(
        matches!(v.state, DeviceState::InitWait | DeviceState::Connected),
        "{:?}",
        v.state
    );
    // Interop, both ways: vdev detaches xl's disk, xl sees and detaches vdev's.
    let (ok, out) = dom0(&format!("xl block-list {}", domu()));
    assert!(
        ok && out.contains("51760"),
        "xl block-list does not show vdev's disk: {out}"
    );
    conn.detach(&d, &DISK, &DeviceRef::new("51744").unwrap(), &opts())
        .await
        .expect("vdev detaches xl's disk");
    let (ok, out) = dom0(&format!(
        "xl block-detach {} xvdd; xl block-list {}",
        domu(),
        domu()
    ));
    assert!(ok, "xl block-detach of vdev's disk failed: {out}");
    assert!(!out.contains("51760"), "{out}");
    let dump = disk_dump(id);
    assert!(
        !dump.contains("51744") && !dump.contains("51760"),
        "nodes left:\n{dump}"
    );
    // vdev from the host does not run the hotplug script: free xl's loop device here.
    dom0(&format!(
        "for l in $(losetup -j {img} -O NAME -n); do losetup -d $l; done; rm -f {img}"
    ));
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let good = [("uname", "file:/root/lab/vdev-bad.img"), ("dev", "xvdf")];
    type Case<'a> = (Domain, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            Domain::new(Some(4242), "ghost"),
            good.to_vec(),
            "domain-not-found",
        ),
        (
            d.clone(),
            vec![("uname", "floppy"), ("dev", "xvdf")],
            "invalid-attribute",
        ),
        (
            d.clone(),
            vec![("uname", "file:/a/../b"), ("dev", "xvdf")],
            "invalid-attribute",
        ),
        (
            d.clone(),
            vec![("uname", "file:/x"), ("dev", "xvd/f")],
            "invalid-attribute",
        ),
        (
            d.clone(),
            vec![("uname", "file:/x"), ("dev", "xvdf"), ("backend", "nobody")],
            "invalid-attribute",
        ),
        (
            d.clone(),
            vec![("uname", "file:/x"), ("dev", "xvdf"), ("backend", "0/../1")],
            "invalid-attribute",
        ),
        (
            d.clone(),
            vec![("uname", "file:/x"), ("dev", "xvdf"), ("backend", "77")],
            "invalid-attribute",
        ),
        (
            d.clone(),
            vec![("uname", "file:/x"), ("dev", "xvdf"), ("backend", &*d.name)],
            "invalid-attribute",
        ),
    ];
    let before = disk_dump(d.id.expect("a Xen domain has an id"));
    for (dom, a, code) in &cases {
        let r = conn.attach(dom, &DISK, &attrs(a)).await;
        match r {
            Err(e) => assert_eq!(e.code(), *code, "{a:?}: {e}"),
            Ok(r) => panic!("{a:?} was attached as {r}"),
        }
        assert_eq!(
            disk_dump(d.id.expect("a Xen domain has an id")),
            before,
            "{a:?} changed XenStore"
        );
    }
    // A taken device name.
    let r = conn.attach(&d, &DISK, &attrs(&good)).await.expect("attach");
    let with = disk_dump(d.id.expect("a Xen domain has an id"));
    for dup in [
        good.to_vec(),
        vec![("uname", "file:/other"), ("dev", "51792")],
    ] {
        let e = conn.attach(&d, &DISK, &attrs(&dup)).await.unwrap_err();
        assert!(matches!(e, Error::DeviceExists { .. }), "{e}");
        assert_eq!(disk_dump(d.id.expect("a Xen domain has an id")), with);
    }
    // Unknown refs.
    for r in ["51793", "0", "xvdf", "51792.0"] {
        let e = conn
            .detach(&d, &DISK, &DeviceRef::new(r).unwrap(), &opts())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DeviceNotFound { .. }), "{r}: {e}");
    }
    conn.detach(&d, &DISK, &r, &opts()).await.expect("detach");
    assert_eq!(disk_dump(d.id.expect("a Xen domain has an id")), before);
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_detach_removes_at_once_and_backend_by_name() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let before = disk_dump(d.id.expect("a Xen domain has an id"));
    let r = conn
        .attach(
            &d,
            &DISK,
            &attrs(&[
                ("uname", "phy:/dev/null"),
                ("dev", "xvdg"),
                ("access", "ro"),
                ("backend", "Domain-0"),
            ]),
        )
        .await
        .expect("attach");
    let dev = conn
        .devices(&d, None)
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.reference == r)
        .unwrap();
    assert_eq!(dev.attributes.get("uname"), Some("phy:/dev/null"));
    assert_eq!(dev.attributes.get("mode"), Some("r"));
    assert_eq!(dev.attributes.get("backend-id"), Some("0"));
    assert_eq!(dev.attributes.get("bkdom-name"), Some("Domain-0"));
    // The guest cannot let go while paused: a plain detach would be left pending. Forced, it is
    // removed regardless, as `xl block-detach -f` does.
    let paused = Paused::new();
    conn.detach(&d, &DISK, &r, &common::force())
        .await
        .expect("force detach");
    assert_eq!(disk_dump(d.id.expect("a Xen domain has an id")), before);
    drop(paused);
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_layout_matches_xl_and_interop() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let id = d.id.expect("a Xen domain has an id");
    let net = DeviceType::NETWORK;
    let (ok, out) = dom0(&format!(
        "xl network-attach {} bridge=xenbr0 mac=00:16:3e:00:00:31",
        domu()
    ));
    assert!(ok, "xl network-attach failed: {out}");
    let listed = conn.devices(&d, Some(&net)).await.unwrap();
    let xl_nic = listed
        .iter()
        .find(|x| x.attributes.get("mac") == Some("00:16:3e:00:00:31"))
        .expect("xl's vif is listed");
    let xh = xl_nic.reference.clone();
    assert_eq!(xl_nic.attributes.get("bridge"), Some("xenbr0"));
    assert_eq!(xl_nic.attributes.get("bkdom-name"), Some("Domain-0"));
    let r = conn
        .attach(&d, &net, &attrs(&[("bridge", "xenbr0")]))
        .await
        .expect("vdev network attach");
    assert_ne!(r, xh);
    let dump = [
        format!("/local/domain/{id}/device/vif"),
        "/local/domain/0/backend/vif".to_owned(),
        format!("/libxl/{id}/device/vif"),
    ]
    .iter()
    .map(|p| common::xs_ls(p))
    .collect::<String>();
    let listed = conn.devices(&d, Some(&net)).await.unwrap();
    let ours = listed
        .iter()
        .find(|x| x.reference == r)
        .expect("vdev's vif listed");
    let mac = ours.attributes.get("mac").unwrap().to_owned();
    assert!(mac.starts_with("00:16:3e:"), "{mac}");
    let (xs_, rs) = (xh.as_str(), r.as_str());
    let norm = |v: &str| {
        v.replace(&format!("vif/{id}/{xs_}"), "vif/D/H")
            .replace(&format!("vif/{id}/{rs}"), "vif/D/H")
            .replace(&format!("vif/{xs_}"), "vif/H")
            .replace(&format!("vif/{rs}"), "vif/H")
            .replace("00:16:3e:00:00:31", "MAC")
            .replace(&mac, "MAC")
    };
    let pick = |base: &str, h: &str| -> Vec<(String, String, String)> {
        nodes(&dump, &format!("{base}/{h}"))
            .into_iter()
            .map(|(k, v, p)| (k, norm(&v), p))
            .map(|(k, v, p)| {
                if k == "/handle" {
                    (k, "H".into(), p)
                } else {
                    (k, v, p)
                }
            })
            .collect()
    };
    let lx = format!("/libxl/{id}/device/vif");
    assert_eq!(pick(&lx, xs_), pick(&lx, rs), "the /libxl records differ");
    let be = format!("/local/domain/0/backend/vif/{id}");
    let fe = format!("/local/domain/{id}/device/vif");
    let rec: Vec<String> = pick(&lx, rs)
        .into_iter()
        .map(|(k, _, _)| k)
        .filter(|k| k != "/frontend" && k != "/backend" && k != "/hotplug-status")
        .collect();
    for (base, keys) in [
        (&be, rec),
        (
            &fe,
            [
                "",
                "/backend",
                "/backend-id",
                "/handle",
                "/mac",
                "/trusted",
                "/mtu",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ] {
        let (a, b) = (pick(base, xs_), pick(base, rs));
        for k in keys.iter().filter(|k| *k != "/state") {
            let find = |v: &Vec<(String, String, String)>| {
                v.iter()
                    .find(|(kk, _, _)| kk == k)
                    .map(|(_, v, p)| (v.clone(), p.clone()))
            };
            assert!(find(&a).is_some(), "{base}/H{k} is missing in xl's dump");
            assert_eq!(find(&a), find(&b), "{base}/H{k} differs (xl vs vdev)");
        }
    }
    let (ok, out) = dom0(&format!("xl network-list {}", domu()));
    assert!(
        ok && out.contains(&mac),
        "xl network-list does not show vdev's vif: {out}"
    );
    conn.detach(&d, &net, &xh, &opts())
        .await
        .expect("vdev detaches xl's vif");
    conn.detach(&d, &net, &r, &opts())
        .await
        .expect("vdev detaches its vif");
    assert!(conn.devices(&d, Some(&net)).await.unwrap().is_empty());
    assert_eq!(common::xs_ls("/local/domain/0/backend/vif"), "");
    conn.close().await.unwrap();
}

/// Attach a disk to the domU, pause the domU (so that it cannot release the disk) and detach
/// with a short timeout: removal pending. The guest stays paused until the guard is dropped.
async fn leave_pending(conn: &Connection, d: &Domain, dev: &str) -> (DeviceRef, Paused) {
    let r = conn
        .attach(
            d,
            &DISK,
            &attrs(&[("uname", "file:/root/lab/vdev-pending.img"), ("dev", dev)]),
        )
        .await
        .expect("attach");
    // A paused guest cannot release the disk.
    let paused = Paused::new();
    let soon = DetachOptions {
        timeout: Duration::from_secs(2),
        force: false,
        ..Default::default()
    };
    let e = conn.detach(d, &DISK, &r, &soon).await.unwrap_err();
    assert!(matches!(e, Error::RemovalPending { .. }), "{e}");
    let dev = conn
        .devices(d, Some(&DISK))
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.reference == r)
        .expect("still listed while pending");
    assert_eq!(dev.state, DeviceState::RemovalPending);
    (r, paused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_pending_finishes_by_itself_once_the_guest_lets_go() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let before = disk_dump(d.id.expect("a Xen domain has an id"));
    let mut events = conn.events().await.expect("events");
    let (r, paused) = leave_pending(&conn, &d, "xvdi").await;
    drop(paused);
    // The guest runs again: it closes its end, and the connection that left the removal pending
    // finishes it without being asked again. Bounded wait, not a timing claim.
    let removed = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(ev) = futures::StreamExt::next(&mut events).await {
            if let Ok(vdev_core::DeviceEvent::Removed { reference, .. }) = ev {
                if reference == r {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(
        removed,
        Ok(true),
        "no Removed event for the pending disk within 120 s"
    );
    assert!(
        !conn
            .devices(&d, Some(&DISK))
            .await
            .unwrap()
            .iter()
            .any(|x| x.reference == r),
        "still listed after Removed"
    );
    assert_eq!(
        disk_dump(d.id.expect("a Xen domain has an id")),
        before,
        "nodes left behind"
    );
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_pending_left_by_a_closed_connection_is_finished_by_a_later_detach() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let before = disk_dump(d.id.expect("a Xen domain has an id"));
    let (r, paused) = leave_pending(&conn, &d, "xvdj").await;
    // The connection that could have finished it is gone (as when `vdev detach` exits) before
    // the guest runs again.
    conn.close().await.unwrap();
    drop(paused);
    let (conn, d) = open().await.unwrap();
    conn.detach(&d, &DISK, &r, &opts())
        .await
        .expect("the second detach finishes it");
    assert_eq!(disk_dump(d.id.expect("a Xen domain has an id")), before);
    conn.close().await.unwrap();
}
