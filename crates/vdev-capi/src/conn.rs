//! Connections, domains, the runtime each connection owns, and argument checking.

use std::ffi::{c_char, c_int, CStr, CString};
use std::future::Future;
use std::ptr;
use std::sync::{Arc, Mutex};

use vdev_facade::{Connection, Domain, DomainKey};

use crate::error::{guard, vdev_error_code, CError};

/// An open connection to one hypervisor, chosen by the URI's scheme. Opaque.
///
/// Made by `vdev_conn_open()` or `vdev_conn_open_readonly()`, released by `vdev_conn_close()`.
/// It owns the library's asynchronous runtime for this connection (one worker thread); every
/// call on it blocks the calling thread until the answer is there.
pub struct vdev_conn {
    pub(crate) inner: Arc<ConnInner>,
}

/// One domain (virtual machine) of a connection. Opaque.
///
/// Made by `vdev_domain_lookup_by_name()`, `vdev_domain_lookup_by_id()` or
/// `vdev_conn_list_domains()`; released by `vdev_domain_free()` (or `vdev_domain_list_free()`).
/// It keeps the connection's runtime alive until it is freed, but after `vdev_conn_close()`
/// every call on it fails with `VDEV_ERR_CLOSED`.
pub struct vdev_domain {
    pub(crate) conn: Arc<ConnInner>,
    pub(crate) domain: Domain,
    name: CString,
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

/// A C string argument: not NULL, not empty, UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, CError> {
    if p.is_null() {
        return Err(CError::null(what));
    }
    let s = unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| CError::invalid(what, "it is not valid UTF-8"))?;
    if s.is_empty() {
        return Err(CError::invalid(what, "it is an empty string"));
    }
    Ok(s)
}

/// A handle argument: not NULL.
///
/// # Safety
/// `p` is NULL or a live handle of this library.
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T, CError> {
    unsafe { p.as_ref() }.ok_or_else(|| CError::null(what))
}

/// A Rust string as a C string; a NUL inside (which the core never lets through) is escaped.
pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// A count as a C `int`.
pub(crate) fn c_count(n: usize, what: &str) -> Result<c_int, CError> {
    c_int::try_from(n).map_err(|_| {
        CError::new(
            vdev_error_code::VDEV_ERR_TOO_MANY,
            format!("there are {n} {what}, more than a C int can count"),
        )
    })
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
        Ok(Box::into_raw(Box::new(vdev_conn {
            inner: Arc::new(inner),
        })))
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
        if conn.is_null() {
            return Err(CError::null("conn"));
        }
        let conn = unsafe { Box::from_raw(conn) };
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

fn new_domain(conn: &Arc<ConnInner>, domain: Domain) -> *mut vdev_domain {
    let name = c_string(&domain.name);
    Box::into_raw(Box::new(vdev_domain {
        conn: Arc::clone(conn),
        domain,
        name,
    }))
}

fn lookup(conn: *mut vdev_conn, key: Result<DomainKey, CError>) -> *mut vdev_domain {
    guard(ptr::null_mut(), || {
        let conn = unsafe { handle(conn, "conn") }?;
        let key = key?;
        let domain = conn
            .inner
            .run(|c| async move { c.lookup_domain(&key).await.map_err(CError::from) })?;
        Ok(new_domain(&conn.inner, domain))
    })
}

/// Find a domain by its name (exactly; a name made of digits is a name here, not an id).
/// Returns NULL on failure (`VDEV_ERR_DOMAIN_NOT_FOUND`, `VDEV_ERR_NULL_ARGUMENT`, ...); free the
/// domain with `vdev_domain_free()`.
///
/// # Safety
/// `conn` is NULL or a live connection handle; `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_lookup_by_name(
    conn: *mut vdev_conn,
    name: *const c_char,
) -> *mut vdev_domain {
    let key = unsafe { str_arg(name, "name") }.map(|n| DomainKey::Name(n.to_owned()));
    lookup(conn, key)
}

