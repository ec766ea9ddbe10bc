//! Connection URIs: `driver[+transport]://[user@][host][:port]/path[?options]`, as in libvirt.
//!
//! A driver that wraps another system whose URIs have their own `+transport` (libvirt) takes
//! `DRIVER+` followed by any URI of that system, passed on verbatim by
//! [`ConnectUri::inner_uri`]: `libvirt+qemu+ssh://host/system`.
//!
//! Parsed once, here, with the `url` crate. The core consumes the `readonly` option; every other
//! option belongs to the driver, which must refuse the ones it does not know
//! ([`ConnectUri::check_options`]).

use std::collections::BTreeMap;
use std::fmt;

use url::Url;

use crate::error::{Error, Result};

/// A parsed connection URI.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectUri {
    /// The URI as given, for [`ConnectUri::inner_uri`].
    raw: String,
    url: Url,
    driver: String,
    transport: Option<String>,
    options: BTreeMap<String, String>,
    /// The options a transport took out of `options` ([`ConnectUri::take_transport_options`]),
    /// named in [`ConnectUri::check_options`]'s message.
    transport_options: Vec<&'static str>,
    readonly: bool,
    single_caller: bool,
}

impl ConnectUri {
    /// Parse a URI.
    ///
    /// ```
    /// use vdev_core::ConnectUri;
    /// let u = ConnectUri::parse("qemu+tcp://admin@host:4444/vm1?timeout=5")?;
    /// assert_eq!(u.driver(), "qemu");
    /// assert_eq!(u.transport(), Some("tcp"));
    /// assert_eq!(u.host().as_deref(), Some("host"));
    /// assert_eq!(u.port(), Some(4444));
    /// assert_eq!(u.path(), "/vm1");
    /// assert_eq!(u.option("timeout"), Some("5"));
    /// # Ok::<(), vdev_core::Error>(())
    /// ```
    pub fn parse(uri: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUri {
            uri: redact(uri),
            reason,
        };
        let url = Url::parse(uri).map_err(|e| {
            invalid(format!(
                "{e}; write DRIVER[+TRANSPORT]://[HOST]/PATH, for example mock:///default"
            ))
        })?;
        if url.cannot_be_a_base() {
            return Err(invalid(format!(
                "missing '//' after '{}:'; write {}:///PATH (for example mock:///default)",
                url.scheme(),
                url.scheme()
            )));
        }
        let (driver, transport) = match url.scheme().split_once('+') {
            Some((d, t)) if !d.is_empty() && !t.is_empty() => (d.to_owned(), Some(t.to_owned())),
            Some(_) => {
                return Err(invalid(
                    "the scheme must be DRIVER or DRIVER+TRANSPORT, both non-empty".into(),
                ))
            }
            None => (url.scheme().to_owned(), None),
        };
        let mut options = BTreeMap::new();
        let mut readonly = false;
        for (k, v) in url.query_pairs() {
            if k == "readonly" {
                readonly = match v.as_ref() {
                    "" => true,
                    v => crate::parse_bool(v).ok_or_else(|| {
                        invalid(format!(
                            "readonly={v} is not a boolean; write ?readonly or ?readonly=on ({})",
                            crate::BOOL_SPELLINGS
                        ))
                    })?,
                };
                continue;
            }
            if options.insert(k.to_string(), v.to_string()).is_some() {
                return Err(invalid(format!("option '{k}' is given more than once")));
            }
        }
        Ok(ConnectUri {
            raw: uri.to_owned(),
            url,
            driver,
            transport,
            options,
            transport_options: Vec::new(),
            readonly,
            single_caller: false,
        })
    }

    /// The whole scheme, `driver+transport` or `driver`.
    pub fn scheme(&self) -> &str {
        self.url.scheme()
    }

    /// The driver part of the scheme (what drivers register).
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The transport part of the scheme (`tcp` in `qemu+tcp://`), if any.
    pub fn transport(&self) -> Option<&str> {
        self.transport.as_deref()
    }

