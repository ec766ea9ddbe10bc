//! Test helpers: start a real `qemu-system-x86_64` (no guest OS) with its own QMP socket and
//! images in a temporary directory, and a tiny raw QMP client that checks the machine's state
//! independently of the driver.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The QEMU binary the tests use.
pub const QEMU: &str = "qemu-system-x86_64";

/// Whether QEMU is installed. Under CI (`CI=true`) a missing QEMU fails the test instead of
/// skipping it: run `scripts/install-test-deps.sh`.
pub fn qemu_available() -> bool {
    let ok = Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        vdev_conformance::missing_real_part(&format!(
            "{QEMU} is not installed (run scripts/install-test-deps.sh)"
        ));
    }
    ok
}

/// The socket of the raw checking client, in the VM's directory.
pub const RAW_SOCKET: &str = "raw.sock";
/// A second QMP socket for a second vdev connection, in the VM's directory.
pub const SECOND_SOCKET: &str = "second.sock";

/// How to start a test VM.
#[derive(Clone)]
pub struct VmSpec {
    /// `-name`, if any.
    pub name: Option<String>,
    /// How many pcie-root-ports (hotplug slots for PCI devices).
    pub root_ports: usize,
    /// How many virtio-scsi controllers (`scsi0`, `scsi1`, ...).
    pub scsi: usize,
    /// How many xHCI controllers (`xhci0`, ...).
    pub xhci: usize,
    /// Extra arguments.
    pub extra: Vec<String>,
    /// QMP over TCP on this port instead of the unix socket.
    pub tcp_port: Option<u16>,
    /// Further QMP sockets of the same QEMU beside the main one: `vm.qmp.1`, `vm.qmp.2`, ...
    /// (vdev uses whichever is free).
    pub more_sockets: usize,
    /// Boot a real Linux guest (from `tests/qemu-guest/guest`) under TCG instead of starting
    /// paused without one; [`Vm::start`] then waits until the guest is ready.
    pub guest: Option<Guest>,
}

#[allow(unused_imports)] // each test binary uses its own part of this module
pub use vdev_conformance::guest::{guest, Guest};

impl Default for VmSpec {
    fn default() -> Self {
        VmSpec {
            name: None,
            root_ports: 4,
            scsi: 1,
            xhci: 1,
            extra: Vec::new(),
            tcp_port: None,
            more_sockets: 0,
            guest: None,
        }
    }
}

/// A running QEMU, killed when dropped, with its temporary directory.
pub struct Vm {
    child: Child,
    /// The temporary directory (socket, images, QEMU's stderr).
    pub dir: tempfile::TempDir,
    /// The QMP socket.
    pub socket: PathBuf,
    spec: VmSpec,
}

impl Vm {
    /// Start a VM whose socket is `vm.qmp` in a new temporary directory.
    pub fn start(spec: VmSpec) -> Vm {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("vm.qmp");
        Vm::start_at(spec, dir, socket)
    }

    /// Start a VM with its socket at `socket` (the directory is kept with the VM).
    pub fn start_at(spec: VmSpec, dir: tempfile::TempDir, socket: PathBuf) -> Vm {
        let child = spawn(&spec, dir.path(), &socket);
        let vm = Vm {
            child,
            dir,
            socket,
            spec,
        };
        vm.wait_ready();
        vm
    }

