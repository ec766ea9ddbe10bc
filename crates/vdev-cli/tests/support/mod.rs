//! What the tests of the `vdev` command against a real hypervisor share: running the command
//! against a URI (bounded, as every command a test runs), and reading its JSON listing.

use std::process::{Command, Output};

use serde_json::Value;

/// `vdev -c URI ARGS...`, killed and failed if it runs past the bounded-run deadline; the
/// environment's default URI and log filter are removed.
pub fn vdev(uri: &str, args: &[&str]) -> Output {
    vdev_conformance::process::output(
        Command::new(env!("CARGO_BIN_EXE_vdev"))
            .arg("-c")
            .arg(uri)
            .args(args)
            .env_remove("VDEV_DEFAULT_URI")
            .env_remove("RUST_LOG"),
        &format!("vdev -c {uri} {}", args.join(" ")),
    )
}

/// [`vdev`], which must succeed: its standard output, trimmed.
pub fn ok(uri: &str, args: &[&str]) -> String {
    let o = vdev(uri, args);
    assert!(
        o.status.success(),
        "vdev {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// The devices of `domain` as `vdev --json devices DOMAIN` lists them.
pub fn devices_of(uri: &str, domain: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(uri, &["--json", "devices", domain]))
        .expect("JSON")
        .as_array()
        .expect("a list")
        .clone()
}

/// The listed state of the device `r` of `domain`, or `None` when it is not listed.
pub fn state_in(uri: &str, domain: &str, r: &str) -> Option<String> {
    devices_of(uri, domain)
        .into_iter()
        .find(|d| d["ref"] == r)
        .map(|d| d["state"].as_str().expect("a state").to_owned())
}
