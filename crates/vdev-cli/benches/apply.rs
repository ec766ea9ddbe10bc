//! `vdev apply` of 32 SCSI disks, as a one-shot command (connection, listing and plan
//! included), beside the floor: a raw QMP client sending the same 32 `blockdev-add` +
//! `device_add` pairs in one write, on the same QEMU (no guest OS), in the same run. Also 32
//! one-shot `vdev attach` commands, the raw pairs sent one at a time, a re-apply with nothing to
//! do beside one `vdev devices`, and 32 `virsh attach-device` on the libvirt lab's domain
//! (`../shared/tools/libvirt-lab.sh`), when it can be started.
//!
//! `cargo bench -p vdev-cli --bench apply` (needs qemu-system-x86_64:
//! scripts/install-test-deps.sh). Medians of `RUNS` runs.

#[path = "../../driver-qemu/tests/common/mod.rs"]
mod common;
#[path = "../../driver-qemu/benches/util/mod.rs"]
mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Vm, VmSpec};
use serde_json::{json, Value};
use util::{median, ms};

const N: usize = 32;
const RUNS: usize = 9;
const VDEV: &str = env!("CARGO_BIN_EXE_vdev");

fn vdev(args: &[&str]) -> Duration {
    let t = Instant::now();
    let o = Command::new(VDEV)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("vdev runs");
    let took = t.elapsed();
    assert!(
        o.status.success(),
        "vdev {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    took
}

/// The raw client's pairs for `images`: node and device names prefixed with `tag`.
fn pairs(images: &[String], tag: &str) -> Vec<(&'static str, Value)> {
    let mut cmds = Vec::with_capacity(images.len() * 2);
    for (i, img) in images.iter().enumerate() {
        let node = format!("{tag}n{i}");
        cmds.push((
            "blockdev-add",
            json!({"driver": "raw", "node-name": node, "read-only": false,
                   "file": {"driver": "file", "filename": img, "node-name": format!("{node}-file"), "read-only": false}}),
        ));
        cmds.push((
            "device_add",
            json!({"driver": "scsi-hd", "id": format!("{tag}d{i}"), "drive": node, "bus": "scsi0.0"}),
        ));
    }
    cmds
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a list of benchmarks: there are none to list.
    }
    assert!(
        common::qemu_available(),
        "the benchmark needs qemu-system-x86_64"
    );
    let vm = Vm::start(VmSpec {
        scsi: 1,
        root_ports: 1,
        xhci: 0,
        ..VmSpec::default()
    });
    let uri = vm.uri();
    let mut raw = vm.raw();
    let controllers: Vec<String> = raw.devices().into_iter().map(|(id, _)| id).collect();
    let images: Vec<String> = (0..N)
        .map(|i| vm.image(&format!("v{i}.raw"), "raw").display().to_string())
        .collect();
    let mut doc = String::from("domains:\n  vm:\n    devices:\n");
    for img in &images {
        doc.push_str(&format!(
            "      - {{type: disk, attrs: {{source: {img}, format: raw, bus: scsi}}}}\n"
        ));
    }
    let doc_path = vm.image("unused.raw", "raw").with_file_name("apply.yaml");
    std::fs::write(&doc_path, doc).unwrap();
    let doc_path = doc_path.display().to_string();

    let (mut floor, mut seq, mut apply, mut attach, mut reapply, mut devices) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    // The first round warms the page cache and QEMU's allocations; it is not counted.
    for run in 0..=RUNS {
        let cmds = pairs(&images, &format!("p{run}"));
        let t = Instant::now();
        let replies = raw.pipeline(&cmds);
        let took = t.elapsed();
        if let Some(r) = replies.iter().find(|r| r.get("return").is_none()) {
            panic!(
                "the raw client's pipelined pair failed: {r}; nodes: {:?}; devices: {:?}",
                raw.nodes(),
                raw.devices()
            );
        }
        raw.remove_all_but(&controllers);

        let cmds = pairs(&images, &format!("s{run}"));
        let t = Instant::now();
        for (name, args) in cmds {
            raw.ok(name, args);
        }
        let took_seq = t.elapsed();
        raw.remove_all_but(&controllers);

        let took_apply = vdev(&["-c", &uri, "apply", &doc_path]);
        assert_eq!(raw.devices().len(), controllers.len() + N);
        let took_reapply = vdev(&["-c", &uri, "apply", &doc_path]);
        let took_devices = vdev(&["-c", &uri, "devices", "vm"]);
        raw.remove_all_but(&controllers);

        let t = Instant::now();
        for img in &images {
            let source = format!("source={img}");
            vdev(&["-c", &uri, "attach", "vm", "disk", &source, "format=raw"]);
        }
        let took_attach = t.elapsed();
        raw.remove_all_but(&controllers);

        if run > 0 {
            floor.push(took);
            seq.push(took_seq);
            apply.push(took_apply);
            reapply.push(took_reapply);
            devices.push(took_devices);
            attach.push(took_attach);
        }
    }
    let (floor, seq, apply, attach, reapply, devices) = (
        median(floor),
        median(seq),
        median(apply),
        median(attach),
        median(reapply),
        median(devices),
    );
    let libvirt = virsh_attach_32();

    println!("{N} SCSI disks on one QEMU (no guest OS), medians of {RUNS} runs (ms)");
    println!(
        "{:<52} {:>9} {:>9} {:>7}  goal",
        "", "this", "beside", "ratio"
    );
    let row = |what: &str, a: Duration, b: Duration, goal: &str| {
        println!(
            "{what:<52} {:>9.2} {:>9.2} {:>7.2}  {goal}",
            ms(a),
            ms(b),
            ms(a) / ms(b)
        );
    };
    row(
        "vdev apply (one-shot) vs raw, one write",
        apply,
        floor,
        "<= 1.25",
    );
    row("raw one at a time vs raw, one write", seq, floor, "");
    row(
        "32 one-shot vdev attach vs vdev apply",
        attach,
        apply,
        ">= 4",
    );
    row(
        "vdev apply, nothing to do vs one vdev devices",
        reapply,
        devices,
        "<= 1.3",
    );
    match libvirt {
        Ok(l) => row("32 virsh attach-device vs vdev apply", l, apply, ">= 10"),
        Err(why) => println!("32 virsh attach-device: not measured ({why})"),
    }
}

