//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`): what a remote host prints,
//! fed with arbitrary bytes. Not a public API.

use crate::agent::{read_reply, ReplyError};

/// The token the fuzz target frames with (a real session draws 128 random bits per request).
const TOKEN: &str = "S00112233445566778899aabbccddeeff";

/// Bytes on the ssh agent's stdout, as the client reads a reply: arbitrary bytes, then a reply
/// framed as the agent frames it around the same bytes split into stdout and stderr. A reply
/// whose output holds no line beginning with the token reads back exactly.
pub fn agent_reply(data: &[u8]) {
    let block = futures::executor::block_on;
    let mut r = data;
    let _ = block(read_reply(&mut r, TOKEN, 4096));

    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (out, err) = data.split_at(split);
    let mut framed = Vec::new();
    framed.extend_from_slice(out);
    framed.push(b'\n');
    framed.extend_from_slice(format!("{TOKEN} 3\n").as_bytes());
    framed.extend_from_slice(err);
    if !err.is_empty() && !err.ends_with(b"\n") {
        framed.push(b'\n');
    }
    framed.extend_from_slice(format!("{TOKEN} end\n").as_bytes());
    let mut r = framed.as_slice();
    let got = block(read_reply(&mut r, TOKEN, 1 << 20));
    let has_token = |b: &[u8]| b.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes());
    if !has_token(data) {
        let (status, stdout, stderr) = got.expect("a framed reply reads back");
        assert_eq!(status, 3);
        assert_eq!(stdout, out);
        let mut want = err.to_vec();
        if !want.is_empty() && !want.ends_with(b"\n") {
            want.push(b'\n');
        }
        assert_eq!(stderr, want);
        assert!(r.is_empty(), "the reader stops at the end line");
    } else {
        assert!(matches!(got, Ok(_) | Err(ReplyError::Closed)));
    }
}
