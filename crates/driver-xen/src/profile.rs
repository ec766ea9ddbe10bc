//! The driver's vocabulary as data ([`vdev_core::profile`]): its schemas plus the facts of its
//! checks, for the mock driver's `like=xen` (design 0017). Built from the schemas of
//! [`crate::vbd`] and [`crate::vif`]; the drift test (`tests/profile.rs`) compares it with the
//! mock's copy.

use std::collections::BTreeMap;

use vdev_core::profile::{DriverProfile, RefFormat, TypeProfile, ValueForm, PROFILE_VERSION};
use vdev_core::DeviceState;

/// The driver's profile: what `mock:///default?like=xen` loads.
pub fn profile() -> DriverProfile {
    DriverProfile {
        version: PROFILE_VERSION,
        driver: crate::NAME.into(),
        domains: vec!["Domain-0".into(), "demo".into()],
        device_types: vec![
            TypeProfile {
                schema: crate::vbd::schema(),
                reference: RefFormat::XenDevid {
                    attribute: "dev".into(),
                },
                values: BTreeMap::from([
                    ("mode".into(), vec!["r".into(), "w".into()]),
                    ("format".into(), vec!["raw".into()]),
                    ("recorded".into(), vec!["yes".into(), "no".into()]),
                ]),
                defaults: BTreeMap::from([("mode".into(), "w".into())]),
                defaults_with: BTreeMap::new(),
                forms: BTreeMap::from([
                    ("uname".into(), ValueForm::XenUname),
                    ("dev".into(), ValueForm::XenDevice),
                    ("backend".into(), ValueForm::Domain),
                ]),
                required_unless: BTreeMap::new(),
                constraints: Vec::new(),
                update_only: Vec::new(),
                host_path: None,
                unique: Vec::new(),
                generated_mac: BTreeMap::new(),
                derived: BTreeMap::new(),
                // Listed so until the guest's frontend connects (XenBus state 2 of the backend).
                initial_state: Some(DeviceState::InitWait),
                medium: None,
            },
            TypeProfile {
                schema: crate::vif::schema(),
                reference: RefFormat::Counter,
                values: BTreeMap::from([("recorded".into(), vec!["yes".into(), "no".into()])]),
                defaults: BTreeMap::from([("bridge".into(), "xenbr0".into())]),
                defaults_with: BTreeMap::new(),
                forms: BTreeMap::from([
                    ("mac".into(), ValueForm::Mac),
                    ("bridge".into(), ValueForm::Interface),
                    ("ip".into(), ValueForm::IpList),
                    ("backend".into(), ValueForm::Domain),
                ]),
                required_unless: BTreeMap::new(),
                constraints: Vec::new(),
                update_only: Vec::new(),
                host_path: None,
                unique: Vec::new(),
                generated_mac: BTreeMap::from([("mac".into(), "00:16:3e".into())]),
                derived: BTreeMap::new(),
                // Listed so until the guest's frontend connects (XenBus state 2 of the backend).
                initial_state: Some(DeviceState::InitWait),
                medium: None,
            },
        ],
    }
}
