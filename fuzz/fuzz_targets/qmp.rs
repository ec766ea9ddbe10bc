//! Bytes on a QMP socket: greeting, replies and events, as the QEMU driver reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdev_driver_qemu::fuzzing::qmp_stream(data);
});
