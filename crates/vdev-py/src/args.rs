//! Arguments from Python: domains, device types, references, attributes, durations. Wrong types
//! are TypeError and out-of-range numbers ValueError, naming the argument; values of the right
//! type go to vdev's own checks (and their vdev errors).

use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString};

use crate::errors::to_py;
use crate::types::Domain;

/// A domain as given: a name or id to look up, or a `Domain` already known.
pub enum DomainArg {
    /// A name or an id (as text), resolved by `Connection::domain`, as the CLI does.
    Key(String),
    /// A `Domain` object.
    Known(vdev::Domain),
}

impl DomainArg {
    pub fn extract(arg: &str, v: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(d) = v.cast::<Domain>() {
            return Ok(DomainArg::Known(d.get().into()));
        }
        if let Ok(s) = v.cast::<PyString>() {
            return Ok(DomainArg::Key(s.to_str()?.to_owned()));
        }
        if v.is_instance_of::<PyInt>() && !v.is_instance_of::<PyBool>() {
            return match v.extract::<u32>() {
                Ok(id) => Ok(DomainArg::Key(id.to_string())),
                Err(_) => Err(PyValueError::new_err(format!(
                    "{arg}: a domain id is 0 to {}, not {v}",
                    u32::MAX
                ))),
            };
        }
        Err(PyTypeError::new_err(format!(
            "{arg}: expected a domain name (str), id (int) or vdev.Domain, not {}",
            type_name(v)
        )))
    }

    /// The domain for a device operation: a key is looked up without asking the state
    /// (`Connection::resolve_domain`).
    pub async fn resolve(self, conn: &vdev::Connection) -> vdev::Result<vdev::Domain> {
        match self {
            DomainArg::Key(k) => conn.resolve_domain(&k).await,
            DomainArg::Known(d) => Ok(d),
        }
    }

    /// The domain to give the caller: a key is looked up with its state
    /// (`Connection::domain`).
    pub async fn lookup(self, conn: &vdev::Connection) -> vdev::Result<vdev::Domain> {
        match self {
            DomainArg::Key(k) => conn.domain(&k).await,
            DomainArg::Known(d) => Ok(d),
        }
    }
}

pub fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn string<'a>(arg: &str, v: &'a Bound<'_, PyAny>) -> PyResult<&'a Bound<'a, PyString>> {
    v.cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{arg}: expected a str, not {}", type_name(v))))
}

/// A device type name (`"disk"`); a malformed one is vdev's InvalidAttribute.
pub fn device_type(v: &Bound<'_, PyAny>) -> PyResult<vdev::DeviceType> {
    let s = string("type", v)?.to_str()?;
    match s {
        "disk" => Ok(vdev::DeviceType::DISK),
        "network" => Ok(vdev::DeviceType::NETWORK),
        _ => vdev::DeviceType::new(s.to_owned()).map_err(to_py),
    }
}

/// An optional device type.
pub fn opt_device_type(v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<vdev::DeviceType>> {
    match v {
        Some(v) if !v.is_none() => device_type(v).map(Some),
        _ => Ok(None),
    }
}

/// A device reference (`"51728"`); a malformed one is vdev's InvalidAttribute.
pub fn reference(v: &Bound<'_, PyAny>) -> PyResult<vdev::DeviceRef> {
    vdev::DeviceRef::new(string("ref", v)?.to_str()?).map_err(to_py)
}

/// Attributes from a mapping and keyword arguments, names and values str.
pub fn attributes(
    attrs: Option<&Bound<'_, PyAny>>,
    kw: Option<&Bound<'_, PyDict>>,
) -> PyResult<vdev::Attributes> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut add = |k: Bound<'_, PyAny>, v: Bound<'_, PyAny>| -> PyResult<()> {
        let k = k.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "attrs: attribute names must be str, not {}",
                type_name(&k)
            ))
        })?;
        let name = k.to_str()?;
        let v = v.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "attrs: the value of '{name}' must be a str, not {}",
                type_name(&v)
            ))
        })?;
        if pairs.iter().any(|(n, _)| n == name) {
            return Err(PyTypeError::new_err(format!(
                "attrs: attribute '{name}' given twice (in the dict and as a keyword argument)"
            )));
        }
        pairs.push((name.to_owned(), v.to_str()?.to_owned()));
        Ok(())
    };
    if let Some(a) = attrs.filter(|a| !a.is_none()) {
        if let Ok(d) = a.cast::<PyDict>() {
            for (k, v) in d.iter() {
                add(k, v)?;
            }
        } else if let Ok(m) = a.cast::<pyo3::types::PyMapping>() {
            for item in m.items()?.iter() {
                let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
                add(k, v)?;
            }
        } else {
            return Err(PyTypeError::new_err(format!(
                "attrs: expected a dict of str to str, not {}",
                type_name(a)
            )));
        }
    }
    if let Some(kw) = kw {
        for (k, v) in kw.iter() {
            add(k, v)?;
        }
    }
    vdev::Attributes::from_pairs(pairs).map_err(to_py)
}

