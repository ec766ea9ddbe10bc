//! Device events from one XenStore watch on `/local/domain` (frontends and backends) and one
//! on `/libxl` (libxl's records).
//!
//! Every watch event names a path; those under a vbd (frontend
//! `/local/domain/D/device/vbd/N/...`, backend `/local/domain/B/backend/vbd/D/N/...`, record
//! `/libxl/D/device/vbd/N/...`) mark the disk `(D, N)` dirty. Dirty devices are read again (every
//! dirty device in two pipelined round trips) and compared with what was last seen: a new disk is `Added`, a gone one
//! `Removed`, another state `StateChanged`. Bursts (an attach writes some 40 nodes) are coalesced:
//! every queued event is drained before anything is read.
//!
//! When the xenstored connection is lost (xenstored restarted, its socket or the ssh link went
//! away) the watches end; the stream then opens a new connection, registers both watches again,
//! reads every device again (pipelined: a few round trips however many domains) and reports
//! what changed meanwhile (an outage is reported once as
//! an error item, and retried every second while the stream is read).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;
use vdev_core::{DeviceEvent, DeviceRef, DeviceState, Domain, EventStream};

use crate::driver::Inner;
use crate::paths::{self, Kind};
use crate::xenstore::{opt, utf8, Req, Watch, XenStore, NO_TX};

type Key = (Kind, u32, u32);

/// Which disk a changed path belongs to.
fn key_of(path: &str) -> Option<Key> {
    let p: Vec<&str> = path.split('/').collect();
    let num = |s: &str| s.parse::<u32>().ok();
    match p.as_slice() {
        ["", "local", "domain", d, "device", k, n, ..]
        | ["", "local", "domain", _, "backend", k, d, n, ..]
        | ["", "libxl", d, "device", k, n, ..] => Some((Kind::from_xs(k)?, num(d)?, num(n)?)),
        _ => None,
    }
}

/// The state of each of `keys` as events report it (`None`: the device does not exist), read
/// in two pipelined round trips however many keys: the frontend, libxl's record and both
/// backend links; then each backend's `state` and `online`. The outer error is the
/// connection's; an inner one, a request about that device alone.
async fn look_all(
    xs: &XenStore,
    keys: &[Key],
) -> Result<Vec<Result<Option<DeviceState>, crate::XsError>>, crate::XsError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut reqs = Vec::with_capacity(keys.len() * 4);
    for &(kind, d, n) in keys {
        let fe = paths::frontend_path(kind, d, n);
        let lx = paths::libxl_path(kind, d, n);
        reqs.extend([
            Req::read(&fe),
            Req::read(&lx),
            Req::read(&format!("{lx}/backend")),
            Req::read(&format!("{fe}/backend")),
        ]);
    }
    let mut r = xs
        .batch(NO_TX, reqs)
        .await?
        .into_iter()
        .map(|x| opt(x).map(|o| o.map(utf8)));
    // Per key: its state when the first reads tell it, else its backend, to read.
    enum First {
        Known(Option<DeviceState>),
        Backend(String),
    }
    let mut firsts: Vec<Result<First, crate::XsError>> = Vec::with_capacity(keys.len());
    for &(kind, d, n) in keys {
        let mut read = || r.next().expect("four replies per key");
        let (fe_node, lx_node, lxb, feb) = (read(), read(), read(), read());
        firsts.push((|| {
            let (fe_node, lx_node, lxb, feb) = (fe_node?, lx_node?, lxb?, feb?);
            if fe_node.is_none() && lx_node.is_none() {
                return Ok(First::Known(None));
            }
            Ok(
                match lxb
                    .into_iter()
                    .chain(feb)
                    .find(|p| paths::check_backend_path(kind, p, d, n).is_some())
                {
                    Some(be) => First::Backend(be),
                    None => First::Known(Some(DeviceState::Unknown("no backend".into()))),
                },
            )
        })());
    }
    let reqs = firsts
        .iter()
        .filter_map(|f| match f {
            Ok(First::Backend(be)) => Some(be),
            _ => None,
        })
        .flat_map(|be| {
            [
                Req::read(&format!("{be}/state")),
                Req::read(&format!("{be}/online")),
            ]
        })
        .collect();
    let mut r = xs
        .batch(NO_TX, reqs)
        .await?
        .into_iter()
        .map(|x| opt(x).map(|o| o.map(utf8)));
    Ok(firsts
        .into_iter()
        .map(|f| match f? {
            First::Known(known) => Ok(known),
            First::Backend(_) => {
                let mut read = || r.next().expect("two replies per backend");
                let (state, online) = (read(), read());
                let (state, online) = (state?, online?);
                Ok(Some(crate::listing::device_state(
                    state.as_deref(),
                    online.as_deref(),
                )))
            }
        })
        .collect())
}

async fn domain(xs: &XenStore, names: &mut HashMap<u32, String>, d: u32) -> Domain {
    if let std::collections::hash_map::Entry::Vacant(e) = names.entry(d) {
        if let Ok(Some(n)) = xs.read(NO_TX, &format!("/local/domain/{d}/name")).await {
            e.insert(n);
        }
    }
    Domain::new(
        Some(d),
        names.get(&d).cloned().unwrap_or_else(|| d.to_string()),
    )
}

