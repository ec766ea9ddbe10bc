//! libvirt's domain events: the one event loop of the process (`virEventRegisterDefaultImpl`
//! and a thread running it), the callbacks each connection registers through `virt-sys`, and
//! their translation into vdev's [`DeviceEvent`]s.
//!
//! A callback runs on the event loop thread: it only copies what libvirt gave (domain, alias)
//! into a broadcast channel. A task of the connection turns those into device events (finding
//! a device's type from its alias), and detach waits read the same channel.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;
use vdev_core::{Attributes, DeviceEvent, DeviceRef, Domain, RunState};
use virt_sys as sys;

use crate::xml::Kind;

/// What libvirt told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawKind {
    /// `VIR_DOMAIN_EVENT_ID_DEVICE_ADDED`.
    Added,
    /// `VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED`: the device is gone from the live definition.
    Removed,
    /// `VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED`: the guest refused the unplug.
    RemovalFailed,
    /// `VIR_DOMAIN_EVENT_ID_TRAY_CHANGE`: a CD-ROM tray opened (`true`) or closed.
    Tray(bool),
}

/// One event as libvirt delivered it.
#[derive(Debug, Clone)]
pub(crate) struct RawEvent {
    pub domain: Domain,
    pub alias: String,
    pub kind: RawKind,
}

/// Stop libvirt from printing errors (vdev returns them), once per process.
pub(crate) fn quiet() {
    static QUIET: OnceLock<()> = OnceLock::new();
    QUIET.get_or_init(virt::error::clear_error_callback);
}

/// Start libvirt's default event loop once per process, with a thread that runs it. A
/// connection uses it only when opened after it (see `Session::listen`).
pub(crate) fn ensure_event_loop() {
    static STARTED: OnceLock<bool> = OnceLock::new();
    STARTED.get_or_init(|| {
        // SAFETY: called once, before any connection of this process uses the loop.
        if unsafe { sys::virEventRegisterDefaultImpl() } < 0 {
            tracing::warn!("libvirt's event loop could not be registered: no device events");
            return false;
        }
        std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                // SAFETY: the default implementation was registered above.
                if unsafe { sys::virEventRunDefaultImpl() } < 0 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            })
            .is_ok()
    });
}

/// What a registration's callbacks hold: where to send.
pub(crate) struct Sink {
    pub tx: broadcast::Sender<Arc<RawEvent>>,
}

/// The domain of an event, from what libvirt keeps in the `virDomainPtr` (no round trip).
unsafe fn domain_of(dom: sys::virDomainPtr) -> Option<Domain> {
    let name = sys::virDomainGetName(dom);
    if name.is_null() {
        return None;
    }
    let name = CStr::from_ptr(name).to_string_lossy().into_owned();
    let id = sys::virDomainGetID(dom);
    let id = (id as i32 != -1).then_some(id);
    let mut uuid = [0 as c_char; 37];
    let mut d = Domain::new(id, name).with_state(RunState::Running);
    if sys::virDomainGetUUIDString(dom, uuid.as_mut_ptr()) == 0 {
        d = d.with_uuid(CStr::from_ptr(uuid.as_ptr()).to_string_lossy().into_owned());
    }
    Some(d)
}

unsafe fn deliver(
    dom: sys::virDomainPtr,
    alias: *const c_char,
    opaque: *mut c_void,
    kind: RawKind,
) {
    if alias.is_null() || opaque.is_null() {
        return;
    }
    let sink = &*(opaque as *const Sink);
    let Some(domain) = domain_of(dom) else {
        return;
    };
    let alias = CStr::from_ptr(alias).to_string_lossy().into_owned();
    let _ = sink.tx.send(Arc::new(RawEvent {
        domain,
        alias,
        kind,
    }));
}

unsafe extern "C" fn on_added(
    _c: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const c_char,
    opaque: *mut c_void,
) {
    deliver(dom, alias, opaque, RawKind::Added);
}

unsafe extern "C" fn on_removed(
    _c: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const c_char,
    opaque: *mut c_void,
) {
    deliver(dom, alias, opaque, RawKind::Removed);
}

unsafe extern "C" fn on_removal_failed(
    _c: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const c_char,
    opaque: *mut c_void,
) {
    deliver(dom, alias, opaque, RawKind::RemovalFailed);
}

unsafe extern "C" fn on_tray(
    _c: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const c_char,
    reason: c_int,
    opaque: *mut c_void,
) {
    let open = reason == sys::VIR_DOMAIN_EVENT_TRAY_CHANGE_OPEN as c_int;
    deliver(dom, alias, opaque, RawKind::Tray(open));
}

unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    if !opaque.is_null() {
        drop(Box::from_raw(opaque as *mut Sink));
    }
}

type DeviceCb =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *const c_char, *mut c_void);
type TrayCb =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *const c_char, c_int, *mut c_void);
type GenericCb = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);

