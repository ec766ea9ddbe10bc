//! The Xen lab's command channel (`tests/xenlab/xenlab sh`, see tests/xenlab/README.md): shell
//! scripts run in the lab's Domain-0, for the tests of every driver and face that uses the lab.
//! The lab itself is started by the test command (`xenlab up`); these helpers only talk to it.

use std::path::PathBuf;
use std::process::Command;

/// The lab's script, `tests/xenlab/xenlab` in the workspace.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/xenlab/xenlab")
}

/// The command channel's own limit on a script (`XENLAB_SH_TIMEOUT`'s default in the lab's
/// script), in seconds.
pub const DOM0_LIMIT: u64 = 300;

/// Run a shell script in Domain-0: whether it succeeded, and its output (stdout, then stderr).
/// Domain-0 stops it after [`DOM0_LIMIT`] seconds.
pub fn dom0(script: &str) -> (bool, String) {
    dom0_within(script, DOM0_LIMIT)
}

/// [`dom0`], stopped after `limit_secs` (for a long script: a TCG Domain-0 on a loaded machine
/// runs one program in 0.05-0.5 s). A script stopped that way fails, and its output says so.
pub fn dom0_within(script: &str, limit_secs: u64) -> (bool, String) {
    let out = Command::new(self::script())
        .arg("sh")
        .arg(script)
        .env("XENLAB_SH_TIMEOUT", limit_secs.to_string())
        .output()
        .expect("run tests/xenlab/xenlab sh");
    let mut text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // timeout(1) in Domain-0 exits 124 (137 after its KILL) when it stopped the script.
    if matches!(out.status.code(), Some(124 | 137)) {
        text += &format!("\n[the script was stopped at its limit of {limit_secs} s]\n");
    }
    (out.status.success(), text)
}
