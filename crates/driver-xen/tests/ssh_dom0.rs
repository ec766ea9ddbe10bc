//! End to end over `xen+ssh://` into the lab's Domain-0, the library driven from the host: the
//! driver reaches xenstored through the ssh connection and does the hotplug work on the remote
//! Domain-0 through the same connection (native block hotplug: the lock, the loop device and
//! `physical-device`; `vif-bridge` for a NIC). Faults leave the remote state as it was, checked
//! with independent clients (the host's `xenstore-ls` through the lab's socket, `losetup -a`
//! through the lab's command channel).

mod common;

use std::time::Duration;

use common::{attrs, disk_dump, dom0, domu, losetup_a, ssh_uri, xs_ls, SERIAL};
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
    let t0 = std::time::Instant::now();
    let e = vdev_core::connect(&uri)
        .await
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
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(remote_state(domid), before);
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
    let (ok, out) = dom0(&format!(
        "truncate -s 16M {img}; mkdir -p /var/run/xen-hotplug
setsid sh -c 'echo $$ > /run/vdev-lock-holder.pid; exec flock /var/run/xen-hotplug/block sleep 120' </dev/null >/dev/null 2>&1 &
for i in $(seq 1 50); do [ -s /run/vdev-lock-holder.pid ] && break; sleep 0.1; done; cat /run/vdev-lock-holder.pid"
    ));
    assert!(ok, "{out}");
    let holder = out.trim().to_owned();
    let conn = vdev_core::connect(&uri).await.expect("connect over ssh");
    let d = conn.domain(&domu()).await.unwrap();
    let before = remote_state(d.id.expect("a Xen domain has an id"));
    let a = attrs(&[
        ("uname", &format!("file:{img}")),
        ("dev", "xvdp"),
        ("mode", "w"),
    ]);
    let attach = conn.attach(&d, &DeviceType::DISK, &a);
    let kill = async {
        // Long enough for the attach to be trying for the lock on Domain-0.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let killed = kill_dom0_ssh_sessions();
        // Then free the lock, as the script holding it would.
        // (Its whole process group: flock's command inherits the locked descriptor.)
        dom0(&format!(
            "kill -- -{holder}; rm -f /run/vdev-lock-holder.pid"
        ));
        killed
    };
    let t0 = std::time::Instant::now();
    let (res, killed) = tokio::join!(tokio::time::timeout(Duration::from_secs(120), attach), kill);
    let res = res.expect("the attach hung after its ssh connection was killed");
    eprintln!("{killed}after {:?}: {res:?}", t0.elapsed());
    // The attach waits for the lock between tries (each a short request, design 0012), so the
    // kill either hits a request in flight (the attach fails, nothing left) or falls between
    // two tries (the next try logs in again and the attach completes, whole).
    match res {
        Err(Error::Remote {
            kind: RemoteErrorKind::Disconnected,
            ..
        }) => {
            // Let an orphaned remote shell, if any, notice its end.
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(
                remote_state(d.id.expect("a Xen domain has an id")),
                before,
                "the killed attach left something behind"
            );
        }
        Ok(r) => {
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
