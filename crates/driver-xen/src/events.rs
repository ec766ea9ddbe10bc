//! Device events from one XenStore watch on `/local/domain` (frontends and backends) and one
//! on `/libxl` (libxl's records).
//!
//! Every watch event names a path; those under a vbd (frontend
//! `/local/domain/D/device/vbd/N/...`, backend `/local/domain/B/backend/vbd/D/N/...`, record
//! `/libxl/D/device/vbd/N/...`) mark the disk `(D, N)` dirty. Dirty disks are read again (three
//! pipelined reads) and compared with what was last seen: a new disk is `Added`, a gone one
//! `Removed`, another state `StateChanged`. Bursts (an attach writes some 40 nodes) are coalesced:
//! every queued event is drained before anything is read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;
use vdev_core::{DeviceEvent, DeviceRef, DeviceState, Domain, EventStream};

use crate::vbd::{self, Kind};
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

/// The state of a disk as events report it; `None` when it does not exist.
async fn look(xs: &XenStore, (kind, d, n): Key) -> Result<Option<DeviceState>, crate::XsError> {
    let fe = vbd::frontend_path(kind, d, n);
    let lx = vbd::libxl_path(kind, d, n);
    let r = xs
        .batch(
            NO_TX,
            vec![
                Req::read(&fe),
                Req::read(&lx),
                Req::read(&format!("{lx}/backend")),
                Req::read(&format!("{fe}/backend")),
            ],
        )
        .await?;
    let mut r = r.into_iter().map(|x| opt(x).map(|o| o.map(utf8)));
    let (fe_node, lx_node, lxb, feb) = (
        r.next().unwrap()?,
        r.next().unwrap()?,
        r.next().unwrap()?,
        r.next().unwrap()?,
    );
    if fe_node.is_none() && lx_node.is_none() {
        return Ok(None);
    }
    let Some(be) = lxb
        .into_iter()
        .chain(feb)
        .find(|p| vbd::check_backend_path(kind, p, d, n).is_some())
    else {
        return Ok(Some(DeviceState::Unknown("no backend".into())));
    };
    let r = xs
        .batch(
            NO_TX,
            vec![
                Req::read(&format!("{be}/state")),
                Req::read(&format!("{be}/online")),
            ],
        )
        .await?;
    let mut r = r.into_iter().map(|x| opt(x).map(|o| o.map(utf8)));
    let (state, online) = (r.next().unwrap()?, r.next().unwrap()?);
    Ok(Some(crate::driver::device_state(
        state.as_deref(),
        online.as_deref(),
    )))
}

async fn domain(xs: &XenStore, names: &mut HashMap<u32, String>, d: u32) -> Domain {
    if let std::collections::hash_map::Entry::Vacant(e) = names.entry(d) {
        if let Ok(Some(n)) = xs.read(NO_TX, &format!("/local/domain/{d}/name")).await {
            e.insert(n);
        }
    }
    Domain {
        id: d,
        name: names.get(&d).cloned().unwrap_or_else(|| d.to_string()),
    }
}

/// Start the event stream.
pub(crate) async fn stream(xs: Arc<XenStore>) -> vdev_core::Result<EventStream> {
    let err = |e: crate::XsError| e.into_core("watching XenStore");
    let mut w1 = xs.watch("/local/domain").await.map_err(err)?;
    let mut w2 = xs.watch("/libxl").await.map_err(err)?;
    // What exists now, so that the watches' first events do not report it as new.
    let mut seen: BTreeMap<Key, DeviceState> = BTreeMap::new();
    for d in xs.directory(NO_TX, "/local/domain").await.map_err(err)? {
        let Ok(d) = d.parse::<u32>() else { continue };
        let mut ns = BTreeSet::new();
        for kind in Kind::ALL {
            for dir in [vbd::frontend_dir(kind, d), vbd::libxl_dir(kind, d)] {
                for n in xs.directory(NO_TX, &dir).await.map_err(err)? {
                    if let Ok(n) = n.parse::<u32>() {
                        ns.insert((kind, d, n));
                    }
                }
            }
        }
        for k in ns {
            if let Some(s) = look(&xs, k).await.map_err(err)? {
                seen.insert(k, s);
            }
        }
    }
    let (tx, rx) = mpsc::unbounded_channel::<vdev_core::Result<DeviceEvent>>();
    tokio::spawn(async move {
        let mut names = HashMap::new();
        loop {
            let mut dirty = BTreeSet::new();
            tokio::select! {
                _ = tx.closed() => return,
                p = w1.next() => match p { Some(p) => dirty.extend(key_of(&p)), None => return },
                p = w2.next() => match p { Some(p) => dirty.extend(key_of(&p)), None => return },
            }
            drain(&mut w1, &mut dirty);
            drain(&mut w2, &mut dirty);
            for k in dirty {
                let now = match look(&xs, k).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.into_core("reading a changed disk")));
                        continue;
                    }
                };
                let before = seen.get(&k).cloned();
                if before == now {
                    continue;
                }
                let dom = domain(&xs, &mut names, k.1).await;
                let reference = DeviceRef::new(k.2.to_string()).expect("a number is a valid ref");
                let device_type = k.0.device_type();
                let ev = match (&before, &now) {
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
                    (None, None) => continue,
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
