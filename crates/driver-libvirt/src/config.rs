//! The options of a `libvirt+...` URI: the libvirt URI itself, passed to libvirt verbatim.

use vdev_core::{ConnectUri, Result};

/// A parsed `libvirt+URI`: the libvirt URI after `libvirt+`, and whether the connection is
/// read-only.
///
/// Every query option belongs to libvirt (`socket=`, `keyfile=`, `no_verify=`, ...) and is
/// passed on untouched, except vdev's own `readonly`, which opens libvirt read-only.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LibvirtConfig {
    /// The libvirt URI, verbatim (`qemu:///system`, `qemu+ssh://root@host/system`).
    pub uri: String,
    /// Open libvirt read-only (`virConnectOpenReadOnly`).
    pub readonly: bool,
    /// Make libvirt's blocking calls on the caller's thread, not on the runtime's blocking
    /// threads: for a program that said it is a single caller
    /// ([`ConnectUri::set_single_caller`]), such as the `vdev` command. The listing's reads are
    /// then asked one after another instead of side by side.
    pub single_caller: bool,
}

impl LibvirtConfig {
    /// Parse a URI: `libvirt+` followed by a libvirt URI.
    ///
    /// ```
    /// use vdev_core::ConnectUri;
    /// use vdev_driver_libvirt::LibvirtConfig;
    /// let u = ConnectUri::parse("libvirt+qemu+ssh://root@host/system?keyfile=/k&readonly")?;
    /// let c = LibvirtConfig::from_uri(&u)?;
    /// assert_eq!(c.uri, "qemu+ssh://root@host/system?keyfile=/k");
    /// assert!(c.readonly);
    /// # Ok::<(), vdev_core::Error>(())
    /// ```
    pub fn from_uri(uri: &ConnectUri) -> Result<Self> {
        let inner = uri.inner_uri().filter(|u| !u.is_empty()).ok_or_else(|| {
            uri.invalid(
                "write libvirt+ followed by a libvirt URI, for example libvirt+qemu:///system or libvirt+test:///default",
            )
        })?;
        if !inner.contains(':') {
            return Err(uri.invalid(format!(
                "'{inner}' is not a libvirt URI; write libvirt+DRIVER[+TRANSPORT]://[HOST]/PATH, for example libvirt+qemu:///system"
            )));
        }
        Ok(LibvirtConfig {
            uri: inner,
            readonly: uri.is_read_only(),
            single_caller: uri.is_single_caller(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<LibvirtConfig> {
        LibvirtConfig::from_uri(&ConnectUri::parse(s)?)
    }

    #[test]
    fn the_libvirt_uri_is_passed_verbatim() {
        for (given, inner) in [
            ("libvirt+qemu:///system", "qemu:///system"),
            (
                "libvirt+qemu:///system?socket=/run/x/libvirt-sock",
                "qemu:///system?socket=/run/x/libvirt-sock",
            ),
            (
                "libvirt+qemu+ssh://user@host/system",
                "qemu+ssh://user@host/system",
            ),
            ("libvirt+xen:///system", "xen:///system"),
            ("libvirt+test:///default", "test:///default"),
        ] {
            let c = parse(given).unwrap();
            assert_eq!(c.uri, inner);
            assert!(!c.readonly);
            assert!(!c.single_caller);
        }
    }

    #[test]
    fn a_single_caller_is_the_programs_word_not_the_uris() {
        let mut u = ConnectUri::parse("libvirt+qemu:///system").unwrap();
        u.set_single_caller(true);
        let c = LibvirtConfig::from_uri(&u).unwrap();
        assert!(c.single_caller);
        assert_eq!(c.uri, "qemu:///system");
    }

    #[test]
    fn readonly_is_vdevs_and_not_passed_on() {
        let c = parse("libvirt+qemu:///system?readonly&socket=/s").unwrap();
        assert!(c.readonly);
        assert_eq!(c.uri, "qemu:///system?socket=/s");
    }

    #[test]
    fn a_uri_without_a_libvirt_uri_is_refused() {
        let e = parse("libvirt:///system").unwrap_err();
        assert!(e.to_string().contains("libvirt+qemu:///system"), "{e}");
    }
}
