//! libxl's stored configuration of a domain (`/var/lib/xen/userdata-d.<domid>.<uuid>.libxl-json`):
//! the document libxl rebuilds a domain from on save/restore, migration and reboot, and what
//! `xl list -l` prints. `xl block-attach` and `xl network-attach` add the device's entry to it
//! under libxl's per-domain userdata lock; this module knows the file names, the document and
//! the entries, as facts gathered in docs/research/xen-libxl-userdata.md (no libxl code used).
//! The file system work (lock, read, write) is [`Userdata`]'s, on the connection's host. See docs/design/0013-xen-libxl-config.md.

use std::time::Duration;

use serde_json::{Map, Value};
use vdev_core::{Error, Result};
use vdev_remote::{HeldLock, Host, HostLock, LockError};

mod update;
pub(crate) use update::{ConfigOp, ConfigUpdate, ConfigView};

use crate::error::LibxlConfigError;
use crate::hotplug::{Dom0, REMOTE_STEP};

/// libxl's folder of per-domain user data (`XEN_LIB_DIR` on Debian and upstream defaults).
pub(crate) const LIB_DIR: &str = "/var/lib/xen";

/// The files of one domain's stored configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Files {
    /// The document (`userdata-d.D.UUID.libxl-json`).
    pub data: String,
    /// Where a new document is written before it is renamed over the old one (`userdata-n.`).
    pub temp: String,
    /// libxl's userdata lock (`userdata-l.D.UUID.domain-userdata-lock`), taken with `flock`.
    pub lock: String,
}

impl Files {
    pub(crate) fn new(domid: u32, uuid: &str) -> Self {
        Self::under(LIB_DIR, domid, uuid)
    }

    fn under(dir: &str, domid: u32, uuid: &str) -> Self {
        Files {
            data: format!("{dir}/userdata-d.{domid}.{uuid}.libxl-json"),
            temp: format!("{dir}/userdata-n.{domid}.{uuid}.libxl-json"),
            lock: format!("{dir}/userdata-l.{domid}.{uuid}.domain-userdata-lock"),
        }
    }
}

/// The domain's uuid from its XenStore `vm` node (`/vm/<uuid>`, written by libxl at creation
/// from the hypervisor's domain handle, the uuid libxl names the files with), checked to be
/// libxl's lowercase 8-4-4-4-12 form.
pub(crate) fn uuid_from_vm(vm: &str) -> Option<String> {
    let u = vm.strip_prefix("/vm/")?;
    let groups: Vec<&str> = u.split('-').collect();
    let ok = groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| {
            g.len() == n && g.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
    ok.then(|| u.to_owned())
}

/// What attach does with libxl's stored configuration: the `recorded` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Recorded {
    /// Absent: record the device when the configuration is at hand (the host is Domain-0),
    /// attach it unrecorded otherwise (listed `recorded=unknown`).
    #[default]
    Auto,
    /// `recorded=yes`: record it, or refuse the attach when the configuration is out of reach.
    Yes,
    /// `recorded=no`: leave the configuration alone (a domain libxl does not manage); libxl
    /// forgets the device on save/restore, migration and reboot.
    No,
}

impl Recorded {
    /// Parse the attribute's value.
    pub(crate) fn parse(v: Option<&str>) -> Result<Self> {
        match v.map(|v| (v, vdev_core::parse_bool(v))) {
            None => Ok(Recorded::Auto),
            Some((_, Some(true))) => Ok(Recorded::Yes),
            Some((_, Some(false))) => Ok(Recorded::No),
            Some((v, None)) => Err(Error::InvalidAttribute {
                name: "recorded".into(),
                reason: format!(
                    "'{}' is not yes or no: recorded=yes requires the device in libxl's stored configuration (refused where it is out of reach), recorded=no leaves that configuration alone; leave it out to record the device whenever possible",
                    v.escape_default()
                ),
            }),
        }
    }
}

