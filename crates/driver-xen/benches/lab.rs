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
mod host {
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    type Res<T> = Result<T, String>;

    fn root() -> PathBuf {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        root.canonicalize().unwrap_or(root)
    }

    fn xenlab() -> PathBuf {
        root().join("tests/xenlab/xenlab")
    }

    fn quote(s: &str) -> String {
        format!("'{}'", s.replace('\'', r"'\''"))
    }

    /// Run a script in dom0; its stdout, or why it failed.
    fn sh(script: &str, timeout: Duration) -> Res<String> {
        let mut child = Command::new(xenlab())
            .args(["sh", "-"])
            .env("XENLAB_SH_TIMEOUT", timeout.as_secs().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", xenlab().display()))?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing the script to xenlab sh: {e}"))?;
        let out = child
            .wait_with_output()
            .map_err(|e| format!("xenlab sh: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "dom0 script failed ({}):\n{stdout}{}\n--- script:\n{script}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn run(cmd: &mut Command) -> Res<()> {
        let st = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("{cmd:?} failed ({st})"))
        }
    }

    /// A stripped copy of `bin` in the temporary directory (the binary itself if `strip` fails).
    fn stripped(bin: &Path, name: &str) -> PathBuf {
        let small = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let ok = Command::new("strip")
            .arg("-o")
            .arg(&small)
            .arg(bin)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            small
        } else {
            bin.to_owned()
        }
    }

    fn put(local: &Path, remote: &str) -> Res<()> {
        let r = run(Command::new(xenlab())
            .arg("put")
            .arg(local)
            .arg(remote)
            .stdout(Stdio::null()));
        if local.starts_with(std::env::temp_dir()) {
            let _ = std::fs::remove_file(local);
        }
        r
    }

    fn target_dir() -> PathBuf {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
    }

    fn build_and_copy() -> Res<()> {
        eprintln!("lab bench: building vdev (release, xen feature)");
        run(Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-q",
                "-p",
                "vdev-cli",
                "--features",
                "xen",
                "--bin",
                "vdev",
            ])
            .current_dir(root()))?;
        let vdev = target_dir().join("release/vdev");
        eprintln!("lab bench: copying vdev and this bench into dom0");
        put(&stripped(&vdev, "vdev-lab-bench-vdev"), VDEV_IN_DOM0)?;
        let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        put(&stripped(&me, "vdev-lab-bench-self"), SELF_IN_DOM0)
    }

    /// `KEY=VALUE` lines of a dom0 script's output.
    fn keys(out: &str) -> BTreeMap<String, String> {
        out.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }

    struct Setup {
        domid: u32,
        others: usize,
        xen: String,
    }

    /// Remove the disks backed by the bench image (left by an earlier, interrupted run) and its
    /// loop devices.
    fn cleanup_script(domu: &str) -> String {
        format!(
            r#"for r in $({VDEV_IN_DOM0} -c xen:/// devices {domu} disk | awk -v img={IMG} 'NR > 1 && index($0, img) {{ print $2 }}'); do
  {VDEV_IN_DOM0} -c xen:/// detach {domu} disk "$r" --force || true
done
for l in $(losetup -j {IMG} -O NAME -n); do losetup -d "$l" || true; done
"#
        )
    }

    fn setup(domu: &str) -> Res<Setup> {
        let out = sh(
            &format!(
                r#"set -e
truncate -s {IMG_SIZE} {IMG}
{cleanup}
echo domid=$(xl domid {domu})
echo others=$(xl block-list {domu} | awk 'NR > 1' | wc -l)
echo taken=$(xl block-list {domu} | awk '$1 == {DEVID}' | wc -l)
echo xen=$(xl info | awk '$1 == "xen_version" {{ print $3 }}')
"#,
                cleanup = cleanup_script(domu)
            ),
            Duration::from_secs(600),
        )?;
        let k = keys(&out);
        let get = |n: &str| {
            k.get(n)
                .cloned()
                .ok_or_else(|| format!("setup printed no {n}:\n{out}"))
        };
        if get("taken")? != "0" {
            return Err(format!(
                "{domu} already has a disk {DEV} ({DEVID}) not backed by {IMG}: detach it first"
            ));
        }
        Ok(Setup {
            domid: get("domid")?.parse().map_err(|_| "bad domid".to_string())?,
            others: get("others")?
                .parse()
                .map_err(|_| "bad count".to_string())?,
            xen: get("xen")?,
        })
    }

    /// What one operation measured (see `dom0::run`).
    #[derive(Debug, Default, Clone)]
    struct Sample {
        done: f64,
        exit: f64,
        /// When each part of the condition was met, in order (`frontend:1.20,backend:1.31`).
        parts: String,
        items: Option<usize>,
        counts: Option<Counts>,
    }

    #[derive(Debug, Default, Clone)]
    struct Counts {
        tool: u64,
        scripts: u64,
        script_conns: u64,
        backend: u64,
        frontend: u64,
        other: u64,
    }

    impl Counts {
        fn all(&self) -> u64 {
            self.tool + self.scripts + self.backend + self.frontend + self.other
        }
    }

    struct Ctx {
        domu: String,
        setup: Setup,
    }

    impl Ctx {
        fn args(&self, tpl: &[&str], dev: &str, devid: u32) -> Vec<String> {
            tpl.iter()
                .map(|a| {
                    a.replace("{domu}", &self.domu)
                        .replace("{img}", IMG)
                        .replace("{devid}", &devid.to_string())
                        .replace("{dev}", dev)
                })
                .collect()
        }

        /// One operation in dom0, timed by this binary there.
        fn op(&self, op: &str, items: &str, trace: bool, cmd: &[String]) -> Res<Sample> {
            let script = format!(
                "{SELF_IN_DOM0} dom0 {op} {} {DEVID} {IMG} {items} {} -- {}\n",
                self.setup.domid,
                if trace { "trace" } else { "-" },
                cmd.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
            );
            let out = sh(&script, Duration::from_secs(600))?;
            let line = out
                .lines()
                .find_map(|l| l.strip_prefix("RESULT "))
                .ok_or_else(|| format!("no RESULT from dom0:\n{out}"))?;
            let k: BTreeMap<&str, &str> = line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let num = |n: &str| -> Res<f64> {
                k.get(n)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("RESULT without {n}: {line}"))
            };
            let int = |n: &str| num(n).map(|v| v as u64);
            let counts = if trace {
                Some(Counts {
                    tool: int("tool")?,
                    scripts: int("scripts")?,
                    script_conns: int("script_conns")?,
                    backend: int("backend")?,
                    frontend: int("frontend")?,
                    other: int("other")?,
                })
            } else {
                None
            };
            Ok(Sample {
                done: num("done")?,
                exit: num("exit")?,
                parts: k.get("parts").unwrap_or(&"").to_string(),
                items: k.get("items").and_then(|v| v.parse().ok()),
                counts,
            })
        }
    }

    #[derive(Default)]
    struct Row {
        op: &'static str,
        name: &'static str,
        done: Vec<f64>,
        exit: Vec<f64>,
        counts: Option<Counts>,
    }

    fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    fn min(v: &[f64]) -> f64 {
        v.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(v: &[f64]) -> f64 {
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    fn bench(ctx: &Ctx, rounds: usize) -> Res<Vec<Row>> {
        let n = DISK_CONTENDERS.len();
        let mut attach: Vec<Row> = DISK_CONTENDERS
            .iter()
            .map(|c| Row {
                op: "attach",
                name: c.name,
                ..Row::default()
            })
            .collect();
        let mut detach: Vec<Row> = DISK_CONTENDERS
            .iter()
            .map(|c| Row {
                op: "detach",
                name: c.name,
                ..Row::default()
            })
            .collect();
        // Round 0: traced and untimed (warm-up, request counts). Then `rounds` timed rounds, the
        // contenders in turn, each round starting with the next one.
        for round in 0..=rounds {
            let trace = round == 0;
            for j in 0..n {
                let i = (j + round) % n;
                let c = &DISK_CONTENDERS[i];
                let a = ctx.op("attach", "-", trace, &ctx.args(c.attach, DEV, DEVID))?;
                let d = ctx.op("detach", "-", trace, &ctx.args(c.detach, DEV, DEVID))?;
                let when = if trace {
                    "warm-up".to_string()
                } else {
                    format!("round {round}/{rounds}")
                };
                for (what, x) in [("attach", &a), ("detach", &d)] {
                    eprintln!(
                        "lab bench: {when:<11} {:<28} {what} {:6.2} s, returned {:6.2} s  ({})",
                        c.name, x.done, x.exit, x.parts
                    );
                }
                if trace {
                    attach[i].counts = a.counts;
                    detach[i].counts = d.counts;
                } else {
                    attach[i].done.push(a.done);
                    attach[i].exit.push(a.exit);
                    detach[i].done.push(d.done);
                    detach[i].exit.push(d.exit);
                }
            }
        }
        attach.extend(detach);
        Ok(attach)
    }

    /// Attach `LIST_DISKS` disks with `hotplug=no` (no loop devices; the backends wait in
    /// InitWait), in batches; their refs.
    fn bulk_attach(ctx: &Ctx) -> Res<Vec<String>> {
        let t = Instant::now();
        let mut refs = Vec::new();
        let names: Vec<String> = (1..=LIST_DISKS).map(xvd).collect();
        for batch in names.chunks(20) {
            let out = sh(
                &format!(
                    "set -e\nfor d in {}; do {VDEV_IN_DOM0} -c 'xen:///?hotplug=no' attach {} disk uname=file:{IMG} dev=$d mode=r; done\n",
                    batch.join(" "),
                    ctx.domu
                ),
                Duration::from_secs(1800),
            )?;
            refs.extend(out.split_whitespace().map(str::to_owned));
            eprintln!("lab bench: {} disks attached", refs.len());
        }
        if refs.len() != LIST_DISKS {
            return Err(format!(
                "{} refs printed for {LIST_DISKS} attaches",
                refs.len()
            ));
        }
        eprintln!(
            "lab bench: {LIST_DISKS} disks attached with vdev hotplug=no in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        Ok(refs)
    }

    fn bulk_detach(ctx: &Ctx, refs: &[String]) -> Res<()> {
        let t = Instant::now();
        for batch in refs.chunks(25) {
            sh(
                &format!(
                    "set -e\nfor r in {}; do {VDEV_IN_DOM0} -c 'xen:///?hotplug=no' detach {} disk $r --force; done\n",
                    batch.join(" "),
                    ctx.domu
                ),
                Duration::from_secs(1800),
            )?;
        }
        eprintln!(
            "lab bench: {} disks detached (--force) in {:.0} s",
            refs.len(),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// How many disks the batch rows attach.
    const BATCH: usize = 8;

    /// `vdev apply` of a document with `BATCH` file-backed disks (one command, one batch)
    /// beside `BATCH` `xl block-attach` one after the other, each timed in dom0 from the start
    /// of the first command until the last has exited and every frontend and backend is
    /// Connected (as the attach rows); both cleaned up between rounds.
    fn batch_bench(ctx: &Ctx, rounds: usize) -> Res<Vec<Row>> {
        let devs: Vec<String> = (10..10 + BATCH).map(xvd).collect();
        let mut doc = format!("domains:\n  {}:\n    devices:\n", ctx.domu);
        let mut absent = doc.clone();
        let mut setup = String::from("set -e\n");
        let (mut xl_attach, mut xl_detach) = (String::new(), String::new());
        for (i, d) in devs.iter().enumerate() {
            let img = format!("/root/lab/batch{i}.img");
            setup += &format!("[ -e {img} ] || truncate -s {IMG_SIZE} {img}\n");
            doc += &format!(
                "      - {{type: disk, attrs: {{uname: 'file:{img}', dev: {d}, mode: w}}}}\n"
            );
            absent += &format!("      - {{type: disk, state: absent, attrs: {{dev: {d}}}}}\n");
            xl_attach += &format!(
                "xl block-attach {} 'format=raw, vdev={d}, access=rw, target={img}'\n",
                ctx.domu
            );
            xl_detach += &format!("xl block-detach {} {d}\n", ctx.domu);
        }
        setup += &format!(
            "cat > /root/lab/batch.yaml <<'EOF'\n{doc}EOF\ncat > /root/lab/batch-absent.yaml <<'EOF'\n{absent}EOF\n"
        );
        sh(&setup, Duration::from_secs(120))?;
        let devids: Vec<String> = devs
            .iter()
            .map(|d| {
                xen_devid::devid_from_name(d)
                    .map(|n| n.to_string())
                    .map_err(|e| format!("{d}: {e:?}"))
            })
            .collect::<Res<_>>()?;
        // The waiter (this binary in dom0, started before the clock) sets its watches on both
        // ends of the 8 disks, then says so with a file; the time is from the start of the
        // first command to the later of the exit of the last and the watch event that saw
        // the last of the 16 states reach 4.
        let timed = |body: &str| -> Res<(f64, f64)> {
            let out = sh(
                &format!(
                    r#"set -e
r=/tmp/vdev-bench-ready-$$; w=/tmp/vdev-bench-wait-$$
rm -f $r $w
{SELF_IN_DOM0} dom0 connected {domid} {devids} $r >$w 2>&1 &
wp=$!
while [ ! -e $r ]; do kill -0 $wp 2>/dev/null || {{ cat $w; exit 1; }}; sleep 0.05; done
t0=$(date +%s%N)
{body}
t1=$(date +%s%N)
wait $wp || {{ cat $w; exit 1; }}
done=$(sed -n 's/^DONE_NS=//p' $w)
rm -f $r $w
[ -n "$done" ] || exit 1
t2=$t1
[ "$done" -gt "$t2" ] && t2=$done
echo $((t1 - t0)) $((t2 - t0))
"#,
                    domid = ctx.setup.domid,
                    devids = devids.join(",")
                ),
                Duration::from_secs(600),
            )?;
            // The command's exit and the condition (both ns after the start).
            let ns: Vec<f64> = out
                .lines()
                .last()
                .map(|l| {
                    l.split_whitespace()
                        .filter_map(|w| w.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            match ns[..] {
                [exit, done] => Ok((done / 1e9, exit / 1e9)),
                _ => Err(format!("no times in {out:?}")),
            }
        };
        let apply = format!("{VDEV_IN_DOM0} -c xen:/// apply /root/lab/batch.yaml >/dev/null");
        let unapply =
            format!("{VDEV_IN_DOM0} -c xen:/// apply /root/lab/batch-absent.yaml >/dev/null");
        let mut rows = vec![
            Row {
                op: "attach 8",
                name: "vdev apply (one command)",
                ..Row::default()
            },
            Row {
                op: "attach 8",
                name: REFERENCE,
                ..Row::default()
            },
        ];
        // Round 0 warms up, untimed.
        for round in 0..=rounds {
            let v = timed(&apply)?;
            sh(&unapply, Duration::from_secs(600))?;
            let x = timed(xl_attach.trim_end())?;
            sh(&xl_detach, Duration::from_secs(600))?;
            eprintln!(
                "lab bench: round {round}/{rounds} attach {BATCH}: vdev apply {:.2} s (returned {:.2} s), xl {:.2} s (returned {:.2} s)",
                v.0, v.1, x.0, x.1
            );
            if round > 0 {
                rows[0].done.push(v.0);
                rows[0].exit.push(v.1);
                rows[1].done.push(x.0);
                rows[1].exit.push(x.1);
            }
        }
        Ok(rows)
    }

    fn list_bench(ctx: &Ctx, rounds: usize) -> Res<Vec<Row>> {
        let refs = bulk_attach(ctx)?;
        let r = list_rounds(ctx, rounds);
        // Remove them whatever happened, then check that nothing is left.
        let d = bulk_detach(ctx, &refs);
        let rows = r?;
        d?;
        let d = ctx.setup.domid;
        let out = sh(
            &format!(
                r#"echo left=$(xl block-list {domu} | awk 'NR > 1' | wc -l)
n=0; for p in /local/domain/{d}/device/vbd /local/domain/0/backend/vbd/{d} /libxl/{d}/device/vbd; do xenstore-exists $p && n=$((n+1)); done; echo paths=$n
"#,
                domu = ctx.domu
            ),
            Duration::from_secs(300),
        )?;
        let k = keys(&out);
        let left: usize = k
            .get("left")
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX);
        if left != ctx.setup.others
            || (ctx.setup.others == 0 && k.get("paths").map(String::as_str) != Some("0"))
        {
            return Err(format!(
                "after removing the {LIST_DISKS} disks something is left ({} disks were there before):\n{out}",
                ctx.setup.others
            ));
        }
        eprintln!("lab bench: all {LIST_DISKS} disks gone, nothing left in XenStore");
        Ok(rows)
    }

    fn list_rounds(ctx: &Ctx, rounds: usize) -> Res<Vec<Row>> {
        let want = ctx.setup.others + LIST_DISKS;
        let mut rows: Vec<Row> = LIST_CONTENDERS
            .iter()
            .map(|c| Row {
                op: "list 100",
                name: c.name,
                ..Row::default()
            })
            .collect();
        let n = LIST_CONTENDERS.len();
        for round in 0..=rounds {
            let trace = round == 0;
            for j in 0..n {
                let i = (j + round) % n;
                let c = &LIST_CONTENDERS[i];
                let s = ctx.op("list", &c.items.code(), trace, &ctx.args(c.cmd, DEV, DEVID))?;
                if s.items != Some(want) {
                    return Err(format!(
                        "{} listed {:?} disks, not {want} ({LIST_DISKS} + {} there before)",
                        c.name, s.items, ctx.setup.others
                    ));
                }
                if trace {
                    rows[i].counts = s.counts;
                } else {
                    rows[i].done.push(s.done);
                    rows[i].exit.push(s.exit);
                }
            }
            eprintln!(
                "lab bench: list {} ({} disks each)",
                if trace {
                    "warm-up".to_string()
                } else {
                    format!("round {round}/{rounds}")
                },
                want
            );
        }
        Ok(rows)
    }

    fn table(ctx: &Ctx, rounds: usize, rows: &[Row], load: (String, String)) -> String {
        let mut t = String::new();
        let git = Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(root())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        t += &format!(
            "## Xen lab benchmark: vdev beside xl\n\nIn the lab's Domain-0 (Xen {} under QEMU TCG), domain `{}`; vdev {git}; {rounds} timed rounds per row, contenders interleaved; host load average {} before, {} after.\n\n",
            ctx.setup.xen, ctx.domu, load.0, load.1
        );
        t += "| operation | contender | median s | min s | max s | command returned, median s | xl / this (median) | XenStore requests: tool / scripts (processes) / kernels / all |\n";
        t += "|---|---|---:|---:|---:|---:|---:|---|\n";
        for r in rows {
            let reference = rows
                .iter()
                .find(|x| x.op == r.op && x.name == REFERENCE)
                .map(|x| median(&x.done));
            let m = median(&r.done);
            let ratio = reference
                .map(|x| format!("{:.2}", x / m))
                .unwrap_or_else(|| "-".into());
            let req = r
                .counts
                .as_ref()
                .map(|c| {
                    format!(
                        "{} / {} ({}) / {} / {}",
                        c.tool,
                        c.scripts,
                        c.script_conns,
                        c.backend + c.frontend,
                        c.all()
                    )
                })
                .unwrap_or_else(|| "-".into());
            t += &format!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {ratio} | {req} |\n",
                r.op,
                r.name,
                m,
                min(&r.done),
                max(&r.done),
                median(&r.exit),
            );
        }
        t += &format!(
            r#"
- attach: from the start of the command until the frontend's and the backend's `state` are both 4 (Connected), on `{IMG}` ({IMG_SIZE}, file-backed, `{DEV}`).
- detach: from the start of the command until the frontend and backend directories and `/libxl/<domid>/device/vbd/{DEVID}` are all gone and no loop device is bound to the image.
- list 100: the command's run time with {LIST_DISKS} disks attached (by vdev with `hotplug=no`: backends wait in InitWait, no loop devices){others}.
- The waiter (this bench, in dom0) sees XenStore conditions through watches (resolution: one watch-event delivery, then one read to confirm) and polls loop devices in sysfs every 5 ms; its own requests are not counted.
- Requests: the `IN` lines of xenstored's trace (`xenstore-control log`) between two marker reads, in one traced warm-up run per row (not timed). tool = the command's own connection(s) (the first new connection); scripts = every later new connection (hotplug script processes: one per `xenstore-*` call); kernels = the already open connections of the backend (dom0, blkback) and the frontend (the domU, blkfront); all = those plus any other open connection.
"#,
            others = if ctx.setup.others > 0 {
                format!(", plus {} disks already there", ctx.setup.others)
            } else {
                String::new()
            }
        );
        t += &format!("- attach 8: one `vdev apply` of a document with {BATCH} file-backed disks ({IMG_SIZE} each), or {BATCH} `xl block-attach` one after the other, timed in dom0 (`date +%s%N`) from the start of the first command to the later of the exit of the last and the moment all {BATCH} frontends and backends are Connected (4), seen by a waiter (this bench) through watches set before the clock starts. Neither command waits for Connected itself: vdev returns once every backend is in InitWait or later, xl once its hotplug script has run.\n");
        t += "- Goal (the issue): xl / this above 1 on every vdev row, and at least 3 on attach; at least 10 on attach 8.\n";
        t
    }

    fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    pub fn main() -> i32 {
        let missing: Vec<&str> = ["XENSTORED_PATH", "XENLAB_DIR", "XENLAB_DOMU"]
            .into_iter()
            .filter(|v| std::env::var_os(v).is_none_or(|x| x.is_empty()))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "this benchmark runs in the Xen lab, and {} is not set. Start the lab, then run it again:\n\n  set -a; eval \"$(tests/xenlab/xenlab up)\"; set +a\n  cargo bench -p vdev-driver-xen --bench lab\n  tests/xenlab/xenlab down",
                missing.join(", ")
            );
            return 2;
        }
        if !Command::new(xenlab())
            .arg("status")
            .status()
            .is_ok_and(|s| s.success())
        {
            eprintln!(
                "the Xen lab in {} does not answer (tests/xenlab/xenlab status); start it with: set -a; eval \"$(tests/xenlab/xenlab up)\"; set +a",
                std::env::var("XENLAB_DIR").unwrap_or_default()
            );
            return 2;
        }
        let rounds: usize = match std::env::var("VDEV_BENCH_ROUNDS") {
            Err(_) => 5,
            Ok(v) => match v.parse() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!("VDEV_BENCH_ROUNDS={v}: not a positive number");
                    return 2;
                }
            },
        };
        let domu = std::env::var("XENLAB_DOMU").unwrap();
        let load_before = loadavg();
        let started = Instant::now();
        if let Err(e) = build_and_copy() {
            eprintln!("lab bench: {e}");
            return 1;
        }
        let setup = match setup(&domu) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("lab bench: {e}");
                return 1;
            }
        };
        let ctx = Ctx { domu, setup };
        // VDEV_BENCH_LIST=0 leaves the listing rows out (they take most of the run).
        let list = std::env::var("VDEV_BENCH_LIST").map_or(true, |v| v != "0");
        // VDEV_BENCH_BATCH=0 leaves the batch rows out; VDEV_BENCH_ONLY_BATCH=1 runs only them.
        let batch = std::env::var("VDEV_BENCH_BATCH").map_or(true, |v| v != "0");
        let only_batch = std::env::var("VDEV_BENCH_ONLY_BATCH").is_ok_and(|v| v == "1");
        let result = if only_batch {
            Ok(Vec::new())
        } else {
            bench(&ctx, rounds)
        }
        .and_then(|mut rows| {
            if batch || only_batch {
                rows.extend(batch_bench(&ctx, rounds)?);
            }
            if list && !only_batch {
                rows.extend(list_bench(&ctx, rounds)?);
            }
            Ok(rows)
        });
        let rows = match result {
            Ok(r) => r,
            Err(e) => {
                eprintln!("lab bench: {e}\nlab bench: cleaning up");
                if let Err(c) = sh(&cleanup_script(&ctx.domu), Duration::from_secs(1800)) {
                    eprintln!("lab bench: cleaning up failed too: {c}");
                }
                return 1;
            }
        };
        let md = table(&ctx, rounds, &rows, (load_before, loadavg()));
        println!("{md}");
        let file = target_dir().join("xen-lab-bench.md");
        match std::fs::write(&file, &md) {
            Ok(()) => eprintln!(
                "lab bench: written to {} ({:.0} s in all)",
                file.display(),
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                eprintln!("lab bench: cannot write {}: {e}", file.display());
                return 1;
            }
        }
        0
    }
}

