//! End to end inside the lab's Domain-0: the `vdev` command (built with the xen feature) attaches
//! a file-backed disk, runs the block hotplug script itself, both ends reach Connected (4); detach
//! frees the loop device and every node. Then the same with `xl`, for comparison (timings printed).

mod common;

use std::process::Command;

use common::{dom0, domu, lab, SERIAL};
use vdev_driver_xen as _;

fn vdev_binary() -> std::path::PathBuf {
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
    let bin = target.join("debug/vdev");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vdev_in_dom0_runs_hotplug_and_connects_then_detach_frees_the_loop() {
    let _turn = SERIAL.lock().await;
    if lab().is_none() {
        return;
    }
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
xl block-list {d} | grep -q "^$r " && echo "xl-lists-it"
t0=$(date +%s%N)
/root/vdev -c xen:/// detach {d} disk $r
t1=$(date +%s%N)
echo "detach_ms=$(( (t1-t0)/1000000 ))"
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
    assert!(
        out.contains("xl-lists-it"),
        "xl block-list does not list it: {out}"
    );
    assert!(
        out.contains("loop-after=\n"),
        "the loop device is still there: {out}"
    );
    for left in ["frontend-left", "backend-left", "record-left"] {
        assert!(!out.contains(left), "{left}: {out}");
    }
}
