//! End to end inside the lab's Domain-0, where the driver does the hotplug work itself: the
//! `vdev` command (built with the xen feature) attaches a file-backed disk (natively: loop device
//! and `physical-device` written with the device; and with `hotplug=script`: libxl's block script
//! run), both ends reach Connected (4), and the disk is in libxl's stored configuration (`xl list
//! -l`); detach frees the loop device and every node and takes the disk out of it. `xl` detaches
//! what vdev attached, and the other way round. A NIC gets its bridge port from `vif-bridge`.
//! Refusals leave XenStore and the loop devices as they were.

mod common;

use std::process::Command;

use common::{disk_dump, dom0, dom0_within, domu, lab, uri, xs_ls, SERIAL};
use vdev_driver_xen as _;

/// Build the `vdev` command with the xen feature (or take the one `VDEV_TEST_XEN_VDEV` names);
/// its path (target/debug/vdev).
fn build_vdev() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_vdev_now).clone()
}

fn build_vdev_now() -> std::path::PathBuf {
    // The test command builds it before the lab's tests start (they run beside other cargo
    // commands, whose lock a build here would wait for) and says where.
    if let Some(p) = std::env::var_os("VDEV_TEST_XEN_VDEV") {
        return p.into();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "-p",
            "vdev-cli",
            "--features",
            "xen",
            "--bin",
            "vdev",
        ])
        .current_dir(&root)
        .status()
        .expect("cargo build");
    assert!(st.success(), "building vdev with the xen feature failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug/vdev")
}

/// A copy of the `vdev` command to send into dom0.
fn vdev_binary() -> std::path::PathBuf {
    let bin = build_vdev();
    // A stripped copy is 6x smaller to send.
    let small = std::env::temp_dir().join(format!("vdev-xen-e2e-{}", std::process::id()));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&small)
        .arg(&bin)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if stripped {
        small
    } else {
        bin
    }
}

/// Copy the `vdev` command into dom0 as /root/vdev (once per test run).
fn put_vdev() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(put_vdev_now);
}

