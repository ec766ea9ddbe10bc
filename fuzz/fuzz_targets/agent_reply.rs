//! Bytes from a remote host's shell, as the ssh transport reads a framed agent reply.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vdev_remote::fuzzing::agent_reply(data);
});
