//! Many domains: with 1,000 and 10,000 extra entries under `/local/domain` (more than the
//! 4 KiB of names one DIRECTORY answer holds; xenstored answers it E2BIG), every domain is
//! listed, as many as `xenstore-list /local/domain` counts in Domain-0, a lookup by id or a
//! listing of one domain's devices reads no other domain (counted by a relay in between), and
//! the event stream, which reads every domain's devices when it starts, knows a disk of the
//! last domain (its removal is reported) and reports a disk that appears in another.

mod common;

use std::time::Duration;

use common::relay::FaultRelay;
use common::{dom0, domu, lab, xs_rm_all, xs_write_all, SERIAL};
use futures::StreamExt;
use vdev_core::{DeviceEvent, DomainKey};
use vdev_driver_xen as _;

/// Fake domain entries `/local/domain/FIRST..FIRST+n` (ids no real domain has here), written in
/// one pipelined burst and removed the same way on drop.
struct FakeDomains(Vec<String>);

const FIRST: u32 = 20000;

impl FakeDomains {
    fn create(n: u32) -> FakeDomains {
        let paths: Vec<String> = (FIRST..FIRST + n)
            .map(|i| format!("/local/domain/{i}"))
            .collect();
        // Removed on drop even if writing fails half way.
        let f = FakeDomains(paths);
        xs_write_all(
            &f.0.iter()
                .map(|p| (p.clone(), Vec::new()))
                .collect::<Vec<_>>(),
        );
        f
    }
}

impl Drop for FakeDomains {
    fn drop(&mut self) {
        xs_rm_all(&self.0);
    }
}

/// A connected disk (vbd 51712, `xvda`) of fake domain `domid`, as libxl lays out its frontend
/// and the backend in Domain-0; the backend is removed on drop (the frontend goes with the
/// fake domain).
struct FakeDisk {
    frontend: String,
    backend: String,
}

impl FakeDisk {
    const REF: &'static str = "51712";

    fn create(domid: u32) -> FakeDisk {
        let frontend = format!("/local/domain/{domid}/device/vbd/{}", Self::REF);
        let backend = format!("/local/domain/0/backend/vbd/{domid}/{}", Self::REF);
        let d = FakeDisk { frontend, backend };
        let pairs = [
            (format!("{}/backend", d.frontend), d.backend.clone()),
            (format!("{}/backend-id", d.frontend), "0".to_owned()),
            (format!("{}/state", d.frontend), "4".to_owned()),
            (format!("{}/frontend", d.backend), d.frontend.clone()),
            (format!("{}/online", d.backend), "1".to_owned()),
            (format!("{}/state", d.backend), "4".to_owned()),
        ];
        xs_write_all(&pairs.map(|(p, v)| (p, v.into_bytes())));
        d
    }

    fn remove(&self) {
        xs_rm_all(&[self.frontend.clone(), self.backend.clone()]);
    }
}

impl Drop for FakeDisk {
    fn drop(&mut self) {
        xs_rm_all(std::slice::from_ref(&self.backend));
    }
}

