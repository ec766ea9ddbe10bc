//! Test helpers: a real libvirtd of our own (its QEMU driver only), started in a private mount
//! namespace (`unshare -m`) so that its /run, /var/lib, /var/log, /var/cache and /etc/libvirt
//! are folders of a temporary directory, with QEMU run as root without a security driver or
//! cgroups; test domains (q35, TCG, no guest OS); `virsh` as the independent checker.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// libvirt's QEMU driver module, loaded alone (`LIBVIRT_DRIVER_DIR`).
const QEMU_DRIVER: &str =
    "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so";

/// A bound for waits that only a broken setup makes long (a loaded 2-core machine included).
pub const HANG: Duration = Duration::from_secs(120);

/// What a libvirtd of our own needs and is not installed, if anything.
pub fn missing() -> Option<String> {
    let missing: Vec<&str> = [
        ("/usr/sbin/libvirtd", "libvirtd (libvirt-daemon)"),
        (
            QEMU_DRIVER,
            "libvirt's QEMU driver (libvirt-daemon-driver-qemu)",
        ),
        ("/usr/bin/virsh", "virsh (libvirt-clients)"),
        ("/usr/bin/qemu-system-x86_64", "QEMU (qemu-system-x86)"),
        ("/usr/bin/unshare", "unshare (util-linux)"),
    ]
    .into_iter()
    .filter(|(p, _)| !Path::new(p).exists())
    .map(|(_, what)| what)
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not installed (run scripts/install-test-deps.sh)",
            missing.join(", ")
        )
    })
}

/// Whether everything a libvirtd of our own needs is installed; otherwise a skip (a failure
/// under CI) naming what is missing.
fn available() -> bool {
    match missing() {
        None => true,
        Some(why) => {
            vdev_conformance::missing_real_part(&why);
            false
        }
    }
}

/// A libvirtd of our own, stopped (with every QEMU it started) when dropped.
pub struct Libvirtd {
    child: Child,
    /// Its state, images and logs.
    pub dir: tempfile::TempDir,
    /// The libvirt URI of its socket.
    pub uri: String,
}

/// The folders the namespace gives libvirtd in place of the system's.
const MOUNTS: &[(&str, &str)] = &[
    ("etc", "/etc/libvirt"),
    ("run", "/run"),
    ("varlib", "/var/lib"),
    ("log", "/var/log"),
    ("cache", "/var/cache"),
];

