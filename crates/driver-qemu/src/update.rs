//! Changes in place: a CD-ROM drive's medium (the tray dance QEMU wants) and a NIC's link.

use serde_json::{json, Value};
use tracing::debug;
use vdev_core::{Attributes, DeviceType, Error, Result};

use crate::domain::{lock, DomainEntry, Session};
use crate::error::QmpError;
use crate::image::{blockdev_add_error, blockdev_options, check_format, check_image, Protocol};
use crate::listing;
use crate::markers::{self, Backend};
use crate::schema::{self, parse_link};

/// Change the medium of CD-ROM drive `id`: `source` (empty ejects), `format`, `force`. Open
/// the tray, remove the medium, insert the new node, close; the old node is removed if vdev
/// made it. Atomic: on any error the drive has its old medium, closed. Returns what changed,
/// or `None` when the domain has no disk `id`.
///
/// Four round trips: the drive (query-block: whether `id` is a drive, whether it has a tray, the
/// node it holds) and the new medium's node together (a node made for a device that turns out
/// not to be a CD-ROM drive is removed again); open + remove; insert + close; the old node.
pub(crate) async fn change_medium(
    session: &Session,
    entry: &DomainEntry,
    id: &str,
    attrs: &Attributes,
) -> Result<Option<Attributes>> {
    let force = match attrs.get("force") {
        None => false,
        Some(v) => vdev_core::parse_bool(v).ok_or_else(|| {
            Error::invalid_attribute(
                "force",
                format!(
                    "'{v}' is not a boolean: write {}",
                    vdev_core::BOOL_SPELLINGS
                ),
            )
        })?,
    };
    let Some(source) = attrs.get("source") else {
        return Err(Error::invalid_attribute(
            if attrs.contains("format") {
                "format"
            } else {
                "force"
            },
            "give source=PATH (the new medium; empty ejects) to change a CD-ROM drive's medium",
        ));
    };
    let format = attrs.get("format").unwrap_or("raw");
    check_format(format)?;
    if source.is_empty() && attrs.contains("format") {
        return Err(Error::invalid_attribute(
            "format",
            "an eject (empty source) takes no format",
        ));
    }
    let timeout = session.qmp.timeout();
    let protocol: Option<Protocol> = if source.is_empty() {
        None
    } else {
        Some(check_image(&entry.host, &entry.endpoint, source, format, timeout).await?)
    };
    let _op = entry.ops.lock().await;
    let mut cmds = vec![("query-block".to_owned(), json!({}))];
    let new = match protocol {
        Some(p) => {
            let node = format!("{}{}", markers::OWNED_PREFIX, vdev_core::random_hex());
            let opts =
                blockdev_options(session, &node, source, format, true, p, &Vec::new()).await?;
            cmds.push(("blockdev-add".to_owned(), Value::Object(opts)));
            Some(node)
        }
        None => None,
    };
    let mut r = session.qmp.batch(cmds).await.into_iter();
    let blocks = r.next().expect("reply");
    let added = new.as_ref().map(|_| r.next().expect("reply"));
    let made = match (&new, &added) {
        (Some(n), Some(Ok(_))) => Some(n.clone()),
        _ => None,
    };
    let drop_new = |node: Option<String>| async move {
        if let Some(n) = node {
            if let Err(e) = markers::remove_backend(&session.qmp, &Backend::Node(n)).await {
                debug!(error = %e, "new medium not removed after a failed change");
            }
        }
    };
    let drive = match blocks
        .and_then(|v| crate::qmp::decode::<Vec<qapi::qmp::BlockInfo>>("query-block", v))
    {
        Ok(blocks) => blocks
            .into_iter()
            .find(|b| b.qdev.as_deref().and_then(schema::qdev_id) == Some(id)),
        Err(e) => {
            drop_new(made).await;
            return Err(e.into_core("reading the drive's medium (query-block)"));
        }
    };
    // No drive of that id: the domain has no disk `id` (it is a NIC's, or nobody's).
    let Some(drive) = drive else {
        drop_new(made).await;
        return Ok(None);
    };
    // QEMU's own word on whether the drive has a tray (scsi-cd, ide-cd; a disk made with
    // device.removable=on), rather than a list of models.
    if !drive.removable {
        drop_new(made).await;
        // Asked only here, for the message.
        let model = session
            .qmp
            .execute_raw(
                "qom-get",
                json!({"path": format!("/machine/peripheral/{id}"), "property": "type"}),
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "fixed disk".to_owned());
        let name = if attrs.contains("source") {
            "source"
        } else {
            "format"
        };
        return Err(Error::invalid_attribute(
            name,
            format!("disk {id} is a {model}, not a CD-ROM drive: only a CD-ROM drive (media=cdrom) takes a new medium in place; detach the disk and attach it again instead"),
        ));
    }
    if let Some(Err(e)) = added {
        return Err(blockdev_add_error(e, source, format, true));
    }
    let old = drive.inserted.and_then(|i| i.node_name);
    let new = made;
    // Open and empty the tray. Without force, QEMU asks the guest to open a locked tray and
    // answers at once: the removal then fails, and the drive keeps its medium.
    let mut r = session
        .qmp
        .batch(vec![
            (
                "blockdev-open-tray".to_owned(),
                json!({"id": id, "force": force}),
            ),
            ("blockdev-remove-medium".to_owned(), json!({ "id": id })),
        ])
        .await
        .into_iter();
    let (opened, removed) = (r.next().expect("reply"), r.next().expect("reply"));
    if let Err(e) = opened.and(removed) {
        drop_new(new).await;
        let _ = session
            .qmp
            .execute_raw("blockdev-close-tray", json!({ "id": id }))
            .await;
        return Err(match e {
            QmpError::Qemu { desc, .. } if desc.contains("not open") || desc.contains("locked") => {
                Error::DeviceBusy {
                    domain: String::new(),
                    device_type: "disk".into(),
                    reference: id.to_owned(),
                    reason: format!("the guest has locked the tray of CD-ROM drive {id}; give force=true to open it anyway (the guest loses its medium at once), or have the guest unlock it (eject in the guest)"),
                }
            }
            e => e.into_core(&format!("opening the tray of {id}")),
        });
    }
    let mut cmds = Vec::with_capacity(2);
    if let Some(n) = &new {
        cmds.push((
            "blockdev-insert-medium".to_owned(),
            json!({"id": id, "node-name": n}),
        ));
    }
    cmds.push(("blockdev-close-tray".to_owned(), json!({ "id": id })));
    let results = session.qmp.batch(cmds).await;
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        // Put the old medium back, closed.
        let mut back = Vec::new();
        if let Some(o) = &old {
            back.push((
                "blockdev-insert-medium".to_owned(),
                json!({"id": id, "node-name": o}),
            ));
        }
        back.push(("blockdev-close-tray".to_owned(), json!({ "id": id })));
        let restored = session.qmp.batch(back).await;
        drop_new(new).await;
        if let Some(Err(r)) = restored.into_iter().find(|r| r.is_err()) {
            return Err(Error::backend_with(
                crate::NAME,
                format!("changing the medium of {id} failed ({e}), and its old medium could not be put back ({r}): list the device to see what it has"),
                e,
            ));
        }
        return Err(e.into_core(&format!("inserting the new medium into {id}")));
    }
    lock(&session.disk_cache).remove(id);
    if let Some(o) = old {
        // The old medium's node, if vdev made it (a node given on the command line stays).
        if let Err(e) = markers::remove_backend(&session.qmp, &Backend::Node(o.clone())).await {
            tracing::warn!(%id, node = %o, error = %e, "the old medium's node was not removed");
        }
    }
    let mut changes = Attributes::new();
    changes.insert("source", source.to_owned())?;
    if !source.is_empty() {
        changes.insert("format", format.to_owned())?;
    }
    changes.insert("tray", "closed".to_owned())?;
    Ok(Some(changes))
}