/// The dom0 side: one operation, timed, with a minimal XenStore client of its own.
mod dom0 {
    use std::collections::{HashMap, VecDeque};
    use std::fs::File;
    use std::io::{self, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::process::{Command, ExitStatus, Stdio};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use super::*;

    const XS_CONTROL: u32 = 0;
    const XS_READ: u32 = 2;
    const XS_WATCH: u32 = 4;
    const XS_WATCH_EVENT: u32 = 15;
    const XS_ERROR: u32 = 16;

    /// How long one operation may take.
    const OP_TIMEOUT: Duration = Duration::from_secs(240);
    /// How often loop devices are looked at during a detach.
    const LOOP_POLL: Duration = Duration::from_millis(5);

    type Res<T> = Result<T, String>;

    fn io(what: &str) -> impl Fn(io::Error) -> String + '_ {
        move |e| format!("{what}: {e}")
    }

    /// One connection to xenstored: requests one at a time, watch events queued with the instant
    /// they arrived.
    struct Xs {
        sock: UnixStream,
        buf: Vec<u8>,
        next: u32,
        events: VecDeque<(Instant, String)>,
    }

    fn first_field(p: &[u8]) -> String {
        let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
        String::from_utf8_lossy(&p[..end]).into_owned()
    }

    impl Xs {
        fn connect() -> Res<Xs> {
            let path = std::env::var_os("XENSTORED_PATH")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/run/xenstored/socket".into());
            Ok(Xs {
                sock: UnixStream::connect(&path).map_err(io("connecting to xenstored"))?,
                buf: Vec::new(),
                next: 0,
                events: VecDeque::new(),
            })
        }

