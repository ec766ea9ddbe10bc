//! Batches and desired-state documents on a real QEMU: a batch is all or nothing (refused while
//! checking, or by QEMU midway through its one write), and plan / apply / re-apply / export
//! round trips. An independent raw QMP client (its own `-qmp` socket) checks every step.

mod common;

use common::{qemu_available, Vm, VmSpec};
use vdev_core::{
    ApplyOptions, Attributes, ChangeOp, Connection, DeviceType, Document, Domain, Error, NewDevice,
    Outcome,
};
use vdev_driver_qemu as _;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
}

fn disk(pairs: &[(&str, &str)]) -> NewDevice {
    NewDevice {
        device_type: DeviceType::DISK,
        attributes: attrs(pairs),
    }
}

async fn open(vm: &Vm) -> (Connection, Domain) {
    let conn = vdev_core::connect(&vm.uri()).await.expect("connect");
    let d = conn.domain("vm").await.expect("domain vm");
    (conn, d)
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let (a, b, c) = (
        vm.image("a.qcow2", "qcow2"),
        vm.image("b.raw", "raw"),
        vm.image("c.raw", "raw"),
    );
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    let taken = conn
        .attach(
            &d,
            &DeviceType::DISK,
            &attrs(&[
                ("source", c.to_str().unwrap()),
                ("format", "raw"),
                ("id", "taken"),
            ]),
        )
        .await
        .unwrap();
    let before = raw.snapshot();
    let src = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    // Refused while checking (the third image does not exist): nothing was sent to QEMU.
    let e = conn
        .attach_batch(
            &d,
            &[
                disk(&[("source", &src(&a)), ("format", "qcow2")]),
                disk(&[("source", &src(&b)), ("format", "raw"), ("bus", "virtio")]),
                disk(&[("source", "/nonexistent/x.raw"), ("format", "raw")]),
            ],
            &Default::default(),
        )
        .await
        .unwrap_err();
    match &e {
        Error::InBatch {
            index: 2, entry, ..
        } => assert!(entry.contains("/nonexistent/x.raw")),
        e => panic!("{e:?}"),
    }
    assert!(e.to_string().contains("/nonexistent/x.raw"), "{e}");
    assert_eq!(raw.snapshot(), before, "nothing of the batch was made");

    // Refused by QEMU at the third device_add of the one write (its id is taken): the first two
    // (a disk and a USB NIC) were made, and are rolled back with their backends.
    let e = conn
        .attach_batch(
            &d,
            &[
                disk(&[("source", &src(&a)), ("format", "qcow2"), ("id", "b1")]),
                NewDevice {
                    device_type: DeviceType::NETWORK,
                    attributes: attrs(&[("model", "usb-net"), ("id", "n1")]),
                },
                disk(&[("source", &src(&b)), ("format", "raw"), ("id", "taken")]),
            ],
            &Default::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e.condition(), Error::DeviceExists { reference, .. } if reference == "taken"),
        "{e:?}"
    );
    assert!(matches!(e, Error::InBatch { index: 2, .. }), "{e:?}");
    assert!(!e.to_string().contains("rollback could not"), "{e}");
    assert_eq!(raw.snapshot(), before, "the batch was rolled back");
    assert!(raw.leftovers().is_empty(), "{:?}", raw.leftovers());
    assert!(raw.marked().is_empty(), "no removal is left pending");
    assert!(raw.has_device(taken.as_str()));

    // A batch that works: every device there, each once, in the order given.
    let refs = conn
        .attach_batch(
            &d,
            &[
                disk(&[("source", &src(&a)), ("format", "qcow2")]),
                disk(&[("source", &src(&b)), ("format", "raw"), ("bus", "virtio")]),
                NewDevice {
                    device_type: DeviceType::NETWORK,
                    attributes: attrs(&[("mac", "52:54:00:00:be:01"), ("link", "down")]),
                },
            ],
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(refs.len(), 3);
    assert_eq!(raw.qom_get(refs[0].as_str(), "type"), "scsi-hd");
    assert_eq!(raw.qom_get(refs[1].as_str(), "type"), "virtio-blk-pci");
    assert_eq!(raw.qom_get(refs[2].as_str(), "mac"), "52:54:00:00:be:01");
    let listed = conn.devices(&d, Some(&DeviceType::NETWORK)).await.unwrap();
    assert_eq!(listed[0].attributes.get("link"), Some("down"));
    assert!(raw.leftovers().is_empty());
}