    /// For a driver that wraps another system's URIs: the part after `DRIVER+`, verbatim, less
    /// vdev's own `readonly` option (which the driver honours itself), or `None` when the scheme
    /// has no `+`. `libvirt+qemu+ssh://root@host/system?socket=/s&readonly` gives
    /// `qemu+ssh://root@host/system?socket=/s`. Such a driver reads its options from that URI,
    /// not from [`ConnectUri::options`], and its [`ConnectUri::transport`] is the wrapped
    /// system's scheme (`qemu+ssh`), not a transport of vdev's.
    ///
    /// ```
    /// use vdev_core::ConnectUri;
    /// let u = ConnectUri::parse("libvirt+qemu+ssh://root@host/system?socket=/s&readonly")?;
    /// assert_eq!(u.driver(), "libvirt");
    /// assert!(u.is_read_only());
    /// assert_eq!(u.inner_uri().as_deref(), Some("qemu+ssh://root@host/system?socket=/s"));
    /// # Ok::<(), vdev_core::Error>(())
    /// ```
    pub fn inner_uri(&self) -> Option<String> {
        let (_, inner) = self.raw.split_once('+')?;
        let Some((head, query)) = inner.split_once('?') else {
            return Some(inner.to_owned());
        };
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| {
                let key = p.split_once('=').map_or(*p, |(k, _)| k);
                !key.is_empty() && key != "readonly"
            })
            .collect();
        let mut out = head.to_owned();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
        Some(out)
    }

    /// The user name, percent-decoded, if any.
    pub fn user(&self) -> Option<String> {
        Some(self.url.username())
            .filter(|u| !u.is_empty())
            .map(percent_decode)
    }

    /// The host, if any (`None` for `mock:///default`): percent-decoded, an IPv6 address without
    /// its brackets (`::1` for `qemu+tcp://[::1]:4444`).
    ///
    /// ```
    /// use vdev_core::ConnectUri;
    /// let u = ConnectUri::parse("qemu+tcp://[::1]:4444")?;
    /// assert_eq!(u.host().as_deref(), Some("::1"));
    /// # Ok::<(), vdev_core::Error>(())
    /// ```
    pub fn host(&self) -> Option<String> {
        self.url
            .host_str()
            .filter(|h| !h.is_empty())
            .map(|h| percent_decode(h.trim_start_matches('[').trim_end_matches(']')))
    }

    /// The port, if any.
    pub fn port(&self) -> Option<u16> {
        self.url.port()
    }

    /// The path, percent-decoded (`/default` for `mock:///default`).
    pub fn path(&self) -> String {
        percent_decode(self.url.path())
    }

    /// Every option the driver gets (all query parameters except `readonly`).
    pub fn options(&self) -> &BTreeMap<String, String> {
        &self.options
    }

    /// One option's value.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// Set option `name` to `value`, as if the URI had `?name=value` (replacing a value it had):
    /// for a program that fills in its own defaults, such as the `vdev` command's `persist=`
    /// for `+ssh` URIs.
    pub fn set_option(&mut self, name: &str, value: &str) {
        self.options.insert(name.to_owned(), value.to_owned());
    }

    /// Whether the URI asked for a read-only connection (`?readonly`).
    pub fn is_read_only(&self) -> bool {
        self.readonly
    }

    /// Ask for a read-only connection.
    pub fn set_read_only(&mut self, readonly: bool) {
        self.readonly = readonly;
    }

    /// Whether the program said it is a single caller ([`ConnectUri::set_single_caller`]).
    pub fn is_single_caller(&self) -> bool {
        self.single_caller
    }

    /// Say that the program is a single caller: it makes one call at a time and awaits it
    /// before the next, on an async runtime that has nothing else to run meanwhile (a one-shot
    /// command on a current-thread runtime, as the `vdev` command). A driver whose hypervisor
    /// library blocks may then block the caller's thread for a call instead of handing it to
    /// another thread (the libvirt driver: about 1 ms less for a one-shot listing or attach, and
    /// no thread started for them). Not a URI option: a promise a program makes about itself;
    /// off by default. The `vdev` command makes it for every command but `watch`.
    pub fn set_single_caller(&mut self, single: bool) {
        self.single_caller = single;
    }

    /// Refuse options that are not in `known`, naming the ones that are (and those the
    /// transport took, if it took any).
    pub fn check_options(&self, known: &[&str]) -> Result<()> {
        match self.options.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err(self.invalid(format!(
                "unknown option '{k}' for the {} driver; known options: {}{}",
                self.driver,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                },
                match (&self.transport, self.transport_options.is_empty()) {
                    (Some(t), false) => format!(
                        " (and the {t} transport's: {})",
                        self.transport_options.join(", ")
                    ),
                    _ => String::new(),
                }
            ))),
        }
    }

    /// Take the options named in `names` out of the URI, for the transport that reads them: the
    /// driver's [`ConnectUri::check_options`] then sees only its own options (and names these
    /// as the transport's when it refuses one). Returns the options taken, by name.
    pub fn take_transport_options(
        &mut self,
        names: &'static [&'static str],
    ) -> BTreeMap<String, String> {
        self.transport_options.extend_from_slice(names);
        let mut taken = BTreeMap::new();
        for n in names {
            if let Some(v) = self.options.remove(*n) {
                taken.insert((*n).to_owned(), v);
            }
        }
        taken
    }

    /// The boolean option `name` ([`parse_bool`](crate::parse_bool)'s spellings; given with
    /// no value, `?name`, it is true), or `None` when absent; `what` says what the option does,
    /// for the message that refuses a value that is not a boolean.
    pub fn bool_option(&self, name: &str, what: &str) -> Result<Option<bool>> {
        match self.option(name) {
            None => Ok(None),
            Some("") => Ok(Some(true)),
            Some(v) => crate::parse_bool(v).map(Some).ok_or_else(|| {
                self.invalid(format!(
                    "{name}={v} is not a boolean: write {name}=on {what}, or {name}=off ({})",
                    crate::BOOL_SPELLINGS
                ))
            }),
        }
    }

    /// The duration option `name` (`500ms`, `5s`, `2m`, as `humantime` reads them), or `default`
    /// when absent. Values outside `range` (both ends included) are refused with an
    /// [`Error::InvalidUri`] that names the bounds, never a panic: every duration a driver uses
    /// to compute a deadline must have a documented upper bound, since `Instant + Duration`
    /// overflows (and panics) for absurd values.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vdev_core::ConnectUri;
    /// let range = Duration::from_millis(1)..=Duration::from_secs(3600);
    /// let u = ConnectUri::parse("qemu:///vm.qmp?timeout=5s")?;
    /// assert_eq!(u.duration_option("timeout", Duration::from_secs(10), range.clone())?, Duration::from_secs(5));
    /// let u = ConnectUri::parse("qemu:///vm.qmp?timeout=10000000000000000000s")?;
    /// assert!(u.duration_option("timeout", Duration::from_secs(10), range).is_err());
    /// # Ok::<(), vdev_core::Error>(())
    /// ```
    pub fn duration_option(
        &self,
        name: &str,
        default: std::time::Duration,
        range: std::ops::RangeInclusive<std::time::Duration>,
    ) -> Result<std::time::Duration> {
        let Some(v) = self.option(name) else {
            return Ok(default);
        };
        let bounds = format!(
            "between {} and {}",
            humantime::format_duration(*range.start()),
            humantime::format_duration(*range.end())
        );
        match humantime::parse_duration(v) {
            Ok(d) if range.contains(&d) => Ok(d),
            Ok(_) => Err(self.invalid(format!("{name}={v} is out of range: give a duration {bounds}"))),
            Err(e) => Err(self.invalid(format!(
                "{name}={v} is not a duration ({e}); give a duration {bounds}, for example {name}=5s"
            ))),
        }
    }

    /// An [`Error::InvalidUri`] about this URI, for drivers to report what they cannot use.
    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidUri {
            uri: self.to_string(),
            reason: reason.into(),
        }
    }
}

/// The URI without its password.
impl fmt::Display for ConnectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(self.url.as_str()))
    }
}

impl fmt::Debug for ConnectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectUri({self})")
    }
}

/// Remove a password from a URI string, if one is there.
fn redact(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => uri.to_owned(),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
