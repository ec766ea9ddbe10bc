//! Running a command from a test with a bound: a process still running at its deadline is
//! killed and fails the test, saying what was waited for and what it printed, rather than hang
//! the test run.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The longest one command run from a test may take: far beyond vdev's own bounds (its request
/// timeout, detach's), allowing for a loaded 2-core machine.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(120);

/// Start `cmd` with stdin closed and stdout and stderr captured (read by [`wait_until`]).
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Wait for a child started by [`spawn`] until `deadline`: its output, or, when it is still
/// running then, kill it and fail, saying what was waited for and what it printed so far.
pub fn wait_until(mut child: Child, deadline: Instant, what: &str) -> Output {
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_default();
            panic!(
                "{what}: still running at its deadline, killed; its stderr: {}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes close with the process (a child of its own it left behind would hold them).
    let collect = |rx: Receiver<Vec<u8>>, name: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{what}: exited ({status}) but its {name} stayed open"))
    };
    Output {
        status,
        stdout: collect(stdout, "stdout"),
        stderr: collect(stderr, "stderr"),
    }
}

/// Run `cmd` as [`spawn`] and [`wait_until`] do, within [`PROCESS_DEADLINE`].
pub fn output(cmd: &mut Command, what: &str) -> Output {
    let child = spawn(cmd);
    wait_until(child, Instant::now() + PROCESS_DEADLINE, what)
}

/// Read `pipe` to its end on a thread of its own: the bytes arrive on the receiver.
fn read_all(pipe: Option<impl Read + Send + 'static>) -> Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}
