//! Protocol faults a real QEMU does not produce on demand, from a scripted QMP peer: an event the
//! `qapi` crate does not know (QEMU 10's `NETDEV_VHOST_USER_CONNECTED`), and a reply cut in half
//! by the peer going away. Everything else is tested against real QEMU (tests/qemu.rs).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;

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
}

/// A QMP peer on `path` that answers the commands listing needs, one client at a time.
fn peer(path: &Path, fault: Fault) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut w) = stream else { return };
            let r = BufReader::new(w.try_clone().unwrap());
            writeln!(w, r#"{{"QMP": {{"version": {{"qemu": {{"micro": 0, "minor": 0, "major": 10}}, "package": ""}}, "capabilities": ["oob"]}}}}"#).unwrap();
            for line in r.lines() {
                let Ok(line) = line else { break };
                let m: Value = serde_json::from_str(&line).unwrap();
                let id = m["id"].clone();
                let ret = match m["execute"].as_str().unwrap() {
                    "query-name" => json!({"name": "scripted"}),
                    "qom-list" if fault == Fault::CutReply => {
                        let full = json!({"return": [], "id": id}).to_string();
                        w.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
                        break; // closes the socket mid-reply
                    }
                    "qom-list" => json!([{"name": "type", "type": "string"}]),
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
