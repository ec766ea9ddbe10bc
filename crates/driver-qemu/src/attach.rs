//! Attach: check the attributes, make the backend and the device in one round trip, place the
//! device on a free bus, and roll back (or ask QEMU what it made) when anything fails.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rand::Rng;
use serde_json::{json, Map, Value};
use tracing::{debug, info};
use vdev_core::{Attributes, DeviceEvent, DeviceRef, DeviceType, Domain, Error, Result};

use crate::domain::{lock, went_away, DomainEntry, Session};
use crate::domains::Domains;
use crate::error::QmpError;
use crate::image::{blockdev_add_error, blockdev_options, check_format, check_image, Protocol};
use crate::listing::{disk_attributes, exists};
use crate::markers::{self, Backend};
use crate::schema::{self, check_id, parse_bool_attr, split_attrs, NIC_ATTACH_MODELS, NIC_MODELS};
use crate::update;

/// Attach a device of `device_type` with `attributes` to `domain`, and say so on the event hub.
pub(crate) async fn attach(
    domains: &Domains,
    domain: &Domain,
    device_type: &DeviceType,
    attributes: &Attributes,
) -> Result<DeviceRef> {
    let entry = domains.entry(domain).await?;
    let session = domains.session(&entry).await?;
    let r = if *device_type == DeviceType::DISK {
        attach_disk(&session, &entry, attributes).await
    } else if *device_type == DeviceType::NETWORK {
        attach_nic(&session, &entry, attributes).await
    } else {
        return Err(Error::Unsupported {
            driver: crate::NAME.into(),
            operation: format!("device type '{device_type}'"),
            detail: "supported types: disk, network".into(),
        });
    };
    let in_flight = lock(&entry.in_flight).take();
    let r = match (r, in_flight) {
        (Err(e), Some(made)) if !session.qmp.is_alive() => {
            drop(session);
            settle_lost_attach(domains, &entry, made, e).await?
        }
        (r, _) => r.map_err(|e| went_away(&entry, &session, "attach", e))?,
    };
    entry.remember(r.as_str(), device_type);
    domains.events.send(DeviceEvent::Added {
        domain: entry.domain(),
        device_type: device_type.clone(),
        reference: r.clone(),
    });
    Ok(r)
}

/// The connection to QEMU dropped while an attach was making `made` (the ssh connection to
/// its host died, say). QEMU still runs the requests it received, in order, before it
/// serves a new client on that socket: so connect again (within one request timeout) and
/// ask. A device that exists is the attach's success; otherwise its backend is removed and
/// the answer is an error saying nothing was attached. Only when QEMU cannot be reached
/// again is the outcome unknown, and the error says so.
async fn settle_lost_attach(
    domains: &Domains,
    entry: &Arc<DomainEntry>,
    (id, backend): (String, Backend),
    e: Error,
) -> Result<DeviceRef> {
    let domain = lock(&entry.name).clone();
    debug!(%id, error = %e, "connection lost during attach: reconnecting to settle it");
    let timeout = domains.config.request_timeout;
    let session = match tokio::time::timeout(timeout, domains.session(entry)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e2)) => {
                return Err(Error::backend_with(
                    crate::NAME,
                    format!(
                        "the connection to QEMU of domain '{domain}' was lost during the attach of {id} ({e}), and reconnecting failed ({e2}): whether {id} was made is unknown; list the devices once it can be reached"
                    ),
                    e,
                ))
            }
            Err(_) => {
                return Err(Error::backend_with(
                    crate::NAME,
                    format!(
                        "the connection to QEMU of domain '{domain}' was lost during the attach of {id}, and it could not be reached again within {}: whether {id} was made is unknown; list the devices once it can be reached",
                        humantime::format_duration(timeout)
                    ),
                    e,
                ))
            }
        };
    if exists(&session, &id).await {
        info!(%id, "the device was made before the connection dropped");
        session.placement.forget();
        return DeviceRef::new(id);
    }
    markers::remove_backend(&session.qmp, &backend)
            .await
            .map_err(|e2| {
                Error::backend_with(
                    crate::NAME,
                    format!(
                        "the connection to QEMU of domain '{domain}' was lost during the attach of {id}; {id} was not made, and its backend {backend:?} could not be removed: remove it with blockdev-del/netdev_del"
                    ),
                    e2,
                )
            })?;
    Err(Error::backend_with(
            crate::NAME,
            format!(
                "the connection to QEMU of domain '{domain}' was lost during the attach of {id}; after reconnecting, nothing of it is there (its backend, if made, was removed): attach again"
            ),
            e,
        ))
}

