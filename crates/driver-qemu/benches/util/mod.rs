//! What the QEMU driver's benchmarks share: medians, milliseconds, the disk they attach, and
//! a libvirtd to compare with.
#![allow(dead_code)]

use std::time::Duration;

use vdev_core::Attributes;

/// The median (the upper one for an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A raw image as a SCSI disk.
pub fn disk(img: &str) -> Attributes {
    Attributes::from_pairs([
        ("source", img.to_owned()),
        ("format", "raw".into()),
        ("bus", "scsi".into()),
    ])
    .unwrap()
}

/// Run `f` with a libvirtd started by `../shared/tools/libvirt-lab.sh` in the scratch folder
/// `base` (domain `lvbench`), given its client URI; the lab is stopped afterwards whatever `f`
/// returns. An error says why nothing could be measured.
pub fn with_libvirt_lab<T>(
    base: &std::path::Path,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    use std::process::Command;
    let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/tools/libvirt-lab.sh");
    if !lab.exists() {
        return Err(format!("{} is missing", lab.display()));
    }
    let run = |verb: &str| {
        Command::new("bash")
            .arg(&lab)
            .arg(verb)
            .env("BASE", base)
            .output()
    };
    let up = run("up").map_err(|e| e.to_string())?;
    let result = if up.status.success() {
        f(String::from_utf8_lossy(&up.stdout).trim())
    } else {
        Err(format!(
            "libvirt-lab.sh up failed: {}",
            String::from_utf8_lossy(&up.stderr)
        ))
    };
    let _ = run("down");
    result
}
