//! The libvirt driver beside the same libvirt calls made directly with `virt`, against one
//! libvirtd the bench starts (tests/common: QEMU under TCG, no guest OS), in one run:
//!
//! - attach of a SCSI disk (vdev: lookup, the live XML, attach; direct: the same three calls);
//! - detach to gone (vdev: `virDomainDetachDeviceAlias`, then the `DEVICE_REMOVED` event or the
//!   live XML; direct: `virDomainDetachDeviceFlags`, which returns once QEMU removed it);
//! - a listing of 500 disks (vdev: lookup, live XML, isPersistent, stored XML, merged; direct:
//!   the same calls, both documents parsed with the same XML parser);
//! - one-shot `vdev attach` and `vdev devices` (the vdev command built with the `libvirt`
//!   feature, release) beside a minimal `virt` program doing the same calls (this bench's
//!   binary run with `--virt-attach` / `--virt-devices`: open, lookup by name, the call(s)),
//!   and `vdev attach` beside that program doing first what vdev must before an attach
//!   (`--virt-attach-read`: its live XML, to choose a target), and `virsh attach-device` given
//!   the minimal program's XML. The attaches meet a domain of
//!   4 disks (a typical VM), then one of 180, each attach the same domain (the disks a turn
//!   attached are detached again, untimed): vdev's reading grows with the domain, the
//!   minimal program's given target does not. The listings meet the domain of 180 disks.
//!
//! Goals (issue 22): attach and listing at most 1.10x the direct calls; one-shot commands within
//! 1.10x of the minimal program. Medians; runs interleaved so that drift hits both sides, and
//! for the one-shot commands which one goes first rotates.
//!
//! `cargo bench -p vdev-driver-libvirt` (needs what scripts/install-test-deps.sh installs).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Libvirtd;
use vdev_core::{Attributes, DetachOptions, DeviceType, Domain};
use vdev_driver_libvirt as _;
use virt::connect::Connect;

