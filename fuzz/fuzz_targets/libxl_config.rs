//! libxl's stored domain configuration (`/var/lib/xen/userdata-d.*.libxl-json`), which the Xen
//! driver reads, changes and writes back on attach and detach.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdev_driver_xen::fuzzing::libxl_config(data);
});
