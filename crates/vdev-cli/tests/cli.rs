//! The `vdev` command, run as a user runs it.

use std::process::Command;

use serde_json::Value;

mod common;
use common::*;

#[test]
fn json_output_has_the_documented_shapes() {
    let drivers = json(&["drivers"]);
    assert_eq!(
        drivers,
        serde_json::json!([
            {"name": "mock", "schemes": ["mock", "test"]},
            {"name": "qemu", "schemes": ["qemu"]},
            {"name": "xen", "schemes": ["xen"]}
        ])
    );
    let domains = json(&["domains"]);
    assert_eq!(
        domains,
        serde_json::json!([
            {"id": 0, "name": "Domain-0", "state": "running"},
            {"id": 1, "name": "demo", "state": "running"}
        ])
    );
    let devices = json(&["devices", "demo", "disk"]);
    let d = &devices[0];
    assert_eq!(d["domain"], "demo");
    assert_eq!(d["type"], "disk");
    assert_eq!(d["ref"], "51712");
    assert_eq!(d["state"], "connected");
    for key in [
        "virtual-device",
        "backend-id",
        "bkdom-name",
        "state",
        "backend",
        "ring-ref",
        "event-channel",
        "uname",
        "dev",
        "mode",
    ] {
        assert!(
            d["attrs"].get(key).is_some(),
            "attribute {key} missing from {d}"
        );
    }
    assert_eq!(d["attrs"]["bkdom-name"], "Domain-0");
    // Domain by id works as well as by name.
    assert_eq!(json(&["devices", "1", "disk"]), devices);
    let attached = json(&[
        "attach",
        "demo",
        "disk",
        "uname=file:/img/b.raw",
        "dev=xvdb",
        "mode=w",
    ]);
    assert_eq!(attached, serde_json::json!({"ref": "51728"}));
}