const RUNS: usize = 30;
const ONE_SHOT_RUNS: usize = 60;
const LISTED: usize = 500;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One line: the medians and their ratio, then the fastest runs and theirs (on a machine shared
/// with other work, the fastest runs show the cost with the least interference).
fn row(what: &str, vdev: Vec<Duration>, direct: Vec<Duration>, goal: &str) {
    let (vb, db) = (
        *vdev.iter().min().expect("runs"),
        *direct.iter().min().expect("runs"),
    );
    let (vm, dm) = (median(vdev), median(direct));
    println!(
        "{what:<54} {:>9.3} {:>9.3} {:>7.3}  {:>9.3} {:>9.3} {:>7.3}  {goal}",
        ms(vm),
        ms(dm),
        vm.as_secs_f64() / dm.as_secs_f64(),
        ms(vb),
        ms(db),
        vb.as_secs_f64() / db.as_secs_f64()
    );
}

/// The `i`-th disk name after `sd`: a, ..., z, aa, ab, ...
fn target(i: usize) -> String {
    let mut letters = Vec::new();
    let mut n = i + 1;
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("sd{}", String::from_utf8(letters).expect("ascii"))
}

fn disk_xml(img: &Path, target: &str, unit: usize, alias: &str) -> String {
    format!(
        "<disk type='file' device='disk'><driver type='raw'/><source file='{}'/>\
         <target dev='{target}' bus='scsi'/><address type='drive' controller='0' bus='0' target='0' unit='{unit}'/>\
         <alias name='{alias}'/></disk>",
        img.display()
    )
}

/// The minimal program: open, look the domain up by name, attach the XML in a file, live; with
/// `read_first`, also what vdev's attach needs before attaching: the live XML parsed, from
/// which vdev chooses a free target and SCSI unit (this program is given both).
fn virt_attach(uri: &str, domain: &str, xml_file: &str, read_first: bool) {
    let c = Connect::open(Some(uri)).expect("open");
    let d = c.lookup_domain_by_name(domain).expect("lookup");
    if read_first {
        let live = d.xml_desc(0).expect("xml");
        let doc = roxmltree::Document::parse(&live).expect("parse");
        let targets = doc
            .descendants()
            .filter(|n| n.has_tag_name("target"))
            .count();
        assert!(targets > 0, "a domain with disks");
    }
    let xml = std::fs::read_to_string(xml_file).expect("xml");
    d.attach_device_flags(&xml, virt_sys::VIR_DOMAIN_AFFECT_LIVE)
        .expect("attach");
    println!("attached");
}

/// The minimal program: open, look the domain up by name, its live and stored XML, the disks
/// printed.
fn virt_devices(uri: &str, domain: &str) {
    let c = Connect::open(Some(uri)).expect("open");
    let d = c.lookup_domain_by_name(domain).expect("lookup");
    let live = d.xml_desc(0).expect("xml");
    let _ = d.is_persistent().expect("persistent");
    let stored = d.xml_desc(virt_sys::VIR_DOMAIN_XML_INACTIVE).expect("xml");
    for text in [live, stored] {
        let doc = roxmltree::Document::parse(&text).expect("parse");
        for n in doc.descendants().filter(|n| n.has_tag_name("disk")) {
            let alias = n
                .children()
                .find(|c| c.has_tag_name("alias"))
                .and_then(|a| a.attribute("name"));
            println!("disk {}", alias.unwrap_or("-"));
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--virt-attach") => return virt_attach(&args[2], &args[3], &args[4], false),
        Some("--virt-attach-read") => return virt_attach(&args[2], &args[3], &args[4], true),
        Some("--virt-devices") => return virt_devices(&args[2], &args[3]),
        _ => {}
    }
    virt::error::clear_error_callback();
    let Some(lv) = Libvirtd::start() else {
        println!("not measured: libvirt is not installed (scripts/install-test-deps.sh)");
        return;
    };
    lv.define("bench", 8, true);
    lv.define("oneshot", 8, true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "{:<54} {:>9} {:>9} {:>7}  {:>9} {:>9} {:>7}  goal",
        "libvirt driver (ms)", "vdev", "direct", "ratio", "vdev min", "dir. min", "ratio"
    );
    rt.block_on(in_process(&lv));
    one_shot(&lv);
}

async fn in_process(lv: &Libvirtd) {
    let conn = vdev_core::connect(&lv.vdev_uri()).await.expect("connect");
    let vm: Domain = conn.domain("bench").await.expect("domain");
    let uuid = vm.uuid.clone().expect("uuid");
    let direct = Connect::open(Some(&lv.uri)).expect("open");
    let disk = DeviceType::DISK;
    let _ = conn.schema(&disk).await.expect("schema");
    let (mut a_vdev, mut a_direct, mut d_vdev, mut d_direct) = (vec![], vec![], vec![], vec![]);
    for i in 0..RUNS {
        // vdev: attach, then detach to gone.
        let img = lv.image(&format!("v{i}.raw"));
        let src = img.to_str().expect("utf-8").to_owned();
        let attrs = Attributes::from_pairs([("source".to_owned(), src)]).expect("attrs");
        let t = Instant::now();
        let r = conn.attach(&vm, &disk, &attrs).await.expect("vdev attach");
        a_vdev.push(t.elapsed());
        let t = Instant::now();
        conn.detach(&vm, &disk, &r, &DetachOptions::default())
            .await
            .expect("vdev detach");
        d_vdev.push(t.elapsed());
        // Direct: the same calls for the attach; libvirt's own detach, which returns when the
        // device is gone (a SCSI disk: QEMU removes it at once).
        let img = lv.image(&format!("d{i}.raw"));
        let xml = disk_xml(&img, &target(3000), 900, &format!("ua-direct-{i}"));
        let (c, u, x) = (direct.clone(), uuid.clone(), xml.clone());
        let t = Instant::now();
        let took = tokio::task::spawn_blocking(move || {
            let d = c.lookup_domain_by_uuid_string(&u).expect("lookup");
            let _ = d.xml_desc(0).expect("xml");
            d.attach_device_flags(&x, virt_sys::VIR_DOMAIN_AFFECT_LIVE)
                .expect("direct attach");
        })
        .await;
        took.expect("direct attach");
        a_direct.push(t.elapsed());
        let (c, u) = (direct.clone(), uuid.clone());
        let t = Instant::now();
        tokio::task::spawn_blocking(move || {
            let d = c.lookup_domain_by_uuid_string(&u).expect("lookup");
            d.detach_device_flags(&xml, virt_sys::VIR_DOMAIN_AFFECT_LIVE)
                .expect("direct detach");
        })
        .await
        .expect("direct detach");
        d_direct.push(t.elapsed());
    }
    row("attach (SCSI disk)", a_vdev, a_direct, "<= 1.10");
    row("detach to gone", d_vdev, d_direct, "(libvirt's own wait)");

    // 500 disks, attached directly (untimed), then listed.
    let d = direct.lookup_domain_by_uuid_string(&uuid).expect("lookup");
    for i in 0..LISTED {
        let img = lv.image(&format!("l{i}.raw"));
        let xml = disk_xml(&img, &target(1000 + i), 100 + i, &format!("ua-list-{i}"));
        d.attach_device_flags(&xml, virt_sys::VIR_DOMAIN_AFFECT_LIVE)
            .expect("attach for the listing");
    }
    let (mut l_vdev, mut l_direct) = (vec![], vec![]);
    for _ in 0..RUNS {
        let t = Instant::now();
        let n = conn.devices(&vm, Some(&disk)).await.expect("list").len();
        l_vdev.push(t.elapsed());
        assert!(n >= LISTED, "{n} disks listed");
        let (c, u) = (direct.clone(), uuid.clone());
        let t = Instant::now();
        let n = tokio::task::spawn_blocking(move || {
            let d = c.lookup_domain_by_uuid_string(&u).expect("lookup");
            let live = d.xml_desc(0).expect("xml");
            let _ = d.is_persistent().expect("persistent");
            let stored = d.xml_desc(virt_sys::VIR_DOMAIN_XML_INACTIVE).expect("xml");
            let mut n = 0;
            for text in [live, stored] {
                let doc = roxmltree::Document::parse(&text).expect("parse");
                n += doc.descendants().filter(|n| n.has_tag_name("disk")).count();
            }
            n
        })
        .await
        .expect("direct listing");
        l_direct.push(t.elapsed());
        assert!(n >= LISTED);
    }
    row(&format!("list {LISTED} disks"), l_vdev, l_direct, "<= 1.10");
    conn.close().await.expect("close");
}

/// The vdev command built with the libvirt feature (release), or why not.
fn vdev_command() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "vdev-cli",
            "--features",
            "libvirt",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/vdev"))
}

/// Run `cmd`, timed; its standard output.
fn time(cmd: &mut Command) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("runs");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (took, out.stdout)
}

