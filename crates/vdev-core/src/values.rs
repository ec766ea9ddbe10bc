//! The small readings and makings every driver shares, written once: a boolean value read the one
//! way vdev reads booleans, a MAC address read the one way vdev reads them, and fresh random ids.

/// vdev's one reading of a boolean, in device attributes and URI options alike: `1`, `true`,
/// `yes` and `on` are true; `0`, `false`, `no` and `off` are false (lower case, as written here);
/// anything else is `None`, for the caller to refuse naming [`BOOL_SPELLINGS`]. (A URI option
/// given with no value, `?readonly`, is true: see [`ConnectUri::bool_option`](crate::ConnectUri::bool_option).)
///
/// ```
/// use vdev_core::parse_bool;
/// assert_eq!(parse_bool("on"), Some(true));
/// assert_eq!(parse_bool("no"), Some(false));
/// assert_eq!(parse_bool("maybe"), None);
/// ```
pub fn parse_bool(v: &str) -> Option<bool> {
    BOOL_PAIRS.iter().find_map(|(t, f)| {
        if v == *t {
            Some(true)
        } else if v == *f {
            Some(false)
        } else {
            None
        }
    })
}

/// The spellings of [`parse_bool`], true then false.
pub(crate) const BOOL_PAIRS: &[(&str, &str)] =
    &[("1", "0"), ("true", "false"), ("yes", "no"), ("on", "off")];

/// The spellings [`parse_bool`] accepts, for messages.
pub const BOOL_SPELLINGS: &str = "on or off (also yes/no, true/false, 1/0)";

/// vdev's one reading of a MAC address: six groups of two hex digits separated by colons
/// (`52:54:00:12:34:56`, either case), as its six bytes; anything else is `None`.
///
/// ```
/// use vdev_core::parse_mac;
/// assert_eq!(parse_mac("52:54:00:AB:cd:01"), Some([0x52, 0x54, 0, 0xab, 0xcd, 1]));
/// assert_eq!(parse_mac("52:54:00:ab:cd"), None);
/// assert_eq!(parse_mac("+2:54:00:ab:cd:01"), None);
/// ```
pub fn parse_mac(v: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = v.split(':');
    for o in &mut out {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The MAC address a device attribute `name` gives, checked the one way every driver checks
/// it: [`parse_mac`]'s form, and a unicast address (a NIC cannot have a multicast one). Returns
/// it in lower case; otherwise an [`Error::InvalidAttribute`](crate::Error::InvalidAttribute)
/// naming `name`, whose reason shows `example` (each hypervisor has its own range: QEMU's
/// `52:54:00:...`, Xen's `00:16:3e:...`).
pub fn unicast_mac(name: &str, value: &str, example: &str) -> crate::Result<String> {
    let Some(b) = parse_mac(value) else {
        return Err(crate::Error::invalid_attribute(
            name,
            format!(
                "'{}' is not a MAC address such as {example}",
                value.escape_default()
            ),
        ));
    };
    if b[0] & 1 == 1 {
        return Err(crate::Error::invalid_attribute(
            name,
            format!("'{value}' is a multicast address; give a unicast one such as {example}"),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// A fresh random id of 8 lower-case hex digits, for the names vdev gives to what it creates
/// (node names, markers, tokens): drawn at random, so that two processes never depend on
/// agreeing on a counter.
pub fn random_hex() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_reads_and_others_do_not() {
        for t in ["1", "true", "yes", "on"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["0", "false", "no", "off"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for x in ["", "On", "2", "y", "enabled"] {
            assert_eq!(parse_bool(x), None, "{x}");
        }
        let (a, b) = (random_hex(), random_hex());
        assert_eq!(a.len(), 8);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn macs_read_one_way() {
        assert_eq!(
            unicast_mac("mac", "52:54:00:AB:CD:EF", "x").unwrap(),
            "52:54:00:ab:cd:ef"
        );
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:ef:01",
            "52-54-00-ab-cd-ef",
            "5:254:00:ab:cd:ef",
            "+2:54:00:ab:cd:ef",
            "52:54:00:ab:cd:eg",
            "52:54:00:ab:cd:ef:",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
            let e = unicast_mac("mac", bad, "52:54:00:12:34:56").unwrap_err();
            assert!(e.to_string().contains("not a MAC address"), "{bad}: {e}");
        }
        let e = unicast_mac("mac", "01:00:5e:00:00:01", "52:54:00:12:34:56").unwrap_err();
        assert!(e.to_string().contains("multicast"), "{e}");
    }
}
