//! xl's disk-spec names (`target`, `vdev`, `access`, `format`) against the real Xen lab: a disk
//! attached from the host with them has the backend values of the same disk given as
//! `uname`/`dev`/`mode`, and of the same spec given to `xl block-attach`; refusals change nothing.

mod common;

use common::{attrs, disk_dump, dom0, domu, open, xs_ls, SERIAL};
use vdev_core::{Connection, DeviceType, Domain, Error};
use vdev_driver_xen as _;

const DISK: DeviceType = DeviceType::DISK;

/// The backend keys that say what is served and how.
const KEYS: [&str; 4] = ["params", "type", "mode", "dev"];

/// The Xen device number of xvdq (past xvdp, in the extended numbering).
fn xvdq() -> String {
    xen_devid::devid_from_name("xvdq").unwrap().to_string()
}

/// `KEY = "value"` of the backend of disk `devid` of `domid`, for [`KEYS`].
fn backend(domid: u32, devid: &str) -> Vec<(String, String)> {
    let dir = format!("/local/domain/0/backend/vbd/{domid}/{devid}");
    let dump = xs_ls(&dir);
    KEYS.iter()
        .map(|k| {
            let prefix = format!("{dir}/{k} = \"");
            let value = dump
                .lines()
                .find_map(|l| l.strip_prefix(&prefix)?.split_once('"'))
                .unwrap_or_else(|| panic!("{dir}/{k} missing:\n{dump}"))
                .0;
            (k.to_string(), value.to_owned())
        })
        .collect()
}

/// Attach with `pairs`, read the backend values and the /libxl record, force-detach.
async fn attach_read_detach(
    conn: &Connection,
    d: &Domain,
    pairs: &[(&str, &str)],
) -> (Vec<(String, String)>, String) {
    let r = conn
        .attach(d, &DISK, &attrs(pairs))
        .await
        .unwrap_or_else(|e| panic!("attach {pairs:?}: {e}"));
    assert_eq!(r.as_str(), xvdq(), "the ref of xvdq");
    let listed = conn
        .devices(d, Some(&DISK))
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.reference == r)
        .expect("listed");
    assert_eq!(listed.attributes.get("mode"), Some("r"), "{pairs:?}");
    assert_eq!(listed.attributes.get("dev"), Some("xvdq"), "{pairs:?}");
    let values = backend(d.id.expect("a Xen domain has an id"), &xvdq());
    let record = xs_ls(&format!(
        "/libxl/{}/device/vbd/{}",
        d.id.expect("a Xen domain has an id"),
        xvdq()
    ));
    conn.detach(d, &DISK, &r, &common::force())
        .await
        .expect("force detach");
    (values, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xl_names_write_what_uname_dev_mode_and_xl_write() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let img = "/root/lab/vdev-xl-names.img";
    let (ok, out) = dom0(&format!("truncate -s 8M {img}"));
    assert!(ok, "{out}");
    let before = disk_dump(d.id.expect("a Xen domain has an id"));
    let target = img.to_owned();
    let (xl_names, xl_record) = attach_read_detach(
        &conn,
        &d,
        &[
            ("target", &target),
            ("vdev", "xvdq"),
            ("access", "ro"),
            ("format", "raw"),
        ],
    )
    .await;
    assert_eq!(
        disk_dump(d.id.expect("a Xen domain has an id")),
        before,
        "nodes left after the detach"
    );
    let uname = format!("file:{img}");
    let (ours, our_record) = attach_read_detach(
        &conn,
        &d,
        &[("uname", &uname), ("dev", "xvdq"), ("mode", "r")],
    )
    .await;
    assert_eq!(
        disk_dump(d.id.expect("a Xen domain has an id")),
        before,
        "nodes left after the detach"
    );
    let expected: Vec<(String, String)> = [
        ("params", img),
        ("type", "phy"),
        ("mode", "r"),
        ("dev", "xvdq"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(xl_names, expected, "xl's names");
    assert_eq!(ours, expected, "uname/dev/mode");
    assert_eq!(xl_record, our_record, "the /libxl records differ");
    // The same spec given to xl itself.
    let (ok, out) = dom0(&format!(
        "xl block-attach {} 'format=raw, vdev=xvdq, access=ro, target={img}'",
        domu()
    ));
    assert!(ok, "xl block-attach failed: {out}");
    let by_xl = backend(d.id.expect("a Xen domain has an id"), &xvdq());
    let (ok, out) = dom0(&format!(
        "xl block-detach {} xvdq; for l in $(losetup -j {img} -O NAME -n); do losetup -d $l; done; rm -f {img}",
        domu()
    ));
    assert!(ok, "xl block-detach failed: {out}");
    assert_eq!(by_xl, expected, "xl block-attach");
    assert_eq!(
        disk_dump(d.id.expect("a Xen domain has an id")),
        before,
        "nodes left after xl block-detach"
    );
    conn.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_with_xl_names_change_nothing() {
    let _turn = SERIAL.lock().await;
    let Some((conn, d)) = open().await else {
        return;
    };
    let img = "/root/lab/vdev-xl-refused.img";
    // Attributes; the error code, the attribute it names, and words of its message.
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("target", img), ("vdev", "xvdr"), ("format", "qcow2")],
            "invalid-attribute",
            "format",
            "raw images only",
        ),
        (
            vec![
                ("uname", "file:/root/lab/vdev-xl-refused.img"),
                ("target", img),
                ("vdev", "xvdr"),
            ],
            "invalid-attribute",
            "target",
            "'uname' and 'target'",
        ),
        (
            vec![
                ("target", img),
                ("vdev", "xvdr"),
                ("mode", "r"),
                ("access", "ro"),
            ],
            "invalid-attribute",
            "access",
            "'mode' and 'access'",
        ),
        (
            vec![("target", img), ("dev", "xvdr"), ("vdev", "xvdr")],
            "invalid-attribute",
            "vdev",
            "'dev' and 'vdev'",
        ),
        (
            vec![("target", "vdev-xl-refused.img"), ("vdev", "xvdr")],
            "invalid-attribute",
            "target",
            "not an absolute path",
        ),
        (
            vec![("vdev", "xvdr"), ("access", "ro")],
            "missing-attribute",
            "uname",
            "also accepted as target",
        ),
    ];
    let before = disk_dump(d.id.expect("a Xen domain has an id"));
    let listed = conn.devices(&d, Some(&DISK)).await.unwrap();
    for (pairs, code, name, says) in &cases {
        let e = match conn.attach(&d, &DISK, &attrs(pairs)).await {
            Err(e) => e,
            Ok(r) => panic!("{pairs:?} was attached as {r}"),
        };
        assert_eq!(e.code(), *code, "{pairs:?}: {e}");
        match &e {
            Error::InvalidAttribute { name: n, .. } | Error::MissingAttribute { name: n, .. } => {
                assert_eq!(n, name, "{pairs:?}: {e}")
            }
            e => panic!("{e:?}"),
        }
        assert!(e.to_string().contains(says), "{pairs:?}: {e}");
        assert_eq!(
            disk_dump(d.id.expect("a Xen domain has an id")),
            before,
            "{pairs:?} changed XenStore"
        );
    }
    assert_eq!(conn.devices(&d, Some(&DISK)).await.unwrap(), listed);
    conn.close().await.unwrap();
}
