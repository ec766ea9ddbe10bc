#![doc = include_str!("docs.md")]
#![deny(missing_docs)]

mod config;
mod control;
mod driver;
mod error;
mod events;
mod format;
mod host;
mod like;
mod rules;
mod store;

pub use config::{MockConfig, Source, DEFAULT_LOCK_TIMEOUT, DURATION_RANGE, OPTIONS};
pub use control::{Call, Connect, Fault, Guest, MockControl, Op, Removal, CALL_LOG_CAPACITY};
pub use driver::MockDriver;
pub use format::{
    CustomAttr, CustomType, DeviceRecord, DomainState, HostState, JournalEntry, FORMAT_VERSION,
    JOURNAL_LEN,
};
pub use like::{Like, PROFILE_JSON};

use vdev_core::{ConnectUri, Connection, Result};

/// The driver's name.
pub const NAME: &str = "mock";
/// The URI schemes it handles: `mock://` and, as libvirt's test driver, `test://`.
pub const SCHEMES: &[&str] = &["mock", "test"];

vdev_core::register_driver!(
    name: NAME,
    schemes: SCHEMES,
    description: "in-memory hypervisor with real attach/detach, state files and fault injection",
    driver: MockDriver,
    config: MockConfig,
);

/// Open a mock connection and the [`MockControl`] handle of its host, for test suites.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use vdev_driver_mock::{connect_with_control, Op};
/// let (conn, control) = connect_with_control("mock:///default").await?;
/// control.fail_nth(Op::Attach, 1, "backend");
/// let demo = conn.domain("demo").await?;
/// let attrs = vdev_core::Attributes::from_pairs([("uname", "file:/x.img"), ("dev", "xvdc"), ("mode", "r")])?;
/// assert!(conn.attach(&demo, &vdev_core::DeviceType::DISK, &attrs).await.is_err());
/// assert_eq!(control.calls().last().unwrap().error, Some("backend"));
/// # Ok::<(), vdev_core::Error>(()) }).unwrap();
/// ```
pub async fn connect_with_control(uri: &str) -> Result<(Connection, MockControl)> {
    let uri = ConnectUri::parse(uri)?;
    if !SCHEMES.contains(&uri.driver()) {
        return Err(uri.invalid(format!(
            "not a mock URI; the scheme must be one of {}",
            SCHEMES.join(", ")
        )));
    }
    let config = MockConfig::from_uri(&uri)?;
    let driver = MockDriver::open(config).await?;
    let control = driver.control();
    Ok((
        Connection::from_driver(NAME, uri, Box::new(driver)),
        control,
    ))
}
