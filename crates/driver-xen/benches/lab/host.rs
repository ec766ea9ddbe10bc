//! The host side of the Xen lab benchmark (see `lab.rs`): builds, copies, drives the rounds,
//! prints the table.

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
    vdev_conformance::xenlab::script()
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
        doc +=
            &format!("      - {{type: disk, attrs: {{uname: 'file:{img}', dev: {d}, mode: w}}}}\n");
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
    let unapply = format!("{VDEV_IN_DOM0} -c xen:/// apply /root/lab/batch-absent.yaml >/dev/null");
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
