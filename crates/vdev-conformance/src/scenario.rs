//! One application scenario, written once against vdev's API, that runs unchanged on a real
//! hypervisor and on the mock speaking its driver's language (`mock:///default?like=qemu`,
//! design 0017): attach a disk and a NIC, list, change a CD-ROM drive's medium, bad input of
//! several kinds (each a typed error that changes nothing), detach with a guest that answers
//! late, a tray the guest has locked, and a detach the guest never answers.
//!
//! [`run`] asserts what an application would (results, states, that bad input changes
//! nothing) and returns a [`Transcript`]: every step's result (`ok` or the error's code) and
//! every listing, with references replaced by the step that made the device. Two runs agree
//! when their transcripts are equal.

use std::time::Duration;

use futures::future::BoxFuture;
use vdev_core::{
    Attributes, Connection, DetachOptions, DeviceRef, DeviceType, Domain, Error, Result,
};

/// What the scenario works with, in the vocabulary of the driver under test.
pub struct Scenario {
    /// The domain.
    pub domain: String,
    /// A disk to attach (its guest answers the detach late).
    pub disk: Attributes,
    /// A NIC to attach (its guest never answers the detach).
    pub nic: Attributes,
    /// CD-ROM drives with a medium, and a new medium for an update: `(drive the guest
    /// locks, drive whose medium changes, new medium)`; `None` where the driver has none.
    pub cdrom: Option<(Attributes, Attributes, Attributes)>,
    /// Whether the CD-ROM drives are in the domain already (found by their `source`) rather
    /// than attached by the scenario: libvirt 9.0 changes the medium only of a drive the
    /// domain started with.
    pub cdrom_in_domain: bool,
    /// Attachments the driver refuses, each with the code of its error (a missing image, an
    /// unknown bus, a duplicate target, ...).
    pub bad_attach: Vec<(DeviceType, Attributes, &'static str)>,
    /// An update of the disk with an attribute that cannot change (refused before the driver).
    pub bad_update: Attributes,
    /// The timeout of the detach whose guest answers late (longer than the guest takes).
    pub late_timeout: Duration,
    /// The timeout of the detach whose guest never answers.
    pub never_timeout: Duration,
    /// The listed attributes compared between runs (generated ones such as node names left out).
    pub compared: Vec<&'static str>,
}

/// A moment where the guest's behaviour matters; the runner makes the guest behave so (the
/// mock through its knobs, a real hypervisor through its test guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestStep {
    /// The guest will release this device, but only after a while.
    AnswersLate,
    /// The guest will not release this device within the detach's timeout.
    NeverAnswers,
    /// The guest locks this CD-ROM drive's tray.
    LocksTray,
}

/// How the runner prepares the guest before a step.
pub type Prepare<'a> =
    &'a (dyn Fn(GuestStep, DeviceType, DeviceRef) -> BoxFuture<'static, ()> + Sync);

/// What a run did: each step's result, and the listings.
pub type Transcript = Vec<(String, String)>;

/// `ok` or the error's code.
fn outcome<T>(r: &Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.code().into(),
    }
}

struct Run<'a> {
    conn: &'a Connection,
    d: Domain,
    s: &'a Scenario,
    names: Vec<(DeviceRef, String)>,
    out: Transcript,
}

