//! The `vdev` command built with the `libvirt` feature, against a real libvirtd the test starts
//! (the libvirt driver's test helper), with `virsh` as the independent checker. Run by the test
//! command as `cargo test -p vdev-cli --features libvirt --test libvirt`.
#![cfg(feature = "libvirt")]

#[path = "../../driver-libvirt/tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::{wait_for, Libvirtd};
use serde_json::Value;
use support::{devices_of, ok, state_in, vdev};

fn devices(uri: &str) -> Vec<Value> {
    devices_of(uri, "vm")
}

fn state_of(uri: &str, r: &str) -> Option<String> {
    state_in(uri, "vm", r)
}

#[test]
fn the_vdev_command_over_libvirt() {
    let Some(lv) = Libvirtd::start() else {
        return;
    };
    lv.define("vm", 8, true);
    let uri = lv.vdev_uri();
    let domains: Value = serde_json::from_str(&ok(&uri, &["--json", "domains"])).expect("JSON");
    let vm = domains
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["name"] == "vm")
        .expect("vm is listed")
        .clone();
    assert_eq!(vm["state"], "running");
    assert!(vm["uuid"].is_string());
    let schema = ok(&uri, &["schema", "disk"]);
    assert!(
        schema.contains("from libvirt's domain capabilities"),
        "{schema}"
    );

    // Attach, list, update, detach: each seen by virsh.
    let img = lv.image("cli.raw");
    let img = img.to_str().expect("utf-8").to_owned();
    let r = ok(
        &uri,
        &[
            "attach",
            "vm",
            "disk",
            &format!("source={img}"),
            "serial=CLI1",
        ],
    );
    assert!(lv.virsh_ok(&["domblklist", "vm"]).contains(&img));
    let listed = devices(&uri);
    let d = listed
        .iter()
        .find(|d| d["ref"] == r.as_str())
        .expect("listed");
    assert_eq!(d["attrs"]["serial"], "CLI1");
    assert_eq!(d["state"], "connected");
    let mac = "52:54:00:77:00:09";
    let n = ok(
        &uri,
        &[
            "attach",
            "vm",
            "network",
            "netdev=user",
            &format!("mac={mac}"),
        ],
    );
    ok(&uri, &["update", "vm", "network", &n, "link=down"]);
    assert!(lv.virsh_ok(&["domif-getlink", "vm", mac]).contains("down"));
    ok(&uri, &["detach", "vm", "disk", &r]);
    assert!(!lv.virsh_ok(&["domblklist", "vm"]).contains(&img));

    // A refused attach: exit status 1, libvirt's words on stderr.
    let o = vdev(
        &uri,
        &["attach", "vm", "disk", "source=/nonexistent/cli.raw"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error:") && err.contains("/nonexistent/cli.raw"),
        "{err}"
    );

    // The false success: exit status 3, listed pending by the next command; gone after a reset.
    let v = lv.image("cli-virtio.raw");
    let v = v.to_str().expect("utf-8").to_owned();
    let r = ok(
        &uri,
        &["attach", "vm", "disk", &format!("source={v}"), "bus=virtio"],
    );
    let o = vdev(&uri, &["detach", "vm", "disk", &r, "--timeout", "2"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(state_of(&uri, &r).as_deref(), Some("removal-pending"));
    lv.virsh_ok(&["reset", "vm"]);
    wait_for("the disk gone after the reset", || {
        !lv.virsh_ok(&["domblklist", "vm"]).contains(&v)
    });
    ok(&uri, &["detach", "vm", "disk", &r, "--timeout", "2"]);
    assert_eq!(state_of(&uri, &r), None);
}
