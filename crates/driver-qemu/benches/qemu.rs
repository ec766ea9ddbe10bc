//! The QEMU driver beside a minimal raw QMP client, against one real QEMU (no guest OS), in one
//! run: attach of a SCSI disk, detach, listing 500 disks, and attach with 500 disks present.
//! Each figure is a median over many runs; the raw client sends the same QMP commands over a
//! second QMP socket of the same QEMU (QEMU serves one client per socket). Then, with a real
//! Linux guest under TCG (tests/qemu-guest), detach of a virtio-blk disk to gone through ACPI
//! and native PCIe hotplug, beside the raw client's `device_del` to `DEVICE_DELETED`. Last, a
//! CD-ROM medium change (`update`), beside the same QMP sequence sent raw and beside libvirt's
//! `virDomainUpdateDeviceFlags` for the same change (libvirtd started by
//! `../shared/tools/libvirt-lab.sh`, timed in-process by `benches/libvirt_media.py`).
//!
//! `cargo bench -p vdev-driver-qemu` (needs qemu-system-x86_64: scripts/install-test-deps.sh).

#[path = "../tests/common/mod.rs"]
mod common;
mod util;

use std::time::{Duration, Instant};

use common::{Raw, Vm, VmSpec};
use serde_json::json;
use util::{disk, median, ms};
use vdev_core::{Attributes, Connection, DetachOptions, DeviceType, Domain};
use vdev_driver_qemu as _;

const RUNS: usize = 40;

/// The raw client's attach: the same two commands the driver sends.
fn raw_attach(raw: &mut Raw, img: &str, n: usize) -> String {
    let node = format!("rawn{n}");
    raw.ok(
        "blockdev-add",
        json!({"driver": "raw", "node-name": node, "read-only": false,
               "file": {"driver": "file", "filename": img, "node-name": format!("{node}-file"), "read-only": false}}),
    );
    let id = format!("rawd{n}");
    raw.ok(
        "device_add",
        json!({"driver": "scsi-hd", "id": id, "drive": node, "bus": "scsi0.0"}),
    );
    id
}

/// The raw client's detach: device_del, wait for DEVICE_DELETED, blockdev-del. Returns (time to
/// the event, whole detach).
fn raw_detach(raw: &mut Raw, id: &str, node: &str) -> (Duration, Duration) {
    let t = Instant::now();
    raw.ok("device_del", json!({"id": id}));
    let seen = |e: &serde_json::Value| e["event"] == "DEVICE_DELETED" && e["data"]["device"] == id;
    loop {
        if raw.events.iter().any(seen) {
            break;
        }
        let m = raw.next_message();
        raw.events.push(m);
    }
    raw.events.clear();
    let event = t.elapsed();
    raw.ok("blockdev-del", json!({"node-name": node}));
    (event, t.elapsed())
}