impl Run<'_> {
    /// The domain's devices as compared: by the name of the step that made them.
    async fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .conn
            .devices(&self.d, None)
            .await
            .expect("list the devices")
            .into_iter()
            .filter_map(|dev| {
                let name = self
                    .names
                    .iter()
                    .find(|(r, _)| *r == dev.reference)
                    .map(|(_, n)| n.clone())?;
                let attrs: Vec<String> = self
                    .s
                    .compared
                    .iter()
                    .filter_map(|a| Some(format!("{a}={}", dev.attributes.get(a)?)))
                    .collect();
                Some(format!(
                    "{name} {} {} [{}]",
                    dev.device_type,
                    dev.state.as_str(),
                    attrs.join(" ")
                ))
            })
            .collect();
        v.sort();
        v
    }

    async fn record_listing(&mut self, step: &str) {
        let l = self.listing().await;
        self.out.push((format!("{step}: listing"), l.join("; ")));
    }

    fn record(&mut self, step: &str, outcome: String) {
        self.out.push((step.to_owned(), outcome));
    }

    /// The disk in the domain whose `source` is `a`'s (a drive it started with).
    async fn find(&mut self, name: &str, a: &Attributes) -> DeviceRef {
        let source = a.get("source").expect("a drive to find has a source");
        let r = self
            .conn
            .devices(&self.d, Some(&DeviceType::DISK))
            .await
            .expect("list the disks")
            .into_iter()
            .find(|d| d.attributes.get("source") == Some(source))
            .unwrap_or_else(|| panic!("{name}: no drive with source {source} in the domain"))
            .reference;
        self.record(&format!("find {name}"), "ok".into());
        self.names.push((r.clone(), name.to_owned()));
        r
    }

    async fn attach(&mut self, name: &str, t: &DeviceType, a: &Attributes) -> DeviceRef {
        let r = self.conn.attach(&self.d, t, a).await;
        self.record(&format!("attach {name}"), outcome(&r));
        let r = r.unwrap_or_else(|e| panic!("attach {name}: {e}"));
        self.names.push((r.clone(), name.to_owned()));
        r
    }
}

/// Run the scenario on `conn`; `prepare` makes the guest behave as each [`GuestStep`] says.
/// Panics where a result is not what the driver promises; returns the transcript.
pub async fn run(conn: &Connection, s: &Scenario, prepare: Prepare<'_>) -> Transcript {
    let d = conn.domain(&s.domain).await.expect("the scenario's domain");
    let mut run = Run {
        conn,
        d,
        s,
        names: Vec::new(),
        out: Vec::new(),
    };
    let disk = run.attach("disk", &DeviceType::DISK, &s.disk).await;
    let nic = run.attach("nic", &DeviceType::NETWORK, &s.nic).await;
    run.record_listing("after attach").await;

    let mut locked = None;
    if let Some((held, cd, medium)) = &s.cdrom {
        let cd = if s.cdrom_in_domain {
            locked = Some(run.find("held cdrom", held).await);
            run.find("cdrom", cd).await
        } else {
            locked = Some(run.attach("held cdrom", &DeviceType::DISK, held).await);
            run.attach("cdrom", &DeviceType::DISK, cd).await
        };
        let r = conn.update(&run.d, &DeviceType::DISK, &cd, medium).await;
        assert!(r.is_ok(), "change of medium: {r:?}");
        run.record("change medium", outcome(&r));
        run.record_listing("after the change of medium").await;
    }

    // Bad input: a typed error, and nothing changes.
    for (i, (t, a, code)) in s.bad_attach.iter().enumerate() {
        let before = run.listing().await;
        let r = conn.attach(&run.d, t, a).await;
        assert_eq!(outcome(&r), *code, "bad input {i} ({a:?}): {r:?}");
        assert_eq!(
            run.listing().await,
            before,
            "bad input {i} changed something"
        );
        run.record(&format!("bad attach {i}"), outcome(&r));
    }
    prepare(GuestStep::AnswersLate, DeviceType::DISK, disk.clone()).await;
    let late = DetachOptions {
        timeout: s.late_timeout,
        ..Default::default()
    };
    let r = conn.detach(&run.d, &DeviceType::DISK, &disk, &late).await;
    assert!(r.is_ok(), "detach, guest answering late: {r:?}");
    run.record("detach, guest answering late", outcome(&r));
    run.record_listing("after the late detach").await;

    let target = locked.clone().unwrap_or_else(|| nic.clone());
    let t = if locked.is_some() {
        DeviceType::DISK
    } else {
        DeviceType::NETWORK
    };
    let before = run.listing().await;
    let r = conn.update(&run.d, &t, &target, &s.bad_update).await;
    assert!(
        matches!(
            r,
            Err(Error::InvalidAttribute { .. } | Error::Unsupported { .. })
        ),
        "an update of what cannot change: {r:?}"
    );
    assert_eq!(
        run.listing().await,
        before,
        "a refused update changed something"
    );
    run.record("update of what cannot change", outcome(&r));

    if let (Some(held), Some((_, _, medium))) = (&locked, &s.cdrom) {
        prepare(GuestStep::LocksTray, DeviceType::DISK, held.clone()).await;
        let before = run.listing().await;
        let r = conn.update(&run.d, &DeviceType::DISK, held, medium).await;
        assert!(
            matches!(r, Err(Error::DeviceBusy { .. })),
            "a change of medium in a locked tray: {r:?}"
        );
        assert_eq!(
            run.listing().await,
            before,
            "a refused change of medium changed something"
        );
        run.record("change medium, tray locked", outcome(&r));
    }

    prepare(GuestStep::NeverAnswers, DeviceType::NETWORK, nic.clone()).await;
    let never = DetachOptions {
        timeout: s.never_timeout,
        ..Default::default()
    };
    let r = conn
        .detach(&run.d, &DeviceType::NETWORK, &nic, &never)
        .await;
    assert!(
        matches!(r, Err(Error::RemovalPending { .. })),
        "detach, guest never answering: {r:?}"
    );
    run.record("detach, guest never answering", outcome(&r));
    run.record_listing("at the end").await;
    run.out
}

