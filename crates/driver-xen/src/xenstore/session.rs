//! One connection to xenstored: a writer task, a reader task routing replies and watch
//! events, and the requests multiplexed on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::wire::{decode_frame, describe, header, printable, Frame, Req, WATCH_EVENT};
use super::{TxId, MAX_PAYLOAD, NO_TX};
use crate::error::XsError;

/// How many bytes of queued requests the writer sends in one write, at most (more when one
/// request is larger).
const WRITE_CHUNK: usize = 64 * 1024;
/// The reader's buffer.
const READ_BUFFER: usize = 64 * 1024;

type Pending = HashMap<u32, oneshot::Sender<Result<Vec<u8>, XsError>>>;

pub(super) struct Shared {
    pub(super) pending: Mutex<Pending>,
    pub(super) watches: Mutex<HashMap<String, mpsc::UnboundedSender<String>>>,
    pub(super) closed: AtomicBool,
    pub(super) why_closed: Mutex<String>,
}

impl Shared {
    pub(super) fn close(&self, why: String) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        *self
            .why_closed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = why.clone();
        for (_, tx) in self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
        {
            let _ = tx.send(Err(XsError::Disconnected(why.clone())));
        }
        // Dropping the senders ends every watch stream.
        self.watches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
    pub(super) fn closed_error(&self) -> XsError {
        XsError::Disconnected(
            self.why_closed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// One connection to xenstored: requests from many tasks are multiplexed on it.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) out: mpsc::UnboundedSender<Vec<u8>>,
    pub(super) next_req: AtomicU32,
    pub(super) timeout: Duration,
    /// Which connection of the [`XenStore`] this is (1, 2, ...): the high half of its
    /// transaction ids.
    pub(super) generation: u32,
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Session {
    /// Run the session over a byte stream to xenstored.
    /// `one_at_a_time`: send a request only once the previous one is answered (the xenbus
    /// device keeps a request's payload in its one message buffer until it is sent on, so a
    /// second request written meanwhile corrupts the first: measured in the lab).
    pub(super) fn start(
        rd: impl AsyncRead + Unpin + Send + 'static,
        mut wr: impl AsyncWrite + Unpin + Send + 'static,
        timeout: Duration,
        one_at_a_time: bool,
        generation: u32,
    ) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            watches: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            why_closed: Mutex::new(String::new()),
        });
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let answered = Arc::new(tokio::sync::Semaphore::new(0));
        let s = shared.clone();
        let a = answered.clone();
        let writer = tokio::spawn(async move {
            while let Some(mut frame) = out_rx.recv().await {
                // The requests queued meanwhile (a batch) go in the same write: one system
                // call for many requests. Not on the device, which takes one at a time.
                while !one_at_a_time && frame.len() < WRITE_CHUNK {
                    match out_rx.try_recv() {
                        Ok(f) => frame.extend_from_slice(&f),
                        Err(_) => break,
                    }
                }
                if let Err(e) = wr.write_all(&frame).await {
                    s.close(format!("writing to xenstored failed: {e}"));
                    return;
                }
                if one_at_a_time {
                    match a.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => return,
                    }
                }
            }
        });
        let a = answered;
        let s = shared.clone();
        let reader = tokio::spawn(async move {
            // Buffered: the answers to a batch arrive back to back, and are then read with a
            // few system calls instead of two per answer.
            let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
            let why = loop {
                let mut hdr = [0u8; 16];
                if let Err(e) = rd.read_exact(&mut hdr).await {
                    break format!("xenstored closed the connection ({e})");
                }
                let (ty, req_id, len) = header(&hdr);
                if len > MAX_PAYLOAD {
                    break format!(
                        "xenstored sent a {len}-byte payload (the limit is {MAX_PAYLOAD})"
                    );
                }
                let mut body = vec![0u8; len];
                if let Err(e) = rd.read_exact(&mut body).await {
                    break format!("xenstored closed the connection ({e})");
                }
                tracing::trace!(target: "vdev_driver_xen::xenstore", ty, req_id, "<- {}", printable(&body));
                if ty != WATCH_EVENT && one_at_a_time {
                    a.add_permits(1);
                }
                let reply = match decode_frame(ty, body) {
                    Frame::Watch { path, token } => {
                        let mut w = s
                            .watches
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if let Some(tx) = w.get(&token) {
                            if tx.send(path).is_err() {
                                w.remove(&token);
                            }
                        }
                        continue;
                    }
                    Frame::Reply(r) => r,
                };
                if let Some(tx) = s
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&req_id)
                {
                    let _ = tx.send(reply);
                }
            };
            s.close(why);
        });
        Session {
            shared,
            out,
            next_req: AtomicU32::new(1),
            timeout,
            generation,
            tasks: vec![writer, reader],
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Close the connection: pending and later requests fail, watch streams end.
    pub(super) fn close(&self, why: String) {
        self.shared.close(why);
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Queue one request (in call order) and return the receiver of its reply.
    pub(super) fn send(
        &self,
        tx: TxId,
        req: &Req,
    ) -> Result<oneshot::Receiver<Result<Vec<u8>, XsError>>, XsError> {
        if req.payload.len() > MAX_PAYLOAD {
            return Err(XsError::TooLarge(req.payload.len()));
        }
        if self.is_closed() {
            return Err(self.shared.closed_error());
        }
        if tx != NO_TX && (tx >> 32) as u32 != self.generation {
            return Err(XsError::Disconnected(
                "the transaction was begun on an earlier connection, which was lost".into(),
            ));
        }
        let wire_tx = tx as u32;
        let id = self.next_req.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(target: "vdev_driver_xen::xenstore", op = ?req.op, req_id = id, tx = wire_tx, "-> {}", printable(&req.payload));
        let mut frame = Vec::with_capacity(16 + req.payload.len());
        for w in [req.op as u32, id, wire_tx, req.payload.len() as u32] {
            frame.extend_from_slice(&w.to_le_bytes());
        }
        frame.extend_from_slice(&req.payload);
        let (rtx, rrx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, rtx);
        if self.out.send(frame).is_err() {
            self.shared
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
            return Err(self.shared.closed_error());
        }
        // The reader may have closed between the check and the insert.
        if self.is_closed() {
            if let Some(t) = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id)
            {
                let _ = t.send(Err(self.shared.closed_error()));
            }
        }
        Ok(rrx)
    }

    /// Wait for a reply. A request unanswered within the timeout closes the connection: a
    /// xenstored that does not answer for that long (or a connection silently gone, such as
    /// an ssh link that stopped carrying data) is not trusted with later requests; the next
    /// one opens a new connection.
    pub(super) async fn wait(
        &self,
        what: &Req,
        rx: oneshot::Receiver<Result<Vec<u8>, XsError>>,
    ) -> Result<Vec<u8>, XsError> {
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => {
                let what = format!("{:?} {}", what.op, describe(&what.payload));
                self.close(format!(
                    "xenstored did not answer {what} within {:?}; the connection was closed",
                    self.timeout
                ));
                Err(XsError::Timeout {
                    what,
                    after: self.timeout,
                })
            }
            Ok(Err(_)) => Err(self.shared.closed_error()),
            Ok(Ok(r)) => r,
        }
    }
}
