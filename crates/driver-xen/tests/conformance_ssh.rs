//! The conformance kit over `xen+ssh://` into the lab's Domain-0: the same fixture as the local
//! kit (tests/conformance.rs, shared in tests/common), with XenStore reached through the ssh
//! connection's unix-socket forward. `hotplug=no`: the kit's disks are names only (no such
//! files in Domain-0) and it attaches 32 at once, so the backends stay at InitWait as in the
//! local kit; the native hotplug over ssh has its own end-to-end test (tests/ssh_dom0.rs).

mod common;

use vdev_conformance::Harness;
use vdev_driver_xen as _;

async fn setup() -> Option<Harness> {
    // timeout=30s: an ssh login into the lab's TCG Domain-0 alone takes ~5 s.
    let uri = common::ssh_uri("hotplug=no&timeout=30s")?;
    Some(common::harness(&uri).await)
}

// The kit's checks, one test each, skipped when the lab is not configured.
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