/// After a failed `device_add`: the right error for QEMU's answer.
pub(crate) async fn device_add_error(
    session: &Session,
    device_type: &DeviceType,
    id: &str,
    model: &str,
    passthrough: bool,
    e: QmpError,
) -> Error {
    if matches!(e, QmpError::Qemu { .. }) && exists(session, id).await {
        return Error::DeviceExists {
            domain: String::new(),
            device_type: device_type.to_string(),
            reference: id.to_owned(),
        };
    }
    let main = if *device_type == DeviceType::DISK {
        "source"
    } else {
        "model"
    };
    match e {
        QmpError::Qemu { class, desc } if class == "GenericError" => Error::invalid_attribute(
            if passthrough { "device.*" } else { main },
            format!("QEMU refused the {model} device: {class}: {desc}"),
        ),
        e => e.into_core(&format!("device_add of a {model}")),
    }
}

/// `blockdev-add` (format node with an inline file node) then `device_add`; the node is
/// deleted again when the device cannot be added.
pub(crate) async fn attach_disk(
    session: &Session,
    entry: &DomainEntry,
    attrs: &Attributes,
) -> Result<DeviceRef> {
    // The image is checked before the domain's lock is taken: a slow file system stalls only
    // this attach.
    let checked = check_disk(entry, session.qmp.timeout(), attrs).await?;
    let _op = entry.ops.lock().await;
    prepare_disk(session, attrs, checked)
        .await?
        .make_one(session, entry)
        .await
}

/// What [`check_disk`] found: the disk's model and the checked image's protocol.
pub(crate) struct CheckedDisk {
    model: &'static str,
    cdrom: bool,
    format: &'static str,
    readonly: bool,
    protocol: Option<Protocol>,
}

/// Check a disk's attributes and its image (changes nothing; takes no lock).
pub(crate) async fn check_disk(
    entry: &DomainEntry,
    timeout: std::time::Duration,
    attrs: &Attributes,
) -> Result<CheckedDisk> {
    let (named, _, _) = split_attrs(attrs, "blockdev.");
    let cdrom = match named.get("media").copied().unwrap_or("disk") {
        "disk" => false,
        "cdrom" => true,
        m => {
            return Err(Error::invalid_attribute(
                "media",
                format!("'{m}' is not disk or cdrom"),
            ))
        }
    };
    if named.contains_key("force") {
        return Err(Error::invalid_attribute(
            "force",
            "force is for updating a CD-ROM drive (opening a tray the guest has locked), not for attach",
        ));
    }
    let source = named.get("source").copied().filter(|s| !s.is_empty());
    if source.is_none() && !cdrom {
        return Err(Error::MissingAttribute {
            device_type: "disk".into(),
            name: "source".into(),
            hint: "give the image file or block device (only a CD-ROM drive, media=cdrom, may be empty)".into(),
        });
    }
    let format = match (named.get("format").copied(), cdrom) {
        (Some(f), _) => f,
        (None, true) => "raw",
        (None, false) => {
            return Err(Error::MissingAttribute {
                device_type: "disk".into(),
                name: "format".into(),
                hint: "give format=raw or format=qcow2 (formats are never probed)".into(),
            })
        }
    };
    check_format(format)?;
    let format: &'static str = if format == "qcow2" { "qcow2" } else { "raw" };
    let bus = named.get("bus").copied().unwrap_or("scsi");
    let model = match (schema::DISK_BUSES.iter().find(|(b, _, _)| *b == bus), cdrom) {
        (Some((_, hd, _)), false) => *hd,
        (Some((_, _, Some(cd))), true) => *cd,
        (_, true) => {
            return Err(Error::invalid_attribute(
                "bus",
                format!("a CD-ROM drive goes on bus=scsi (scsi-cd), not '{bus}'"),
            ))
        }
        (None, false) => {
            return Err(Error::invalid_attribute(
                "bus",
                format!("'{bus}' is not scsi, virtio or usb"),
            ))
        }
    };
    let readonly = match (named.get("readonly"), cdrom) {
        (Some(v), false) => parse_bool_attr("readonly", v)?,
        (None, false) => false,
        (v, true) => {
            if v.is_some_and(|v| !parse_bool_attr("readonly", v).unwrap_or(false)) {
                return Err(Error::invalid_attribute(
                    "readonly",
                    "a CD-ROM drive is read-only",
                ));
            }
            true
        }
    };
    device_id(&named, "disk")?;
    let protocol = match source {
        Some(src) => Some(check_image(&entry.host, &entry.endpoint, src, format, timeout).await?),
        None => None,
    };
    Ok(CheckedDisk {
        model,
        cdrom,
        format,
        readonly,
        protocol,
    })
}

