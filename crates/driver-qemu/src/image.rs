//! The image behind a disk: what is at `source` on the QEMU host (checked before QEMU opens
//! it), its format, and the `blockdev-add` that opens it.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Map, Value};
use vdev_core::{Error, Result};
use vdev_remote::{Endpoint, Host};

use crate::domain::Session;
use crate::error::QmpError;
use crate::schema::Passthrough;

/// What QEMU must open an image with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// A regular file (QEMU's `file` driver).
    File,
    /// A block device: LVM, iSCSI, NVMe, loop, ... (QEMU's `host_device` driver).
    HostDevice,
}

impl Protocol {
    fn driver(self) -> &'static str {
        match self {
            Protocol::File => "file",
            Protocol::HostDevice => "host_device",
        }
    }
}

/// Check the image on this host before QEMU opens it (unix sockets only: QEMU is local), and
/// say whether it is a file or a block device. The file system calls run on a blocking thread
/// and are bounded by `timeout`: a dead NFS mount must not hang the attach.
pub(crate) async fn check_image(
    host: &Host,
    endpoint: &Endpoint,
    source: &str,
    format: &str,
    timeout: std::time::Duration,
) -> Result<Protocol> {
    if !matches!(endpoint, Endpoint::Unix(_)) {
        return Ok(Protocol::File);
    }
    if !Path::new(source).is_absolute() {
        return Err(Error::invalid_attribute(
            "source",
            format!("'{source}' is not an absolute path"),
        ));
    }
    // Here the checks are system calls on a blocking thread (no shell started per attach, and
    // the OS's own error text); a remote host gets the same checks as one shell call.
    if !host.is_local() {
        return inspect_remote_image(host, source, format, timeout).await;
    }
    let (path, fmt) = (source.to_owned(), format.to_owned());
    let work = tokio::task::spawn_blocking(move || inspect_image(&path, &fmt));
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Error::backend_with(
            crate::NAME,
            format!("checking '{source}' failed"),
            e,
        )),
        Err(_) => Err(Error::invalid_attribute(
            "source",
            format!(
                "'{source}' could not be examined within {}: its file system does not answer (a hung network mount?)",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

/// [`check_image`] on a remote host: the same checks in one round trip (shell tests, and `head`
/// for a qcow2 header only).
async fn inspect_remote_image(
    host: &Host,
    source: &str,
    format: &str,
    timeout: std::time::Duration,
) -> Result<Protocol> {
    // Shell builtins in the agent's own shell (no process on the host), `head` for qcow2 only;
    // defined once per ssh session, then one short line per call.
    const BODY: &str = r#"if [ -f "$1" ] || [ -b "$1" ]; then
  if [ ! -r "$1" ]; then echo unreadable
  elif [ "$2" = qcow2 ] && [ "$(head -c 3 -- "$1" 2>/dev/null)" != QFI ]; then echo notqcow2
  elif [ -f "$1" ]; then echo file; else echo block; fi
elif [ -d "$1" ]; then echo dir; elif [ -p "$1" ]; then echo fifo; elif [ -S "$1" ]; then echo socket
elif [ -c "$1" ]; then echo char; elif [ ! -e "$1" ]; then echo missing; else echo other; fi"#;
    let out = host
        .call("__vdev_image", BODY, &[source, format], timeout)
        .await
        .map_err(|e| match e {
            Error::Timeout { .. } => Error::invalid_attribute(
                "source",
                format!(
                    "'{source}' could not be examined on {} within {}: its file system does not answer (a hung network mount?)",
                    host.name(),
                    humantime::format_duration(timeout)
                ),
            ),
            e => e,
        })?;
    let on = host.name();
    let what = match out.text().as_str() {
        "file" => return Ok(Protocol::File),
        "block" => return Ok(Protocol::HostDevice),
        "notqcow2" => {
            return Err(Error::invalid_attribute(
                "format",
                format!(
                "'{source}' on {on} is not a qcow2 image (no qcow2 header); give its real format"
            ),
            ))
        }
        "missing" => {
            return Err(Error::invalid_attribute(
                "source",
                format!("cannot open '{source}' on {on}: no such file"),
            ))
        }
        "unreadable" => {
            return Err(Error::invalid_attribute(
                "source",
                format!("cannot open '{source}' on {on}: permission denied"),
            ))
        }
        "dir" => "a directory",
        "fifo" => "a FIFO",
        "socket" => "a socket",
        "char" => "a character device",
        _ => "not a regular file",
    };
    Err(Error::invalid_attribute(
        "source",
        format!("'{source}' on {on} is {what}; give a disk image file or a block device"),
    ))
}

/// The blocking part of [`check_image`].
fn inspect_image(source: &str, format: &str) -> Result<Protocol> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let md = std::fs::metadata(source)
        .map_err(|e| Error::invalid_attribute("source", format!("cannot open '{source}': {e}")))?;
    let t = md.file_type();
    let protocol = if t.is_file() {
        Protocol::File
    } else if t.is_block_device() {
        Protocol::HostDevice
    } else {
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(Error::invalid_attribute(
            "source",
            format!("'{source}' is {what}; give a disk image file or a block device"),
        ));
    };
    // O_NONBLOCK: should the path be swapped for a FIFO after the check, opening it does not
    // wait for a writer.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(source)
        .map_err(|e| Error::invalid_attribute("source", format!("cannot open '{source}': {e}")))?;
    if format == "qcow2" {
        let mut magic = [0u8; 4];
        if f.read_exact(&mut magic).is_err() || &magic != b"QFI\xfb" {
            return Err(Error::invalid_attribute(
                "format",
                format!("'{source}' is not a qcow2 image (no qcow2 header); give its real format"),
            ));
        }
    }
    Ok(protocol)
}

/// `raw` or `qcow2`: formats are never probed.
pub(crate) fn check_format(format: &str) -> Result<()> {
    if crate::schema::FORMATS.contains(&format) {
        Ok(())
    } else {
        Err(Error::invalid_attribute(
            "format",
            format!("'{format}' is not raw or qcow2 (formats are never probed)"),
        ))
    }
}

/// The `blockdev-add` arguments of a medium: a format node `node` with its file node inline,
/// pass-through options typed by QEMU's schema.
pub(crate) async fn blockdev_options(
    session: &Session,
    node: &str,
    source: &str,
    format: &str,
    readonly: bool,
    protocol: Protocol,
    blk_pt: &Passthrough,
) -> Result<Map<String, Value>> {
    let mut opts = Map::new();
    opts.insert("driver".into(), format.into());
    opts.insert("node-name".into(), node.into());
    opts.insert("read-only".into(), readonly.into());
    opts.insert(
        "file".into(),
        json!({"driver": protocol.driver(), "filename": source, "node-name": format!("{node}-file"), "read-only": readonly}),
    );
    session
        .intro
        .union_members(
            &session.qmp,
            "blockdev",
            "blockdev-add",
            format,
            blk_pt,
            &[
                ("driver", "format"),
                ("node-name", "id"),
                ("read-only", "readonly"),
                ("file", "source"),
                ("file.driver", "source"),
                ("file.filename", "source"),
                ("file.node-name", "id"),
                ("file.read-only", "readonly"),
            ],
            &mut opts,
        )
        .await?;
    Ok(opts)
}

/// QEMU refused to open a medium.
pub(crate) fn blockdev_add_error(e: QmpError, source: &str, format: &str, plain: bool) -> Error {
    match e {
        QmpError::Qemu { class, desc } => Error::invalid_attribute(
            if plain { "source" } else { "blockdev.*" },
            format!("QEMU cannot open '{source}' as {format}: {class}: {desc}"),
        ),
        e => e.into_core("blockdev-add"),
    }
}
