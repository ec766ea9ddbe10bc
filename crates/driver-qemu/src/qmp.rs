//! A QMP session of our own: framing, reply matching and event fan-out over one socket.
//!
//! Why not `qapi`'s stream: it ends the whole session on an event its schema does not know, and it
//! sends one command at a time. Here a reader task splits the stream into lines, matches replies
//! to requests by `id` (so many requests can be in flight: pipelining), and hands every event on
//! as JSON, whether or not `qapi`'s schema knows it. The command and reply types still come from
//! `qapi` (see `docs/design/0003-qemu-qmp-session.md`).
//! Opening a session on a domain's sockets is [`connect`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, trace, warn};

use vdev_remote::Endpoint;

use crate::error::QmpError;

pub(crate) mod connect;

/// The longest line (one reply or event) accepted from QEMU: the introspection schema and a
/// `query-block` of thousands of disks fit well below it.
pub(crate) const MAX_LINE: usize = 64 << 20;

/// How many events a slow consumer may fall behind before it is told it lost some.
const EVENT_BUFFER: usize = 1024;

/// One event from QEMU, or the end of the session.
#[derive(Debug, Clone)]
pub(crate) enum QmpEvent {
    /// An asynchronous event, by name, with its `data` (`{}` when absent).
    Event { name: String, data: Value },
    /// The session ended (QEMU went away or broke the protocol).
    Disconnected,
}

type Reply = Result<Value, QmpError>;

/// The replies of one [`Qmp::batch`] as they arrive: its caller is woken once, when the last
/// one is in (not once per reply).
struct Batch {
    replies: Vec<Option<Reply>>,
    left: usize,
    done: Option<oneshot::Sender<()>>,
}

/// Where the reply to one request goes: its batch, and its place there.
struct Slot {
    batch: Arc<Mutex<Batch>>,
    index: usize,
}

impl Slot {
    fn deliver(self, reply: Reply) {
        let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
        if b.replies[self.index].replace(reply).is_none() {
            b.left -= 1;
        }
        if b.left == 0 {
            if let Some(done) = b.done.take() {
                let _ = done.send(());
            }
        }
    }
}

struct Shared {
    pending: Mutex<HashMap<u64, Slot>>,
    alive: AtomicBool,
    events: broadcast::Sender<QmpEvent>,
    /// Why the session ended, once it has.
    end_reason: Mutex<Option<String>>,
}

impl Shared {
    fn end(&self, reason: String) {
        if self.alive.swap(false, Ordering::AcqRel) {
            debug!(%reason, "QMP session ended");
            *self.end_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
        }
        let pending: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, slot) in pending {
            slot.deliver(Err(QmpError::Disconnected(reason.clone())));
        }
        let _ = self.events.send(QmpEvent::Disconnected);
    }
}

