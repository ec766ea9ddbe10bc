//! Connections: open, close, read-only, and the runtime each connection owns.

use std::ffi::{c_char, c_int};
use std::future::Future;
use std::ptr;
use std::sync::{Arc, Mutex};

use vdev_facade::Connection;

use crate::error::{guard, vdev_error_code, CError};
use crate::marshal::{handle, into_handle, str_arg, take_handle};
/// An open connection to one hypervisor, chosen by the URI's scheme. Opaque.
///
/// Made by `vdev_conn_open()` or `vdev_conn_open_readonly()`, released by `vdev_conn_close()`.
/// It owns the library's asynchronous runtime for this connection (one worker thread); every
/// call on it blocks the calling thread until the answer is there.
pub struct vdev_conn {
    pub(crate) inner: Arc<ConnInner>,
}
/// What a connection handle and its domains share.
pub(crate) struct ConnInner {
    pub(crate) rt: tokio::runtime::Runtime,
    conn: Mutex<Option<Arc<Connection>>>,
}

impl ConnInner {
    /// Run `f` on the connection, blocking the calling thread until it is done.
    pub(crate) fn run<T, F, Fut>(&self, f: F) -> Result<T, CError>
    where
        F: FnOnce(Arc<Connection>) -> Fut,
        Fut: Future<Output = Result<T, CError>>,
    {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                CError::new(
                    vdev_error_code::VDEV_ERR_CLOSED,
                    "the connection was closed with vdev_conn_close(); open a new one",
                )
            })?;
        self.rt.block_on(f(conn))
    }
}

impl Drop for ConnInner {
    fn drop(&mut self) {
        // Drop the driver inside the runtime's context, before the runtime itself.
        let conn = self
            .conn
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let _entered = self.rt.enter();
        drop(conn);
    }
}

/// Make the linker keep every built-in driver's registration when a C program links
/// `libvdev.a`: an archive member nothing refers to is left out, and with it the driver's
/// `inventory` registration (the "linking trap"). `vdev::link_drivers()` refers to each
/// enabled driver's `__link_anchor`, which `register_driver!` defines next to the registration,
/// so the linker pulls in the object that holds it. Tested by linking C programs statically in
/// debug and release builds and opening each driver's URI.
fn keep_drivers_linked() {
    vdev_facade::link_drivers();
}

fn open(uri: *const c_char, read_only: bool) -> *mut vdev_conn {
    guard(ptr::null_mut(), || {
        keep_drivers_linked();
        let uri = unsafe { str_arg(uri, "uri") }?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vdev-rt")
            .enable_all()
            .build()
            .map_err(|e| {
                CError::new(
                    vdev_error_code::VDEV_ERR_SYSTEM,
                    format!("could not start the library's runtime thread: {e}"),
                )
            })?;
        let conn = rt.block_on(async {
            if read_only {
                vdev_facade::connect_readonly(uri).await
            } else {
                vdev_facade::connect(uri).await
            }
        })?;
        let inner = ConnInner {
            rt,
            conn: Mutex::new(Some(Arc::new(conn))),
        };
        Ok(into_handle(vdev_conn {
            inner: Arc::new(inner),
        }))
    })
}

/// Open a connection; the driver is chosen by the URI's scheme (`mock:///default`,
/// `test:///default`, and the schemes of the other drivers built into the library).
///
/// Returns NULL on failure (`VDEV_ERR_NULL_ARGUMENT`, `VDEV_ERR_INVALID_ARGUMENT` for an empty
/// URI, `VDEV_ERR_INVALID_URI`, `VDEV_ERR_NO_DRIVER`, ...). Release the connection with
/// `vdev_conn_close()`.
///
/// # Safety
/// `uri` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vdev_conn_open(uri: *const c_char) -> *mut vdev_conn {
    open(uri, false)
}

/// Open a read-only connection: every change (`vdev_domain_create_vdev()`, detach, ...) fails
/// with `VDEV_ERR_READ_ONLY` before the hypervisor is asked. The same as adding `?readonly` to
/// the URI.
///
/// # Safety
/// `uri` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vdev_conn_open_readonly(uri: *const c_char) -> *mut vdev_conn {
    open(uri, true)
}

/// Close a connection and free its handle. Returns 0, or -1 when the driver reported an error
/// while closing (the handle is freed all the same); -1 with `VDEV_ERR_NULL_ARGUMENT` for NULL.
///
/// Domain handles and watches of the connection stay valid handles that must still be freed,
/// but every call on them fails with `VDEV_ERR_CLOSED`. Do not call it while another thread is
/// using the same connection, and never twice on one handle.
///
/// # Safety
/// `conn` is NULL or a handle from `vdev_conn_open()` not yet closed.
#[no_mangle]
pub unsafe extern "C" fn vdev_conn_close(conn: *mut vdev_conn) -> c_int {
    guard(-1, || {
        let conn = unsafe { take_handle(conn) }.ok_or_else(|| CError::null("conn"))?;
        let taken = conn
            .inner
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(c) = taken {
            // Another thread still in a call holds a reference: the driver is dropped (and so
            // closed) when that call returns.
            if let Ok(c) = Arc::try_unwrap(c) {
                conn.inner.rt.block_on(c.close())?;
            }
        }
        Ok(0)
    })
}

/// Whether the connection refuses changes: 1 read-only, 0 read-write, -1 on error.
///
/// # Safety
/// `conn` is NULL or a live connection handle.
#[no_mangle]
pub unsafe extern "C" fn vdev_conn_is_readonly(conn: *mut vdev_conn) -> c_int {
    guard(-1, || {
        let conn = unsafe { handle(conn, "conn") }?;
        conn.inner
            .run(|c| async move { Ok(c.is_read_only() as c_int) })
    })
}
