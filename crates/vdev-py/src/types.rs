//! The values vdev hands to Python: domains, devices, schemas, events, capabilities, drivers.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A dict of attributes, built fresh (a copy).
fn attrs_dict<'py>(py: Python<'py>, a: &vdev::Attributes) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in a.iter() {
        d.set_item(k, v)?;
    }
    Ok(d)
}

/// A virtual machine: `id` (int, or None where the hypervisor gives none), `name` (str), `uuid`
/// (str or None) and `state` (str: `"running"`, `"paused"`, `"shut-off"`, ..., `"unknown"`).
/// Pass it wherever a domain is taken.
#[pyclass(frozen, eq, hash, module = "vdev")]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Domain(pub vdev::Domain);

#[pymethods]
impl Domain {
    /// The numeric id, stable while the connection is open; None where the hypervisor gives
    /// none (a libvirt domain that is shut off).
    #[getter]
    fn id(&self) -> Option<u32> {
        self.0.id
    }
    /// The name.
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }
    /// The UUID, where the hypervisor has one.
    #[getter]
    fn uuid(&self) -> Option<&str> {
        self.0.uuid.as_deref()
    }
    /// Whether it runs: `"running"`, `"paused"`, `"shut-off"`, ..., or `"unknown"`.
    #[getter]
    fn state(&self) -> &'static str {
        self.0.state.as_str()
    }
    fn __repr__(&self) -> String {
        match self.0.id {
            Some(id) => format!("Domain(id={id}, name={:?})", self.0.name),
            None => format!("Domain(id=None, name={:?})", self.0.name),
        }
    }
    fn __str__(&self) -> String {
        self.0.name.clone()
    }
}

impl From<vdev::Domain> for Domain {
    fn from(d: vdev::Domain) -> Self {
        Domain(d)
    }
}

impl From<&Domain> for vdev::Domain {
    fn from(d: &Domain) -> Self {
        d.0.clone()
    }
}

/// One device of a domain, as listed: `type`, `ref`, `state` (str) and `attrs` (a new dict of
/// str to str on every access).
#[pyclass(frozen, module = "vdev")]
pub struct Device(pub vdev::Device);

#[pymethods]
impl Device {
    /// The device type (`"disk"`, `"network"`, ...).
    #[getter(r#type)]
    fn device_type(&self) -> &str {
        self.0.device_type.as_str()
    }
    /// The reference, unique within the domain and type (`"51728"`).
    #[getter(r#ref)]
    fn reference(&self) -> &str {
        self.0.reference.as_str()
    }
    /// The state: `"connected"`, `"removal-pending"`, ...
    #[getter]
    fn state(&self) -> &str {
        self.0.state.as_str()
    }
    /// The attributes as the hypervisor reports them (a copy).
    #[getter]
    fn attrs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        attrs_dict(py, &self.0.attributes)
    }
    fn __repr__(&self) -> String {
        format!(
            "Device(type={:?}, ref={:?}, state={:?})",
            self.0.device_type.as_str(),
            self.0.reference.as_str(),
            self.0.state.as_str()
        )
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Device>().is_ok_and(|o| o.get().0 == self.0)
    }
}

/// One attribute a device type accepts.
#[pyclass(frozen, get_all, module = "vdev")]
pub struct AttributeSpec {
    /// The name.
    pub name: String,
    /// Other names accepted for the same attribute.
    pub aliases: Vec<String>,
    /// Whether attach needs it.
    pub required: bool,
    /// What it means and which values it takes.
    pub description: String,
    /// An example value.
    pub example: String,
    /// Whether `update` may change it on an existing device.
    pub updatable: bool,
}

#[pymethods]
impl AttributeSpec {
    fn __repr__(&self) -> String {
        format!(
            "AttributeSpec(name={:?}, required={}, updatable={})",
            self.name,
            if self.required { "True" } else { "False" },
            if self.updatable { "True" } else { "False" }
        )
    }
}

