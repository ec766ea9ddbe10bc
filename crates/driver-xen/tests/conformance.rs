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

vdev_conformance::conformance_tests!(setup);
