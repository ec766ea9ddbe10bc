//! `vdev plan`, `vdev apply`, `vdev export` and `vdev attach --from`, run as a user runs them,
//! on mock state files (every `vdev` is its own process: the listing that checks is another
//! client than the one that changed).

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use vdev_conformance::process;

mod common;
use common::*;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Each disk of `demo` as (dev, uname, mode), by another process.
fn disks(uri: &str) -> Vec<(String, String, String)> {
    json(&["-c", uri, "devices", "demo", "disk"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let a = &d["attrs"];
            let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
            (s("dev"), s("uname"), s("mode"))
        })
        .collect()
}

const DOC: &str = r#"
domains:
  demo:
    exclusive: [network]
    devices:
      - type: disk
        attrs: {uname: "file:/img/a.img", dev: xvdb, mode: rw}
      - type: disk
        attrs: {uname: "file:/img/b.img", dev: xvdc, mode: r}
      - type: disk
        state: absent
        attrs: {dev: xvdd}
"#;

#[test]
fn plan_apply_reapply_and_export_round_trip() {
    let (dir, path, uri) = state_file("host.json");
    // What a domain has now, exported, plans to nothing.
    let exported = ok(&["-c", &uri, "export", "demo"]);
    let e = write(dir.path(), "exported.yaml", &exported);
    assert_eq!(json(&["-c", &uri, "plan", &e]), json!({"changes": []}));
    assert!(ok(&["-c", &uri, "plan", &e]).starts_with("no changes"));

    let doc = write(dir.path(), "doc.yaml", DOC);
    let plan = json(&["-c", &uri, "plan", &doc]);
    let ops: Vec<(&str, &str)> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["op"].as_str().unwrap(), c["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [("remove", "network"), ("add", "disk"), ("add", "disk")],
        "{plan}"
    );
    let add = &plan["changes"][1];
    assert_eq!(add["domain"], "demo");
    assert_eq!(add["ref"], Value::Null);
    assert_eq!(add["attrs"]["uname"], "file:/img/a.img");
    let text = ok(&["-c", &uri, "plan", &doc]);
    assert!(text.contains("- demo network 0 "), "{text}");
    assert!(
        text.contains("+ demo disk dev=xvdb mode=rw uname=file:/img/a.img"),
        "{text}"
    );
    // Planning changed nothing.
    assert_eq!(refs(&uri, "demo", "network"), ["0"]);

    let out = json(&["-c", &uri, "apply", &doc]);
    assert_eq!(out["changed"], true, "{out}");
    let outcomes: Vec<&str> = out["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["done", "done", "done"], "{out}");
    assert_eq!(out["changes"][1]["ref"], "51728");
    // Checked by another process: the two disks are there as written, the NIC is gone.
    let mut have = disks(&uri);
    have.sort();
    assert_eq!(
        have,
        [
            (
                "xvda".into(),
                "file:/var/lib/xen/images/demo.img".into(),
                "w".into()
            ),
            ("xvdb".into(), "file:/img/a.img".into(), "w".into()),
            ("xvdc".into(), "file:/img/b.img".into(), "r".into()),
        ]
    );
    assert!(refs(&uri, "demo", "network").is_empty());

    // Again: nothing to do, said so, and the state file is not even rewritten.
    let before = std::fs::read(&path).unwrap();
    let again = ok(&["-c", &uri, "apply", &doc]);
    assert!(again.starts_with("no changes"), "{again}");
    assert_eq!(json(&["-c", &uri, "apply", &doc])["changed"], false);
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // The export of the new state plans to nothing, and lists what the document made.
    let exported = ok(&["-c", &uri, "export", "demo"]);
    assert!(exported.contains("file:/img/b.img"), "{exported}");
    let e = write(dir.path(), "exported2.yaml", &exported);
    assert_eq!(json(&["-c", &uri, "plan", &e]), json!({"changes": []}));
    let exported_json: Value =
        serde_json::from_str(&ok(&["-c", &uri, "--json", "export", "demo"])).unwrap();
    assert_eq!(
        exported_json["domains"]["demo"]["devices"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn an_update_is_planned_in_place_and_a_fixed_attribute_as_a_replacement() {
    let (dir, _path, uri) = state_file("host.json");
    let doc = write(
        dir.path(),
        "doc.json",
        r#"{"domains": {"demo": {"devices": [
            {"type": "network", "attrs": {"mac": "00:16:3E:00:00:01", "link": "down"}},
            {"type": "disk", "attrs": {"dev": "xvda", "uname": "file:/var/lib/xen/images/demo.img", "mode": "r"}}]}}}"#,
    );
    let plan = ok(&["-c", &uri, "plan", &doc]);
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), 2, "{plan}");
    assert_eq!(
        lines[0], "~ demo network 0 link=down",
        "the MAC matched in any case"
    );
    assert!(lines[1].starts_with("! demo disk 51712 mode=r"), "{plan}");
    assert!(lines[1].contains("mode is 'w', wanted 'r'"), "{plan}");
    let out = ok(&["-c", &uri, "apply", &doc]);
    assert!(out.contains("not-made"), "{out}");
    let nic = &json(&["-c", &uri, "devices", "demo", "network"])[0];
    assert_eq!(nic["attrs"]["link"], "down");
    assert_eq!(
        disks(&uri)[0].2,
        "w",
        "a replacement is reported, never made"
    );
    // The update made, the replacement left: nothing more to change, and apply says so.
    let again = ok(&["-c", &uri, "apply", &doc]);
    assert!(
        again.contains("nothing changed (1 needing a replacement, not made)"),
        "{again}"
    );
}