        /// The next message, or `None` when none came within `timeout`.
        fn recv(&mut self, timeout: Duration) -> Res<Option<(u32, u32, Vec<u8>)>> {
            let deadline = Instant::now() + timeout;
            loop {
                if self.buf.len() >= 16 {
                    let word =
                        |i: usize| u32::from_le_bytes(self.buf[i..i + 4].try_into().unwrap());
                    let (ty, id, len) = (word(0), word(4), word(12) as usize);
                    if self.buf.len() >= 16 + len {
                        let payload = self.buf[16..16 + len].to_vec();
                        self.buf.drain(..16 + len);
                        return Ok(Some((ty, id, payload)));
                    }
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left < Duration::from_micros(10) {
                    return Ok(None);
                }
                self.sock
                    .set_read_timeout(Some(left))
                    .map_err(io("set_read_timeout"))?;
                let mut chunk = [0u8; 8192];
                match self.sock.read(&mut chunk) {
                    Ok(0) => return Err("xenstored closed the connection".into()),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Ok(None)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("reading from xenstored: {e}")),
                }
            }
        }

        /// A request and its reply: `Err(code)` for an XS_ERROR reply.
        fn request(&mut self, ty: u32, payload: &[u8]) -> Res<Result<Vec<u8>, String>> {
            self.next += 1;
            let id = self.next;
            let mut m = Vec::with_capacity(16 + payload.len());
            for v in [ty, id, 0, payload.len() as u32] {
                m.extend_from_slice(&v.to_le_bytes());
            }
            m.extend_from_slice(payload);
            self.sock
                .write_all(&m)
                .map_err(io("writing to xenstored"))?;
            loop {
                match self.recv(Duration::from_secs(30))? {
                    None => return Err(format!("xenstored did not answer request type {ty}")),
                    Some((XS_WATCH_EVENT, _, p)) => {
                        self.events.push_back((Instant::now(), first_field(&p)))
                    }
                    Some((t, rid, p)) if rid == id => {
                        return Ok(if t == XS_ERROR {
                            Err(first_field(&p))
                        } else {
                            Ok(p)
                        })
                    }
                    Some(_) => {}
                }
            }
        }

