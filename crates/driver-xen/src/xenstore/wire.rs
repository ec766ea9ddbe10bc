//! The wire format: message types, requests, and the decoding of what xenstored sends.

use crate::error::XsError;

/// XenStore message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Op {
    Directory = 1,
    Read = 2,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    /// A directory's children from a byte offset, for lists over the payload limit (Xen's
    /// xs_wire.h: `XS_DIRECTORY_PART`, 22; 20 was `XS_RESTRICT`, removed, answered ENOSYS).
    DirectoryPart = 22,
}

pub(super) const WATCH_EVENT: u32 = 15;
const ERROR: u32 = 16;

/// One request of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(super) op: Op,
    pub(super) payload: Vec<u8>,
}

impl Req {
    pub(super) fn new(op: Op, fields: &[&[u8]], trailing_nul: bool) -> Req {
        let mut payload = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                payload.push(0);
            }
            payload.extend_from_slice(f);
        }
        if trailing_nul {
            payload.push(0);
        }
        Req { op, payload }
    }
    pub(crate) fn read(path: &str) -> Req {
        Req::new(Op::Read, &[path.as_bytes()], true)
    }
    pub(crate) fn directory(path: &str) -> Req {
        Req::new(Op::Directory, &[path.as_bytes()], true)
    }
    /// `path\0offset\0`: the children of `path` from byte `offset` of their NUL-separated list.
    pub(crate) fn directory_part(path: &str, offset: usize) -> Req {
        Req::new(
            Op::DirectoryPart,
            &[path.as_bytes(), offset.to_string().as_bytes()],
            true,
        )
    }
    /// WRITE's value is not NUL-terminated.
    pub(crate) fn write(path: &str, value: &str) -> Req {
        Req::new(Op::Write, &[path.as_bytes(), value.as_bytes()], false)
    }
    pub(crate) fn mkdir(path: &str) -> Req {
        Req::new(Op::Mkdir, &[path.as_bytes()], true)
    }
    pub(crate) fn rm(path: &str) -> Req {
        Req::new(Op::Rm, &[path.as_bytes()], true)
    }
    /// Permissions as xenstored spells them: `n0`, `r5`, ... (the first is the owner and the
    /// access of everyone else).
    pub(crate) fn set_perms(path: &str, perms: &[String]) -> Req {
        let mut fields: Vec<&[u8]> = vec![path.as_bytes()];
        fields.extend(perms.iter().map(|p| p.as_bytes()));
        Req::new(Op::SetPerms, &fields, true)
    }
}

/// A message header: type, request id, payload length.
pub(crate) fn header(hdr: &[u8; 16]) -> (u32, u32, usize) {
    let word =
        |i: usize| u32::from_le_bytes([hdr[i * 4], hdr[i * 4 + 1], hdr[i * 4 + 2], hdr[i * 4 + 3]]);
    (word(0), word(1), word(3) as usize)
}

/// One message from xenstored.
pub(crate) enum Frame {
    /// A watch fired: the path that changed and the watch's token.
    Watch { path: String, token: String },
    /// The reply to a request: its payload, or the errno xenstored named.
    Reply(Result<Vec<u8>, XsError>),
}

/// Decode a message's payload by its type.
pub(crate) fn decode_frame(ty: u32, body: Vec<u8>) -> Frame {
    if ty == WATCH_EVENT {
        let mut parts = body.split(|b| *b == 0);
        let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        return Frame::Watch { path, token };
    }
    if ty == ERROR {
        let name = String::from_utf8_lossy(&body);
        return Frame::Reply(Err(XsError::Errno(name.trim_end_matches('\0').to_owned())));
    }
    Frame::Reply(Ok(body))
}

/// `ENOENT` becomes `None`.
pub(crate) fn opt<T>(r: Result<T, XsError>) -> Result<Option<T>, XsError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_enoent() => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn utf8(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

/// One answer to DIRECTORY_PART.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DirectoryPart {
    /// The node's generation count, the same in every part while the node is unchanged.
    pub(crate) generation: String,
    /// The children in this part.
    pub(crate) names: Vec<String>,
    /// How many bytes of the whole NUL-separated list they are: the next part's offset
    /// advances by this much.
    pub(crate) len: usize,
    /// Whether the list ends here (an empty name follows the last one).
    pub(crate) end: bool,
}

/// Decode a DIRECTORY_PART answer: the generation, then NUL-terminated names, an empty name
/// marking the end of the whole list (Xen's docs/misc/xenstore.txt).
pub(crate) fn decode_directory_part(b: &[u8]) -> Result<DirectoryPart, XsError> {
    let bad = |why: &str| XsError::Protocol(format!("DIRECTORY_PART answered {why}"));
    let nul = b
        .iter()
        .position(|c| *c == 0)
        .ok_or_else(|| bad("no generation"))?;
    if nul == 0 {
        return Err(bad("an empty generation"));
    }
    let generation = String::from_utf8_lossy(&b[..nul]).into_owned();
    let mut rest = &b[nul + 1..];
    let (mut names, mut len, mut end) = (Vec::new(), 0usize, false);
    while !rest.is_empty() {
        let n = rest
            .iter()
            .position(|c| *c == 0)
            .ok_or_else(|| bad("a name without its NUL"))?;
        if n == 0 {
            end = true;
            break;
        }
        names.push(String::from_utf8_lossy(&rest[..n]).into_owned());
        len += n + 1;
        rest = &rest[n + 1..];
    }
    if !end && names.is_empty() {
        return Err(bad("neither a name nor the end of the list"));
    }
    Ok(DirectoryPart {
        generation,
        names,
        len,
        end,
    })
}

/// Split a NUL-separated list.
pub(crate) fn split(b: &[u8]) -> Vec<String> {
    b.split(|c| *c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A payload as a log line: NULs shown as spaces, at most 200 characters.
pub(super) fn printable(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload)
        .replace('\0', " ")
        .chars()
        .take(200)
        .collect()
}

pub(super) fn describe(payload: &[u8]) -> String {
    let s = String::from_utf8_lossy(payload.split(|c| *c == 0).next().unwrap_or_default());
    s.chars().take(120).collect()
}