/// A checked disk as a [`Plan`]: its properties, its block node's options.
pub(crate) async fn prepare_disk(
    session: &Session,
    attrs: &Attributes,
    checked: CheckedDisk,
) -> Result<Plan> {
    let CheckedDisk {
        model,
        cdrom,
        format,
        readonly,
        protocol,
    } = checked;
    let (named, dev_pt, blk_pt) = split_attrs(attrs, "blockdev.");
    let source = named.get("source").copied().filter(|s| !s.is_empty());
    let id = device_id(&named, "disk")?;
    let mut props = device_props(session, model, &dev_pt, "bus", &[("drive", "source")]).await?;
    if let Some(s) = named.get("serial") {
        props.insert("serial".into(), Value::from(*s));
    }
    let medium = match (source, protocol) {
        (Some(src), Some(p)) => {
            let node = format!("{}{}", markers::OWNED_PREFIX, vdev_core::random_hex());
            let opts = blockdev_options(session, &node, src, format, readonly, p, &blk_pt).await?;
            Some((node, opts))
        }
        _ => None,
    };
    let node = medium.as_ref().map(|(n, _)| n.clone());
    if let Some(n) = &node {
        props.insert("drive".into(), n.clone().into());
    }
    // A CD-ROM drive's tray is read from QEMU at the next listing; a disk's listing is known.
    let after = match (cdrom, source, &node) {
        (false, Some(src), Some(n)) => {
            After::Cache(disk_attributes(&id, model, src, format, readonly, Some(n)))
        }
        _ => After::Nothing,
    };
    let (src, pt) = (source.unwrap_or_default().to_owned(), blk_pt.is_empty());
    Ok(Plan {
        device_type: DeviceType::DISK,
        id,
        model,
        props,
        backend_add: medium.map(|(_, opts)| ("blockdev-add", opts)),
        backend: node.clone().map_or(Backend::None, Backend::Node),
        passthrough: !dev_pt.is_empty(),
        backend_error: Box::new(move |e| blockdev_add_error(e, &src, format, pt)),
        after,
    })
}

/// The `id` attribute, checked, or a new `PREFIX-XXXXXXXX`.
fn device_id(named: &HashMap<&str, &str>, prefix: &str) -> Result<String> {
    match named.get("id") {
        Some(i) => {
            check_id(i)?;
            Ok((*i).to_owned())
        }
        None => Ok(format!("{prefix}-{}", vdev_core::random_hex())),
    }
}

/// The `device.*` attributes `given` as properties of a `model` device. Refused among them:
/// what [`Plan::make`] sets itself (`driver` and `bus`, chosen by the attribute `bus_attr`, and
/// `id`) and the device's `own` properties, each with the attribute that sets it.
async fn device_props(
    session: &Session,
    model: &str,
    given: &[(String, String)],
    bus_attr: &str,
    own: &[(&str, &str)],
) -> Result<Map<String, Value>> {
    let mut reserved = own.to_vec();
    reserved.extend([("id", "id"), ("bus", bus_attr), ("driver", bus_attr)]);
    session
        .intro
        .device_properties(&session.qmp, model, given, &reserved)
        .await
}

/// Why QEMU refused a device's backend, in the core's words.
pub(crate) type BackendError = Box<dyn FnOnce(QmpError) -> Error + Send + Sync>;

/// What is left to do once a device is made.
pub(crate) enum After {
    /// Nothing.
    Nothing,
    /// Remember the disk's listed attributes (QEMU cannot be asked for all of them cheaply).
    Cache(Attributes),
    /// Take the NIC's link down (asked with `link=down`).
    LinkDown,
}

