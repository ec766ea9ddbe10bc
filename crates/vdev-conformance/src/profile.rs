//! The drift test of a driver's exported profile (design 0017): the copy the mock driver embeds
//! for `like=DRIVER` must be what the driver declares now.

use vdev_core::profile::DriverProfile;

/// Compare `live` (the driver's `profile()`) with the mock's copy
/// `crates/driver-mock/profiles/DRIVER.json` (`DRIVER`: the profile's driver name) and panic
/// with the first differing lines and the command that regenerates the copy; with `VDEV_BLESS`
/// set, write the copy instead. `package`: the driver's cargo package, for that command.
pub fn check_mock_copy(live: &DriverProfile, package: &str) {
    let driver = &live.driver;
    let path = format!(
        "{}/../driver-mock/profiles/{driver}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let live = live.to_json();
    if std::env::var_os("VDEV_BLESS").is_some() {
        std::fs::write(&path, &live).expect("write the profile");
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    if stored != live {
        let diff: Vec<String> = stored
            .lines()
            .zip(live.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(10)
            .map(|(i, (a, b))| format!("line {}:\n  mock:   {a}\n  driver: {b}", i + 1))
            .collect();
        panic!(
            "the mock's like={driver} profile ({path}) differs from what the driver declares ({} lines vs {}); first differences:\n{}\nregenerate it with: VDEV_BLESS=1 cargo test -p {package} --test profile",
            stored.lines().count(),
            live.lines().count(),
            diff.join("\n")
        );
    }
}
