//! Bytes from xenstored: reply frames and watch events, as the Xen driver's client reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdev_driver_xen::fuzzing::xenstore_stream(data);
});
