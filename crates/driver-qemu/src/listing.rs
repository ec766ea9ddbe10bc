//! Listing a domain's disks and NICs from QEMU's real state, and looking single devices up.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use tracing::debug;
use vdev_core::{Attributes, Device, DeviceRef, DeviceState, DeviceType, Result};

use crate::domain::{lock, DomainEntry, Session};
use crate::error::QmpError;
use crate::markers::{self, Backend};
use crate::qmp::decode;
use crate::schema::{self, disk_bus, qdev_id, NIC_MODELS};

/// Every disk and NIC of the domain, from QEMU's state.
///
/// Which devices exist is read from QEMU every time (`qom-list /machine/peripheral`, one
/// request). A disk's attributes (image, format, node, read-only) are read with `query-block`
/// only when the listing meets a disk id the session has not seen: on QEMU 7.2 `query-block`
/// of 500 disks costs ~35 ms inside QEMU (it builds image info for every node), while the ids
/// cost ~2 ms. A cached entry is dropped when QEMU reports the device deleted (DEVICE_DELETED
/// reaches every QMP client), so a device re-created under the same id is read again. NICs'
/// MAC and netdev come from one pipelined batch of `qom-get`s.
pub(crate) async fn list(session: &Session, entry: &DomainEntry) -> Result<Vec<Device>> {
    // One round trip: the devices, and the pending-removal markers any vdev process left.
    let mut r = session
        .qmp
        .batch(vec![
            (
                "qom-list".to_owned(),
                json!({"path": "/machine/peripheral"}),
            ),
            markers::list_command(),
        ])
        .await
        .into_iter();
    let (devs, objects) = (r.next().expect("reply"), r.next().expect("reply"));
    let devs = devs
        .and_then(schema::peripheral)
        .map_err(|e| e.into_core("listing devices (qom-list)"))?;
    let records = objects
        .and_then(markers::records)
        .map_err(|e| e.into_core("listing pending removals (qom-list /objects)"))?;
    let marked: HashSet<String> = records.pending.iter().cloned().collect();
    let link_down: HashSet<&str> = records.link_down.iter().map(String::as_str).collect();
    let models: HashMap<&str, &str> = devs.iter().map(|(i, m)| (i.as_str(), m.as_str())).collect();
    if records
        .pending
        .iter()
        .chain(&records.link_down)
        .any(|id| !models.contains_key(id.as_str()))
    {
        // Removals that completed while no vdev process was there to see them.
        let present = models.keys().map(|k| (*k).to_owned()).collect();
        markers::collect_gone(&session.qmp, &records, &present).await;
    }
    let state = |id: &str| {
        if marked.contains(id) || entry.is_pending(id) {
            DeviceState::RemovalPending
        } else {
            DeviceState::Connected
        }
    };
    let disk_ids: Vec<&str> = devs
        .iter()
        .filter(|(_, m)| disk_bus(m).is_some())
        .map(|(i, _)| i.as_str())
        .collect();
    let fresh = {
        let cache = lock(&session.disk_cache);
        disk_ids
            .iter()
            .all(|id| cache.get(*id).is_some_and(|(m, _)| m == models[id]))
    };
    if !fresh {
        let blocks: Vec<qapi::qmp::BlockInfo> = session
            .qmp
            .execute_raw("query-block", json!({}))
            .await
            .and_then(|v| decode("query-block", v))
            .map_err(|e| e.into_core("listing disks (query-block)"))?;
        let mut by_id: HashMap<&str, &qapi::qmp::BlockInfo> = HashMap::new();
        for b in &blocks {
            if let Some(id) = b.qdev.as_deref().and_then(qdev_id) {
                by_id.insert(id, b);
            }
        }
        let mut cache = lock(&session.disk_cache);
        cache.clear();
        for id in &disk_ids {
            let model = models[id];
            let attrs = block_attributes(id, model, by_id.get(id).copied());
            cache.insert((*id).to_owned(), (model.to_owned(), Some(attrs)));
        }
    }
    let mut disks = Vec::new();
    {
        let cache = lock(&session.disk_cache);
        for id in &disk_ids {
            let (Some((model, attrs)), Ok(reference)) = (cache.get(*id), DeviceRef::new(*id))
            else {
                continue;
            };
            // A drive without a medium (an empty CD-ROM drive, a disk given without a drive) is
            // listed too, with what it is and where.
            let attributes = attrs
                .clone()
                .unwrap_or_else(|| empty_drive_attributes(id, model));
            disks.push(Device {
                device_type: DeviceType::DISK,
                reference,
                state: state(id),
                attributes,
            });
        }
    }
    let nic_ids: Vec<&str> = devs
        .iter()
        .filter(|(_, m)| NIC_MODELS.contains(&m.as_str()))
        .map(|(i, _)| i.as_str())
        .collect();
    let mut cmds = Vec::with_capacity(nic_ids.len() * 2);
    for id in &nic_ids {
        for prop in ["mac", "netdev"] {
            cmds.push((
                "qom-get".to_owned(),
                json!({"path": format!("/machine/peripheral/{id}"), "property": prop}),
            ));
        }
    }
    let mut props = session.qmp.batch(cmds).await.into_iter();
    let mut nics = Vec::new();
    for id in nic_ids {
        let mac = props.next().expect("reply");
        let netdev = props.next().expect("reply");
        let Ok(reference) = DeviceRef::new(id) else {
            continue;
        };
        let mut a = Attributes::new();
        let mut put = |k: &'static str, v: &str| {
            if let Err(e) = a.insert(k, v.to_owned()) {
                debug!(error = %e, "attribute not listable");
            }
        };
        put("id", id);
        put("model", models[id]);
        match mac {
            Ok(Value::String(m)) => put("mac", &m),
            Err(QmpError::Qemu { class, .. }) if class == "DeviceNotFound" => continue, // gone meanwhile
            Err(e) => return Err(e.into_core("listing NICs (qom-get mac)")),
            Ok(_) => {}
        }
        if let Ok(Value::String(n)) = netdev {
            put("netdev-id", &n);
        }
        // QEMU 7.2 cannot read a link state back: this is what vdev set (see the docs).
        put("link", if link_down.contains(id) { "down" } else { "up" });
        nics.push(Device {
            device_type: DeviceType::NETWORK,
            reference,
            state: state(id),
            attributes: a,
        });
    }
    disks.sort_by(|a, b| a.reference.cmp(&b.reference));
    nics.sort_by(|a, b| a.reference.cmp(&b.reference));
    disks.extend(nics);
    Ok(disks)
}