/// A device ready to be made, as [`prepare_disk`] and [`prepare_nic`] have checked and built
/// it: the one pipeline single attaches and batches go through.
pub(crate) struct Plan {
    pub(crate) device_type: DeviceType,
    pub(crate) id: String,
    pub(crate) model: &'static str,
    /// The device's properties but `driver`, `id` and `bus` (which the pipeline sets).
    pub(crate) props: Map<String, Value>,
    /// The backend's command (`blockdev-add`, `netdev_add`) and arguments, if there is one.
    pub(crate) backend_add: Option<(&'static str, Map<String, Value>)>,
    /// What the device leaves to remove once it is gone.
    pub(crate) backend: Backend,
    /// Whether `device.*` attributes were given (QEMU's refusal then names them).
    pub(crate) passthrough: bool,
    /// Says why QEMU refused the backend.
    pub(crate) backend_error: BackendError,
    /// What is left to do once the device is made.
    pub(crate) after: After,
}

impl Plan {
    /// The `device_add` arguments on `bus`.
    pub(crate) fn device_args(&self, bus: &Option<String>) -> Value {
        let mut args = self.props.clone();
        args.insert("driver".into(), self.model.into());
        args.insert("id".into(), self.id.clone().into());
        if let Some(b) = bus {
            args.insert("bus".into(), b.clone().into());
        }
        Value::Object(args)
    }

    /// Make one device ([`Plan::make`]) and finish it ([`finish`]).
    pub(crate) async fn make_one(
        mut self,
        session: &Session,
        entry: &DomainEntry,
    ) -> Result<DeviceRef> {
        let after = std::mem::replace(&mut self.after, After::Nothing);
        let (id, model) = (self.id.clone(), self.model);
        match self.make(session, entry).await? {
            Placed::Settled(r) => Ok(r),
            Placed::Bus(_) => {
                finish(session, &id, model, after).await?;
                Ok(DeviceRef::new(id).expect("checked id"))
            }
        }
    }
}

/// Do what is left once device `id` is made (see [`After`]).
pub(crate) async fn finish(session: &Session, id: &str, model: &str, after: After) -> Result<()> {
    match after {
        After::Nothing => Ok(()),
        After::Cache(attrs) => {
            lock(&session.disk_cache).insert(id.to_owned(), (model.to_owned(), Some(attrs)));
            Ok(())
        }
        After::LinkDown => {
            let r = session.qmp.batch(update::link_commands(id, false)).await;
            match r.into_iter().next() {
                Some(Err(e)) => Err(Error::backend_with(
                    crate::NAME,
                    format!("NIC {id} was created, but its link could not be taken down; detach it, or update it with link=down"),
                    e,
                )),
                _ => Ok(()),
            }
        }
    }
}

impl Plan {
    /// Make the backend and the device on the first candidate bus in one round trip (QEMU runs
    /// them in order: a `device_add` after a failed backend fails for want of it), then place
    /// the device ([`Made::place`]).
    async fn make(self, session: &Session, entry: &DomainEntry) -> Result<Placed> {
        let Plan {
            device_type,
            id,
            model,
            props,
            backend_add,
            backend,
            passthrough,
            backend_error,
            after: _,
        } = self;
        let id = id.as_str();
        let buses = session.placement.buses_for(&session.qmp, model).await?;
        let device_args = |bus: &Option<String>| {
            let mut args = props.clone();
            args.insert("driver".into(), model.into());
            args.insert("id".into(), id.into());
            if let Some(b) = bus {
                args.insert("bus".into(), b.clone().into());
            }
            Value::Object(args)
        };
        let made = Made {
            id,
            device_type,
            backend,
        };
        // Should the connection drop from here on, the driver asks QEMU afterwards what became
        // of it.
        *lock(&entry.in_flight) = Some((id.to_owned(), made.backend.clone()));
        let mut cmds = Vec::with_capacity(2);
        let has_backend = backend_add.is_some();
        if let Some((command, args)) = backend_add {
            cmds.push((command.to_owned(), Value::Object(args)));
        }
        cmds.push(("device_add".to_owned(), device_args(&buses[0])));
        let mut r = session.qmp.batch(cmds).await.into_iter();
        if has_backend {
            match r.next().expect("reply") {
                Ok(_) => {}
                Err(e @ QmpError::Timeout { .. }) => {
                    return made.settle(session, e).await.map(Placed::Settled)
                }
                Err(e) => return Err(backend_error(e)),
            }
        }
        let first = r.next().expect("reply");
        let placed = made
            .place(session, &buses, &device_args, first, model, passthrough)
            .await?;
        if let Placed::Bus(i) = placed {
            session.placement.placed(model, i);
        }
        Ok(placed)
    }
}

/// How [`Made::place`] ended well.
enum Placed {
    /// The device is on `buses[i]`.
    Bus(usize),
    /// A request timed out, and QEMU said afterwards that the device exists.
    Settled(DeviceRef),
}

/// What an attach has made so far, to answer truthfully when QEMU was too slow.
struct Made<'a> {
    id: &'a str,
    device_type: DeviceType,
    backend: Backend,
}

