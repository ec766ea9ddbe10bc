//! What the `vdev` command's tests share: running it, reading its output, a state file.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// Run the `vdev` command (bounded: see [`vdev_conformance::process`]).
pub fn vdev(args: &[&str]) -> Output {
    output(
        Command::new(env!("CARGO_BIN_EXE_vdev"))
            .args(args)
            .env_remove("VDEV_DEFAULT_URI")
            .env_remove("RUST_LOG"),
        &format!("vdev {}", args.join(" ")),
    )
}

/// Run `cmd` within [`vdev_conformance::process::PROCESS_DEADLINE`].
pub fn output(cmd: &mut Command, what: &str) -> Output {
    vdev_conformance::process::output(cmd, what)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn ok(args: &[&str]) -> String {
    let o = vdev(args);
    assert!(o.status.success(), "vdev {args:?} failed: {}", stderr(&o));
    assert!(
        stderr(&o).is_empty(),
        "vdev {args:?} wrote to stderr: {}",
        stderr(&o)
    );
    stdout(&o)
}

pub fn json(args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&ok(&a)).unwrap_or_else(|e| panic!("vdev {args:?}: not JSON: {e}"))
}

pub fn state_file(name: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let uri = format!("mock://{}", path.display());
    (dir, path, uri)
}

pub fn refs(uri: &str, domain: &str, t: &str) -> Vec<String> {
    json(&["-c", uri, "devices", domain, t])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["ref"].as_str().unwrap().to_owned())
        .collect()
}
