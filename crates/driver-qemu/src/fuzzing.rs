//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`): everything the driver parses
//! that QEMU wrote, fed with arbitrary bytes. Not a public API.

use serde_json::Value;

use crate::qmp::{self, Incoming};
use crate::{events, listing, markers, schema};

/// Bytes as they arrive on a QMP socket: the greeting, then replies and events, one per line.
/// Every reply is also handed to the decoders of the replies the driver reads.
pub fn qmp_stream(data: &[u8]) {
    let mut lines = data.split(|b| *b == b'\n');
    if let Some(first) = lines.next() {
        let _ = serde_json::from_slice::<qapi::qmp::QapiCapabilities>(first);
    }
    for line in lines.take(4096) {
        match qmp::parse_message(line) {
            Ok(Incoming::Reply { reply: Ok(v), .. }) => replies(v),
            Ok(Incoming::Event { name, data }) => event(&name, data),
            _ => {}
        }
    }
}

fn replies(v: Value) {
    let _ = schema::peripheral_ids(v.clone());
    let _ = markers::records(v.clone());
    if let Some(s) = v.as_str() {
        let _ = markers::parse_record(s);
    }
    if let Ok(blocks) = qmp::decode::<Vec<qapi::qmp::BlockInfo>>("query-block", v) {
        for b in &blocks {
            let id = b.qdev.as_deref().and_then(schema::qdev_id).unwrap_or("x");
            for model in ["scsi-hd", "scsi-cd"] {
                let _ = listing::block_attributes(id, model, Some(b));
            }
        }
    }
}

fn event(name: &str, data: Value) {
    let _ = events::event_device(&data);
    match name {
        "DEVICE_DELETED" => {
            let _ = serde_json::from_value::<qapi::qmp::DEVICE_DELETED>(data);
        }
        "DEVICE_TRAY_MOVED" => {
            if let Ok(ev) = serde_json::from_value::<qapi::qmp::DEVICE_TRAY_MOVED>(data) {
                let _ = schema::qdev_id(&ev.id);
            }
        }
        _ => {}
    }
}
