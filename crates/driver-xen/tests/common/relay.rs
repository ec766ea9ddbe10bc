//! A relay between the driver and the lab's real xenstored (the host socket) that can withhold
//! one message on demand: the reply to a commit (the commit lands, its answer never arrives),
//! or the commit itself (it never lands), or cut every connection once a commit was answered.
//! It also counts directory listings of `/local/domain` and reads of domain names. Nothing is
//! answered by the relay itself: every reply comes from xenstored.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// What the relay does to the next commit (`TRANSACTION_END` with `T`), once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing.
    None,
    /// Pass the commit on; drop xenstored's answer (the commit lands, unanswered).
    DropCommitReply,
    /// Swallow the commit (never sent on: it does not land, unanswered).
    HoldCommit,
    /// Pass the commit and its answer; then close every connection and refuse new ones.
    CutAfterCommitReply,
}

#[derive(Default)]
struct State {
    fault: Mutex<Option<Fault>>,
    refuse: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    domain_dir_reads: AtomicUsize,
    name_reads: AtomicUsize,
    fired: AtomicBool,
}

impl State {
    fn close_all(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// The relay: a unix socket at [`FaultRelay::path`] forwarding to the lab's socket.
pub struct FaultRelay {
    pub path: PathBuf,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.close_all();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn frame(rd: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut hdr = [0u8; 16];
    rd.read_exact(&mut hdr).await.ok()?;
    let len = u32::from_le_bytes(hdr[12..16].try_into().unwrap()) as usize;
    if len > 65536 {
        return None;
    }
    let mut f = hdr.to_vec();
    f.resize(16 + len, 0);
    rd.read_exact(&mut f[16..]).await.ok()?;
    Some(f)
}

fn word(f: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(f[i * 4..i * 4 + 4].try_into().unwrap())
}

fn first_field(f: &[u8]) -> &[u8] {
    f[16..].split(|b| *b == 0).next().unwrap_or_default()
}

impl FaultRelay {
    /// Listen at `path`, forwarding each connection to `upstream` (xenstored's socket).
    pub fn start(path: &Path, upstream: &str) -> FaultRelay {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the relay socket");
        let state = Arc::new(State::default());
        let (st, up) = (state.clone(), upstream.to_owned());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = UnixStream::connect(&up).await else {
                    continue;
                };
                let (mut crd, mut cwr) = client.into_split();
                let (mut srd, mut swr) = server.into_split();
                let dropped: Arc<Mutex<HashSet<u32>>> = Default::default();
                let cut_after: Arc<Mutex<Option<u32>>> = Default::default();
                let (s1, d1, c1) = (st.clone(), dropped.clone(), cut_after.clone());
                let c2s = tokio::spawn(async move {
                    while let Some(f) = frame(&mut crd).await {
                        let (ty, id) = (word(&f, 0), word(&f, 1));
                        if (ty == 1 || ty == 22) && first_field(&f) == b"/local/domain" {
                            s1.domain_dir_reads.fetch_add(1, Ordering::SeqCst);
                        }
                        if ty == 2 {
                            let p = String::from_utf8_lossy(first_field(&f)).into_owned();
                            if p.starts_with("/local/domain/") && p.ends_with("/name") {
                                s1.name_reads.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        if ty == 7 && f.get(16) == Some(&b'T') {
                            let fault = s1.fault.lock().unwrap().take();
                            if fault.is_some() {
                                s1.fired.store(true, Ordering::SeqCst);
                            }
                            match fault {
                                Some(Fault::DropCommitReply) => {
                                    d1.lock().unwrap().insert(id);
                                }
                                Some(Fault::HoldCommit) => continue,
                                Some(Fault::CutAfterCommitReply) => {
                                    *c1.lock().unwrap() = Some(id);
                                }
                                Some(Fault::None) | None => {}
                            }
                        }
                        if swr.write_all(&f).await.is_err() {
                            break;
                        }
                    }
                });
                let s2 = st.clone();
                let s2c = tokio::spawn(async move {
                    while let Some(f) = frame(&mut srd).await {
                        let (ty, id) = (word(&f, 0), word(&f, 1));
                        if ty != 15 && dropped.lock().unwrap().remove(&id) {
                            continue;
                        }
                        if cwr.write_all(&f).await.is_err() {
                            break;
                        }
                        if ty != 15 && *cut_after.lock().unwrap() == Some(id) {
                            s2.refuse.store(true, Ordering::SeqCst);
                            s2.close_all();
                            return;
                        }
                    }
                });
                let mut t = st.tasks.lock().unwrap();
                t.retain(|t| !t.is_finished());
                t.push(c2s);
                t.push(s2c);
            }
        });
        FaultRelay {
            path: path.to_owned(),
            state,
            accept,
        }
    }

    /// Arm `fault` for the next commit.
    pub fn arm(&self, fault: Fault) {
        self.state.fired.store(false, Ordering::SeqCst);
        *self.state.fault.lock().unwrap() = Some(fault);
    }

    /// Whether the armed fault met its commit.
    pub fn fired(&self) -> bool {
        self.state.fired.load(Ordering::SeqCst)
    }

    /// Refuse new connections (closed at once) or accept them again.
    pub fn refuse(&self, on: bool) {
        self.state.refuse.store(on, Ordering::SeqCst);
    }

    /// Close every connection now.
    pub fn close_all(&self) {
        self.state.close_all();
    }

    /// Directory listings of `/local/domain` (DIRECTORY or DIRECTORY_PART) and reads of
    /// `/local/domain/*/name` seen since the last call; the counters restart.
    pub fn take_counts(&self) -> (usize, usize) {
        (
            self.state.domain_dir_reads.swap(0, Ordering::SeqCst),
            self.state.name_reads.swap(0, Ordering::SeqCst),
        )
    }
}