impl Libvirtd {
    /// Start one, or `None` (a skip, a failure under CI) when libvirt is not installed.
    pub fn start() -> Option<Libvirtd> {
        if !available() {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("vdev-libvirtd-")
            .tempdir()
            .expect("temp dir");
        let ns = dir.path().join("ns");
        for (d, _) in MOUNTS {
            std::fs::create_dir_all(ns.join(d)).expect("mkdir");
        }
        std::fs::create_dir_all(ns.join("log/libvirt/qemu")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("drivers")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("img")).expect("mkdir");
        // QEMU's capabilities, probed once (several seconds) and kept between runs.
        let caps = std::env::temp_dir().join("vdev-libvirt-test-cache");
        std::fs::create_dir_all(&caps).expect("mkdir");
        std::os::unix::fs::symlink(
            QEMU_DRIVER,
            dir.path().join("drivers/libvirt_driver_qemu.so"),
        )
        .expect("symlink");
        std::fs::write(
            ns.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\n\
             security_driver = \"none\"\ncgroup_controllers = [ ]\nnamespaces = [ ]\n\
             stdio_handler = \"file\"\n",
        )
        .expect("qemu.conf");
        std::fs::write(
            ns.join("etc/libvirtd.conf"),
            "listen_tls = 0\nlisten_tcp = 0\nunix_sock_group = \"root\"\nunix_sock_rw_perms = \"0700\"\n\
             auth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\n\
             log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
        )
        .expect("libvirtd.conf");
        // libvirt's QEMU driver looks these accounts up even when QEMU runs as root.
        let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let mut group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        if !passwd.contains("\nlibvirt-qemu:") {
            passwd.push_str(
                "libvirt-qemu:x:64055:64055:libvirt qemu:/var/lib/libvirt:/usr/sbin/nologin\n",
            );
        }
        for g in ["kvm:x:64056:\n", "libvirt-qemu:x:64055:\n"] {
            let name = g.split(':').next().unwrap_or_default();
            if !group.lines().any(|l| l.starts_with(&format!("{name}:"))) {
                group.push_str(g);
            }
        }
        std::fs::write(ns.join("passwd"), passwd).expect("passwd");
        std::fs::write(ns.join("group"), group).expect("group");
        let mut script = String::from("set -e\n");
        for (d, target) in MOUNTS {
            script.push_str(&format!(
                "mount --bind '{}' '{target}'\n",
                ns.join(d).display()
            ));
        }
        script.push_str(&format!(
            "mkdir -p /var/cache/libvirt && mount --bind '{}' /var/cache/libvirt\n",
            caps.display()
        ));
        for f in ["passwd", "group"] {
            script.push_str(&format!(
                "mount --bind '{}' /etc/{f}\n",
                ns.join(f).display()
            ));
        }
        script.push_str("exec /usr/sbin/libvirtd -f /etc/libvirt/libvirtd.conf\n");
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "/bin/sh", "-c", &script])
            .env("LIBVIRT_DRIVER_DIR", dir.path().join("drivers"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("libvirtd.err")).expect("log"))
            .spawn()
            .expect("unshare runs");
        let uri = format!(
            "qemu:///system?socket={}",
            ns.join("run/libvirt/libvirt-sock").display()
        );
        let mut me = Libvirtd { child, dir, uri };
        me.wait_ready();
        Some(me)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + HANG;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "libvirtd exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("libvirtd.err"))
                        .unwrap_or_default()
                );
            }
            if self.virsh(&["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "libvirtd did not answer within {HANG:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The vdev URI of this libvirtd.
    pub fn vdev_uri(&self) -> String {
        format!("libvirt+{}", self.uri)
    }

    /// Run `virsh -c URI ARGS` (bounded by libvirt's own timeouts).
    pub fn virsh(&self, args: &[&str]) -> Output {
        Command::new("virsh")
            .arg("-q")
            .arg("-c")
            .arg(&self.uri)
            .args(args)
            .output()
            .expect("virsh runs")
    }

    /// `virsh ARGS`, which must succeed; its standard output.
    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let out = self.virsh(args);
        assert!(
            out.status.success(),
            "virsh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The live and the stored XML of a domain, as virsh prints them.
    pub fn dumpxml(&self, domain: &str) -> (String, String) {
        (
            self.virsh_ok(&["dumpxml", domain]),
            self.virsh_ok(&["dumpxml", "--inactive", domain]),
        )
    }

    /// Define (and, with `start`, start) a domain: q35 under TCG, no guest OS, a virtio-scsi
    /// controller and `root_ports` PCIe root ports for hotplug.
    pub fn define(&self, name: &str, root_ports: usize, start: bool) {
        self.define_with(name, root_ports, start, "", "");
    }

    /// [`Libvirtd::define`] with more elements in `<os>` (a kernel to boot) and `<devices>`.
    pub fn define_with(&self, name: &str, root_ports: usize, start: bool, os: &str, devices: &str) {
        self.define_full(name, root_ports, start, os, devices, "");
    }

    /// [`Libvirtd::define_with`] with more elements in `<domain>` (`qemu:` elements included:
    /// the namespace is declared).
    pub fn define_full(
        &self,
        name: &str,
        root_ports: usize,
        start: bool,
        os: &str,
        devices: &str,
        top: &str,
    ) {
        let mut ports = String::new();
        for i in 1..=root_ports {
            ports.push_str(&format!(
                "<controller type='pci' model='pcie-root-port' index='{i}'/>"
            ));
        }
        let xml = format!(
            "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>{name}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type>{os}</os><features><acpi/></features>\
             <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
             <controller type='pci' index='0' model='pcie-root'/>\
             <controller type='scsi' index='0' model='virtio-scsi'/>{ports}{devices}\
             <memballoon model='none'/></devices>{top}</domain>"
        );
        let file = self.dir.path().join(format!("{name}.xml"));
        std::fs::write(&file, xml).expect("domain xml");
        self.virsh_ok(&["define", file.to_str().expect("utf-8")]);
        if start {
            self.virsh_ok(&["start", name]);
        }
    }

    /// A raw image of 1 MiB in the images folder.
    pub fn image(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("img").join(name);
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(1 << 20))
            .expect("raw image");
        p
    }

    /// libvirtd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether libvirtd has a request it has not read yet (bytes waiting in one of its sockets,
    /// as `ss` shows them): a call is under way.
    pub fn has_unread_request(&self) -> bool {
        let out = Command::new("ss")
            .args(["-xnp"])
            .output()
            .expect("ss (iproute2) runs");
        let me = format!("pid={},", self.pid());
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            l.contains(&me)
                && l.split_whitespace()
                    .nth(2)
                    .and_then(|q| q.parse::<u64>().ok())
                    .is_some_and(|q| q > 0)
        })
    }

    /// The pids of the QEMUs this libvirtd runs (from their pid files).
    fn qemu_pids(&self) -> Vec<i32> {
        let run = self.dir.path().join("ns/run/libvirt/qemu");
        std::fs::read_dir(run)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }

    /// Kill libvirtd (its QEMUs go on running), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start libvirtd again on the same state (after [`Libvirtd::kill`]): it finds its running
    /// domains again.
    pub fn restart(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("ns/run/libvirt/libvirt-sock"));
        let fresh = Libvirtd::respawn(self.dir.path());
        self.child = fresh;
        self.wait_ready();
    }

    fn respawn(dir: &Path) -> Child {
        // The same namespace recipe as `start`, on the existing folders.
        let ns = dir.join("ns");
        let caps = std::env::temp_dir().join("vdev-libvirt-test-cache");
        let mut script = String::from("set -e\n");
        for (d, target) in MOUNTS {
            script.push_str(&format!(
                "mount --bind '{}' '{target}'\n",
                ns.join(d).display()
            ));
        }
        script.push_str(&format!(
            "mkdir -p /var/cache/libvirt && mount --bind '{}' /var/cache/libvirt\n",
            caps.display()
        ));
        for f in ["passwd", "group"] {
            script.push_str(&format!(
                "mount --bind '{}' /etc/{f}\n",
                ns.join(f).display()
            ));
        }
        script.push_str("exec /usr/sbin/libvirtd -f /etc/libvirt/libvirtd.conf\n");
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "/bin/sh", "-c", &script])
            .env("LIBVIRT_DRIVER_DIR", dir.join("drivers"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(dir.join("libvirtd.err"))
                    .expect("log"),
            )
            .spawn()
            .expect("unshare runs")
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        let qemus = self.qemu_pids();
        self.kill();
        for pid in qemus {
            // SAFETY: plain kill(2) of a QEMU this test's libvirtd started.
            unsafe { libc_kill(pid) };
        }
    }
}

unsafe fn libc_kill(pid: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    if pid > 1 {
        kill(pid, 9);
    }
}

/// A name unique in this process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::SeqCst))
}

/// Wait until `f` holds, for at most [`HANG`].
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {HANG:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test guest: (kernel, initramfs, command line); see [`vdev_conformance::guest`].
pub fn guest() -> Option<(String, String, String)> {
    vdev_conformance::guest::guest().map(|g| (g.kernel, g.initrd, g.append))
}
