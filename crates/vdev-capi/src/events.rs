//! Device events: a watch handle and a blocking "next event" call with a timeout.

use std::ffi::{c_char, c_int, c_uint};
use std::ptr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use vdev_facade::EventStream;

use crate::conn::{vdev_conn, ConnInner};
use crate::devices::vdev_attr;
use crate::domains::vdev_domain;
use crate::error::{guard, vdev_error_code, CError};
use crate::marshal::{
    export_event, free_event, handle, into_handle, out_arg, take_handle, wait_arg,
};

/// A subscription to device events, from the moment it is made. Opaque.
///
/// Made by `vdev_conn_watch()` (every domain) or `vdev_domain_watch()` (one domain), read with
/// `vdev_watch_next()`, released by `vdev_watch_free()`. Events are queued while nobody calls
/// `vdev_watch_next()`; if the queue overflows, `vdev_watch_next()` reports the loss once (see
/// there). Use one watch from one thread at a time.
pub struct vdev_watch {
    conn: Arc<ConnInner>,
    stream: Mutex<EventStream>,
}

/// What happened to a device (`vdev_event.kind`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vdev_event_kind {
    /// An event of a kind this version of the library does not know.
    VDEV_EVENT_OTHER = 0,
    /// A device appeared.
    VDEV_EVENT_ADDED = 1,
    /// A device's state changed (`state` says to what, e.g. `"removal-pending"`).
    VDEV_EVENT_STATE_CHANGED = 2,
    /// A device is gone.
    VDEV_EVENT_REMOVED = 3,
    /// Attributes of a device changed in place (`attrs` says which, with their new values).
    VDEV_EVENT_UPDATED = 4,
}

/// One device event. Every pointer in it belongs to the event; free it with
/// `vdev_event_free()`.
#[repr(C)]
#[derive(Debug)]
pub struct vdev_event {
    /// A `vdev_event_kind`.
    pub kind: c_int,
    /// The domain's id (`UINT_MAX` for a domain that has none).
    pub domain_id: c_uint,
    /// The domain's name.
    pub domain_name: *const c_char,
    /// The device type.
    pub device_type: *const c_char,
    /// The device's reference.
    pub reference: *const c_char,
    /// The new state for `VDEV_EVENT_STATE_CHANGED`, NULL otherwise.
    pub state: *const c_char,
    /// For `VDEV_EVENT_UPDATED`: the attributes that changed, with their new values, `nattrs`
    /// entries (an empty value: removed, such as an ejected medium); NULL otherwise.
    pub attrs: *const vdev_attr,
    /// The number of entries of `attrs`.
    pub nattrs: usize,
}

fn new_watch(
    conn: &Arc<ConnInner>,
    domain: Option<vdev_facade::Domain>,
) -> Result<*mut vdev_watch, CError> {
    let stream = conn.run(|c| async move {
        Ok(match domain {
            Some(d) => c.watch(&d).await?,
            None => c.events().await?,
        })
    })?;
    Ok(into_handle(vdev_watch {
        conn: Arc::clone(conn),
        stream: Mutex::new(stream),
    }))
}

/// Watch device events of every domain of the connection, from now on. NULL on failure
/// (`VDEV_ERR_UNSUPPORTED` where the driver has no events). Free with `vdev_watch_free()`.
///
/// # Safety
/// `conn` is NULL or a live connection handle.
#[no_mangle]
pub unsafe extern "C" fn vdev_conn_watch(conn: *mut vdev_conn) -> *mut vdev_watch {
    guard(ptr::null_mut(), || {
        let conn = unsafe { handle(conn, "conn") }?;
        new_watch(&conn.inner, None)
    })
}

/// Watch device events of one domain, from now on. As `vdev_conn_watch()`.
///
/// # Safety
/// `dom` is NULL or a live domain handle.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_watch(dom: *mut vdev_domain) -> *mut vdev_watch {
    guard(ptr::null_mut(), || {
        let dom = unsafe { handle(dom, "dom") }?;
        new_watch(&dom.conn, Some(dom.domain.clone()))
    })
}

/// Wait for the next event of a watch, blocking the calling thread.
///
/// `timeout_ms`: how long to wait; 0 only takes an event already there; a negative value waits
/// until there is one. Returns 1 and sets `*event` to a new event (free it with
/// `vdev_event_free()`); 0 when none came in time (`*event` is NULL); -1 on failure (`*event`
/// is NULL): `VDEV_ERR_CLOSED` when the connection was closed (the watch will give nothing more),
/// or the driver's error code when events were lost (for example the watch fell behind: the
/// message says how many). After a loss the watch goes on; list the devices again to catch up.
///
/// # Safety
/// `watch` is NULL or a live watch; `event` is NULL or points to writable storage for one
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn vdev_watch_next(
    watch: *mut vdev_watch,
    timeout_ms: c_int,
    event: *mut *mut vdev_event,
) -> c_int {
    guard(-1, || {
        let event = unsafe { out_arg(event, "event") }?;
        let watch = unsafe { handle(watch, "watch") }?;
        let mut stream = watch.stream.lock().unwrap_or_else(|p| p.into_inner());
        let next = watch.conn.rt.block_on(async {
            match wait_arg(timeout_ms) {
                None => Some(stream.next().await),
                Some(timeout) => tokio::time::timeout(timeout, stream.next()).await.ok(),
            }
        });
        match next {
            None => Ok(0),
            Some(None) => Err(CError::new(
                vdev_error_code::VDEV_ERR_CLOSED,
                "the event stream has ended because the connection was closed; free the watch",
            )),
            Some(Some(Err(e))) => Err(e.into()),
            Some(Some(Ok(e))) => {
                *event = into_handle(export_event(&e));
                Ok(1)
            }
        }
    })
}

/// Free an event from `vdev_watch_next()`. NULL is accepted and does nothing.
///
/// # Safety
/// `event` is NULL or an event from `vdev_watch_next()` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn vdev_event_free(event: *mut vdev_event) {
    guard((), || {
        if let Some(e) = unsafe { take_handle(event) } {
            unsafe { free_event(&e) };
        }
        Ok(())
    })
}

/// Stop watching and free the watch. NULL is accepted and does nothing.
///
/// # Safety
/// `watch` is NULL or a watch not yet freed, not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn vdev_watch_free(watch: *mut vdev_watch) {
    guard((), || {
        if let Some(watch) = unsafe { take_handle(watch) } {
            let vdev_watch { conn, stream } = *watch;
            let entered = conn.rt.enter();
            drop(stream);
            drop(entered);
            drop(conn);
        }
        Ok(())
    })
}
