//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`): what xenstored writes, fed
//! with arbitrary bytes. Not a public API.

use crate::xenstore::{self, Frame};

/// Bytes as they arrive from xenstored: messages (16-byte header, then the payload), decoded
/// as the client's reader does, each reply's payload also read as a value, as a directory and as a part of one
/// (DIRECTORY_PART).
pub fn xenstore_stream(mut data: &[u8]) {
    while data.len() >= 16 {
        let hdr: [u8; 16] = data[..16].try_into().expect("16 bytes");
        data = &data[16..];
        let (ty, _req, len) = xenstore::header(&hdr);
        if len > xenstore::MAX_PAYLOAD || len > data.len() {
            return; // the reader ends the session here
        }
        let body = data[..len].to_vec();
        data = &data[len..];
        if let Frame::Reply(Ok(b)) = xenstore::decode_frame(ty, body) {
            let _ = xenstore::split(&b);
            let _ = xenstore::decode_directory_part(&b);
            let _ = xenstore::utf8(b);
        }
    }
}

/// A libxl stored configuration (`userdata-d.*.libxl-json`) as libxl, xl or anyone with root
/// may have left it: parsed as attach and detach read it, then changed as they change it. What
/// the driver writes back must read back the same, and putting back what was replaced must give
/// the document it read.
pub fn libxl_config(data: &[u8]) {
    use crate::libxl::{Config, Ident};
    let Ok(original) = Config::parse(data) else {
        return;
    };
    let written = original.to_bytes();
    let again = Config::parse(&written).expect("what the driver writes reads back");
    assert_eq!(again, original, "a written document reads back the same");
    let ids = [
        Ident::Disk("xvdb".into()),
        Ident::Disk("51728".into()),
        Ident::Nic(0),
        Ident::Nic(u32::from(data.first().copied().unwrap_or(1))),
    ];
    for id in ids {
        let mut doc = original.clone();
        let entry = match &id {
            Ident::Disk(v) => serde_json::json!({"vdev": v, "format": "raw", "fuzz": data.len()}),
            Ident::Nic(d) => serde_json::json!({"devid": d, "nictype": "vif", "fuzz": data.len()}),
        };
        let previous = doc.set(&id, entry);
        assert_eq!(previous.as_ref(), original.get(&id));
        assert_eq!(doc.count(&id), 1, "one entry after set, {}", id.describe());
        Config::parse(&doc.to_bytes()).expect("a changed document reads back");
        doc.restore(&id, previous);
        assert_eq!(
            doc.get(&id),
            original.get(&id),
            "put back, {}",
            id.describe()
        );
        let mut doc = original.clone();
        if let Some(gone) = doc.remove(&id) {
            assert_eq!(
                doc.count(&id),
                0,
                "no entry after remove, {}",
                id.describe()
            );
            doc.restore(&id, Some(gone));
            assert_eq!(doc.get(&id), original.get(&id));
        }
        Config::parse(&doc.to_bytes()).expect("a document after remove reads back");
    }
    let _ = crate::libxl::uuid_from_vm(&String::from_utf8_lossy(data));
}