#[tokio::test]
async fn apply_reapply_export_and_exclusive() {
    if !qemu_available() {
        return;
    }
    let vm = Vm::start(VmSpec::default());
    let (a, b) = (vm.image("a.qcow2", "qcow2"), vm.image("b.raw", "raw"));
    let (conn, d) = open(&vm).await;
    let mut raw = vm.raw();
    // The controllers the VM starts with.
    let base = raw.devices().len();
    let text = format!(
        r#"
domains:
  vm:
    devices:
      - type: disk
        attrs: {{source: {a}, format: qcow2, bus: scsi}}
      - type: disk
        id: data-b
        attrs: {{source: {b}, format: raw, readonly: on}}
      - type: network
        attrs: {{mac: "52:54:00:AA:00:01", model: usb-net, link: down}}
"#,
        a = a.display(),
        b = b.display()
    );
    let doc = Document::parse(&text).unwrap();
    let plan = conn.plan(&doc).await.unwrap();
    assert_eq!(plan.count(ChangeOp::Add), 3, "{plan:?}");
    assert_eq!(raw.devices().len(), base, "a plan changes nothing");

    let report = conn.apply(&doc, &ApplyOptions::default()).await.unwrap();
    assert_eq!(report.count(&Outcome::Done), 3, "{report:?}");
    let report = report.into_result().unwrap();
    let refs: Vec<String> = report
        .changes
        .iter()
        .map(|c| c.change.reference.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(
        refs[1], "data-b",
        "the document's id is the device's reference"
    );
    let devices = raw.devices();
    assert_eq!(devices.len(), base + 3, "{devices:?}");
    assert_eq!(raw.qom_get("data-b", "type"), "scsi-hd");
    assert_eq!(raw.qom_get(&refs[2], "mac"), "52:54:00:aa:00:01");
    assert!(raw.block("data-b").unwrap()["inserted"]["ro"]
        .as_bool()
        .unwrap());

    // Applied again: nothing to do, nothing sent.
    let again = conn.apply(&doc, &ApplyOptions::default()).await.unwrap();
    assert!(again.is_noop(), "{again:?}");
    // Another connection (its own socket, where the domain is named after it) plans it to
    // nothing too.
    let second = vdev_core::connect(&vm.second_uri()).await.unwrap();
    let name = second.domains().await.unwrap()[0].name.clone();
    let doc_there = Document::parse(&text.replace("  vm:", &format!("  {name}:"))).unwrap();
    assert!(second.plan(&doc_there).await.unwrap().is_empty());
    // The export plans to nothing.
    let exported = conn.export("vm").await.unwrap();
    assert!(
        conn.plan(&exported).await.unwrap().is_empty(),
        "{}",
        exported.to_yaml()
    );

    // The link up is an update in place; a bus change of a disk is a replacement, not made.
    let changed = text.replace("link: down", "link: up").replace(
        "format: raw, readonly: on",
        "format: raw, readonly: on, bus: virtio",
    );
    let doc2 = Document::parse(&changed).unwrap();
    let plan = conn.plan(&doc2).await.unwrap();
    let ops: Vec<ChangeOp> = plan.changes.iter().map(|c| c.op).collect();
    assert_eq!(ops, [ChangeOp::Update, ChangeOp::Replace], "{plan:?}");
    let r = conn.apply(&doc2, &ApplyOptions::default()).await.unwrap();
    assert_eq!(r.count(&Outcome::Done), 1);
    assert_eq!(r.count(&Outcome::NotMade), 1);
    let nic = conn.devices(&d, Some(&DeviceType::NETWORK)).await.unwrap();
    assert_eq!(nic[0].attributes.get("link"), Some("up"));
    assert_eq!(
        raw.qom_get("data-b", "type"),
        "scsi-hd",
        "the replacement is not made"
    );

    // Exclusive disks: the one the document drops goes, the others stay.
    let only_a = format!(
        "domains: {{vm: {{exclusive: [disk], devices: [{{type: disk, attrs: {{source: {}, format: qcow2}}}}]}}}}",
        a.display()
    );
    let r = conn
        .apply(&Document::parse(&only_a).unwrap(), &ApplyOptions::default())
        .await
        .unwrap()
        .into_result()
        .unwrap();
    assert_eq!(r.count(&Outcome::Done), 1, "{r:?}");
    assert!(raw.wait_gone("data-b"));
    assert_eq!(raw.devices().len(), base + 2, "disk a and the NIC stay");
    assert!(raw.leftovers().is_empty(), "{:?}", raw.leftovers());
}

/// QEMU killed in the middle of a batch (stopped first, killed once the batch's one write
/// waits unread in its socket): an error naming the lost connection, not a hang and never a
/// success; once QEMU is back at the same socket, the next batch works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_killed_during_a_batch_is_an_error_and_the_next_batch_works() {
    use std::time::Duration;
    if !qemu_available() {
        return;
    }
    let mut vm = Vm::start(VmSpec::default());
    let images: Vec<String> = (0..4)
        .map(|i| vm.image(&format!("k{i}.raw"), "raw").display().to_string())
        .collect();
    let conn = vdev_core::connect(&format!("{}?timeout=2s", vm.uri()))
        .await
        .unwrap();
    let d = conn.domain("vm").await.unwrap();
    let batch = |from: usize| -> Vec<NewDevice> {
        images[from..from + 2]
            .iter()
            .map(|p| disk(&[("source", p), ("format", "raw")]))
            .collect()
    };
    // One batch first, so that what the next one asks QEMU before its write is cached.
    let first = conn
        .attach_batch(&d, &batch(0), &Default::default())
        .await
        .unwrap();
    let killer = common::kill_once_unread(vm.pid(), &vm.socket, "the batch's write");
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        conn.attach_batch(&d, &batch(2), &Default::default()),
    )
    .await
    .expect("the batch ended instead of hanging");
    if let Err(p) = killer.join() {
        std::panic::resume_unwind(p);
    }
    let e = r.expect_err("QEMU died during the batch, yet it succeeded");
    // Not "rolled back" (an InBatch): nobody can know that now.
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("lost during a batch") && text.contains("unknown"),
        "the error does not say what happened: {text}"
    );
    vm.kill(); // reap the process
    vm.restart();
    let d = conn.domains().await.expect("the domain is back").remove(0);
    let refs = conn
        .attach_batch(&d, &batch(2), &Default::default())
        .await
        .expect("the next batch works once QEMU is back");
    let mut raw = vm.raw();
    for r in &refs {
        assert!(raw.has_device(r.as_str()));
    }
    assert!(
        !raw.has_device(first[0].as_str()),
        "a new QEMU has none of the old devices"
    );
}