fn attrs(pairs: &[(&str, String)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone()))).expect("valid")
}

/// A 1 MiB raw image in `dir` (created when missing); its path.
pub fn image(dir: &std::path::Path, name: &str) -> String {
    let p = dir.join(name);
    if !p.exists() {
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(1 << 20))
            .expect("create an image");
    }
    p.display().to_string()
}

/// The scenario in the QEMU driver's vocabulary, with its images in `dir`: the disk on
/// virtio (a PCIe slot, whose guest takes seconds to release it under native PCIe hotplug),
/// the NIC virtio-net-pci, the CD-ROM drives on SCSI.
pub fn qemu(domain: &str, dir: &std::path::Path) -> Scenario {
    let img = |n: &str| image(dir, n);
    let raw = || "raw".to_owned();
    Scenario {
        domain: domain.into(),
        disk: attrs(&[
            ("source", img("disk.raw")),
            ("format", raw()),
            ("bus", "virtio".into()),
        ]),
        nic: attrs(&[
            ("model", "virtio-net-pci".into()),
            ("mac", "52:54:00:12:34:56".into()),
        ]),
        cdrom: Some((
            attrs(&[
                ("media", "cdrom".into()),
                ("source", img("a.iso")),
                ("id", "cd-held".into()),
            ]),
            attrs(&[("media", "cdrom".into()), ("source", img("b.iso"))]),
            attrs(&[("source", img("c.iso")), ("format", raw())]),
        )),
        cdrom_in_domain: false,
        bad_attach: vec![
            (
                DeviceType::DISK,
                attrs(&[
                    ("source", dir.join("missing.raw").display().to_string()),
                    ("format", raw()),
                ]),
                "invalid-attribute",
            ),
            (
                DeviceType::DISK,
                attrs(&[
                    ("source", img("d.raw")),
                    ("format", raw()),
                    ("bus", "floppy".into()),
                ]),
                "invalid-attribute",
            ),
            (
                DeviceType::DISK,
                attrs(&[
                    ("source", img("e.raw")),
                    ("format", raw()),
                    ("id", "cd-held".into()),
                ]),
                "device-exists",
            ),
            (
                DeviceType::NETWORK,
                attrs(&[("mac", "52:54:00:12:34:56".into())]),
                "device-exists",
            ),
        ],
        bad_update: attrs(&[("bus", "usb".into())]),
        late_timeout: Duration::from_secs(60),
        never_timeout: Duration::from_secs(1),
        compared: vec![
            "source", "format", "bus", "media", "model", "readonly", "mac", "link",
        ],
    }
}

