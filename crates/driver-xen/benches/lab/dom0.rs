//! The dom0 side of the Xen lab benchmark (see `lab.rs`): one operation, timed, with a
//! minimal XenStore client of its own.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

const XS_CONTROL: u32 = 0;
const XS_READ: u32 = 2;
const XS_WATCH: u32 = 4;
const XS_WATCH_EVENT: u32 = 15;
const XS_ERROR: u32 = 16;

/// How long one operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(240);
/// How often loop devices are looked at during a detach.
const LOOP_POLL: Duration = Duration::from_millis(5);

type Res<T> = Result<T, String>;

fn io(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// One connection to xenstored: requests one at a time, watch events queued with the instant
/// they arrived.
struct Xs {
    sock: UnixStream,
    buf: Vec<u8>,
    next: u32,
    events: VecDeque<(Instant, String)>,
}

fn first_field(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

impl Xs {
    fn connect() -> Res<Xs> {
        let path = std::env::var_os("XENSTORED_PATH")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/run/xenstored/socket".into());
        Ok(Xs {
            sock: UnixStream::connect(&path).map_err(io("connecting to xenstored"))?,
            buf: Vec::new(),
            next: 0,
            events: VecDeque::new(),
        })
    }

    /// The next message, or `None` when none came within `timeout`.
    fn recv(&mut self, timeout: Duration) -> Res<Option<(u32, u32, Vec<u8>)>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 16 {
                let word = |i: usize| u32::from_le_bytes(self.buf[i..i + 4].try_into().unwrap());
                let (ty, id, len) = (word(0), word(4), word(12) as usize);
                if self.buf.len() >= 16 + len {
                    let payload = self.buf[16..16 + len].to_vec();
                    self.buf.drain(..16 + len);
                    return Ok(Some((ty, id, payload)));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_micros(10) {
                return Ok(None);
            }
            self.sock
                .set_read_timeout(Some(left))
                .map_err(io("set_read_timeout"))?;
            let mut chunk = [0u8; 8192];
            match self.sock.read(&mut chunk) {
                Ok(0) => return Err("xenstored closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading from xenstored: {e}")),
            }
        }
    }

    /// A request and its reply: `Err(code)` for an XS_ERROR reply.
    fn request(&mut self, ty: u32, payload: &[u8]) -> Res<Result<Vec<u8>, String>> {
        self.next += 1;
        let id = self.next;
        let mut m = Vec::with_capacity(16 + payload.len());
        for v in [ty, id, 0, payload.len() as u32] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m.extend_from_slice(payload);
        self.sock
            .write_all(&m)
            .map_err(io("writing to xenstored"))?;
        loop {
            match self.recv(Duration::from_secs(30))? {
                None => return Err(format!("xenstored did not answer request type {ty}")),
                Some((XS_WATCH_EVENT, _, p)) => {
                    self.events.push_back((Instant::now(), first_field(&p)))
                }
                Some((t, rid, p)) if rid == id => {
                    return Ok(if t == XS_ERROR {
                        Err(first_field(&p))
                    } else {
                        Ok(p)
                    })
                }
                Some(_) => {}
            }
        }
    }

    fn read(&mut self, path: &str) -> Res<Option<String>> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        match self.request(XS_READ, &p)? {
            Ok(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Err(e) if e == "ENOENT" => Ok(None),
            Err(e) => Err(format!("read {path}: {e}")),
        }
    }

    fn strings(&mut self, ty: u32, parts: &[&str]) -> Res<()> {
        let mut p = Vec::new();
        for s in parts {
            p.extend_from_slice(s.as_bytes());
            p.push(0);
        }
        self.request(ty, &p)?
            .map(|_| ())
            .map_err(|e| format!("request {ty} {parts:?}: {e}"))
    }

    /// Set watches, then forget their initial events.
    fn watch(&mut self, paths: &[&str]) -> Res<()> {
        for p in paths {
            self.strings(XS_WATCH, &[p, "vdev-bench"])?;
        }
        // The initial events follow the replies; one more round trip lets them arrive.
        self.read("/")?;
        while self.recv(Duration::from_millis(20))?.is_some() {}
        self.events.clear();
        Ok(())
    }

    /// The next watch event (the instant it arrived, its path), waiting at most `timeout`.
    fn event(&mut self, timeout: Duration) -> Res<Option<(Instant, String)>> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        match self.recv(timeout)? {
            Some((XS_WATCH_EVENT, _, p)) => Ok(Some((Instant::now(), first_field(&p)))),
            _ => Ok(None),
        }
    }
}

