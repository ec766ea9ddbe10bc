//! The test sshd ([`vdev_remote::testing::Sshd`], a real OpenSSH server on loopback) started the
//! way every test starts a real part: when OpenSSH is not installed, a skip outside CI and a
//! failure under CI ([`crate::missing_real_part`]).

pub use vdev_remote::testing::Sshd;

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
