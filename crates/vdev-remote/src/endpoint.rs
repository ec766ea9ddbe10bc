//! [`Endpoint`]: where a hypervisor's control socket listens, and [`Host::connect`] to reach
//! it; also what a path on the host is ([`Host::path_kind`]) and which sockets a directory
//! holds ([`Host::sockets_in`]), so that a driver finds its sockets without asking whether the
//! host is this machine.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use vdev_core::{Error, RemoteErrorKind, Result};

use crate::host::{sh_quote, Host};

/// Where a control socket listens on a [`Host`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A unix socket at this path on the host.
    Unix(PathBuf),
    /// A TCP address `HOST:PORT` (an IPv6 address in brackets).
    Tcp(String),
}

impl Endpoint {
    /// The TCP endpoint `host:port`, bracketing an IPv6 address.
    ///
    /// ```
    /// use vdev_remote::Endpoint;
    /// assert_eq!(Endpoint::tcp("::1", 4444), Endpoint::Tcp("[::1]:4444".into()));
    /// assert_eq!(Endpoint::tcp("localhost", 4444).to_string(), "tcp:localhost:4444");
    /// ```
    pub fn tcp(host: &str, port: u16) -> Endpoint {
        if host.contains(':') {
            Endpoint::Tcp(format!("[{host}]:{port}"))
        } else {
            Endpoint::Tcp(format!("{host}:{port}"))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// A byte stream to an [`Endpoint`], from [`Host::connect`].
#[derive(Debug)]
pub enum EndpointStream {
    /// To a unix socket (on a remote host: a channel of its ssh connection).
    Unix(UnixStream),
    /// To a TCP address (`TCP_NODELAY` set: control protocols send small requests).
    Tcp(TcpStream),
}

impl AsyncRead for EndpointStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            EndpointStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            EndpointStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EndpointStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            EndpointStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            EndpointStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            EndpointStream::Unix(s) => Pin::new(s).poll_flush(cx),
            EndpointStream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            EndpointStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            EndpointStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What a path on a [`Host`] is, from [`Host::path_kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A directory.
    Directory,
    /// A unix socket.
    Socket,
    /// Something else.
    Other,
    /// Nothing.
    Missing,
}

impl Host {
    /// Connect to `endpoint` on the host. As for [`Host::connect_unix`], the outer error is
    /// the transport's and the inner one the socket's, as `connect(2)` reports it.
    ///
    /// A TCP endpoint is reached from this machine, so only [`Host::Local`] connects to one;
    /// over ssh it is refused (a `Remote` error of kind `Refused`): vdev does not forward TCP.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<std::io::Result<EndpointStream>> {
        match endpoint {
            Endpoint::Unix(p) => Ok(self.connect_unix(p).await?.map(EndpointStream::Unix)),
            Endpoint::Tcp(a) => match self {
                Host::Local => Ok(TcpStream::connect(a.as_str()).await.and_then(|s| {
                    s.set_nodelay(true)?;
                    Ok(EndpointStream::Tcp(s))
                })),
                Host::Ssh(_) => Err(Error::Remote {
                    host: self.name(),
                    kind: RemoteErrorKind::Refused,
                    message: format!(
                        "{endpoint} is a TCP endpoint, and vdev reaches TCP endpoints from this machine only; use the host's unix socket instead"
                    ),
                }),
            },
        }
    }

    /// Why a stream from [`Host::connect`] to `endpoint` closed before its peer said anything,
    /// when ssh knows: see [`Host::stream_failure`] (never for a TCP endpoint).
    pub async fn endpoint_failure(&self, endpoint: &Endpoint) -> Option<Error> {
        match endpoint {
            Endpoint::Unix(p) => self.stream_failure(p).await,
            Endpoint::Tcp(_) => None,
        }
    }

    /// What `path` is on the host: one `stat` here, one round trip (shell builtins in the
    /// agent's own shell) on a remote host; nothing at all for a socket the shared ssh
    /// connection (`persist=`) already forwards, which the stream itself will answer for.
    pub async fn path_kind(&self, path: &Path, timeout: Duration) -> Result<PathKind> {
        use std::os::unix::fs::FileTypeExt;
        let Host::Ssh(s) = self else {
            return Ok(match std::fs::metadata(path) {
                Err(_) => PathKind::Missing,
                Ok(m) if m.is_dir() => PathKind::Directory,
                Ok(m) if m.file_type().is_socket() => PathKind::Socket,
                Ok(_) => PathKind::Other,
            });
        };
        if s.shared_forward(path).is_some() {
            return Ok(PathKind::Socket);
        }
        let out = self
            .run_in_session(
                &format!(
                    "__vdev_p={}; if [ -d \"$__vdev_p\" ]; then echo d; elif [ -S \"$__vdev_p\" ]; then echo s; elif [ -e \"$__vdev_p\" ]; then echo o; else echo m; fi",
                    sh_quote(&path.to_string_lossy())
                ),
                timeout,
            )
            .await?;
        Ok(match out.text().as_str() {
            "d" => PathKind::Directory,
            "s" => PathKind::Socket,
            "o" => PathKind::Other,
            _ => PathKind::Missing,
        })
    }

    /// The unix sockets directly in `dir` on the host, sorted (none when `dir` is gone).
    pub async fn sockets_in(&self, dir: &Path, timeout: Duration) -> Result<Vec<PathBuf>> {
        use std::os::unix::fs::FileTypeExt;
        let mut v: Vec<PathBuf> = match self {
            Host::Local => std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
                .map(|e| e.path())
                .collect(),
            Host::Ssh(_) => {
                // Builtins only, in the agent's own shell: one round trip, no process on the host.
                let out = self
                    .run_in_session(
                        &format!(
                            "__vdev_d={}; for f in \"$__vdev_d\"/* \"$__vdev_d\"/.[!.]* \"$__vdev_d\"/..?*; do [ -S \"$f\" ] && printf '%s\\n' \"${{f##*/}}\"; done; :",
                            sh_quote(&dir.to_string_lossy())
                        ),
                        timeout,
                    )
                    .await?;
                out.text()
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| dir.join(l))
                    .collect()
            }
        };
        v.sort();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_paths_and_sockets() {
        let dir = std::env::temp_dir().join(format!("vdev-endpoint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("a.qmp");
        let _ = std::fs::remove_file(&sock);
        let _listener = tokio::net::UnixListener::bind(&sock).unwrap();
        std::fs::write(dir.join("plain"), b"x").unwrap();
        let t = Duration::from_secs(5);
        let h = Host::Local;
        assert_eq!(h.path_kind(&dir, t).await.unwrap(), PathKind::Directory);
        assert_eq!(h.path_kind(&sock, t).await.unwrap(), PathKind::Socket);
        assert_eq!(
            h.path_kind(&dir.join("plain"), t).await.unwrap(),
            PathKind::Other
        );
        assert_eq!(
            h.path_kind(&dir.join("none"), t).await.unwrap(),
            PathKind::Missing
        );
        assert_eq!(h.sockets_in(&dir, t).await.unwrap(), vec![sock.clone()]);
        let s = h.connect(&Endpoint::Unix(sock)).await.unwrap();
        assert!(matches!(s, Ok(EndpointStream::Unix(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn local_tcp_connects() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let s = Host::Local
            .connect(&Endpoint::tcp("127.0.0.1", port))
            .await
            .unwrap();
        assert!(matches!(s, Ok(EndpointStream::Tcp(_))));
    }
}
