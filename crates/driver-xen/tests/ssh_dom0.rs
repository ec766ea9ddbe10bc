//! End to end over `xen+ssh://` into the lab's Domain-0, the library driven from the host: the
//! driver reaches xenstored through the ssh connection and does the hotplug work on the remote
//! Domain-0 through the same connection (native block hotplug: the lock, the loop device and
//! `physical-device`; `vif-bridge` for a NIC). Faults leave the remote state as it was, checked
//! with independent clients (the host's `xenstore-ls` through the lab's socket, `losetup -a`
//! through the lab's command channel).

mod common;

use std::time::Duration;

use common::{attrs, disk_dump, dom0, domu, losetup_a, ssh_uri, trace, xs_ls, SERIAL};
use vdev_core::{DetachOptions, DeviceType, Error, RemoteErrorKind};
use vdev_driver_xen as _;

fn detach_opts() -> DetachOptions {
    DetachOptions {
        timeout: Duration::from_secs(60),
        force: false,
        ..Default::default()
    }
}

/// A node read on the host through the lab's socket (an independent client).
fn xs_read(path: &str) -> Option<String> {
    let out = std::process::Command::new("xenstore-read")
        .arg(path)
        .env("XENSTORED_PATH", std::env::var("XENSTORED_PATH").unwrap())
        .output()
        .expect("xenstore-read (package xenstore-utils)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Wait (up to 90 s: TCG under load) until device `r` of class `class` (`vbd`, `vif`) of
/// domain `domid` reads state 4 in both frontend and backend. Returns the backend path and the
/// states read last (`"4/4"` when connected).
async fn wait_connected(domid: u32, class: &str, r: impl std::fmt::Display) -> (String, String) {
    let be = format!("/local/domain/0/backend/{class}/{domid}/{r}");
    let states = wait44(
        &format!("/local/domain/{domid}/device/{class}/{r}/state"),
        &format!("{be}/state"),
    )
    .await;
    (be, states)
}

async fn wait44(fe: &str, be: &str) -> String {
    let mut last = String::new();
    for _ in 0..450 {
        let (f, b) = (xs_read(fe), xs_read(be));
        last = format!("{}/{}", f.unwrap_or_default(), b.unwrap_or_default());
        if last == "4/4" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

/// The remote state a fault must leave as it was: the domU's devices in XenStore and the loop
/// devices of Domain-0.
fn remote_state(domid: u32) -> String {
    let vif = [
        format!("/local/domain/{domid}/device/vif"),
        "/local/domain/0/backend/vif".to_owned(),
        format!("/libxl/{domid}/device/vif"),
    ]
    .iter()
    .map(|p| xs_ls(p))
    .collect::<String>();
    format!("{}{vif}--- losetup -a\n{}", disk_dump(domid), losetup_a())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_disk_attached_over_ssh_connects_and_detach_frees_the_loop() {
    let _turn = SERIAL.lock().await;
    let Some(uri) = ssh_uri("timeout=30s") else {
        return;
    };
    let img = "/root/lab/vdev-ssh.img";
    let (ok, out) = dom0(&format!("truncate -s 16M {img}"));
    assert!(ok, "{out}");
    let conn = vdev_core::connect(&uri).await.expect("connect over ssh");
    let d = conn.domain(&domu()).await.unwrap();
    let before = remote_state(d.id.expect("a Xen domain has an id"));
    let t0 = std::time::Instant::now();
    let r = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[
                ("uname", &format!("file:{img}")),
                ("dev", "xvdo"),
                ("mode", "w"),
            ]),
        )
        .await
        .expect("attach over ssh");
    let attach_s = t0.elapsed().as_secs_f64();
    let (be, states) = wait_connected(d.id.expect("a Xen domain has an id"), "vbd", &r).await;
    eprintln!(
        "attach over ssh {attach_s:.1} s, then states {states} after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(states, "4/4", "not connected");
    assert_eq!(
        xs_read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    let node = xs_read(&format!("{be}/node")).expect("node written by the native hotplug");
    let (ok, out) = dom0(&format!(
        "xl block-list {} | awk '{{print $1}}'; echo loop=$(losetup -j {img} -O NAME -n); echo stat=$(stat -L -c %t:%T {node})",
        domu()
    ));
    assert!(ok, "{out}");
    assert!(
        out.lines().any(|l| l.trim() == r.as_str()),
        "xl block-list does not list {r}: {out}"
    );
    assert!(
        out.contains(&format!("loop={node}")),
        "losetup -a does not show {node}: {out}"
    );
    let pd = xs_read(&format!("{be}/physical-device")).unwrap_or_default();
    assert!(
        out.contains(&format!("stat={pd}")),
        "physical-device {pd} is not {node}'s number: {out}"
    );
    conn.detach(&d, &DeviceType::DISK, &r, &detach_opts())
        .await
        .expect("detach over ssh");
    let after = remote_state(d.id.expect("a Xen domain has an id"));
    assert_eq!(after, before, "the detach left something behind");
    conn.close().await.unwrap();
    dom0(&format!("rm -f {img}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nic_attached_over_ssh_gets_its_bridge_port_from_vif_bridge() {
    let _turn = SERIAL.lock().await;
    let Some(uri) = ssh_uri("timeout=30s") else {
        return;
    };
    let conn = vdev_core::connect(&uri).await.expect("connect over ssh");
    let d = conn.domain(&domu()).await.unwrap();
    let before = remote_state(d.id.expect("a Xen domain has an id"));
    let r = conn
        .attach(&d, &DeviceType::NETWORK, &attrs(&[("bridge", "xenbr0")]))
        .await
        .expect("attach a NIC over ssh");
    let (be, states) = wait_connected(d.id.expect("a Xen domain has an id"), "vif", &r).await;
    assert_eq!(states, "4/4", "not connected");
    assert_eq!(
        xs_read(&format!("{be}/hotplug-status")).as_deref(),
        Some("connected")
    );
    let vif = format!("vif{}.{r}", d.id.expect("a Xen domain has an id"));
    let (ok, out) = dom0("ip -br link show master xenbr0");
    assert!(ok, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with(&vif)),
        "{vif} is not in xenbr0: {out}"
    );
    conn.detach(&d, &DeviceType::NETWORK, &r, &detach_opts())
        .await
        .expect("detach the NIC over ssh");
    let (_, out) = dom0(&format!(
        "ip link show {vif} >/dev/null 2>&1 && echo iface-left; true"
    ));
    assert!(!out.contains("iface-left"), "{vif} is still there");
    assert_eq!(
        remote_state(d.id.expect("a Xen domain has an id")),
        before,
        "the detach left something behind"
    );
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_socket_that_does_not_exist_is_an_error_and_changes_nothing() {
    let _turn = SERIAL.lock().await;
    let Some(uri) = ssh_uri("timeout=30s&socket=/nonexistent") else {
        return;
    };
    let domid: u32 = std::env::var("XENLAB_DOMU_ID").unwrap().parse().unwrap();
    let before = remote_state(domid);
    let e = tokio::time::timeout(Duration::from_secs(120), vdev_core::connect(&uri))
        .await
        .expect("connecting to a remote socket that does not exist did not end within 120 s")
        .expect_err("connected to /nonexistent");
    // The message and its sources (the socket's error is the source, not repeated).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    assert!(
        msg.contains("/nonexistent") && msg.contains("no such socket"),
        "{msg}"
    );
    assert_eq!(remote_state(domid), before);
}

/// Whether `e` is the agent request of one try for the block hotplug lock (`flock -n` on
/// `/var/run/xen-hotplug/block` in the agent's shell, vdev_core::remote's trace).
fn is_block_lock_try(e: &trace::Recorded) -> bool {
    e.message == "agent request"
        && e.field("script")
            .is_some_and(|s| s.contains("flock -n") && s.contains("/var/run/xen-hotplug/block"))
}

/// Kill the lab Domain-0's sshd sessions (every child of the listening sshd: the connections it
/// serves), by pid, from inside Domain-0.
fn kill_dom0_ssh_sessions() -> String {
    let (ok, out) = dom0(
        "for p in $(ps -o pid= --ppid $(cat /run/sshd.pid)); do kill -9 $p && echo killed $p; done",
    );
    assert!(ok, "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ssh_connection_killed_in_the_middle_of_an_attach_changes_nothing_and_the_next_attach_reconnects(
) {
    let _turn = SERIAL.lock().await;
    let Some(uri) = ssh_uri("timeout=30s") else {
        return;
    };
    let img = "/root/lab/vdev-ssh-kill.img";
    // Someone else holds the hotplug lock in Domain-0 (as a running block script would), so
    // the attach is certainly in the middle (trying for the lock) when the
    // connection is killed.
    // The holder says it has the lock (a file made under it); waited for up to 60 s.
    let (ok, out) = dom0(&format!(
        "truncate -s 16M {img}; mkdir -p /var/run/xen-hotplug; rm -f /run/vdev-lock-held
setsid sh -c 'echo $$ > /run/vdev-lock-holder.pid; exec flock /var/run/xen-hotplug/block sh -c \"touch /run/vdev-lock-held; exec sleep 120\"' </dev/null >/dev/null 2>&1 &
for i in $(seq 1 600); do [ -e /run/vdev-lock-held ] && break; sleep 0.1; done
[ -e /run/vdev-lock-held ] || {{ echo 'the lock holder did not get the lock within 60 s'; exit 1; }}
cat /run/vdev-lock-holder.pid"
    ));
    assert!(ok, "{out}");
    let holder = out.trim().to_owned();
    // The agent requests are traced at TRACE level.
    trace::install(tracing::Level::TRACE);
    let conn = vdev_core::connect(&uri).await.expect("connect over ssh");
    let d = conn.domain(&domu()).await.unwrap();
    let before = remote_state(d.id.expect("a Xen domain has an id"));
    let a = attrs(&[
        ("uname", &format!("file:{img}")),
        ("dev", "xvdp"),
        ("mode", "w"),
    ]);
    let mark = trace::mark();
    let attach = conn.attach(&d, &DeviceType::DISK, &a);
    let kill = async {
        // Until the attach is certainly waiting for the lock: it has tried once, been refused
        // (the holder has it), and tried again (each try one request to the agent, design
        // 0012). The attach gives up after 40 s, so its tries come well within the deadline.
        trace::wait_for(
            mark,
            Duration::from_secs(90),
            "the attach to try for the hotplug lock a second time (an agent request with flock -n on /var/run/xen-hotplug/block)",
            |seen| seen.iter().filter(|e| is_block_lock_try(e)).count() >= 2,
        )
        .await;
        let killed = kill_dom0_ssh_sessions();
        // Then free the lock, as the script holding it would.
        // (Its whole process group: flock's command inherits the locked descriptor.)
        dom0(&format!(
            "kill -- -{holder}; rm -f /run/vdev-lock-holder.pid /run/vdev-lock-held"
        ));
        killed
    };
    let t0 = std::time::Instant::now();
    let (res, killed) = tokio::join!(tokio::time::timeout(Duration::from_secs(120), attach), kill);
    let res = res.expect("the attach hung after its ssh connection was killed");
    eprintln!("{killed}after {:?}: {res:?}", t0.elapsed());
    // The fault happened: the connection's session was among those killed.
    assert!(
        killed.contains("killed "),
        "no ssh session of Domain-0 was killed: {killed:?}"
    );
    // The attach waits for the lock between tries (each a short request, design 0012), so the
    // kill either hits a request in flight (the attach fails, nothing left) or falls between
    // two tries (the next try logs in again and the attach completes, whole).
    match res {
        Err(Error::Remote {
            kind: RemoteErrorKind::Disconnected,
            ..
        }) => {
            // An orphaned remote shell, if any, may take a moment to notice its end.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let now = remote_state(d.id.expect("a Xen domain has an id"));
                if now == before {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the killed attach left something behind (still after 60 s)\n--- before\n{before}\n--- now\n{now}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(r) => {
            // It outlived the kill only by logging in again (the lock was freed after it).
            let reconnected = trace::since(mark)
                .iter()
                .any(|e| e.message == "ssh connected");
            assert!(
                reconnected,
                "the attach succeeded without a new ssh connection: the kill missed it"
            );
            let (_, states) =
                wait_connected(d.id.expect("a Xen domain has an id"), "vbd", &r).await;
            assert_eq!(states, "4/4", "the attach that outlived the kill is whole");
            conn.detach(&d, &DeviceType::DISK, &r, &detach_opts())
                .await
                .expect("detach");
            assert_eq!(
                remote_state(d.id.expect("a Xen domain has an id")),
                before,
                "attach + detach left something"
            );
        }
        other => panic!("expected success or a Remote Disconnected error, got {other:?}"),
    }
    // The same connection opens a new ssh connection (and xenstored connection) and works.
    let r = conn
        .attach(&d, &DeviceType::DISK, &a)
        .await
        .expect("attach after the connection was killed");
    let (_, states) = wait_connected(d.id.expect("a Xen domain has an id"), "vbd", &r).await;
    assert_eq!(states, "4/4");
    conn.detach(&d, &DeviceType::DISK, &r, &detach_opts())
        .await
        .expect("detach");
    assert_eq!(
        remote_state(d.id.expect("a Xen domain has an id")),
        before,
        "attach + detach left something behind"
    );
    conn.close().await.unwrap();
    dom0(&format!("rm -f {img}"));
}

/// A program of Domain-0 hidden for one test (renamed beside itself), put back when dropped.
struct Hidden(String);

impl Hidden {
    fn new(program: &str) -> Hidden {
        let (ok, out) = dom0(&format!(
            "p=$(command -v {program}) && mv \"$p\" \"$p.vdev-hidden\" && echo \"$p\""
        ));
        assert!(ok, "hiding {program} in Domain-0: {out}");
        Hidden(out.trim().to_owned())
    }
}

impl Drop for Hidden {
    fn drop(&mut self) {
        let (ok, out) = dom0(&format!("mv '{0}.vdev-hidden' '{0}'", self.0));
        assert!(
            ok || std::thread::panicking(),
            "putting {} back in Domain-0: {out}",
            self.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_missing_in_domain_0_is_named_with_its_package_and_changes_nothing() {
    let _turn = SERIAL.lock().await;
    let Some(uri) = ssh_uri("timeout=30s") else {
        return;
    };
    let img = "/root/lab/vdev-missing-program.img";
    let (ok, out) = dom0(&format!("truncate -s 8M {img}"));
    assert!(ok, "{out}");
    let conn = vdev_core::connect(&uri).await.expect("connect over ssh");
    let d = conn.domain(&domu()).await.expect("the lab's domU");
    let domid = d.id.expect("a Xen domain has an id");
    let before = remote_state(domid);
    let listed = conn.devices(&d, None).await.expect("list");
    let e = {
        // Debian's util-linux has it; a minimal Domain-0 may not.
        let _hidden = Hidden::new("losetup");
        conn.attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[("uname", &format!("file:{img}")), ("dev", "xvdy")]),
        )
        .await
        .expect_err("Domain-0 has no losetup")
    };
    eprintln!("{e}");
    match &e {
        Error::Remote { kind, message, .. } => {
            assert_eq!(*kind, RemoteErrorKind::MissingProgram, "{e}");
            assert!(message.contains("`losetup`"), "{message}");
            assert!(message.contains("install util-linux"), "{message}");
        }
        other => panic!("not a MissingProgram error: {other:?}"),
    }
    assert_eq!(
        remote_state(domid),
        before,
        "the failed attach left something"
    );
    assert_eq!(conn.devices(&d, None).await.expect("list"), listed);
    conn.close().await.unwrap();
    let _ = dom0(&format!("rm -f {img}"));
}