        fn read(&mut self, path: &str) -> Res<Option<String>> {
            let mut p = path.as_bytes().to_vec();
            p.push(0);
            match self.request(XS_READ, &p)? {
                Ok(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
                Err(e) if e == "ENOENT" => Ok(None),
                Err(e) => Err(format!("read {path}: {e}")),
            }
        }

        fn strings(&mut self, ty: u32, parts: &[&str]) -> Res<()> {
            let mut p = Vec::new();
            for s in parts {
                p.extend_from_slice(s.as_bytes());
                p.push(0);
            }
            self.request(ty, &p)?
                .map(|_| ())
                .map_err(|e| format!("request {ty} {parts:?}: {e}"))
        }

        /// Set watches, then forget their initial events.
        fn watch(&mut self, paths: &[&str]) -> Res<()> {
            for p in paths {
                self.strings(XS_WATCH, &[p, "vdev-bench"])?;
            }
            // The initial events follow the replies; one more round trip lets them arrive.
            self.read("/")?;
            while self.recv(Duration::from_millis(20))?.is_some() {}
            self.events.clear();
            Ok(())
        }

        /// The next watch event (the instant it arrived, its path), waiting at most `timeout`.
        fn event(&mut self, timeout: Duration) -> Res<Option<(Instant, String)>> {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            match self.recv(timeout)? {
                Some((XS_WATCH_EVENT, _, p)) => Ok(Some((Instant::now(), first_field(&p)))),
                _ => Ok(None),
            }
        }
    }