#[test]
fn a_batch_whose_third_device_fails_leaves_nothing_attached() {
    let (dir, path, uri) = state_file("host.json");
    ok(&["-c", &uri, "domains"]);
    let doc = write(
        dir.path(),
        "doc.yaml",
        r#"
domains:
  demo:
    devices:
      - {type: disk, attrs: {uname: "file:/img/1", dev: xvdb, mode: w}}
      - {type: disk, attrs: {uname: "file:/img/2", dev: xvdc, mode: w}}
      - {type: disk, attrs: {uname: "file:/img/3", dev: xvdd, mode: sideways}}
      - {type: disk, attrs: {uname: "file:/img/4", dev: xvde, mode: w}}
"#,
    );
    let before = std::fs::read(&path).unwrap();
    let o = vdev(&["-c", &uri, "apply", &doc]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("entry 2 (domains.demo.devices[2]"), "{err}");
    assert!(err.contains("mode"), "{err}");
    assert!(stdout(&o).contains("failed"), "{}", stdout(&o));
    assert_eq!(disks(&uri).len(), 1, "none of the batch stayed");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // The same through `attach --from`: one JSON object per line.
    let lines = write(
        dir.path(),
        "batch.jsonl",
        "{\"uname\": \"file:/img/1\", \"dev\": \"xvdb\", \"mode\": \"w\"}\n# a comment\n\n{\"uname\": \"file:/img/2\", \"dev\": \"xvdb\", \"mode\": \"w\"}\n",
    );
    let o = vdev(&["-c", &uri, "attach", "demo", "disk", "--from", &lines]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("entry 1"), "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let good = write(
        dir.path(),
        "good.jsonl",
        "{\"uname\": \"file:/img/1\", \"dev\": \"xvdb\", \"mode\": \"w\"}\n{\"uname\": \"file:/img/2\", \"dev\": \"xvdc\", \"mode\": \"r\"}\n",
    );
    // An injected fault on the batch's second device fails it, before anything is made.
    let faulty = format!("{uri}?fail=attach:2:backend");
    let o = vdev(&["-c", &faulty, "attach", "demo", "disk", "--from", &good]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("entry 1"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(
        ok(&["-c", &uri, "attach", "demo", "disk", "--from", &good]),
        "51728\n51744\n"
    );
    assert_eq!(disks(&uri).len(), 3);
}

#[test]
fn bad_documents_are_refused_naming_the_place_and_nothing_changes() {
    let (dir, path, uri) = state_file("host.json");
    ok(&["-c", &uri, "domains"]);
    let before = std::fs::read(&path).unwrap();
    for (name, text, says) in [
        ("syntax.yaml", "domains: {demo: [\n", "syntax.yaml: "),
        (
            "unknown.yaml",
            "domains:\n  demo:\n    devices:\n      - type: disk\n        atrs: {dev: xvdb}\n",
            "domains.demo.devices[0].atrs (line 5 column 9): unknown field `atrs`, expected one of `type`, `state`, `id`, `attrs`",
        ),
        (
            "dup.json",
            r#"{"domains": {"demo": {"devices": [
                {"type": "disk", "attrs": {"uname": "file:/a", "dev": "xvdb", "mode": "w"}},
                {"type": "disk", "attrs": {"uname": "file:/b", "dev": "xvdb", "mode": "w"}}]}}}"#,
            "domains.demo.devices[1]: entry 0 is the same disk (dev=xvdb)",
        ),
        (
            "noident.yaml",
            "domains: {demo: {devices: [{type: disk, attrs: {mode: w}}]}}",
            "none of the attributes that identify a disk (dev, uname)",
        ),
        (
            "attr.yaml",
            "domains: {demo: {devices: [{type: disk, attrs: {dev: xvdb, uname: 'file:/a', mode: w, colour: red}}]}}",
            "domains.demo.devices[0].attrs: invalid attribute 'colour'",
        ),
        (
            "nodomain.yaml",
            "domains: {nosuch: {devices: []}}",
            "domain 'nosuch' not found",
        ),
        (
            // The second domain's error stops the first domain's changes too.
            "second.yaml",
            "domains: {demo: {exclusive: [network]}, Domain-0: {devices: [{type: tape, id: t0}]}}",
            "domains.Domain-0.devices[0].type: the mock driver has no device type 'tape'",
        ),
    ] {
        let file = write(dir.path(), name, text);
        for cmd in ["plan", "apply"] {
            let o = vdev(&["-c", &uri, cmd, &file]);
            assert_eq!(o.status.code(), Some(1), "{cmd} {name}");
            let err = stderr(&o);
            assert!(err.starts_with("error: "), "{err}");
            assert!(err.contains(says), "{cmd} {name}: {err}");
            assert!(stdout(&o).is_empty(), "{}", stdout(&o));
            assert_eq!(std::fs::read(&path).unwrap(), before, "{cmd} {name} changed the host");
        }
    }
    let o = vdev(&["-c", &uri, "plan", "/nonexistent/doc.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("/nonexistent/doc.yaml: cannot be read"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_pending_removal_is_exit_status_3_and_the_next_apply_waits_again() {
    let (dir, _path, uri) = state_file("host.json");
    let pending = format!("{uri}?removal=pending");
    let doc = write(
        dir.path(),
        "doc.yaml",
        "domains: {demo: {devices: [{type: disk, state: absent, attrs: {dev: xvda}}]}}",
    );
    let o = vdev(&["-c", &pending, "apply", "--timeout", "0.2", &doc]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).contains("removal-pending"), "{}", stdout(&o));
    let dev = &json(&["-c", &uri, "devices", "demo", "disk"])[0];
    assert_eq!(dev["state"], "removal-pending");
    // Still there, so the plan still removes it.
    assert!(ok(&["-c", &uri, "plan", &doc]).starts_with("- demo disk 51712"));
}

