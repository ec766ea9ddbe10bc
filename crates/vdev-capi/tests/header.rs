//! The committed header `include/vdev.h` must be what cbindgen generates from the sources now.
//! `VDEV_BLESS=1 cargo test -p vdev-capi --test header` rewrites it.

use std::path::Path;

#[test]
fn committed_header_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).expect("header is UTF-8");
    let path = dir.join("include/vdev.h");
    if std::env::var_os("VDEV_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/vdev.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/vdev.h is out of date with the sources; regenerate it with \
         `VDEV_BLESS=1 cargo test -p vdev-capi --test header` and commit it"
    );
}
