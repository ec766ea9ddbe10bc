//! `vdev.Connection` (blocking) and `vdev.aio.Connection` (asyncio): one set of methods, written
//! once in `connection_class!`, each building the same future and finishing it either by
//! blocking with the GIL released or by handing it to asyncio.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use pyo3::exceptions::{PyStopAsyncIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::args::{self, DomainArg};
use crate::errors::to_py;
use crate::mock::MockControl;
use crate::run::{awaitable, block, blocking, runtime, Nothing};
use crate::types::{ApplyReport, Capabilities, Change, Device, Domain, Event, Schema};

/// What both flavours hold: the connection (None once closed) and what it said when opened.
pub struct Base {
    conn: Mutex<Option<Arc<vdev::Connection>>>,
    driver: &'static str,
    uri: String,
    readonly: bool,
    capabilities: vdev::Capabilities,
    control: Option<Py<MockControl>>,
}

impl Base {
    pub fn new(conn: vdev::Connection, control: Option<Py<MockControl>>) -> Self {
        Base {
            driver: conn.driver_name(),
            uri: conn.uri().to_string(),
            readonly: conn.is_read_only(),
            capabilities: conn.capabilities(),
            conn: Mutex::new(Some(Arc::new(conn))),
            control,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<vdev::Connection>>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conn(&self) -> PyResult<Arc<vdev::Connection>> {
        self.lock()
            .clone()
            .ok_or_else(|| PyValueError::new_err("the connection is closed"))
    }

    /// Close: the future that closes the driver once no call is using it any more.
    fn close(&self) -> impl std::future::Future<Output = PyResult<Nothing>> + Send + 'static {
        let taken = self.lock().take();
        async move {
            if let Some(c) = taken {
                if let Ok(c) = Arc::try_unwrap(c) {
                    c.close().await.map_err(to_py)?;
                }
            }
            Ok(Nothing)
        }
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        // A driver may hold runtime resources; drop it inside the runtime's context.
        let _in = runtime().enter();
        self.lock().take();
    }
}

fn domains(v: Vec<vdev::Domain>) -> Vec<Domain> {
    v.into_iter().map(Domain::from).collect()
}

fn subscribe(
    py: Python<'_>,
    c: Arc<vdev::Connection>,
    domain: Option<DomainArg>,
) -> PyResult<Arc<tokio::sync::Mutex<Option<vdev::EventStream>>>> {
    let s = block(py, async move {
        match domain {
            None => c.events().await.map_err(to_py),
            Some(d) => {
                let d = d.resolve(&c).await.map_err(to_py)?;
                c.watch(&d).await.map_err(to_py)
            }
        }
    })?;
    Ok(Arc::new(tokio::sync::Mutex::new(Some(s))))
}

macro_rules! connection_class {
    ($cls:ident, $name:literal, $events:ident, $finish:ident, $doc:literal, { $($extra:tt)* }) => {
        #[doc = $doc]
        #[pyclass(frozen, module = "vdev", name = $name)]
        pub struct $cls {
            pub(crate) base: Base,
        }

        #[pymethods]
        impl $cls {
            /// Every domain on the host: a list of Domain.
            fn domains(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                $finish(py, async move { c.domains().await.map(domains).map_err(to_py) })
            }

            /// The domain named by `key`: a name (str) or an id (int, or all digits; an all-digit
            /// key that is no id is tried as a name), as the `vdev` command accepts.
            fn domain(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let key = DomainArg::extract("key", key)?;
                $finish(py, async move { key.lookup(&c).await.map(Domain::from).map_err(to_py) })
            }

            /// The domain with exactly this id (int) or this name (str), without the fallback
            /// of `domain`.
            fn lookup(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let key = match DomainArg::extract("key", key)? {
                    DomainArg::Known(d) => vdev::DomainKey::from(&d),
                    DomainArg::Key(k) if key.is_instance_of::<pyo3::types::PyInt>() => {
                        vdev::DomainKey::parse(&k)
                    }
                    DomainArg::Key(k) => vdev::DomainKey::Name(k),
                };
                $finish(py, async move { c.lookup_domain(&key).await.map(Domain::from).map_err(to_py) })
            }

            /// The device types the driver supports, each a Schema with its attributes.
            fn device_types(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                $finish(py, async move {
                    c.device_types()
                        .await
                        .map(|v| v.iter().cloned().map(Schema).collect::<Vec<_>>())
                        .map_err(to_py)
                })
            }

            /// The attributes device type `type` accepts (a Schema); Unsupported naming the
            /// supported types when the driver has no such type.
            #[pyo3(signature = (r#type, /))]
            fn schema(&self, py: Python<'_>, r#type: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let t = args::device_type(r#type)?;
                $finish(py, async move { c.schema(&t).await.cloned().map(Schema).map_err(to_py) })
            }

            /// The devices of `domain` (name, id or Domain), of one `type` or all: a list of
            /// Device.
            #[pyo3(signature = (domain, r#type = None))]
            fn devices(
                &self,
                py: Python<'_>,
                domain: &Bound<'_, PyAny>,
                r#type: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let d = DomainArg::extract("domain", domain)?;
                let t = args::opt_device_type(r#type)?;
                $finish(py, async move {
                    let d = d.resolve(&c).await.map_err(to_py)?;
                    c.devices(&d, t.as_ref())
                        .await
                        .map(|v| v.into_iter().map(Device).collect::<Vec<_>>())
                        .map_err(to_py)
                })
            }

            /// Create a device of `type` in `domain` from `attrs` (a dict of str to str) and/or
            /// keyword arguments; returns its reference (str). `scope`: `"live"`,
            /// `"persistent"` or `"both"`, where the driver has scopes (None: its default; an
            /// attribute named `scope` goes in `attrs`).
            #[pyo3(signature = (domain, r#type, attrs = None, /, *, scope = None, **kwattrs))]
            fn attach(
                &self,
                py: Python<'_>,
                domain: &Bound<'_, PyAny>,
                r#type: &Bound<'_, PyAny>,
                attrs: Option<&Bound<'_, PyAny>>,
                scope: Option<&Bound<'_, PyAny>>,
                kwattrs: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let d = DomainArg::extract("domain", domain)?;
                let t = args::device_type(r#type)?;
                let a = args::attributes(attrs, kwattrs)?;
                let o = vdev::AttachOptions { scope: args::scope(scope)? };
                $finish(py, async move {
                    let d = d.resolve(&c).await.map_err(to_py)?;
                    c.attach_with(&d, &t, &a, &o)
                        .await
                        .map(|r| r.as_str().to_owned())
                        .map_err(to_py)
                })
            }

            /// Remove a device. Returns when it is gone; RemovalPending when the guest has not
            /// released it within `timeout` seconds (it stays, listed as removal-pending);
            /// `force=True` removes it without waiting for the guest (where the driver can);
            /// `scope` as for `attach`.
            #[pyo3(signature = (domain, r#type, r#ref, *, timeout = None, force = false, scope = None))]
            #[allow(clippy::too_many_arguments)]
            fn detach(
                &self,
                py: Python<'_>,
                domain: &Bound<'_, PyAny>,
                r#type: &Bound<'_, PyAny>,
                r#ref: &Bound<'_, PyAny>,
                timeout: Option<&Bound<'_, PyAny>>,
                force: bool,
                scope: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let d = DomainArg::extract("domain", domain)?;
                let t = args::device_type(r#type)?;
                let r = args::reference(r#ref)?;
                let opts = vdev::DetachOptions {
                    timeout: match timeout {
                        Some(v) if !v.is_none() => args::seconds("timeout", v)?,
                        _ => vdev::DetachOptions::DEFAULT_TIMEOUT,
                    },
                    force,
                    scope: args::scope(scope)?,
                };
                $finish(py, async move {
                    let d = d.resolve(&c).await.map_err(to_py)?;
                    c.detach(&d, &t, &r, &opts).await.map_err(to_py)?;
                    Ok(Nothing)
                })
            }

            /// Change attributes of an existing device in place (a CD-ROM's medium, a NIC's
            /// link): `attrs` (a dict of str to str) and/or keyword arguments, each one the
            /// schema marks updatable. `scope` as for `attach`.
            #[pyo3(signature = (domain, r#type, r#ref, attrs = None, /, *, scope = None, **kwattrs))]
            #[allow(clippy::too_many_arguments)]
            fn update(
                &self,
                py: Python<'_>,
                domain: &Bound<'_, PyAny>,
                r#type: &Bound<'_, PyAny>,
                r#ref: &Bound<'_, PyAny>,
                attrs: Option<&Bound<'_, PyAny>>,
                scope: Option<&Bound<'_, PyAny>>,
                kwattrs: Option<&Bound<'_, PyDict>>,
            ) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let d = DomainArg::extract("domain", domain)?;
                let t = args::device_type(r#type)?;
                let r = args::reference(r#ref)?;
                let a = args::attributes(attrs, kwattrs)?;
                let o = vdev::UpdateOptions { scope: args::scope(scope)? };
                $finish(py, async move {
                    let d = d.resolve(&c).await.map_err(to_py)?;
                    c.update_with(&d, &t, &r, &a, &o).await.map_err(to_py)?;
                    Ok(Nothing)
                })
            }

            /// Create several devices in `domain` (name, id or Domain) in one batch, all or
            /// none: `devices` is a sequence of `(type, attrs)` pairs (`attrs` a dict of str to
            /// str, as `attach` takes them). Returns their references (a list of str), in order.
            /// When one entry fails, none of them stays attached, and the exception is the class
            /// of that entry's own error (InvalidAttribute, DeviceExists, ...) with the entry's
            /// position as its `index` and the entry named in the message. `scope` as for
            /// `attach`, for every entry.
            #[pyo3(signature = (domain, devices, /, *, scope = None))]
            fn attach_batch(
                &self,
                py: Python<'_>,
                domain: &Bound<'_, PyAny>,
                devices: &Bound<'_, PyAny>,
                scope: Option<&Bound<'_, PyAny>>,
            ) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let d = DomainArg::extract("domain", domain)?;
                let devices = args::new_devices(devices)?;
                let o = vdev::AttachOptions { scope: args::scope(scope)? };
                $finish(py, async move {
                    let d = d.resolve(&c).await.map_err(to_py)?;
                    c.attach_batch(&d, &devices, &o)
                        .await
                        .map(|v| v.into_iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>())
                        .map_err(to_py)
                })
            }

            /// What `apply(doc)` would change, changing nothing: a list of Change (empty when
            /// the domains are as the document says). `doc` is a desired-state document: a dict
            /// (its structure, `{"domains": {"vm1": {"devices": [...]}}}`) or the path (str or
            /// os.PathLike) of a JSON or YAML file. A malformed document, or one that cannot be
            /// planned (an unknown type or attribute, an entry without identity, two entries
            /// with one identity), raises InvalidDocument naming the place
            /// (`domains.vm1.devices[2].attrs`, and the file and line for a file); a domain that
            /// is not there, DomainNotFound.
            fn plan(&self, py: Python<'_>, doc: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let doc = args::DocumentArg::extract(doc)?;
                $finish(py, async move {
                    c.plan(&doc.document)
                        .await
                        .map(|p| p.changes.into_iter().map(Change).collect::<Vec<_>>())
                        .map_err(|e| to_py(doc.annotate(e)))
                })
            }

            /// Make the domains as `doc` (as `plan` takes it) says: plan (its errors come
            /// before anything changes), then, domain by domain, remove (each removal waiting up
            /// to `timeout` seconds for the guest, as `detach`), update, and attach every new
            /// device of a domain in one batch, all or none. Replacements are reported
            /// (`"not-made"`), never made. `scope`: `"live"`, `"persistent"` or `"both"`, where
            /// the driver has scopes (None: its default). Returns an ApplyReport; applying the
            /// same document again returns an empty one.
            ///
            /// When a change fails, the changes after it are not tried and apply raises the
            /// failure's own class (for a batch, the failed entry's: InvalidAttribute,
            /// DeviceExists, ...), whose `report` is the ApplyReport of what was done (with
            /// `report.error` the same failure). With `check=False` it returns that report
            /// instead of raising. Pending removals are no failure: see `report.pending`.
            #[pyo3(signature = (doc, *, timeout = None, scope = None, check = true))]
            fn apply(
                &self,
                py: Python<'_>,
                doc: &Bound<'_, PyAny>,
                timeout: Option<&Bound<'_, PyAny>>,
                scope: Option<&Bound<'_, PyAny>>,
                check: bool,
            ) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let doc = args::DocumentArg::extract(doc)?;
                let options = vdev::ApplyOptions {
                    timeout: match timeout {
                        Some(v) if !v.is_none() => args::seconds("timeout", v)?,
                        _ => vdev::DetachOptions::DEFAULT_TIMEOUT,
                    },
                    scope: args::scope(scope)?,
                };
                $finish(py, async move {
                    let report = c
                        .apply(&doc.document, &options)
                        .await
                        .map_err(|e| to_py(doc.annotate(e)))?;
                    let (report, error) = ApplyReport::new(report);
                    Python::attach(|py| {
                        let report = Py::new(py, report)?;
                        match error {
                            Some(e) if check => {
                                let err = to_py(e);
                                err.value(py).setattr("report", report)?;
                                Err(err)
                            }
                            _ => Ok(report),
                        }
                    })
                })
            }

            /// A desired-state document (a dict, as `plan` and `apply` take it) of what `domain`
            /// (name, id or Domain) has now: each device but those whose removal is pending,
            /// with the attributes the driver lists under the names it accepts. `plan` of it is
            /// empty.
            fn export(&self, py: Python<'_>, domain: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
                let c = self.base.conn()?;
                let key = match DomainArg::extract("domain", domain)? {
                    DomainArg::Known(d) => d.name,
                    DomainArg::Key(k) => k,
                };
                $finish(py, async move {
                    let text = c.export(&key).await.map_err(to_py)?.to_json();
                    Python::attach(|py| {
                        Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
                    })
                })
            }

            /// Device events of every domain from now on (subscribed before this returns).
            fn events(&self, py: Python<'_>) -> PyResult<$events> {
                let c = self.base.conn()?;
                Ok($events { stream: subscribe(py, c, None)? })
            }

            /// Device events of one domain (name, id or Domain) from now on.
            fn watch(&self, py: Python<'_>, domain: &Bound<'_, PyAny>) -> PyResult<$events> {
                let c = self.base.conn()?;
                let d = DomainArg::extract("domain", domain)?;
                Ok($events { stream: subscribe(py, c, Some(d))? })
            }

            /// What the driver supports.
            #[getter]
            fn capabilities(&self) -> Capabilities {
                self.base.capabilities.into()
            }

            /// Whether changes are refused.
            fn is_read_only(&self) -> bool {
                self.base.readonly
            }

            /// Whether changes are refused (the same as `is_read_only()`).
            #[getter]
            fn readonly(&self) -> bool {
                self.base.readonly
            }

            /// The driver's name (`"mock"`, `"qemu"`).
            #[getter]
            fn driver(&self) -> &'static str {
                self.base.driver
            }

            /// The URI the connection was opened with (without any password).
            #[getter]
            fn uri(&self) -> &str {
                &self.base.uri
            }

            /// Whether `close()` was called.
            #[getter]
            fn closed(&self) -> bool {
                self.base.lock().is_none()
            }

            /// The mock host's control handle (`vdev.mock.connect` only, else None).
            #[getter]
            fn control(&self, py: Python<'_>) -> Option<Py<MockControl>> {
                self.base.control.as_ref().map(|c| c.clone_ref(py))
            }

            /// Close the connection; later calls raise ValueError. Closing twice does nothing.
            fn close(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
                $finish(py, self.base.close())
            }

            fn __repr__(&self) -> String {
                format!(
                    "<{} {} ({}{})>",
                    $name,
                    self.base.uri,
                    self.base.driver,
                    if self.base.readonly { ", read-only" } else { "" }
                )
            }

            $($extra)*
        }
    };
}

connection_class!(Connection, "Connection", Events, blocking,
    "An open connection to one hypervisor; every call blocks with the GIL released. Use it as a context manager to close it.", {
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        block(py, self.base.close())?;
        Ok(false)
    }
});

connection_class!(AsyncConnection, "AsyncConnection", AsyncEvents, awaitable,
    "An open connection to one hypervisor, for asyncio: the methods of vdev.Connection, awaited. `events()` and `watch()` return async iterators. Use it with `async with` to close it.", {
    fn __aenter__(slf: Py<Self>, py: Python<'_>) -> PyResult<Py<PyAny>> {
        awaitable(py, async move { Ok(slf) })
    }

    #[pyo3(signature = (*_exc))]
    fn __aexit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<Py<PyAny>> {
        let close = self.base.close();
        awaitable(py, async move {
            close.await?;
            Ok(false)
        })
    }
});

/// Device events as an iterator: `for event in events` blocks until the next one; `next(timeout)`
/// waits at most `timeout` seconds and answers None when none came.
#[pyclass(frozen, module = "vdev")]
pub struct Events {
    stream: Arc<tokio::sync::Mutex<Option<vdev::EventStream>>>,
}

/// Device events as an async iterator: `async for event in events`; `await events.next(timeout)`
/// answers None when none came within `timeout` seconds.
#[pyclass(frozen, module = "vdev")]
pub struct AsyncEvents {
    stream: Arc<tokio::sync::Mutex<Option<vdev::EventStream>>>,
}

/// The next event; None at the end of the stream or after `timeout`.
async fn next_event(
    stream: Arc<tokio::sync::Mutex<Option<vdev::EventStream>>>,
    timeout: Option<std::time::Duration>,
) -> PyResult<Option<Event>> {
    let mut g = stream.lock().await;
    let Some(s) = g.as_mut() else {
        return Ok(None);
    };
    let item = match timeout {
        None => s.next().await,
        Some(t) => match tokio::time::timeout(t, s.next()).await {
            Ok(item) => item,
            Err(_) => return Ok(None),
        },
    };
    match item {
        Some(Ok(e)) => Ok(Some(Event(e))),
        Some(Err(e)) => Err(to_py(e)),
        None => {
            *g = None;
            Ok(None)
        }
    }
}

fn opt_seconds(timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<std::time::Duration>> {
    match timeout {
        Some(v) if !v.is_none() => args::seconds("timeout", v).map(Some),
        _ => Ok(None),
    }
}

fn close_stream(py: Python<'_>, stream: &tokio::sync::Mutex<Option<vdev::EventStream>>) {
    let _ = block(py, async {
        stream.lock().await.take();
        Ok(())
    });
}

#[pymethods]
impl Events {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Event>> {
        block(py, next_event(self.stream.clone(), None))
    }

    /// The next event, or None when none came within `timeout` seconds (None: wait for ever)
    /// or the stream has ended.
    #[pyo3(signature = (timeout = None))]
    fn next(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Event>> {
        let t = opt_seconds(timeout)?;
        block(py, next_event(self.stream.clone(), t))
    }

    /// Stop receiving events.
    fn close(&self, py: Python<'_>) {
        close_stream(py, &self.stream)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        close_stream(py, &self.stream);
        false
    }
}

#[pymethods]
impl AsyncEvents {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let s = self.stream.clone();
        awaitable(py, async move {
            next_event(s, None)
                .await?
                .ok_or_else(|| PyStopAsyncIteration::new_err(()))
        })
    }

    /// Await the next event; None when none came within `timeout` seconds (None: wait for
    /// ever) or the stream has ended.
    #[pyo3(signature = (timeout = None))]
    fn next(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        let t = opt_seconds(timeout)?;
        awaitable(py, next_event(self.stream.clone(), t))
    }

    /// Stop receiving events.
    fn close(&self, py: Python<'_>) {
        close_stream(py, &self.stream)
    }
}

/// Open a connection, blocking; the driver is chosen by the URI's scheme.
#[pyfunction]
#[pyo3(signature = (uri, readonly = false))]
pub fn connect(py: Python<'_>, uri: &str, readonly: bool) -> PyResult<Connection> {
    let uri = uri.to_owned();
    let conn = block(py, async move { open(&uri, readonly).await.map_err(to_py) })?;
    Ok(Connection {
        base: Base::new(conn, None),
    })
}

/// Open a connection for asyncio: an awaitable of an AsyncConnection.
#[pyfunction]
#[pyo3(signature = (uri, readonly = false))]
pub fn connect_async(py: Python<'_>, uri: &str, readonly: bool) -> PyResult<Py<PyAny>> {
    let uri = uri.to_owned();
    awaitable(py, async move {
        let conn = open(&uri, readonly).await.map_err(to_py)?;
        Ok(AsyncConnection {
            base: Base::new(conn, None),
        })
    })
}

async fn open(uri: &str, readonly: bool) -> vdev::Result<vdev::Connection> {
    if readonly {
        vdev::connect_readonly(uri).await
    } else {
        vdev::connect(uri).await
    }
}

/// Wrap a mock connection and its control handle in the flavour asked for.
pub fn wrap_mock(
    py: Python<'_>,
    conn: vdev::Connection,
    control: Py<MockControl>,
    aio: bool,
) -> PyResult<Py<PyAny>> {
    let base = Base::new(conn, Some(control));
    if aio {
        Ok(Py::new(py, AsyncConnection { base })?.into_any())
    } else {
        Ok(Py::new(py, Connection { base })?.into_any())
    }
}