#[test]
fn two_applies_at_once_attach_each_device_once() {
    let (dir, _path, uri) = state_file("host.json");
    ok(&["-c", &uri, "domains"]);
    let mut devices = String::new();
    for (i, dev) in ["xvdb", "xvdc", "xvdd", "xvde", "xvdf", "xvdg"]
        .iter()
        .enumerate()
    {
        devices.push_str(&format!(
            "      - {{type: disk, attrs: {{uname: 'file:/img/{i}', dev: {dev}, mode: w}}}}\n"
        ));
    }
    let doc = write(
        dir.path(),
        "doc.yaml",
        &format!("domains:\n  demo:\n    devices:\n{devices}"),
    );
    // Latency on every call widens the window between a process's plan and its batch, so
    // that the two plans see the same devices and one batch meets the other's disks.
    let slow = format!("{uri}?latency=200ms");
    for _round in 0..2 {
        let spawn = || {
            process::spawn(
                Command::new(env!("CARGO_BIN_EXE_vdev"))
                    .args(["-c", &slow, "apply", &doc])
                    .env_remove("RUST_LOG"),
            )
        };
        let (a, b) = (spawn(), spawn());
        let deadline = std::time::Instant::now() + process::PROCESS_DEADLINE;
        for child in [a, b] {
            let o = process::wait_until(child, deadline, "vdev apply");
            assert!(o.status.success(), "{}", stderr(&o));
        }
        assert_eq!(disks(&uri).len(), 7, "each device once");
        // Start the next round from the domain's first state.
        let reset = write(
            dir.path(),
            "reset.yaml",
            "domains: {demo: {exclusive: [disk], devices: [{type: disk, attrs: {dev: xvda, uname: 'file:/var/lib/xen/images/demo.img', mode: w}}]}}",
        );
        ok(&["-c", &uri, "apply", &reset]);
        assert_eq!(disks(&uri).len(), 1);
    }
}
