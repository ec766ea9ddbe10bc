//! The test-suite side of the mock: fault injection, latency, pending removals and a call log.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use vdev_core::{DeviceRef, DeviceType, Domain, Error};

/// An operation of the [`vdev_core::Driver`] trait, as counted and logged by the mock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `list_domains`
    ListDomains,
    /// `lookup_domain`
    LookupDomain,
    /// `device_types`
    DeviceTypes,
    /// `list_devices`
    ListDevices,
    /// `attach`
    Attach,
    /// `detach`
    Detach,
    /// `events`
    Events,
    /// `update`
    Update,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 8] = [
        Op::ListDomains,
        Op::LookupDomain,
        Op::DeviceTypes,
        Op::ListDevices,
        Op::Attach,
        Op::Detach,
        Op::Events,
        Op::Update,
    ];

    /// The name used in URIs (`attach`, `list_devices`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::ListDomains => "list_domains",
            Op::LookupDomain => "lookup_domain",
            Op::DeviceTypes => "device_types",
            Op::ListDevices => "list_devices",
            Op::Attach => "attach",
            Op::Detach => "detach",
            Op::Events => "events",
            Op::Update => "update",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Op::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown operation '{s}'; operations: {}",
                    Op::ALL.map(Op::as_str).join(", ")
                )
            })
    }
}

/// Make the `nth` call (counted from when the fault is added, from 1) of `op` fail with the
/// error whose [`Error::code`] is `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The operation.
    pub op: Op,
    /// Which call fails.
    pub nth: u64,
    /// The error code ([`Error::CODES`]).
    pub code: String,
}

/// How the simulated guest answers a detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The device is removed at once.
    Immediate,
    /// The guest never releases the device: detach answers [`Error::RemovalPending`] after its
    /// timeout, the device stays listed as removal-pending until [`MockControl::release`].
    Pending,
    /// The guest releases the device after this delay.
    After(Duration),
    /// The guest refuses the unplug: detach answers [`Error::RemovalRefused`] and the device
    /// stays connected (QEMU's `DEVICE_UNPLUG_GUEST_ERROR`).
    Refuse,
}

impl FromStr for Removal {
    type Err = String;
    /// `immediate`, `pending`, `refuse`, or a delay between 0 and 1 h (`50ms`, `2s`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "immediate" => Ok(Removal::Immediate),
            "pending" => Ok(Removal::Pending),
            "refuse" => Ok(Removal::Refuse),
            d => knob_delay(d)
                .map(Removal::After)
                .ok_or_else(|| format!("removal={s}: write removal=immediate, pending, refuse or a delay between 0 s and 1 h such as removal=50ms")),
        }
    }
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Removal::Immediate => f.write_str("immediate"),
            Removal::Pending => f.write_str("pending"),
            Removal::Refuse => f.write_str("refuse"),
            Removal::After(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// When the simulated guest connects a new device (`like=` hosts whose driver lists a new
/// device as not yet connected, such as Xen's `init-wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// At once (the device is listed connected after attach).
    Immediate,
    /// Never: the device stays in its first state (a guest without the driver, or stuck).
    Never,
    /// After this delay.
    After(Duration),
}

impl FromStr for Connect {
    type Err = String;
    /// `immediate`, `never`, or a delay between 0 and 1 h (`2s`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "immediate" => Ok(Connect::Immediate),
            "never" => Ok(Connect::Never),
            d => knob_delay(d)
                .map(Connect::After)
                .ok_or_else(|| format!("connect={s}: write connect=immediate, never or a delay between 0 s and 1 h such as connect=2s")),
        }
    }
}

impl fmt::Display for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connect::Immediate => f.write_str("immediate"),
            Connect::Never => f.write_str("never"),
            Connect::After(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// Serialize and deserialize each type as the string its `Display` writes and its `FromStr`
/// reads (the URI option's value), as the state file stores guest knobs.
macro_rules! serde_as_string {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_string!(Removal, Connect);

/// A knob's delay: between 0 and 1 h (`50ms`, `2s`).
fn knob_delay(s: &str) -> Option<Duration> {
    humantime::parse_duration(s)
        .ok()
        .filter(|d| crate::DURATION_RANGE.contains(d))
}

/// How the simulated guest behaves, for a whole host (URI options, [`MockControl::set_guest`]),
/// a domain or one device (the state file, [`MockControl::set_domain_guest`],
/// [`MockControl::set_device_guest`]). A knob left `None` is taken from the wider level:
/// device, then domain, then host; the host's defaults are an immediate removal, an unlocked
/// tray and a guest that is never busy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guest {
    /// How the guest answers a detach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal: Option<Removal>,
    /// Whether the guest has locked the tray of its CD-ROM drives: a change of medium without
    /// `force` is then refused with [`Error::DeviceBusy`] (`like=` hosts whose driver has
    /// removable media).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tray_locked: Option<bool>,
    /// The guest answers "busy" to the first N unplug requests of each detach (QEMU's
    /// native PCIe hotplug right after a plug): the detach asks again after 20, 40, 80 ...
    /// (at most 500) ms, as the QEMU driver does, and answers [`Error::Timeout`], having
    /// requested nothing, when its timeout comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<u32>,
    /// When the guest connects a new device, where the driver lists new devices as not yet
    /// connected (`like=xen`: `init-wait` until then); at once by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Connect>,
}

impl Guest {
    /// `self`, with the knobs it leaves unset taken from `wider`.
    pub fn or(self, wider: Guest) -> Guest {
        Guest {
            removal: self.removal.or(wider.removal),
            tray_locked: self.tray_locked.or(wider.tray_locked),
            busy: self.busy.or(wider.busy),
            connect: self.connect.or(wider.connect),
        }
    }

    /// Whether no knob is set.
    pub fn is_empty(&self) -> bool {
        *self == Guest::default()
    }
}

/// One call the driver received, as kept in the call log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Call {
    /// The operation.
    pub op: Op,
    /// The domain it was about, if any.
    pub domain: Option<String>,
    /// The device type, if any.
    pub device_type: Option<String>,
    /// The device reference (for attach: the new one), if any.
    pub reference: Option<String>,
    /// `None` on success, else the error's [`Error::code`].
    pub error: Option<&'static str>,
}

