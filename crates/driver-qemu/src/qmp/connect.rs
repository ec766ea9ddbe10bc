//! Opening a QMP session on a domain: every QMP socket of its QEMU is tried at once, the first
//! that greets wins, and a failure says why (held by another client, busy, gone).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::trace;
use vdev_core::{Error, Result};
use vdev_remote::{Endpoint, EndpointStream, Host};

use super::Qmp;
use crate::error::QmpError;

/// How long a socket reached through a ready shared ssh forward may take to greet before its
/// siblings are listed and tried too.
const QUICK_PROBE: Duration = Duration::from_secs(1);

/// Why no QMP session could be opened on a domain's sockets.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The socket accepted the connection but QEMU never greeted: another client holds it (QEMU
    /// serves one client per socket), or QEMU is stopped.
    Silent { endpoint: String },
    /// The socket's listen queue stayed full until the deadline: other clients are queued.
    Busy { endpoint: String },
    /// Anything else (no such socket, refused, not QMP, ...).
    Other { endpoint: String, error: QmpError },
    /// The remote host could not be reached (ssh failed): passed on as it is.
    Transport(vdev_core::Error),
}

/// A QMP session on the domain whose socket is `endpoint` on `host`: whichever of its sockets
/// (see [`endpoints`]) greets first, within `timeout`. `domain` names it in errors.
pub(crate) async fn open(
    host: &Host,
    endpoint: &Endpoint,
    domain: &str,
    timeout: Duration,
) -> Result<Arc<Qmp>> {
    let quick = match endpoint {
        // Through a ready shared forward: try the socket alone first (a free socket greets
        // at once), and list its siblings on the host only if it is held by another client.
        // Not on this machine, where listing the siblings costs nothing.
        Endpoint::Unix(p) if !host.is_local() && host.has_ready_stream(p) => Qmp::connect_any(
            host,
            std::slice::from_ref(endpoint),
            timeout.min(QUICK_PROBE),
        )
        .await
        .ok(),
        _ => None,
    };
    match quick {
        Some(q) => Ok(q),
        None => Qmp::connect_any(host, &endpoints(host, endpoint, timeout).await?, timeout)
            .await
            .map_err(|e| connect_error(domain, endpoint, timeout, e)),
    }
}

