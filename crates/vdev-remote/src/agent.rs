//! The agent: the POSIX shell loop that runs on the remote host for the whole ssh session, and
//! the reader of its framed replies.

use tokio::io::AsyncBufReadExt;

/// The agent: a POSIX shell loop on the remote host, run by the master's session. A request is
/// a token line, the script's lines, and the token line again; the answer is the script's stdout,
/// a line `TOKEN STATUS`, its stderr and a line `TOKEN end`. Tokens are random, so no output can
/// imitate them. Requests whose token starts with `M` run in the loop's own shell, others in a
/// subshell. Only builtins run between requests: an exec costs much on a slow host.
pub(crate) const AGENT: &str = r#"umask 077
__vdev_e=$(mktemp 2>/dev/null) || __vdev_e=/tmp/vdev-agent.$$
trap 'rm -f "$__vdev_e"' EXIT
printf '\nVDEV-AGENT-1 READY\n'
while IFS= read -r __vdev_t; do
  __vdev_s=
  while IFS= read -r __vdev_l; do
    [ "$__vdev_l" = "$__vdev_t" ] && break
    __vdev_s="$__vdev_s$__vdev_l
"
  done
  case $__vdev_t in
  M*) eval "$__vdev_s" </dev/null 2>"$__vdev_e"; __vdev_r=$? ;;
  *) (eval "$__vdev_s") </dev/null 2>"$__vdev_e"; __vdev_r=$? ;;
  esac
  printf '\n%s %d\n' "$__vdev_t" "$__vdev_r"
  while IFS= read -r __vdev_l || [ -n "$__vdev_l" ]; do printf '%s\n' "$__vdev_l"; done <"$__vdev_e"
  printf '%s end\n' "$__vdev_t"
done
"#;

/// Why an agent reply could not be read to its end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplyError {
    /// The stream ended (or failed) before the reply's end line.
    Closed,
    /// The command printed more than the bound.
    TooLong,
}

/// Read one framed agent reply for `token` from `r`: the script's stdout, up to the status line
/// `TOKEN STATUS`, then its stderr up to `TOKEN end`. Lines that only look like a status line
/// (another token, no number) are output. At most `max` bytes of stdout are kept. Returns the
/// status, stdout (without the newline the agent adds before the status) and stderr.
pub(crate) async fn read_reply<R>(
    r: &mut R,
    token: &str,
    max: usize,
) -> std::result::Result<(i32, Vec<u8>, Vec<u8>), ReplyError>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let status_prefix = format!("{token} ");
    let end = format!("{token} end\n");
    let mut stdout = Vec::new();
    let mut line = Vec::new();
    let status = loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return Err(ReplyError::Closed),
            Ok(_) => {}
        }
        if let Some(rest) = line.strip_prefix(status_prefix.as_bytes()) {
            if let Some(code) = std::str::from_utf8(rest)
                .ok()
                .and_then(|r| r.trim_end().parse::<i32>().ok())
            {
                break code;
            }
        }
        stdout.extend_from_slice(&line);
        if stdout.len() > max {
            return Err(ReplyError::TooLong);
        }
    };
    // The agent printed a newline before the status line.
    if stdout.last() == Some(&b'\n') {
        stdout.pop();
    }
    let mut stderr = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return Err(ReplyError::Closed),
            Ok(_) if line == end.as_bytes() => break,
            Ok(_) => {
                stderr.extend_from_slice(&line);
                if stderr.len() > max {
                    return Err(ReplyError::TooLong);
                }
            }
        }
    }
    Ok((status, stdout, stderr))
}