/// Time each command once, the first one timed moving by one each turn: a command that follows
/// an attach meets libvirtd still finishing it, so a fixed order would charge that to one side.
/// Their standard outputs, in the order of `runs`.
fn in_turns(turn: usize, runs: &mut [(Command, &mut Vec<Duration>)]) -> Vec<Vec<u8>> {
    let n = runs.len();
    let mut outs = vec![Vec::new(); n];
    for k in 0..n {
        let i = (turn + k) % n;
        let (cmd, took) = &mut runs[i];
        let (t, out) = time(cmd);
        took.push(t);
        outs[i] = out;
    }
    outs
}

/// The disks a typical VM has, for the one-shot attaches to meet.
const TYPICAL_DISKS: usize = 4;
/// The disks of the larger domain the one-shot attaches and listings also meet.
const MANY_DISKS: usize = 180;

/// Detach, live, the disk with `alias` and wait until it is gone (libvirt's own wait: the
/// disk is matched by its target, read from the live XML). Untimed: it puts the domain back.
fn remove_disk(d: &virt::domain::Domain, alias: &str) {
    let live = d.xml_desc(0).expect("xml");
    let doc = roxmltree::Document::parse(&live).expect("parse");
    let disk = doc
        .descendants()
        .filter(|n| n.has_tag_name("disk"))
        .find(|n| {
            n.children()
                .any(|c| c.has_tag_name("alias") && c.attribute("name") == Some(alias))
        })
        .unwrap_or_else(|| panic!("disk {alias} in the live XML"));
    let target = disk
        .children()
        .find(|c| c.has_tag_name("target"))
        .and_then(|t| t.attribute("dev"))
        .expect("a target");
    let xml = format!("<disk type='file' device='disk'><target dev='{target}' bus='scsi'/></disk>");
    d.detach_device_flags(&xml, virt_sys::VIR_DOMAIN_AFFECT_LIVE)
        .expect("detach");
}

/// Attach `n` disks directly (untimed), numbered from `first`.
fn add_disks(lv: &Libvirtd, d: &virt::domain::Domain, first: usize, n: usize) {
    for i in first..first + n {
        let img = lv.image(&format!("k{i}.raw"));
        let xml = disk_xml(&img, &target(i), i, &format!("ua-kept-{i}"));
        d.attach_device_flags(&xml, virt_sys::VIR_DOMAIN_AFFECT_LIVE)
            .expect("attach a kept disk");
    }
}

