//! Typed options parsed from a `mock://` URI.

use std::path::PathBuf;
use std::time::Duration;

use vdev_core::{ConnectUri, Error, Result};

use crate::control::{Connect, Fault, Guest, Op, Removal};
use crate::like::Like;

/// Where the host's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `mock:///default`: a fresh in-memory host.
    Default,
    /// `mock:///ABSOLUTE/PATH.json`: a state file shared between processes.
    File(PathBuf),
}

/// Everything a `mock://` URI can say.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Where the state lives.
    pub source: Source,
    /// `fail=OP:N:CODE,...`: the Nth call of OP fails with the error CODE.
    pub faults: Vec<Fault>,
    /// `latency=DURATION`: added to every call.
    pub latency: Duration,
    /// `removal=`, `tray=`, `busy=`: how the simulated guest behaves (the host-wide knobs).
    pub guest: Guest,
    /// `like=DRIVER`: the vocabulary of a new host (a state file keeps the one it was made with).
    pub like: Option<Like>,
    /// `lock_timeout=DURATION`: how long an operation waits for another process's lock on the
    /// state file (default [`DEFAULT_LOCK_TIMEOUT`]) before it fails naming the holder.
    pub lock_timeout: Duration,
}

/// How long an operation waits for the state file's lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The options the mock driver knows.
pub const OPTIONS: &[&str] = &[
    "fail",
    "latency",
    "removal",
    "lock_timeout",
    "like",
    "tray",
    "busy",
    "connect",
];

/// The bounds of the duration options (`latency`, `removal=DURATION`): 0 to one hour.
pub const DURATION_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::ZERO..=Duration::from_secs(3600);

impl MockConfig {
    /// Parse a URI.
    pub fn from_uri(uri: &ConnectUri) -> Result<Self> {
        uri.check_options(OPTIONS)?;
        if let Some(t) = uri.transport() {
            return Err(uri.invalid(format!(
                "the mock driver has no transport '{t}'; write mock:///default or mock:///PATH.json"
            )));
        }
        if let Some(h) = uri.host() {
            return Err(uri.invalid(format!(
                "the mock driver is local and takes no host ('{h}'); write mock:///default or mock:///PATH.json"
            )));
        }
        let path = uri.path();
        let source = match path.as_str() {
            "/default" => Source::Default,
            p if p.ends_with(".json") && p.len() > ".json".len() + 1 => Source::File(PathBuf::from(p)),
            _ => {
                return Err(uri.invalid(
                    "the path must be /default (a fresh in-memory host) or an absolute path to a .json state file",
                ))
            }
        };
        let mut faults = Vec::new();
        if let Some(spec) = uri.option("fail") {
            for one in spec.split(',').filter(|s| !s.is_empty()) {
                faults.push(parse_fault(one).map_err(|why| uri.invalid(why))?);
            }
        }
        let latency = match uri.option("latency") {
            None => Duration::ZERO,
            Some(_) => uri.duration_option("latency", Duration::ZERO, DURATION_RANGE)?,
        };
        let removal = match uri.option("removal") {
            None => None,
            Some(v) => Some(v.parse::<Removal>().map_err(|e| uri.invalid(e))?),
        };
        let tray_locked = match uri.option("tray") {
            None => None,
            Some("locked") => Some(true),
            Some("unlocked") => Some(false),
            Some(v) => {
                return Err(uri.invalid(format!(
                    "tray={v}: write tray=locked (the guest has locked its CD-ROM trays) or tray=unlocked"
                )))
            }
        };
        let busy = match uri.option("busy") {
            None => None,
            Some(v) => Some(v.parse::<u32>().map_err(|_| {
                uri.invalid(format!(
                    "busy={v}: write the number of unplug requests the guest answers busy, such as busy=3"
                ))
            })?),
        };
        let connect = match uri.option("connect") {
            None => None,
            Some(v) => Some(v.parse::<Connect>().map_err(|e| uri.invalid(e))?),
        };
        let like = match uri.option("like") {
            None => None,
            Some(v) => Some(v.parse::<Like>().map_err(|e| uri.invalid(e))?),
        };
        let lock_timeout = uri.duration_option(
            "lock_timeout",
            DEFAULT_LOCK_TIMEOUT,
            Duration::from_millis(1)..=Duration::from_secs(3600),
        )?;
        Ok(MockConfig {
            source,
            faults,
            latency,
            guest: Guest {
                removal,
                tray_locked,
                busy,
                connect,
            },
            like,
            lock_timeout,
        })
    }
}

fn parse_fault(spec: &str) -> std::result::Result<Fault, String> {
    let usage = "write fail=OP:N:CODE, for example fail=attach:2:device-exists";
    let mut parts = spec.split(':');
    let (Some(op), Some(n), Some(code), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("fail={spec}: {usage}"));
    };
    let op: Op = op
        .parse()
        .map_err(|e: String| format!("fail={spec}: {e}"))?;
    let nth: u64 = n
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("fail={spec}: N must be a call number from 1; {usage}"))?;
    if !Error::CODES.contains(&code) {
        return Err(format!(
            "fail={spec}: unknown error code '{code}'; codes: {}",
            Error::CODES.join(", ")
        ));
    }
    Ok(Fault {
        op,
        nth,
        code: code.to_owned(),
    })
}