/// `attributes` with the `recorded` attribute an attach [`vdev_core::Scope`] stands for: live is
/// `recorded=no`, both is `recorded=yes` (`recorded=` is the older spelling of the scope, kept as
/// an alias for one release). A `recorded` value that says otherwise is refused.
pub(crate) fn scope_as_recorded(
    attributes: &vdev_core::Attributes,
    scope: vdev_core::Scope,
) -> Result<vdev_core::Attributes> {
    let want = match scope {
        vdev_core::Scope::Live => Recorded::No,
        vdev_core::Scope::Both => Recorded::Yes,
        vdev_core::Scope::Persistent => {
            return Err(Error::Unsupported {
                driver: crate::NAME.into(),
                operation: "attach with scope persistent".into(),
                detail: "a Xen device goes to the running domain, and to libxl's stored configuration with it (scope both)".into(),
            })
        }
    };
    let given = Recorded::parse(attributes.get("recorded"))?;
    if given != Recorded::Auto && given != want {
        return Err(Error::InvalidAttribute {
            name: "recorded".into(),
            reason: format!(
                "recorded={} contradicts scope {scope}; leave recorded out (scope {scope} says it)",
                attributes.get("recorded").unwrap_or_default()
            ),
        });
    }
    let mut a = attributes.clone();
    a.insert(
        "recorded",
        if want == Recorded::Yes { "yes" } else { "no" }.to_owned(),
    )?;
    Ok(a)
}

/// The `recorded` attribute's schema entry.
pub(crate) fn recorded_spec() -> vdev_core::AttributeSpec {
    vdev_core::AttributeSpec::optional(
        "recorded",
        "whether the device is in libxl's stored configuration of the domain, from which libxl rebuilds it on save/restore, migration and reboot (xl list -l shows it): listed yes, no, or unknown (the configuration is out of reach: this host is not Domain-0). On attach: leave it out to record the device whenever the configuration is at hand (Domain-0, locally or over xen+ssh), yes to refuse the attach where it is not, no to leave the configuration alone",
        "yes",
    )
}

/// A device's identity in the document, as libxl compares entries: a disk by its `vdev`
/// string (`xvdc` and `51744` are different entries), a NIC by its `devid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ident {
    Disk(String),
    Nic(u32),
}

impl Ident {
    fn array(&self) -> &'static str {
        match self {
            Ident::Disk(_) => "disks",
            Ident::Nic(_) => "nics",
        }
    }

    fn matches(&self, entry: &Value) -> bool {
        match self {
            Ident::Disk(v) => entry.get("vdev").and_then(Value::as_str) == Some(v.as_str()),
            Ident::Nic(d) => entry.get("devid").and_then(Value::as_u64) == Some(u64::from(*d)),
        }
    }

    /// For messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Ident::Disk(v) => format!("disk {v}"),
            Ident::Nic(d) => format!("nic {d}"),
        }
    }
}

/// A parsed configuration document. Every key is kept (libxl reads by key and ignores unknown
/// ones); key order is not (libxl does not depend on it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    doc: Map<String, Value>,
}

