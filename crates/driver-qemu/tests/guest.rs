//! The guest's side of unplug, with a real Linux guest (Debian kernel + busybox, booted under
//! TCG by `tests/qemu-guest/guest`): virtio-blk and virtio-net removals complete through q35's
//! ACPI hotplug and through native PCIe hotplug, and a detach right after the attach (which
//! native PCIe refuses while the slot's power indicator blinks) succeeds with no wait added by
//! the caller. An independent raw QMP client checks that nothing is left.

mod common;

use std::time::Duration;

use common::{guest, qemu_available, Vm, VmSpec};
use vdev_core::{Attributes, DetachOptions, DeviceType};
use vdev_driver_qemu as _;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

async fn unplug_completes(native: bool) {
    if !qemu_available() {
        return;
    }
    let Some(g) = guest() else { return };
    let mut extra = Vec::new();
    if native {
        extra = vec![
            "-global".into(),
            "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off".into(),
        ];
    }
    let vm = Vm::start(VmSpec {
        guest: Some(g),
        extra,
        ..VmSpec::default()
    });
    let img = vm.image("g.img", "raw");
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let d = conn.domain("vm").await.unwrap();
    let mut raw = vm.raw();
    // Native PCIe: the guest takes ~5 s (its hotplug grace period) to power a slot off.
    let detach = DetachOptions {
        timeout: Duration::from_secs(60),
        force: false,
        ..Default::default()
    };
    for (t, a) in [
        (
            DeviceType::DISK,
            attrs(&[
                ("source", img.to_str().unwrap()),
                ("format", "raw"),
                ("bus", "virtio"),
            ]),
        ),
        (DeviceType::NETWORK, attrs(&[("model", "virtio-net-pci")])),
    ] {
        let r = conn.attach(&d, &t, &a).await.expect("attach");
        assert!(raw.has_device(r.as_str()));
        // Right after the attach: no wait by the caller.
        conn.detach(&d, &t, &r, &detach)
            .await
            .unwrap_or_else(|e| panic!("{t} {r} (native={native}): {e}"));
        assert!(
            !raw.has_device(r.as_str()),
            "{t}: gone once detach returned"
        );
        assert_eq!(raw.leftovers(), Vec::<String>::new(), "{t}: nothing left");
        assert_eq!(raw.marked(), Vec::<String>::new(), "{t}: no marker left");
        assert!(conn
            .devices(&d, None)
            .await
            .unwrap()
            .iter()
            .all(|x| x.reference != r));
    }
}

#[tokio::test]
async fn unplug_completes_with_a_guest_through_acpi_hotplug() {
    unplug_completes(false).await;
}

#[tokio::test]
async fn unplug_completes_with_a_guest_through_native_pcie_hotplug() {
    unplug_completes(true).await;
}
