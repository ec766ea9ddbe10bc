//! The options of the operations that change a domain: attach, update, detach; and the scope,
//! which of a domain's configurations a change goes to.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which of a domain's two configurations a change goes to, as libvirt's `VIR_DOMAIN_AFFECT_*`
/// flags: the running domain, its stored configuration (what it has at its next start), or
/// both. An operation given no scope (`None` in [`AttachOptions::scope`] and the others) gets the
/// driver's default, which its documentation states (for QEMU: live; for Xen: live, and also the
/// stored configuration where libxl's configuration is at hand). A driver declares the scopes it
/// supports in [`crate::Capabilities::scopes`]; the core refuses the others with
/// [`crate::Error::Unsupported`] before the driver is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The running domain only (libvirt's `--live`): gone at its next start.
    Live,
    /// The stored configuration only (libvirt's `--config`): takes effect at the next start;
    /// the only scope a stopped domain has.
    Persistent,
    /// Both (libvirt's `--live --config`, virsh's `--persistent` on a running domain).
    Both,
}

impl Scope {
    /// Every scope, in declaration order.
    pub const ALL: [Scope; 3] = [Scope::Live, Scope::Persistent, Scope::Both];

    /// Its name: `live`, `persistent`, `both`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Live => "live",
            Scope::Persistent => "persistent",
            Scope::Both => "both",
        }
    }

    /// Parse a name as [`Scope::as_str`] writes it.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Scope`]s, for [`crate::Capabilities::scopes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScopeSet(u8);

impl ScopeSet {
    /// No explicit scope: the driver takes only its default.
    pub const NONE: ScopeSet = ScopeSet(0);
    /// Only [`Scope::Live`].
    pub const LIVE: ScopeSet = ScopeSet::NONE.with(Scope::Live);
    /// Every scope.
    pub const ALL: ScopeSet = ScopeSet::LIVE.with(Scope::Persistent).with(Scope::Both);

    const fn bit(s: Scope) -> u8 {
        match s {
            Scope::Live => 1,
            Scope::Persistent => 2,
            Scope::Both => 4,
        }
    }

    /// This set and `s`.
    pub const fn with(self, s: Scope) -> ScopeSet {
        ScopeSet(self.0 | Self::bit(s))
    }

    /// Whether `s` is in the set.
    pub const fn contains(self, s: Scope) -> bool {
        self.0 & Self::bit(s) != 0
    }

    /// The scopes in the set, in [`Scope::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// How attach behaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// Where the device goes (see [`Scope`]); `None`: the driver's default.
    pub scope: Option<Scope>,
}

/// How update behaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateOptions {
    /// Which configuration changes (see [`Scope`]); `None`: the driver's default.
    pub scope: Option<Scope>,
}

/// How detach behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachOptions {
    /// How long to wait for the guest to release the device before answering
    /// [`crate::Error::RemovalPending`]. Zero means: ask, do not wait.
    pub timeout: Duration,
    /// Remove the device at once without waiting for the guest (as `xl block-detach --force`).
    /// Requires [`crate::Capabilities::force_detach`].
    pub force: bool,
    /// Where the device is removed from (see [`Scope`]); `None`: the driver's default.
    pub scope: Option<Scope>,
}

impl DetachOptions {
    /// The default timeout: 10 s, as libxl's `LIBXL_DESTROY_TIMEOUT`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

impl Default for DetachOptions {
    fn default() -> Self {
        DetachOptions {
            timeout: Self::DEFAULT_TIMEOUT,
            force: false,
            scope: None,
        }
    }
}