/// What a device type accepts: the answer to `vdev schema TYPE`.
#[pyclass(frozen, module = "vdev")]
pub struct Schema(pub vdev::DeviceTypeSchema);

#[pymethods]
impl Schema {
    /// The device type.
    #[getter(r#type)]
    fn device_type(&self) -> &str {
        self.0.device_type.as_str()
    }
    /// What such a device is.
    #[getter]
    fn description(&self) -> &str {
        &self.0.description
    }
    /// The named attributes it accepts.
    #[getter]
    fn attributes(&self) -> Vec<AttributeSpec> {
        self.0
            .attributes
            .iter()
            .map(|a| AttributeSpec {
                name: a.name.clone(),
                aliases: a.aliases.clone(),
                required: a.required,
                description: a.description.clone(),
                example: a.example.clone(),
                updatable: a.updatable,
            })
            .collect()
    }
    /// Name prefixes under which any attribute is passed to the hypervisor untouched.
    #[getter]
    fn passthrough_prefixes(&self) -> Vec<String> {
        self.0.passthrough_prefixes.clone()
    }
    fn __repr__(&self) -> String {
        format!("Schema(type={:?})", self.0.device_type.as_str())
    }
}

/// What a driver supports.
#[pyclass(frozen, get_all, module = "vdev")]
pub struct Capabilities {
    /// Listing domains.
    pub list_domains: bool,
    /// Listing devices.
    pub list_devices: bool,
    /// Attaching.
    pub attach: bool,
    /// Detaching.
    pub detach: bool,
    /// Detaching with `force=True`.
    pub force_detach: bool,
    /// Device events.
    pub events: bool,
    /// Updating attributes in place.
    pub update: bool,
}

impl From<vdev::Capabilities> for Capabilities {
    fn from(c: vdev::Capabilities) -> Self {
        Capabilities {
            list_domains: c.list_domains,
            list_devices: c.list_devices,
            attach: c.attach,
            detach: c.detach,
            force_detach: c.force_detach,
            events: c.events,
            update: c.update,
        }
    }
}

#[pymethods]
impl Capabilities {
    fn __repr__(&self) -> String {
        let b = |x: bool| if x { "True" } else { "False" };
        format!(
            "Capabilities(list_domains={}, list_devices={}, attach={}, detach={}, force_detach={}, events={}, update={})",
            b(self.list_domains),
            b(self.list_devices),
            b(self.attach),
            b(self.detach),
            b(self.force_detach),
            b(self.events),
            b(self.update)
        )
    }
}

/// A driver in this package: `name`, the URI `schemes` it handles, and a `description`.
#[pyclass(frozen, get_all, module = "vdev")]
pub struct DriverInfo {
    /// The driver's name.
    pub name: &'static str,
    /// The URI schemes it handles.
    pub schemes: Vec<&'static str>,
    /// What it manages.
    pub description: &'static str,
}

#[pymethods]
impl DriverInfo {
    fn __repr__(&self) -> String {
        format!(
            "DriverInfo(name={:?}, schemes={:?})",
            self.name, self.schemes
        )
    }
}

/// What happened to a device: `kind` is `"added"`, `"state-changed"`, `"updated"` or
/// `"removed"`; `state` is set for `"state-changed"`, `attrs` (what changed) for `"updated"`.
#[pyclass(frozen, module = "vdev")]
pub struct Event(pub vdev::DeviceEvent);

