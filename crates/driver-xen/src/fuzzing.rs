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
