//! The conformance harness on a real QEMU, shared by the local and the `qemu+ssh://` runs:
//! disks on virtio-scsi (their unplug completes without a guest), one fresh QEMU per check.

use std::sync::Arc;
use std::time::Duration;

use super::common::{self, qemu_available, Vm, VmSpec};
use vdev_conformance::{Fixture, Harness, UpdateFixture};
use vdev_core::{Attributes, DeviceType};

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

/// The conformance harness on a fresh QEMU, reached through `uri_of(socket)` (a `qemu:///` URI,
/// or a `qemu+ssh://` one); `keep` lives as long as the harness (a test sshd, for instance).
/// `None` when QEMU is not installed: a skip, reported by [`qemu_available`] (a failure under
/// CI).
pub async fn harness(
    uri_of: impl Fn(&std::path::Path) -> String,
    keep: Option<Arc<dyn std::any::Any + Send + Sync>>,
) -> Option<Harness> {
    if !qemu_available() {
        return None;
    }
    let vm = Arc::new(Vm::start(VmSpec {
        name: Some("conformance".into()),
        ..VmSpec::default()
    }));
    let conn = vdev_core::connect(&uri_of(&vm.socket))
        .await
        .expect("connect");
    let readonly = vdev_core::connect_readonly(&uri_of(&vm.dir.path().join(common::SECOND_SOCKET)))
        .await
        .expect("read-only connect");
    let missing = vm.dir.path().join("missing.raw");
    let plain = vm.image("plain.raw", "raw");
    let invalid_attrs = vec![
        attrs(&[("source", missing.to_str().unwrap()), ("format", "raw")]),
        attrs(&[("source", plain.to_str().unwrap()), ("format", "vmdk")]),
        attrs(&[("source", plain.to_str().unwrap()), ("format", "qcow2")]),
        attrs(&[
            ("source", plain.to_str().unwrap()),
            ("format", "raw"),
            ("bus", "floppy"),
        ]),
        attrs(&[
            ("source", plain.to_str().unwrap()),
            ("format", "raw"),
            ("device.bogus", "1"),
        ]),
        attrs(&[
            ("source", plain.to_str().unwrap()),
            ("format", "raw"),
            ("device.rotation_rate", "fast"),
        ]),
    ];
    // The closure owns the VM: QEMU is killed when the harness is dropped.
    let (keep, _also) = (vm.clone(), keep);
    let make_attrs = Box::new(move |i: usize| {
        let _ = &_also;
        let img = keep.image(&format!("c{i}.raw"), "raw");
        attrs(&[
            ("source", img.to_str().unwrap()),
            ("format", "raw"),
            ("bus", "scsi"),
        ])
    });
    // CD-ROM drives, whose medium an update changes.
    let keep = vm.clone();
    let cd_attrs = Box::new(move |i: usize| {
        let img = keep.image(&format!("cd{i}.iso"), "raw");
        attrs(&[("media", "cdrom"), ("source", img.to_str().unwrap())])
    });
    let new_medium = vm.image("new.iso", "raw");
    let update = UpdateFixture {
        device_type: DeviceType::DISK,
        make_attrs: cd_attrs,
        valid: attrs(&[("source", new_medium.to_str().unwrap()), ("format", "raw")]),
        malformed: vec![
            attrs(&[("source", "/nonexistent/medium.iso")]),
            attrs(&[("source", new_medium.to_str().unwrap()), ("format", "vmdk")]),
            attrs(&[("source", new_medium.to_str().unwrap()), ("force", "maybe")]),
        ],
    };
    Some(Harness {
        conn,
        readonly,
        fixture: Fixture {
            domain: "conformance".into(),
            device_type: DeviceType::DISK,
            make_attrs,
            invalid_attrs,
            detach_timeout: Duration::from_secs(20),
            update: Some(update),
            concurrency: vdev_conformance::CONCURRENCY,
        },
        hold: None,
    })
}