impl Config {
    /// Read a document as libxl stores it: JSON text ended by one NUL byte (libxl parses up to
    /// the first NUL, as a C string). The error says what is wrong, in words.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Config, String> {
        let text = match bytes.iter().position(|b| *b == 0) {
            Some(n) => &bytes[..n],
            None => bytes,
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            return Err("it is empty".into());
        }
        let doc: Value =
            serde_json::from_slice(text).map_err(|e| format!("it is not JSON ({e})"))?;
        let Value::Object(doc) = doc else {
            return Err("it is not a JSON object".into());
        };
        check_integers(&Value::Object(doc.clone()))?;
        for key in ["disks", "nics"] {
            match doc.get(key) {
                None => {}
                Some(Value::Array(a)) if a.iter().all(Value::is_object) => {}
                Some(_) => return Err(format!("its \"{key}\" is not an array of objects")),
            }
        }
        if !doc.get("c_info").is_some_and(Value::is_object) {
            return Err("it has no \"c_info\" object (not a libxl_domain_config)".into());
        }
        Ok(Config { doc })
    }

    /// The document as libxl writes it: indented JSON, a newline and one NUL byte.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        use serde::Serialize;
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.doc
            .serialize(&mut ser)
            .expect("a JSON value always serialises");
        out.extend_from_slice(b"\n\0");
        out
    }

    /// The entry of `id`, if any.
    pub(crate) fn get(&self, id: &Ident) -> Option<&Value> {
        self.doc
            .get(id.array())?
            .as_array()?
            .iter()
            .find(|e| id.matches(e))
    }

    /// Add `entry` for `id`, replacing an entry with the same identity in its place (libxl's
    /// rule: a stale entry left by a detach is overwritten); the entry replaced. A document
    /// that someone else left with several entries of one identity keeps only the new one: on
    /// restore, libxl would otherwise build the same device twice.
    pub(crate) fn set(&mut self, id: &Ident, entry: Value) -> Option<Value> {
        let arr = self
            .doc
            .entry(id.array())
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(arr) = arr else {
            unreachable!("checked by parse")
        };
        match arr.iter().position(|e| id.matches(e)) {
            Some(i) => {
                let replaced = std::mem::replace(&mut arr[i], entry);
                let mut n = 0;
                arr.retain(|e| {
                    n += 1;
                    n <= i + 1 || !id.matches(e)
                });
                Some(replaced)
            }
            None => {
                arr.push(entry);
                None
            }
        }
    }

    /// Remove the entry of `id` (every entry of that identity, so that libxl cannot rebuild the
    /// device from a duplicate someone else left); the array goes with its last entry (libxl
    /// writes no empty arrays). The first entry removed.
    pub(crate) fn remove(&mut self, id: &Ident) -> Option<Value> {
        let Some(Value::Array(arr)) = self.doc.get_mut(id.array()) else {
            return None;
        };
        let i = arr.iter().position(|e| id.matches(e))?;
        let gone = arr.remove(i);
        arr.retain(|e| !id.matches(e));
        if arr.is_empty() {
            self.doc.remove(id.array());
        }
        Some(gone)
    }

    /// How many entries of `id` the document holds (libxl writes one at most).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn count(&self, id: &Ident) -> usize {
        self.doc
            .get(id.array())
            .and_then(Value::as_array)
            .map_or(0, |a| a.iter().filter(|e| id.matches(e)).count())
    }

    /// Put back what [`set`](Self::set) replaced: `previous`, or nothing.
    pub(crate) fn restore(&mut self, id: &Ident, previous: Option<Value>) {
        match previous {
            Some(p) => {
                self.set(id, p);
            }
            None => {
                self.remove(id);
            }
        }
    }
}

/// libxl writes plain integers only; a number serde_json would keep as a float could not be
/// written back exactly, so such a document is refused rather than changed.
fn check_integers(v: &Value) -> Result<(), String> {
    match v {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Err(format!(
            "it holds the number {n}, which libxl never writes (only integers)"
        )),
        Value::Array(a) => a.iter().try_for_each(check_integers),
        Value::Object(o) => o.values().try_for_each(check_integers),
        _ => Ok(()),
    }
}

fn obj(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// What a disk's entry is made of (from its [`crate::vbd::DiskSpec`]).
pub(crate) struct DiskEntry<'a> {
    pub pdev_path: &'a str,
    pub vdev: &'a str,
    pub readwrite: bool,
    /// The backend as given.
    pub backend: Option<&'a str>,
}

/// What a NIC's entry is made of (from its [`crate::vif::NicSpec`]): the fields as given.
pub(crate) struct NicEntry<'a> {
    pub mac: &'a str,
    pub ip: Option<&'a str>,
    pub bridge: Option<&'a str>,
    pub script: Option<&'a str>,
    pub backend: Option<&'a str>,
}

/// A disk's entry exactly as `xl block-attach 'format=raw, vdev=DEV, access=MODE, target=PATH'`
/// stores it: what xl parsed, before libxl's defaults (`pdev_path`, `vdev`, `format`,
/// `readwrite` only when read-write, `backend_domname` only when a backend was named).
pub(crate) fn disk_entry(spec: &DiskEntry) -> Value {
    let mut e = Vec::new();
    if let Some(b) = spec.backend {
        e.push(("backend_domname", Value::from(b)));
    }
    e.push(("pdev_path", Value::from(spec.pdev_path)));
    e.push(("vdev", Value::from(spec.vdev)));
    e.push(("format", Value::from("raw")));
    if spec.readwrite {
        e.push(("readwrite", Value::from(1)));
    }
    obj(e)
}