/// A live QMP session.
pub(crate) struct Qmp {
    endpoint: Endpoint,
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    timeout: Duration,
    /// QEMU's version as its greeting said (`major`, `minor`, `micro`).
    pub(crate) version: (u64, u64, u64),
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("endpoint", &self.endpoint)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Qmp {
    /// Run the protocol over any byte stream (used for unix and TCP sockets, and by tests).
    pub(crate) async fn start(
        endpoint: Endpoint,
        read: impl AsyncRead + Send + Unpin + 'static,
        write: Box<dyn AsyncWrite + Send + Unpin>,
        timeout: Duration,
    ) -> Result<Arc<Qmp>, QmpError> {
        let mut reader = BufReader::with_capacity(64 << 10, read);
        let mut line = Vec::new();
        let greeting = match read_line(&mut reader, &mut line).await? {
            Some(l) => l,
            None => {
                return Err(QmpError::Disconnected(
                    "the socket closed before QEMU's greeting".into(),
                ))
            }
        };
        let greeting: qapi::qmp::QapiCapabilities = serde_json::from_slice(&greeting)
            .map_err(|e| QmpError::Protocol(format!("not a QMP greeting: {e}")))?;
        let v = &greeting.QMP.version.qemu;
        let version = (v.major as u64, v.minor as u64, v.micro as u64);
        debug!(%endpoint, ?version, "QMP greeting");
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            events,
            end_reason: Mutex::new(None),
        });
        let reader_task = tokio::spawn(read_loop(reader, shared.clone()));
        let qmp = Arc::new(Qmp {
            endpoint,
            writer: tokio::sync::Mutex::new(write),
            shared,
            next_id: AtomicU64::new(1),
            timeout,
            version,
            reader: reader_task,
        });
        qmp.execute(qapi::qmp::qmp_capabilities { enable: None })
            .await?;
        Ok(qmp)
    }

    /// The bound on each request.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The socket this session runs on.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Whether the session still works.
    pub(crate) fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    /// Why the session ended, if it has.
    pub(crate) fn end_reason(&self) -> Option<String> {
        self.shared
            .end_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Receive every event from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.shared.events.subscribe()
    }

    /// Close the socket: pending requests fail, subscribers see `Disconnected`.
    pub(crate) async fn close(&self) {
        let mut w = self.writer.lock().await;
        let _ = w.shutdown().await;
        self.reader.abort();
        self.shared.end("the connection was closed".into());
    }

    /// Run one typed command (its type and reply from `qapi`).
    pub(crate) async fn execute<C: qapi::Command>(&self, cmd: C) -> Result<C::Ok, QmpError> {
        let args = serde_json::to_value(&cmd).map_err(|e| QmpError::Protocol(e.to_string()))?;
        let v = self.execute_raw(C::NAME, args).await?;
        decode::<C::Ok>(C::NAME, v)
    }

    /// Run one command given by name with JSON arguments.
    pub(crate) async fn execute_raw(&self, name: &str, args: Value) -> Result<Value, QmpError> {
        self.batch(vec![(name.to_owned(), args)])
            .await
            .pop()
            .expect("one reply per request")
    }

    /// Send several commands in one write and wait for all replies (pipelining). QEMU runs them
    /// in order; each gets its own result. The whole batch shares one deadline.
    pub(crate) async fn batch(&self, cmds: Vec<(String, Value)>) -> Vec<Reply> {
        let n = cmds.len();
        if n == 0 {
            return Vec::new();
        }
        if !self.is_alive() {
            let why = self.end_reason().unwrap_or_else(|| "closed".into());
            return (0..n)
                .map(|_| Err(QmpError::Disconnected(why.clone())))
                .collect();
        }
        let mut buf = Vec::with_capacity(n * 96);
        let (done, all_in) = oneshot::channel();
        let batch = Arc::new(Mutex::new(Batch {
            replies: (0..n).map(|_| None).collect(),
            left: n,
            done: Some(done),
        }));
        let mut ids = Vec::with_capacity(n);
        {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for (index, (name, args)) in cmds.iter().enumerate() {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let msg = if args.as_object().is_some_and(|o| o.is_empty()) || args.is_null() {
                    json!({"execute": name, "id": id})
                } else {
                    json!({"execute": name, "arguments": args, "id": id})
                };
                let start = buf.len();
                serde_json::to_writer(&mut buf, &msg).expect("JSON values serialise");
                trace!(target: "vdev_driver_qemu::qmp", "-> {}", String::from_utf8_lossy(&buf[start..]));
                buf.push(b'\n');
                let batch = batch.clone();
                pending.insert(id, Slot { batch, index });
                ids.push(id);
            }
        }
        let write = async {
            let mut w = self.writer.lock().await;
            w.write_all(&buf).await?;
            w.flush().await
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let write_result = match tokio::time::timeout_at(deadline, write).await {
            Ok(r) => r.map_err(|e| format!("writing to the socket failed: {e}")),
            Err(_) => Err("writing to the socket timed out".to_owned()),
        };
        if let Err(why) = write_result {
            self.shared.end(why);
        }
        if tokio::time::timeout_at(deadline, all_in).await.is_err() {
            // Late replies are not waited for: their requests answer Timeout.
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for id in &ids {
                pending.remove(id);
            }
        }
        let replies = std::mem::take(&mut batch.lock().unwrap_or_else(|p| p.into_inner()).replies);
        let mut out = Vec::with_capacity(n);
        for ((name, _), r) in cmds.iter().zip(replies) {
            let r = r.unwrap_or_else(|| {
                Err(QmpError::Timeout {
                    command: name.clone(),
                    after: self.timeout,
                })
            });
            if let Err(e) = &r {
                debug!(command = %name, error = %e, "QMP command failed");
            }
            out.push(r);
        }
        out
    }
}