/// The next event about `domid`'s disk [`FakeDisk::REF`], waiting at most `within`.
async fn next_event_of(
    events: &mut vdev_core::EventStream,
    domid: u32,
    within: Duration,
) -> Option<DeviceEvent> {
    tokio::time::timeout(within, async {
        while let Some(ev) = events.next().await {
            let ev = ev.expect("an error in the event stream");
            let (domain, reference) = match &ev {
                DeviceEvent::Added {
                    domain, reference, ..
                }
                | DeviceEvent::Removed {
                    domain, reference, ..
                }
                | DeviceEvent::StateChanged {
                    domain, reference, ..
                } => (domain, reference),
                _ => continue,
            };
            if domain.id.expect("a Xen domain has an id") == domid
                && reference.as_str() == FakeDisk::REF
            {
                return Some(ev);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

async fn with_extra_domains(n: u32) {
    let _turn = SERIAL.lock().await;
    let Some(lab) = lab() else { return };
    let _fake = tokio::task::block_in_place(|| FakeDomains::create(n));
    let (ok, out) = dom0("xenstore-list /local/domain | wc -l");
    assert!(ok, "{out}");
    let expected: usize = out.trim().parse().expect("a count");
    assert!(
        expected >= n as usize + 2,
        "xenstore-list counts {expected}"
    );
    let dir = std::env::temp_dir().join(format!("vdev-scale-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let relay = FaultRelay::start(&dir.join("xs.sock"), &lab);
    let uri = format!("xen:///?socket={}&timeout=60s", relay.path.display());
    let conn = tokio::time::timeout(Duration::from_secs(600), vdev_core::connect(&uri))
        .await
        .expect("connect hung")
        .expect("connect");
    let domains = tokio::time::timeout(Duration::from_secs(600), conn.domains())
        .await
        .expect("listing hung")
        .expect("listing domains");
    assert_eq!(domains.len(), expected, "domains listed vs xenstore-list");
    assert!(domains
        .iter()
        .any(|d| d.id.expect("a Xen domain has an id") == FIRST + n - 1));
    assert!(domains.iter().any(|d| d.name == domu()));
    // By id and one domain's devices: no other domain is read.
    relay.take_counts();
    let mid = FIRST + n / 2;
    let fake = conn
        .lookup_domain(&DomainKey::Id(mid))
        .await
        .expect("lookup of a fake domain by id");
    assert_eq!(fake.id.expect("a Xen domain has an id"), mid);
    let id: u32 = std::env::var("XENLAB_DOMU_ID")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let d = conn
        .lookup_domain(&DomainKey::Id(id))
        .await
        .expect("lookup of the domU by id");
    assert_eq!(d.name, domu());
    conn.devices(&d, None)
        .await
        .expect("listing the domU's devices");
    let (dirs, names) = relay.take_counts();
    assert_eq!(
        dirs, 0,
        "a lookup by id or a device listing listed /local/domain"
    );
    assert!(
        names <= 8,
        "{names} domain names read for two lookups and one listing"
    );
    // By name needs the directory, and works.
    let by_name = conn.domain(&domu()).await.expect("lookup by name");
    assert_eq!(by_name.id.expect("a Xen domain has an id"), id);
    // Events: the stream starts by reading every domain's devices, so it knows the disk of the
    // last fake domain: removing it is reported as Removed (a disk it had not seen would not
    // be). A disk that appears in another fake domain afterwards is reported as Added.
    let last = FIRST + n - 1;
    let existing = tokio::task::block_in_place(|| FakeDisk::create(last));
    let t0 = std::time::Instant::now();
    let mut events = tokio::time::timeout(Duration::from_secs(180), conn.events())
        .await
        .expect("starting the event stream hung")
        .expect("events");
    // Information only (no timing assert): the start reads every domain's devices.
    eprintln!(
        "event stream started in {:?} with {n} extra domains",
        t0.elapsed()
    );
    tokio::task::block_in_place(|| existing.remove());
    let ev = next_event_of(&mut events, last, Duration::from_secs(60)).await;
    assert!(
        matches!(ev, Some(DeviceEvent::Removed { .. })),
        "the removal of the last domain's disk, as the stream reported it: {ev:?}"
    );
    let added = tokio::task::block_in_place(|| FakeDisk::create(mid));
    let ev = next_event_of(&mut events, mid, Duration::from_secs(60)).await;
    assert!(
        matches!(ev, Some(DeviceEvent::Added { .. })),
        "a new disk of domain {mid}, as the stream reported it: {ev:?}"
    );
    drop(events);
    drop((existing, added));
    conn.close().await.unwrap();
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_extra_domain_entries() {
    with_extra_domains(1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_extra_domain_entries() {
    with_extra_domains(10_000).await;
}
