//! The small readings and makings every driver shares, written once: a boolean value read the one
//! way vdev reads booleans, and fresh random ids.

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
    match v {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The spellings [`parse_bool`] accepts, for messages.
pub const BOOL_SPELLINGS: &str = "on or off (also yes/no, true/false, 1/0)";

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
}