impl Made<'_> {
    /// Finish an attach whose backend exists and whose first `device_add` answered `first`:
    /// on a `GenericError` (a full SCSI bus, a root port another client just took) the next
    /// candidate bus is tried; on any other failure the backend is removed again.
    async fn place(
        &self,
        session: &Session,
        buses: &[Option<String>],
        device_args: &(dyn Fn(&Option<String>) -> Value + Sync),
        first: Result<Value, QmpError>,
        model: &str,
        passthrough: bool,
    ) -> Result<Placed> {
        let mut result = first;
        let mut i = 0;
        loop {
            match result {
                Ok(_) => return Ok(Placed::Bus(i)),
                Err(e @ QmpError::Timeout { .. }) => {
                    return self.settle(session, e).await.map(Placed::Settled)
                }
                Err(e) if e.class() == Some("GenericError") && i + 1 < buses.len() => {
                    debug!(bus = ?buses[i], error = %e, "bus refused the device: trying the next one");
                    i += 1;
                    result = session
                        .qmp
                        .execute_raw("device_add", device_args(&buses[i]))
                        .await;
                }
                Err(e) => {
                    session.placement.forget();
                    let err = device_add_error(
                        session,
                        &self.device_type,
                        self.id,
                        model,
                        passthrough,
                        e,
                    )
                    .await;
                    if !matches!(err, Error::DeviceExists { .. }) || self.backend.is_owned() {
                        self.undo_backend(session).await?;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Remove the backend of a device that was not created. A failure to do so is the caller's
    /// error, naming what remains: never an error that hides a half-made device.
    async fn undo_backend(&self, session: &Session) -> Result<()> {
        markers::remove_backend(&session.qmp, &self.backend)
            .await
            .map_err(|e| {
                Error::backend_with(
                    crate::NAME,
                    format!(
                        "the device {} was not created, and its backend {:?} could not be removed: remove it with blockdev-del/netdev_del",
                        self.id, self.backend
                    ),
                    e,
                )
            })
    }

    /// A request of this attach timed out (QEMU is slow, or stopped): QEMU still runs the
    /// requests it has, in order, so ask it (within one more request timeout) what it really
    /// has now. A device that was made is success; otherwise its backend is removed, and the
    /// answer is the timeout. Only when QEMU does not answer even then is the outcome unknown,
    /// and the error says so.
    async fn settle(&self, session: &Session, e: QmpError) -> Result<DeviceRef> {
        let id = self.id;
        debug!(%id, error = %e, "attach timed out: asking QEMU what it has");
        let QmpError::Timeout { command, after } = e else {
            return Err(e.into_core("attach"));
        };
        let exists = session
            .qmp
            .execute_raw(
                "qom-get",
                json!({"path": format!("/machine/peripheral/{id}"), "property": "type"}),
            )
            .await;
        match exists {
            Ok(_) => {
                // The device was made after all (its backend with it).
                session.placement.forget();
                Ok(DeviceRef::new(id).expect("checked id"))
            }
            Err(e) if e.class() == Some("DeviceNotFound") => {
                self.undo_backend(session).await?;
                Err(Error::Timeout {
                    operation: format!(
                        "attach of {} {id} (QMP command {command}; QEMU answered later, and nothing was created)",
                        self.device_type
                    ),
                    after,
                })
            }
            Err(_) => Err(Error::Timeout {
                operation: format!(
                    "attach of {} {id} (QMP command {command}; QEMU has not answered since, so whether the device exists is unknown: list the devices once QEMU answers, and detach it if it is there)",
                    self.device_type
                ),
                after,
            }),
        }
    }
}

/// MAC addresses of the domain's NICs, lower case: one `qom-list` and one pipelined batch.
pub(crate) async fn macs(session: &Session) -> Result<HashSet<String>> {
    let devs = session
        .qmp
        .execute_raw("qom-list", json!({"path": "/machine/peripheral"}))
        .await
        .and_then(schema::peripheral)
        .map_err(|e| e.into_core("listing NICs (qom-list)"))?;
    let cmds = devs
        .iter()
        .filter(|(_, m)| NIC_MODELS.contains(&m.as_str()))
        .map(|(id, _)| {
            (
                "qom-get".to_owned(),
                json!({"path": format!("/machine/peripheral/{id}"), "property": "mac"}),
            )
        })
        .collect();
    Ok(session
        .qmp
        .batch(cmds)
        .await
        .into_iter()
        .filter_map(|r| r.ok()?.as_str().map(str::to_ascii_lowercase))
        .collect())
}

/// `netdev_add` then `device_add`; the netdev is deleted again when the device cannot be added.
pub(crate) async fn attach_nic(
    session: &Session,
    entry: &DomainEntry,
    attrs: &Attributes,
) -> Result<DeviceRef> {
    let _op = entry.ops.lock().await;
    let mut used = macs(session).await?;
    prepare_nic(session, attrs, &mut used)
        .await?
        .make_one(session, entry)
        .await
}

/// A NIC as a [`Plan`]. Call with the domain's lock held: `used` holds the MACs of the domain
/// (and of the batch so far), and gets this NIC's.
pub(crate) async fn prepare_nic(
    session: &Session,
    attrs: &Attributes,
    used: &mut HashSet<String>,
) -> Result<Plan> {
    let (named, dev_pt, net_pt) = split_attrs(attrs, "netdev.");
    let kind = named.get("netdev").copied().unwrap_or("user");
    let ifname = named.get("ifname").copied();
    match (kind, ifname) {
        ("user", None) | ("tap", Some(_)) => {}
        ("user", Some(_)) => {
            return Err(Error::invalid_attribute(
                "ifname",
                "ifname is for netdev=tap only",
            ))
        }
        ("tap", None) => {
            return Err(Error::MissingAttribute {
                device_type: "network".into(),
                name: "ifname".into(),
                hint: "netdev=tap needs the TAP interface name (for example ifname=tap0)".into(),
            })
        }
        (k, _) => {
            return Err(Error::invalid_attribute(
                "netdev",
                format!("'{k}' is not user or tap"),
            ))
        }
    }
    let link_up = schema::parse_link(named.get("link").copied().unwrap_or("up"))?;
    let wanted = named.get("model").copied().unwrap_or(NIC_ATTACH_MODELS[0]);
    let Some(model) = NIC_ATTACH_MODELS.iter().copied().find(|m| *m == wanted) else {
        return Err(Error::invalid_attribute(
            "model",
            format!("'{wanted}' is not {}", NIC_ATTACH_MODELS.join(", ")),
        ));
    };
    let id = device_id(&named, "net")?;
    let given_mac = named
        .get("mac")
        .map(|m| vdev_core::unicast_mac("mac", m, "52:54:00:12:34:56"))
        .transpose()?;
    let own = [("netdev", "netdev"), ("mac", "mac")];
    let mut props = device_props(session, model, &dev_pt, "model", &own).await?;
    let mut nd = Map::new();
    let netdev_id = format!("vdev-{id}");
    nd.insert("type".into(), kind.into());
    nd.insert("id".into(), netdev_id.clone().into());
    if let Some(i) = ifname {
        nd.insert("ifname".into(), i.into());
        nd.insert("script".into(), "no".into());
        nd.insert("downscript".into(), "no".into());
    }
    session
        .intro
        .union_members(
            &session.qmp,
            "netdev",
            "netdev_add",
            kind,
            &net_pt,
            &[("type", "netdev"), ("id", "id"), ("ifname", "ifname")],
            &mut nd,
        )
        .await?;
    let mac = match given_mac {
        Some(m) if used.contains(&m) => {
            return Err(Error::DeviceExists {
                domain: String::new(),
                device_type: "network".into(),
                reference: format!("mac {m}"),
            })
        }
        Some(m) => m,
        None => loop {
            let b: [u8; 3] = rand::thread_rng().gen();
            let m = format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]);
            if !used.contains(&m) {
                break m;
            }
        },
    };
    used.insert(mac.clone());
    props.insert("netdev".into(), netdev_id.clone().into());
    props.insert("mac".into(), mac.into());
    let (kind, pt_given) = (kind.to_owned(), !net_pt.is_empty());
    Ok(Plan {
        device_type: DeviceType::NETWORK,
        id,
        model,
        props,
        backend_add: Some(("netdev_add", nd)),
        backend: Backend::Netdev(netdev_id),
        passthrough: !dev_pt.is_empty(),
        backend_error: Box::new(move |e| match e {
            QmpError::Qemu { class, desc } => Error::invalid_attribute(
                if pt_given { "netdev.*" } else { "netdev" },
                format!("QEMU refused the {kind} network backend: {class}: {desc}"),
            ),
            e => e.into_core("netdev_add"),
        }),
        after: if link_up {
            After::Nothing
        } else {
            After::LinkDown
        },
    })
}
