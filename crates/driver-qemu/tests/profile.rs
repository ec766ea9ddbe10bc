//! Drift test: the profile this driver exports (its schema declaration and the facts of its
//! checks) is the one the mock driver embeds for `like=qemu` (design 0017). Regenerate the
//! mock's copy with `VDEV_BLESS=1 cargo test -p vdev-driver-qemu --test profile`.

#[test]
fn the_mock_speaks_like_this_driver() {
    vdev_conformance::profile::check_mock_copy(&vdev_driver_qemu::profile(), "vdev-driver-qemu");
}
