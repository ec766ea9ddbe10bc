//! The libvirt driver against a real libvirtd (started by each test, QEMU under TCG), with
//! `virsh` as the independent checker of every change, live and persistent.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_for, Libvirtd};
use vdev_core::{
    AttachOptions, Attributes, Connection, DetachOptions, Device, DeviceRef, DeviceState,
    DeviceType, Domain, Error, RunState, Scope, UpdateOptions,
};
use vdev_driver_libvirt as _;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .expect("valid attributes")
}

/// Start a libvirtd with the domains `(name, root ports, running)`, off the async threads.
async fn lab(domains: &[(&str, usize, bool)]) -> Option<Libvirtd> {
    let domains: Vec<(String, usize, bool)> = domains
        .iter()
        .map(|(n, p, r)| (n.to_string(), *p, *r))
        .collect();
    tokio::task::spawn_blocking(move || {
        let lv = Libvirtd::start()?;
        for (n, p, r) in &domains {
            lv.define(n, *p, *r);
        }
        Some(lv)
    })
    .await
    .expect("lab")
}

async fn devices(conn: &Connection, d: &Domain, t: &DeviceType) -> Vec<Device> {
    conn.devices(d, Some(t)).await.expect("list")
}

async fn find(conn: &Connection, d: &Domain, t: &DeviceType, r: &DeviceRef) -> Option<Device> {
    devices(conn, d, t)
        .await
        .into_iter()
        .find(|x| &x.reference == r)
}

/// `virsh domblklist` of the live (`inactive` false) or stored definition: (target, source).
fn blklist(lv: &Libvirtd, dom: &str, inactive: bool) -> Vec<(String, String)> {
    let mut args = vec!["domblklist", dom];
    if inactive {
        args.push("--inactive");
    }
    lv.virsh_ok(&args)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect()
}

fn has_source(list: &[(String, String)], path: &str) -> bool {
    list.iter().any(|(_, s)| s == path)
}

fn scope(s: Scope) -> AttachOptions {
    AttachOptions { scope: Some(s) }
}

