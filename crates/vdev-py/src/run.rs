//! The one tokio runtime of the process (pyo3-async-runtimes' own, which also drives the asyncio
//! flavour), and the two ways a call finishes: blocking with the GIL released, or awaited.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

/// The runtime every call of the package runs on.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Run `fut` to its end on the runtime, with the GIL released meanwhile.
pub fn block<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = PyResult<T>> + Send,
    T: Send,
{
    py.detach(|| runtime().block_on(fut))
}

/// The blocking flavour: the result itself.
pub fn blocking<F, T>(py: Python<'_>, fut: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    block(py, fut)?.into_py_any(py)
}

/// The asyncio flavour: an awaitable of the result, for the running event loop.
///
/// The future is polled once first (GIL released): when that finishes it (the mock, answers
/// from memory), the awaitable is an asyncio future already done, which spares a round trip
/// between a runtime thread and the event loop; otherwise the runtime drives it to its end and
/// hands the result to the loop.
pub fn awaitable<F, T>(py: Python<'_>, fut: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'py> IntoPyObject<'py> + Send + 'static,
{
    let event_loop = pyo3_async_runtimes::get_running_loop(py)?;
    let mut fut = Box::pin(fut);
    let first = py.detach(|| {
        let _in = runtime().enter();
        fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    });
    match first {
        Poll::Ready(r) => {
            let done = event_loop.call_method0("create_future")?;
            match r {
                Ok(v) => done.call_method1("set_result", (v.into_py_any(py)?,))?,
                Err(e) => done.call_method1("set_exception", (e.into_value(py),))?,
            };
            Ok(done.unbind())
        }
        Poll::Pending => Ok(pyo3_async_runtimes::tokio::future_into_py(py, fut)?.unbind()),
    }
}

/// `None`, as a result that can cross threads.
pub struct Nothing;

impl<'py> IntoPyObject<'py> for Nothing {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = std::convert::Infallible;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(py.None().into_bound(py))
    }
}