/// The `set_link` of NIC `id` and the marker that records a link down (QEMU 7.2 cannot read
/// a link state back), for a batch: the marker `vdev-link-down.<id>` exists while it is down.
pub(crate) fn link_commands(id: &str, up: bool) -> Vec<(String, Value)> {
    let marker = format!("{}{id}", markers::LINK_DOWN_PREFIX);
    vec![
        ("set_link".to_owned(), json!({"name": id, "up": up})),
        if up {
            ("object-del".to_owned(), json!({ "id": marker }))
        } else {
            (
                "object-add".to_owned(),
                json!({"qom-type": "authz-simple", "id": marker, "identity": "down"}),
            )
        },
    ]
}

/// Take NIC `id`'s link up or down. Returns what changed.
pub(crate) async fn set_link(
    session: &Session,
    entry: &DomainEntry,
    id: &str,
    attrs: &Attributes,
) -> Result<Attributes> {
    let link = attrs.get("link").unwrap_or("up");
    let up = parse_link(link)?;
    let _op = entry.ops.lock().await;
    let mut r = session.qmp.batch(link_commands(id, up)).await.into_iter();
    let (set, marked) = (r.next().expect("reply"), r.next().expect("reply"));
    if let Err(e) = set {
        // Nothing changed in the guest: undo the record too.
        if marked.is_ok() {
            let mut undo = link_commands(id, !up);
            let (c, a) = undo.pop().expect("marker command");
            let _ = session.qmp.execute_raw(&c, a).await;
        }
        return Err(e.into_core(&format!("set_link of {id}")));
    }
    // Already recorded (a second `down`, or `up` with no record) is fine.
    if let Err(e) = marked {
        debug!(%id, error = %e, "link record unchanged");
    }
    let mut changes = Attributes::new();
    changes.insert("link", link.to_owned())?;
    Ok(changes)
}

/// Update device `id` of `device_type`: `None` when the domain has no such device.
pub(crate) async fn update(
    session: &Session,
    entry: &DomainEntry,
    device_type: &DeviceType,
    id: &str,
    attrs: &Attributes,
) -> Result<Option<Attributes>> {
    if *device_type == DeviceType::DISK {
        return change_medium(session, entry, id, attrs).await;
    }
    let model = listing::model(session, id).await?;
    if model.as_deref().and_then(schema::device_type_of).as_ref() != Some(device_type) {
        return Ok(None);
    }
    set_link(session, entry, id, attrs).await.map(Some)
}
