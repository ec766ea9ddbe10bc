//! The `+ssh` transport (`vdev_remote`) against a real OpenSSH server on loopback: the
//! agent runs commands with their status and output, a remote unix socket is reached through
//! the same connection, the connection is re-opened after sshd dies, and bad hosts, keys and
//! host keys give typed errors carrying ssh's own words, without prompting.

use std::path::Path;
use std::time::Duration;

use vdev_conformance::sshd::Sshd;
use vdev_core::{ConnectUri, Error, RemoteErrorKind};
use vdev_remote::{Host, SocketState, SshTarget};

const T: Duration = Duration::from_secs(30);

/// Wait (up to 60 s: a loaded machine) until `marker` exists: a remote command creates it
/// when it has started (the test sshd runs on this machine), so that what the test does next
/// certainly happens while that command runs.
async fn wait_started(marker: &Path, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not start within 60 s (it creates {})",
            marker.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn host(uri: &str) -> Host {
    Host::from_uri(
        &mut ConnectUri::parse(uri).unwrap(),
        Duration::from_secs(15),
    )
    .unwrap()
}

fn uri(s: &Sshd, query: &str) -> String {
    format!("qemu+ssh://{}/x?{query}", s.authority())
}

#[tokio::test]
async fn commands_and_sockets_over_one_connection() {
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let h = host(&uri(&sshd, &sshd.query()));
    let out = h
        .run("echo hello; echo oops >&2; printf 'no newline'; exit 7", T)
        .await
        .unwrap();
    assert_eq!(out.status, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\nno newline");
    assert_eq!(out.stderr.trim(), "oops");
    // Output that looks like the framing does not confuse it; quoting survives.
    let odd = "a 'b' \"c\" $d `e` \\f\nVDEV-AGENT-1 READY";
    let out = h
        .run(&format!("printf '%s' {}", vdev_remote::sh_quote(odd)), T)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), odd);
    // A program the host lacks is named (drivers turn it into a MissingProgram error).
    let out = h.run("vdev-no-such-helper --version", T).await.unwrap();
    assert_eq!(
        out.missing_program().as_deref(),
        Some("vdev-no-such-helper")
    );
    // State set in the session stays between calls; a subshell's does not.
    h.run_in_session("VDEV_TEST_VAR=kept", T).await.unwrap();
    assert_eq!(
        h.run("echo $VDEV_TEST_VAR", T).await.unwrap().text(),
        "kept"
    );
    h.run("VDEV_TEST_VAR=lost", T).await.unwrap();
    assert_eq!(
        h.run("echo $VDEV_TEST_VAR", T).await.unwrap().text(),
        "kept"
    );

    // A unix socket on the host (here the same machine), through the connection.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("echo.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let before = sshd.ssh_clients().len();
    assert_eq!(before, 1, "one ssh process serves the connection");
    for _ in 0..3 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = h.connect_unix(&sock).await.unwrap().unwrap();
        s.write_all(b"ping\n").await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping\n");
    }
    assert_eq!(
        sshd.ssh_clients().len(),
        before,
        "each stream or command started an ssh process"
    );
    assert_eq!(h.socket_state(&sock, T).await.unwrap(), SocketState::Ready);
    let missing = dir.path().join("missing.sock");
    assert_eq!(
        h.socket_state(&missing, T).await.unwrap(),
        SocketState::Missing
    );
    let e = h.connect_unix(&missing).await.unwrap().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    h.disconnect().await;
}

/// A command that is still waiting behind the connection's other commands when its bound
/// expires fails with `Timeout` but never closes the session under them: the command ahead
/// finishes, and the next command runs in the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_times_out_in_the_queue_leaves_the_session_alone() {
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let h = host(&uri(&sshd, &sshd.query()));
    h.run("true", T).await.unwrap();
    let session = h.session_id().await;
    // The command ahead says it has started (it then holds the agent) and holds it until the
    // test releases it: the queued command certainly waits behind it for its whole bound.
    let dir = tempfile::tempdir().unwrap();
    let (started, release) = (dir.path().join("started"), dir.path().join("release"));
    let ahead = {
        let h = h.clone();
        let script = format!(
            "touch {s}; i=0; while [ ! -e {r} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
if [ -e {r} ]; then echo done; else echo 'never released'; fi",
            s = vdev_remote::sh_quote(&started.display().to_string()),
            r = vdev_remote::sh_quote(&release.display().to_string()),
        );
        tokio::spawn(async move { h.run_in_session(&script, T).await })
    };
    wait_started(&started, "the command ahead").await;
    let e = h
        .run("echo queued", Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("other commands"), "{e}");
    std::fs::write(&release, "").unwrap();
    let out = ahead.await.unwrap().expect("the command ahead finishes");
    assert_eq!(out.text(), "done");
    assert_eq!(h.run("echo next", T).await.unwrap().text(), "next");
    assert_eq!(h.session_id().await, session, "the same session");
    h.disconnect().await;
}