/// A NIC's entry exactly as `xl network-attach` stores it: what xl parsed plus the three fields
/// libxl copies back (`devid`, `mac`, `nictype`); `bridge`, `script` and `ip` only when given.
pub(crate) fn nic_entry(devid: u32, spec: &NicEntry) -> Value {
    let mut e = Vec::new();
    if let Some(b) = spec.backend {
        e.push(("backend_domname", Value::from(b)));
    }
    e.push(("devid", Value::from(devid)));
    e.push(("mac", Value::from(spec.mac)));
    if let Some(ip) = spec.ip {
        e.push(("ip", Value::from(ip)));
    }
    if let Some(b) = spec.bridge {
        e.push(("bridge", Value::from(b)));
    }
    if let Some(s) = spec.script {
        e.push(("script", Value::from(s)));
    }
    e.push(("nictype", Value::from("vif")));
    obj(e)
}

// ---- The files, on the connection's host ----------------------------------------------------

fn io_err(what: &'static str, path: &str, e: impl std::fmt::Display) -> Error {
    config_error(LibxlConfigError::Io {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A [`LibxlConfigError`] as the core error (its source).
pub(crate) fn config_error(e: LibxlConfigError) -> Error {
    Error::backend_with(
        crate::NAME,
        "libxl's stored configuration of the domain cannot be used, so nothing was changed",
        e,
    )
}

fn lock_timeout(path: &str, host: &str, after: Duration) -> Error {
    Error::Timeout {
        operation: format!(
            "taking libxl's userdata lock {path} on {host} (another toolstack process, xl or libxl, holds it; `fuser {path}` shows which)"
        ),
        after,
    }
}

/// The stored configurations of libxl on the connection's host ([`Dom0`]): the documents and
/// their userdata locks, each primitive one shell script run on the host (one agent round trip
/// on a remote host).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Userdata<'a> {
    host: &'a Host,
    lock: &'a HostLock,
}

impl<'a> Userdata<'a> {
    /// The stored configurations on `dom0`'s host.
    pub(crate) fn of(dom0: &'a Dom0) -> Self {
        Userdata {
            host: dom0.host(),
            lock: dom0.userdata_lock(),
        }
    }

    /// The host, for messages.
    pub(crate) fn host_name(&self) -> String {
        self.host.name()
    }

    /// Take libxl's userdata lock of `files` (waiting at most `timeout`; libxl's protocol,
    /// see [`HostLock`]), then read the document: `None` when the file does not exist. One
    /// round trip on a remote host. Released (as libxl releases it: the file removed first,
    /// then closed) when the lock is dropped.
    pub(crate) async fn lock_read(
        &self,
        files: &Files,
        timeout: Duration,
    ) -> Result<(HeldLock, Option<Vec<u8>>)> {
        let host = self.host.name();
        match self
            .lock
            .acquire_then_read(&files.lock, timeout, &files.data)
            .await
        {
            Ok((lock, Ok(data))) => Ok((lock, data)),
            Ok((_, Err(e))) => Err(io_err("cannot read", &files.data, e)),
            Err(LockError::Busy) => Err(lock_timeout(&files.lock, &host, timeout)),
            Err(LockError::Turns(after)) => Err(Error::Timeout {
                operation: format!(
                    "waiting for this connection's other users of libxl's userdata lock {}",
                    files.lock
                ),
                after,
            }),
            Err(LockError::Failed(why)) => Err(io_err(
                "cannot take libxl's userdata lock",
                &files.lock,
                why,
            )),
            Err(LockError::Host(e)) => Err(e),
        }
    }

    /// Read the document without the lock (libxl replaces it by rename, so a read sees a
    /// whole one): `None` when it does not exist.
    pub(crate) async fn read(&self, files: &Files) -> Result<Option<Vec<u8>>> {
        self.host
            .read_file(&files.data, REMOTE_STEP)
            .await?
            .map_err(|e| io_err("cannot read", &files.data, e))
    }

    /// Write the document as libxl does: to the temporary file (mode 0600), then renamed
    /// over the document ([`Host::replace_file`]: in this process when the host is this
    /// machine, where no shell and no `mv` is started; design 0008, "Local Domain-0: no
    /// processes"). The caller holds the lock.
    pub(crate) async fn write(&self, files: &Files, bytes: &[u8]) -> Result<()> {
        self.host
            .replace_file(&files.temp, &files.data, bytes, REMOTE_STEP)
            .await?
            .map_err(|e| io_err("cannot write", &files.data, e))
    }
}

/// Parse a document read from `files`: missing and malformed are typed errors.
pub(crate) fn parse_file(files: &Files, data: Option<Vec<u8>>) -> Result<Config> {
    let Some(data) = data else {
        return Err(config_error(LibxlConfigError::Missing {
            path: files.data.clone(),
        }));
    };
    Config::parse(&data).map_err(|reason| {
        config_error(LibxlConfigError::Malformed {
            path: files.data.clone(),
            reason,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vbd::DiskSpec;
    use crate::vif::NicSpec;
    use serde_json::json;
    use vdev_core::Attributes;
    use vdev_remote::Host;

    fn dom0_of(host: Host) -> Dom0 {
        let primitives = crate::hotplug_local::primitives_for(&host);
        Dom0::new(host, primitives)
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    /// As observed in the lab (docs/research/xen-libxl-userdata.md §1.2), condensed.
    const STORED: &str = r#"{
    "c_info": { "type": "pv", "name": "domu1", "domid": 4294967295,
                "uuid": "376065e8-ea78-11f1-ba62-525400123456", "run_hotplug_scripts": "True" },
    "b_info": { "max_vcpus": 1, "avail_vcpus": [0], "max_memkb": 131072, "target_memkb": 131072,
                "sched_params": {}, "claim_mode": "True", "type.pv": {},
                "arch_x86": { "msr_relaxed": "False" } },
    "on_reboot": "restart", "on_crash": "preserve", "on_soft_reset": "soft_reset"
}
"#;

    fn stored() -> Vec<u8> {
        let mut b = STORED.as_bytes().to_vec();
        b.push(0);
        b
    }

    #[test]
    fn file_names_are_libxls() {
        let f = Files::new(3, "376065e8-ea78-11f1-ba62-525400123456");
        assert_eq!(
            f.data,
            "/var/lib/xen/userdata-d.3.376065e8-ea78-11f1-ba62-525400123456.libxl-json"
        );
        assert_eq!(
            f.temp,
            "/var/lib/xen/userdata-n.3.376065e8-ea78-11f1-ba62-525400123456.libxl-json"
        );
        assert_eq!(
            f.lock,
            "/var/lib/xen/userdata-l.3.376065e8-ea78-11f1-ba62-525400123456.domain-userdata-lock"
        );
        assert_eq!(
            uuid_from_vm("/vm/376065e8-ea78-11f1-ba62-525400123456").as_deref(),
            Some("376065e8-ea78-11f1-ba62-525400123456")
        );
        for bad in [
            "/vm/376065E8-ea78-11f1-ba62-525400123456",
            "/vm/376065e8-ea78-11f1-ba62-52540012345",
            "/vm/../../etc/passwd",
            "376065e8-ea78-11f1-ba62-525400123456",
            "/vm/376065e8ea7811f1ba62525400123456",
        ] {
            assert_eq!(uuid_from_vm(bad), None, "{bad}");
        }
    }

    #[test]
    fn entries_are_what_xl_stores() {
        let d = DiskSpec::parse(&attrs(&[
            ("uname", "file:/root/img"),
            ("dev", "xvdc"),
            ("mode", "w"),
        ]))
        .unwrap();
        assert_eq!(
            disk_entry(&d.libxl_entry()),
            json!({"pdev_path": "/root/img", "vdev": "xvdc", "format": "raw", "readwrite": 1})
        );
        let d = DiskSpec::parse(&attrs(&[
            ("target", "/dev/loop2"),
            ("vdev", "xvde"),
            ("access", "ro"),
        ]))
        .unwrap();
        assert_eq!(
            disk_entry(&d.libxl_entry()),
            json!({"pdev_path": "/dev/loop2", "vdev": "xvde", "format": "raw"})
        );
        let n = NicSpec::parse(&attrs(&[
            ("bridge", "xenbr0"),
            ("mac", "00:16:3E:12:34:56"),
        ]))
        .unwrap();
        assert_eq!(
            nic_entry(0, &n.libxl_entry()),
            json!({"devid": 0, "mac": "00:16:3e:12:34:56", "bridge": "xenbr0", "nictype": "vif"})
        );
        let n = NicSpec::parse(&attrs(&[("script", "vif-route"), ("ip", "10.0.0.2")])).unwrap();
        let e = nic_entry(2, &n.libxl_entry());
        assert_eq!(e["script"], "vif-route");
        assert_eq!(e["ip"], "10.0.0.2");
        assert!(
            e.get("bridge").is_none(),
            "the default bridge is not stored"
        );
        assert_eq!(e["devid"], 2);
    }

    /// Found by the `libxl_config` fuzz target: a document someone else left with two NICs of
    /// devid 0. Detach must leave none (libxl would rebuild the device from the other on
    /// restore), and attach must leave one.
    #[test]
    fn duplicate_entries_of_one_identity_all_go() {
        let mut text = STORED.trim_end().trim_end_matches('}').to_owned();
        text.push_str(
            r#", "nics": [ { "devid": 0, "mac": "00:16:3e:12:34:56", "nictype": "vif" },
                          { "devid": 1, "mac": "00:16:3e:00:00:01", "nictype": "vif" },
                          { "devid": 0, "mac": "00:16:3e:00:00:03", "nictype": "vif" } ] }"#,
        );
        let orig = Config::parse(text.as_bytes()).unwrap();
        let nic0 = Ident::Nic(0);
        assert_eq!(orig.count(&nic0), 2);

        let mut c = orig.clone();
        let first = c.remove(&nic0).expect("an entry removed");
        assert_eq!(first["mac"], "00:16:3e:12:34:56");
        assert_eq!(c.count(&nic0), 0, "no duplicate left for libxl to rebuild");
        assert_eq!(c.count(&Ident::Nic(1)), 1, "other devices stay");

        let mut c = orig.clone();
        let e = json!({"devid": 0, "mac": "00:16:3e:00:00:09", "nictype": "vif"});
        assert_eq!(c.set(&nic0, e.clone()).unwrap()["mac"], "00:16:3e:12:34:56");
        assert_eq!(c.count(&nic0), 1);
        assert_eq!(c.doc["nics"][0], e, "replaced in its place");
        assert_eq!(c.doc["nics"][1]["devid"], 1);
    }

    #[test]
    fn set_replaces_in_place_or_appends_and_remove_drops_empty_arrays() {
        let mut c = Config::parse(&stored()).unwrap();
        let orig = c.clone();
        let xvdc = Ident::Disk("xvdc".into());
        let e1 = json!({"pdev_path": "/a", "vdev": "xvdc", "format": "raw"});
        assert_eq!(c.set(&xvdc, e1.clone()), None);
        let other = Ident::Disk("51744".into()); // the same device number, another identity
        c.set(
            &other,
            json!({"pdev_path": "/b", "vdev": "51744", "format": "raw"}),
        );
        let e2 = json!({"pdev_path": "/c", "vdev": "xvdc", "format": "raw", "readwrite": 1});
        assert_eq!(c.set(&xvdc, e2.clone()), Some(e1.clone()));
        assert_eq!(c.doc["disks"][0], e2, "replaced in its place");
        assert_eq!(c.get(&xvdc), Some(&e2));
        c.restore(&xvdc, Some(e1.clone()));
        assert_eq!(c.get(&xvdc), Some(&e1));
        c.remove(&other);
        c.restore(&xvdc, None);
        assert_eq!(c, orig, "no empty disks array is left");
        let nic = Ident::Nic(0);
        c.set(
            &nic,
            json!({"devid": 0, "mac": "00:16:3e:00:00:01", "nictype": "vif"}),
        );
        assert!(c.get(&Ident::Nic(1)).is_none());
        assert!(c.get(&nic).is_some());
        assert!(c.remove(&nic).is_some());
        assert_eq!(c, orig);
    }

    #[test]
    fn written_documents_end_with_a_nul_and_read_back_the_same() {
        let mut c = Config::parse(&stored()).unwrap();
        c.set(
            &Ident::Nic(3),
            json!({"devid": 3, "mac": "00:16:3e:00:00:03", "nictype": "vif"}),
        );
        let b = c.to_bytes();
        assert!(b.ends_with(b"}\n\0"));
        assert_eq!(b.iter().filter(|x| **x == 0).count(), 1);
        assert!(String::from_utf8_lossy(&b).contains("\n    \"b_info\": {"));
        let back = Config::parse(&b).unwrap();
        assert_eq!(back, c);
        // Big integers stay exact.
        assert!(String::from_utf8_lossy(&b).contains("4294967295"));
        // Without the NUL (libxl itself reads it by luck), and with text after the NUL.
        assert_eq!(
            Config::parse(STORED.as_bytes()).unwrap(),
            Config::parse(&stored()).unwrap()
        );
        let mut junk = stored();
        junk.extend_from_slice(b"garbage");
        assert!(Config::parse(&junk).is_ok());
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        for (bad, says) in [
            (&b""[..], "empty"),
            (b"\0", "empty"),
            (b"{\"c_info\": {}, ", "not JSON"),
            (b"[1, 2]", "not a JSON object"),
            (b"{\"c_info\": {}, \"disks\": {}}", "\"disks\""),
            (b"{\"c_info\": {}, \"nics\": [1]}", "\"nics\""),
            (b"{\"b_info\": {}}", "c_info"),
            (b"{\"c_info\": {\"x\": 1.5}}", "1.5"),
        ] {
            let e = Config::parse(bad).unwrap_err();
            assert!(e.contains(says), "{:?}: {e}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn locally_the_lock_excludes_times_out_and_goes_with_its_file() {
        lock_read_write(&dom0_of(Host::Local), &dom0_of(Host::Local), "local").await;
    }

    /// The same primitives as shell in the ssh agent, against a real sshd on this machine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn over_ssh_the_lock_excludes_times_out_and_goes_with_its_file() {
        let Some(sshd) = vdev_conformance::sshd::start() else {
            return;
        };
        let uri = vdev_core::ConnectUri::parse(&format!(
            "xen+ssh://{}/?{}",
            sshd.authority(),
            sshd.query()
        ))
        .unwrap();
        let host = Host::from_uri(&mut uri.clone(), Duration::from_secs(30)).unwrap();
        let other = Host::from_uri(&mut uri.clone(), Duration::from_secs(30)).unwrap();
        lock_read_write(&dom0_of(host.clone()), &dom0_of(other.clone()), "ssh").await;
        host.disconnect().await;
        other.disconnect().await;
    }

    /// `hp` and `other` are two connections to the same host: while one holds the lock, the
    /// other's wait ends in a timeout. (A second user on the same connection queues behind the
    /// first instead: see [`HostLock`].)
    async fn lock_read_write(hp: &Dom0, other: &Dom0, tag: &str) {
        let (hp, other) = (Userdata::of(hp), Userdata::of(other));
        let dir = std::env::temp_dir().join(format!("vdev-libxl-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = Files::under(
            dir.to_str().unwrap(),
            5,
            "376065e8-ea78-11f1-ba62-525400123456",
        );
        let (lock, data) = hp.lock_read(&files, Duration::from_secs(5)).await.unwrap();
        assert_eq!(data, None, "no document yet");
        let e = other
            .lock_read(&files, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        hp.write(&files, &stored()).await.unwrap();
        assert!(!std::path::Path::new(&files.temp).exists(), "renamed");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(lock);
        // A remote release is sent in the background.
        for _ in 0..500 {
            if !std::path::Path::new(&files.lock).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !std::path::Path::new(&files.lock).exists(),
            "released by removing it"
        );
        // A document with quotes, a backslash and non-ASCII text goes through the shell intact.
        let mut c = Config::parse(&stored()).unwrap();
        c.set(
            &Ident::Disk("xvdc".into()),
            serde_json::json!({"pdev_path": "/x/it's \\ \"q\" %s é", "vdev": "xvdc"}),
        );
        let (lock, _) = hp.lock_read(&files, Duration::from_secs(5)).await.unwrap();
        hp.write(&files, &c.to_bytes()).await.unwrap();
        assert_eq!(std::fs::read(&files.data).unwrap(), c.to_bytes());
        hp.write(&files, &stored()).await.unwrap();
        drop(lock);
        for _ in 0..500 {
            if !std::path::Path::new(&files.lock).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_lock, data) = hp.lock_read(&files, Duration::from_secs(5)).await.unwrap();
        assert_eq!(data.as_deref(), Some(&stored()[..]));
        assert_eq!(hp.read(&files).await.unwrap(), data);
        let e = parse_file(&files, None).unwrap_err();
        let src = std::error::Error::source(&e).unwrap().to_string();
        assert!(src.contains("does not exist"), "{src}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
