//! The test sshd ([`Sshd`], a real OpenSSH server on loopback) started the way every test
//! starts a real part: when OpenSSH is not installed, a skip outside CI and a failure under CI
//! ([`crate::missing_real_part`]).
//!
//! [`Sshd`] is a real OpenSSH server for the tests of `+ssh` URIs: Debian's `/usr/sbin/sshd`, started on
//! loopback with its own host key, a user key made for the run (authorized for the current
//! user) and a free port, all in a temporary folder. Nothing of the system's ssh configuration
//! is used or changed (except that sshd needs its privilege-separation folder `/run/sshd`).

/// Start a test sshd, or `None` (after [`crate::missing_real_part`]) when OpenSSH is missing.
pub fn start() -> Option<Sshd> {
    start_with("")
}

/// [`start`] with extra `sshd_config` lines.
pub fn start_with(extra_config: &str) -> Option<Sshd> {
    match Sshd::try_start_with(extra_config) {
        Ok(s) => Some(s),
        Err(why) => {
            crate::missing_real_part(&why);
            None
        }
    }
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running test sshd, killed (with every session it serves) when dropped.
pub struct Sshd {
    child: Option<Child>,
    /// The temporary folder with the keys, the configuration and sshd's log.
    pub dir: tempfile::TempDir,
    /// The port on 127.0.0.1.
    pub port: u16,
    /// The user's private key (authorized by this sshd).
    pub key: PathBuf,
    /// A known-hosts file that holds this sshd's host key.
    pub known_hosts: PathBuf,
    /// The login name (the current user).
    pub user: String,
    extra_config: String,
}

/// The sshd program.
pub const SSHD: &str = "/usr/sbin/sshd";

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run a command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Sshd {
    /// Start one with extra `sshd_config` lines; `Err` says what is missing when sshd or
    /// ssh-keygen is not installed (tests route it through `vdev_conformance::missing_real_part`:
    /// a skip outside CI, a failure under CI, via `vdev_conformance::sshd::start`).
    pub fn try_start_with(extra_config: &str) -> Result<Sshd, String> {
        if !Path::new(SSHD).exists() || Command::new("ssh-keygen").arg("-?").output().is_err() {
            return Err(
                "OpenSSH's sshd is not installed (apt-get install openssh-server openssh-client)"
                    .into(),
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("vdev-sshd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for (name, kind) in [("host_key", "ed25519"), ("user_key", "ed25519")] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-C", "vdev-test", "-f"])
                .arg(d.join(name)));
        }
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&run(Command::new("id").arg("-un")).stdout)
                    .trim()
                    .to_owned()
            });
        let mut s = Sshd {
            child: None,
            port: 0,
            key: d.join("user_key"),
            known_hosts: d.join("known_hosts"),
            user,
            extra_config: extra_config.to_owned(),
            dir,
        };
        s.port = free_port();
        s.write_known_hosts();
        s.spawn();
        Ok(s)
    }

    fn write_known_hosts(&self) {
        let pubkey = std::fs::read_to_string(self.dir.path().join("host_key.pub")).unwrap();
        let mut f = pubkey.split_whitespace();
        let (kind, key) = (f.next().unwrap(), f.next().unwrap());
        std::fs::write(
            &self.known_hosts,
            format!("[127.0.0.1]:{} {kind} {key}\n", self.port),
        )
        .unwrap();
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             StrictModes no\nMaxStartups 100\nMaxSessions 100\nLogLevel VERBOSE\n{extra}\n",
            port = self.port,
            d = d.display(),
            extra = self.extra_config
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The URI query that reaches this sshd with strict host key checking:
    /// `keyfile=...&known_hosts=...`.
    pub fn query(&self) -> String {
        format!(
            "keyfile={}&known_hosts={}",
            self.key.display(),
            self.known_hosts.display()
        )
    }

    /// `user@127.0.0.1:port`.
    pub fn authority(&self) -> String {
        format!("{}@127.0.0.1:{}", self.user, self.port)
    }

    /// The live `ssh` processes of this (test) process that log in to this sshd (they use its
    /// key), by command line: what a test counts to show that no ssh process was started.
    /// Other tests' ssh processes (other keys) and unreaped zombies are not counted.
    pub fn ssh_clients(&self) -> Vec<String> {
        let me = std::process::id().to_string();
        let key = self.key.display().to_string();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                let cmdline = std::fs::read_to_string(e.path().join("cmdline"))
                    .ok()?
                    .replace('\0', " ");
                let mut f = stat.rsplit_once(')')?.1.split_whitespace();
                let live_child = f.next() != Some("Z") && f.next() == Some(me.as_str());
                (stat.contains("(ssh)") && live_child && cmdline.contains(&key)).then_some(cmdline)
            })
            .collect()
    }

    /// Kill sshd and every session it serves (each connection's sshd process and what runs
    /// in it), as a crash or a reboot of the host would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id();
            // Stopped first, the listener forks no new session while the others are found and
            // killed (a session forked meanwhile would outlive it).
            // SAFETY: plain kill(2) of a process this test started (or its descendants).
            unsafe {
                libc_kill(pid as i32, 19);
            }
            let mut all = descendants(pid);
            all.push(pid);
            for p in all {
                // SAFETY: as above.
                unsafe {
                    libc_kill(p as i32, 9);
                }
            }
            let _ = c.wait();
        }
    }

    /// Start sshd again after [`Sshd::kill`], same port and keys.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Every process descended from `pid` (from /proc).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(d) = std::fs::read_dir("/proc") {
        for e in d.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // The field after the parenthesised command name: state, then ppid.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|x| x.parse().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (child, parent) in &parent_of {
            if *parent == p && !out.contains(child) {
                out.push(*child);
                frontier.push(*child);
            }
        }
    }
    out
}
