//! Protocol faults a real QEMU does not produce on demand, from a scripted QMP peer: an event the
//! `qapi` crate does not know (QEMU 10's `NETDEV_VHOST_USER_CONNECTED`), a reply cut in half by
//! the peer going away, a guest that refuses an unplug, and a guest that is "busy" for a given
//! number of `device_del`s or for ever (a real guest is busy only for as long as its hotplug
//! driver takes, which no test can fix). Everything else is tested against real QEMU
//! (tests/qemu.rs, tests/guest.rs).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use vdev_core::Error;
use vdev_driver_qemu as _;

/// What the peer does after answering a command.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Send an unknown event before every reply.
    UnknownEvent,
    /// Answer `qom-list` with half a line, then close.
    CutReply,
    /// Have one NIC `nic0`, and refuse its unplug as a guest does on platforms where QEMU
    /// reports it (`DEVICE_UNPLUG_GUEST_ERROR`: pseries, x86 memory; never x86 PCI, measured in
    /// tests/qemu-guest/README.md).
    GuestRefuses,
    /// Have one NIC `nic0`, whose `device_del` the guest is busy for this many times (then
    /// takes, and the NIC goes with `DEVICE_DELETED`); `u32::MAX`: for ever.
    GuestBusy(u32),
}

impl Fault {
    fn has_nic(self) -> bool {
        matches!(self, Fault::GuestRefuses | Fault::GuestBusy(_))
    }
}

/// A QMP peer on `path` that answers the commands listing needs, one client at a time.
fn peer(path: &Path, fault: Fault) -> std::thread::JoinHandle<()> {
    peer_noting(path, fault, Arc::default())
}

/// [`peer`], noting each command it is sent (`execute`, then `arguments.id` where there is one).
fn peer_noting(
    path: &Path,
    fault: Fault,
    seen: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut busy_left = match fault {
            Fault::GuestBusy(n) => n,
            _ => 0,
        };
        let mut deleted = false;
        for stream in listener.incoming().take(2) {
            let Ok(mut w) = stream else { return };
            let r = BufReader::new(w.try_clone().unwrap());
            writeln!(w, r#"{{"QMP": {{"version": {{"qemu": {{"micro": 0, "minor": 0, "major": 10}}, "package": ""}}, "capabilities": ["oob"]}}}}"#).unwrap();
            for line in r.lines() {
                let Ok(line) = line else { break };
                let m: Value = serde_json::from_str(&line).unwrap();
                let id = m["id"].clone();
                seen.lock().unwrap().push(format!(
                    "{} {}",
                    m["execute"].as_str().unwrap_or_default(),
                    m["arguments"]["id"].as_str().unwrap_or_default()
                ));
                let ret = match m["execute"].as_str().unwrap() {
                    "query-name" => json!({"name": "scripted"}),
                    "qom-list" if fault == Fault::CutReply => {
                        let full = json!({"return": [], "id": id}).to_string();
                        w.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
                        break; // closes the socket mid-reply
                    }
                    "qom-list"
                        if fault.has_nic()
                            && !deleted
                            && m["arguments"]["path"] == "/machine/peripheral" =>
                    {
                        json!([{"name": "type", "type": "string"}, {"name": "nic0", "type": "child<virtio-net-pci>"}])
                    }
                    "qom-list" => json!([{"name": "type", "type": "string"}]),
                    "qom-get" if fault.has_nic() => {
                        match m["arguments"]["property"].as_str().unwrap() {
                            "type" => json!("virtio-net-pci"),
                            "netdev" => json!("vdev-nic0"),
                            "mac" => json!("52:54:00:00:00:01"),
                            _ => {
                                writeln!(w, "{}", json!({"error": {"class": "GenericError", "desc": "Property not found"}, "id": id})).unwrap();
                                continue;
                            }
                        }
                    }
                    "device_del" if fault == Fault::GuestRefuses => {
                        writeln!(w, "{}", json!({"return": {}, "id": id})).unwrap();
                        writeln!(w, r#"{{"event": "DEVICE_UNPLUG_GUEST_ERROR", "data": {{"device": "nic0", "path": "/machine/peripheral/nic0"}}, "timestamp": {{"seconds": 1, "microseconds": 4}}}}"#).unwrap();
                        continue;
                    }
                    "device_del" if busy_left > 0 => {
                        busy_left = busy_left.saturating_sub(u32::from(busy_left != u32::MAX));
                        writeln!(w, "{}", json!({"error": {"class": "GenericError", "desc": "Hot-unplug failed: guest is busy (power indicator blinking)"}, "id": id})).unwrap();
                        continue;
                    }
                    "device_del" if matches!(fault, Fault::GuestBusy(_)) => {
                        deleted = true;
                        writeln!(w, "{}", json!({"return": {}, "id": id})).unwrap();
                        writeln!(w, r#"{{"event": "DEVICE_DELETED", "data": {{"device": "nic0", "path": "/machine/peripheral/nic0"}}, "timestamp": {{"seconds": 1, "microseconds": 5}}}}"#).unwrap();
                        continue;
                    }
                    "query-block" => json!([]),
                    _ => json!({}),
                };
                if fault == Fault::UnknownEvent {
                    writeln!(w, r#"{{"event": "NETDEV_VHOST_USER_CONNECTED", "data": {{"netdev-id": "n0", "chardev-id": "c0"}}, "timestamp": {{"seconds": 1, "microseconds": 2}}}}"#).unwrap();
                    writeln!(w, r#"{{"event": "VDEV_NO_SUCH_EVENT", "timestamp": {{"seconds": 1, "microseconds": 3}}}}"#).unwrap();
                }
                writeln!(w, "{}", json!({"return": ret, "id": id})).unwrap();
            }
        }
    })
}

#[tokio::test]
async fn unknown_events_do_not_end_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("peer.qmp");
    let _peer = peer(&sock, Fault::UnknownEvent);
    let conn = vdev_core::connect(&format!("qemu://{}", sock.display()))
        .await
        .unwrap();
    let d = conn.domain("scripted").await.expect("name from query-name");
    // Every command is preceded by two unknown events; the session goes on answering.
    for _ in 0..3 {
        assert_eq!(
            conn.devices(&d, None)
                .await
                .expect("list after unknown events"),
            vec![]
        );
    }
}

#[tokio::test]
async fn a_reply_cut_in_half_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("peer.qmp");
    let _peer = peer(&sock, Fault::CutReply);
    let conn = vdev_core::connect(&format!("qemu://{}?timeout=60s", sock.display()))
        .await
        .unwrap();
    let d = conn.domain("scripted").await.unwrap();
    let e = conn.devices(&d, None).await.expect_err("the reply was cut");
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    let chain = format!("{e} / {:?}", std::error::Error::source(&e));
    assert!(
        chain.contains("middle of a message")
            || chain.contains("does not answer")
            || chain.contains("went away"),
        "{chain}"
    );
}

#[tokio::test]
async fn a_guest_that_refuses_the_unplug_gives_a_typed_error_and_an_event() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("peer.qmp");
    let _peer = peer(&sock, Fault::GuestRefuses);
    let conn = vdev_core::connect(&format!("qemu://{}", sock.display()))
        .await
        .unwrap();
    let d = conn.domain("scripted").await.unwrap();
    let mut events = conn.events().await.unwrap();
    let nic = vdev_core::DeviceRef::new("nic0").unwrap();
    let e = conn
        .detach(
            &d,
            &vdev_core::DeviceType::NETWORK,
            &nic,
            &vdev_core::DetachOptions {
                timeout: std::time::Duration::from_secs(30),
                force: false,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::RemovalRefused { .. }), "{e}");
    assert_eq!(e.code(), "removal-refused");
    let ev = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("event");
    assert!(
        matches!(&ev, vdev_core::DeviceEvent::StateChanged { state: vdev_core::DeviceState::Connected, reference, .. } if reference.as_str() == "nic0"),
        "{ev:?}"
    );
    let listed = conn.devices(&d, None).await.unwrap();
    assert_eq!(listed[0].state, vdev_core::DeviceState::Connected);
}

