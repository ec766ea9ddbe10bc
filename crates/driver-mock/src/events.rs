//! Events of a state-file host: every process reads them from the file's journal, woken by the
//! kernel's file notifications (inotify, through the `notify` crate), never by polling.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use vdev_core::{DeviceEvent, Error, EventStream, Result};

use crate::store::read_file;

struct Watching {
    path: PathBuf,
    last: u64,
    pending: VecDeque<Result<DeviceEvent>>,
    wake: mpsc::UnboundedReceiver<()>,
    closed: watch::Receiver<bool>,
    _watcher: notify::RecommendedWatcher,
}

impl Watching {
    /// Queue the journal entries after the last one seen.
    fn catch_up(&mut self) {
        let host = match read_file(&self.path) {
            Ok(h) => h,
            Err(e) => {
                self.pending.push_back(Err(e.into()));
                return;
            }
        };
        if host.event_seq <= self.last {
            return;
        }
        if let Some(first) = host.journal.front().map(|e| e.seq) {
            if first > self.last + 1 {
                self.pending.push_back(Err(vdev_core::events_lost(
                    crate::NAME,
                    first - self.last - 1,
                )));
            }
        }
        for e in host.journal.iter().filter(|e| e.seq > self.last) {
            self.pending.push_back(Ok(e.event.clone()));
        }
        self.last = host.event_seq;
    }
}

/// A stream of the events recorded in the state file at `path` from now on.
pub(crate) fn file_events(path: PathBuf, closed: watch::Receiver<bool>) -> Result<EventStream> {
    let (tx, wake) = mpsc::unbounded_channel();
    let name = path.file_name().map(|n| n.to_owned());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev.paths.iter().any(|p| p.file_name() == name.as_deref()) {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| watch_error(&path, e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(&path, e))?;
    // Watching first, then reading: no change can fall between the two.
    let last = read_file(&path)?.event_seq;
    let state = Watching {
        path,
        last,
        pending: VecDeque::new(),
        wake,
        closed,
        _watcher: watcher,
    };
    Ok(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((e, st));
            }
            if *st.closed.borrow() {
                return None;
            }
            tokio::select! {
                woke = st.wake.recv() => {
                    woke?;
                    while st.wake.try_recv().is_ok() {}
                    st.catch_up();
                }
                _ = st.closed.changed() => {}
            }
        }
    })
    .boxed())
}

fn watch_error(path: &Path, e: notify::Error) -> Error {
    Error::backend_with(
        crate::NAME,
        format!("cannot watch the state file {} for changes", path.display()),
        e,
    )
}
