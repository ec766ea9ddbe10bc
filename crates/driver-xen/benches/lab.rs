//! The Xen lab benchmark: the `vdev` command beside `xl`, inside the lab's Domain-0, in one run.
//!
//! Rows: attaching a file-backed disk until both ends are Connected (vdev in Domain-0 records
//! it in libxl's stored configuration as xl does; a `recorded=no` row shows what that costs),
//! detaching it until every node and the loop device are gone, and listing a domain that has
//! 100 disks; for each, the XenStore requests counted in xenstored's own trace.
//!
//! ```sh
//! set -a; eval "$(tests/xenlab/xenlab up)"; set +a     # the lab (tests/xenlab)
//! cargo bench -p vdev-driver-xen --bench lab           # VDEV_BENCH_ROUNDS=5 by default
//!                                                      # VDEV_BENCH_LIST=0: no listing rows
//! ```
//!
//! It prints a Markdown table and writes it to `target/xen-lab-bench.md`.
//!
//! Not criterion: each sample is a multi-second operation on a VM emulated by TCG, where
//! criterion's model (a warm-up period, then many timed iterations and outlier analysis) would
//! take hours; a few interleaved rounds, each timed inside dom0, fit instead.
//!
//! How: the host builds `vdev` (release, xen feature), strips it and copies it into dom0 with this
//! bench binary. Each operation is one `xenlab sh` call running this binary in dom0
//! (`lab dom0 OP ...`): it opens its own XenStore connection, sets its watches, starts the clock,
//! spawns the contender's command (no shell), and stops when the condition holds and the command
//! has exited. Conditions are seen through XenStore watches (the clock stops at the arrival of
//! the watch event that completed them, confirmed by one read), so their resolution is one
//! event delivery; loop devices (sysfs) are polled every 5 ms. The same waiter serves every
//! contender. One traced, untimed warm-up per contender and operation gives the request counts.

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list of benchmarks: there are none to list.
    }
    if args.get(1).map(String::as_str) == Some("dom0") {
        std::process::exit(dom0::main(&args[2..]));
    }
    std::process::exit(host::main());
}

/// The disk the attach and detach rows use, in dom0.
const IMG: &str = "/root/lab/bench.img";
/// Its size (sparse).
const IMG_SIZE: &str = "16M";
/// The guest device name of the attach/detach rows, and its Xen device number.
const DEV: &str = "xvdh";
const DEVID: u32 = 51824;
/// How many disks the listing rows run with.
const LIST_DISKS: usize = 100;
/// Where the binaries go in dom0.
const VDEV_IN_DOM0: &str = "/root/vdev";
const SELF_IN_DOM0: &str = "/root/vdev-lab-bench";
/// The row every other row is compared with.
const REFERENCE: &str = "xl";

/// A contender of the attach and detach rows. `{domu}`, `{img}`, `{dev}` and `{devid}` are
/// replaced; each entry is one argument (no shell).
struct Contender {
    name: &'static str,
    attach: &'static [&'static str],
    detach: &'static [&'static str],
}

const DISK_CONTENDERS: &[Contender] = &[
    Contender {
        name: "vdev xen:///",
        attach: &[
            VDEV_IN_DOM0,
            "-c",
            "xen:///",
            "attach",
            "{domu}",
            "disk",
            "uname=file:{img}",
            "dev={dev}",
            "mode=w",
        ],
        detach: &[
            VDEV_IN_DOM0,
            "-c",
            "xen:///",
            "detach",
            "{domu}",
            "disk",
            "{devid}",
        ],
    },
    // The same without libxl's stored configuration (recorded=no): what recording it costs.
    Contender {
        name: "vdev xen:/// recorded=no",
        attach: &[
            VDEV_IN_DOM0,
            "-c",
            "xen:///",
            "attach",
            "{domu}",
            "disk",
            "uname=file:{img}",
            "dev={dev}",
            "mode=w",
            "recorded=no",
        ],
        detach: &[
            VDEV_IN_DOM0,
            "-c",
            "xen:///",
            "detach",
            "{domu}",
            "disk",
            "{devid}",
        ],
    },
    // vdev runs libxl's /etc/xen/scripts/block itself.
    Contender {
        name: "vdev xen:///?hotplug=script",
        attach: &[
            VDEV_IN_DOM0,
            "-c",
            "xen:///?hotplug=script",
            "attach",
            "{domu}",
            "disk",
            "uname=file:{img}",
            "dev={dev}",
            "mode=w",
        ],
        detach: &[
            VDEV_IN_DOM0,
            "-c",
            "xen:///?hotplug=script",
            "detach",
            "{domu}",
            "disk",
            "{devid}",
        ],
    },
    Contender {
        name: REFERENCE,
        attach: &[
            "xl",
            "block-attach",
            "{domu}",
            "format=raw, vdev={dev}, access=rw, target={img}",
        ],
        detach: &["xl", "block-detach", "{domu}", "{dev}"],
    },
];

/// How a listing command's output is counted.
#[derive(Clone, Copy)]
enum Items {
    /// Lines whose first word is this (the device type column).
    FirstWord(&'static str),
    /// Lines whose first word is a number (`xl block-list`'s Vdev column).
    Numbered,
    /// `"ref":` keys (JSON).
    JsonRefs,
}

/// A contender of the listing rows.
struct Lister {
    name: &'static str,
    cmd: &'static [&'static str],
    items: Items,
}

const LIST_CONTENDERS: &[Lister] = &[
    Lister {
        name: "vdev devices",
        cmd: &[VDEV_IN_DOM0, "-c", "xen:///", "devices", "{domu}", "disk"],
        items: Items::FirstWord("disk"),
    },
    Lister {
        name: "vdev --json devices",
        cmd: &[
            VDEV_IN_DOM0,
            "-c",
            "xen:///",
            "--json",
            "devices",
            "{domu}",
            "disk",
        ],
        items: Items::JsonRefs,
    },
    Lister {
        name: REFERENCE,
        cmd: &["xl", "block-list", "{domu}"],
        items: Items::Numbered,
    },
];

impl Items {
    fn code(self) -> String {
        match self {
            Items::FirstWord(w) => format!("word:{w}"),
            Items::Numbered => "numbered".into(),
            Items::JsonRefs => "json".into(),
        }
    }

    fn parse(code: &str) -> Option<Items> {
        match code {
            "numbered" => Some(Items::Numbered),
            "json" => Some(Items::JsonRefs),
            "word:disk" => Some(Items::FirstWord("disk")),
            _ => None,
        }
    }

    fn count(self, out: &str) -> usize {
        match self {
            Items::FirstWord(w) => out
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(w))
                .count(),
            Items::Numbered => out
                .lines()
                .filter(|l| {
                    l.split_whitespace()
                        .next()
                        .is_some_and(|f| f.bytes().all(|b| b.is_ascii_digit()))
                })
                .count(),
            Items::JsonRefs => out.matches("\"ref\":").count(),
        }
    }
}

/// `xvd` + the letters of disk `k` (0 = a, 26 = aa).
fn xvd(k: usize) -> String {
    xen_devid::xvd_name(k as u32)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The host side: builds, copies, drives the rounds, prints the table.
#[path = "lab/host.rs"]
mod host;

/// The dom0 side: one operation, timed, with a minimal XenStore client of its own.
#[path = "lab/dom0.rs"]
mod dom0;
