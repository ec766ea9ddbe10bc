//! The driver re-opens a lost xenstored connection: a request on a dead connection fails (an
//! error within the request timeout, never a hang), the next operation opens a new connection,
//! and the event stream registers its watches again and goes on. Locally through a forwarder
//! to the lab's socket that is killed and restarted; over `xen+ssh://` through a test sshd on
//! this machine (forwarding to the lab's socket) that is killed and restarted.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use vdev_core::{DeviceEvent, DeviceType, EventStream};
use vdev_driver_xen as _;

use common::{attrs, domu, force, lab, SERIAL};

/// A socat forwarder from `at` to the lab's socket, killed by pid on drop.
struct Relay {
    child: std::process::Child,
}

impl Relay {
    fn start(at: &Path, lab: &str) -> Relay {
        let _ = std::fs::remove_file(at);
        let child = std::process::Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork,unlink-early", at.display()))
            .arg(format!("UNIX-CONNECT:{lab}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(at).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "socat did not listen at {} within 30 s",
                at.display()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        Relay { child }
    }

    /// Kill it and every connection it forwards (its forked children), by pid. Stopped first,
    /// it forks no new child while the others are found and killed (the driver reconnects at
    /// once when its connection dies, and a child forked then would outlive the relay).
    fn kill(&mut self) {
        let me = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &me])
            .status();
        if let Ok(d) = std::fs::read_dir("/proc") {
            for e in d.flatten() {
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.split_whitespace().nth(1).map(str::to_owned));
                if ppid.as_deref() == Some(me.as_str()) {
                    let _ = std::process::Command::new("kill")
                        .arg("-9")
                        .arg(e.file_name())
                        .status();
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The next event about disk `dev` of the domU that is an `Added`, within 120 s.
async fn next_added(ev: &mut EventStream) -> DeviceEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match tokio::time::timeout_at(deadline, ev.next()).await {
            Err(_) => panic!("no Added event within 120 s"),
            Ok(None) => panic!("the event stream ended"),
            Ok(Some(Err(e))) => eprintln!("event stream reported: {e}"),
            Ok(Some(Ok(e @ DeviceEvent::Added { .. }))) => return e,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Both directions of a lost connection, for a connection at `uri` whose link `cut` kills and
/// `heal` restores.
async fn lose_and_recover(uri: &str, dev: &str, cut: &mut dyn FnMut(), heal: &mut dyn FnMut()) {
    let conn = vdev_core::connect(uri).await.expect("connect");
    let d = conn.domain(&domu()).await.unwrap();
    let mut events = conn.events().await.expect("events");
    cut();
    // A request on the dead connection fails in bounded time (it may try to reconnect and
    // fail: the link is down).
    let t0 = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(120), conn.domains())
        .await
        .expect("a request on a dead connection hung");
    assert!(r.is_err(), "listing succeeded with the link down: {r:?}");
    eprintln!("failed after {:?}: {}", t0.elapsed(), r.unwrap_err());
    heal();
    // The next operation opens a new connection.
    let mut ok = false;
    for _ in 0..30 {
        if conn.domains().await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(ok, "no new connection after the link came back");
    // The event stream registered its watches again: a new disk is reported.
    let a = attrs(&[
        ("uname", &format!("file:/root/lab/vdev-{dev}.img")),
        ("dev", dev),
        ("mode", "w"),
    ]);
    let r = conn
        .attach(&d, &DeviceType::DISK, &a)
        .await
        .expect("attach after reconnecting");
    match next_added(&mut events).await {
        DeviceEvent::Added { reference, .. } => assert_eq!(reference, r),
        _ => unreachable!(),
    }
    conn.detach(&d, &DeviceType::DISK, &r, &force())
        .await
        .expect("detach");
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locally_a_lost_forwarder_fails_requests_and_the_next_operation_reconnects() {
    let _turn = SERIAL.lock().await;
    let Some(lab) = lab() else { return };
    let dir = tempfile_dir("vdev-xen-relay");
    let at = dir.join("xs.sock");
    let relay = std::cell::RefCell::new(Relay::start(&at, &lab));
    let uri = format!("xen:///?socket={}&timeout=5s&hotplug=no", at.display());
    lose_and_recover(&uri, "xvdy", &mut || relay.borrow_mut().kill(), &mut || {
        *relay.borrow_mut() = Relay::start(&at, &lab)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ssh_a_killed_sshd_fails_requests_and_the_next_operation_reconnects() {
    let _turn = SERIAL.lock().await;
    let Some(lab) = lab() else { return };
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    // This machine through a test sshd, forwarding to the lab's socket.
    let uri = format!(
        "xen+ssh://{}/?{}&socket={lab}&timeout=10s&hotplug=no",
        sshd.authority(),
        sshd.query()
    );
    let sshd = std::cell::RefCell::new(sshd);
    lose_and_recover(&uri, "xvdz", &mut || sshd.borrow_mut().kill(), &mut || {
        sshd.borrow_mut().restart()
    })
    .await;
}

fn tempfile_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