/// A connection to a scripted peer with `fault`, noting what it is sent, and its one domain.
async fn scripted(
    fault: Fault,
) -> (
    tempfile::TempDir,
    Arc<Mutex<Vec<String>>>,
    vdev_core::Connection,
    vdev_core::Domain,
) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("peer.qmp");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _peer = peer_noting(&sock, fault, Arc::clone(&seen));
    let conn = vdev_core::connect(&format!("qemu://{}", sock.display()))
        .await
        .unwrap();
    let d = conn.domain("scripted").await.unwrap();
    (dir, seen, conn, d)
}

/// The peer's NIC.
fn nic0() -> (vdev_core::DeviceRef, vdev_core::DeviceType) {
    (
        vdev_core::DeviceRef::new("nic0").unwrap(),
        vdev_core::DeviceType::NETWORK,
    )
}

/// A guest busy for three `device_del`s: the driver asks again (with back-off) and the fourth is
/// taken; the NIC goes.
#[tokio::test]
async fn a_busy_guest_is_asked_again_until_it_takes_the_request() {
    let (_dir, seen, conn, d) = scripted(Fault::GuestBusy(3)).await;
    let (nic, t) = nic0();
    conn.detach(&d, &t, &nic, &vdev_core::DetachOptions::default())
        .await
        .expect("taken at the fourth request");
    let dels = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.as_str() == "device_del nic0")
        .count();
    assert_eq!(dels, 4, "asked until taken: {:?}", seen.lock().unwrap());
    assert!(conn.devices(&d, Some(&t)).await.unwrap().is_empty());
}

/// A guest busy for ever: the detach ends at its timeout with `Timeout`, having requested
/// nothing: the removal record it made is taken back, and the NIC is listed connected.
#[tokio::test]
async fn a_guest_busy_all_the_time_is_a_timeout_that_requests_nothing() {
    let (_dir, seen, conn, d) = scripted(Fault::GuestBusy(u32::MAX)).await;
    let (nic, t) = nic0();
    let e = conn
        .detach(
            &d,
            &t,
            &nic,
            &vdev_core::DetachOptions {
                timeout: std::time::Duration::from_millis(500),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Timeout { operation, .. } if operation.contains("nothing was requested")),
        "{e:?}"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .filter(|c| c.as_str() == "device_del nic0")
            .count()
            >= 2,
        "asked again while busy: {seen:?}"
    );
    let added = seen.iter().position(|c| c.starts_with("object-add "));
    let removed = seen.iter().rposition(|c| c.starts_with("object-del "));
    assert!(
        matches!((added, removed), (Some(a), Some(r)) if r > a),
        "the removal record was made and taken back: {seen:?}"
    );
    let listed = conn.devices(&d, Some(&t)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, vdev_core::DeviceState::Connected);
}