#[test]
fn tables_are_aligned_for_people() {
    let out = ok(&["domains"]);
    assert_eq!(
        out,
        "ID  NAME      STATE\n0   Domain-0  running\n1   demo      running\n"
    );
    let out = ok(&["devices", "demo"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let col = lines[0].find("STATE").unwrap();
    assert!(
        lines[1..].iter().all(|l| &l[col..col + 9] == "connected"),
        "{out}"
    );
}

#[test]
fn schema_shows_each_attribute_with_its_aliases() {
    let (_dir, path, uri) = state_file("aliases.json");
    std::fs::write(
        &path,
        r#"{ "version": 1, "domains": [ { "id": 0, "name": "Domain-0" } ],
      "device_types": [ { "name": "gpu", "description": "a GPU", "attributes": [
        { "name": "slot", "aliases": ["pci", "bdf"], "required": true, "description": "PCI address", "example": "0000:01:00.0" },
        { "name": "model", "description": "model", "example": "h100", "updatable": true } ] } ] }"#,
    )
    .unwrap();
    let schema = json(&["-c", &uri, "schema", "gpu"]);
    assert_eq!(
        schema["attributes"],
        serde_json::json!([
            {"name": "slot", "aliases": ["pci", "bdf"], "required": true, "updatable": false, "description": "PCI address", "example": "0000:01:00.0"},
            {"name": "model", "aliases": [], "required": false, "updatable": true, "description": "model", "example": "h100"}
        ])
    );
    let out = ok(&["-c", &uri, "schema", "gpu"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[2].starts_with("slot (or pci or bdf)  yes"), "{out}");
    assert!(lines[3].starts_with("model                 no"), "{out}");
}

#[test]
fn state_files_keep_changes_between_runs_and_detach_removes() {
    let (_dir, path, uri) = state_file("host.json");
    assert_eq!(
        ok(&[
            "-c",
            &uri,
            "attach",
            "demo",
            "disk",
            "uname=phy:/dev/vg/data",
            "dev=xvdc",
            "mode=r",
            "backend=Domain-0"
        ]),
        "51744\n"
    );
    assert!(path.exists());
    assert_eq!(refs(&uri, "demo", "disk"), ["51712", "51744"]);
    let dev = &json(&["-c", &uri, "devices", "demo", "disk"])[1];
    assert_eq!(dev["attrs"]["backend-id"], "0");
    assert_eq!(dev["attrs"]["bkdom-name"], "Domain-0");
    assert_eq!(dev["attrs"]["mode"], "r");
    ok(&["-c", &uri, "detach", "demo", "disk", "51744"]);
    assert_eq!(refs(&uri, "demo", "disk"), ["51712"]);
}

#[test]
fn failures_exit_1_with_an_error_line_and_change_nothing() {
    let (_dir, path, uri) = state_file("host.json");
    ok(&["-c", &uri, "domains"]);
    let before = std::fs::read(&path).unwrap();
    for (args, says) in [
        (
            vec![
                "attach",
                "demo",
                "disk",
                "uname=file:/x",
                "dev=xvda",
                "mode=w",
            ],
            "already exists",
        ),
        (
            vec!["attach", "demo", "disk", "uname=file:/x", "dev=xvdb"],
            "missing attribute 'mode'",
        ),
        (
            vec![
                "attach",
                "demo",
                "disk",
                "uname=file:/x",
                "dev=xvdb",
                "mode=w",
                "a/b=1",
            ],
            "invalid attribute 'a/b'",
        ),
        (
            vec![
                "attach",
                "demo",
                "disk",
                "uname=file:/x",
                "dev=xvdb",
                "mode=w",
                "backend=nope",
            ],
            "no domain 'nope'",
        ),
        (vec!["attach", "demo", "disk", "nonsense"], "NAME=VALUE"),
        (
            vec![
                "attach",
                "nosuch",
                "disk",
                "uname=file:/x",
                "dev=xvdb",
                "mode=w",
            ],
            "domain 'nosuch' not found",
        ),
        (vec!["detach", "demo", "disk", "51728"], "not found"),
        (
            vec!["detach", "demo", "disk", "../x"],
            "not a device reference",
        ),
        (
            vec!["devices", "demo", "gpu"],
            "supported types: disk, network",
        ),
        (
            vec!["--readonly", "detach", "demo", "disk", "51712"],
            "read-only",
        ),
        (
            vec!["detach", "demo", "disk", "51712", "--timeout", "100000"],
            "--timeout",
        ),
        (
            vec!["detach", "demo", "disk", "51712", "--timeout", "nan"],
            "--timeout",
        ),
    ] {
        let mut a = vec!["-c", uri.as_str()];
        a.extend(args.iter().copied());
        let o = vdev(&a);
        assert_eq!(o.status.code(), Some(1), "vdev {a:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "vdev {a:?}: '{err}' should say '{says}'"
        );
        assert!(stdout(&o).is_empty());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "vdev {a:?} changed the state file"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["frobnicate"],
        vec!["attach", "demo"],
        vec!["detach", "demo", "disk", "1", "--timeout", "soon"],
        vec![],
    ] {
        assert_eq!(vdev(&args).status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn the_default_uri_comes_from_the_environment() {
    let (_dir, path, uri) = state_file("env.json");
    let o = output(
        Command::new(env!("CARGO_BIN_EXE_vdev"))
            .args(["domains"])
            .env("VDEV_DEFAULT_URI", &uri),
        "vdev domains",
    );
    assert!(o.status.success());
    assert!(path.exists(), "VDEV_DEFAULT_URI was not used");
    let o = output(
        Command::new(env!("CARGO_BIN_EXE_vdev"))
            .args(["domains"])
            .env("VDEV_DEFAULT_URI", "nosuch:///x"),
        "vdev domains",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("registered schemes: mock, qemu, test, xen"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_malformed_state_file_is_named_and_left_untouched() {
    let (_dir, path, uri) = state_file("broken.json");
    std::fs::write(&path, "{ \"version\": 1, \"domains\": [ }").unwrap();
    let o = vdev(&["-c", &uri, "domains"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&path.display().to_string())
            && err.contains("malformed")
            && err.contains("line 1"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{ \"version\": 1, \"domains\": [ }"
    );
    std::fs::write(
        &path,
        r#"{"version":1,"domains":[{"id":1,"name":"a"},{"id":1,"name":"b"}]}"#,
    )
    .unwrap();
    let err = stderr(&vdev(&["-c", &uri, "domains"]));
    assert!(err.contains("two domains have the id 1"), "{err}");
}

#[test]
fn detach_reports_removal_pending_and_the_device_stays_listed() {
    let (_dir, _path, uri) = state_file("pending.json");
    let pending = format!("{uri}?removal=pending");
    let o = vdev(&[
        "-c",
        &pending,
        "detach",
        "demo",
        "disk",
        "51712",
        "--timeout",
        "0.2",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "asked, not yet gone: a status of its own"
    );
    assert!(stderr(&o).contains("removal is pending"), "{}", stderr(&o));
    let dev = &json(&["-c", &uri, "devices", "demo", "disk"])[0];
    assert_eq!(dev["ref"], "51712");
    assert_eq!(dev["state"], "removal-pending");
    assert_eq!(dev["attrs"]["state"], "5");
    ok(&["-c", &uri, "detach", "demo", "disk", "51712", "--force"]);
    assert!(refs(&uri, "demo", "disk").is_empty());
}

#[test]
fn two_processes_on_one_state_file_lose_no_update() {
    let (_dir, _path, uri) = state_file("shared.json");
    ok(&["-c", &uri, "domains"]);
    let spawn = |range: std::ops::Range<u32>| {
        let uri = uri.clone();
        std::thread::spawn(move || {
            for i in range {
                let name = xen_devid_name(i);
                let o = vdev(&[
                    "-c",
                    &uri,
                    "attach",
                    "demo",
                    "disk",
                    &format!("uname=file:/img/{i}"),
                    &format!("dev={name}"),
                    "mode=w",
                ]);
                assert!(o.status.success(), "{}", stderr(&o));
            }
        })
    };
    let a = spawn(1..21);
    let b = spawn(21..41);
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(refs(&uri, "demo", "disk").len(), 41);
}

/// `d{i}` as a Xen name, without depending on xen-devid: xvd + letters.
fn xen_devid_name(i: u32) -> String {
    let mut n = i + 1;
    let mut letters = Vec::new();
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("xvd{}", String::from_utf8(letters).unwrap())
}

#[test]
fn watch_prints_changes_made_by_other_processes_one_json_object_per_line() {
    use std::io::{BufRead, BufReader};
    let (_dir, _path, uri) = state_file("watch.json");
    ok(&["-c", &uri, "domains"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vdev"))
        .args(["-c", &uri, "--json", "watch", "demo"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("watching demo"), "{ready}");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    ok(&[
        "-c",
        &uri,
        "attach",
        "Domain-0",
        "disk",
        "uname=file:/x",
        "dev=xvdb",
        "mode=w",
    ]);
    ok(&[
        "-c",
        &uri,
        "attach",
        "demo",
        "disk",
        "uname=file:/x",
        "dev=xvdb",
        "mode=w",
    ]);
    ok(&["-c", &uri, "detach", "demo", "disk", "51728"]);
    let mut lines = Vec::new();
    for _ in 0..2 {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("an event line within 30 s");
        lines.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        lines,
        [
            serde_json::json!({"event": "added", "domain": "demo", "type": "disk", "ref": "51728"}),
            serde_json::json!({"event": "removed", "domain": "demo", "type": "disk", "ref": "51728"}),
        ],
        "the Domain-0 attach must not be reported for demo"
    );
}

#[test]
fn update_changes_a_device_in_place_and_refuses_what_cannot_change() {
    let (_dir, _path, uri) = state_file("update.json");
    let r = ok(&[
        "-c",
        &uri,
        "attach",
        "demo",
        "disk",
        "uname=file:/isos/a.iso",
        "dev=xvdc",
        "mode=r",
        "devtype=cdrom",
    ]);
    let r = r.trim();
    // Another process sees the new medium.
    let out = json(&[
        "-c",
        &uri,
        "update",
        "demo",
        "disk",
        r,
        "uname=file:/isos/b.iso",
    ]);
    assert_eq!(out["updated"]["uname"], "file:/isos/b.iso");
    let listed = json(&["-c", &uri, "devices", "demo", "disk"]);
    let cd = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["ref"] == r)
        .unwrap();
    assert_eq!(cd["attrs"]["uname"], "file:/isos/b.iso");
    let before = json(&["-c", &uri, "devices", "demo"]);
    for (args, what) in [
        (vec!["update", "demo", "disk", r, "dev=xvdd"], "dev"),
        (
            vec!["update", "demo", "disk", "51712", "uname=file:/x.iso"],
            "CD-ROM",
        ),
        (
            vec!["update", "demo", "network", "0", "link=sideways"],
            "sideways",
        ),
        (
            vec!["update", "demo", "disk", "99999", "uname=file:/x.iso"],
            "99999",
        ),
    ] {
        let mut a = vec!["-c", uri.as_str()];
        a.extend(args.iter().copied());
        let o = vdev(&a);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(stderr(&o).contains(what), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(
        json(&["-c", &uri, "devices", "demo"]),
        before,
        "nothing changed"
    );
    let o = vdev(&[
        "-c",
        &uri,
        "--readonly",
        "update",
        "demo",
        "network",
        "0",
        "link=down",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));
    ok(&["-c", &uri, "update", "demo", "network", "0", "link=down"]);
    let nic = &json(&["-c", &uri, "devices", "demo", "network"])[0];
    assert_eq!(nic["attrs"]["link"], "down");
    let schema = json(&["-c", &uri, "schema", "network"]);
    let link = schema["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "link")
        .unwrap();
    assert_eq!(link["updatable"], true);
    let text = ok(&["-c", &uri, "schema", "disk"]);
    assert!(text.contains("UPDATABLE"), "{text}");
}

/// A real second process holds the state file's lock (util-linux `flock`, the same flock(2)
/// vdev uses): the wait ends after `lock_timeout` with an error naming the holder, and the file
/// is unchanged.
#[test]
fn a_lock_held_by_another_process_is_waited_for_a_bounded_time_and_named() {
    let (_dir, path, uri) = state_file("locked.json");
    ok(&["-c", &uri, "domains"]); // creates the file
    let before = std::fs::read(&path).unwrap();
    let lock = format!("{}.lock", path.display());
    let mut holder = Command::new("flock")
        .args([&lock, "-c", "echo held; exec sleep 60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock (util-linux) runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    let o = vdev(&[
        "-c",
        &format!("{uri}?lock_timeout=300ms"),
        "attach",
        "demo",
        "network",
    ]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("locked") || err.contains("lock of the state file"),
        "{err}"
    );
    assert!(
        err.contains(&format!("process {}", holder.id()))
            || err.contains("(sleep)")
            || err.contains("(flock)"),
        "the error names the holder: {err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing changed");
}

/// A symlink planted at `PATH.lock` is not followed: nothing is created where it points.
#[test]
fn a_symlink_at_the_lock_path_is_not_followed() {
    let (dir, path, uri) = state_file("sym.json");
    let target = dir.path().join("victim");
    std::os::unix::fs::symlink(&target, format!("{}.lock", path.display())).unwrap();
    let o = vdev(&["-c", &uri, "domains"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("symlink"), "{}", stderr(&o));
    assert!(!target.exists(), "the symlink's target was created");
    assert!(!path.exists(), "no state file was written");
}

/// A full disk (a real small tmpfs): the change fails with a clear error, and the state file is
/// left exactly as it was, with no temporary file beside it.
#[test]
fn a_full_disk_leaves_the_state_file_exactly_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        vdev_conformance::missing_real_part("cannot mount a tmpfs (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let path = mnt.join("host.json");
    let uri = format!("mock://{}", path.display());
    ok(&["-c", &uri, "domains"]);
    let before = std::fs::read(&path).unwrap();
    // Fill the rest of the file system.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let o = vdev(&["-c", &uri, "attach", "demo", "network"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("state file") && err.contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "byte for byte as it was"
    );
    let names: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["filler", "host.json", "host.json.lock"],
        "no temporary file left"
    );
}

#[test]
fn completions_man_page_and_version_come_from_the_same_definitions() {
    let bash = ok(&["completions", "bash"]);
    for word in ["apply", "plan", "export", "--connect", "--persistent"] {
        assert!(bash.contains(word), "the bash completion lacks {word}");
    }
    // The script is valid bash (parsed, not run).
    let mut check = Command::new("bash")
        .arg("-n")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("bash runs");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(bash.as_bytes())
        .unwrap();
    assert!(
        check.wait().unwrap().success(),
        "bash -n refused the completion script"
    );
    assert!(ok(&["completions", "zsh"]).starts_with("#compdef vdev"));
    assert!(ok(&["completions", "fish"]).contains("complete -c vdev"));
    let o = vdev(&["completions", "tcsh"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
    let man = ok(&["man"]);
    assert!(man.contains(".TH vdev 1"), "{}", &man[..200.min(man.len())]);
    assert!(man.contains("apply"), "the man page lists the subcommands");
    assert_eq!(
        ok(&["--version"]),
        format!("vdev {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// A state file made like libvirt: libvirt's user aliases, defaults and errors.
#[test]
fn a_mock_like_libvirt_state_file() {
    let (dir, _path, uri) = state_file("libvirt.json");
    let img = dir.path().join("a.raw");
    std::fs::write(&img, b"").unwrap();
    let img = img.to_str().unwrap();
    let like = format!("{uri}?like=libvirt");
    let r = ok(&[
        "-c",
        &like,
        "attach",
        "demo",
        "disk",
        &format!("source={img}"),
        "target=sdb",
    ]);
    assert!(r.starts_with("ua-disk-"), "{r}");
    let dev = &json(&["-c", &uri, "devices", "demo", "disk"])[0];
    assert_eq!(dev["attrs"]["bus"], "scsi", "{dev}");
    let out = vdev(&[
        "-c",
        &uri,
        "attach",
        "demo",
        "disk",
        &format!("source={img}"),
        "target=sdb",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("sdb"), "{}", stderr(&out));
}

/// A state file made like QEMU, with the guest's knobs as URI options: the QEMU vocabulary,
/// its errors, and a guest that locks its tray or never releases a device.
#[test]
fn a_mock_like_qemu_with_guest_knobs_from_the_uri() {
    let (dir, _path, uri) = state_file("qemu.json");
    let img = dir.path().join("a.iso");
    std::fs::write(&img, b"").unwrap();
    let img = img.to_str().unwrap();
    let like = format!("{uri}?like=qemu");
    assert_eq!(
        ok(&[
            "-c",
            &like,
            "attach",
            "demo",
            "disk",
            "media=cdrom",
            &format!("source={img}"),
            "id=cd1"
        ]),
        "cd1\n"
    );
    let locked = format!("{uri}?tray=locked");
    let out = vdev(&[
        "-c",
        &locked,
        "update",
        "demo",
        "disk",
        "cd1",
        &format!("source={img}"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("force=true"), "{}", stderr(&out));
    ok(&[
        "-c",
        &locked,
        "update",
        "demo",
        "disk",
        "cd1",
        &format!("source={img}"),
        "force=true",
    ]);
    let pending = format!("{uri}?removal=pending");
    let out = vdev(&[
        "-c",
        &pending,
        "detach",
        "demo",
        "disk",
        "cd1",
        "--timeout",
        "0.05",
    ]);
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let dev = &json(&["-c", &uri, "devices", "demo", "disk"])[0];
    assert_eq!(dev["state"], "removal-pending");
    // The file speaks like QEMU: a missing image is refused as QEMU refuses it.
    let out = vdev(&[
        "-c",
        &uri,
        "attach",
        "demo",
        "disk",
        "source=/no/such.raw",
        "format=raw",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid attribute 'source'"),
        "{}",
        stderr(&out)
    );
}
