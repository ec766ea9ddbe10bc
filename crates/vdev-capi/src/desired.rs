//! Desired state: plan and apply a desired-state document (JSON or YAML text), and export a
//! domain's devices as one. Results are JSON strings in the shapes of `vdev plan --json` and
//! `vdev apply --json`, freed with `vdev_string_free()`.

use std::ffi::{c_char, c_int, c_uint};

use vdev_facade::Error;

use crate::conn::vdev_conn;
use crate::domains::vdev_domain;
use crate::error::{guard, CError};
use crate::marshal::{
    apply_options, c_count, document_arg, export_str, handle, out_arg, plan_json, report_json,
};

/// What `vdev_conn_apply()` would change to make the domains as `document` says, changing
/// nothing.
///
/// `document` is a desired-state document, JSON or YAML text (the schema of `vdev plan FILE`,
/// `docs/design/0016-declarative-devices.md`). On success returns the number of changes (0: the
/// domains are as the document says) and sets `*plan` to the plan as JSON, to free with
/// `vdev_string_free()`: `{"changes": [{"op", "domain", "type", "ref", "attrs", "entry",
/// "reason"}]}`, as `vdev plan --json` writes it (`op` is `add`, `remove`, `update` or
/// `replace`; `ref` is null for an add whose reference the driver chooses; `entry`, the index
/// of the document entry, and `reason`, why a replacement is needed, only where set).
///
/// On failure returns -1 and sets `*plan` to NULL (unless `plan` itself is NULL). A malformed
/// document, or one that cannot be planned (an unknown type or attribute, an entry without
/// identity, two entries with one identity), is `VDEV_ERR_INVALID_DOCUMENT`, whose message
/// starts with the place (`domains.vm1.devices[2].attrs (line 7 column 9): ...`); a domain that
/// is not there is `VDEV_ERR_DOMAIN_NOT_FOUND`.
///
/// # Safety
/// `conn` is NULL or a live connection handle; `document` is NULL or a NUL-terminated string;
/// `plan` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn vdev_conn_plan(
    conn: *mut vdev_conn,
    document: *const c_char,
    plan: *mut *mut c_char,
) -> c_int {
    guard(-1, || {
        let plan = unsafe { out_arg(plan, "plan") }?;
        let conn = unsafe { handle(conn, "conn") }?;
        let doc = unsafe { document_arg(document, "document") }?;
        let planned = conn.inner.run(|c| async move { Ok(c.plan(&doc).await?) })?;
        let n = c_count(planned.changes.len(), "changes")?;
        *plan = plan_json(&planned);
        Ok(n)
    })
}

/// Make the domains as `document` (JSON or YAML text) says: plan as `vdev_conn_plan()` (its
/// errors come before anything changes), then, domain by domain, remove, update, and attach
/// every new device of a domain in one batch, all or none. Replacements are reported
/// (`not-made`), never made. Applying the same document again changes nothing.
///
/// `timeout_ms`: how long each removal waits for the guest, as in `vdev_domain_detach()`
/// (`VDEV_DETACH_DEFAULT_TIMEOUT` for the default). `flags`: 0, or a scope for every change
/// (`VDEV_AFFECT_LIVE`, `VDEV_AFFECT_CONFIG`, or both; see `vdev_domain_attach_flags()`).
///
/// Sets `*report` to what was done, as JSON to free with `vdev_string_free()`, as `vdev apply
/// --json` writes it: `{"changed": bool, "changes": [...]}`, each change as in
/// `vdev_conn_plan()` (an add with the new device's `ref`) plus its `outcome`: `done`,
/// `removal-pending` (asked; the guest has not released the device yet), `not-made` (a
/// replacement), `failed` (with `"error": {"code", "message"}`), or `not-tried` (after a
/// failure).
///
/// Returns the number of removals still pending (0: every change that could be made was made)
/// on success. When a change fails, returns -1 with the last error set to that failure (for a
/// failed batch, the entry's own condition, such as `VDEV_ERR_DEVICE_EXISTS`, with the entry
/// named in the message) and `*report` still set: the changes before it were made, none of the
/// failed batch was, and nothing after it was tried. When nothing was started (an invalid
/// document, `VDEV_ERR_INVALID_DOCUMENT` naming the place; a missing domain; a NULL argument),
/// returns -1 with `*report` NULL (unless `report` itself is NULL).
///
/// # Safety
/// `conn` is NULL or a live connection handle; `document` is NULL or a NUL-terminated string;
/// `report` is NULL or points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn vdev_conn_apply(
    conn: *mut vdev_conn,
    document: *const c_char,
    timeout_ms: c_int,
    flags: c_uint,
    report: *mut *mut c_char,
) -> c_int {
    guard(-1, || {
        let report = unsafe { out_arg(report, "report") }?;
        let conn = unsafe { handle(conn, "conn") }?;
        let doc = unsafe { document_arg(document, "document") }?;
        let options = apply_options(timeout_ms, flags)?;
        let mut done = conn
            .inner
            .run(|c| async move { Ok(c.apply(&doc, &options).await?) })?;
        *report = report_json(&done);
        match done.error.take() {
            Some(e) => Err(CError::from(e)),
            None => c_count(
                done.count(&vdev_facade::Outcome::Pending),
                "pending removals",
            ),
        }
    })
}

/// A desired-state document of what the domain has now, as JSON (the schema
/// `vdev_conn_plan()` takes; `vdev_conn_plan()` of it has no change): each device but those
/// whose removal is pending, with the attributes the driver lists under the names it accepts.
///
/// Returns 0 and sets `*document` to the text, to free with `vdev_string_free()`; on failure
/// returns -1 and sets `*document` to NULL (unless `document` itself is NULL).
///
/// # Safety
/// `dom` is NULL or a live domain handle; `document` is NULL or points to writable storage for
/// one pointer.
#[no_mangle]
pub unsafe extern "C" fn vdev_domain_export(
    dom: *mut vdev_domain,
    document: *mut *mut c_char,
) -> c_int {
    guard(-1, || {
        let document = unsafe { out_arg(document, "document") }?;
        let dom = unsafe { handle(dom, "dom") }?;
        let name = dom.domain.name.clone();
        let doc = dom
            .conn
            .run(|c| async move { c.export(&name).await.map_err(|e: Error| CError::from(e)) })?;
        *document = export_str(&doc);
        Ok(0)
    })
}