fn put_vdev_now() {
    let bin = vdev_binary();
    let put = Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/xenlab/xenlab"),
    )
    .args(["put", bin.to_str().unwrap(), "/root/vdev"])
    .status()
    .expect("xenlab put");
    if bin.starts_with(std::env::temp_dir()) {
        let _ = std::fs::remove_file(&bin);
    }
    assert!(put.success(), "xenlab put failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vdev_in_dom0_runs_hotplug_and_connects_records_it_then_detach_frees_the_loop() {
    let _turn = SERIAL.lock().await;
    if lab().is_none() {
        return;
    }
    put_vdev();
    let d = domu();
    let img = "/root/lab/vdev-e2e.img";
    let (ok, out) = dom0(&format!(
        r#"set -e
truncate -s 16M {img}
id=$(xl domid {d})
t0=$(date +%s%N)
r=$(/root/vdev -c xen:/// attach {d} disk uname=file:{img} dev=xvdh mode=w)
t1=$(date +%s%N)
for i in $(seq 1 300); do
  fe=$(xenstore-read /local/domain/$id/device/vbd/$r/state); be=$(xenstore-read /local/domain/0/backend/vbd/$id/$r/state)
  [ "$fe$be" = 44 ] && break; sleep 0.1
done
t2=$(date +%s%N)
echo "ref=$r states=$fe/$be attach_ms=$(( (t1-t0)/1000000 )) connected_ms=$(( (t2-t0)/1000000 ))"
echo "loop=$(losetup -j {img} -O NAME -n)"
echo "hotplug-status=$(xenstore-read /local/domain/0/backend/vbd/$id/$r/hotplug-status)"
xl block-list {d} | grep -q "^$r " && echo "xl-lists-it"
echo "recorded=$(xl list -l {d} | grep -c '"pdev_path": "{img}"')"
t0=$(date +%s%N)
/root/vdev -c xen:/// detach {d} disk $r
t1=$(date +%s%N)
echo "detach_ms=$(( (t1-t0)/1000000 ))"
echo "recorded-after=$(xl list -l {d} | grep -c '"pdev_path": "{img}"')"
echo "loop-after=$(losetup -j {img} -O NAME -n)"
xenstore-ls /local/domain/$id/device/vbd >/dev/null 2>&1 && echo "frontend-left"
xenstore-ls /local/domain/0/backend/vbd >/dev/null 2>&1 && echo "backend-left"
xenstore-ls /libxl/$id/device/vbd >/dev/null 2>&1 && echo "record-left"
t0=$(date +%s%N)
xl block-attach {d} "format=raw, vdev=xvdh, access=rw, target={img}"
t1=$(date +%s%N)
xl block-detach {d} xvdh
t2=$(date +%s%N)
echo "xl_attach_ms=$(( (t1-t0)/1000000 )) xl_detach_ms=$(( (t2-t1)/1000000 ))"
rm -f {img}
"#
    ));
    eprintln!("{out}");
    assert!(ok, "the dom0 script failed: {out}");
    assert!(out.contains("ref=51824 states=4/4"), "not connected: {out}");
    assert!(out.contains("loop=/dev/loop"), "no loop device: {out}");
    assert!(out.contains("hotplug-status=connected"), "{out}");
    assert!(
        out.contains("xl-lists-it"),
        "xl block-list does not list it: {out}"
    );
    // Recorded in libxl's stored configuration by vdev inside Domain-0 (written in this
    // process there), as `xl list -l` shows it, and gone from it with the detach.
    assert!(
        out.contains("recorded=1\n"),
        "xl list -l does not show the disk: {out}"
    );
    assert!(
        out.contains("recorded-after=0\n"),
        "xl list -l still shows the disk after the detach: {out}"
    );
    assert!(
        out.contains("loop-after=\n"),
        "the loop device is still there: {out}"
    );
    for left in ["frontend-left", "backend-left", "record-left"] {
        assert!(!out.contains(left), "{left}: {out}");
    }
}

/// A shell function for dom0 scripts: `wait44 FRONTEND_STATE_PATH BACKEND_STATE_PATH` waits (up
/// to 60 s) until both read 4 and prints `states=F/B`.
const WAIT44: &str = r#"wait44() {
  local i f b
  for i in $(seq 1 600); do
    f=$(xenstore-read "$1" 2>/dev/null || true); b=$(xenstore-read "$2" 2>/dev/null || true)
    [ "$f$b" = 44 ] && break; sleep 0.1
  done
  echo "states=$f/$b"
}
gone() {  # prints what is left of a device: frontend, backend, libxl record
  xenstore-read "$1" >/dev/null 2>&1 && echo "frontend-left"
  xenstore-read "$2" >/dev/null 2>&1 && echo "backend-left"
  xenstore-read "$3" >/dev/null 2>&1 && echo "record-left"
  true
}
"#;

