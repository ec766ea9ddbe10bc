//! The Python package `vdev`: its native module `vdev._vdev`. This crate only converts between
//! Python and vdev and delegates to `vdev::Connection`; the Python side (`python/vdev`) adds the
//! asyncio entry points, the mock helpers, the pytest plugin and the type stubs.

use pyo3::prelude::*;

mod args;
mod conn;
mod errors;
mod mock;
mod run;
mod types;

/// Every driver in this package, sorted by name: a list of DriverInfo.
#[pyfunction]
fn drivers() -> Vec<types::DriverInfo> {
    vdev::drivers()
        .into_iter()
        .map(|d| types::DriverInfo {
            name: d.name,
            schemes: d.schemes,
            description: d.description,
        })
        .collect()
}

#[pymodule]
fn _vdev(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Every driver's registration stays in the extension, however it is linked.
    vdev::link_drivers();
    errors::register(m)?;
    m.add(
        "CODES",
        pyo3::types::PyTuple::new(m.py(), vdev::Error::CODES)?,
    )?;
    m.add_function(wrap_pyfunction!(drivers, m)?)?;
    m.add_function(wrap_pyfunction!(conn::connect, m)?)?;
    m.add_function(wrap_pyfunction!(conn::connect_async, m)?)?;
    m.add_function(wrap_pyfunction!(mock::mock_connect, m)?)?;
    m.add_class::<conn::Connection>()?;
    m.add_class::<conn::AsyncConnection>()?;
    m.add_class::<conn::Events>()?;
    m.add_class::<conn::AsyncEvents>()?;
    m.add_class::<mock::MockControl>()?;
    m.add_class::<mock::Call>()?;
    m.add_class::<types::Domain>()?;
    m.add_class::<types::Device>()?;
    m.add_class::<types::Schema>()?;
    m.add_class::<types::AttributeSpec>()?;
    m.add_class::<types::Capabilities>()?;
    m.add_class::<types::DriverInfo>()?;
    m.add_class::<types::Event>()?;
    m.add_class::<types::Change>()?;
    m.add_class::<types::Applied>()?;
    m.add_class::<types::ApplyReport>()?;
    Ok(())
}