/// 32 one-shot `virsh attach-device` of SCSI disks on the libvirt lab's domain (median of 3
/// runs, each followed by their detach), or why it could not be measured.
fn virsh_attach_32() -> Result<Duration, String> {
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut xmls = Vec::new();
    for i in 0..N {
        let img = base.path().join(format!("l{i}.raw"));
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(1 << 20))
            .map_err(|e| e.to_string())?;
        let xml = base.path().join(format!("l{i}.xml"));
        std::fs::write(
            &xml,
            format!(
                // On the domain's one virtio-scsi controller, a target each (without an
                // address libvirt adds a controller per 7 disks and runs out of PCI slots).
                "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/><target dev='sd{}' bus='scsi'/><address type='drive' controller='0' bus='0' target='{i}' unit='0'/></disk>",
                img.display(),
                xen_letters(i + 1)
            ),
        )
        .map_err(|e| e.to_string())?;
        xmls.push(xml);
    }
    util::with_libvirt_lab(base.path(), |uri| {
        let virsh = |args: &[&str]| -> Result<(), String> {
            let o = Command::new("virsh")
                .arg("-c")
                .arg(uri)
                .args(args)
                .output()
                .map_err(|e| e.to_string())?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "virsh {args:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
        };
        let mut runs = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            for x in &xmls {
                virsh(&[
                    "attach-device",
                    "lvbench",
                    &x.display().to_string(),
                    "--live",
                ])?;
            }
            runs.push(t.elapsed());
            for x in &xmls {
                virsh(&[
                    "detach-device",
                    "lvbench",
                    &x.display().to_string(),
                    "--live",
                ])?;
            }
        }
        Ok(median(runs))
    })
}

/// `a`, `b`, ... `z`, `aa`, ...: the letters of the `n`-th disk name (1-based).
fn xen_letters(mut n: usize) -> String {
    let mut s = Vec::new();
    while n > 0 {
        n -= 1;
        s.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}