/// Seconds (int or float, finite, 0 or more) as a duration.
pub fn seconds(arg: &str, v: &Bound<'_, PyAny>) -> PyResult<Duration> {
    if v.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{arg}: expected seconds (int or float), not bool"
        )));
    }
    let s: f64 = v.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{arg}: expected seconds (int or float), not {}",
            type_name(v)
        ))
    })?;
    Duration::try_from_secs_f64(s)
        .map_err(|_| PyValueError::new_err(format!("{arg}: {s} is not a number of seconds >= 0")))
}

/// A desired-state document as given: its structure (a dict) or a file, and where errors should
/// say it came from.
pub struct DocumentArg {
    /// The document.
    pub document: vdev::Document,
    /// The file it was read from (named in front of the place of its errors), if any.
    file: Option<String>,
}

impl DocumentArg {
    /// `doc`: a dict (the document's structure, as `json.load` or `yaml.safe_load` gives it) or
    /// the path (str or os.PathLike) of a JSON or YAML file. A malformed document is vdev's
    /// InvalidDocument naming the place (and the file).
    pub fn extract(v: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = v.py();
        if v.is_instance_of::<PyDict>() {
            let text: String = py
                .import("json")?
                .call_method1("dumps", (v,))
                .map_err(|e| {
                    PyTypeError::new_err(format!(
                        "doc: the document holds a value that is not JSON ({})",
                        e.value(py)
                    ))
                })?
                .extract()?;
            // The place is a path of keys; a line and column of the text made here would mean
            // nothing to the caller.
            let document = vdev::Document::from_json(&text).map_err(|e| match e {
                vdev::Error::InvalidDocument { mut at, reason } => {
                    if let Some(i) = at.find(" (line ") {
                        at.truncate(i);
                    }
                    to_py(vdev::Error::InvalidDocument { at, reason })
                }
                e => to_py(e),
            })?;
            return Ok(DocumentArg {
                document,
                file: None,
            });
        }
        let is_path = v.is_instance_of::<PyString>() || v.hasattr("__fspath__")?;
        if !is_path {
            return Err(PyTypeError::new_err(format!(
                "doc: expected a document (dict) or the path of a JSON or YAML file (str or os.PathLike), not {}",
                type_name(v)
            )));
        }
        let path = py
            .import("os")?
            .call_method1("fsdecode", (v,))?
            .extract::<String>()?;
        let text = py.detach(|| std::fs::read_to_string(&path)).map_err(|e| {
            to_py(vdev::Error::InvalidDocument {
                at: path.clone(),
                reason: format!("cannot be read: {e}"),
            })
        })?;
        let arg = DocumentArg {
            document: vdev::Document::default(),
            file: Some(path),
        };
        let document = vdev::Document::parse(&text).map_err(|e| to_py(arg.annotate(e)))?;
        Ok(DocumentArg { document, ..arg })
    }

    /// A document error with the file's name in front of its place, as the `vdev` command
    /// writes it; other errors as they are.
    pub fn annotate(&self, e: vdev::Error) -> vdev::Error {
        match (e, &self.file) {
            (vdev::Error::InvalidDocument { at, reason }, Some(file)) => {
                vdev::Error::InvalidDocument {
                    at: format!("{file}: {at}"),
                    reason,
                }
            }
            (e, _) => e,
        }
    }
}

/// A scope (`"live"`, `"persistent"` or `"both"`), or None for the driver's default.
pub fn scope(v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<vdev::Scope>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    let s = string("scope", v)?.to_str()?;
    vdev::Scope::parse(s).map(Some).ok_or_else(|| {
        PyValueError::new_err(format!(
            "scope: expected 'live', 'persistent' or 'both' (or None for the driver's default), not {s:?}"
        ))
    })
}

/// The devices of a batch: a sequence of `(type, attrs)` pairs, `attrs` a dict of str to str.
pub fn new_devices(v: &Bound<'_, PyAny>) -> PyResult<Vec<vdev::NewDevice>> {
    if v.is_instance_of::<PyString>() || v.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(format!(
            "devices: expected a sequence of (type, attrs) pairs, not {}",
            type_name(v)
        )));
    }
    let mut out = Vec::new();
    for (i, item) in v.try_iter()?.enumerate() {
        let item = item?;
        let pair: Option<(Bound<'_, PyAny>, Bound<'_, PyAny>)> =
            if item.is_instance_of::<PyString>() {
                None
            } else {
                item.extract().ok()
            };
        let Some((t, attrs)) = pair else {
            return Err(PyTypeError::new_err(format!(
                "devices[{i}]: expected a (type, attrs) pair, not {}",
                type_name(&item)
            )));
        };
        out.push(vdev::NewDevice {
            device_type: device_type(&t)?,
            attributes: attributes(Some(&attrs), None)?,
        });
    }
    Ok(out)
}
