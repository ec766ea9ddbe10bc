//! Compile the C programs in `tests/c/` and `examples/` with the system `cc` against
//! `include/vdev.h` and the freshly built `libvdev`, run them, and run them again under
//! valgrind, failing on any error, any leak, and any "still reachable" block that
//! `tests/c/valgrind.supp` does not name.
//!
//! Needs `cc`; `valgrind` too unless `VDEV_CAPI_NO_VALGRIND=1` (refused under CI); `pkg-config`
//! for the install test.

#[path = "../../driver-qemu/tests/common/mod.rs"]
mod common;

/// The libvirtd the libvirt driver's tests start (with the `libvirt` feature only).
#[cfg(feature = "libvirt")]
#[path = "../../driver-libvirt/tests/common/mod.rs"]
mod libvirt;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding the libvdev.so and libvdev.a cargo built for this test run.
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The library is not an rlib, so `cargo test` does not build it for this test: build
        // it here (quick when it is up to date), into the same target directory and profile.
        // The test is target/<profile>/deps/c_programs-HASH. `VDEV_TEST_LIBVDEV_PROFILE`
        // (`release`) links a library of another profile instead: scripts/test.sh builds only
        // the library in release that way, not this test's dependencies too.
        //
        // What is built: libvdev alone (`-p vdev-capi`) unless `VDEV_TEST_LIBVDEV_BUILD` gives
        // the cargo arguments that built this test (scripts/test.sh: `--workspace --all-targets`
        // and its features). cargo unifies features over the packages it is given, so `-p
        // vdev-capi` after a workspace build compiles the facade and libvdev again with other
        // features, into the same file names (a library's have no hash): the next workspace
        // build then compiles libvdev once more. With the workspace's own arguments the build
        // finds everything done.
        let exe = std::env::current_exe().expect("current_exe");
        let mut dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        if let Ok(p) = std::env::var("VDEV_TEST_LIBVDEV_PROFILE") {
            let sub = if p == "dev" { "debug" } else { p.as_str() };
            dir = dir.parent().expect("target dir").join(sub);
        }
        let profile = dir.file_name().and_then(|s| s.to_str()).unwrap_or("debug");
        let mut build = Command::new(env!("CARGO"));
        build.current_dir(crate_dir()).arg("build");
        match std::env::var("VDEV_TEST_LIBVDEV_BUILD") {
            Ok(args) if !args.trim().is_empty() => {
                build.args(args.split_whitespace());
            }
            _ => {
                build.args(["-p", "vdev-capi"]);
                // Tests built with the libvirt feature test a library built with it.
                if cfg!(feature = "libvirt") {
                    build.args(["--features", "libvirt"]);
                }
            }
        }
        if profile != "debug" {
            build.args(["--profile", profile]);
        }
        if let Some(target) = dir.parent() {
            build.env("CARGO_TARGET_DIR", target);
        }
        run(&mut build);
        for f in ["libvdev.so", "libvdev.a"] {
            assert!(
                dir.join(f).is_file(),
                "{} is missing: run the tests with `cargo test -p vdev-capi`",
                dir.join(f).display()
            );
        }
        dir
    })
}

fn out_dir() -> PathBuf {
    let d = lib_dir().join("capi-tests");
    std::fs::create_dir_all(&d).expect("create capi-tests dir");
    d
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

#[derive(Clone, Copy, PartialEq)]
enum Link {
    Shared,
    Static,
}

/// Compile one C file; returns the program's path.
fn compile(src: &Path, name: &str, link: Link) -> PathBuf {
    let exe = out_dir().join(name);
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"])
        .arg("-I")
        .arg(crate_dir().join("include"))
        .arg(src)
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Shared => {
            cc.arg("-L").arg(lib_dir()).arg("-lvdev");
            cc.arg(format!("-Wl,-rpath,{}", lib_dir().display()));
            cc.arg("-lpthread");
        }
        Link::Static => {
            cc.arg(lib_dir().join("libvdev.a"));
            cc.args([
                "-lgcc_s",
                "-lutil",
                "-lrt",
                "-lpthread",
                "-lm",
                "-ldl",
                "-lc",
            ]);
        }
    }
    run(&mut cc);
    exe
}

