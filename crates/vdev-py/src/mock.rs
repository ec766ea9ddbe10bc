//! The mock host's control handle, for test suites: faults, latency, pending removals, the call
//! log.

use std::str::FromStr;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;
use vdev::driver_mock::{self as mock, Op, Removal};

use crate::args;
use crate::errors::to_py;
use crate::run::{awaitable, block, blocking};

/// A handle on a mock host (`Connection.control`): inject faults, add latency, hold detaches
/// pending, release them, read the call log. Operations are named as in mock URIs:
/// `list_domains`, `lookup_domain`, `device_types`, `list_devices`, `attach`, `detach`,
/// `events`, `update`.
#[pyclass(frozen, module = "vdev")]
pub struct MockControl {
    inner: mock::MockControl,
    aio: bool,
}

/// One call the mock host received: `op`, `domain`, `type`, `ref` (for attach: the new one) and
/// `error` (None on success, else the error's code).
#[pyclass(frozen, module = "vdev")]
pub struct Call {
    /// The operation (`"attach"`, ...).
    #[pyo3(get)]
    op: &'static str,
    /// The domain's name, if the call was about one.
    #[pyo3(get)]
    domain: Option<String>,
    /// The device type, if any.
    #[pyo3(get, name = "type")]
    device_type: Option<String>,
    /// The device reference, if any.
    #[pyo3(get, name = "ref")]
    reference: Option<String>,
    /// None on success, else the error's code.
    #[pyo3(get)]
    error: Option<&'static str>,
}

#[pymethods]
impl Call {
    fn __repr__(&self) -> String {
        format!(
            "Call(op={:?}, domain={:?}, type={:?}, ref={:?}, error={:?})",
            self.op, self.domain, self.device_type, self.reference, self.error
        )
    }
}

/// A removal knob: `"immediate"`, `"pending"`, `"refuse"` or seconds.
fn removal_of(removal: &Bound<'_, PyAny>) -> PyResult<Removal> {
    if let Ok(s) = removal.cast::<PyString>() {
        match s.to_str()? {
            "immediate" => Ok(Removal::Immediate),
            "pending" => Ok(Removal::Pending),
            "refuse" => Ok(Removal::Refuse),
            other => Err(PyValueError::new_err(format!(
                "removal: '{other}' is not 'immediate', 'pending', 'refuse' or seconds"
            ))),
        }
    } else if removal.extract::<f64>().is_ok() {
        Ok(Removal::After(args::seconds("removal", removal)?))
    } else {
        Err(PyTypeError::new_err(format!(
            "removal: expected 'immediate', 'pending', 'refuse' or seconds, not {}",
            args::type_name(removal)
        )))
    }
}

fn op(v: &str) -> PyResult<Op> {
    Op::from_str(v).map_err(|e| PyValueError::new_err(format!("op: {e}")))
}

#[pymethods]
impl MockControl {
    /// Make the `nth` call of `op` from now (counted from 1) fail with the error of `code`
    /// (one of `vdev.CODES`).
    fn fail_nth(&self, op: &str, nth: u64, code: &str) -> PyResult<()> {
        let op = self::op(op)?;
        if nth == 0 {
            return Err(PyValueError::new_err("nth: calls are counted from 1"));
        }
        if !vdev::Error::CODES.contains(&code) {
            return Err(PyValueError::new_err(format!(
                "code: '{code}' is not an error code; codes: {}",
                vdev::Error::CODES.join(", ")
            )));
        }
        self.inner.fail_nth(op, nth, code);
        Ok(())
    }

    /// Remove every fault not yet triggered.
    fn clear_faults(&self) {
        self.inner.clear_faults()
    }

    /// Add `seconds` of latency to every call from now on.
    fn set_latency(&self, seconds: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner
            .set_latency(args::seconds("seconds", seconds)?.min(Duration::from_secs(3600)));
        Ok(())
    }

    /// How the simulated guest answers detach from now on: `"immediate"`, `"pending"` (never
    /// releases until `release()`), `"refuse"` (detach raises RemovalRefused), or seconds
    /// (releases after that delay).
    fn set_removal(&self, removal: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner.set_removal(removal_of(removal)?);
        Ok(())
    }

