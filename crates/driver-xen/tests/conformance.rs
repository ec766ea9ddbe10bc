//! The conformance kit against the real Xen lab: disks of the lab's domU, attached from the
//! host. The lab's backend runs no hotplug script for host-made disks, so a new disk stays at
//! backend InitWait (2) / frontend Initialised (3): attach waits for "backend at least InitWait".

mod common;

use vdev_conformance::Harness;
use vdev_driver_xen as _;

use common::{lab, uri};

async fn setup() -> Option<Harness> {
    lab()?;
    // A deadline for the backend a loaded 2-core machine meets (the lab's TCG Domain-0 with
    // eight attaches at once took over the default 20 s beside a CPU-bound process).
    Some(common::harness(&format!("{}&attach-timeout=120s", uri())).await)
}

vdev_conformance::conformance_tests!(setup);