/// A disk's listed attributes.
pub(crate) fn disk_attributes(
    id: &str,
    model: &str,
    source: &str,
    format: &str,
    readonly: bool,
    node: Option<&str>,
) -> Attributes {
    let mut a = Attributes::new();
    let mut put = |k: &'static str, v: &str| {
        if let Err(e) = a.insert(k, v.to_owned()) {
            debug!(error = %e, "attribute not listable");
        }
    };
    put("id", id);
    put("model", model);
    put("bus", disk_bus(model).unwrap_or(model));
    put("source", source);
    put("format", format);
    put("readonly", if readonly { "true" } else { "false" });
    if let Some(n) = node {
        put("node", n);
    }
    a
}

/// A disk's listed attributes from its `query-block` entry (none: a drive without a medium).
/// A CD-ROM drive also lists `media=cdrom` and its tray (`open`/`closed`, and `locked` when the
/// guest has locked it).
pub(crate) fn block_attributes(
    id: &str,
    model: &str,
    b: Option<&qapi::qmp::BlockInfo>,
) -> Attributes {
    let mut a = match b.and_then(|b| b.inserted.as_ref()) {
        Some(i) => disk_attributes(id, model, &i.file, &i.drv, i.ro, i.node_name.as_deref()),
        None => empty_drive_attributes(id, model),
    };
    if schema::is_cdrom(model) {
        let tray = match b.and_then(|b| b.tray_open) {
            Some(true) => "open",
            _ => "closed",
        };
        let locked = b.is_some_and(|b| b.locked);
        for (k, v) in [
            ("media", "cdrom"),
            ("tray", tray),
            ("locked", if locked { "true" } else { "false" }),
        ] {
            if let Err(e) = a.insert(k, v.to_owned()) {
                debug!(error = %e, "attribute not listable");
            }
        }
    }
    a
}

