//! The conformance kit against the real Xen lab: disks of the lab's domU, attached from the
//! host. The lab's backend runs no hotplug script for host-made disks, so a new disk stays at
//! backend InitWait (2) / frontend Initialised (3): attach waits for "backend at least InitWait".

mod common;

use vdev_conformance::Harness;
use vdev_driver_xen as _;

use common::{lab, uri};

async fn setup() -> Option<Harness> {
    lab()?;
    Some(common::harness(&uri()).await)
}

// The kit's checks, one test each, skipped when the lab is not configured (the kit's own
// `conformance_tests!` cannot skip).
macro_rules! checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let _turn = common::SERIAL.lock().await;
            let Some(h) = setup().await else { return };
            vdev_conformance::$check(&h).await;
            vdev_conformance::finish(h).await;
        }
    )*};
}

checks!(
    domains_and_lookup,
    schema_describes_type,
    unknown_device_type_is_unsupported,
    attach_list_detach,
    detach_unknown_ref_is_not_found,
    invalid_attributes_are_refused,
    missing_attributes_are_refused,
    concurrent_attaches_get_distinct_refs,
    events_for_attach_and_detach,
    readonly_refuses_changes,
);