async fn cycle(conn: &Connection, d: &Domain, img: &str) -> (Duration, Duration) {
    let t = Instant::now();
    let r = conn
        .attach(d, &DeviceType::DISK, &disk(img))
        .await
        .expect("attach");
    let attach = t.elapsed();
    let t = Instant::now();
    conn.detach(d, &DeviceType::DISK, &r, &DetachOptions::default())
        .await
        .expect("detach");
    (attach, t.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a list of benchmarks: there are none to list.
    }
    assert!(
        common::qemu_available(),
        "the benchmark needs qemu-system-x86_64"
    );
    let vm = Vm::start(VmSpec {
        scsi: 2,
        root_ports: 1,
        xhci: 0,
        ..VmSpec::default()
    });
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let d = conn.domain("vm").await.unwrap();
    let mut raw = vm.raw();
    let a = vm.image("a.raw", "raw");
    let a = a.to_str().unwrap();
    let b = vm.image("b.raw", "raw");
    let b = b.to_str().unwrap();

    // Warm up both paths (introspection caches, controller discovery, page cache).
    for i in 0..3 {
        cycle(&conn, &d, a).await;
        let id = raw_attach(&mut raw, b, 10_000 + i);
        raw_detach(&mut raw, &id, &format!("rawn{}", 10_000 + i));
    }

    let (mut va, mut vd, mut ra, mut rev, mut rd) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..RUNS {
        let (at, dt) = cycle(&conn, &d, a).await;
        va.push(at);
        vd.push(dt);
        let t = Instant::now();
        let id = raw_attach(&mut raw, b, i);
        ra.push(t.elapsed());
        let (ev, all) = raw_detach(&mut raw, &id, &format!("rawn{i}"));
        rev.push(ev);
        rd.push(all);
    }
    let (va, vd, ra, rev, rd) = (median(va), median(vd), median(ra), median(rev), median(rd));

    // 500 disks present (added by the raw client: the driver lists what is there).
    for i in 0..500 {
        let img = vm.image(&format!("f{i}.raw"), "raw");
        let node = format!("filln{i}");
        raw.ok(
            "blockdev-add",
            json!({"driver": "raw", "node-name": node, "file": {"driver": "file", "filename": img}}),
        );
        let bus = if i < 250 { "scsi0.0" } else { "scsi1.0" };
        raw.ok(
            "device_add",
            json!({"driver": "scsi-hd", "id": format!("fill{i}"), "drive": node, "bus": bus}),
        );
    }
    let listed = conn.devices(&d, Some(&DeviceType::DISK)).await.unwrap();
    assert_eq!(listed.len(), 500);
    let (mut vl, mut rl, mut rq) = (vec![], vec![], vec![]);
    for _ in 0..RUNS {
        let t = Instant::now();
        raw.ok("qom-list", json!({"path": "/machine/peripheral"}));
        rq.push(t.elapsed());
        let t = Instant::now();
        let l = conn.devices(&d, Some(&DeviceType::DISK)).await.unwrap();
        vl.push(t.elapsed());
        assert_eq!(l.len(), 500);
        let t = Instant::now();
        raw.ok("qom-list", json!({"path": "/machine/peripheral"}));
        raw.ok("query-block", json!({}));
        rl.push(t.elapsed());
    }
    let (vl, rl, rq) = (median(vl), median(rl), median(rq));
    drop(conn);
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let mut va500 = vec![];
    let mut ra500 = vec![];
    for i in 0..RUNS {
        let (at, _) = cycle(&conn, &d, a).await;
        va500.push(at);
        let t = Instant::now();
        let id = raw_attach(&mut raw, b, 20_000 + i);
        ra500.push(t.elapsed());
        raw_detach(&mut raw, &id, &format!("rawn{}", 20_000 + i));
    }
    let (va500, ra500) = (median(va500), median(ra500));

    println!("QEMU driver vs raw QMP client, medians of {RUNS} runs (ms)");
    println!("{:<40} {:>9} {:>9} {:>7}  goal", "", "vdev", "raw", "ratio");
    let row = |what: &str, v: Duration, r: Duration, goal: &str| {
        println!(
            "{what:<40} {:>9.3} {:>9.3} {:>7.3}  {goal}",
            ms(v),
            ms(r),
            ms(v) / ms(r)
        );
    };
    row("attach scsi disk (0 present)", va, ra, "<= 1.10");
    row("detach vs QEMU's DEVICE_DELETED time", vd, rev, "<= 1.05");
    row("detach vs raw detach (+blockdev-del)", vd, rd, "");
    row("attach scsi disk (500 present)", va500, ra500, "");
    row(
        "attach: 500 present vs 0 present",
        va500,
        va,
        "<= 1.2 (libvirt 2.05)",
    );
    row("list 500 disks (raw: qom-list+query-block)", vl, rl, "");
    row(
        "list 500 disks (raw: qom-list alone)",
        vl,
        rq,
        "<= 1.2 (round 1 listing sent qom-list alone)",
    );
    println!(
        "{:<40} {:>9.3} {:>9.3} {:>7.3}  >= 2 (libvirt 13.5 ms)",
        "list 500 disks: libvirt / vdev",
        13.5,
        ms(vl),
        13.5 / ms(vl)
    );

    media_change().await;
    // VDEV_BENCH_GUEST=0 leaves out the guest rows (two guest boots, ~1 min of native unplugs).
    if std::env::var("VDEV_BENCH_GUEST").as_deref() != Ok("0") {
        for native in [false, true] {
            guest_detach(native).await;
        }
    }
}

/// The raw client's medium change: the commands the driver sends, one at a time.
fn raw_media_change(raw: &mut Raw, id: &str, img: &str, new: &str, old: &str) {
    raw.ok(
        "blockdev-add",
        json!({"driver": "raw", "node-name": new, "read-only": true,
               "file": {"driver": "file", "filename": img, "node-name": format!("{new}-file"), "read-only": true}}),
    );
    raw.ok("blockdev-open-tray", json!({"id": id, "force": false}));
    raw.ok("blockdev-remove-medium", json!({ "id": id }));
    raw.ok(
        "blockdev-insert-medium",
        json!({"id": id, "node-name": new}),
    );
    raw.ok("blockdev-close-tray", json!({ "id": id }));
    raw.ok("blockdev-del", json!({ "node-name": old }));
}