/// Whether a loop device is bound to `img` (a canonical path).
fn loop_bound(img: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return false;
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .any(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| b.trim_end().trim_end_matches(" (deleted)") == img)
        })
}

/// Per-connection request counts from xenstored's trace, between the two marker reads.
#[derive(Default)]
struct Conn {
    new: bool,
    reqs: u64,
    relative_backend: bool,
    relative_device: bool,
}

fn count_trace(text: &str, start: &str, end: &str) -> Res<String> {
    let mut conns: Vec<Conn> = Vec::new();
    let mut live: HashMap<&str, usize> = HashMap::new();
    let mut waiter: Option<&str> = None;
    let mut waiter_reqs = 0u64;
    let mut ended = false;
    for line in text.lines() {
        let mut w = line.split_whitespace();
        let (Some(kind), Some(ptr)) = (w.next(), w.next()) else {
            continue;
        };
        if waiter.is_none() {
            if kind == "IN" && line.contains(&format!("({start} )")) {
                waiter = Some(ptr);
            }
            continue;
        }
        match kind {
            "CREATE" if ptr == "connection" => {
                if let Some(p) = w.next() {
                    conns.push(Conn {
                        new: true,
                        ..Conn::default()
                    });
                    live.insert(p, conns.len() - 1);
                }
            }
            "DESTROY" if ptr == "connection" => {
                if let Some(p) = w.next() {
                    live.remove(p);
                }
            }
            "IN" => {
                if Some(ptr) == waiter {
                    if line.contains(&format!("({end} )")) {
                        ended = true;
                        break;
                    }
                    waiter_reqs += 1;
                    continue;
                }
                let i = *live.entry(ptr).or_insert_with(|| {
                    conns.push(Conn::default());
                    conns.len() - 1
                });
                let c = &mut conns[i];
                c.reqs += 1;
                let arg = line.split_once(" (").map(|x| x.1).unwrap_or("");
                c.relative_backend |= arg.starts_with("backend/");
                c.relative_device |= arg.starts_with("device/");
            }
            _ => {}
        }
    }
    if waiter.is_none() || !ended {
        return Err("the trace lacks the start or end marker".into());
    }
    let mut new = conns.iter().filter(|c| c.new);
    let tool = new.next();
    let scripts: Vec<&Conn> = new.collect();
    let old = || conns.iter().filter(|c| !c.new);
    Ok(format!(
        "tool={} scripts={} script_conns={} backend={} frontend={} other={} waiter={waiter_reqs}",
        tool.map_or(0, |c| c.reqs),
        scripts.iter().map(|c| c.reqs).sum::<u64>(),
        scripts.len(),
        old()
            .filter(|c| c.relative_backend)
            .map(|c| c.reqs)
            .sum::<u64>(),
        old()
            .filter(|c| !c.relative_backend && c.relative_device)
            .map(|c| c.reqs)
            .sum::<u64>(),
        old()
            .filter(|c| !c.relative_backend && !c.relative_device)
            .map(|c| c.reqs)
            .sum::<u64>(),
    ))
}

pub fn main(args: &[String]) -> i32 {
    if args.first().map(String::as_str) == Some("connected") {
        return match connected(&args[1..]) {
            Ok(line) => {
                println!("{line}");
                0
            }
            Err(e) => {
                println!("FAILED {e}");
                1
            }
        };
    }
    match run(args) {
        Ok(line) => {
            println!("RESULT {line}");
            0
        }
        Err(e) => {
            println!("FAILED {e}");
            1
        }
    }
}

struct Child {
    wait: Option<JoinHandle<(Instant, io::Result<ExitStatus>)>>,
    exited: Option<(Instant, ExitStatus)>,
    out: String,
    err: String,
}

impl Child {
    fn poll(&mut self) -> Res<()> {
        if self.wait.as_ref().is_some_and(|h| h.is_finished()) {
            let (at, st) = self.wait.take().unwrap().join().unwrap();
            let st = st.map_err(io("waiting for the command"))?;
            if !st.success() {
                return Err(format!(
                    "the command failed ({st}): {}{}",
                    std::fs::read_to_string(&self.out).unwrap_or_default(),
                    std::fs::read_to_string(&self.err).unwrap_or_default()
                ));
            }
            self.exited = Some((at, st));
        }
        Ok(())
    }
}

/// Turns xenstored's trace off and removes the temporary files however `run` ends.
struct Tidy {
    trace_on: bool,
    files: Vec<String>,
}

