//! The `vdev` command and several `Connection`s against one real QEMU (q35, no guest OS): what
//! vdev promises must hold across processes. An independent raw QMP client (its own socket)
//! checks QEMU's state after each step.

#[path = "../../driver-qemu/tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::{qemu_available, Vm, VmSpec};
use serde_json::{json, Value};
use support::{devices_of, ok, state_in, vdev};
use vdev_conformance::process::{output, spawn, wait_until, PROCESS_DEADLINE};

/// The domain the URI's socket reaches (`vm`, or `second` for the VM's second socket: a domain
/// is named after its socket).
fn domain_of(uri: &str) -> &'static str {
    if uri.ends_with("second.sock") {
        "second"
    } else {
        "vm"
    }
}

fn devices(uri: &str) -> Vec<Value> {
    devices_of(uri, domain_of(uri))
}

fn state_of(uri: &str, r: &str) -> Option<String> {
    state_in(uri, domain_of(uri), r)
}

/// Removal left pending by `detach --timeout 0`: the process exits, QEMU deletes the device
/// later, and the next vdev process collects the block nodes. Nothing `vdev-*` is left.
#[test]
fn a_pending_scsi_removal_is_collected_by_the_next_process() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let uri = vm.uri();
    let img = vm.image("d.img", "raw");
    let mut raw = vm.raw();
    let r = ok(
        &uri,
        &[
            "attach",
            "vm",
            "disk",
            &format!("source={}", img.display()),
            "format=raw",
        ],
    );
    let node = raw.node_of(&r).expect("the disk has its node");
    let o = vdev(&uri, &["detach", "vm", "disk", &r, "--timeout", "0"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() || err.contains("pending"),
        "detach --timeout 0 either finished or said pending: {err}"
    );
    // QEMU deletes a scsi-hd by itself ~50 ms later; the detaching process has exited.
    assert!(raw.wait_gone(&r), "QEMU deleted the device");
    // The next vdev command (any) collects what the removal left.
    let listed = devices(&uri);
    assert!(listed.iter().all(|d| d["ref"] != r.as_str()));
    assert!(
        !raw.nodes().contains(&node),
        "the node {node} of the removed disk is gone"
    );
    assert_eq!(raw.leftovers(), Vec::<String>::new());
    assert_eq!(raw.marked(), Vec::<String>::new(), "no marker left");
}

/// A removal that stays pending (virtio-net without a guest on q35's ACPI hotplug) is listed
/// `removal-pending` by every other process; a second detach from another process asks again
/// and is still pending, not an error; a node made by another client is never touched.
#[test]
fn pending_is_seen_by_every_process_and_a_second_detach_asks_again() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let uri = vm.uri();
    let mut raw = vm.raw();
    let r = ok(&uri, &["attach", "vm", "network", "model=virtio-net-pci"]);
    assert_eq!(state_of(&uri, &r).as_deref(), Some("connected"));
    let o = vdev(&uri, &["detach", "vm", "network", &r, "--timeout", "0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("pending"));
    assert_eq!(state_of(&uri, &r).as_deref(), Some("removal-pending"));
    assert_eq!(
        state_of(&vm.second_uri(), &r).as_deref(),
        Some("removal-pending"),
        "another socket, another process: the same truth"
    );
    let o = vdev(&uri, &["detach", "vm", "network", &r, "--timeout", "0.2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pending"),
        "a second detach is pending again: {err}"
    );
    assert!(raw.has_device(&r), "without a guest the NIC stays");
    assert_eq!(raw.marked(), vec![r.clone()]);
    // Someone else's node is not vdev's to collect, whatever happens to devices.
    raw.ok(
        "blockdev-add",
        json!({"driver": "null-co", "node-name": "other-node"}),
    );
    let _ = devices(&uri);
    assert!(raw.nodes().contains(&"other-node".to_owned()));
}

/// A device given to QEMU by another client, on that client's own node: vdev detaches the
/// device but never removes the node.
#[test]
fn a_backend_vdev_did_not_make_is_never_removed() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let uri = vm.uri();
    let img = vm.image("ext.img", "raw");
    let mut raw = vm.raw();
    raw.ok(
        "blockdev-add",
        json!({"driver": "raw", "node-name": "ext0", "file": {"driver": "file", "filename": img}}),
    );
    raw.ok(
        "device_add",
        json!({"driver": "scsi-hd", "id": "extdisk", "drive": "ext0", "bus": "scsi0.0"}),
    );
    ok(
        &uri,
        &["detach", "vm", "disk", "extdisk", "--timeout", "10"],
    );
    assert!(!raw.has_device("extdisk"));
    let _ = devices(&uri);
    assert!(raw.nodes().contains(&"ext0".to_owned()), "ext0 stays");
}