/// CD-ROM medium change: vdev's update beside the raw sequence and beside libvirt.
async fn media_change() {
    let vm = Vm::start(VmSpec::default());
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let d = conn.domain("vm").await.unwrap();
    let mut raw = vm.raw();
    let a = vm.image("a.iso", "raw");
    let b = vm.image("b.iso", "raw");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let cd_attrs =
        Attributes::from_pairs([("media", "cdrom".to_owned()), ("source", a.to_owned())])
            .expect("valid");
    let cd = conn.attach(&d, &DeviceType::DISK, &cd_attrs).await.unwrap();
    raw.ok(
        "blockdev-add",
        json!({"driver": "raw", "node-name": "rawcd0", "read-only": true,
               "file": {"driver": "file", "filename": a, "node-name": "rawcd0-file", "read-only": true}}),
    );
    raw.ok(
        "device_add",
        json!({"driver": "scsi-cd", "id": "rawcd", "drive": "rawcd0", "bus": "scsi0.0"}),
    );
    let (mut v, mut r) = (vec![], vec![]);
    for i in 0..RUNS + 3 {
        let src = if i % 2 == 0 { b } else { a };
        let upd = Attributes::from_pairs([("source", src.to_owned())]).unwrap();
        let t = Instant::now();
        conn.update(&d, &DeviceType::DISK, &cd, &upd).await.unwrap();
        let vt = t.elapsed();
        let t = Instant::now();
        raw_media_change(
            &mut raw,
            "rawcd",
            src,
            &format!("rawcd{}", i + 1),
            &format!("rawcd{i}"),
        );
        let rt = t.elapsed();
        raw.events.clear();
        if i >= 3 {
            v.push(vt);
            r.push(rt);
        }
    }
    let (v, r) = (median(v), median(r));
    let libvirt = libvirt_media_ms();
    println!(
        "{:<40} {:>9.3} {:>9.3} {:>7.3}  <= 1.15",
        "CD-ROM medium change (raw: same QMP)",
        ms(v),
        ms(r),
        ms(v) / ms(r)
    );
    match libvirt {
        Ok(l) => println!(
            "{:<40} {:>9.3} {:>9.3} {:>7.3}  >= 2 (libvirt UpdateDeviceFlags, in-process)",
            "CD-ROM medium change: libvirt / vdev",
            l,
            ms(v),
            l / ms(v)
        ),
        Err(why) => println!("CD-ROM medium change: libvirt: not measured ({why})"),
    }
}

/// libvirt's median for the same medium change, or why it could not be measured.
fn libvirt_media_ms() -> Result<f64, String> {
    use std::process::Command;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    let a = base.path().join("a.iso");
    let b = base.path().join("b.iso");
    for p in [&a, &b] {
        std::fs::File::create(p)
            .and_then(|f| f.set_len(1 << 20))
            .map_err(|e| e.to_string())?;
    }
    util::with_libvirt_lab(base.path(), |uri| {
        // python3-libvirt is a Debian package: Debian's interpreter has it.
        let out = Command::new("/usr/bin/python3")
            .arg(root.join("crates/driver-qemu/benches/libvirt_media.py"))
            .args([uri, "lvbench"])
            .arg(&a)
            .arg(&b)
            .arg(RUNS.to_string())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "libvirt_media.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        v["median_ms"]
            .as_f64()
            .ok_or_else(|| "no median in libvirt_media.py's output".to_owned())
    })
}

/// Detach to gone of a virtio-blk disk with a real guest, beside the raw client's `device_del`
/// to `DEVICE_DELETED` on the same VM.
async fn guest_detach(native: bool) {
    const GUEST_RUNS: usize = 5;
    let Some(g) = common::guest() else {
        println!("guest detach: SKIPPED (no test guest)");
        return;
    };
    let mut extra = Vec::new();
    if native {
        extra = vec![
            "-global".into(),
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off".into(),
        ];
    }
    let vm = Vm::start(VmSpec {
        guest: Some(g),
        extra,
        root_ports: 2,
        ..VmSpec::default()
    });
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let d = conn.domain("vm").await.unwrap();
    let mut raw = vm.raw();
    let img = vm.image("g.raw", "raw");
    let img = img.to_str().unwrap();
    let attrs = Attributes::from_pairs([
        ("source", img.to_owned()),
        ("format", "raw".into()),
        ("bus", "virtio".into()),
    ])
    .unwrap();
    let long = DetachOptions {
        timeout: Duration::from_secs(60),
        force: false,
        ..Default::default()
    };
    let (mut v, mut r) = (vec![], vec![]);
    for i in 0..GUEST_RUNS {
        let dev = conn.attach(&d, &DeviceType::DISK, &attrs).await.unwrap();
        // Let the guest finish the plug-in (native PCIe: the slot's power-on) first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = Instant::now();
        conn.detach(&d, &DeviceType::DISK, &dev, &long)
            .await
            .unwrap();
        v.push(t.elapsed());
        let node = format!("gn{i}");
        raw.ok(
            "blockdev-add",
            json!({"driver": "raw", "node-name": node, "file": {"driver": "file", "filename": img}}),
        );
        let id = format!("gd{i}");
        raw.ok(
            "device_add",
            json!({"driver": "virtio-blk-pci", "id": id, "drive": node, "bus": "rp2"}),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (ev, _) = raw_detach(&mut raw, &id, &node);
        r.push(ev);
    }
    let (v, r) = (median(v), median(r));
    let what = if native { "native PCIe" } else { "ACPI" };
    println!(
        "{:<40} {:>9.3} {:>9.3} {:>7.3}  <= 1.05 (medians of {GUEST_RUNS}, guest under TCG)",
        format!("detach to gone, guest, {what}"),
        ms(v),
        ms(r),
        ms(v) / ms(r)
    );
}
