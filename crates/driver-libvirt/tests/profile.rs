//! Drift tests of the profile the mock driver embeds for `like=libvirt` (design 0017):
//! (a) the profile of the recorded domain capabilities is the mock's copy (regenerate it with
//! `VDEV_BLESS=1 cargo test -p vdev-driver-libvirt --test profile`); (b) the capabilities the
//! test libvirtd reports now give the same profile as the recorded ones, so that a libvirt or
//! QEMU upgrade that changes the disk buses or devices is noticed (then record the new
//! document: `virsh domcapabilities --machine q35 --virttype qemu`).

mod common;

use vdev_driver_libvirt::{profile, RECORDED_DOMAIN_CAPABILITIES};

#[test]
fn the_mock_speaks_like_this_driver() {
    vdev_conformance::profile::check_mock_copy(
        &profile(RECORDED_DOMAIN_CAPABILITIES),
        "vdev-driver-libvirt",
    );
}

#[test]
fn the_recorded_capabilities_are_this_libvirts() {
    let Some(lv) = common::Libvirtd::start() else {
        return;
    };
    let now = lv.virsh_ok(&["domcapabilities", "--machine", "q35", "--virttype", "qemu"]);
    let (recorded, live) = (
        profile(RECORDED_DOMAIN_CAPABILITIES).to_json(),
        profile(&now).to_json(),
    );
    assert!(
        recorded == live,
        "the test libvirtd's domain capabilities give another profile than the recorded ones \
         (crates/driver-libvirt/tests/data/); record them again and regenerate the mock's copy.\n\
         recorded:\n{recorded}\nnow:\n{live}"
    );
}
