//! Attribute names and values as a user types them (`NAME=VALUE` per line), checked against
//! every schema the mock offers for attach and for update.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(attrs) = vdev_core::Attributes::parse_assignments(s.lines()) else {
        return;
    };
    for schema in vdev_driver_mock::HostState::default_host().schemas() {
        let _ = schema.check_names(&attrs);
        let _ = schema.check_update(&attrs);
    }
    let _ =
        vdev_core::Attributes::from_pairs(attrs.iter().map(|(n, v)| (v.to_owned(), n.to_owned())));
});
