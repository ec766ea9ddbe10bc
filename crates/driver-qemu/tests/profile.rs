//! Drift test: the profile this driver exports (its schema declaration and the facts of its
//! checks) is the one the mock driver embeds for `like=qemu` (design 0017). Regenerate the
//! mock's copy with `VDEV_BLESS=1 cargo test -p vdev-driver-qemu --test profile`.

#[test]
fn the_mock_speaks_like_this_driver() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../driver-mock/profiles/qemu.json"
    );
    let live = vdev_driver_qemu::profile().to_json();
    if std::env::var_os("VDEV_BLESS").is_some() {
        std::fs::write(path, &live).expect("write the profile");
        return;
    }
    let stored = std::fs::read_to_string(path).unwrap_or_default();
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
            "the mock's like=qemu profile ({path}) differs from what the driver declares ({} lines vs {}); first differences:\n{}\nregenerate it with: VDEV_BLESS=1 cargo test -p vdev-driver-qemu --test profile",
            stored.lines().count(),
            live.lines().count(),
            diff.join("\n")
        );
    }
}