/// Run a program, then run it under valgrind.
fn run_checked(exe: &Path) -> String {
    run_checked_with(exe, &[])
}

/// Run a program with arguments, then run it under valgrind with the same arguments.
fn run_checked_with(exe: &Path, args: &[&str]) -> String {
    let stdout = run(Command::new(exe).args(args));
    if std::env::var_os("VDEV_CAPI_NO_VALGRIND").is_some() {
        assert!(
            !vdev_conformance::under_ci(),
            "VDEV_CAPI_NO_VALGRIND is set, and CI is set: this variable is not allowed under CI, \
             where every C program runs under valgrind too; unset it"
        );
        eprintln!(
            "VDEV_CAPI_NO_VALGRIND is set: {} not run under valgrind",
            exe.display()
        );
        return stdout;
    }
    let found = Command::new("valgrind").arg("--version").output().is_ok();
    assert!(
        found,
        "valgrind is not installed: install it (apt-get install valgrind) or set VDEV_CAPI_NO_VALGRIND=1"
    );
    let mut vg = Command::new("valgrind");
    vg.args([
        "-q",
        "--error-exitcode=99",
        "--leak-check=full",
        "--show-leak-kinds=all",
        "--errors-for-leak-kinds=all",
        "--num-callers=30",
    ])
    .arg(format!(
        "--suppressions={}",
        crate_dir().join("tests/c/valgrind.supp").display()
    ));
    if cfg!(feature = "libvirt") {
        vg.arg(format!(
            "--suppressions={}",
            crate_dir().join("tests/c/valgrind-libvirt.supp").display()
        ));
    }
    vg.arg(exe).args(args);
    run(&mut vg);
    stdout
}

fn c_test(name: &str) -> String {
    let exe = compile(
        &crate_dir().join(format!("tests/c/{name}.c")),
        name,
        Link::Shared,
    );
    let out = run_checked(&exe);
    assert!(out.contains("checks passed"), "{name} printed: {out}");
    print!("{out}");
    out
}

#[test]
fn c_proposal_calls() {
    c_test("proposal");
}

#[test]
fn c_heap_calls() {
    c_test("heap");
}

/// Every driver (mock, QEMU, Xen) is in the default library, shared and static.
#[test]
fn c_every_driver_is_linked_shared_and_static() {
    c_test("drivers");
    let exe = compile(
        &crate_dir().join("tests/c/drivers.c"),
        "drivers-static",
        Link::Static,
    );
    let out = run_checked(&exe);
    assert!(out.contains("checks passed"), "{out}");
}