fn assert_clean(out: &str) {
    for left in ["frontend-left", "backend-left", "record-left"] {
        assert!(!out.contains(left), "{left}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hotplug_script_libxls_block_script_does_the_work() {
    let _turn = SERIAL.lock().await;
    if lab().is_none() {
        return;
    }
    put_vdev();
    let d = domu();
    let img = "/root/lab/vdev-script.img";
    let (ok, out) = dom0(&format!(
        r#"set -e
{WAIT44}
truncate -s 16M {img}
id=$(xl domid {d})
r=$(/root/vdev -c 'xen:///?hotplug=script' attach {d} disk uname=file:{img} dev=xvdk mode=r)
be=/local/domain/0/backend/vbd/$id/$r
wait44 /local/domain/$id/device/vbd/$r/state $be/state
echo "hotplug-status=$(xenstore-read $be/hotplug-status)"
echo "loop=$(losetup -j {img} -O NAME,RO -n)"
/root/vdev -c 'xen:///?hotplug=script' detach {d} disk $r
echo "loop-after=$(losetup -j {img} -O NAME -n)"
gone /local/domain/$id/device/vbd/$r $be /libxl/$id/device/vbd/$r
rm -f {img}
"#
    ));
    assert!(ok, "the dom0 script failed: {out}");
    assert!(out.contains("states=4/4"), "not connected: {out}");
    assert!(out.contains("hotplug-status=connected"), "{out}");
    // mode=r: the block script makes a read-only loop device.
    assert!(
        out.lines()
            .any(|l| l.starts_with("loop=/dev/loop") && l.trim_end().ends_with('1')),
        "no read-only loop device: {out}"
    );
    assert!(
        out.contains("loop-after=\n"),
        "the loop device is still there: {out}"
    );
    assert_clean(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xl_detaches_what_vdev_attached_and_vdev_what_xl_attached_loops_freed() {
    let _turn = SERIAL.lock().await;
    if lab().is_none() {
        return;
    }
    put_vdev();
    let d = domu();
    let img = "/root/lab/vdev-interop.img";
    let (ok, out) = dom0(&format!(
        r#"set -e
{WAIT44}
truncate -s 16M {img}
id=$(xl domid {d})
r=$(/root/vdev -c xen:/// attach {d} disk uname=file:{img} dev=xvdl)
be=/local/domain/0/backend/vbd/$id/$r
wait44 /local/domain/$id/device/vbd/$r/state $be/state
loop=$(xenstore-read $be/node)
echo "pd=$(xenstore-read $be/physical-device) stat=$(stat -L -c %t:%T $loop)"
xl block-list {d} | grep -q "^$r " && echo "xl-lists-it"
xl block-detach {d} xvdl
echo "loop-after-xl=$(losetup -j {img} -O NAME -n)"
gone /local/domain/$id/device/vbd/$r $be /libxl/$id/device/vbd/$r
xl block-attach {d} "format=raw, vdev=xvdl, access=rw, target={img}"
wait44 /local/domain/$id/device/vbd/$r/state $be/state
/root/vdev -c xen:/// devices {d} disk | grep -qw "$r" && echo "vdev-lists-it"
/root/vdev -c xen:/// detach {d} disk $r
echo "loop-after-vdev=$(losetup -j {img} -O NAME -n)"
gone /local/domain/$id/device/vbd/$r $be /libxl/$id/device/vbd/$r
rm -f {img}
"#
    ));
    assert!(ok, "the dom0 script failed: {out}");
    assert_eq!(out.matches("states=4/4").count(), 2, "not connected: {out}");
    let pd = out.lines().find(|l| l.starts_with("pd=")).unwrap_or("");
    let (a, b) = pd.split_once(" stat=").unwrap_or(("", "-"));
    assert_eq!(
        a.trim_start_matches("pd="),
        b,
        "physical-device is not the loop device's number: {out}"
    );
    assert!(out.contains("xl-lists-it"), "{out}");
    assert!(out.contains("vdev-lists-it"), "{out}");
    assert!(out.contains("loop-after-xl=\n"), "xl left the loop: {out}");
    assert!(
        out.contains("loop-after-vdev=\n"),
        "vdev left the loop: {out}"
    );
    assert_clean(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nic_gets_its_bridge_port_from_vif_bridge_and_loses_it_on_detach() {
    let _turn = SERIAL.lock().await;
    if lab().is_none() {
        return;
    }
    put_vdev();
    let d = domu();
    let (ok, out) = dom0(&format!(
        r#"set -e
{WAIT44}
id=$(xl domid {d})
r=$(/root/vdev -c xen:/// attach {d} network bridge=xenbr0)
be=/local/domain/0/backend/vif/$id/$r
wait44 /local/domain/$id/device/vif/$r/state $be/state
echo "hotplug-status=$(xenstore-read $be/hotplug-status)"
ip -br link show master xenbr0 | grep -q "^vif$id.$r" && echo "in-bridge"
/root/vdev -c xen:/// detach {d} network $r
ip link show vif$id.$r >/dev/null 2>&1 && echo "iface-left"
gone /local/domain/$id/device/vif/$r $be /libxl/$id/device/vif/$r
"#
    ));
    assert!(ok, "the dom0 script failed: {out}");
    assert!(out.contains("states=4/4"), "not connected: {out}");
    assert!(out.contains("hotplug-status=connected"), "{out}");
    assert!(out.contains("in-bridge"), "vif not in xenbr0: {out}");
    assert!(!out.contains("iface-left"), "{out}");
    assert_clean(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_rules_refuse_and_change_nothing() {
    let _turn = SERIAL.lock().await;
    if lab().is_none() {
        return;
    }
    put_vdev();
    let d = domu();
    // A second guest to share with.
    let (ok, out) = dom0(
        r#"xl create /root/lab/domu1.cfg 'name="domu-share"' >/dev/null 2>&1; xl domid domu-share"#,
    );
    assert!(ok, "xl create domu-share: {out}");
    let (ok, out) = dom0(&format!(
        r#"set -e
{WAIT44}
snap() {{ for p in /local/domain/$id/device /local/domain/$id2/device /local/domain/0/backend /libxl/$id /libxl/$id2; do xenstore-ls -fp $p 2>/dev/null | grep -v '/state = \|/ring-ref\|/event-channel' ; done; losetup -a; }}
ro=/root/lab/vdev-ro.img; rw=/root/lab/vdev-rw.img
truncate -s 8M $ro $rw; chmod 444 $ro
id=$(xl domid {d}); id2=$(xl domid domu-share)
r=$(/root/vdev -c xen:/// attach {d} disk uname=file:$rw dev=xvdm mode=w)
wait44 /local/domain/$id/device/vbd/$r/state /local/domain/0/backend/vbd/$id/$r/state
before=$(snap)
try() {{ if out=$(/root/vdev -c xen:/// attach "$@" 2>&1); then echo "ACCEPTED: $*"; else echo "refused: $out"; fi; }}
try {d} disk uname=file:$ro dev=xvdn mode=w
try domu-share disk uname=file:$rw dev=xvdb mode=w
try domu-share disk uname=file:$rw dev=xvdb mode=r
try domu-share disk uname=file:/root/lab/no-such.img dev=xvdb
after=$(snap)
[ "$before" = "$after" ] && echo "unchanged" || {{ echo "CHANGED"; diff <(echo "$before") <(echo "$after") || true; }}
r2=$(/root/vdev -c xen:/// attach {d} disk uname=file:$ro dev=xvdn mode=r) && echo "ro-as-r-ok"
/root/vdev -c xen:/// detach {d} disk $r2
/root/vdev -c xen:/// detach {d} disk $r
rm -f $ro $rw
"#
    ));
    let (_, destroyed) = dom0("xl destroy domu-share");
    assert!(ok, "the dom0 script failed: {out}");
    assert!(!out.contains("ACCEPTED"), "{out}");
    assert_eq!(out.matches("refused: ").count(), 4, "{out}");
    assert!(
        out.contains("read-only and cannot be given to a guest read-write"),
        "{out}"
    );
    assert_eq!(
        out.matches("is in use: domain").count(),
        2,
        "sharing with another guest not refused as such: {out}"
    );
    assert!(
        out.contains("cannot be opened in the backend domain"),
        "{out}"
    );
    assert!(out.contains("unchanged"), "{out}");
    assert!(out.contains("ro-as-r-ok"), "{out}");
    assert!(!destroyed.contains("error"), "{destroyed}");
}

/// The keys under each of `dirs`, relative to it (values aside).
fn keys(dump: &str, dir: &str) -> Vec<String> {
    let mut k: Vec<String> = dump
        .lines()
        .filter_map(|l| l.strip_prefix(dir)?.split(" = ").next().map(str::to_owned))
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_attaching_at_once_get_distinct_ids_and_complete_nodes() {
    let _turn = SERIAL.lock().await;
    if lab().is_none() {
        return;
    }
    let bin = build_vdev();
    let d = domu();
    let run_all = |args: Vec<Vec<String>>| -> Vec<std::process::Output> {
        let children: Vec<_> = args
            .iter()
            .map(|a| {
                Command::new(&bin)
                    .arg("-c")
                    .arg(uri())
                    .args(a)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("start vdev")
            })
            .collect();
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let id: u32 = dom0(&format!("xl domid {d}")).1.trim().parse().unwrap();
    let disks_before = disk_dump(id);
    let nics_before = xs_ls(&format!("/local/domain/{id}/device/vif"));

    // Six processes attach a NIC each at the same moment: six distinct handles.
    let outs = run_all((0..6).map(|_| s(&["attach", &d, "network"])).collect());
    let mut handles: Vec<String> = outs
        .iter()
        .map(|o| {
            assert!(
                o.status.success(),
                "a concurrent attach failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        })
        .collect();
    handles.sort();
    handles.dedup();
    assert_eq!(handles.len(), 6, "duplicate handles: {handles:?}");
    // Nothing half-written: every NIC has the same keys in all three places.
    let fe = xs_ls(&format!("/local/domain/{id}/device/vif"));
    let be = xs_ls(&format!("/local/domain/0/backend/vif/{id}"));
    let lx = xs_ls(&format!("/libxl/{id}/device/vif"));
    let shape = |h: &str| {
        (
            keys(&fe, &format!("/local/domain/{id}/device/vif/{h}")),
            keys(&lx, &format!("/libxl/{id}/device/vif/{h}")),
            // Backend keys netback adds later vary with timing; compare what libxl writes.
            keys(&be, &format!("/local/domain/0/backend/vif/{id}/{h}"))
                .into_iter()
                .filter(|k| keys(&lx, &format!("/libxl/{id}/device/vif/{h}")).contains(k))
                .collect::<Vec<_>>(),
        )
    };
    let first = shape(&handles[0]);
    assert!(!first.0.is_empty() && !first.1.is_empty() && !first.2.is_empty());
    for h in &handles[1..] {
        let sh = shape(h);
        assert_eq!(sh.1, first.1, "libxl record of vif {h} differs");
        assert_eq!(sh.2, first.2, "backend of vif {h} differs");
        for k in ["/backend", "/backend-id", "/handle", "/mac", "/state"] {
            assert!(sh.0.contains(&k.to_string()), "vif {h} frontend lacks {k}");
        }
    }

    // Two processes attach the same disk at once: one wins, the other is told it exists.
    let outs = run_all(vec![
        s(&[
            "attach",
            &d,
            "disk",
            "uname=file:/root/lab/disk.img",
            "dev=xvdr",
        ]),
        s(&[
            "attach",
            &d,
            "disk",
            "uname=file:/root/lab/disk2.img",
            "dev=xvdr",
        ]),
    ]);
    let ok: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(ok.len(), 1, "exactly one attach of xvdr may succeed");
    let lost = outs.iter().find(|o| !o.status.success()).unwrap();
    assert!(
        String::from_utf8_lossy(&lost.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&lost.stderr)
    );
    let r = String::from_utf8_lossy(&ok[0].stdout).trim().to_owned();
    let dump = disk_dump(id);
    assert_eq!(
        dump.matches("/params = ").count(),
        2,
        "one backend dir and one libxl record with params: {dump}"
    );

    // Clean up with the library; everything is as before.
    let conn = vdev_core::connect(&uri()).await.unwrap();
    let dom = conn.domain(&d).await.unwrap();
    let force = common::force();
    for h in &handles {
        conn.detach(
            &dom,
            &vdev_core::DeviceType::NETWORK,
            &vdev_core::DeviceRef::new(h.as_str()).unwrap(),
            &force,
        )
        .await
        .unwrap();
    }
    conn.detach(
        &dom,
        &vdev_core::DeviceType::DISK,
        &vdev_core::DeviceRef::new(r.as_str()).unwrap(),
        &force,
    )
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_eq!(disk_dump(id), disks_before);
    assert_eq!(
        xs_ls(&format!("/local/domain/{id}/device/vif")),
        nics_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_xenbus_device_too() {
    let _turn = SERIAL.lock().await;
    if lab().is_none() {
        return;
    }
    put_vdev();
    let d = domu();
    let img = "/root/lab/vdev-xenbus.img";
    let (ok, out) = dom0(&format!(
        r#"set -e
{WAIT44}
truncate -s 8M {img}
id=$(xl domid {d})
u='xen:///?device=/dev/xen/xenbus'
/root/vdev -c "$u" domains | grep -qw {d} && echo "domains-ok"
r=$(/root/vdev -c "$u" attach {d} disk uname=file:{img} dev=xvdo)
be=/local/domain/0/backend/vbd/$id/$r
wait44 /local/domain/$id/device/vbd/$r/state $be/state
/root/vdev -c "$u" devices {d} disk | grep -qw "$r" && echo "listed"
/root/vdev -c "$u" detach {d} disk $r
echo "loop-after=$(losetup -j {img} -O NAME -n)"
gone /local/domain/$id/device/vbd/$r $be /libxl/$id/device/vbd/$r
/root/vdev -c 'xen:///?device=/dev/xen/no-such' domains 2>&1 | grep -q "cannot open the xenbus device /dev/xen/no-such" && echo "named"
rm -f {img}
"#
    ));
    assert!(ok, "the dom0 script failed: {out}");
    assert!(out.contains("domains-ok"), "{out}");
    assert!(out.contains("states=4/4"), "{out}");
    assert!(out.contains("listed"), "{out}");
    assert!(out.contains("loop-after=\n"), "{out}");
    assert!(
        out.contains("named"),
        "a missing device is not named: {out}"
    );
    assert_clean(&out);
}

/// A batch in Domain-0 (`vdev apply`, one batch per domain), where the driver does the block
/// script's work for every disk at once. On the running guest: four file-backed disks and a NIC
/// all reach Connected, with a loop device each; `xl` lists them; an `absent` document removes
/// them all, loops freed, XenStore and libxl's records as before. A batch whose sixth disk's
/// image is missing is refused naming that entry, and so is one whose ninth disk another guest
/// uses read-write; both leave XenStore, libxl's records and the loop devices exactly as they
/// were. On a second, paused guest (no frontend to wait for): 18 disks, more than one XenStore
/// transaction carries, all written with their loop devices, and `xl` lists every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_disks_in_dom0_is_all_or_nothing_loops_included() {
    let _turn = SERIAL.lock().await;
    if lab().is_none() {
        return;
    }
    put_vdev();
    let d = domu();
    let img = |i: usize| format!("/root/lab/vdev-batch{i}.img");
    let doc = |domain: &str, n: usize, imgs: &dyn Fn(usize) -> String, state: &str| {
        let mut t = format!("domains:\n  {domain}:\n    devices:\n");
        for i in 0..n {
            let dev = format!("xvd{}", (b'i' + i as u8) as char);
            t += &format!(
                "      - {{type: disk, state: {state}, attrs: {{uname: 'file:{}', dev: {dev}, mode: w}}}}\n",
                imgs(i)
            );
        }
        t
    };
    let nic = "      - {type: network, attrs: {mac: '00:16:3e:5a:00:01'}}\n";
    let good = doc(&d, 4, &img, "present") + nic;
    let absent = doc(&d, 4, &img, "absent") + &nic.replace("network,", "network, state: absent,");
    let missing = doc(
        &d,
        9,
        &|i| {
            if i == 5 {
                "/root/lab/no-such.img".into()
            } else {
                img(i)
            }
        },
        "present",
    );
    let shared = doc(
        &d,
        9,
        &|i| {
            if i == 8 {
                "/root/lab/vdev-shared.img".into()
            } else {
                img(i)
            }
        },
        "present",
    );
    let many = doc("domu-batch", 18, &img, "present");
    // About 60 programs and 60 hotplug scripts in Domain-0: 300 s (the default limit) was
    // reached on a loaded machine (run J1, 2026-12-06), so this script has 900.
    let (ok, out) = dom0_within(
        &format!(
            r#"set -e
{WAIT44}
snap() {{ for p in /local/domain/$id/device /local/domain/0/backend/vbd/$id /local/domain/0/backend/vif/$id /libxl/$id; do xenstore-ls -fp $p 2>/dev/null | grep -v '/state = \|/ring-ref\|/event-channel\|/tx-ring-ref\|/rx-ring-ref\|/request-rx-copy\|/feature-\|/multi-queue\|/persistent\|/sector\|/info = \|/physical-sector' ; done; losetup -a | grep 'vdev-batch\|vdev-shared' | sort; }}
id=$(xl domid {d})
# Whatever happens, nothing of this test stays for the next one: its guest, its disks (forced)
# and their loop devices.
cleanup() {{
  s=$?; set +e
  for r in $(/root/vdev -c xen:/// devices {d} disk 2>/dev/null | awk 'NR > 1 && /vdev-batch/ {{ print $2 }}'); do /root/vdev -c xen:/// detach {d} disk $r --force >/dev/null 2>&1; done
  /root/vdev -c xen:/// devices {d} network 2>/dev/null | awk 'NR > 1 && /00:16:3e:5a:00:01/ {{ print $2 }}' | while read -r r; do /root/vdev -c xen:/// detach {d} network $r --force >/dev/null 2>&1; done
  xl destroy domu-batch >/dev/null 2>&1
  for l in $(losetup -a | grep 'vdev-batch\|vdev-shared' | cut -d: -f1); do losetup -d $l; done
  rm -f /root/lab/vdev-batch*.img /root/lab/vdev-shared.img
  exit $s
}}
trap cleanup EXIT
truncate -s 8M $(for i in $(seq 0 17); do echo /root/lab/vdev-batch$i.img; done) /root/lab/vdev-shared.img
xl create -p /root/lab/domu1.cfg 'name="domu-batch"' >/dev/null 2>&1
r=$(/root/vdev -c xen:/// attach domu-batch disk uname=file:/root/lab/vdev-shared.img dev=xvdb mode=w)
cat > /root/lab/good.yaml <<'DOC'
{good}DOC
cat > /root/lab/absent.yaml <<'DOC'
{absent}DOC
cat > /root/lab/missing.yaml <<'DOC'
{missing}DOC
cat > /root/lab/shared.yaml <<'DOC'
{shared}DOC
cat > /root/lab/many.yaml <<'DOC'
{many}DOC
before=$(snap)
for bad in missing shared; do
  if out=$(/root/vdev -c xen:/// apply /root/lab/$bad.yaml 2>&1); then echo "ACCEPTED $bad"; else echo "refused $bad: $out"; fi
  [ "$before" = "$(snap)" ] && echo "unchanged after $bad" || {{ echo "CHANGED after $bad"; diff <(echo "$before") <(snap) || true; }}
done
/root/vdev -c xen:/// apply /root/lab/good.yaml >/dev/null
connected=0
for r in $(/root/vdev -c xen:/// devices {d} disk | awk 'NR > 1 && /vdev-batch/ {{ print $2 }}'); do
  s=$(wait44 /local/domain/$id/device/vbd/$r/state /local/domain/0/backend/vbd/$id/$r/state)
  [ "$s" = states=4/4 ] && connected=$((connected + 1))
done
echo "connected=$connected"
echo "loops=$(losetup -a | grep -c vdev-batch)"
echo "xl-lists=$(xl block-list {d} | awk 'NR > 1' | wc -l)"
echo "nic=$(xl network-list {d} | grep -c 00:16:3e:5a:00:01)"
/root/vdev -c xen:/// apply /root/lab/absent.yaml >/dev/null
[ "$before" = "$(snap)" ] && echo "all removed" || {{ echo "LEFT after absent"; diff <(echo "$before") <(snap) || true; }}
/root/vdev -c xen:/// apply /root/lab/many.yaml >/dev/null
echo "many-loops=$(losetup -a | grep -c vdev-batch)"
echo "many-listed=$(xl block-list domu-batch | awk 'NR > 1' | wc -l)"
echo "many-plugged=$(for r in $(xenstore-list /local/domain/0/backend/vbd/$(xl domid domu-batch)); do xenstore-read /local/domain/0/backend/vbd/$(xl domid domu-batch)/$r/hotplug-status; done | grep -c connected)"
# Forced detaches (the paused guest releases nothing), then the guest goes.
b=$(xl domid domu-batch)
for r in $(xenstore-list /local/domain/0/backend/vbd/$b); do /root/vdev -c xen:/// detach domu-batch disk $r --force; done
xl destroy domu-batch
echo "loops-after=$(losetup -a | grep -c 'vdev-batch\|vdev-shared' || true)"
rm -f /root/lab/vdev-batch*.img /root/lab/vdev-shared.img
"#
        ),
        900,
    );
    eprintln!("{out}");
    assert!(ok, "the dom0 script failed: {out}");
    assert!(!out.contains("ACCEPTED"), "{out}");
    assert_eq!(out.matches("refused ").count(), 2, "{out}");
    assert!(
        out.contains(&format!("error: entry 5 (domains.{d}.devices[5]"))
            && out.contains("cannot be opened in the backend domain"),
        "{out}"
    );
    assert!(
        out.contains(&format!("error: entry 8 (domains.{d}.devices[8]"))
            && out.contains("is in use: domain"),
        "{out}"
    );
    assert!(out.contains("unchanged after missing"), "{out}");
    assert!(out.contains("unchanged after shared"), "{out}");
    assert!(out.contains("connected=4\n"), "{out}");
    assert!(out.contains("loops=4\n"), "{out}");
    assert!(out.contains("xl-lists=4\n"), "{out}");
    assert!(out.contains("nic=1\n"), "{out}");
    assert!(out.contains("all removed"), "{out}");
    assert!(out.contains("many-loops=18\n"), "{out}");
    assert!(
        out.contains("many-listed=19\n"),
        "the 18 and the shared disk: {out}"
    );
    assert!(out.contains("many-plugged=19\n"), "{out}");
    assert!(out.contains("loops-after=0\n"), "{out}");
}