    /// Whether a loop device is bound to `img` (a canonical path).
    fn loop_bound(img: &str) -> bool {
        let Ok(dir) = std::fs::read_dir("/sys/block") else {
            return false;
        };
        dir.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
            .any(|e| {
                std::fs::read_to_string(e.path().join("loop/backing_file"))
                    .is_ok_and(|b| b.trim_end().trim_end_matches(" (deleted)") == img)
            })
    }

    /// Per-connection request counts from xenstored's trace, between the two marker reads.
    #[derive(Default)]
    struct Conn {
        new: bool,
        reqs: u64,
        relative_backend: bool,
        relative_device: bool,
    }

    fn count_trace(text: &str, start: &str, end: &str) -> Res<String> {
        let mut conns: Vec<Conn> = Vec::new();
        let mut live: HashMap<&str, usize> = HashMap::new();
        let mut waiter: Option<&str> = None;
        let mut waiter_reqs = 0u64;
        let mut ended = false;
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let (Some(kind), Some(ptr)) = (w.next(), w.next()) else {
                continue;
            };
            if waiter.is_none() {
                if kind == "IN" && line.contains(&format!("({start} )")) {
                    waiter = Some(ptr);
                }
                continue;
            }
            match kind {
                "CREATE" if ptr == "connection" => {
                    if let Some(p) = w.next() {
                        conns.push(Conn {
                            new: true,
                            ..Conn::default()
                        });
                        live.insert(p, conns.len() - 1);
                    }
                }
                "DESTROY" if ptr == "connection" => {
                    if let Some(p) = w.next() {
                        live.remove(p);
                    }
                }
                "IN" => {
                    if Some(ptr) == waiter {
                        if line.contains(&format!("({end} )")) {
                            ended = true;
                            break;
                        }
                        waiter_reqs += 1;
                        continue;
                    }
                    let i = *live.entry(ptr).or_insert_with(|| {
                        conns.push(Conn::default());
                        conns.len() - 1
                    });
                    let c = &mut conns[i];
                    c.reqs += 1;
                    let arg = line.split_once(" (").map(|x| x.1).unwrap_or("");
                    c.relative_backend |= arg.starts_with("backend/");
                    c.relative_device |= arg.starts_with("device/");
                }
                _ => {}
            }
        }
        if waiter.is_none() || !ended {
            return Err("the trace lacks the start or end marker".into());
        }
        let mut new = conns.iter().filter(|c| c.new);
        let tool = new.next();
        let scripts: Vec<&Conn> = new.collect();
        let old = || conns.iter().filter(|c| !c.new);
        Ok(format!(
            "tool={} scripts={} script_conns={} backend={} frontend={} other={} waiter={waiter_reqs}",
            tool.map_or(0, |c| c.reqs),
            scripts.iter().map(|c| c.reqs).sum::<u64>(),
            scripts.len(),
            old().filter(|c| c.relative_backend).map(|c| c.reqs).sum::<u64>(),
            old()
                .filter(|c| !c.relative_backend && c.relative_device)
                .map(|c| c.reqs)
                .sum::<u64>(),
            old()
                .filter(|c| !c.relative_backend && !c.relative_device)
                .map(|c| c.reqs)
                .sum::<u64>(),
        ))
    }