/// An application holds a connection with its event stream open; one-shot `vdev` commands in
/// other processes work at the same time (through the VM's further socket `vm.qmp.1`).
#[test]
fn an_open_application_does_not_lock_out_the_command() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec {
        more_sockets: 1,
        ..VmSpec::default()
    });
    let uri = vm.uri();
    let img = vm.image("d.img", "raw");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (conn, mut events) = rt.block_on(async {
        let conn = vdev::connect(&uri).await.expect("connect");
        let d = conn.domain("vm").await.unwrap();
        let ev = conn.events().await.unwrap();
        conn.devices(&d, None).await.unwrap();
        (conn, ev)
    });
    let r = ok(
        &uri,
        &[
            "attach",
            "vm",
            "disk",
            &format!("source={}", img.display()),
            "format=raw",
        ],
    );
    assert_eq!(state_of(&uri, &r).as_deref(), Some("connected"));
    ok(&uri, &["detach", "vm", "disk", &r]);
    // The application, still connected, saw the removal made by the other process.
    rt.block_on(async {
        use futures::StreamExt;
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(e) = events.next().await {
                if matches!(&e, Ok(vdev::DeviceEvent::Removed { reference, .. }) if reference.as_str() == r) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(got, Ok(true), "the application got the Removed event");
        conn.close().await.unwrap();
    });
}