    fn wait_ready(&self) {
        if self.spec.guest.is_some() {
            // TCG boots the guest in about 10 s on an idle machine; allow for a loaded one.
            let deadline = Instant::now() + Duration::from_secs(180);
            let log = self.dir.path().join("serial.log");
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("VDEV-GUEST: READY")
            {
                assert!(
                    Instant::now() < deadline,
                    "the guest did not get ready; serial: {}; QEMU: {}",
                    std::fs::read_to_string(&log).unwrap_or_default(),
                    std::fs::read_to_string(self.dir.path().join("qemu.err")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = self.dir.path().join(SECOND_SOCKET).exists()
                && match self.spec.tcp_port {
                    Some(p) => std::net::TcpStream::connect(("127.0.0.1", p)).is_ok(),
                    None => self.socket.exists(),
                };
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU did not create its QMP socket; its stderr: {}",
                std::fs::read_to_string(self.dir.path().join("qemu.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `qemu:///` URI of this VM's socket.
    pub fn uri(&self) -> String {
        format!("qemu://{}", self.socket.display())
    }

    /// The QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The URI of the second QMP socket (same domain, another connection).
    pub fn second_uri(&self) -> String {
        format!("qemu://{}", self.dir.path().join(SECOND_SOCKET).display())
    }

    /// Kill QEMU (as if it crashed) and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start QEMU again with the same spec and socket (after [`Vm::kill`]).
    pub fn restart(&mut self) {
        for s in [
            self.socket.clone(),
            self.dir.path().join(SECOND_SOCKET),
            self.dir.path().join(RAW_SOCKET),
        ] {
            let _ = std::fs::remove_file(s);
        }
        self.child = spawn(&self.spec, self.dir.path(), &self.socket);
        self.wait_ready();
    }

    /// Create an image with qemu-img (raw images are plain files).
    pub fn image(&self, name: &str, format: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if format == "raw" {
            std::fs::File::create(&p)
                .and_then(|f| f.set_len(1 << 20))
                .expect("raw image");
        } else {
            let out = Command::new("qemu-img")
                .args(["create", "-q", "-f", format])
                .arg(&p)
                .arg("1M")
                .output()
                .expect("qemu-img is installed (scripts/install-test-deps.sh)");
            assert!(out.status.success(), "qemu-img: {out:?}");
        }
        p
    }

    /// A raw QMP client on this VM's socket.
    pub fn raw(&self) -> Raw {
        Raw::connect(&self.dir.path().join(RAW_SOCKET))
    }
}

fn spawn(spec: &VmSpec, dir: &Path, socket: &Path) -> Child {
    let mut c = Command::new(QEMU);
    let qmp = match spec.tcp_port {
        Some(p) => format!("tcp:127.0.0.1:{p},server=on,wait=off"),
        None => format!("unix:{},server=on,wait=off", socket.display()),
    };
    c.args(["-nodefaults", "-display", "none", "-qmp", &qmp]);
    match &spec.guest {
        // No KVM for guests on these machines (see shared notes): TCG, running from the start.
        Some(g) => {
            c.args(["-machine", "q35", "-accel", "tcg", "-smp", "1", "-m", "256"]);
            c.args([
                "-kernel", &g.kernel, "-initrd", &g.initrd, "-append", &g.append,
            ]);
            c.arg("-serial")
                .arg(format!("file:{}", dir.join("serial.log").display()));
        }
        None => {
            c.args(["-machine", "q35,accel=kvm:tcg", "-m", "128", "-S"]);
        }
    }
    // QEMU serves one client per QMP socket: the raw checking client and a second vdev
    // connection (the conformance kit's read-only one) get sockets of their own.
    for extra in [RAW_SOCKET, SECOND_SOCKET] {
        c.args([
            "-qmp",
            &format!("unix:{},server=on,wait=off", dir.join(extra).display()),
        ]);
    }
    if let Some(n) = &spec.name {
        c.args(["-name", n]);
    }
    for i in 1..=spec.root_ports {
        c.args([
            "-device",
            &format!("pcie-root-port,id=rp{i},chassis={i},slot={i}"),
        ]);
    }
    for i in 0..spec.scsi {
        c.args(["-device", &format!("virtio-scsi-pci,id=scsi{i}")]);
    }
    for i in 0..spec.xhci {
        c.args(["-device", &format!("qemu-xhci,id=xhci{i},p2=15,p3=15")]);
    }
    for i in 1..=spec.more_sockets {
        c.args([
            "-qmp",
            &format!("unix:{}.{i},server=on,wait=off", socket.display()),
        ]);
    }
    c.args(&spec.extra);
    let err = std::fs::File::create(dir.join("qemu.err")).expect("stderr file");
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
    c.spawn().expect("qemu-system-x86_64 starts")
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The bytes QEMU has not read yet from the clients of its socket `socket` (the receive queues
/// of its ends of their connections, as `ss` shows them): what a client sent to a stopped QEMU.
pub fn unread_bytes(socket: &Path) -> usize {
    let out = Command::new("ss")
        .args(["-xHn", "src"])
        .arg(socket)
        .output()
        .expect("ss (package iproute2) runs");
    assert!(out.status.success(), "ss failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"ESTAB") && f.get(4).copied() == socket.to_str())
                .then(|| f.get(2)?.parse::<usize>().ok())
                .flatten()
        })
        .sum()
}

/// Wait (up to 60 s: a loaded machine) until a client has sent something the stopped QEMU of
/// `socket` has not read ([`unread_bytes`]): `what` (a request) is then certainly in flight.
pub fn wait_unread(socket: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while unread_bytes(socket) == 0 {
        assert!(
            Instant::now() < deadline,
            "{what} did not reach {} within 60 s (nothing unread there)",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stop QEMU (`pid`) now and kill it once `what` (a request a test is about to send) waits
/// unread in `socket` ([`wait_unread`]): QEMU surely dies with that request in flight. Join
/// the returned thread after the request has ended; it re-raises a failed wait.
pub fn kill_once_unread(
    pid: u32,
    socket: &Path,
    what: &'static str,
) -> std::thread::JoinHandle<()> {
    let pid = pid.to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        let waited = std::panic::catch_unwind(|| wait_unread(&socket, what));
        Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        if let Err(p) = waited {
            std::panic::resume_unwind(p);
        }
    })
}

/// A minimal QMP client (std + serde_json), independent of the driver, for checking state.
pub struct Raw {
    r: BufReader<UnixStream>,
    w: UnixStream,
    /// Events seen while waiting for replies.
    pub events: Vec<Value>,
}

impl Raw {
    /// Connect and negotiate.
    pub fn connect(socket: &Path) -> Raw {
        let s = UnixStream::connect(socket).expect("raw QMP connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut raw = Raw {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            events: Vec::new(),
        };
        let mut greeting = String::new();
        raw.r.read_line(&mut greeting).unwrap();
        raw.ok("qmp_capabilities", json!({}));
        raw
    }

    /// Send a command; its whole reply message.
    pub fn cmd(&mut self, name: &str, args: Value) -> Value {
        let msg = json!({"execute": name, "arguments": args});
        writeln!(self.w, "{msg}").unwrap();
        loop {
            let m = self.next_message();
            if m.get("event").is_some() {
                self.events.push(m);
                continue;
            }
            return m;
        }
    }

    /// The next message from QEMU.
    pub fn next_message(&mut self) -> Value {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).expect("read from QEMU");
        assert!(n > 0, "QEMU closed the raw connection");
        serde_json::from_str(&line).expect("QMP message is JSON")
    }

    /// Send every command in one write (QEMU runs them in order), then read their replies, in
    /// order: each command's whole reply message.
    pub fn pipeline(&mut self, cmds: &[(&str, Value)]) -> Vec<Value> {
        let mut text = String::new();
        for (name, args) in cmds {
            text.push_str(&json!({"execute": name, "arguments": args}).to_string());
            text.push('\n');
        }
        self.w.write_all(text.as_bytes()).unwrap();
        let mut out = Vec::with_capacity(cmds.len());
        while out.len() < cmds.len() {
            let m = self.next_message();
            if m.get("event").is_some() {
                self.events.push(m);
            } else {
                out.push(m);
            }
        }
        out
    }

    /// Remove every device but those in `keep` (ids, devices without a block node: the
    /// controllers), waiting for QEMU to delete them, then every named block node: the domain
    /// back to how it started, whoever attached.
    pub fn remove_all_but(&mut self, keep: &[String]) {
        let ids: Vec<String> = self
            .devices()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !keep.contains(id))
            .collect();
        let dels: Vec<(&str, Value)> = ids
            .iter()
            .map(|id| ("device_del", json!({ "id": id })))
            .collect();
        for r in self.pipeline(&dels) {
            assert!(r.get("return").is_some(), "device_del failed: {r}");
        }
        for id in &ids {
            assert!(self.wait_gone(id), "device {id} stays");
        }
        self.events.clear();
        // QEMU lets go of a node a moment after the device leaves its tree ("in use" between):
        // delete until none is left, for at most 20 s. A node's `-file` child and unnamed
        // (`#...`) children go with it.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left: Vec<String> = self
                .nodes()
                .into_iter()
                .filter(|n| !n.ends_with("-file") && !n.starts_with('#'))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "block nodes stay: {left:?}");
            let dels: Vec<(&str, Value)> = left
                .iter()
                .map(|n| ("blockdev-del", json!({ "node-name": n })))
                .collect();
            self.pipeline(&dels);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send a command that must succeed; its `return`.
    pub fn ok(&mut self, name: &str, args: Value) -> Value {
        let m = self.cmd(name, args.clone());
        m.get("return")
            .cloned()
            .unwrap_or_else(|| panic!("{name} {args} failed: {m}"))
    }

    /// User devices: (id, model), sorted.
    pub fn devices(&mut self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .ok("qom-list", json!({"path": "/machine/peripheral"}))
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| {
                let t = p["type"]
                    .as_str()?
                    .strip_prefix("child<")?
                    .strip_suffix('>')?;
                Some((p["name"].as_str()?.to_owned(), t.to_owned()))
            })
            .collect();
        v.sort();
        v
    }

    /// Whether a device with this id exists.
    pub fn has_device(&mut self, id: &str) -> bool {
        self.devices().iter().any(|(i, _)| i == id)
    }

    /// Every named block node, sorted.
    pub fn nodes(&mut self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ok("query-named-block-nodes", json!({"flat": true}))
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["node-name"].as_str().map(str::to_owned))
            .collect();
        v.sort();
        v
    }

    /// `info network` as text (QEMU 7.2 has no query-netdev).
    pub fn network_info(&mut self) -> String {
        self.ok(
            "human-monitor-command",
            json!({"command-line": "info network"}),
        )
        .as_str()
        .unwrap()
        .to_owned()
    }

    /// Everything a test compares before and after a refused operation.
    pub fn snapshot(&mut self) -> (Vec<(String, String)>, Vec<String>, String) {
        (self.devices(), self.nodes(), self.network_info())
    }

    /// The block node of a disk device, from query-block (usb-storage has no `drive` of its own).
    pub fn node_of(&mut self, id: &str) -> Option<String> {
        let blocks = self.ok("query-block", json!({}));
        blocks.as_array().unwrap().iter().find_map(|b| {
            (qdev_id(b)? == id).then(|| b["inserted"]["node-name"].as_str().map(str::to_owned))?
        })
    }

    /// Block nodes and netdevs named `vdev-...` (what vdev creates) that no device uses: what a
    /// removal left behind. Empty when nothing leaked.
    pub fn leftovers(&mut self) -> Vec<String> {
        let blocks = self.ok("query-block", json!({}));
        let used: Vec<String> = blocks
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["inserted"]["node-name"].as_str().map(str::to_owned))
            .collect();
        let mut out: Vec<String> = self
            .nodes()
            .into_iter()
            .filter(|n| n.starts_with("vdev-"))
            .filter(|n| !used.iter().any(|u| n == u || *n == format!("{u}-file")))
            .map(|n| format!("node {n}"))
            .collect();
        // `info network`: a netdev in use is printed indented under its NIC; a free one is not.
        for line in self.network_info().lines() {
            if let Some((name, _)) = line.split_once(':') {
                if name.starts_with("vdev-") {
                    out.push(format!("netdev {name}"));
                }
            }
        }
        out
    }

    /// Ids of the devices with a pending-removal marker (`/objects/vdev-unplug.ID`).
    pub fn marked(&mut self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ok("qom-list", json!({"path": "/objects"}))
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| {
                p["name"]
                    .as_str()?
                    .strip_prefix("vdev-unplug.")
                    .map(str::to_owned)
            })
            .collect();
        v.sort();
        v
    }

    /// Wait (at most 20 s) until device `id` is gone from QEMU; false if it stays.
    pub fn wait_gone(&mut self, id: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if !self.has_device(id) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Ids of the devices whose medium is the image file `image`, sorted (what one attach of that
    /// image made: a test tells apart attaches that may end in another order than they began).
    pub fn devices_on(&mut self, image: &std::path::Path) -> Vec<String> {
        let blocks = self.ok("query-block", json!({}));
        let mut v: Vec<String> = blocks
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["inserted"]["file"].as_str() == image.to_str())
            .filter_map(|b| qdev_id(b).map(str::to_owned))
            .collect();
        v.sort();
        v
    }

    /// The `query-block` entry of drive `id` (its medium in `inserted`, `tray_open`, `locked`).
    pub fn block(&mut self, id: &str) -> Option<Value> {
        let blocks = self.ok("query-block", json!({}));
        blocks
            .as_array()
            .unwrap()
            .iter()
            .find(|b| qdev_id(b) == Some(id))
            .cloned()
    }

    /// One property of a device.
    pub fn qom_get(&mut self, id: &str, prop: &str) -> Value {
        self.ok(
            "qom-get",
            json!({"path": format!("/machine/peripheral/{id}"), "property": prop}),
        )
    }
}

/// The device id of a `query-block` entry: its `qdev` path under /machine/peripheral (usb-storage
/// has no `drive` of its own, so its path goes on below the device).
fn qdev_id(b: &Value) -> Option<&str> {
    let q = b["qdev"].as_str()?;
    Some(
        q.strip_prefix("/machine/peripheral/")
            .map_or(q, |r| r.split('/').next().unwrap()),
    )
}
