//! The checks of the suite, one `pub async fn` each (re-exported at the crate root), in files by
//! concern, and the helpers they share (here).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use vdev_core::{
    Attributes, DetachOptions, Device, DeviceEvent, DeviceRef, DeviceType, Domain, Error,
};

use crate::Harness;

mod batch;
mod discovery;
mod lifecycle;
mod refusals;
mod update;

pub use batch::*;
pub use discovery::*;
pub use lifecycle::*;
pub use refusals::*;
pub use update::*;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A fresh fixture index, distinct within this process.
fn next_index(n: usize) -> usize {
    NEXT.fetch_add(n, Ordering::SeqCst)
}

async fn domain(h: &Harness) -> Domain {
    h.conn.domain(&h.fixture.domain).await.unwrap_or_else(|e| {
        panic!(
            "the fixture's domain '{}' cannot be looked up: {e}",
            h.fixture.domain
        )
    })
}

async fn refs(h: &Harness, d: &Domain) -> BTreeSet<DeviceRef> {
    h.conn
        .devices(d, Some(&h.fixture.device_type))
        .await
        .unwrap_or_else(|e| panic!("listing {} devices failed: {e}", h.fixture.device_type))
        .into_iter()
        .map(|dev| dev.reference)
        .collect()
}

async fn snapshot(h: &Harness, d: &Domain) -> Vec<Device> {
    let mut v = h
        .conn
        .devices(d, None)
        .await
        .unwrap_or_else(|e| panic!("listing devices failed: {e}"));
    v.sort_by(|a, b| (&a.device_type, &a.reference).cmp(&(&b.device_type, &b.reference)));
    v
}

fn options(h: &Harness) -> DetachOptions {
    DetachOptions {
        timeout: h.fixture.detach_timeout,
        force: false,
        ..Default::default()
    }
}

/// Attach one device, or assert that attach is refused as unsupported. `None` when unsupported.
async fn attach_one(h: &Harness, d: &Domain, attrs: &Attributes) -> Option<DeviceRef> {
    let r = h.conn.attach(d, &h.fixture.device_type, attrs).await;
    if !h.conn.capabilities().attach {
        assert!(
            matches!(r, Err(Error::Unsupported { .. })),
            "attach is declared unsupported but answered {r:?}"
        );
        return None;
    }
    Some(r.unwrap_or_else(|e| panic!("attach with {attrs:?} failed: {e}")))
}

async fn detach_one(h: &Harness, d: &Domain, r: &DeviceRef) {
    let res = h
        .conn
        .detach(d, &h.fixture.device_type, r, &options(h))
        .await;
    if !h.conn.capabilities().detach {
        assert!(
            matches!(res, Err(Error::Unsupported { .. })),
            "detach is declared unsupported but answered {res:?}"
        );
        return;
    }
    res.unwrap_or_else(|e| panic!("detach of {r} failed: {e}"));
}

async fn next_event(
    s: &mut vdev_core::EventStream,
    want: impl Fn(&DeviceEvent) -> bool,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, s.next()).await {
            Err(_) => panic!("no {what} event within 30 s"),
            Ok(None) => panic!("the event stream ended before the {what} event"),
            Ok(Some(Err(e))) => panic!("the event stream failed before the {what} event: {e}"),
            Ok(Some(Ok(ev))) if want(&ev) => return,
            Ok(Some(Ok(_))) => {}
        }
    }
}