#[tokio::test]
async fn a_dropped_connection_fails_the_call_and_the_next_call_reconnects() {
    let Some(mut sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let h = host(&uri(&sshd, &sshd.query()));
    let first = h.session_id().await;
    assert_eq!(first, 0, "nothing is started before the first call");
    assert_eq!(h.run("echo 1", T).await.unwrap().text(), "1");
    let id = h.session_id().await;
    // A command in flight when sshd and its sessions die: killed once it has started.
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let h2 = h.clone();
    let script = format!(
        "touch {}; sleep 20; echo late",
        vdev_remote::sh_quote(&started.display().to_string())
    );
    let call = tokio::spawn(async move { h2.run(&script, T).await });
    wait_started(&started, "the command in flight").await;
    sshd.kill();
    let r = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("the call ended when the connection dropped, not at its timeout")
        .unwrap();
    match r {
        Err(Error::Remote {
            kind: RemoteErrorKind::Disconnected,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // While sshd is down: a typed error, not a hang.
    match h.run("echo 2", T).await {
        Err(Error::Remote {
            kind: RemoteErrorKind::Unreachable,
            message,
            ..
        }) => assert!(message.contains("refused"), "{message}"),
        other => panic!("{other:?}"),
    }
    sshd.restart();
    assert_eq!(h.run("echo 3", T).await.unwrap().text(), "3");
    assert_ne!(h.session_id().await, id, "a new session");
}

#[tokio::test]
async fn bad_keys_and_host_keys_are_typed_errors_with_what_ssh_said() {
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    // Unknown host key, strict checking: refused, nothing recorded.
    let empty_kh = sshd.dir.path().join("empty_known_hosts");
    std::fs::write(&empty_kh, "").unwrap();
    let q = format!(
        "keyfile={}&known_hosts={}",
        sshd.key.display(),
        empty_kh.display()
    );
    match host(&uri(&sshd, &q)).run("true", T).await {
        Err(Error::Remote {
            kind: RemoteErrorKind::HostKey,
            message,
            ..
        }) => {
            assert!(
                message.contains("Host key verification failed"),
                "{message}"
            );
            assert!(message.contains("no_verify=1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&empty_kh).unwrap(), "");
    // no_verify=1 accepts (and records) a new key ...
    let q2 = format!("{q}&no_verify=1");
    assert!(host(&uri(&sshd, &q2))
        .run("true", T)
        .await
        .unwrap()
        .success());
    assert!(std::fs::read_to_string(&empty_kh)
        .unwrap()
        .contains("ssh-ed25519"));
    // ... but never a changed one.
    let other_key = sshd.dir.path().join("other_host");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key)
        .status()
        .unwrap();
    let other_pub = std::fs::read_to_string(other_key.with_extension("pub")).unwrap();
    let mut f = other_pub.split_whitespace();
    std::fs::write(
        &empty_kh,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            f.next().unwrap(),
            f.next().unwrap()
        ),
    )
    .unwrap();
    match host(&uri(&sshd, &q2)).run("true", T).await {
        Err(Error::Remote {
            kind: RemoteErrorKind::HostKey,
            message,
            ..
        }) => assert!(message.contains("CHANGED"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A key the host does not accept: refused login, no prompt.
    let wrong = sshd.dir.path().join("wrong_key");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong)
        .status()
        .unwrap();
    let q3 = format!(
        "keyfile={}&known_hosts={}",
        wrong.display(),
        sshd.known_hosts.display()
    );
    match host(&uri(&sshd, &q3)).run("true", T).await {
        Err(Error::Remote {
            kind: RemoteErrorKind::Authentication,
            message,
            ..
        }) => assert!(message.contains("Permission denied"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    match host(&format!("qemu+ssh://127.0.0.1:{port}/x?{}", sshd.query()))
        .run("true", T)
        .await
    {
        Err(Error::Remote {
            kind: RemoteErrorKind::Unreachable,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // A missing local ssh program.
    match host(&format!(
        "{}&command=/nonexistent/ssh",
        uri(&sshd, &sshd.query())
    ))
    .run("true", T)
    .await
    {
        Err(Error::Remote {
            kind: RemoteErrorKind::LocalProgram,
            message,
            ..
        }) => assert!(message.contains("/nonexistent/ssh"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_host_that_looks_like_an_option_never_reaches_ssh() {
    // A ProxyCommand that would create this file if ssh ever saw it.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    for u in [
        format!("qemu+ssh://-oProxyCommand=touch%20{}/vm", marker.display()),
        format!("xen+ssh://-oProxyCommand=touch%20{}/", marker.display()),
        "qemu+ssh://-oProxyCommand=x@localhost/vm".to_string(),
    ] {
        let parsed = ConnectUri::parse(&u);
        if let Ok(p) = parsed {
            let e = SshTarget::from_uri(&p, T).unwrap_err();
            assert!(matches!(e, Error::InvalidUri { .. }), "{u}: {e}");
        }
    }
    assert!(!Path::new(&marker).exists());
}

#[tokio::test]
async fn persist_shares_one_login_across_connections_and_processes() {
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let logins = || sshd.log().matches("Accepted publickey").count();
    let u = uri(&sshd, &format!("{}&persist=30s", sshd.query()));
    let first = host(&u);
    assert_eq!(first.run("echo 1", T).await.unwrap().text(), "1");
    first.disconnect().await;
    drop(first);
    // A new Host, as in a later process: the master kept running in the background.
    let second = host(&u);
    assert_eq!(second.run("echo 2", T).await.unwrap().text(), "2");
    // A unix socket through the shared master, twice (the second reuses its forward).
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    for _ in 0..2 {
        let _s = second.connect_unix(&sock).await.unwrap().unwrap();
        listener.accept().unwrap();
    }
    second.disconnect().await;
    assert_eq!(logins(), 1, "one login served both: {}", sshd.log());
    // Without persist, every connection logs in.
    let plain = host(&uri(&sshd, &sshd.query()));
    plain.run("true", T).await.unwrap();
    plain.disconnect().await;
    assert_eq!(logins(), 2);
    // The shared master ends with sshd (Sshd's drop kills every session).
}

/// Accept one connection on `l` within 30 s (a loaded machine), or fail saying what was awaited.
fn accept_within(l: &std::os::unix::net::UnixListener, what: &str) {
    l.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match l.accept() {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what}: no connection within 30 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// A `persist=` connection to `sshd` with one forward through its shared master, used once:
/// the URI, the socket's folder, the socket and its listener, the connection and its stream,
/// and the shared files.
struct SharedForward {
    uri: String,
    _dir: tempfile::TempDir,
    sock: std::path::PathBuf,
    listener: std::os::unix::net::UnixListener,
    first: Host,
    _stream: tokio::net::UnixStream,
    files: vdev_remote::SharedFiles,
}

async fn a_shared_forward(sshd: &Sshd) -> SharedForward {
    let uri = uri(sshd, &format!("{}&persist=30s", sshd.query()));
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let first = host(&uri);
    let stream = first.connect_unix(&sock).await.unwrap().unwrap();
    accept_within(&listener, "the first connection through the forward");
    let files = first
        .shared_files(&sock)
        .expect("persist= has shared files")
        .unwrap();
    SharedForward {
        uri,
        _dir: dir,
        sock,
        listener,
        first,
        _stream: stream,
        files,
    }
}

/// A `persist=` URI of `sshd` whose shared master (alive) forwards a unix socket through a
/// stale file: the forward's file taken over by another listener that then went away (the file
/// left, refusing). The URI, the socket's folder, the socket and its listener.
async fn a_stale_shared_forward(
    sshd: &Sshd,
) -> (
    String,
    tempfile::TempDir,
    std::path::PathBuf,
    std::os::unix::net::UnixListener,
) {
    let f = a_shared_forward(sshd).await;
    assert!(
        f.files.control.exists() && f.files.forward.exists(),
        "{:?}",
        f.files
    );
    std::fs::remove_file(&f.files.forward).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&f.files.forward).unwrap());
    assert_eq!(
        std::os::unix::net::UnixStream::connect(&f.files.forward)
            .unwrap_err()
            .kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    f.first.disconnect().await;
    (f.uri, f._dir, f.sock, f.listener)
}

/// With `persist=`, the shared master's forward whose local file was taken over by another
/// listener that then went away (the file left, nobody listening): the master still lists the
/// forward, and OpenSSH answers a second `-O forward` of it as already done. A later connection
/// still reaches the socket, through the same login.
#[tokio::test]
async fn persist_makes_a_forward_again_whose_file_went_stale_under_the_master() {
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let logins = || sshd.log().matches("Accepted publickey").count();
    let (u, _dir, sock, listener) = a_stale_shared_forward(&sshd).await;
    // A later connection, as of another process.
    let second = host(&u);
    let s = second.connect_unix(&sock).await.unwrap();
    assert!(s.is_ok(), "the socket through the shared connection: {s:?}");
    accept_within(&listener, "the later connection through the forward");
    second.disconnect().await;
    assert_eq!(logins(), 1, "one login served both: {}", sshd.log());
}

/// Several connections at once (as of several processes) through a shared master whose
/// forward went stale: they mend it one at a time, and none is refused. Two mending at once
/// would each cancel the forward the other had just made again, between its bind and its
/// connect (a conformance run over ssh failed that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn persist_mends_a_stale_forward_for_connections_at_once() {
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    const AT_ONCE: usize = 6;
    let (u, _dir, sock, listener) = a_stale_shared_forward(&sshd).await;
    let mut at_once = tokio::task::JoinSet::new();
    for _ in 0..AT_ONCE {
        let (h, sock) = (host(&u), sock.clone());
        at_once.spawn(async move {
            let r = h.connect_unix(&sock).await;
            (h, r)
        });
    }
    let mut kept = Vec::new();
    while let Some(done) = at_once.join_next().await {
        let (h, r) = done.unwrap();
        match r {
            Ok(Ok(stream)) => kept.push((h, stream)),
            other => panic!("a connection through the shared master: {other:?}"),
        }
    }
    for i in 0..AT_ONCE {
        accept_within(&listener, &format!("connection {i} of {AT_ONCE} at once"));
    }
    for (h, _) in kept {
        h.disconnect().await;
    }
}

/// The pid of the shared master behind `control`, as `ssh -O check` tells it.
fn master_pid(control: &Path) -> u32 {
    let out = std::process::Command::new("ssh")
        .args(["-O", "check", "-o"])
        .arg(format!("ControlPath={}", control.display()))
        .arg("vdev-test")
        .output()
        .expect("run ssh -O check");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    said.split("pid=")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no master pid in ssh -O check's answer: {said}"))
}

/// With `persist=`, what shared masters now gone left in the user's shared folder is removed
/// when a later connection logs in (as of another process): a killed master's control socket
/// and forward, whose names the new master takes over, and the forward and lock files of
/// another host's master gone long ago. Without it the folder kept such files for good.
#[tokio::test]
async fn persist_clears_the_files_of_masters_that_are_gone() {
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let refuses = |p: &Path| {
        std::os::unix::net::UnixStream::connect(p)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    };
    let logins = || sshd.log().matches("Accepted publickey").count();
    let SharedForward {
        uri: u,
        sock,
        listener,
        first,
        files,
        _dir,
        _stream,
    } = a_shared_forward(&sshd).await;
    // The master killed (a crash, the OOM killer): its control socket and forward stay.
    let pid = master_pid(&files.control);
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    first.disconnect().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "master {pid} still there after KILL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both refuse, unless another test's connection swept them away already.
    let left = |p: &Path| refuses(p) || !p.exists();
    assert!(left(&files.control) && left(&files.forward), "{files:?}");
    // Another host's master, gone long ago: its forward's file (refusing) and its lock file.
    let shared = files.control.parent().unwrap();
    let other = format!(
        "{:016x}",
        (u64::from(std::process::id()) << 32) ^ u64::from(pid) ^ 0x5eed_0000_0000_0000
    );
    let other_forward = shared.join(format!("{other}.f{:016x}", 0xfu64));
    let other_lock = shared.join(format!("{other}.lock"));
    drop(std::os::unix::net::UnixListener::bind(&other_forward).unwrap());
    std::fs::write(&other_lock, "").unwrap();
    assert!(refuses(&other_forward));

    let second = host(&u);
    let s = second.connect_unix(&sock).await.unwrap();
    assert!(s.is_ok(), "the socket through a new shared master: {s:?}");
    accept_within(&listener, "the connection through the new master");
    assert!(
        !other_forward.exists() && !other_lock.exists(),
        "the gone master's files are still in {}",
        shared.display()
    );
    // The killed master's file names are the new master's now, and both answer.
    assert!(!refuses(&files.control), "{files:?}");
    let _through = std::os::unix::net::UnixStream::connect(&files.forward).unwrap();
    accept_within(&listener, "a plain connect to the new master's forward");
    second.disconnect().await;
    assert_eq!(logins(), 2, "one login each: {}", sshd.log());
}