fn detach_in(s: Scope) -> DetachOptions {
    DetachOptions {
        scope: Some(s),
        timeout: Duration::from_secs(10),
        ..DetachOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_checked_by_virsh_live_and_persistent() {
    let Some(lv) = lab(&[("vm", 8, true)]).await else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let vm = conn.domain("vm").await.expect("domain");
    assert_eq!(vm.state, RunState::Running);
    let disk = DeviceType::DISK;
    let mut made = Vec::new();
    for (s, name) in [
        (Scope::Live, "live"),
        (Scope::Persistent, "persistent"),
        (Scope::Both, "both"),
    ] {
        let img = lv.image(&format!("{name}.raw"));
        let img = img.to_str().expect("utf-8").to_owned();
        let a = attrs(&[("source", &img), ("format", "raw"), ("serial", name)]);
        let r = conn
            .attach_with(&vm, &disk, &a, &scope(s))
            .await
            .expect("attach");
        assert!(r.as_str().starts_with("ua-disk-"), "{r}");
        let (live, stored) = (blklist(&lv, "vm", false), blklist(&lv, "vm", true));
        assert_eq!(
            has_source(&live, &img),
            s != Scope::Persistent,
            "{s}: live {live:?}"
        );
        assert_eq!(
            has_source(&stored, &img),
            s != Scope::Live,
            "{s}: stored {stored:?}"
        );
        let listed = find(&conn, &vm, &disk, &r).await.expect("listed");
        assert_eq!(listed.attributes.get("scope"), Some(name));
        assert_eq!(listed.attributes.get("source"), Some(img.as_str()));
        assert_eq!(listed.attributes.get("serial"), Some(name));
        let want_state = if s == Scope::Persistent {
            DeviceState::Unknown("configured".into())
        } else {
            DeviceState::Connected
        };
        assert_eq!(listed.state, want_state, "{s}");
        made.push((s, r, img));
    }
    // A NIC in both, its link changed in both: virsh reads the link of each definition.
    let mac = "52:54:00:77:00:01";
    let net = DeviceType::NETWORK;
    let n = conn
        .attach_with(
            &vm,
            &net,
            &attrs(&[("netdev", "user"), ("mac", mac)]),
            &scope(Scope::Both),
        )
        .await
        .expect("attach NIC");
    conn.update_with(
        &vm,
        &net,
        &n,
        &attrs(&[("link", "down")]),
        &UpdateOptions {
            scope: Some(Scope::Both),
        },
    )
    .await
    .expect("update");
    assert!(lv.virsh_ok(&["domif-getlink", "vm", mac]).contains("down"));
    assert!(lv
        .virsh_ok(&["domif-getlink", "vm", mac, "--config"])
        .contains("down"));
    assert_eq!(
        find(&conn, &vm, &net, &n)
            .await
            .expect("NIC")
            .attributes
            .get("link"),
        Some("down")
    );
    conn.update_with(
        &vm,
        &net,
        &n,
        &attrs(&[("link", "up")]),
        &UpdateOptions {
            scope: Some(Scope::Live),
        },
    )
    .await
    .expect("update live");
    assert!(lv.virsh_ok(&["domif-getlink", "vm", mac]).contains("up"));
    assert!(lv
        .virsh_ok(&["domif-getlink", "vm", mac, "--config"])
        .contains("down"));
    // Detach each from the scope it was attached to; virsh sees it gone there.
    for (s, r, img) in &made {
        conn.detach(&vm, &disk, r, &detach_in(*s))
            .await
            .expect("detach");
        let (live, stored) = (blklist(&lv, "vm", false), blklist(&lv, "vm", true));
        assert!(
            !has_source(&live, img) && !has_source(&stored, img),
            "{s}: {live:?} {stored:?}"
        );
        assert!(find(&conn, &vm, &disk, r).await.is_none());
    }
    // The NIC's stored half goes at once; its live half (no guest to let go) stays, listed live.
    conn.detach(&vm, &net, &n, &detach_in(Scope::Persistent))
        .await
        .expect("detach config");
    assert!(!lv
        .virsh_ok(&["domiflist", "vm", "--inactive"])
        .contains(mac));
    assert!(lv.virsh_ok(&["domiflist", "vm"]).contains(mac));
    assert_eq!(
        find(&conn, &vm, &net, &n)
            .await
            .expect("live NIC")
            .attributes
            .get("scope"),
        Some("live")
    );
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_domain_is_listed_and_changed_in_its_stored_configuration() {
    let Some(lv) = lab(&[("off", 8, false)]).await else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let all = conn.domains().await.expect("domains");
    let off = all
        .iter()
        .find(|d| d.name == "off")
        .expect("the stopped domain is listed")
        .clone();
    assert_eq!((off.id, off.state), (None, RunState::ShutOff));
    assert!(off.uuid.is_some());
    let by_uuid = conn
        .domain(off.uuid.as_deref().expect("uuid"))
        .await
        .expect("by UUID");
    assert_eq!(by_uuid, off);
    let img = lv.image("off.raw");
    let img = img.to_str().expect("utf-8").to_owned();
    let a = attrs(&[("source", &img)]);
    let before = lv.dumpxml("off");
    let e = conn
        .attach_with(&off, &DeviceType::DISK, &a, &scope(Scope::Live))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("off"), "{e}");
    assert_eq!(
        lv.dumpxml("off"),
        before,
        "a refused live attach changed the domain"
    );
    let r = conn
        .attach(&off, &DeviceType::DISK, &a)
        .await
        .expect("attach to the stored configuration");
    assert!(has_source(&blklist(&lv, "off", true), &img));
    let d = find(&conn, &off, &DeviceType::DISK, &r)
        .await
        .expect("listed");
    assert_eq!(d.state, DeviceState::Unknown("configured".into()));
    assert_eq!(d.attributes.get("scope"), Some("persistent"));
    conn.detach(&off, &DeviceType::DISK, &r, &DetachOptions::default())
        .await
        .expect("detach");
    assert!(!has_source(&blklist(&lv, "off", true), &img));
    assert_eq!(lv.dumpxml("off"), before, "attach and detach left a trace");
}

/// Refused changes, by vdev or by libvirt: the error is the condition, with libvirt's own words
/// where libvirt refused, and both definitions stay byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_leaves_both_definitions_byte_identical() {
    let Some(lv) = lab(&[("vm", 8, true), ("full", 0, true)]).await else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let vm = conn.domain("vm").await.expect("domain");
    let disk = DeviceType::DISK;
    let img = lv.image("taken.raw");
    let img = img.to_str().expect("utf-8").to_owned();
    conn.attach_with(
        &vm,
        &disk,
        &attrs(&[("source", &img), ("target", "sdb")]),
        &scope(Scope::Both),
    )
    .await
    .expect("attach");
    conn.attach_with(
        &vm,
        &DeviceType::NETWORK,
        &attrs(&[("netdev", "user"), ("mac", "52:54:00:77:00:02")]),
        &scope(Scope::Both),
    )
    .await
    .expect("attach NIC");
    let other = lv.image("other.raw");
    let other = other.to_str().expect("utf-8").to_owned();
    let before = lv.dumpxml("vm");
    type Check = fn(&Error) -> bool;
    let cases: Vec<(&str, DeviceType, Attributes, Check)> = vec![
        (
            "no such file",
            disk.clone(),
            attrs(&[("source", "/nonexistent/x.raw")]),
            |e| matches!(e, Error::InvalidAttribute { name, reason } if name == "source" && reason.contains("/nonexistent/x.raw")),
        ),
        (
            "a taken target",
            disk.clone(),
            attrs(&[("source", &other), ("target", "sdb")]),
            |e| matches!(e, Error::DeviceExists { .. }),
        ),
        (
            "a taken MAC",
            DeviceType::NETWORK,
            attrs(&[("netdev", "user"), ("mac", "52:54:00:77:00:02")]),
            |e| matches!(e, Error::DeviceExists { .. }),
        ),
        (
            "a bus libvirt does not offer",
            disk.clone(),
            attrs(&[("source", &other), ("bus", "nosuch")]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "bus"),
        ),
        (
            "a bus that cannot be hotplugged",
            disk.clone(),
            attrs(&[("source", &other), ("bus", "sata")]),
            |e| matches!(e, Error::InvalidAttribute { .. } | Error::Backend { .. }),
        ),
        (
            "malformed XML passed through",
            disk.clone(),
            attrs(&[("source", &other), ("xml.driver.cache", "sometimes")]),
            |e| matches!(e, Error::InvalidAttribute { reason, .. } if reason.contains("sometimes")),
        ),
        (
            "a malformed MAC",
            DeviceType::NETWORK,
            attrs(&[("mac", "52:54:00:77:00")]),
            |e| matches!(e, Error::InvalidAttribute { name, .. } if name == "mac"),
        ),
    ];
    for (what, t, a, ok) in cases {
        for s in [Scope::Live, Scope::Both] {
            let e = conn.attach_with(&vm, &t, &a, &scope(s)).await.unwrap_err();
            assert!(ok(&e), "{what} ({s}): {e:?}");
            assert_eq!(lv.dumpxml("vm"), before, "{what} ({s}) changed the domain");
        }
    }
    // An update that libvirt refuses: a disk's medium.
    let r = devices(&conn, &vm, &disk)
        .await
        .into_iter()
        .next()
        .expect("the disk")
        .reference;
    let e = conn
        .update(&vm, &disk, &r, &attrs(&[("source", &other)]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidAttribute { .. }), "{e:?}");
    assert_eq!(
        lv.dumpxml("vm"),
        before,
        "a refused update changed the domain"
    );
    // No free PCI slot: virtio disks until the root ports are taken; libvirt's words kept as the
    // source of the error, and the refused attach changes nothing.
    let full = conn.domain("full").await.expect("domain");
    let mut refused = None;
    for i in 0..16 {
        let img = lv.image(&format!("full-{i}.raw"));
        let a = attrs(&[("source", img.to_str().expect("utf-8")), ("bus", "virtio")]);
        let before_full = lv.dumpxml("full");
        match conn.attach(&full, &disk, &a).await {
            Ok(_) => continue,
            Err(e) => {
                assert_eq!(
                    lv.dumpxml("full"),
                    before_full,
                    "a refused attach changed the domain"
                );
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the root ports run out within 16 disks");
    let source = std::error::Error::source(&e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(
        e.to_string().contains("no free PCI slot") && source.contains("PCI"),
        "{e}: {source}"
    );
    // The domain gone behind vdev's back.
    lv.virsh_ok(&["destroy", "full"]);
    lv.virsh_ok(&["undefine", "full"]);
    let e = conn.devices(&full, None).await.unwrap_err();
    assert!(matches!(e, Error::DomainNotFound { .. }), "{e:?}");
    let e = conn
        .attach(&full, &disk, &attrs(&[("source", &other)]))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::DomainNotFound { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_made_by_others_are_listed_and_detached() {
    let Some(lv) = lab(&[("vm", 8, true)]).await else {
        return;
    };
    let img = lv.image("virsh.raw");
    let xml = lv.dir.path().join("d.xml");
    std::fs::write(
        &xml,
        format!(
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sdk' bus='scsi'/></disk>",
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
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let vm = conn.domain("vm").await.expect("domain");
    let theirs = devices(&conn, &vm, &DeviceType::DISK)
        .await
        .into_iter()
        .find(|d| d.attributes.get("target") == Some("sdk"))
        .expect("the disk virsh attached is listed");
    assert!(
        theirs.reference.as_str().starts_with("scsi"),
        "{}",
        theirs.reference
    );
    assert_eq!(theirs.attributes.get("scope"), Some("live"));
    conn.detach(
        &vm,
        &DeviceType::DISK,
        &theirs.reference,
        &DetachOptions::default(),
    )
    .await
    .expect("detach");
    assert!(!has_source(
        &blklist(&lv, "vm", false),
        img.to_str().expect("utf-8")
    ));
}

/// When run as a child process (by the test below): list one domain's devices, one line each.
#[tokio::test]
async fn child_lists_devices() {
    let (Ok(uri), Ok(domain)) = (
        std::env::var("VDEV_TEST_CHILD_URI"),
        std::env::var("VDEV_TEST_CHILD_DOMAIN"),
    ) else {
        return; // not a child: nothing to do
    };
    let conn = vdev_core::connect(&uri).await.expect("child connect");
    let d = conn.domain(&domain).await.expect("child domain");
    for dev in conn.devices(&d, None).await.expect("child list") {
        println!("DEVICE {} {} {}", dev.device_type, dev.reference, dev.state);
    }
}

/// Another process's listing: (type, ref, state) of each device.
fn listed_by_another_process(lv: &Libvirtd, domain: &str) -> Vec<(String, String, String)> {
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_lists_devices",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VDEV_TEST_CHILD_URI", lv.vdev_uri())
        .env("VDEV_TEST_CHILD_DOMAIN", domain)
        .output()
        .expect("the child runs");
    assert!(
        out.status.success(),
        "the child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // libtest may print its own words before the line on the same line.
        .filter_map(|l| l.split_once("DEVICE ").map(|(_, rest)| rest))
        .filter_map(|l| {
            let mut w = l.split(' ');
            Some((
                w.next()?.to_owned(),
                w.next()?.to_owned(),
                w.next()?.to_owned(),
            ))
        })
        .collect()
}

/// When run as a child process (by the test below): detach one device with a deadline at a
/// given moment (milliseconds since the epoch), and print how it ended.
#[tokio::test]
async fn child_detaches() {
    let (Ok(uri), Ok(domain), Ok(r), Ok(until)) = (
        std::env::var("VDEV_TEST_CHILD_URI"),
        std::env::var("VDEV_TEST_CHILD_DOMAIN"),
        std::env::var("VDEV_TEST_CHILD_DETACH"),
        std::env::var("VDEV_TEST_CHILD_UNTIL_MS"),
    ) else {
        return; // not a child: nothing to do
    };
    let conn = vdev_core::connect(&uri).await.expect("child connect");
    let d = conn.domain(&domain).await.expect("child domain");
    let until = std::time::UNIX_EPOCH + Duration::from_millis(until.parse().expect("a number"));
    let timeout = until
        .duration_since(std::time::SystemTime::now())
        .expect("the child started after the deadline: give it more time");
    let opts = DetachOptions {
        timeout,
        ..DetachOptions::default()
    };
    match conn
        .detach(
            &d,
            &DeviceType::DISK,
            &DeviceRef::new(r.clone()).expect("a ref"),
            &opts,
        )
        .await
    {
        Err(Error::RemovalPending { .. }) => println!("DETACHED {r} pending"),
        other => println!("DETACHED {r} {other:?}"),
    }
}

/// Removals left pending by several processes at the same moment are each recorded: every
/// process sees every one pending (one record per device, so no process's write can replace
/// another's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_removals_from_processes_at_once_are_all_recorded() {
    let Some(lv) = lab(&[("vm", 8, true)]).await else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let vm = conn.domain("vm").await.expect("domain");
    let disk = DeviceType::DISK;
    let mut refs = Vec::new();
    for i in 0..4 {
        let img = lv.image(&format!("at-once-{i}.raw"));
        let r = conn
            .attach(
                &vm,
                &disk,
                &attrs(&[("source", img.to_str().expect("utf-8")), ("bus", "virtio")]),
            )
            .await
            .expect("attach");
        refs.push(r);
    }
    // A tombstone past its hour, of a device long gone, as an older detach left it: the next
    // change of any record drops it.
    lv.virsh_ok(&[
        "metadata",
        "vm",
        "--live",
        "--uri",
        "urn:vdev:libvirt:removal:1:disk:ua-disk-old",
        "--key",
        "vdev",
        "--set",
        "<removal type='disk' ref='ua-disk-old' state='gone' at='1'/>",
    ]);
    assert!(lv.virsh_ok(&["dumpxml", "vm"]).contains("ua-disk-old"));
    // Every detach times out at the same moment, so their records are written together.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        + Duration::from_secs(8);
    let children: Vec<_> = refs
        .iter()
        .map(|r| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args([
                    "--exact",
                    "child_detaches",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("VDEV_TEST_CHILD_URI", lv.vdev_uri())
                .env("VDEV_TEST_CHILD_DOMAIN", "vm")
                .env("VDEV_TEST_CHILD_DETACH", r.as_str())
                .env("VDEV_TEST_CHILD_UNTIL_MS", until.as_millis().to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("the child runs")
        })
        .collect();
    for (r, child) in refs.iter().zip(children) {
        let out = tokio::task::block_in_place(|| child.wait_with_output()).expect("child");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains(&format!("DETACHED {r} pending")),
            "the child detaching {r}: {said}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let theirs = listed_by_another_process(&lv, "vm");
    for r in &refs {
        assert_eq!(
            find(&conn, &vm, &disk, r).await.expect("listed").state,
            DeviceState::RemovalPending,
            "{r} is not listed pending here"
        );
        assert!(
            theirs.contains(&("disk".into(), r.to_string(), "removal-pending".into())),
            "{r} is not listed pending by another process: {theirs:?}"
        );
    }
    let live = lv.virsh_ok(&["dumpxml", "vm"]);
    assert!(
        !live.contains("ua-disk-old"),
        "the old tombstone stays: {live}"
    );
}

/// libvirt answers success for a virtio disk no guest releases (the device stays); vdev says
/// pending, another process lists it pending, and after the device goes a later detach says
/// it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_false_success_is_pending_across_processes() {
    let Some(lv) = lab(&[("vm", 8, true)]).await else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let vm = conn.domain("vm").await.expect("domain");
    let disk = DeviceType::DISK;
    let img = lv.image("virtio.raw");
    let img = img.to_str().expect("utf-8").to_owned();
    let r = conn
        .attach(&vm, &disk, &attrs(&[("source", &img), ("bus", "virtio")]))
        .await
        .expect("attach");
    let short = DetachOptions {
        timeout: Duration::from_secs(2),
        ..DetachOptions::default()
    };
    let e = conn.detach(&vm, &disk, &r, &short).await.unwrap_err();
    assert!(matches!(e, Error::RemovalPending { .. }), "{e:?}");
    assert!(
        has_source(&blklist(&lv, "vm", false), &img),
        "the disk is still there"
    );
    assert_eq!(
        find(&conn, &vm, &disk, &r).await.expect("listed").state,
        DeviceState::RemovalPending
    );
    let theirs = listed_by_another_process(&lv, "vm");
    assert!(
        theirs.contains(&("disk".into(), r.to_string(), "removal-pending".into())),
        "{theirs:?}"
    );
    let live = lv.virsh_ok(&["dumpxml", "vm"]);
    assert!(
        live.contains(&format!("urn:vdev:libvirt:removal:1:disk:{r}"))
            && live.contains("state=\"pending\""),
        "{live}"
    );
    // A second detach asks again and is pending again, not an error.
    let e = conn.detach(&vm, &disk, &r, &short).await.unwrap_err();
    assert!(matches!(e, Error::RemovalPending { .. }), "{e:?}");
    // A reset completes the unplug (no guest is there to refuse it).
    lv.virsh_ok(&["reset", "vm"]);
    wait_for("the disk gone after the reset", || {
        !has_source(&blklist(&lv, "vm", false), &img)
    });
    conn.detach(&vm, &disk, &r, &short)
        .await
        .expect("a later detach says gone");
    assert!(find(&conn, &vm, &disk, &r).await.is_none());
    assert!(!listed_by_another_process(&lv, "vm")
        .iter()
        .any(|(_, x, _)| x == r.as_str()));
    let live = lv.virsh_ok(&["dumpxml", "vm"]);
    assert!(!live.contains(r.as_str()), "the record stays: {live}");
    // And then the reference names nothing.
    let e = conn.detach(&vm, &disk, &r, &short).await.unwrap_err();
    assert!(matches!(e, Error::DeviceNotFound { .. }), "{e:?}");
}

/// A CD-ROM drive the domain started with: a medium change and an eject through vdev are what
/// `virsh domblklist` and `dumpxml` then show. (libvirt 9.0 asks QEMU to open the tray only of
/// a drive whose tray it learnt at the domain's start: a hot-plugged drive's change fails with
/// "Tray of device ... is not open", which the second half checks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdrom_medium_changes_and_ejects() {
    let Some(lv) = tokio::task::spawn_blocking(|| {
        let lv = Libvirtd::start()?;
        let one = lv.image("one.iso");
        let log = lv.dir.path().join("serial.log");
        // The firmware probes the drive while it boots (and closes its tray): wait until it
        // has given up booting, and keep it from starting again.
        lv.define_with(
            "cd",
            2,
            true,
            "<bios useserial='yes' rebootTimeout='-1'/>",
            &format!(
                "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
                 <source file='{}'/><target dev='sda' bus='scsi'/><readonly/></disk>\
                 <serial type='file'><source path='{}'/><target port='0'/></serial>",
                one.display(),
                log.display()
            ),
        );
        wait_for("the firmware gives up booting", || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("No bootable device")
        });
        Some(lv)
    })
    .await
    .expect("lab") else {
        return;
    };
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let vm = conn.domain("cd").await.expect("domain");
    let disk = DeviceType::DISK;
    let cd = devices(&conn, &vm, &disk)
        .await
        .into_iter()
        .find(|d| d.attributes.get("media") == Some("cdrom"))
        .expect("the CD-ROM drive");
    assert_eq!(cd.attributes.get("readonly"), Some("true"));
    let two = lv.image("two.iso");
    let two = two.to_str().expect("utf-8");
    conn.update(&vm, &disk, &cd.reference, &attrs(&[("source", two)]))
        .await
        .expect("a change of medium");
    assert_eq!(
        blklist(&lv, "cd", false),
        vec![("sda".to_owned(), two.to_owned())]
    );
    let listed = find(&conn, &vm, &disk, &cd.reference)
        .await
        .expect("listed");
    assert_eq!(listed.attributes.get("source"), Some(two));
    conn.update(&vm, &disk, &cd.reference, &attrs(&[("source", "")]))
        .await
        .expect("an eject");
    assert_eq!(
        blklist(&lv, "cd", false),
        vec![("sda".to_owned(), "-".to_owned())]
    );
    let live = lv.virsh_ok(&["dumpxml", "cd"]);
    let cdrom = live
        .split("<disk")
        .find(|d| d.contains("device='cdrom'"))
        .expect("the drive in dumpxml");
    assert!(
        !cdrom.contains("<source file="),
        "an ejected drive has no medium: {cdrom}"
    );
    let listed = find(&conn, &vm, &disk, &cd.reference)
        .await
        .expect("listed");
    assert_eq!(listed.attributes.get("source"), None);
    conn.update(&vm, &disk, &cd.reference, &attrs(&[("source", two)]))
        .await
        .expect("a medium into the empty drive");
    assert_eq!(
        blklist(&lv, "cd", false),
        vec![("sda".to_owned(), two.to_owned())]
    );

    // A drive hot-plugged now: libvirt does not open its tray, and the change is refused as
    // busy, changing nothing.
    let one = lv.image("three.iso");
    let one = one.to_str().expect("utf-8");
    let hot = conn
        .attach(&vm, &disk, &attrs(&[("media", "cdrom"), ("source", one)]))
        .await
        .expect("attach a CD-ROM drive");
    let before = lv.dumpxml("cd");
    let e = conn
        .update(&vm, &disk, &hot, &attrs(&[("source", two)]))
        .await
        .unwrap_err();
    match &e {
        Error::DeviceBusy { reason, .. } => {
            assert!(reason.contains("is not open"), "{reason}")
        }
        e => panic!("a hot-plugged drive's change answered {e:?}"),
    }
    assert_eq!(
        lv.dumpxml("cd"),
        before,
        "a refused change changed the domain"
    );
}