/// Every QMP socket of this QEMU: its socket `PATH` and the sockets `PATH.N` (N a number)
/// beside it, in order of N. QEMU serves one client per socket; vdev uses whichever is free.
pub(crate) async fn endpoints(
    host: &Host,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Vec<Endpoint>> {
    let Endpoint::Unix(primary) = endpoint else {
        return Ok(vec![endpoint.clone()]);
    };
    let mut out = vec![endpoint.clone()];
    let (Some(dir), Some(name)) = (primary.parent(), primary.file_name()) else {
        return Ok(out);
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut extra: Vec<(u64, PathBuf)> = host
        .sockets_in(dir, timeout)
        .await?
        .into_iter()
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_string_lossy()
                .strip_prefix(&prefix)?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    extra.sort();
    out.extend(extra.into_iter().map(|(_, p)| Endpoint::Unix(p)));
    Ok(out)
}

/// The error for a domain none of whose QMP sockets could be used.
fn connect_error(domain: &str, endpoint: &Endpoint, timeout: Duration, e: ConnectError) -> Error {
    let more = match endpoint {
        Endpoint::Unix(p) => format!(
            "start QEMU with one more socket per long-lived client, e.g. -qmp unix:{}.1,server=on,wait=off (vdev uses every PATH.N beside PATH)",
            p.display()
        ),
        Endpoint::Tcp(_) => "give each long-lived client a QMP socket of its own".to_owned(),
    };
    match e {
        ConnectError::Silent { endpoint } => Error::backend(
            crate::NAME,
            format!(
                "QEMU of domain '{domain}' did not greet on {endpoint} within {}: another client holds that QMP socket (QEMU serves one client per socket: another vdev connection, virsh or qmp-shell), or QEMU is stopped; {more}",
                humantime::format_duration(timeout)
            ),
        ),
        ConnectError::Busy { endpoint } => Error::backend(
            crate::NAME,
            format!(
                "every QMP socket of domain '{domain}' ({endpoint}) was busy with other clients for {}; {more}",
                humantime::format_duration(timeout)
            ),
        ),
        ConnectError::Transport(e) => e,
        ConnectError::Other { endpoint, error } => Error::backend_with(
            crate::NAME,
            format!(
                "QEMU of domain '{domain}' does not answer on {endpoint} (it has stopped, or the socket is stale); start it again or remove the socket"
            ),
            error,
        ),
    }
}

impl Qmp {
    /// Connect to the first of `endpoints` (several QMP sockets of one QEMU) whose server greets
    /// us, all within `timeout`. QEMU serves one client per socket: a socket held by another
    /// client accepts the connection but stays silent, and a socket whose listen queue is full
    /// refuses it for the moment (`EAGAIN`), so every socket is tried at once, a full queue is
    /// retried with back-off, and the first greeting wins (the other attempts are dropped, which
    /// closes them).
    pub(crate) async fn connect_any(
        host: &Host,
        endpoints: &[Endpoint],
        timeout: Duration,
    ) -> Result<Arc<Qmp>, ConnectError> {
        use futures::stream::StreamExt;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempts: futures::stream::FuturesUnordered<_> = endpoints
            .iter()
            .map(|ep| Qmp::attempt(host, ep.clone(), timeout, deadline))
            .collect();
        let mut errors = Vec::new();
        while let Some(r) = attempts.next().await {
            match r {
                Ok(q) => return Ok(q),
                Err(e) => errors.push(e),
            }
        }
        // Report the most telling failure: a socket that is held by someone else explains more
        // than one that is gone.
        errors.sort_by_key(|e| match e {
            ConnectError::Transport(_) => 0,
            ConnectError::Silent { .. } => 1,
            ConnectError::Busy { .. } => 2,
            ConnectError::Other { .. } => 3,
        });
        Err(errors.into_iter().next().unwrap_or(ConnectError::Other {
            endpoint: "(none)".into(),
            error: QmpError::Io("the domain has no QMP socket".into()),
        }))
    }

    /// One socket: connect (retrying while its listen queue is full), then wait for the greeting.
    async fn attempt(
        host: &Host,
        endpoint: Endpoint,
        timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> Result<Arc<Qmp>, ConnectError> {
        let name = endpoint.to_string();
        let other = |error: QmpError| ConnectError::Other {
            endpoint: name.clone(),
            error,
        };
        let mut backoff = Duration::from_millis(1);
        loop {
            let connected = match tokio::time::timeout_at(deadline, host.connect(&endpoint)).await {
                Ok(Err(e)) => return Err(ConnectError::Transport(e)),
                Ok(Ok(r)) => Ok(r),
                Err(elapsed) => Err(elapsed),
            };
            let stream = match connected {
                Err(_) => return Err(ConnectError::Busy { endpoint: name }),
                Ok(Ok(s)) => s,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // The listen queue is full: another client is being served.
                    if tokio::time::Instant::now() + backoff >= deadline {
                        return Err(ConnectError::Busy { endpoint: name });
                    }
                    trace!(endpoint = %name, ?backoff, "QMP listen queue full; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                    continue;
                }
                Ok(Err(e)) => return Err(other(e.into())),
            };
            let started = match stream {
                EndpointStream::Unix(s) => {
                    let (r, w) = s.into_split();
                    tokio::time::timeout_at(
                        deadline,
                        Qmp::start(endpoint.clone(), r, Box::new(w), timeout),
                    )
                    .await
                }
                EndpointStream::Tcp(s) => {
                    let (r, w) = s.into_split();
                    tokio::time::timeout_at(
                        deadline,
                        Qmp::start(endpoint.clone(), r, Box::new(w), timeout),
                    )
                    .await
                }
            };
            return match started {
                Err(_) => Err(ConnectError::Silent { endpoint: name }),
                Ok(Err(QmpError::Disconnected(e))) => {
                    match host.endpoint_failure(&endpoint).await {
                        // ssh knows why the stream closed (its sshd refused the channel).
                        Some(why) => Err(ConnectError::Transport(why)),
                        None => Err(other(QmpError::Disconnected(e))),
                    }
                }
                Ok(r) => r.map_err(other),
            };
        }
    }
}
