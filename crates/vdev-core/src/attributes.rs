//! Device attributes: opaque name/value strings, validated in one place.
//!
//! The core never interprets attribute values: drivers own any conversion (QEMU turns them into
//! typed JSON, Xen writes them as they are). What the core does guarantee, for every driver, is
//! that names and values are well-formed, so that no driver can be handed a name such as `../x`
//! or `a/b`, or a value with a NUL byte:
//!
//! | | rule |
//! |---|---|
//! | name | 1 to [`MAX_NAME_LEN`] bytes of `A-Z a-z 0-9 . _ -`; not starting with `.`, no `..` |
//! | value | at most [`MAX_VALUE_LEN`] bytes of UTF-8, no NUL |
//! | map | names unique, kept sorted by name (a deterministic order for writes and snapshots) |

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest attribute name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest attribute value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 2048;

/// A validated attribute name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AttrName(Cow<'static, str>);

impl AttrName {
    /// Validate a name (see the module docs for the rules).
    pub fn new(name: impl Into<Cow<'static, str>>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("the name is empty".to_owned())
        } else if name.len() > MAX_NAME_LEN {
            Some(format!(
                "the name is {} bytes long; at most {MAX_NAME_LEN} are allowed",
                name.len()
            ))
        } else if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            Some(format!(
                "the name contains '{}'; names use only A-Z, a-z, 0-9, '.', '_' and '-'",
                c.escape_default()
            ))
        } else if name.starts_with('.') || name.contains("..") {
            Some("a name may not start with '.' or contain '..'".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidAttribute {
                name: display_name(&name),
                reason,
            }),
            None => Ok(AttrName(name)),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name made safe to print in an error message.
fn display_name(name: &str) -> String {
    let mut s: String = name.chars().take(MAX_NAME_LEN).collect::<String>();
    if s.len() < name.len() {
        s.push_str("...");
    }
    s.escape_default().to_string()
}

impl fmt::Display for AttrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for AttrName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AttrName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        AttrName::new(s)
    }
}

impl From<AttrName> for String {
    fn from(n: AttrName) -> String {
        n.0.into_owned()
    }
}

/// A validated attribute value: an opaque string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AttrValue(Cow<'static, str>);

impl AttrValue {
    /// Validate a value; `name` is only used in the error message.
    pub fn new(name: &str, value: impl Into<Cow<'static, str>>) -> Result<Self> {
        let value = value.into();
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::InvalidAttribute {
                name: display_name(name),
                reason: format!(
                    "the value is {} bytes long; at most {MAX_VALUE_LEN} are allowed",
                    value.len()
                ),
            });
        }
        if value.contains('\0') {
            return Err(Error::InvalidAttribute {
                name: display_name(name),
                reason: "the value contains a NUL byte".into(),
            });
        }
        Ok(AttrValue(value))
    }

    /// The value as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AttrValue {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        AttrValue::new("value", s)
    }
}

impl From<AttrValue> for String {
    fn from(v: AttrValue) -> String {
        v.0.into_owned()
    }
}

/// An ordered map of unique attribute names to opaque values.
///
/// Cloning is cheap (the map is shared, copied on the first write), so drivers can hand out the
/// attributes of thousands of devices without copying strings.
///
/// ```
/// use vdev_core::Attributes;
/// let attrs = Attributes::from_pairs([("uname", "file:/img/a.raw"), ("dev", "xvdb"), ("mode", "w")])?;
/// assert_eq!(attrs.get("dev"), Some("xvdb"));
/// // Names that could form a path are refused.
/// assert!(Attributes::from_pairs([("../x", "1")]).is_err());
/// # Ok::<(), vdev_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attributes(Arc<BTreeMap<AttrName, AttrValue>>);

impl Attributes {
    /// An empty map.
    pub fn new() -> Self {
        Attributes(Arc::new(BTreeMap::new()))
    }

    /// Build a map from name/value pairs, validating each; a name given twice is an error.
    pub fn from_pairs<N, V, I>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<Cow<'static, str>>,
        V: Into<Cow<'static, str>>,
    {
        use std::collections::btree_map::Entry;
        // One search of the map per pair, and the map shared only once it is made.
        let mut map = BTreeMap::new();
        for (n, v) in pairs {
            match map.entry(AttrName::new(n)?) {
                Entry::Occupied(e) => {
                    return Err(Error::InvalidAttribute {
                        name: e.key().to_string(),
                        reason: "the attribute is given more than once; give each name once".into(),
                    })
                }
                Entry::Vacant(e) => {
                    let value = AttrValue::new(e.key().as_str(), v)?;
                    e.insert(value);
                }
            }
        }
        Ok(Attributes(Arc::new(map)))
    }

    /// Parse `NAME=VALUE` words, as typed on a command line.
    pub fn parse_assignments<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut pairs = Vec::new();
        for w in words {
            let Some((n, v)) = w.split_once('=') else {
                return Err(Error::InvalidAttribute {
                    name: display_name(w),
                    reason: "expected NAME=VALUE (for example dev=xvdb)".into(),
                });
            };
            pairs.push((n.to_owned(), v.to_owned()));
        }
        Attributes::from_pairs(pairs)
    }

    /// Set `name` to `value`, validating both; replaces an earlier value.
    pub fn insert(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Cow<'static, str>>,
    ) -> Result<()> {
        let name = AttrName::new(name)?;
        let value = AttrValue::new(name.as_str(), value)?;
        Arc::make_mut(&mut self.0).insert(name, value);
        Ok(())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(AttrValue::as_str)
    }

    /// Remove `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<AttrValue> {
        if !self.0.contains_key(name) {
            return None;
        }
        Arc::make_mut(&mut self.0).remove(name)
    }

    /// Whether `name` is set.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Name/value pairs in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.keys().map(AttrName::as_str)
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a AttrName, &'a AttrValue);
    type IntoIter = std::collections::btree_map::Iter<'a, AttrName, AttrValue>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
