//! Soak: many attach/detach cycles in one process, then a look for anything that grew.
//!
//! `cargo bench -p vdev-driver-qemu --bench soak` (not part of the test run): 10,000
//! attach/detach cycles on the mock, then 1,000 on a real QEMU (q35 with native PCIe hotplug,
//! which completes unplug without a guest: SCSI disks and virtio NICs alternate). Before and
//! after each (after a warm-up), it counts this process's open file descriptors and resident
//! memory, and QEMU's block nodes, netdevs and file descriptors (through an independent raw QMP
//! client). It prints a table and exits non-zero when something grew beyond its bound:
//! descriptors, nodes and netdevs not at all; resident memory by at most 16 MiB.
//! `VDEV_SOAK_MOCK` and `VDEV_SOAK_QEMU` change the cycle counts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Vm, VmSpec};
use vdev_core::{Attributes, DetachOptions, DeviceType};
use vdev_driver_mock as _;
use vdev_driver_qemu as _;

const RSS_BOUND_KIB: i64 = 16 * 1024;

fn fds(pid: &str) -> i64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(-1, |d| d.count() as i64)
}

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(-1)
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    what: &'static str,
    before: i64,
    after: i64,
    bound: i64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut rows = Vec::new();
    let me = std::process::id().to_string();

    // The mock, in memory.
    let n = count("VDEV_SOAK_MOCK", 10_000);
    let conn = vdev_core::connect("mock:///default").await.unwrap();
    let demo = conn.domain("demo").await.unwrap();
    let disk = Attributes::from_pairs([
        ("uname", "file:/var/lib/xen/images/soak.img"),
        ("dev", "xvdc"),
        ("mode", "w"),
    ])
    .unwrap();
    let cycle = |i: usize| {
        let (conn, demo, disk) = (&conn, &demo, &disk);
        async move {
            let r = conn.attach(demo, &DeviceType::DISK, disk).await.unwrap();
            conn.detach(demo, &DeviceType::DISK, &r, &DetachOptions::default())
                .await
                .unwrap_or_else(|e| panic!("mock cycle {i}: {e}"));
        }
    };
    for i in 0..100 {
        cycle(i).await;
    }
    let (f0, m0) = (fds(&me), rss_kib());
    let t = Instant::now();
    for i in 0..n {
        cycle(i).await;
    }
    let took = t.elapsed();
    rows.push(Row {
        what: "mock: our fds",
        before: f0,
        after: fds(&me),
        bound: 0,
    });
    rows.push(Row {
        what: "mock: our RSS (KiB)",
        before: m0,
        after: rss_kib(),
        bound: RSS_BOUND_KIB,
    });
    println!("mock: {n} cycles in {took:.2?}");
    conn.close().await.unwrap();

    // A real QEMU.
    if !common::qemu_available() {
        println!("QEMU: not measured (qemu-system-x86_64 is missing)");
    } else {
        let n = count("VDEV_SOAK_QEMU", 1_000);
        let vm = Vm::start(VmSpec {
            extra: vec![
                "-global".into(),
                "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off".into(),
            ],
            ..VmSpec::default()
        });
        let qemu_pid = vm.pid().to_string();
        let img = vm.image("soak.raw", "raw");
        let conn = vdev_core::connect(&vm.uri()).await.unwrap();
        let d = conn.domain("vm").await.unwrap();
        let mut raw = vm.raw();
        let disk = Attributes::from_pairs([
            ("source", img.to_str().unwrap().to_owned()),
            ("format", "raw".to_owned()),
        ])
        .unwrap();
        let nic = Attributes::from_pairs([("model", "virtio-net-pci")]).unwrap();
        let wait = DetachOptions {
            timeout: Duration::from_secs(30),
            force: false,
            ..Default::default()
        };
        let cycle = |i: usize| {
            let (conn, d, disk, nic, wait) = (&conn, &d, &disk, &nic, &wait);
            async move {
                let (t, a) = if i.is_multiple_of(2) {
                    (DeviceType::DISK, disk)
                } else {
                    (DeviceType::NETWORK, nic)
                };
                let r = conn.attach(d, &t, a).await.unwrap();
                conn.detach(d, &t, &r, wait)
                    .await
                    .unwrap_or_else(|e| panic!("QEMU cycle {i}: {e}"));
            }
        };
        for i in 0..10 {
            cycle(i).await;
        }
        let nodes = |raw: &mut common::Raw| raw.nodes().len() as i64;
        let netdevs = |raw: &mut common::Raw| raw.network_info().lines().count() as i64;
        let (f0, m0, q0, n0, nd0) = (
            fds(&me),
            rss_kib(),
            fds(&qemu_pid),
            nodes(&mut raw),
            netdevs(&mut raw),
        );
        let t = Instant::now();
        for i in 0..n {
            cycle(i).await;
        }
        let took = t.elapsed();
        println!("QEMU: {n} cycles in {took:.2?}");
        rows.push(Row {
            what: "QEMU: our fds",
            before: f0,
            after: fds(&me),
            bound: 0,
        });
        rows.push(Row {
            what: "QEMU: our RSS (KiB)",
            before: m0,
            after: rss_kib(),
            bound: RSS_BOUND_KIB,
        });
        rows.push(Row {
            what: "QEMU: its fds",
            before: q0,
            after: fds(&qemu_pid),
            bound: 0,
        });
        rows.push(Row {
            what: "QEMU: block nodes",
            before: n0,
            after: nodes(&mut raw),
            bound: 0,
        });
        rows.push(Row {
            what: "QEMU: netdevs (info network lines)",
            before: nd0,
            after: netdevs(&mut raw),
            bound: 0,
        });
        rows.push(Row {
            what: "QEMU: vdev-* leftovers",
            before: 0,
            after: raw.leftovers().len() as i64,
            bound: 0,
        });
        conn.close().await.unwrap();
    }

    println!(
        "{:<38} {:>10} {:>10} {:>8} {:>8}",
        "", "before", "after", "growth", "bound"
    );
    let mut ok = true;
    for r in &rows {
        let growth = r.after - r.before;
        let fine = growth <= r.bound;
        ok &= fine;
        println!(
            "{:<38} {:>10} {:>10} {:>8} {:>8} {}",
            r.what,
            r.before,
            r.after,
            growth,
            r.bound,
            if fine { "ok" } else { "GREW" }
        );
    }
    if !ok {
        eprintln!("soak: something grew beyond its bound");
        std::process::exit(1);
    }
}