    pub fn main(args: &[String]) -> i32 {
        if args.first().map(String::as_str) == Some("connected") {
            return match connected(&args[1..]) {
                Ok(line) => {
                    println!("{line}");
                    0
                }
                Err(e) => {
                    println!("FAILED {e}");
                    1
                }
            };
        }
        match run(args) {
            Ok(line) => {
                println!("RESULT {line}");
                0
            }
            Err(e) => {
                println!("FAILED {e}");
                1
            }
        }
    }

    struct Child {
        wait: Option<JoinHandle<(Instant, io::Result<ExitStatus>)>>,
        exited: Option<(Instant, ExitStatus)>,
        out: String,
        err: String,
    }

    impl Child {
        fn poll(&mut self) -> Res<()> {
            if self.wait.as_ref().is_some_and(|h| h.is_finished()) {
                let (at, st) = self.wait.take().unwrap().join().unwrap();
                let st = st.map_err(io("waiting for the command"))?;
                if !st.success() {
                    return Err(format!(
                        "the command failed ({st}): {}{}",
                        std::fs::read_to_string(&self.out).unwrap_or_default(),
                        std::fs::read_to_string(&self.err).unwrap_or_default()
                    ));
                }
                self.exited = Some((at, st));
            }
            Ok(())
        }
    }

