//! Bookkeeping that outlives the process: pending removals recorded inside QEMU itself.
//!
//! vdev has no daemon, and QEMU serves many clients over time (one per QMP socket at a time), so
//! what one vdev process knows must be readable by the next one. The only place every client of
//! a QEMU sees is QEMU: a detach records its removal as a small QOM object,
//! `/objects/vdev-unplug.<device id>` (type `authz-simple`, whose `identity` string property holds
//! the backend to remove afterwards). While the device exists, the marker says "removal pending";
//! once QEMU has deleted the device, whichever vdev session sees that first (on `DEVICE_DELETED`,
//! at the start of a session, or in a listing) removes the backend and then the marker.
//! See `docs/design/0009-qemu-state-across-processes.md`.
//!
//! Ownership: vdev names every backend it creates `vdev-...` (block nodes `vdev-XXXXXXXX` with
//! their file node `vdev-XXXXXXXX-file`, netdevs `vdev-<device id>`), and records a backend in a
//! marker only when it has such a name. A node or netdev made by anyone else is never removed.

use serde_json::{json, Value};
use tracing::debug;

use vdev_core::DeviceType;

use crate::error::QmpError;
use crate::qmp::{decode, Qmp};

/// What must be removed once QEMU has really deleted a device.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// A block node (format node; its inline file node goes with it).
    Node(String),
    /// A network backend.
    Netdev(String),
    /// Nothing (QEMU removes it itself, or there is none).
    None,
}

/// The id prefix of pending-removal markers.
pub(crate) const PENDING_PREFIX: &str = "vdev-unplug.";

/// The id prefix of link-down records: `vdev-link-down.<NIC id>` exists while vdev has taken
/// the NIC's link down (QEMU 7.2 cannot read a link state back).
pub(crate) const LINK_DOWN_PREFIX: &str = "vdev-link-down.";

/// The QOM type of a marker: a user-creatable object with a readable string property.
const MARKER_TYPE: &str = "authz-simple";

/// The prefix of every backend vdev creates.
pub(crate) const OWNED_PREFIX: &str = "vdev-";

/// The marker's object id for device `id`.
pub(crate) fn marker_id(id: &str) -> String {
    format!("{PENDING_PREFIX}{id}")
}

impl Backend {
    /// The backend as recorded in a marker, or `none` when it is not vdev's to remove.
    pub(crate) fn encode(&self) -> String {
        match self {
            Backend::Node(n) if n.starts_with(OWNED_PREFIX) => format!("node:{n}"),
            Backend::Netdev(n) if n.starts_with(OWNED_PREFIX) => format!("netdev:{n}"),
            _ => "none".to_owned(),
        }
    }

    /// Read a marker's record back (anything else, or a name vdev did not make, is `None`).
    pub(crate) fn decode(s: &str) -> Backend {
        match s.split_once(':') {
            Some(("node", n)) if n.starts_with(OWNED_PREFIX) => Backend::Node(n.to_owned()),
            Some(("netdev", n)) if n.starts_with(OWNED_PREFIX) => Backend::Netdev(n.to_owned()),
            _ => Backend::None,
        }
    }

    /// Whether vdev would remove this backend after its device.
    pub(crate) fn is_owned(&self) -> bool {
        !matches!(Backend::decode(&self.encode()), Backend::None)
    }
}

/// What a marker records: the device's type and the backend to remove after it, as
/// `TYPE|BACKEND` (`disk|node:vdev-0a1b2c3d`, `network|netdev:vdev-net1`, `disk|none`).
pub(crate) fn record(device_type: &DeviceType, backend: &Backend) -> String {
    format!("{device_type}|{}", backend.encode())
}

/// Read a marker's record back.
pub(crate) fn parse_record(s: &str) -> (Option<DeviceType>, Backend) {
    match s.split_once('|') {
        Some((t, b)) => (DeviceType::new(t.to_owned()).ok(), Backend::decode(b)),
        None => (None, Backend::decode(s)),
    }
}

