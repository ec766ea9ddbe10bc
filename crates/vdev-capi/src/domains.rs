//! Domains: lookup by name or id, the list of a connection's domains, name and id.

use std::ffi::{c_char, c_int, CString};
use std::ptr;
use std::sync::Arc;

use vdev_facade::{Domain, DomainKey};

use crate::conn::{vdev_conn, ConnInner};
use crate::error::{guard, CError};
use crate::marshal::{
    c_count, c_string, domain_id_arg, export_list, handle, into_handle, out_arg, str_arg,
    take_handle, take_list,
};

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

fn new_domain(conn: &Arc<ConnInner>, domain: Domain) -> *mut vdev_domain {
    let name = c_string(&domain.name);
    into_handle(vdev_domain {
        conn: Arc::clone(conn),
        domain,
        name,
    })
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
    let key = domain_id_arg(id).map(DomainKey::Id);
    lookup(conn, key)
}

/// Free a domain handle. NULL is accepted and does nothing.
///
/// # Safety
/// `dom` is NULL or a domain handle not yet freed.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_free(dom: *mut vdev_domain) {
    guard((), || {
        drop(unsafe { take_handle(dom) });
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
/// `INT_MAX`; `VDEV_ERR_UNSUPPORTED` for a domain that has no id, such as a libvirt domain that is
/// shut off: name it by `vdev_domain_get_name()`).
///
/// # Safety
/// `dom` is NULL or a live domain handle.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_get_id(dom: *mut vdev_domain) -> c_int {
    guard(-1, || {
        let dom = unsafe { handle(dom, "dom") }?;
        let Some(id) = dom.domain.id else {
            return Err(CError::new(
                crate::error::vdev_error_code::VDEV_ERR_UNSUPPORTED,
                format!(
                    "domain '{}' has no id (it is not running, or its hypervisor gives none): name it by its name",
                    dom.domain.name
                ),
            ));
        };
        c_count(id as usize, "as domain id")
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
        let domains = unsafe { out_arg(domains, "domains") }?;
        let conn = unsafe { handle(conn, "conn") }?;
        let list = conn
            .inner
            .run(|c| async move { c.domains().await.map_err(CError::from) })?;
        export_list(
            domains,
            list.into_iter().map(|d| new_domain(&conn.inner, d)),
            "domains",
        )
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
        for d in unsafe { take_list(domains, n) }.iter() {
            drop(unsafe { take_handle(*d) });
        }
        Ok(())
    })
}