    /// Turns xenstored's trace off and removes the temporary files however `run` ends.
    struct Tidy {
        trace_on: bool,
        files: Vec<String>,
    }

    impl Drop for Tidy {
        fn drop(&mut self) {
            if self.trace_on {
                if let Ok(mut xs) = Xs::connect() {
                    let _ = xs.strings(XS_CONTROL, &["log", "off"]);
                }
            }
            for f in &self.files {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    /// `connected DOMID DEVIDS READY`: the devices `DEVIDS` (comma-separated) of domain DOMID
    /// must not exist yet; with watches set on both ends' `state`, create the file READY, then
    /// wait until every frontend and backend `state` is 4 (Connected) and print
    /// `DONE_NS=` the wall-clock time (ns since the epoch, as `date +%s%N`) at which the watch
    /// event that completed it arrived.
    fn connected(args: &[String]) -> Res<String> {
        let usage = "usage: lab dom0 connected DOMID DEVID,DEVID,... READYFILE";
        let [domid, devids, ready] = args else {
            return Err(usage.into());
        };
        let mut xs = Xs::connect()?;
        let mut want: Vec<String> = Vec::new();
        for d in devids.split(',') {
            let fe = format!("/local/domain/{domid}/device/vbd/{d}");
            let be = format!("/local/domain/0/backend/vbd/{domid}/{d}");
            if xs.read(&fe)?.is_some() || xs.read(&be)?.is_some() {
                return Err(format!("{fe} or {be} exists before attach"));
            }
            want.push(format!("{fe}/state"));
            want.push(format!("{be}/state"));
        }
        let paths: Vec<&str> = want.iter().map(String::as_str).collect();
        xs.watch(&paths)?;
        File::create(ready).map_err(io(ready))?;
        let t0 = Instant::now();
        let mut left: Vec<&str> = paths.clone();
        loop {
            if t0.elapsed() > OP_TIMEOUT {
                return Err(format!("not Connected after {OP_TIMEOUT:?}: {left:?}"));
            }
            let Some((_, path)) = xs.event(Duration::from_millis(200))? else {
                continue;
            };
            let now = std::time::SystemTime::now();
            if !left.contains(&path.as_str()) {
                continue;
            }
            if xs.read(&path)?.as_deref() == Some("4") {
                left.retain(|p| *p != path);
            }
            if left.is_empty() {
                let ns = now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|e| format!("clock: {e}"))?
                    .as_nanos();
                return Ok(format!("DONE_NS={ns}"));
            }
        }
    }

    /// `OP DOMID DEVID IMG ITEMS TRACE -- CMD...`: run CMD and time OP (`attach`, `detach`,
    /// `list`); print `done=` (seconds to the condition) `exit=` (seconds to the command's exit),
    /// `items=` (list), and with TRACE=`trace` the request counts.
    fn run(args: &[String]) -> Res<String> {
        let usage = "usage: lab dom0 attach|detach|list DOMID DEVID IMG ITEMS trace|- -- CMD...";
        let [op, domid, devid, img, items, trace, dashes, cmd @ ..] = args else {
            return Err(usage.into());
        };
        if dashes != "--" || cmd.is_empty() {
            return Err(usage.into());
        }
        let img = std::fs::canonicalize(img)
            .map_err(io(img))?
            .to_string_lossy()
            .into_owned();
        let fe = format!("/local/domain/{domid}/device/vbd/{devid}");
        let be = format!("/local/domain/0/backend/vbd/{domid}/{devid}");
        let rec = format!("/libxl/{domid}/device/vbd/{devid}");
        let (fe_state, be_state) = (format!("{fe}/state"), format!("{be}/state"));
        let mut xs = Xs::connect()?;
        match op.as_str() {
            "attach" => {
                if xs.read(&fe)?.is_some() || xs.read(&be)?.is_some() {
                    return Err(format!("{fe} or {be} exists before attach"));
                }
                xs.watch(&[&fe_state, &be_state])?;
            }
            "detach" => {
                for p in [&fe, &be, &rec] {
                    if xs.read(p)?.is_none() {
                        return Err(format!("{p} is missing before detach"));
                    }
                }
                if !loop_bound(&img) {
                    return Err(format!("no loop device is bound to {img} before detach"));
                }
                xs.watch(&[&fe, &be, &rec])?;
            }
            "list" => {}
            _ => return Err(usage.into()),
        }
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let out = format!("/tmp/vdev-bench-{nonce}.out");
        let err = format!("/tmp/vdev-bench-{nonce}.err");
        let trace_file = (trace == "trace").then(|| format!("/tmp/vdev-bench-trace-{nonce}.log"));
        let mut tidy = Tidy {
            trace_on: trace_file.is_some(),
            files: [&out, &err]
                .into_iter()
                .chain(&trace_file)
                .cloned()
                .collect(),
        };
        if let Some(f) = &trace_file {
            xs.strings(XS_CONTROL, &["logfile", f])?;
            xs.strings(XS_CONTROL, &["log", "on"])?;
        }
        let (start, end) = (
            format!("/vdev-bench/start-{nonce}"),
            format!("/vdev-bench/end-{nonce}"),
        );
        xs.read(&start)?;

        let t0 = Instant::now();
        let mut child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(File::create(&out).map_err(io(&out))?)
            .stderr(File::create(&err).map_err(io(&err))?)
            .spawn()
            .map_err(io(&cmd[0]))?;
        let mut child = Child {
            wait: Some(std::thread::spawn(move || {
                let st = child.wait();
                (Instant::now(), st)
            })),
            exited: None,
            out,
            err,
        };
        // When each part of the condition was met (for the progress lines).
        let mut parts: Vec<(&str, Instant)> = Vec::new();
        let done: Instant = match op.as_str() {
            "attach" => {
                let (mut f, mut b) = (None, None);
                loop {
                    child.poll()?;
                    if t0.elapsed() > OP_TIMEOUT {
                        return Err(format!(
                            "not Connected after {OP_TIMEOUT:?}: frontend {f:?}, backend {b:?}"
                        ));
                    }
                    let Some((at, path)) = xs.event(Duration::from_millis(50))? else {
                        continue;
                    };
                    let (value, name) = if path == fe_state {
                        (&mut f, "frontend")
                    } else if path == be_state {
                        (&mut b, "backend")
                    } else {
                        continue;
                    };
                    *value = xs.read(&path)?;
                    if value.as_deref() == Some("4") && !parts.iter().any(|p| p.0 == name) {
                        parts.push((name, at));
                    }
                    if f.as_deref() == Some("4") && b.as_deref() == Some("4") {
                        break at;
                    }
                }
            }
            "detach" => {
                let dirs = [fe.as_str(), be.as_str(), rec.as_str()];
                let mut gone: [Option<Instant>; 3] = [None; 3];
                let mut loop_gone: Option<Instant> = None;
                let mut last_look = t0;
                loop {
                    child.poll()?;
                    if t0.elapsed() > OP_TIMEOUT {
                        return Err(format!("not gone after {OP_TIMEOUT:?}: {dirs:?} gone at {gone:?}, loop released at {loop_gone:?}"));
                    }
                    if loop_gone.is_none() && last_look.elapsed() >= LOOP_POLL {
                        last_look = Instant::now();
                        if !loop_bound(&img) {
                            loop_gone = Some(last_look);
                        }
                    }
                    if let (Some(l), [Some(a), Some(b), Some(c)]) = (loop_gone, gone) {
                        parts = vec![("frontend", a), ("backend", b), ("record", c), ("loop", l)];
                        parts.sort_by_key(|p| p.1);
                        break l.max(a).max(b).max(c);
                    }
                    let Some((at, path)) = xs.event(LOOP_POLL)? else {
                        continue;
                    };
                    for (k, d) in dirs.iter().enumerate() {
                        // The directory itself, or a parent, was removed (removing a parent
                        // fires the watch with the watched path).
                        if gone[k].is_none()
                            && (path == *d || d.starts_with(&format!("{path}/")))
                            && xs.read(d)?.is_none()
                        {
                            gone[k] = Some(at);
                        }
                    }
                }
            }
            _ => {
                while child.exited.is_none() {
                    child.poll()?;
                    if t0.elapsed() > OP_TIMEOUT {
                        return Err(format!("the command did not end in {OP_TIMEOUT:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                child.exited.unwrap().0
            }
        };
        while child.exited.is_none() {
            child.poll()?;
            if t0.elapsed() > OP_TIMEOUT {
                return Err(format!("the command did not end in {OP_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let exit = child.exited.unwrap().0;
        xs.read(&end)?;
        let mut line = format!(
            "op={op} done={:.6} exit={:.6} parts={}",
            secs(done - t0),
            secs(exit - t0),
            parts
                .iter()
                .map(|(n, at)| format!("{n}:{:.2}", secs(*at - t0)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let output = std::fs::read_to_string(&child.out).unwrap_or_default();
        if let Some(kind) = Items::parse(items) {
            line += &format!(" items={}", kind.count(&output));
        }
        if let Some(f) = &trace_file {
            xs.strings(XS_CONTROL, &["log", "off"])?;
            tidy.trace_on = false;
            let text = std::fs::read_to_string(f).map_err(io(f))?;
            line += " ";
            line += &count_trace(&text, &start, &end)?;
        }
        Ok(line)
    }
}
