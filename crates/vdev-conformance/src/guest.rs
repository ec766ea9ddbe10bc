//! The project's TCG test guest (`tests/qemu-guest/guest`), built or found cached, for the
//! tests of every driver that runs one (QEMU directly, QEMU through libvirt).

use std::path::Path;
use std::process::{Command, Stdio};

/// A guest kernel, its initramfs and command line.
#[derive(Clone, Debug)]
pub struct Guest {
    /// The kernel.
    pub kernel: String,
    /// The initramfs.
    pub initrd: String,
    /// The kernel command line (add `vdev_guest.*` modes to it).
    pub append: String,
}

/// Build (or find cached) the test guest. `None` (a skip that the test command's summary lists)
/// when it cannot be built outside CI; under CI that is a failure.
pub fn guest() -> Option<Guest> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/qemu-guest/guest");
    let run = |arg: &str| {
        Command::new(&script)
            .arg(arg)
            .stderr(Stdio::inherit())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let (Some(vars), Some(append)) = (run("build"), run("append")) else {
        crate::missing_real_part(
            "the test guest could not be built (tests/qemu-guest/guest build)",
        );
        return None;
    };
    // The script succeeded: output without its variables is a bug in it, not a missing part.
    let var = |name: &str| {
        vars.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(|v| v.trim_matches('\'').to_owned())
            .unwrap_or_else(|| {
                panic!("tests/qemu-guest/guest build succeeded but printed no {name}=: {vars:?}")
            })
    };
    Some(Guest {
        kernel: var("GUEST_KERNEL"),
        initrd: var("GUEST_INITRD"),
        append: append.trim().to_owned(),
    })
}
