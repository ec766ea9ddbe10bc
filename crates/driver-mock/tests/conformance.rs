//! The conformance suite against the mock driver: in memory, and on a state file.

use std::time::Duration;

use vdev_conformance::{Fixture, Harness, UpdateFixture};
use vdev_core::{Attributes, DeviceType};
use vdev_driver_mock as _; // link the driver: see "Linking drivers" in vdev-core

/// A harness on an in-memory host at `uri`; its read-only connection is to a separate in-memory
/// host (the read-only checks only need refusals and listings).
async fn in_memory(uri: &str, fixture: Fixture) -> Harness {
    Harness {
        conn: vdev_core::connect(uri).await.expect("connect"),
        readonly: vdev_core::connect_readonly(uri).await.expect("connect"),
        fixture,
        hold: None,
    }
}

/// `base()` with each `(name, bad value)` set in turn: one invalid set of attributes per pair.
fn each_spoiled(base: impl Fn() -> Attributes, bad: &[(&str, &str)]) -> Vec<Attributes> {
    bad.iter()
        .map(|&(name, value)| {
            let mut a = base();
            a.insert(name.to_owned(), value.to_owned())
                .expect("valid form");
            a
        })
        .collect()
}

/// The NIC link update each fixture here checks (the mock updates a NIC's link on every host).
fn link_update() -> Option<UpdateFixture> {
    Some(UpdateFixture {
        device_type: DeviceType::NETWORK,
        make_attrs: Box::new(|_| Attributes::new()),
        valid: Attributes::from_pairs([("link", "down")]).expect("valid"),
        malformed: vec![Attributes::from_pairs([("link", "sideways")]).expect("valid")],
    })
}

/// The default host's fixture: Xen-style disk attributes.
fn fixture() -> Fixture {
    Fixture {
        domain: "demo".into(),
        device_type: DeviceType::DISK,
        make_attrs: Box::new(|i| {
            // d1, d2, ... named the Xen way: xvdb, xvdc, ..., xvdq (extended ids) and beyond.
            let n = xen_devid::devid_from_name(&format!("d{}", i + 1)).expect("valid");
            let dev = xen_devid::name_from_devid(n).expect("named");
            Attributes::from_pairs([
                (
                    "uname",
                    format!("file:/var/lib/xen/images/conformance-{i}.img"),
                ),
                ("dev", dev),
                ("mode", "w".to_owned()),
            ])
            .expect("valid")
        }),
        invalid_attrs: each_spoiled(
            || {
                Attributes::from_pairs([("uname", "file:/x.img"), ("dev", "xvdz"), ("mode", "w")])
                    .expect("valid")
            },
            &[
                ("uname", "disk.img"),         // neither phy: nor file:
                ("dev", "vdz"),                // not a Xen device name
                ("mode", "x"),                 // not r or w
                ("backend", "no-such-domain"), // no such backend domain
            ],
        ),
        detach_timeout: Duration::from_secs(5),
        update: link_update(),
        concurrency: vdev_conformance::CONCURRENCY,
    }
}

mod in_memory {
    use super::*;

    async fn setup() -> Harness {
        in_memory("mock:///default", fixture()).await
    }

    vdev_conformance::conformance_tests!(setup);
}

mod state_file {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn setup() -> Harness {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mock-conformance");
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join(format!(
            "host-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_file(&path);
        let uri = format!("mock://{}", path.display());
        Harness {
            conn: vdev_core::connect(&uri).await.expect("connect"),
            readonly: vdev_core::connect(&format!("{uri}?readonly"))
                .await
                .expect("connect"),
            fixture: fixture(),
            hold: None,
        }
    }

    vdev_conformance::conformance_tests!(setup);
}

/// An image file that exists (`like=qemu` checks that `source` does, as QEMU does).
fn image(i: usize) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("mock-like-images");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join(format!("disk-{i}.raw"));
    if !p.exists() {
        std::fs::write(&p, b"").expect("image");
    }
    p.display().to_string()
}

fn like_qemu_fixture() -> Fixture {
    Fixture {
        domain: "demo".into(),
        device_type: DeviceType::DISK,
        make_attrs: Box::new(|i| {
            Attributes::from_pairs([
                ("source", image(i)),
                ("format", "raw".to_owned()),
                ("id", format!("d{i}")),
            ])
            .expect("valid")
        }),
        invalid_attrs: each_spoiled(
            || {
                Attributes::from_pairs([("source", image(999)), ("format", "raw".to_owned())])
                    .expect("valid")
            },
            &[
                ("bus", "floppy"),              // not scsi, virtio or usb
                ("format", "vmdk"),             // not raw or qcow2
                ("media", "tape"),              // not disk or cdrom
                ("id", "1bad"),                 // not a QEMU id
                ("source", "/no/such/img.raw"), // a missing image
            ],
        ),
        detach_timeout: Duration::from_secs(5),
        update: link_update(),
        concurrency: vdev_conformance::CONCURRENCY,
    }
}

fn like_xen_fixture() -> Fixture {
    Fixture {
        update: None, // the Xen driver updates nothing: neither does the mock like it
        ..fixture()
    }
}

fn like_libvirt_fixture() -> Fixture {
    Fixture {
        domain: "demo".into(),
        device_type: DeviceType::DISK,
        make_attrs: Box::new(|i| {
            Attributes::from_pairs([("source", image(i)), ("target", format!("sd{i}"))])
                .expect("valid")
        }),
        invalid_attrs: each_spoiled(
            || Attributes::from_pairs([("source", image(999))]).expect("valid"),
            &[
                ("bus", "floppy"),              // not in libvirt's domain capabilities
                ("media", "tape"),              // not disk or cdrom
                ("type", "network"),            // not file or block
                ("readonly", "maybe"),          // not a boolean
                ("source", "/no/such/img.raw"), // libvirt: "Cannot access storage file"
            ],
        ),
        detach_timeout: Duration::from_secs(5),
        update: link_update(),
        concurrency: vdev_conformance::CONCURRENCY,
    }
}

/// The suite on an in-memory host that behaves like each real driver (`like=`).
macro_rules! like {
    ($($name:ident: $uri:literal, $fixture:ident;)*) => {$(
        mod $name {
            use super::*;

            async fn setup() -> Harness {
                in_memory($uri, $fixture()).await
            }

            vdev_conformance::conformance_tests!(setup);
        }
    )*};
}

like! {
    like_qemu: "mock:///default?like=qemu", like_qemu_fixture;
    like_xen: "mock:///default?like=xen", like_xen_fixture;
    like_libvirt: "mock:///default?like=libvirt", like_libvirt_fixture;
}