/// The `object-add` of device `id`'s marker, for a batch.
pub(crate) fn add_command(
    id: &str,
    device_type: &DeviceType,
    backend: &Backend,
) -> (String, Value) {
    (
        "object-add".to_owned(),
        json!({"qom-type": MARKER_TYPE, "id": marker_id(id), "identity": record(device_type, backend)}),
    )
}

/// What vdev recorded in QEMU, from the reply to `qom-list /objects`.
#[derive(Debug, Default)]
pub(crate) struct Records {
    /// Devices whose removal is pending.
    pub(crate) pending: Vec<String>,
    /// NICs whose link vdev took down.
    pub(crate) link_down: Vec<String>,
}

/// Read the records from the reply to `qom-list /objects`.
pub(crate) fn records(objects: Value) -> Result<Records, QmpError> {
    let props: Vec<qapi::qmp::ObjectPropertyInfo> = decode("qom-list", objects)?;
    let mut r = Records::default();
    for p in props.into_iter().filter(|p| p.type_.starts_with("child<")) {
        if let Some(id) = p.name.strip_prefix(PENDING_PREFIX) {
            r.pending.push(id.to_owned());
        } else if let Some(id) = p.name.strip_prefix(LINK_DOWN_PREFIX) {
            r.link_down.push(id.to_owned());
        }
    }
    Ok(r)
}

/// The `qom-list /objects` request, for a batch.
pub(crate) fn list_command() -> (String, Value) {
    ("qom-list".to_owned(), json!({"path": "/objects"}))
}

