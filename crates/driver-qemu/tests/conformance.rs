//! The conformance kit against a real QEMU over its local unix socket: disks on virtio-scsi
//! (their unplug completes without a guest), one fresh QEMU per check.

mod common;
#[path = "common/harness.rs"]
mod harness;

use vdev_conformance::Harness;
use vdev_driver_qemu as _;

async fn setup() -> Option<Harness> {
    harness::harness(|socket| format!("qemu://{}", socket.display()), None).await
}

vdev_conformance::conformance_tests!(setup);