/// Every device that exists now, with its state: every domain's device directories, then
/// every device, each step pipelined (a few round trips however many domains and devices).
async fn scan(xs: &XenStore) -> Result<BTreeMap<Key, DeviceState>, crate::XsError> {
    let mut dirs: Vec<(Kind, u32)> = Vec::new();
    let mut paths = Vec::new();
    for d in xs.directory(NO_TX, "/local/domain").await? {
        let Ok(d) = d.parse::<u32>() else { continue };
        for kind in Kind::ALL {
            for dir in [paths::frontend_dir(kind, d), paths::libxl_dir(kind, d)] {
                dirs.push((kind, d));
                paths.push(dir);
            }
        }
    }
    let mut keys = BTreeSet::new();
    for ((kind, d), names) in dirs.into_iter().zip(xs.directories(NO_TX, &paths).await?) {
        keys.extend(
            names
                .iter()
                .filter_map(|n| n.parse::<u32>().ok())
                .map(|n| (kind, d, n)),
        );
    }
    let keys: Vec<Key> = keys.into_iter().collect();
    let mut seen = BTreeMap::new();
    for (k, state) in keys.iter().zip(look_all(xs, &keys).await?) {
        if let Some(s) = state? {
            seen.insert(*k, s);
        }
    }
    Ok(seen)
}

/// Register both watches, then read what exists (after, so nothing is missed in between).
async fn watch_all(
    xs: &Arc<XenStore>,
) -> Result<(Watch, Watch, BTreeMap<Key, DeviceState>), crate::XsError> {
    let w1 = xs.watch("/local/domain").await?;
    let w2 = xs.watch("/libxl").await?;
    let seen = scan(xs).await?;
    Ok((w1, w2, seen))
}

/// The event for a device that was `before` and is `now`, if it changed.
fn event(
    k: Key,
    dom: Domain,
    before: &Option<DeviceState>,
    now: &Option<DeviceState>,
) -> Option<DeviceEvent> {
    if before == now {
        return None;
    }
    let reference = DeviceRef::new(k.2.to_string()).expect("a number is a valid ref");
    let device_type = k.0.device_type();
    Some(match (before, now) {
        (None, Some(_)) => DeviceEvent::Added {
            domain: dom,
            device_type,
            reference,
        },
        (Some(_), None) => DeviceEvent::Removed {
            domain: dom,
            device_type,
            reference,
        },
        (_, Some(s)) => DeviceEvent::StateChanged {
            domain: dom,
            device_type,
            reference,
            state: s.clone(),
        },
        (None, None) => return None,
    })
}

/// Start the event stream.
impl Inner {
    /// The connection's event stream.
    pub(crate) async fn events(&self) -> vdev_core::Result<EventStream> {
        stream(self.xs.clone()).await
    }
}

pub(crate) async fn stream(xs: Arc<XenStore>) -> vdev_core::Result<EventStream> {
    let err = |e: crate::XsError| e.into_core("watching XenStore");
    // What exists now, so that the watches' first events do not report it as new.
    let (mut w1, mut w2, mut seen) = watch_all(&xs).await.map_err(err)?;
    let (tx, rx) = mpsc::unbounded_channel::<vdev_core::Result<DeviceEvent>>();
    tokio::spawn(async move {
        let mut names = HashMap::new();
        loop {
            let mut dirty = BTreeSet::new();
            let lost = tokio::select! {
                _ = tx.closed() => return,
                p = w1.next() => match p { Some(p) => { dirty.extend(key_of(&p)); false } None => true },
                p = w2.next() => match p { Some(p) => { dirty.extend(key_of(&p)); false } None => true },
            };
            if lost {
                // The connection is gone: open a new one and compare everything.
                let mut reported = false;
                let now = loop {
                    if xs.is_closed_for_good() {
                        return;
                    }
                    match watch_all(&xs).await {
                        Ok((a, b, now)) => {
                            (w1, w2) = (a, b);
                            break now;
                        }
                        Err(e) => {
                            if !reported {
                                reported = true;
                                if tx
                                    .send(Err(e.into_core(
                                        "watching XenStore again after the connection was lost",
                                    )))
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            tokio::select! {
                                _ = tx.closed() => return,
                                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                            }
                        }
                    }
                };
                tracing::debug!("XenStore watches registered again after the connection was lost");
                let keys: BTreeSet<Key> = seen.keys().chain(now.keys()).copied().collect();
                for k in keys {
                    let (before, after) = (seen.get(&k).cloned(), now.get(&k).cloned());
                    if before == after {
                        continue;
                    }
                    let dom = domain(&xs, &mut names, k.1).await;
                    if let Some(ev) = event(k, dom, &before, &after) {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                }
                seen = now;
                continue;
            }
            drain(&mut w1, &mut dirty);
            drain(&mut w2, &mut dirty);
            let dirty: Vec<Key> = dirty.into_iter().collect();
            let states = match look_all(&xs, &dirty).await {
                Ok(states) => states,
                Err(e) => {
                    // The connection's error: the watches end too, and the next turn
                    // reconnects and compares everything.
                    let _ = tx.send(Err(e.into_core("reading the changed devices")));
                    continue;
                }
            };
            for (k, now) in dirty.into_iter().zip(states) {
                let now = match now {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.into_core("reading a changed device")));
                        continue;
                    }
                };
                let before = seen.get(&k).cloned();
                if before == now {
                    continue;
                }
                let dom = domain(&xs, &mut names, k.1).await;
                let Some(ev) = event(k, dom, &before, &now) else {
                    continue;
                };
                match now {
                    Some(s) => seen.insert(k, s),
                    None => seen.remove(&k),
                };
                if tx.send(Ok(ev)).is_err() {
                    return;
                }
            }
        }
    });
    let s = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    Ok(Box::pin(s))
}

fn drain(w: &mut Watch, dirty: &mut BTreeSet<Key>) {
    while let Some(p) = w.try_next() {
        dirty.extend(key_of(&p));
    }
}