impl Drop for Tidy {
    fn drop(&mut self) {
        if self.trace_on {
            if let Ok(mut xs) = Xs::connect() {
                let _ = xs.strings(XS_CONTROL, &["log", "off"]);
            }
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// `connected DOMID DEVIDS READY`: the devices `DEVIDS` (comma-separated) of domain DOMID
/// must not exist yet; with watches set on both ends' `state`, create the file READY, then
/// wait until every frontend and backend `state` is 4 (Connected) and print
/// `DONE_NS=` the wall-clock time (ns since the epoch, as `date +%s%N`) at which the watch
/// event that completed it arrived.
fn connected(args: &[String]) -> Res<String> {
    let usage = "usage: lab dom0 connected DOMID DEVID,DEVID,... READYFILE";
    let [domid, devids, ready] = args else {
        return Err(usage.into());
    };
    let mut xs = Xs::connect()?;
    let mut want: Vec<String> = Vec::new();
    for d in devids.split(',') {
        let fe = format!("/local/domain/{domid}/device/vbd/{d}");
        let be = format!("/local/domain/0/backend/vbd/{domid}/{d}");
        if xs.read(&fe)?.is_some() || xs.read(&be)?.is_some() {
            return Err(format!("{fe} or {be} exists before attach"));
        }
        want.push(format!("{fe}/state"));
        want.push(format!("{be}/state"));
    }
    let paths: Vec<&str> = want.iter().map(String::as_str).collect();
    xs.watch(&paths)?;
    File::create(ready).map_err(io(ready))?;
    let t0 = Instant::now();
    let mut left: Vec<&str> = paths.clone();
    loop {
        if t0.elapsed() > OP_TIMEOUT {
            return Err(format!("not Connected after {OP_TIMEOUT:?}: {left:?}"));
        }
        let Some((_, path)) = xs.event(Duration::from_millis(200))? else {
            continue;
        };
        let now = std::time::SystemTime::now();
        if !left.contains(&path.as_str()) {
            continue;
        }
        if xs.read(&path)?.as_deref() == Some("4") {
            left.retain(|p| *p != path);
        }
        if left.is_empty() {
            let ns = now
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| format!("clock: {e}"))?
                .as_nanos();
            return Ok(format!("DONE_NS={ns}"));
        }
    }
}

/// `OP DOMID DEVID IMG ITEMS TRACE -- CMD...`: run CMD and time OP (`attach`, `detach`,
/// `list`); print `done=` (seconds to the condition) `exit=` (seconds to the command's exit),
/// `items=` (list), and with TRACE=`trace` the request counts.
fn run(args: &[String]) -> Res<String> {
    let usage = "usage: lab dom0 attach|detach|list DOMID DEVID IMG ITEMS trace|- -- CMD...";
    let [op, domid, devid, img, items, trace, dashes, cmd @ ..] = args else {
        return Err(usage.into());
    };
    if dashes != "--" || cmd.is_empty() {
        return Err(usage.into());
    }
    let img = std::fs::canonicalize(img)
        .map_err(io(img))?
        .to_string_lossy()
        .into_owned();
    let fe = format!("/local/domain/{domid}/device/vbd/{devid}");
    let be = format!("/local/domain/0/backend/vbd/{domid}/{devid}");
    let rec = format!("/libxl/{domid}/device/vbd/{devid}");
    let (fe_state, be_state) = (format!("{fe}/state"), format!("{be}/state"));
    let mut xs = Xs::connect()?;
    match op.as_str() {
        "attach" => {
            if xs.read(&fe)?.is_some() || xs.read(&be)?.is_some() {
                return Err(format!("{fe} or {be} exists before attach"));
            }
            xs.watch(&[&fe_state, &be_state])?;
        }
        "detach" => {
            for p in [&fe, &be, &rec] {
                if xs.read(p)?.is_none() {
                    return Err(format!("{p} is missing before detach"));
                }
            }
            if !loop_bound(&img) {
                return Err(format!("no loop device is bound to {img} before detach"));
            }
            xs.watch(&[&fe, &be, &rec])?;
        }
        "list" => {}
        _ => return Err(usage.into()),
    }
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let out = format!("/tmp/vdev-bench-{nonce}.out");
    let err = format!("/tmp/vdev-bench-{nonce}.err");
    let trace_file = (trace == "trace").then(|| format!("/tmp/vdev-bench-trace-{nonce}.log"));
    let mut tidy = Tidy {
        trace_on: trace_file.is_some(),
        files: [&out, &err]
            .into_iter()
            .chain(&trace_file)
            .cloned()
            .collect(),
    };
    if let Some(f) = &trace_file {
        xs.strings(XS_CONTROL, &["logfile", f])?;
        xs.strings(XS_CONTROL, &["log", "on"])?;
    }
    let (start, end) = (
        format!("/vdev-bench/start-{nonce}"),
        format!("/vdev-bench/end-{nonce}"),
    );
    xs.read(&start)?;

    let t0 = Instant::now();
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(File::create(&out).map_err(io(&out))?)
        .stderr(File::create(&err).map_err(io(&err))?)
        .spawn()
        .map_err(io(&cmd[0]))?;
    let mut child = Child {
        wait: Some(std::thread::spawn(move || {
            let st = child.wait();
            (Instant::now(), st)
        })),
        exited: None,
        out,
        err,
    };
    // When each part of the condition was met (for the progress lines).
    let mut parts: Vec<(&str, Instant)> = Vec::new();
    let done: Instant = match op.as_str() {
        "attach" => {
            let (mut f, mut b) = (None, None);
            loop {
                child.poll()?;
                if t0.elapsed() > OP_TIMEOUT {
                    return Err(format!(
                        "not Connected after {OP_TIMEOUT:?}: frontend {f:?}, backend {b:?}"
                    ));
                }
                let Some((at, path)) = xs.event(Duration::from_millis(50))? else {
                    continue;
                };
                let (value, name) = if path == fe_state {
                    (&mut f, "frontend")
                } else if path == be_state {
                    (&mut b, "backend")
                } else {
                    continue;
                };
                *value = xs.read(&path)?;
                if value.as_deref() == Some("4") && !parts.iter().any(|p| p.0 == name) {
                    parts.push((name, at));
                }
                if f.as_deref() == Some("4") && b.as_deref() == Some("4") {
                    break at;
                }
            }
        }
        "detach" => {
            let dirs = [fe.as_str(), be.as_str(), rec.as_str()];
            let mut gone: [Option<Instant>; 3] = [None; 3];
            let mut loop_gone: Option<Instant> = None;
            let mut last_look = t0;
            loop {
                child.poll()?;
                if t0.elapsed() > OP_TIMEOUT {
                    return Err(format!("not gone after {OP_TIMEOUT:?}: {dirs:?} gone at {gone:?}, loop released at {loop_gone:?}"));
                }
                if loop_gone.is_none() && last_look.elapsed() >= LOOP_POLL {
                    last_look = Instant::now();
                    if !loop_bound(&img) {
                        loop_gone = Some(last_look);
                    }
                }
                if let (Some(l), [Some(a), Some(b), Some(c)]) = (loop_gone, gone) {
                    parts = vec![("frontend", a), ("backend", b), ("record", c), ("loop", l)];
                    parts.sort_by_key(|p| p.1);
                    break l.max(a).max(b).max(c);
                }
                let Some((at, path)) = xs.event(LOOP_POLL)? else {
                    continue;
                };
                for (k, d) in dirs.iter().enumerate() {
                    // The directory itself, or a parent, was removed (removing a parent
                    // fires the watch with the watched path).
                    if gone[k].is_none()
                        && (path == *d || d.starts_with(&format!("{path}/")))
                        && xs.read(d)?.is_none()
                    {
                        gone[k] = Some(at);
                    }
                }
            }
        }
        _ => {
            while child.exited.is_none() {
                child.poll()?;
                if t0.elapsed() > OP_TIMEOUT {
                    return Err(format!("the command did not end in {OP_TIMEOUT:?}"));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            child.exited.unwrap().0
        }
    };
    while child.exited.is_none() {
        child.poll()?;
        if t0.elapsed() > OP_TIMEOUT {
            return Err(format!("the command did not end in {OP_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let exit = child.exited.unwrap().0;
    xs.read(&end)?;
    let mut line = format!(
        "op={op} done={:.6} exit={:.6} parts={}",
        secs(done - t0),
        secs(exit - t0),
        parts
            .iter()
            .map(|(n, at)| format!("{n}:{:.2}", secs(*at - t0)))
            .collect::<Vec<_>>()
            .join(",")
    );
    let output = std::fs::read_to_string(&child.out).unwrap_or_default();
    if let Some(kind) = Items::parse(items) {
        line += &format!(" items={}", kind.count(&output));
    }
    if let Some(f) = &trace_file {
        xs.strings(XS_CONTROL, &["log", "off"])?;
        tidy.trace_on = false;
        let text = std::fs::read_to_string(f).map_err(io(f))?;
        line += " ";
        line += &count_trace(&text, &start, &end)?;
    }
    Ok(line)
}
