//! `libvirt+qemu+ssh://` through a real sshd on loopback (`vdev_conformance::sshd`): libvirt's
//! own ssh transport reaches the libvirtd the test starts (`nc -U` on its socket at the far
//! end), and the whole conformance kit passes over it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::Libvirtd;
use vdev_conformance::sshd::Sshd;
use vdev_conformance::{Fixture, Harness, UpdateFixture};
use vdev_core::{Attributes, DeviceType};
use vdev_driver_libvirt as _;

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .expect("valid attributes")
}

/// A libvirtd, an sshd, and the `libvirt+qemu+ssh://` URI that reaches the one through the
/// other.
struct Remote {
    lv: Libvirtd,
    sshd: Sshd,
    uri: String,
}

fn remote() -> Option<Remote> {
    if std::process::Command::new("nc").arg("-h").output().is_err() {
        vdev_conformance::missing_real_part(
            "nc (netcat-openbsd), which libvirt's ssh transport runs at the far end, is not installed (run scripts/install-test-deps.sh)",
        );
        return None;
    }
    let sshd = vdev_conformance::sshd::start()?;
    let lv = Libvirtd::start()?;
    lv.define("kit", 8, true);
    // libvirt's ssh transport has no known-hosts option: a wrapper gives ssh the sshd's file.
    let wrapper = lv.dir.path().join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ssh -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes \"$@\"\n",
            sshd.known_hosts.display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = lv.dir.path().join("ns/run/libvirt/libvirt-sock");
    let uri = format!(
        "libvirt+qemu+ssh://{}/system?socket={}&keyfile={}&command={}&proxy=netcat&no_tty=1",
        sshd.authority(),
        socket.display(),
        sshd.key.display(),
        wrapper.display()
    );
    Some(Remote { lv, sshd, uri })
}

async fn setup() -> Option<Harness> {
    let r = tokio::task::spawn_blocking(remote).await.expect("setup")?;
    let img = r.lv.dir.path().join("img");
    let x = format!("{}/x.raw", img.display());
    Some(Harness {
        conn: vdev_core::connect(&r.uri).await.expect("connect over ssh"),
        readonly: vdev_core::connect_readonly(&r.uri)
            .await
            .expect("connect read-only over ssh"),
        fixture: Fixture {
            domain: "kit".into(),
            device_type: DeviceType::DISK,
            make_attrs: Box::new(move |i| {
                let p = img.join(format!("kit-{i}.raw"));
                std::fs::File::create(&p)
                    .and_then(|f| f.set_len(1 << 20))
                    .expect("image");
                attrs(&[("source", p.to_str().expect("utf-8")), ("format", "raw")])
            }),
            invalid_attrs: vec![
                attrs(&[("source", "relative.raw")]),
                attrs(&[("source", "/nonexistent/vdev-kit.raw")]),
                attrs(&[("source", &x), ("readonly", "maybe")]),
            ],
            detach_timeout: Duration::from_secs(5),
            update: Some(UpdateFixture {
                device_type: DeviceType::NETWORK,
                make_attrs: Box::new(|i| {
                    let mac = format!("52:54:00:5f:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff);
                    attrs(&[("netdev", "user"), ("mac", &mac)])
                }),
                valid: attrs(&[("link", "down")]),
                malformed: vec![attrs(&[("link", "sideways")])],
            }),
            concurrency: vdev_conformance::CONCURRENCY,
        },
        hold: Some(Box::new(r)),
    })
}

vdev_conformance::conformance_tests!(setup);

/// The connection really goes through the sshd: its log shows the login, and the domain is
/// listed as the local connection lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_goes_through_sshd() {
    let Some(r) = tokio::task::spawn_blocking(remote).await.expect("setup") else {
        return;
    };
    let over_ssh = vdev_core::connect(&r.uri).await.expect("connect over ssh");
    let local = vdev_core::connect(&r.lv.vdev_uri()).await.expect("connect");
    let a = over_ssh.domain("kit").await.expect("over ssh");
    let b = local.domain("kit").await.expect("local");
    assert_eq!(a, b);
    assert!(
        r.sshd.log().contains("Accepted publickey"),
        "{}",
        r.sshd.log()
    );
}
