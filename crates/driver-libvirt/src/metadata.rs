//! Pending removals, recorded in the domain's own libvirt metadata so that every process that
//! reads the domain (any vdev, `virsh dumpxml`) sees them: one element per device, each in a
//! namespace of its own, kept in the live definition only (a removal is pending only on a
//! running domain).
//!
//! ```xml
//! <metadata>
//!   <vdev:removal xmlns:vdev="urn:vdev:libvirt:removal:1:disk:ua-disk-1f2e3d4c"
//!     type="disk" ref="ua-disk-1f2e3d4c" state="pending" at="1764840000"/>
//!   <vdev:removal xmlns:vdev="urn:vdev:libvirt:removal:1:disk:ua-disk-0badcafe"
//!     type="disk" ref="ua-disk-0badcafe" state="gone" at="1764840090"/>
//! </metadata>
//! ```
//!
//! libvirt keys metadata elements by namespace, and `virDomainSetMetadata` replaces the one
//! element of its namespace: so a process recording one device's removal never rewrites another
//! device's record, whatever other processes do at the same moment (design 0015, "Pending across
//! processes"). One list in one element, as an earlier version kept, lost records when two
//! processes wrote it at once.
//!
//! A removal is `pending` from the deadline of the detach that asked until the device goes;
//! then `gone`, a tombstone that lets the next detach of that reference say the device is gone
//! (rather than "not found") and is dropped by it, or after [`TOMBSTONE_SECS`] by the next
//! change of any record of the domain.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::xml::El;

/// What every record's namespace starts with; the device's type and reference follow.
const NAMESPACE_BASE: &str = "urn:vdev:libvirt:removal:1:";
/// The prefix libvirt writes for it.
pub(crate) const PREFIX: &str = "vdev";
/// How long a `gone` record is kept for the next detach to find.
pub(crate) const TOMBSTONE_SECS: u64 = 3600;

/// One recorded removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub device_type: String,
    pub reference: String,
    /// The device has gone since (a tombstone).
    pub gone: bool,
    /// When the state was recorded (seconds since the epoch).
    pub at: u64,
}

impl Record {
    pub(crate) fn is(&self, device_type: &str, reference: &str) -> bool {
        self.device_type == device_type && self.reference == reference
    }

    /// A tombstone kept past [`TOMBSTONE_SECS`] at `now`.
    pub(crate) fn expired(&self, now: u64) -> bool {
        self.gone && now.saturating_sub(self.at) >= TOMBSTONE_SECS
    }

    /// Its element, to store under [`namespace`] of its type and reference (libvirt adds the
    /// namespace).
    pub(crate) fn element(&self) -> String {
        El::new("removal")
            .attr("type", &self.device_type)
            .attr("ref", &self.reference)
            .attr("state", if self.gone { "gone" } else { "pending" })
            .attr("at", &self.at.to_string())
            .to_xml()
    }
}

/// The namespace of the record of the removal of device `reference` of type `device_type`:
/// characters a URN does not take as they are (anything but ASCII letters, digits, `.`, `_`
/// and `-`) are percent-encoded.
pub(crate) fn namespace(device_type: &str, reference: &str) -> String {
    let mut ns = String::from(NAMESPACE_BASE);
    for (i, part) in [device_type, reference].into_iter().enumerate() {
        if i > 0 {
            ns.push(':');
        }
        for b in part.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                ns.push(b as char);
            } else {
                ns.push_str(&format!("%{b:02X}"));
            }
        }
    }
    ns
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn record(n: roxmltree::Node<'_, '_>) -> Option<Record> {
    if !(n.is_element() && n.tag_name().name() == "removal") {
        return None;
    }
    Some(Record {
        device_type: n.attribute("type")?.to_owned(),
        reference: n.attribute("ref")?.to_owned(),
        gone: n.attribute("state") == Some("gone"),
        at: n.attribute("at").and_then(|v| v.parse().ok()).unwrap_or(0),
    })
}

/// The removals recorded under a domain XML's `<metadata>`.
pub(crate) fn read(metadata: roxmltree::Node<'_, '_>) -> Vec<Record> {
    metadata
        .children()
        .filter(|n| {
            n.tag_name()
                .namespace()
                .is_some_and(|ns| ns.starts_with(NAMESPACE_BASE))
        })
        .filter_map(|n| {
            // A record is believed only under its own namespace.
            record(n).filter(|r| {
                n.tag_name().namespace() == Some(namespace(&r.device_type, &r.reference).as_str())
            })
        })
        .collect()
}

/// The record in metadata text as `virDomainGetMetadata` returns it for its namespace: the
/// element alone, without the namespace (libvirt drops it).
pub(crate) fn parse_fetched(text: &str) -> Option<Record> {
    let doc = roxmltree::Document::parse(text).ok()?;
    record(doc.root_element())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(r: &str, gone: bool, at: u64) -> Record {
        Record {
            device_type: "disk".into(),
            reference: r.into(),
            gone,
            at,
        }
    }

    /// As libvirt stores an element under a namespace (the prefix declared on it).
    fn stored(r: &Record) -> String {
        r.element().replacen(
            "<removal ",
            &format!(
                "<{PREFIX}:removal xmlns:{PREFIX}=\"{}\" ",
                namespace(&r.device_type, &r.reference)
            ),
            1,
        )
    }

    #[test]
    fn written_and_read_back() {
        let p = rec("ua-disk-1", false, 100);
        assert_eq!(
            p.element(),
            "<removal type='disk' ref='ua-disk-1' state='pending' at='100'/>"
        );
        // virDomainGetMetadata answers the element without its namespace.
        assert_eq!(parse_fetched(&p.element()), Some(p.clone()));
        assert_eq!(parse_fetched(&stored(&p)), Some(p));
        let g = rec("ua-disk-2", true, 100);
        assert_eq!(parse_fetched(&g.element()), Some(g));
    }

    #[test]
    fn each_record_is_read_only_under_its_own_namespace() {
        let (a, b) = (rec("ua-a", false, 1), rec("ua-b", true, 2));
        let xml = format!(
            "<domain><metadata>{}{}<other xmlns='urn:x'/>\
             <vdev:removal xmlns:vdev='{}' type='disk' ref='ua-c' state='pending' at='3'/>\
             </metadata></domain>",
            stored(&a),
            stored(&b),
            namespace("disk", "ua-a"),
        );
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let md = doc.root_element().first_element_child().unwrap();
        // ua-c's record names ua-a's namespace: not believed.
        assert_eq!(read(md), vec![a, b]);
    }

    #[test]
    fn namespaces_are_one_per_device_and_escaped() {
        assert_eq!(
            namespace("disk", "ua-disk-1"),
            "urn:vdev:libvirt:removal:1:disk:ua-disk-1"
        );
        assert_ne!(namespace("disk", "a"), namespace("network", "a"));
        assert_eq!(
            namespace("disk", "a:b c"),
            "urn:vdev:libvirt:removal:1:disk:a%3Ab%20c"
        );
    }

    #[test]
    fn tombstones_expire_pending_records_never() {
        assert!(!rec("a", false, 0).expired(TOMBSTONE_SECS + 1));
        assert!(rec("b", true, 0).expired(TOMBSTONE_SECS));
        assert!(!rec("b", true, 1).expired(TOMBSTONE_SECS));
    }
}