/// What device `id`'s marker records (`None` when there is no marker).
pub(crate) async fn recorded(
    qmp: &Qmp,
    id: &str,
) -> Result<Option<(Option<DeviceType>, Backend)>, QmpError> {
    match qmp
        .execute_raw(
            "qom-get",
            json!({"path": format!("/objects/{}", marker_id(id)), "property": "identity"}),
        )
        .await
    {
        Ok(Value::String(s)) => Ok(Some(parse_record(&s))),
        Ok(_) => Ok(Some((None, Backend::None))),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether QEMU's answer means "no such object/device/node".
pub(crate) fn is_not_found(e: &QmpError) -> bool {
    e.class() == Some("DeviceNotFound")
        || e.desc().is_some_and(|d| {
            d.contains("not found") || d.contains("Failed to find") || d.contains("No such")
        })
}

/// Remove a backend that vdev created (its device is gone). A backend that is already gone
/// counts as removed. QEMU drops a device from its tree a moment before it lets go of the
/// backend ("in use" in between): that is retried for up to a second.
pub(crate) async fn remove_backend(qmp: &Qmp, backend: &Backend) -> Result<(), QmpError> {
    let (cmd, args) = match backend {
        Backend::Node(n) if backend.is_owned() => ("blockdev-del", json!({"node-name": n})),
        Backend::Netdev(n) if backend.is_owned() => ("netdev_del", json!({"id": n})),
        _ => return Ok(()),
    };
    let mut tries = 0;
    loop {
        match qmp.execute_raw(cmd, args.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) if tries < 20 && e.desc().is_some_and(|d| d.contains("in use")) => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Remove device `id`'s marker (gone already counts as removed).
pub(crate) async fn remove_marker(qmp: &Qmp, id: &str) -> Result<(), QmpError> {
    match qmp
        .execute_raw("object-del", json!({"id": marker_id(id)}))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The command that removes a backend vdev made (`None`: nothing of vdev's to remove).
fn backend_del_command(backend: &Backend) -> Option<(String, Value)> {
    match backend {
        Backend::Node(n) if backend.is_owned() => {
            Some(("blockdev-del".to_owned(), json!({ "node-name": n })))
        }
        Backend::Netdev(n) if backend.is_owned() => {
            Some(("netdev_del".to_owned(), json!({ "id": n })))
        }
        _ => None,
    }
}

/// Device `id` is gone: remove what its marker recorded, the marker and any link record, in
/// one round trip. `known` is the backend when the caller knows it already (it asked for the
/// removal itself); otherwise the marker is read first. Should the backend not go (QEMU still
/// holds it), it is tried again for a while, and the marker is put back if it still stays, so
/// that the next session tries again. Returns the device type the marker recorded, if read.
pub(crate) async fn collect(
    qmp: &Qmp,
    id: &str,
    known: Option<&Backend>,
) -> Result<Option<DeviceType>, QmpError> {
    let (device_type, backend) = match known {
        Some(b) => (None, b.clone()),
        None => match recorded(qmp, id).await? {
            Some((t, b)) => (t, b),
            None => (None, Backend::None),
        },
    };
    let mut cmds = Vec::with_capacity(3);
    let del = backend_del_command(&backend);
    if let Some(c) = &del {
        cmds.push(c.clone());
    }
    cmds.push(("object-del".to_owned(), json!({ "id": marker_id(id) })));
    cmds.push((
        "object-del".to_owned(),
        json!({ "id": format!("{LINK_DOWN_PREFIX}{id}") }),
    ));
    let replies = qmp.batch(cmds).await;
    if del.is_some() {
        if let Some(Err(e)) = replies.first() {
            if !is_not_found(e) {
                if let Err(e) = remove_backend(qmp, &backend).await {
                    // Keep the record for the next session.
                    let (c, a) = add_command(
                        id,
                        &device_type.clone().unwrap_or(DeviceType::DISK),
                        &backend,
                    );
                    let _ = qmp.execute_raw(&c, a).await;
                    return Err(e);
                }
            }
        }
    }
    for r in replies.into_iter().skip(usize::from(del.is_some())) {
        if let Err(e) = r {
            if !is_not_found(&e) {
                return Err(e);
            }
        }
    }
    debug!(%id, ?backend, "collected the backend of a removed device");
    Ok(device_type)
}

/// Collect every record whose device QEMU no longer has: what removals left behind while no
/// vdev process was there to see `DEVICE_DELETED`. `present` are the ids QEMU has now.
/// Errors are logged and left for the next session (collection is best effort by design: a
/// marker stays until its backend is really gone).
pub(crate) async fn collect_gone(
    qmp: &Qmp,
    records: &Records,
    present: &std::collections::HashSet<String>,
) {
    for id in records.pending.iter().filter(|id| !present.contains(*id)) {
        if let Err(e) = collect(qmp, id, None).await {
            debug!(%id, error = %e, "backend of a removed device not collected yet");
        }
    }
    for id in records.link_down.iter().filter(|id| !present.contains(*id)) {
        if let Err(e) = remove_link_record(qmp, id).await {
            debug!(%id, error = %e, "link record of a removed NIC not removed yet");
        }
    }
}

/// Remove NIC `id`'s link-down record (gone already counts as removed).
pub(crate) async fn remove_link_record(qmp: &Qmp, id: &str) -> Result<(), QmpError> {
    match qmp
        .execute_raw(
            "object-del",
            json!({"id": format!("{LINK_DOWN_PREFIX}{id}")}),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vdev_backends_are_recorded() {
        assert_eq!(
            Backend::Node("vdev-0a1b2c3d".into()).encode(),
            "node:vdev-0a1b2c3d"
        );
        assert_eq!(
            Backend::Netdev("vdev-net1".into()).encode(),
            "netdev:vdev-net1"
        );
        assert_eq!(Backend::Node("drive0".into()).encode(), "none");
        assert_eq!(Backend::Netdev("hostnet0".into()).encode(), "none");
        assert!(matches!(Backend::decode("node:other"), Backend::None));
        assert!(matches!(Backend::decode("netdev:x"), Backend::None));
        assert!(matches!(Backend::decode("junk"), Backend::None));
        assert!(
            matches!(Backend::decode("node:vdev-0a1b2c3d"), Backend::Node(n) if n == "vdev-0a1b2c3d")
        );
        let r = record(&DeviceType::NETWORK, &Backend::Netdev("vdev-n".into()));
        assert_eq!(r, "network|netdev:vdev-n");
        assert!(
            matches!(parse_record(&r), (Some(t), Backend::Netdev(n)) if t == DeviceType::NETWORK && n == "vdev-n")
        );
    }
}