/// Eight `vdev attach` processes at once on one VM with one spare socket: all succeed.
#[test]
fn eight_attach_commands_at_once_all_succeed() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec {
        more_sockets: 1,
        scsi: 1,
        ..VmSpec::default()
    });
    let uri = vm.uri();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let img = vm.image(&format!("d{i}.img"), "raw");
            spawn(
                Command::new(env!("CARGO_BIN_EXE_vdev"))
                    .args(["-c", &uri, "attach", "vm", "disk"])
                    .arg(format!("source={}", img.display()))
                    .arg("format=raw")
                    .env_remove("RUST_LOG"),
            )
        })
        .collect();
    // All eight within one deadline (they run at the same time).
    let deadline = Instant::now() + PROCESS_DEADLINE;
    let outs: Vec<Output> = children
        .into_iter()
        .enumerate()
        .map(|(i, c)| wait_until(c, deadline, &format!("attach {i} of 8 (d{i}.img)")))
        .collect();
    for o in &outs {
        assert!(
            o.status.success(),
            "every attach succeeds: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mut raw = vm.raw();
    let disks = raw
        .devices()
        .into_iter()
        .filter(|(_, m)| m == "scsi-hd")
        .count();
    assert_eq!(disks, 8);
}

/// A monitor held by a client outside vdev: the error says so, and how to fix it, within the
/// request timeout.
#[test]
fn a_socket_held_by_another_client_is_named_as_such() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let _holder = common::Raw::connect(&vm.socket);
    let o = vdev(&format!("{}?timeout=1s", vm.uri()), &["devices", "vm"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("another client holds") && err.contains("-qmp unix:"),
        "names the cause and the fix: {err}"
    );
}

/// An absurd duration is refused, not a panic.
#[test]
fn out_of_range_timeouts_are_refused() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    for t in ["10000000000000000000s", "2h", "0s"] {
        let o = vdev(&format!("{}?timeout={t}", vm.uri()), &["devices", "vm"]);
        assert_eq!(o.status.code(), Some(1), "timeout={t}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("between 1ms and 1h"), "{t}: {err}");
    }
}

/// The same command over `qemu+ssh://`, given with `-c` and with `VDEV_DEFAULT_URI`, against a
/// real sshd on loopback: what one process did the next sees (checked by the raw client too);
/// the first process's login serves the next ones (the command's default `persist=`), unless
/// `--ssh-persist 0` says otherwise. A bad host key is a clear error and exit status, never a
/// prompt.
#[test]
fn the_command_over_ssh() {
    if !qemu_available() {
        return;
    }
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let vm = Vm::start(VmSpec::default());
    let mut raw = vm.raw();
    let uri = format!(
        "qemu+ssh://{}{}?{}",
        sshd.authority(),
        vm.socket.display(),
        sshd.query()
    );
    let img = vm.image("ssh.raw", "raw");
    let r = ok(
        &uri,
        &[
            "attach",
            "vm",
            "disk",
            &format!("source={}", img.display()),
            "format=raw",
            "bus=scsi",
        ],
    );
    assert!(raw.has_device(&r), "QEMU has no {r}");
    let logins = || sshd.log().matches("Accepted publickey").count();
    assert_eq!(logins(), 1, "{}", sshd.log());
    // Another process, the URI from the environment: no login of its own.
    let listed = output(
        Command::new(env!("CARGO_BIN_EXE_vdev"))
            .args(["--json", "devices", "vm", "disk"])
            .env("VDEV_DEFAULT_URI", &uri)
            .env_remove("RUST_LOG"),
        "vdev --json devices vm disk (VDEV_DEFAULT_URI)",
    );
    assert!(listed.status.success(), "{listed:?}");
    let v: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        v.as_array().unwrap().iter().any(|d| d["ref"] == r.as_str()),
        "{v}"
    );
    assert_eq!(
        logins(),
        1,
        "the second command logged in again: {}",
        sshd.log()
    );
    // Turned off: a login of its own, left to nobody.
    ok(&uri, &["--ssh-persist", "0", "devices", "vm"]);
    assert_eq!(logins(), 2, "{}", sshd.log());
    ok(&uri, &["detach", "vm", "disk", &r]);
    assert!(raw.wait_gone(&r));
    assert_eq!(raw.leftovers(), Vec::<String>::new());
    // An unknown host key: refused with ssh's words, no prompt (stdin is closed anyway).
    let kh = sshd.dir.path().join("none");
    std::fs::write(&kh, "").unwrap();
    let bad = format!(
        "qemu+ssh://{}{}?keyfile={}&known_hosts={}",
        sshd.authority(),
        vm.socket.display(),
        sshd.key.display(),
        kh.display()
    );
    let o = vdev(&bad, &["devices", "vm"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Host key verification failed") && err.contains("no_verify=1"),
        "{err}"
    );
    ssh_gets_only_the_allowed_environment(&sshd, &vm);
}

/// What `ssh` is started with: the documented allow-list of variables (design 0011), nothing
/// else of the caller's environment. Seen by a `command=` program that records its environment
/// and runs the real ssh.
fn ssh_gets_only_the_allowed_environment(sshd: &vdev_conformance::sshd::Sshd, vm: &Vm) {
    const ALLOWED: &[&str] = &[
        "HOME",
        "USER",
        "LOGNAME",
        "PATH",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TMPDIR",
        "XDG_RUNTIME_DIR",
        "SSH_AUTH_SOCK",
        "SSH_ASKPASS",
        "SSH_ASKPASS_REQUIRE",
        "DISPLAY",
        "KRB5CCNAME",
        "KRB5_CONFIG",
        "KRB5_KTNAME",
        "SSH_SK_PROVIDER",
    ];
    let shim = sshd.dir.path().join("recording-ssh");
    let seen = sshd.dir.path().join("ssh.env");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nenv > '{}'\nexec ssh \"$@\"\n", seen.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let uri = format!(
        "qemu+ssh://{}{}?{}&command={}",
        sshd.authority(),
        vm.socket.display(),
        sshd.query(),
        shim.display()
    );
    let o = output(
        Command::new(env!("CARGO_BIN_EXE_vdev"))
            .args(["-c", &uri, "devices", "vm"])
            .env("VDEV_TEST_SECRET", "not for ssh")
            // Its own login, so that the recorder runs (a kept login would serve it).
            .env("VDEV_SSH_PERSIST", "0")
            .env("LD_LIBRARY_PATH", "/nonexistent")
            .env("LANG", "C.UTF-8")
            .env_remove("RUST_LOG"),
        "vdev devices vm (recording ssh)",
    );
    assert!(o.status.success(), "{o:?}");
    let env = std::fs::read_to_string(&seen).expect("the ssh program ran");
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    // The shell running the recorder adds a few of its own (PWD, SHLVL, _).
    let extra: Vec<&&str> = names
        .iter()
        .filter(|n| !ALLOWED.contains(n) && !matches!(**n, "PWD" | "OLDPWD" | "SHLVL" | "_"))
        .collect();
    assert!(
        extra.is_empty(),
        "ssh got variables beyond the allow-list: {extra:?}\n{env}"
    );
    assert!(
        env.lines().any(|l| l == "LANG=C.UTF-8"),
        "LANG is passed on: {env}"
    );
    assert!(!env.contains("VDEV_TEST_SECRET") && !env.contains("LD_LIBRARY_PATH"));
}

/// The file QEMU has in the drive of device `id`, as an independent client reads it.
fn inserted_file(raw: &mut common::Raw, id: &str) -> Option<String> {
    let b = raw.block(id).expect("QEMU has the drive");
    b["inserted"]["file"].as_str().map(str::to_owned)
}

/// `vdev update` on a real QEMU: a CD-ROM's medium changed and ejected, a NIC's link taken down
/// and up, each seen by an independent QMP client (the drive's file in query-block; for the link,
/// the QOM marker vdev keeps beside the device: QEMU 7.2 reports a link's state to no QMP or HMP
/// query, only to the guest); a refused update changes nothing.
#[test]
fn update_changes_a_medium_and_a_link_as_qemu_sees_them() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let uri = vm.uri();
    let mut raw = vm.raw();
    let (a, b) = (vm.image("a.iso", "raw"), vm.image("b.iso", "raw"));
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let cd = ok(
        &uri,
        &[
            "attach",
            "vm",
            "disk",
            "media=cdrom",
            &format!("source={a}"),
        ],
    );
    assert_eq!(inserted_file(&mut raw, &cd).as_deref(), Some(a.as_str()));
    ok(&uri, &["update", "vm", "disk", &cd, &format!("source={b}")]);
    assert_eq!(inserted_file(&mut raw, &cd).as_deref(), Some(b.as_str()));
    let listed = devices(&uri);
    let d = listed
        .iter()
        .find(|d| d["ref"] == cd.as_str())
        .expect("listed");
    assert_eq!(d["attrs"]["source"], b.as_str(), "{d}");

    // Refused (media is not updatable; a missing image): an error naming it, nothing changed.
    let before = raw.snapshot();
    for (attr, named) in [
        ("media=disk", "media"),
        ("source=/nonexistent.iso", "source"),
    ] {
        let o = vdev(&uri, &["update", "vm", "disk", &cd, attr]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "update {attr} was refused");
        assert!(err.contains(named), "the error names {named}: {err}");
        assert_eq!(raw.snapshot(), before, "update {attr} changed nothing");
        assert_eq!(inserted_file(&mut raw, &cd).as_deref(), Some(b.as_str()));
    }

    ok(&uri, &["update", "vm", "disk", &cd, "source="]);
    assert_eq!(inserted_file(&mut raw, &cd), None, "ejected");

    let nic = ok(&uri, &["attach", "vm", "network"]);
    let marker = format!("vdev-link-down.{nic}");
    let markers = |raw: &mut common::Raw| -> Vec<String> {
        raw.ok("qom-list", json!({"path": "/objects"}))
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(!markers(&mut raw).contains(&marker));
    ok(&uri, &["update", "vm", "network", &nic, "link=down"]);
    assert!(markers(&mut raw).contains(&marker));
    let listed = devices(&uri);
    let n = listed
        .iter()
        .find(|d| d["ref"] == nic.as_str())
        .expect("listed");
    assert_eq!(n["attrs"]["link"], "down", "{n}");
    ok(&uri, &["update", "vm", "network", &nic, "link=up"]);
    assert!(!markers(&mut raw).contains(&marker));
}

/// Two `vdev apply` of one document at once on one QEMU (two QMP sockets, so that both
/// processes really are connected together): each disk is attached once, and neither process
/// ends with an error (the one whose batch meets the other's disks plans again).
#[test]
fn two_applies_at_once_attach_each_disk_once() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec {
        more_sockets: 1,
        ..VmSpec::default()
    });
    let mut raw = vm.raw();
    let base = raw.devices().len();
    let mut doc = String::from("domains:\n  vm:\n    devices:\n");
    for i in 0..6 {
        let img = vm.image(&format!("c{i}.raw"), "raw");
        doc.push_str(&format!(
            "      - {{type: disk, attrs: {{source: {}, format: raw}}}}\n",
            img.display()
        ));
    }
    let file = vm.image("unused.raw", "raw").with_file_name("doc.yaml");
    std::fs::write(&file, doc).unwrap();
    let file = file.display().to_string();
    // vdev takes whichever of the domain's sockets is free.
    let uri = vm.uri();
    let children: Vec<Child> = (0..2)
        .map(|_| {
            spawn(
                Command::new(env!("CARGO_BIN_EXE_vdev"))
                    .args(["-c", &uri, "apply", &file])
                    .env_remove("RUST_LOG"),
            )
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let o = wait_until(c, Instant::now() + PROCESS_DEADLINE, "vdev apply");
        assert!(
            o.status.success(),
            "apply {i}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let devices = raw.devices();
    assert_eq!(devices.len(), base + 6, "each disk once: {devices:?}");
    assert_eq!(raw.leftovers(), Vec::<String>::new());
    // And the document plans to nothing now.
    assert_eq!(ok(&uri, &["--json", "plan", &file]), r#"{"changes":[]}"#);
}