#[pymethods]
impl Event {
    /// `"added"`, `"state-changed"`, `"updated"` or `"removed"`.
    #[getter]
    fn kind(&self) -> &'static str {
        match &self.0 {
            vdev::DeviceEvent::Added { .. } => "added",
            vdev::DeviceEvent::StateChanged { .. } => "state-changed",
            vdev::DeviceEvent::Updated { .. } => "updated",
            vdev::DeviceEvent::Removed { .. } => "removed",
            _ => "unknown",
        }
    }
    /// The domain.
    #[getter]
    fn domain(&self) -> Domain {
        self.0.domain().clone().into()
    }
    /// The device type.
    #[getter(r#type)]
    fn device_type(&self) -> &str {
        match &self.0 {
            vdev::DeviceEvent::Added { device_type, .. }
            | vdev::DeviceEvent::StateChanged { device_type, .. }
            | vdev::DeviceEvent::Updated { device_type, .. }
            | vdev::DeviceEvent::Removed { device_type, .. } => device_type.as_str(),
            _ => "",
        }
    }
    /// The device's reference.
    #[getter(r#ref)]
    fn reference(&self) -> &str {
        self.0.reference().as_str()
    }
    /// The new state (`"state-changed"` only, else None).
    #[getter]
    fn state(&self) -> Option<&str> {
        match &self.0 {
            vdev::DeviceEvent::StateChanged { state, .. } => Some(state.as_str()),
            _ => None,
        }
    }
    /// The changed attributes with their new values (`"updated"` only, else None).
    #[getter]
    fn attrs<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        match &self.0 {
            vdev::DeviceEvent::Updated { attributes, .. } => attrs_dict(py, attributes).map(Some),
            _ => Ok(None),
        }
    }
    fn __repr__(&self) -> String {
        format!(
            "Event(kind={:?}, domain={:?}, type={:?}, ref={:?})",
            self.kind(),
            self.0.domain().name,
            self.device_type(),
            self.reference()
        )
    }
}

/// One change of a plan (`conn.plan(doc)`), as `vdev plan` prints it: `op` (`"add"`,
/// `"remove"`, `"update"` or `"replace"`), `domain` (as the document names it), `type`, `ref`
/// (None for an add whose reference the driver chooses), `attrs` (a new dict on every access:
/// an add's attributes, an update's new values, a replacement's desired values that differ, a
/// removal's listed attributes), `entry` (the index of the document entry, None for the removal
/// of a device of an `exclusive` type that no entry names) and `reason` (why a replacement is
/// needed, else None). `str(change)` is the line `vdev plan` prints.
#[pyclass(frozen, module = "vdev")]
pub struct Change(pub vdev::Change);

#[pymethods]
impl Change {
    /// `"add"`, `"remove"`, `"update"` or `"replace"` (reported, never made by apply).
    #[getter]
    fn op(&self) -> &'static str {
        self.0.op.as_str()
    }
    /// The domain, as the document names it.
    #[getter]
    fn domain(&self) -> &str {
        &self.0.domain
    }
    /// The device type.
    #[getter(r#type)]
    fn device_type(&self) -> &str {
        self.0.device_type.as_str()
    }
    /// The device's reference; None for an add not made yet whose reference the driver chooses.
    #[getter(r#ref)]
    fn reference(&self) -> Option<&str> {
        self.0.reference.as_ref().map(|r| r.as_str())
    }
    /// The attributes of the change (a copy).
    #[getter]
    fn attrs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        attrs_dict(py, &self.0.attrs)
    }
    /// The index of the document entry it comes from, in its domain's `devices`.
    #[getter]
    fn entry(&self) -> Option<usize> {
        self.0.entry
    }
    /// Why a replacement is needed (`"replace"` only, else None).
    #[getter]
    fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    fn __repr__(&self) -> String {
        format!(
            "Change(op={:?}, domain={:?}, type={:?}, ref={})",
            self.0.op.as_str(),
            self.0.domain,
            self.0.device_type.as_str(),
            match &self.0.reference {
                Some(r) => format!("{:?}", r.as_str()),
                None => "None".into(),
            }
        )
    }
    fn __str__(&self) -> String {
        self.0.to_line()
    }
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Change>().is_ok_and(|o| o.get().0 == self.0)
    }
}

/// The name of an outcome, as `vdev apply --json` writes it.
fn outcome_name(o: &vdev::Outcome) -> &'static str {
    o.as_str()
}