/// Decode a reply into the type `qapi` gives for it.
pub(crate) fn decode<T: DeserializeOwned>(command: &str, v: Value) -> Result<T, QmpError> {
    serde_json::from_value(v).map_err(|e| {
        QmpError::Protocol(format!(
            "the reply to {command} does not have the expected form: {e}"
        ))
    })
}

/// Read one line, without its line ending. `None` at a clean end of stream.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> Result<Option<Vec<u8>>, QmpError> {
    line.clear();
    loop {
        let n = (&mut *reader)
            .take((MAX_LINE + 1 - line.len()) as u64)
            .read_until(b'\n', line)
            .await?;
        if n == 0 {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(QmpError::Disconnected(format!(
                "QEMU closed the connection in the middle of a message ({} bytes received)",
                line.len()
            )));
        }
        if line.ends_with(b"\n") {
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            return Ok(Some(std::mem::take(line)));
        }
        if line.len() > MAX_LINE {
            return Err(QmpError::Protocol(format!(
                "a message from QEMU is longer than {MAX_LINE} bytes"
            )));
        }
    }
}

/// One message from QEMU, classified.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// Blank, or a reply without an id (logged, ignored).
    Nothing,
    /// An asynchronous event.
    Event { name: String, data: Value },
    /// The reply to request `id`.
    Reply { id: u64, reply: Reply },
}