/// The scenario in the Xen driver's vocabulary (no CD-ROM drives: the Xen driver updates
/// nothing), with its images `vdev-scenario-NAME` in `dir` of the backend domain (the Xen
/// driver does not look at them; Domain-0's hotplug script does).
pub fn xen(domain: &str, dir: &str) -> Scenario {
    let uname = |n: &str| format!("file:{dir}/vdev-scenario-{n}");
    Scenario {
        domain: domain.into(),
        disk: attrs(&[
            ("uname", uname("disk.img")),
            ("dev", "xvdc".into()),
            ("mode", "w".into()),
        ]),
        nic: attrs(&[("mac", "00:16:3e:5c:00:01".into())]),
        cdrom: None,
        cdrom_in_domain: false,
        bad_attach: vec![
            (
                DeviceType::DISK,
                attrs(&[
                    ("uname", uname("b.img")),
                    ("dev", "xvdd".into()),
                    ("mode", "x".into()),
                ]),
                "invalid-attribute",
            ),
            (
                DeviceType::DISK,
                attrs(&[("uname", uname("c.img")), ("dev", "vdz".into())]),
                "invalid-attribute",
            ),
            (
                DeviceType::DISK,
                attrs(&[
                    ("uname", uname("d.img")),
                    ("dev", "xvdd".into()),
                    ("format", "qcow2".into()),
                ]),
                "invalid-attribute",
            ),
            (
                DeviceType::DISK,
                attrs(&[("uname", uname("e.img")), ("dev", "xvdc".into())]),
                "device-exists",
            ),
        ],
        bad_update: attrs(&[("mac", "00:16:3e:5c:00:02".into())]),
        late_timeout: Duration::from_secs(60),
        never_timeout: Duration::from_secs(1),
        compared: vec!["uname", "dev", "mode", "mac"],
    }
}

/// The scenario in the libvirt driver's vocabulary, with its images in `dir`: the disk on
/// virtio (a PCIe root port, released by the guest after seconds), the NIC virtio, explicit
/// target names (the driver picks free ones, the mock lists what it is given). The two CD-ROM
/// drives are the domain's own (`cdrom_in_domain`): SCSI `sda` with `DIR/a.iso` (the one the
/// test guest holds, as its first CD-ROM drive) and `sdb` with `DIR/b.iso`, both made by
/// [`image`].
pub fn libvirt(domain: &str, dir: &std::path::Path) -> Scenario {
    let img = |n: &str| image(dir, n);
    let cdrom = |n: &str, target: &str| {
        attrs(&[
            ("media", "cdrom".into()),
            ("source", img(n)),
            ("target", target.into()),
        ])
    };
    Scenario {
        domain: domain.into(),
        disk: attrs(&[
            ("source", img("disk.raw")),
            ("bus", "virtio".into()),
            ("target", "vda".into()),
        ]),
        nic: attrs(&[
            ("model", "virtio".into()),
            ("mac", "52:54:00:12:34:56".into()),
        ]),
        cdrom: Some((
            cdrom("a.iso", "sda"),
            cdrom("b.iso", "sdb"),
            attrs(&[("source", img("c.iso")), ("format", "raw".into())]),
        )),
        cdrom_in_domain: true,
        bad_attach: vec![
            (
                DeviceType::DISK,
                attrs(&[("source", dir.join("missing.raw").display().to_string())]),
                "invalid-attribute",
            ),
            (
                DeviceType::DISK,
                attrs(&[("source", img("d.raw")), ("bus", "floppy".into())]),
                "invalid-attribute",
            ),
            (
                DeviceType::DISK,
                attrs(&[("source", img("e.raw")), ("target", "sda".into())]),
                "device-exists",
            ),
            (
                DeviceType::NETWORK,
                attrs(&[("mac", "52:54:00:12:34:56".into())]),
                "device-exists",
            ),
        ],
        bad_update: attrs(&[("bus", "usb".into())]),
        late_timeout: Duration::from_secs(60),
        never_timeout: Duration::from_secs(1),
        compared: vec![
            "source", "format", "bus", "media", "readonly", "target", "model", "netdev", "mac",
            "link",
        ],
    }
}