/// One change of an apply and what became of it: `change` (a Change; an add's `ref` is the new
/// device's once made), `outcome` (`"done"`, `"removal-pending"`: asked, the guest has not
/// released the device yet; `"not-made"`: a replacement; `"failed"`; `"not-tried"`: after a
/// failure) and `error` (for `"failed"`, the vdev.Error subclass instance of the failure, else
/// None).
#[pyclass(frozen, module = "vdev")]
pub struct Applied(pub vdev::Applied);

#[pymethods]
impl Applied {
    /// The change.
    #[getter]
    fn change(&self) -> Change {
        Change(self.0.change.clone())
    }
    /// `"done"`, `"removal-pending"`, `"not-made"`, `"failed"` or `"not-tried"`.
    #[getter]
    fn outcome(&self) -> &'static str {
        outcome_name(&self.0.outcome)
    }
    /// The failure (`"failed"` only, else None): an instance of the vdev.Error subclass of its
    /// code, not raised.
    #[getter]
    fn error(&self, py: Python<'_>) -> Option<Py<pyo3::exceptions::PyBaseException>> {
        match &self.0.outcome {
            vdev::Outcome::Failed { code, message } => {
                Some(crate::errors::from_code(code, message.clone()).into_value(py))
            }
            _ => None,
        }
    }
    fn __repr__(&self) -> String {
        format!(
            "Applied({}, outcome={:?})",
            Change(self.0.change.clone()).__repr__(),
            outcome_name(&self.0.outcome)
        )
    }
    fn __str__(&self) -> String {
        format!(
            "{}  {}",
            self.0.change.to_line(),
            outcome_name(&self.0.outcome)
        )
    }
}

/// What `conn.apply(doc)` did: `changes` (a list of Applied, in the order they were made; empty
/// when the domains were already as the document says), `changed` (whether anything was made or
/// asked), `pending` (how many removals the guest has not completed yet) and `error` (the first
/// failure as a vdev.Error instance, not raised, or None; set only on a report returned by
/// `apply(..., check=False)` or carried by the exception `apply` raised, as its `report`).
#[pyclass(frozen, module = "vdev")]
pub struct ApplyReport {
    changes: Vec<vdev::Applied>,
    /// The first failure's code and message.
    error: Option<(&'static str, String)>,
}

impl ApplyReport {
    /// The report, and the first failure taken out of it.
    pub fn new(mut report: vdev::ApplyReport) -> (Self, Option<vdev::Error>) {
        let error = report.error.take();
        let this = ApplyReport {
            changes: report.changes,
            error: error
                .as_ref()
                .map(|e| (e.code(), crate::errors::message(e))),
        };
        (this, error)
    }
}

#[pymethods]
impl ApplyReport {
    /// Every change of the plan with its outcome.
    #[getter]
    fn changes(&self) -> Vec<Applied> {
        self.changes.iter().cloned().map(Applied).collect()
    }
    /// Whether something was made or asked (a removal pending counts).
    #[getter]
    fn changed(&self) -> bool {
        self.changes
            .iter()
            .any(|a| matches!(a.outcome, vdev::Outcome::Done | vdev::Outcome::Pending))
    }
    /// How many removals were asked but are not complete yet (the devices stay listed
    /// removal-pending until the guest lets go; apply again to wait again).
    #[getter]
    fn pending(&self) -> usize {
        self.changes
            .iter()
            .filter(|a| matches!(a.outcome, vdev::Outcome::Pending))
            .count()
    }
    /// The first failure, not raised (a vdev.Error subclass instance), or None.
    #[getter]
    fn error(&self, py: Python<'_>) -> Option<Py<pyo3::exceptions::PyBaseException>> {
        self.error
            .as_ref()
            .map(|(code, msg)| crate::errors::from_code(code, msg.clone()).into_value(py))
    }
    fn __len__(&self) -> usize {
        self.changes.len()
    }
    fn __repr__(&self) -> String {
        format!(
            "ApplyReport(changes={}, changed={}, pending={}, failed={})",
            self.changes.len(),
            if self.changed() { "True" } else { "False" },
            self.pending(),
            if self.error.is_some() {
                "True"
            } else {
                "False"
            }
        )
    }
}