/// Find a domain by its numeric id (`Domain-0` is 0). A negative id fails with
/// `VDEV_ERR_INVALID_ARGUMENT`. Free the domain with `vdev_domain_free()`.
///
/// # Safety
/// `conn` is NULL or a live connection handle.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_lookup_by_id(
    conn: *mut vdev_conn,
    id: c_int,
) -> *mut vdev_domain {
    let key = u32::try_from(id)
        .map(DomainKey::Id)
        .map_err(|_| CError::invalid("id", format!("{id} is negative; domain ids are 0 or more")));
    lookup(conn, key)
}

/// Free a domain handle. NULL is accepted and does nothing.
///
/// # Safety
/// `dom` is NULL or a domain handle not yet freed.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_free(dom: *mut vdev_domain) {
    guard((), || {
        if !dom.is_null() {
            drop(unsafe { Box::from_raw(dom) });
        }
        Ok(())
    })
}

/// The domain's name. The string belongs to the domain handle and lives as long as it; do not
/// free it. NULL only when `dom` is NULL (`VDEV_ERR_NULL_ARGUMENT`).
///
/// # Safety
/// `dom` is NULL or a live domain handle.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_get_name(dom: *mut vdev_domain) -> *const c_char {
    guard(ptr::null(), || {
        let dom = unsafe { handle(dom, "dom") }?;
        Ok(dom.name.as_ptr())
    })
}

/// The domain's numeric id, or -1 on failure (NULL handle; `VDEV_ERR_TOO_MANY` for an id above
/// `INT_MAX`).
///
/// # Safety
/// `dom` is NULL or a live domain handle.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_get_id(dom: *mut vdev_domain) -> c_int {
    guard(-1, || {
        let dom = unsafe { handle(dom, "dom") }?;
        c_count(dom.domain.id as usize, "as domain id")
    })
}

/// Every domain of the connection, in id order. On success returns their number and sets
/// `*domains` to a library-owned array of that many handles (NULL when there are none); release
/// it with `vdev_domain_list_free(*domains, n)`, which frees the handles and the array. On
/// failure returns -1 and sets `*domains` to NULL (unless `domains` itself is NULL).
///
/// # Safety
/// `conn` is NULL or a live connection handle; `domains` is NULL or points to writable storage
/// for one pointer.
#[no_mangle]
pub unsafe extern "C" fn vdev_conn_list_domains(
    conn: *mut vdev_conn,
    domains: *mut *mut *mut vdev_domain,
) -> c_int {
    guard(-1, || {
        if domains.is_null() {
            return Err(CError::null("domains"));
        }
        unsafe { *domains = ptr::null_mut() };
        let conn = unsafe { handle(conn, "conn") }?;
        let list = conn
            .inner
            .run(|c| async move { c.domains().await.map_err(CError::from) })?;
        let n = c_count(list.len(), "domains")?;
        if n > 0 {
            let handles: Box<[*mut vdev_domain]> = list
                .into_iter()
                .map(|d| new_domain(&conn.inner, d))
                .collect();
            unsafe { *domains = Box::into_raw(handles).cast() };
        }
        Ok(n)
    })
}

/// Free an array from `vdev_conn_list_domains()`: every handle in it and the array. `n` is the
/// count that call returned. NULL is accepted and does nothing.
///
/// # Safety
/// `domains` is NULL or an array from `vdev_conn_list_domains()` of `n` handles, none freed.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_list_free(domains: *mut *mut vdev_domain, n: c_int) {
    guard((), || {
        if domains.is_null() || n <= 0 {
            return Ok(());
        }
        let handles = unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(domains, n as usize)) };
        for d in handles.iter() {
            if !d.is_null() {
                drop(unsafe { Box::from_raw(*d) });
            }
        }
        Ok(())
    })
}

/// Free a string the library handed out (such as the reference `vdev_domain_attach()`
/// returns). NULL is accepted and does nothing.
///
/// # Safety
/// `s` is NULL or a string from this library documented as freed by `vdev_string_free()`.
#[no_mangle]
pub unsafe extern "C" fn vdev_string_free(s: *mut c_char) {
    guard((), || {
        if !s.is_null() {
            drop(unsafe { CString::from_raw(s) });
        }
        Ok(())
    })
}