/// Classify one line from QEMU. `Err` (the message is not JSON) ends the session.
pub(crate) fn parse_message(msg: &[u8]) -> Result<Incoming, String> {
    if msg.iter().all(u8::is_ascii_whitespace) {
        return Ok(Incoming::Nothing);
    }
    let v: Value = serde_json::from_slice(msg)
        .map_err(|e| format!("QEMU sent a message that is not JSON ({e})"))?;
    if let Some(name) = v.get("event").and_then(Value::as_str) {
        debug!(event = name, "QMP event");
        let data = v.get("data").cloned().unwrap_or_else(|| json!({}));
        return Ok(Incoming::Event {
            name: name.to_owned(),
            data,
        });
    }
    let Some(id) = v.get("id").and_then(Value::as_u64) else {
        warn!(message = %String::from_utf8_lossy(msg), "QMP message without an id ignored");
        return Ok(Incoming::Nothing);
    };
    let reply = if let Some(r) = v.get("return") {
        Ok(r.clone())
    } else if let Some(e) = v.get("error") {
        Err(QmpError::Qemu {
            class: e
                .get("class")
                .and_then(Value::as_str)
                .unwrap_or("GenericError")
                .to_owned(),
            desc: e
                .get("desc")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
    } else {
        Err(QmpError::Protocol(
            "a reply with neither 'return' nor 'error'".into(),
        ))
    };
    Ok(Incoming::Reply { id, reply })
}

async fn read_loop<R: AsyncRead + Unpin>(mut reader: BufReader<R>, shared: Arc<Shared>) {
    let mut line = Vec::new();
    let reason = loop {
        let msg = match read_line(&mut reader, &mut line).await {
            Ok(Some(l)) => l,
            Ok(None) => break "QEMU closed the connection (it has probably exited)".to_owned(),
            Err(e) => break e.to_string(),
        };
        trace!(target: "vdev_driver_qemu::qmp", "<- {}", String::from_utf8_lossy(&msg));
        let (id, reply) = match parse_message(&msg) {
            // A reply that is not JSON cannot be matched to its request: end the session so
            // that nothing waits for a reply that will never be recognised (the next operation
            // reconnects).
            Err(why) => break why,
            Ok(Incoming::Nothing) => continue,
            Ok(Incoming::Event { name, data }) => {
                let _ = shared.events.send(QmpEvent::Event { name, data });
                continue;
            }
            Ok(Incoming::Reply { id, reply }) => (id, reply),
        };
        let slot = shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        match slot {
            Some(slot) => slot.deliver(reply),
            None => debug!(
                id,
                "reply to a request nobody waits for (timed out) ignored"
            ),
        }
    };
    shared.end(reason);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, split, AsyncBufReadExt, AsyncWriteExt, BufReader};

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}"#;

    /// A session over an in-memory pipe whose far end waits for `batch` requests, then answers
    /// each with `answer` (its reply line, or `None` for no reply), last request first.
    async fn session(
        timeout: Duration,
        batch: usize,
        answer: fn(&Value) -> Option<String>,
    ) -> Arc<Qmp> {
        let (near, far) = duplex(1 << 16);
        let (r, w) = split(near);
        tokio::spawn(async move {
            let (fr, mut fw) = split(far);
            let mut lines = BufReader::new(fr).lines();
            fw.write_all(format!("{GREETING}\n").as_bytes())
                .await
                .unwrap();
            let mut held = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                let v: Value = serde_json::from_str(&l).unwrap();
                if v["execute"] == "qmp_capabilities" {
                    let id = &v["id"];
                    fw.write_all(format!("{{\"return\": {{}}, \"id\": {id}}}\n").as_bytes())
                        .await
                        .unwrap();
                    continue;
                }
                held.push(v);
                if held.len() == batch {
                    // Backwards: replies need not come in the order of their requests.
                    for v in held.drain(..).rev() {
                        if let Some(reply) = answer(&v) {
                            fw.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
                        }
                    }
                }
            }
        });
        Qmp::start(Endpoint::Unix("test".into()), r, Box::new(w), timeout)
            .await
            .expect("session")
    }

    fn echo(v: &Value) -> Option<String> {
        Some(json!({"return": v["execute"], "id": v["id"]}).to_string())
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_batch_answers_at_once() {
        let qmp = session(Duration::from_secs(3600), 1, echo).await;
        let t = tokio::time::Instant::now();
        assert!(qmp.batch(Vec::new()).await.is_empty());
        // Paused time moves only when every task waits for a timer: nothing waited for one.
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn each_reply_goes_to_its_request_whatever_their_order() {
        let qmp = session(Duration::from_secs(3600), 3, echo).await;
        let names = ["query-name", "query-status", "query-version"];
        let replies = qmp
            .batch(names.iter().map(|n| (n.to_string(), json!({}))).collect())
            .await;
        let got: Vec<Value> = replies.into_iter().map(|r| r.expect("reply")).collect();
        assert_eq!(got, names.map(Value::from));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_a_reply_times_out_alone() {
        fn all_but_status(v: &Value) -> Option<String> {
            (v["execute"] != "query-status").then(|| echo(v)).flatten()
        }
        let qmp = session(Duration::from_secs(5), 3, all_but_status).await;
        let names = ["query-name", "query-status", "query-version"];
        let r = qmp
            .batch(names.iter().map(|n| (n.to_string(), json!({}))).collect())
            .await;
        assert_eq!(r[0].as_ref().expect("answered"), "query-name");
        assert!(
            matches!(&r[1], Err(QmpError::Timeout { command, .. }) if command == "query-status"),
            "{:?}",
            r[1]
        );
        assert_eq!(r[2].as_ref().expect("answered"), "query-version");
        assert!(qmp.is_alive(), "a timeout does not end the session");
    }
}