/// The listed attributes of a drive without a medium.
pub(crate) fn empty_drive_attributes(id: &str, model: &str) -> Attributes {
    let mut a = Attributes::new();
    for (k, v) in [
        ("id", id),
        ("model", model),
        ("bus", disk_bus(model).unwrap_or(model)),
        ("medium", "none"),
    ] {
        if let Err(e) = a.insert(k, v.to_owned()) {
            debug!(error = %e, "attribute not listable");
        }
    }
    a
}

/// The model of device `id` (`None`: no such device).
pub(crate) async fn model(session: &Session, id: &str) -> Result<Option<String>> {
    match session
        .qmp
        .execute_raw(
            "qom-get",
            json!({"path": format!("/machine/peripheral/{id}"), "property": "type"}),
        )
        .await
    {
        Ok(Value::String(m)) => Ok(Some(m)),
        Ok(_) => Ok(None),
        Err(e) if e.class() == Some("DeviceNotFound") => Ok(None),
        Err(e) => Err(e.into_core(&format!("looking up device {id}"))),
    }
}

/// Whether device `id` exists.
pub(crate) async fn exists(session: &Session, id: &str) -> bool {
    session
        .qmp
        .execute_raw(
            "qom-get",
            json!({"path": format!("/machine/peripheral/{id}"), "property": "type"}),
        )
        .await
        .is_ok()
}

/// The type of device `id` (None when it is neither a disk nor a NIC) and the backend to
/// remove after it: one pipelined batch of three `qom-get`s.
pub(crate) async fn identify(session: &Session, id: &str) -> Result<(Option<DeviceType>, Backend)> {
    let path = format!("/machine/peripheral/{id}");
    let mut r = session
        .qmp
        .batch(
            ["type", "drive", "netdev"]
                .into_iter()
                .map(|p| ("qom-get".to_owned(), json!({"path": path, "property": p})))
                .collect(),
        )
        .await
        .into_iter();
    let (ty, drive, netdev) = (
        r.next().expect("reply"),
        r.next().expect("reply"),
        r.next().expect("reply"),
    );
    let model = match ty {
        Ok(Value::String(t)) => t,
        Ok(_) => return Ok((None, Backend::None)),
        Err(e) if e.class() == Some("DeviceNotFound") => return Ok((None, Backend::None)),
        Err(e) => return Err(e.into_core(&format!("looking up device {id}"))),
    };
    if disk_bus(&model).is_some() {
        let backend = match drive {
            Ok(Value::String(n)) if !n.is_empty() => Backend::Node(n),
            // usb-storage has no drive of its own: its inner SCSI device holds the node.
            _ => node_from_query_block(session, id).await?,
        };
        return Ok((Some(DeviceType::DISK), backend));
    }
    if NIC_MODELS.contains(&model.as_str()) {
        let backend = match netdev {
            Ok(Value::String(n)) if !n.is_empty() => Backend::Netdev(n),
            _ => Backend::None,
        };
        return Ok((Some(DeviceType::NETWORK), backend));
    }
    Ok((None, Backend::None))
}

async fn node_from_query_block(session: &Session, id: &str) -> Result<Backend> {
    let blocks: Vec<qapi::qmp::BlockInfo> = session
        .qmp
        .execute_raw("query-block", json!({}))
        .await
        .and_then(|v| decode("query-block", v))
        .map_err(|e| e.into_core("finding a disk's node (query-block)"))?;
    Ok(blocks
        .into_iter()
        .find(|b| b.qdev.as_deref().and_then(qdev_id) == Some(id))
        .and_then(|b| b.inserted?.node_name)
        .map_or(Backend::None, Backend::Node))
}
