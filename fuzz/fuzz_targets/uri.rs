//! Connection URIs and every driver's options: parsed by the core, then by each driver's config.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = vdev_core::ConnectUri::parse(s) else {
        return;
    };
    let _ = uri.to_string();
    let _ = vdev_driver_mock::MockConfig::from_uri(&uri);
    let _ = vdev_driver_qemu::QemuConfig::from_uri(&uri);
    let _ = vdev_driver_xen::XenConfig::from_uri(&uri);
});
