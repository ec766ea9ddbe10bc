//! A domain's XML as the libvirt driver reads it (listing, detach, update) and the device XML it
//! writes back, with one `xml.PATH=VALUE` pass-through attribute: the first line of the input
//! is `PATH=VALUE`, the rest the domain's XML.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, xml) = text.split_once('\n').unwrap_or(("", text));
    let (path, value) = first.split_once('=').unwrap_or((first, ""));
    vdev_driver_libvirt::fuzzing::domain_xml(xml, (path, value));
});