/// Register the device callbacks on `conn` for every domain; returns the callback ids (for
/// [`deregister`]). An event libvirt's driver does not offer is left out.
pub(crate) fn register(
    conn: &virt::connect::Connect,
    tx: &broadcast::Sender<Arc<RawEvent>>,
) -> Vec<c_int> {
    // SAFETY: libvirt calls each callback with the argument list of its event id; the casts to
    // the generic type are how the C API is meant to be used (VIR_DOMAIN_EVENT_CALLBACK).
    let device: [(c_int, DeviceCb); 3] = [
        (sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED as c_int, on_added),
        (sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED as c_int, on_removed),
        (
            sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVAL_FAILED as c_int,
            on_removal_failed,
        ),
    ];
    let mut cbs: Vec<(c_int, GenericCb)> = device
        .into_iter()
        .map(|(id, cb)| {
            (id, unsafe {
                std::mem::transmute::<DeviceCb, GenericCb>(cb)
            })
        })
        .collect();
    cbs.push((sys::VIR_DOMAIN_EVENT_ID_TRAY_CHANGE as c_int, unsafe {
        std::mem::transmute::<TrayCb, GenericCb>(on_tray)
    }));
    let mut ids = Vec::new();
    for (event, cb) in cbs {
        let sink = Box::into_raw(Box::new(Sink { tx: tx.clone() }));
        // SAFETY: the connection is open; libvirt owns `sink` from here and frees it with
        // `free_sink` when the callback is deregistered (or now, if registration fails).
        let id = unsafe {
            sys::virConnectDomainEventRegisterAny(
                conn.as_ptr(),
                std::ptr::null_mut(),
                event,
                Some(cb),
                sink as *mut c_void,
                Some(free_sink),
            )
        };
        if id < 0 {
            tracing::debug!(event, error = %crate::error::LibvirtError::last(), "libvirt offers no such event here");
            // SAFETY: libvirt did not take the sink.
            unsafe { free_sink(sink as *mut c_void) };
        } else {
            ids.push(id);
        }
    }
    ids
}

/// Deregister callbacks made by [`register`].
pub(crate) fn deregister(conn: &virt::connect::Connect, ids: &[c_int]) {
    for id in ids {
        // SAFETY: `id` came from a registration on this connection.
        unsafe { sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), *id) };
    }
}

/// The device type of an alias libvirt made, by libvirt's naming (`scsi0-0-0-1`,
/// `virtio-disk2`, `sata0-0-3`, `usb-disk1`, `net0`, `ua-disk-...`, `ua-net-...`); `None` for
/// aliases of other devices (or user aliases vdev did not make).
pub(crate) fn kind_of_alias(alias: &str) -> Option<Kind> {
    if alias.starts_with("ua-disk-") {
        return Some(Kind::Disk);
    }
    if alias.starts_with("ua-net-") {
        return Some(Kind::Nic);
    }
    let digits_after = |p: &str| {
        alias
            .strip_prefix(p)
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
    };
    let addressed = ["scsi", "sata", "ide", "fdc"]
        .iter()
        .any(|p| digits_after(p) && alias.contains('-'));
    if addressed || digits_after("virtio-disk") || digits_after("usb-disk") {
        return Some(Kind::Disk);
    }
    if digits_after("net") {
        return Some(Kind::Nic);
    }
    None
}

/// The vdev event for a raw one whose device is of `kind`.
pub(crate) fn device_event(ev: &RawEvent, kind: Kind) -> Option<DeviceEvent> {
    let reference = DeviceRef::new(ev.alias.clone()).ok()?;
    let domain = ev.domain.clone();
    let device_type = kind.device_type();
    Some(match ev.kind {
        RawKind::Added => DeviceEvent::Added {
            domain,
            device_type,
            reference,
        },
        RawKind::Removed => DeviceEvent::Removed {
            domain,
            device_type,
            reference,
        },
        RawKind::RemovalFailed => return None,
        RawKind::Tray(open) => DeviceEvent::Updated {
            domain,
            device_type,
            reference,
            attributes: Attributes::from_pairs([("tray", if open { "open" } else { "closed" })])
                .ok()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirts_aliases_name_their_type() {
        for a in [
            "scsi0-0-0-1",
            "virtio-disk2",
            "sata0-0-3",
            "usb-disk1",
            "ide0-1-0",
            "ua-disk-1a2b3c4d",
        ] {
            assert_eq!(kind_of_alias(a), Some(Kind::Disk), "{a}");
        }
        for a in ["net0", "net12", "ua-net-0badcafe"] {
            assert_eq!(kind_of_alias(a), Some(Kind::Nic), "{a}");
        }
        for a in ["pci.1", "scsi0", "video0", "ua-other", "netfoo"] {
            assert_eq!(kind_of_alias(a), None, "{a}");
        }
    }
}
