//! Pending removals, recorded in the domain's own libvirt metadata so that every process that
//! reads the domain (any vdev, `virsh dumpxml`) sees them: one element in vdev's namespace,
//! kept in the live definition only (a removal is pending only on a running domain).
//!
//! ```xml
//! <metadata>
//!   <vdev:removals xmlns:vdev="urn:vdev:libvirt:removals:1">
//!     <vdev:device type="disk" ref="ua-disk-1f2e3d4c" state="pending" at="1764840000"/>
//!     <vdev:device type="disk" ref="ua-disk-0badcafe" state="gone" at="1764840090"/>
//!   </vdev:removals>
//! </metadata>
//! ```
//!
//! A removal is `pending` from the deadline of the detach that asked until the device goes;
//! then `gone`, a tombstone that lets the next detach of that reference say the device is gone
//! (rather than "not found") and is dropped by it, or after [`TOMBSTONE_SECS`].

use std::time::{SystemTime, UNIX_EPOCH};

use crate::xml::El;

/// vdev's XML namespace in libvirt metadata.
pub(crate) const NAMESPACE: &str = "urn:vdev:libvirt:removals:1";
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
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn records<'a, 'i: 'a>(devices: impl Iterator<Item = roxmltree::Node<'a, 'i>>) -> Vec<Record> {
    devices
        .filter(|n| n.is_element() && n.tag_name().name() == "device")
        .filter_map(|n| {
            Some(Record {
                device_type: n.attribute("type")?.to_owned(),
                reference: n.attribute("ref")?.to_owned(),
                gone: n.attribute("state") == Some("gone"),
                at: n.attribute("at").and_then(|v| v.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// The removals recorded under a domain XML's `<metadata>`.
pub(crate) fn read(metadata: roxmltree::Node<'_, '_>) -> Vec<Record> {
    records(
        metadata
            .children()
            .filter(|n| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE))
            .flat_map(|p| p.children()),
    )
}

/// The removals in metadata text as `virDomainGetMetadata` returns it (the element alone).
pub(crate) fn parse_fetched(text: &str) -> Vec<Record> {
    match roxmltree::Document::parse(text) {
        Ok(doc) => records(doc.root_element().children()),
        Err(_) => Vec::new(),
    }
}

/// The element to store for `records` (libvirt adds the namespace), or `None` to remove it.
/// Tombstones older than [`TOMBSTONE_SECS`] are left out.
pub(crate) fn element(records: &[Record], now: u64) -> Option<String> {
    let kept: Vec<&Record> = records
        .iter()
        .filter(|r| !r.gone || now.saturating_sub(r.at) < TOMBSTONE_SECS)
        .collect();
    if kept.is_empty() {
        return None;
    }
    let mut root = El::new("removals");
    for r in kept {
        root = root.child(
            El::new("device")
                .attr("type", &r.device_type)
                .attr("ref", &r.reference)
                .attr("state", if r.gone { "gone" } else { "pending" })
                .attr("at", &r.at.to_string()),
        );
    }
    Some(root.to_xml())
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

    #[test]
    fn written_and_read_back() {
        let p = vec![rec("ua-disk-1", false, 100), rec("ua-disk-2", true, 100)];
        let el = element(&p, 200).unwrap();
        assert_eq!(
            el,
            "<removals><device type='disk' ref='ua-disk-1' state='pending' at='100'/>\
             <device type='disk' ref='ua-disk-2' state='gone' at='100'/></removals>"
        );
        assert_eq!(parse_fetched(&el), p);
        assert_eq!(element(&[], 0), None);
    }

    #[test]
    fn old_tombstones_are_dropped_pending_records_never() {
        let p = vec![rec("a", false, 0), rec("b", true, 0)];
        let el = element(&p, TOMBSTONE_SECS + 1).unwrap();
        assert!(el.contains("'a'") && !el.contains("'b'"), "{el}");
    }
}