/// How many calls the log keeps (the oldest are dropped first).
pub const CALL_LOG_CAPACITY: usize = 10_000;

#[derive(Debug)]
pub(crate) struct ControlState {
    faults: Vec<(Fault, u64)>,
    counts: [u64; 8],
    pub(crate) latency: Duration,
    pub(crate) guest: Guest,
    log: VecDeque<Call>,
}

/// A handle on a mock host, for tests: inject faults, add latency, hold detaches pending,
/// release them, and read the call log. Cheap to clone; every clone controls the same host.
#[derive(Clone)]
pub struct MockControl {
    pub(crate) state: Arc<Mutex<ControlState>>,
    pub(crate) released: Arc<Notify>,
    pub(crate) host: Arc<crate::driver::Host>,
}

impl fmt::Debug for MockControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockControl").finish_non_exhaustive()
    }
}

impl MockControl {
    pub(crate) fn new_state(faults: Vec<Fault>, latency: Duration, guest: Guest) -> ControlState {
        ControlState {
            faults: faults.into_iter().map(|f| (f, 0)).collect(),
            counts: [0; 8],
            latency,
            guest,
            log: VecDeque::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the `nth` next call of `op` fail with the error of code `code` ([`Error::CODES`]).
    ///
    /// # Panics
    /// When `code` is not one of [`Error::CODES`] or `nth` is 0 (a mistake in the test).
    pub fn fail_nth(&self, op: Op, nth: u64, code: &str) {
        assert!(Error::CODES.contains(&code), "unknown error code {code}");
        assert!(nth >= 1, "calls are counted from 1");
        self.lock().faults.push((
            Fault {
                op,
                nth,
                code: code.to_owned(),
            },
            0,
        ));
    }

    /// Remove every fault not yet triggered.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Add `latency` to every call from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Change how the simulated guest answers detach, from the next detach on (the host-wide
    /// knob; a domain's or a device's own knob wins).
    pub fn set_removal(&self, removal: Removal) {
        self.lock().guest.removal = Some(removal);
    }

    /// Set the host-wide guest knobs that `guest` sets (the others stay), from the next call on.
    pub fn set_guest(&self, guest: Guest) {
        let mut s = self.lock();
        s.guest = guest.or(s.guest);
    }

    /// Set the guest knobs of one domain (by name): they win over the host's and are kept in
    /// the host's state (a state file's, so every process sees them). `Guest::default()`
    /// clears them.
    pub async fn set_domain_guest(&self, domain: &str, guest: Guest) -> vdev_core::Result<()> {
        let name = domain.to_owned();
        self.host
            .transact(move |st, _| {
                let d = st
                    .domains
                    .values_mut()
                    .find(|d| d.name == name)
                    .ok_or_else(|| Error::DomainNotFound {
                        domain: name.clone(),
                    })?;
                d.guest = (!guest.is_empty()).then_some(guest);
                Ok(())
            })
            .await
    }

    /// Set the guest knobs of one device: they win over its domain's and the host's, and go
    /// with the device (a detach removes them). `Guest::default()` clears them.
    pub async fn set_device_guest(
        &self,
        domain: &str,
        device_type: &DeviceType,
        reference: &DeviceRef,
        guest: Guest,
    ) -> vdev_core::Result<()> {
        let (name, t, r) = (domain.to_owned(), device_type.clone(), reference.clone());
        self.host
            .transact(move |st, _| {
                let d = st
                    .domains
                    .values_mut()
                    .find(|d| d.name == name)
                    .ok_or_else(|| Error::DomainNotFound {
                        domain: name.clone(),
                    })?;
                let dev = d
                    .devices
                    .get_mut(&t)
                    .and_then(|m| m.get_mut(&crate::format::RefKey::of(&r)))
                    .ok_or_else(|| Error::DeviceNotFound {
                        domain: name.clone(),
                        device_type: t.to_string(),
                        reference: r.to_string(),
                    })?;
                dev.guest = (!guest.is_empty()).then_some(guest);
                Ok(())
            })
            .await
    }

    /// Let the guest release every device whose removal is pending: they are removed (with
    /// `Removed` events) and waiting detaches return `Ok`. Returns how many were removed.
    pub async fn release(&self) -> vdev_core::Result<usize> {
        let n = self.host.release_pending().await?;
        self.released.notify_waiters();
        Ok(n)
    }

    /// The calls received so far (at most [`CALL_LOG_CAPACITY`], oldest first).
    pub fn calls(&self) -> Vec<Call> {
        self.lock().log.iter().cloned().collect()
    }

    /// How many calls of `op` were received since the host was opened.
    pub fn call_count(&self, op: Op) -> u64 {
        self.lock().counts[op.index()]
    }

    /// Forget the logged calls (the counts stay).
    pub fn clear_calls(&self) {
        self.lock().log.clear();
    }

    /// Count a call of `op` and answer the injected error, if one is due. Also sleeps the
    /// configured latency.
    pub(crate) async fn enter(&self, op: Op, ctx: &CallCtx<'_>) -> Result<(), Error> {
        let (latency, fault) = {
            let mut s = self.lock();
            s.counts[op.index()] += 1;
            let mut fault = None;
            let mut i = 0;
            while i < s.faults.len() {
                if s.faults[i].0.op == op {
                    s.faults[i].1 += 1;
                    if s.faults[i].1 == s.faults[i].0.nth {
                        fault = Some(s.faults.remove(i).0.code);
                        continue;
                    }
                }
                i += 1;
            }
            (s.latency, fault)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            None => Ok(()),
            Some(code) => Err(injected(&code, op, ctx)),
        }
    }

    pub(crate) fn log(
        &self,
        op: Op,
        ctx: &CallCtx<'_>,
        reference: Option<&str>,
        error: Option<&Error>,
    ) {
        let mut s = self.lock();
        if s.log.len() == CALL_LOG_CAPACITY {
            s.log.pop_front();
        }
        s.log.push_back(Call {
            op,
            domain: ctx.domain.map(|d| d.name.clone()),
            device_type: ctx.device_type.map(|t| t.to_string()),
            reference: reference
                .or(ctx.reference.map(DeviceRef::as_str))
                .map(str::to_owned),
            error: error.map(Error::code),
        });
    }
}

/// What a call was about, for the log and for injected errors.
#[derive(Default)]
pub(crate) struct CallCtx<'a> {
    pub(crate) domain: Option<&'a Domain>,
    pub(crate) device_type: Option<&'a DeviceType>,
    pub(crate) reference: Option<&'a DeviceRef>,
}

/// A representative error of the variant `code`, saying it was injected.
fn injected(code: &str, op: Op, ctx: &CallCtx<'_>) -> Error {
    let domain = ctx.domain.map(|d| d.name.clone()).unwrap_or_default();
    let device_type = ctx.device_type.map(|t| t.to_string()).unwrap_or_default();
    let reference = ctx
        .reference
        .map(|r| r.to_string())
        .unwrap_or_else(|| "injected".into());
    let what = format!("fault injected into {op}");
    match code {
        "invalid-uri" => Error::InvalidUri {
            uri: "mock:".into(),
            reason: what,
        },
        "no-driver" => Error::NoDriver {
            scheme: what,
            available: vec![],
        },
        "duplicate-scheme" => Error::DuplicateScheme {
            scheme: what,
            drivers: vec![],
        },
        "domain-not-found" => Error::DomainNotFound {
            domain: if domain.is_empty() { what } else { domain },
        },
        "device-not-found" => Error::DeviceNotFound {
            domain,
            device_type,
            reference,
        },
        "device-exists" => Error::DeviceExists {
            domain,
            device_type,
            reference,
        },
        "invalid-attribute" => Error::InvalidAttribute {
            name: "injected".into(),
            reason: what,
        },
        "missing-attribute" => Error::MissingAttribute {
            device_type,
            name: "injected".into(),
            hint: what,
        },
        "unsupported" => Error::Unsupported {
            driver: crate::NAME.into(),
            operation: op.to_string(),
            detail: what,
        },
        "read-only" => Error::ReadOnly { operation: what },
        "timeout" => Error::Timeout {
            operation: what,
            after: Duration::ZERO,
        },
        "removal-pending" => Error::RemovalPending {
            domain,
            device_type,
            reference,
        },
        "removal-refused" => Error::RemovalRefused {
            domain,
            device_type,
            reference,
        },
        "device-busy" => Error::DeviceBusy {
            domain,
            device_type,
            reference,
            reason: what,
        },
        "remote" => Error::Remote {
            host: "mock".into(),
            kind: vdev_core::RemoteErrorKind::Disconnected,
            message: what,
        },
        _ => Error::backend(crate::NAME, what),
    }
}