/// The proposal's calls against a real QEMU, checked by an independent raw QMP client.
#[test]
fn c_proposal_calls_on_a_real_qemu() {
    if !common::qemu_available() {
        return;
    }
    let vm = common::Vm::start(common::VmSpec::default());
    let img = vm.image("c.raw", "raw");
    // Its own program file: the test over ssh compiles the same source at the same time.
    let exe = compile(
        &crate_dir().join("tests/c/qemu.c"),
        "qemu-local",
        Link::Shared,
    );
    let out = run_checked_with(&exe, &[&vm.uri(), img.to_str().unwrap()]);
    assert!(out.contains("checks passed"), "{out}");
    let mut raw = vm.raw();
    assert!(!raw.has_device("cdisk"), "the disk is gone");
    assert_eq!(raw.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// libvdev built with the `libvirt` feature against a real libvirtd (tests/c/libvirt.c): the
/// proposal's three calls, bad input, scopes, a NIC's link, a shut-off domain. Afterwards `virsh`
/// finds both definitions of both domains as they were.
#[cfg(feature = "libvirt")]
#[test]
fn c_calls_through_libvirt() {
    let Some(lv) = libvirt::Libvirtd::start() else {
        return;
    };
    lv.define("crun", 4, true);
    lv.define("coff", 2, false);
    let before = [lv.dumpxml("crun"), lv.dumpxml("coff")];
    let (a, b) = (lv.image("ca.raw"), lv.image("cb.raw"));
    let exe = compile(
        &crate_dir().join("tests/c/libvirt.c"),
        "libvirt",
        Link::Shared,
    );
    let out = run_checked_with(
        &exe,
        &[
            &lv.vdev_uri(),
            "crun",
            "coff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    );
    assert!(out.contains("checks passed"), "{out}");
    let after = [lv.dumpxml("crun"), lv.dumpxml("coff")];
    assert_eq!(
        after, before,
        "virsh dumpxml (live and --inactive) as it was"
    );
}

/// Updates from C on a real QEMU: a CD-ROM's medium and a NIC's link (tests/c/qemu_update.c),
/// then an independent QMP client finds nothing of them left and the images closed.
#[test]
fn c_update_calls_on_a_real_qemu() {
    if !common::qemu_available() {
        return;
    }
    let vm = common::Vm::start(common::VmSpec::default());
    let (a, b) = (vm.image("a.iso", "raw"), vm.image("b.iso", "raw"));
    let mut raw = vm.raw();
    let before = raw.snapshot();
    let exe = compile(
        &crate_dir().join("tests/c/qemu_update.c"),
        "qemu-update",
        Link::Shared,
    );
    let out = run_checked_with(&exe, &[&vm.uri(), a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(out.contains("checks passed"), "{out}");
    assert!(!raw.has_device("ccd"), "the CD-ROM drive is gone");
    assert_eq!(raw.leftovers(), Vec::<String>::new(), "nothing left behind");
    assert_eq!(raw.snapshot(), before, "QEMU is as it was");
}

/// The same C program over `qemu+ssh://` (a real sshd on loopback): the URI goes through the C
/// library unchanged.
#[test]
fn c_proposal_calls_over_ssh() {
    if !common::qemu_available() {
        return;
    }
    let Some(sshd) = vdev_conformance::sshd::start() else {
        return;
    };
    let vm = common::Vm::start(common::VmSpec::default());
    let img = vm.image("c.raw", "raw");
    let uri = format!(
        "qemu+ssh://{}{}?{}",
        sshd.authority(),
        vm.socket.display(),
        sshd.query()
    );
    let exe = compile(
        &crate_dir().join("tests/c/qemu.c"),
        "qemu-ssh",
        Link::Shared,
    );
    let out = run_checked_with(&exe, &[&uri, img.to_str().unwrap()]);
    assert!(out.contains("checks passed"), "{out}");
    let mut raw = vm.raw();
    assert!(!raw.has_device("cdisk"), "the disk is gone");
    assert_eq!(raw.leftovers(), Vec::<String>::new(), "nothing left behind");
}

/// The proposal's calls against the real Xen of the lab (tests/xenlab): a connected network
/// device, whose guest wrote `event-channel-tx` (a name one byte longer than `vdev_vda.name`
/// holds), is listed by `vdev_domain_get_vdevs()` without that name. XenStore, read by the
/// lab's own `xenstore-list` in Domain-0, has the same network devices before and after.
#[test]
fn c_proposal_calls_on_the_xen_lab() {
    let Some(socket) = std::env::var("XENSTORED_PATH")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        vdev_conformance::missing_real_part(
            "XENSTORED_PATH is not set (start the Xen lab: set -a; eval \"$(tests/xenlab/xenlab up)\")",
        );
        return;
    };
    let domu = std::env::var("XENLAB_DOMU").unwrap_or_else(|_| "domu1".into());
    let vifs = || {
        let script = format!(
            "xenstore-list /local/domain/$(xl domid {domu})/device/vif 2>/dev/null | sort; true"
        );
        run(Command::new(vdev_conformance::xenlab::script()).args(["sh", &script]))
    };
    let before = vifs();
    let exe = compile(&crate_dir().join("tests/c/xen.c"), "xen", Link::Shared);
    let uri = format!("xen:///?socket={socket}&hotplug=no");
    let _cleanup = RemoveNic {
        uri: uri.clone(),
        domu: domu.clone(),
        mac: XEN_TEST_MAC,
    };
    let out = run_checked_with(&exe, &[&uri, &domu, XEN_TEST_MAC]);
    assert!(out.contains("checks passed"), "{out}");
    assert_eq!(
        vifs(),
        before,
        "the guest's network devices, as xenstore-list sees them"
    );
}

/// The MAC address tests/c/xen.c gives its network device.
const XEN_TEST_MAC: &str = "00:16:3e:5c:a1:17";

/// Removes (with `force`) the network device with this MAC that a failed C program left in
/// the lab's guest.
struct RemoveNic {
    uri: String,
    domu: String,
    mac: &'static str,
}

impl Drop for RemoveNic {
    fn drop(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let Ok(conn) = vdev_facade::connect(&self.uri).await else {
                return;
            };
            let Ok(dom) = conn.domain(&self.domu).await else {
                return;
            };
            let network = vdev_facade::DeviceType::new("network").expect("a type");
            let Ok(devices) = conn.devices(&dom, Some(&network)).await else {
                return;
            };
            for d in devices {
                if d.attributes.get("mac") == Some(self.mac) {
                    let force = vdev_facade::DetachOptions {
                        force: true,
                        ..Default::default()
                    };
                    let _ = conn.detach(&dom, &network, &d.reference, &force).await;
                }
            }
        });
    }
}

#[test]
fn c_update_calls() {
    c_test("update");
}

/// Desired state from C (tests/c/desired.c): plan, apply, a second apply that changes nothing,
/// export, a failed batch that leaves nothing, a pending removal, and refused documents.
#[test]
fn c_desired_state() {
    c_test("desired");
}

#[test]
fn c_events() {
    c_test("events");
}

#[test]
fn c_threads_on_separate_connections() {
    c_test("threads");
}

#[test]
fn readme_example_shared() {
    let exe = compile(
        &crate_dir().join("examples/example.c"),
        "example-shared",
        Link::Shared,
    );
    let out = run_checked(&exe);
    assert!(out.contains("disk 1: virtual-device = 51728"), "{out}");
}

/// Linking `libvdev.a` must keep the mock driver's registration (the linking trap).
#[test]
fn readme_example_static() {
    let exe = compile(
        &crate_dir().join("examples/example.c"),
        "example-static",
        Link::Static,
    );
    let out = run_checked(&exe);
    assert!(out.contains("disk 1: virtual-device = 51728"), "{out}");
}

/// `scripts/install-capi.sh PREFIX LIBDIR`, then `cc $(pkg-config --cflags --libs vdev)`.
#[test]
fn install_and_pkg_config() {
    let prefix = out_dir().join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    run(Command::new("sh")
        .arg(crate_dir().join("scripts/install-capi.sh"))
        .arg(&prefix)
        .arg(lib_dir()));
    let pc_path = prefix.join("lib/pkgconfig");
    let flags = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", &pc_path)
        .args(["--cflags", "--libs", "vdev"]));
    let exe = out_dir().join("example-pkg-config");
    let mut cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cc.arg(crate_dir().join("examples/example.c"))
        .args(flags.split_whitespace())
        .arg("-o")
        .arg(&exe);
    run(&mut cc);
    let out = run(Command::new(&exe).env("LD_LIBRARY_PATH", prefix.join("lib")));
    assert!(out.contains("disk 1: virtual-device = 51728"), "{out}");
    let version = run(Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", &pc_path)
        .args(["--modversion", "vdev"]));
    assert_eq!(version.trim(), env!("CARGO_PKG_VERSION"));
}

/// The C examples in the crate's README.md and the project's README.md compile and run exactly
/// as written: the first of each README lists disks, a later one (the project's desired-state
/// example) applies a document.
#[test]
fn readme_snippet_compiles_as_written() {
    for (i, readme) in [
        crate_dir().join("README.md"),
        crate_dir().join("../../README.md"),
    ]
    .iter()
    .enumerate()
    {
        let readme = std::fs::read_to_string(readme).expect("README.md");
        let blocks: Vec<&str> = readme
            .split("```c\n")
            .skip(1)
            .map(|b| &b[..b.find("```").expect("end of the ```c block")])
            .collect();
        assert!(!blocks.is_empty(), "a ```c block in README.md");
        for (j, block) in blocks.iter().enumerate() {
            let name = format!("readme-snippet-{i}-{j}");
            let src = out_dir().join(format!("{name}.c"));
            std::fs::write(&src, block).expect("write snippet");
            let exe = compile(&src, &name, Link::Shared);
            let out = run(&mut Command::new(&exe));
            let want = if j == 0 {
                "disk 1: virtual-device = 51728"
            } else {
                "\"outcome\":\"done\""
            };
            assert!(out.contains(want), "{name}: {out}");
        }
    }
}
