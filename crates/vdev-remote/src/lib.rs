//! # vdev-remote
//!
//! vdev's transport, the one place where a URI's transport becomes a byte stream to a unix socket on
//! the hypervisor's host, and commands run there. Drivers never speak ssh themselves: they take a
//! [`Host`] and call [`Host::connect_unix`] and [`Host::run`]; a new driver gets remote hosts for
//! free. Design: `docs/design/0011-remote-hosts.md`.
//!
//! `DRIVER+ssh://[user@]host[:port]/...` runs the system OpenSSH client once per connection:
//!
//! - one `ssh` process, one handshake, started in batch mode (never a prompt) with strict host
//!   key checking, as the master of a private control socket;
//! - its session runs `/bin/sh` on the remote host as a small command loop (the *agent*: POSIX
//!   shell builtins only, nothing from vdev installed there): [`Host::run`] sends a script and
//!   reads its exit status, stdout and stderr, with no new process or handshake per call;
//! - a remote unix socket is reached through OpenSSH's own unix-socket forwarding, added to the
//!   running master once per socket (`ssh -O forward -L LOCAL:REMOTE`): every stream is then a
//!   channel of the same connection, and the remote host needs nothing but sshd.
//!
//! When the ssh connection drops, the calls in flight fail (an [`vdev_core::Error::Remote`] of kind
//! [`vdev_core::RemoteErrorKind::Disconnected`], or a timeout) and the next call starts a new one.
//!
//! Drivers take a [`Host`] from their URI with [`Host::from_uri`], which also takes the
//! transport's own options (see [`SSH_OPTIONS`]) out of the URI, so that the driver's option
//! check sees only the driver's.
#![deny(missing_docs)]

mod agent;
mod endpoint;
mod files;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod lock;
mod session;
mod sockets;
mod target;

pub use endpoint::{Endpoint, EndpointStream, PathKind};
pub use host::{sh_quote, Host, RunOutput, SocketState};
pub use lock::{HeldLock, HostLock, LockError};
pub use session::SshHost;
pub use sockets::SharedFiles;
pub use target::{SshTarget, PERSIST_RANGE, SSH_OPTIONS};