    /// Set guest knobs (those not None): `removal` as in `set_removal`, `tray_locked` (a
    /// change of CD-ROM medium without force raises DeviceBusy), `busy` (the guest answers
    /// busy to the first N unplug requests of each detach), `connect` (`"immediate"`, `"never"`
    /// or seconds: when the guest connects a new device, where the driver lists new devices as
    /// waiting for it, as `like="xen"`). For the whole host by default;
    /// for one domain with `domain="NAME"`, one device with `device=(TYPE, REF)` too (kept in
    /// the host's state; awaitable on an asyncio connection's handle).
    #[pyo3(signature = (*, removal = None, tray_locked = None, busy = None, connect = None, domain = None, device = None))]
    #[allow(clippy::too_many_arguments)]
    fn set_guest(
        &self,
        py: Python<'_>,
        removal: Option<&Bound<'_, PyAny>>,
        tray_locked: Option<bool>,
        busy: Option<u32>,
        connect: Option<&Bound<'_, PyAny>>,
        domain: Option<String>,
        device: Option<(String, String)>,
    ) -> PyResult<Py<PyAny>> {
        let connect = match connect {
            None => None,
            Some(c) => Some(if let Ok(s) = c.cast::<PyString>() {
                s.to_str()?
                    .parse::<mock::Connect>()
                    .map_err(|e| PyValueError::new_err(format!("connect: {e}")))?
            } else {
                mock::Connect::After(args::seconds("connect", c)?)
            }),
        };
        let guest = mock::Guest {
            removal: removal.map(removal_of).transpose()?,
            tray_locked,
            busy,
            connect,
        };
        let c = self.inner.clone();
        let target = match (domain, device) {
            (None, None) => {
                c.set_guest(guest);
                return Ok(py.None());
            }
            (None, Some(_)) => {
                return Err(PyValueError::new_err(
                    "device: give domain= too (the device's domain)",
                ))
            }
            (Some(d), dev) => (d, dev),
        };
        let device = match target.1 {
            Some((t, r)) => Some((
                vdev::DeviceType::new(t).map_err(to_py)?,
                vdev::DeviceRef::new(r).map_err(to_py)?,
            )),
            None => None,
        };
        let domain = target.0;
        let fut = async move {
            match device {
                Some((t, r)) => c.set_device_guest(&domain, &t, &r, guest).await,
                None => c.set_domain_guest(&domain, guest).await,
            }
            .map_err(to_py)
        };
        if self.aio {
            awaitable(py, fut)
        } else {
            blocking(py, fut)
        }
    }

    /// Let the guest release every device whose removal is pending; returns how many were
    /// removed (awaitable on an asyncio connection's handle).
    fn release(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let c = self.inner.clone();
        let fut = async move { c.release().await.map_err(to_py) };
        if self.aio {
            awaitable(py, fut)
        } else {
            blocking(py, fut)
        }
    }

    /// The calls received so far (oldest first), a list of Call.
    fn calls(&self) -> Vec<Call> {
        self.inner
            .calls()
            .into_iter()
            .map(|c| Call {
                op: c.op.as_str(),
                domain: c.domain,
                device_type: c.device_type,
                reference: c.reference,
                error: c.error,
            })
            .collect()
    }

    /// How many calls of `op` the host received since it was opened.
    fn call_count(&self, op: &str) -> PyResult<u64> {
        Ok(self.inner.call_count(self::op(op)?))
    }

    /// Forget the logged calls (the counts stay).
    fn clear_calls(&self) {
        self.inner.clear_calls()
    }
}

/// Open a mock host and its control handle: `uri` is `mock:///default` (a fresh in-memory host)
/// or `mock:///PATH.json` (a state file shared with other processes).
#[pyfunction]
#[pyo3(signature = (uri = "mock:///default", readonly = false, aio = false))]
pub fn mock_connect(py: Python<'_>, uri: &str, readonly: bool, aio: bool) -> PyResult<Py<PyAny>> {
    let uri = uri.to_owned();
    let (conn, control) = block(py, async move {
        let mut u = vdev::ConnectUri::parse(&uri).map_err(to_py)?;
        if !mock::SCHEMES.contains(&u.driver()) {
            return Err(to_py(u.invalid(format!(
                "not a mock URI; the scheme must be one of {}",
                mock::SCHEMES.join(", ")
            ))));
        }
        if readonly {
            u.set_read_only(true);
        }
        let driver =
            mock::MockDriver::open_blocking(mock::MockConfig::from_uri(&u).map_err(to_py)?)
                .map_err(to_py)?;
        let control = driver.control();
        Ok((
            vdev::Connection::from_driver(mock::NAME, u, Box::new(driver)),
            control,
        ))
    })?;
    let control = Py::new(
        py,
        MockControl {
            inner: control,
            aio,
        },
    )?;
    crate::conn::wrap_mock(py, conn, control, aio)
}