/// One-shot attaches on domain `d` as it is: vdev's, the minimal program's, the minimal
/// program's reading first and `virsh attach-device`'s (the XML given whole, as the minimal
/// program's), in turns; after each turn the four disks are detached again (untimed), so
/// that every attach meets the same domain.
fn one_shot_attaches(
    lv: &Libvirtd,
    vdev: &Path,
    d: &virt::domain::Domain,
    tag: &str,
) -> [Vec<Duration>; 4] {
    let me = std::env::current_exe().expect("this bench");
    let uri = lv.vdev_uri();
    let (mut a_vdev, mut a_virt, mut a_read, mut a_virsh) = (vec![], vec![], vec![], vec![]);
    for i in 0..ONE_SHOT_RUNS {
        let img = lv.image(&format!("{tag}o{i}.raw"));
        let source = format!("source={}", img.display());
        let mut by_vdev = Command::new(vdev);
        by_vdev.args(["-c", &uri, "attach", "oneshot", "disk", &source]);
        let [direct, read_first, virsh] = [
            (0, Some("--virt-attach")),
            (1, Some("--virt-attach-read")),
            (2, None),
        ]
        .map(|(side, mode)| {
            let img = lv.image(&format!("{tag}{side}-{i}.raw"));
            let xml = lv.dir.path().join(format!("{tag}{side}-{i}.xml"));
            // Targets and units far from those vdev chooses and from the kept disks'.
            let n = 10_000 + side;
            std::fs::write(
                &xml,
                disk_xml(&img, &target(n), n, &format!("ua-{tag}{side}-{i}")),
            )
            .expect("xml");
            let xml = xml.to_str().expect("utf-8");
            match mode {
                Some(mode) => {
                    let mut c = Command::new(&me);
                    c.args([mode, &lv.uri, "oneshot", xml]);
                    c
                }
                None => {
                    let mut c = Command::new("virsh");
                    c.args([
                        "-q",
                        "-c",
                        &lv.uri,
                        "attach-device",
                        "oneshot",
                        xml,
                        "--live",
                    ]);
                    c
                }
            }
        });
        let outs = in_turns(
            i,
            &mut [
                (by_vdev, &mut a_vdev),
                (direct, &mut a_virt),
                (read_first, &mut a_read),
                (virsh, &mut a_virsh),
            ],
        );
        let made = String::from_utf8(outs[0].clone()).expect("utf-8");
        remove_disk(d, made.trim());
        for side in 0..3 {
            remove_disk(d, &format!("ua-{tag}{side}-{i}"));
        }
    }
    [a_vdev, a_virt, a_read, a_virsh]
}

fn one_shot(lv: &Libvirtd) {
    let vdev = match vdev_command() {
        Ok(p) => p,
        Err(why) => {
            println!("one-shot commands: not measured ({why})");
            return;
        }
    };
    let me = std::env::current_exe().expect("this bench");
    let uri = lv.vdev_uri();
    let c = Connect::open(Some(&lv.uri)).expect("open");
    let d = c.lookup_domain_by_name("oneshot").expect("lookup");
    add_disks(lv, &d, 0, TYPICAL_DISKS);
    let [a_vdev, a_virt, a_read, a_virsh] = one_shot_attaches(lv, &vdev, &d, "t");
    add_disks(lv, &d, TYPICAL_DISKS, MANY_DISKS - TYPICAL_DISKS);
    let [m_vdev, m_virt, m_read, m_virsh] = one_shot_attaches(lv, &vdev, &d, "m");
    let (mut l_vdev, mut l_virt) = (vec![], vec![]);
    for i in 0..ONE_SHOT_RUNS {
        let mut by_vdev = Command::new(&vdev);
        by_vdev.args(["-c", &uri, "devices", "oneshot", "disk"]);
        let mut direct = Command::new(&me);
        direct.args(["--virt-devices", &lv.uri, "oneshot"]);
        in_turns(i, &mut [(by_vdev, &mut l_vdev), (direct, &mut l_virt)]);
    }
    row(
        &format!("one-shot `vdev attach`, {TYPICAL_DISKS} disks / reading first"),
        a_vdev.clone(),
        a_read,
        "",
    );
    row(
        &format!("one-shot `virsh attach-device`, {TYPICAL_DISKS} disks / minimal"),
        a_virsh,
        a_virt.clone(),
        "",
    );
    row(
        &format!("one-shot `vdev attach`, {TYPICAL_DISKS} disks / minimal"),
        a_vdev,
        a_virt,
        "<= 1.10",
    );
    row(
        &format!("one-shot `vdev attach`, {MANY_DISKS} disks / reading first"),
        m_vdev.clone(),
        m_read,
        "",
    );
    row(
        &format!("one-shot `virsh attach-device`, {MANY_DISKS} disks / minimal"),
        m_virsh,
        m_virt.clone(),
        "",
    );
    row(
        &format!("one-shot `vdev attach`, {MANY_DISKS} disks / minimal"),
        m_vdev,
        m_virt,
        "(vdev reads the XML)",
    );
    row(
        &format!("one-shot `vdev devices`, {MANY_DISKS} disks / minimal"),
        l_vdev,
        l_virt,
        "<= 1.10",
    );
}
