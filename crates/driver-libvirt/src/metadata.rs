//! Pending removals, recorded in the domain's own libvirt metadata so that every process that
//! reads the domain (any vdev, `virsh dumpxml`) sees them: one element in vdev's namespace,
//! kept in the live definition only (a removal is pending only on a running domain).
//!
//! ```xml
//! <metadata>
//!   <vdev:pending xmlns:vdev="urn:vdev:libvirt:pending:1">
//!     <vdev:device type="disk" ref="ua-disk-1f2e3d4c"/>
//!   </vdev:pending>
//! </metadata>
//! ```

use crate::xml::El;

/// vdev's XML namespace in libvirt metadata.
pub(crate) const NAMESPACE: &str = "urn:vdev:libvirt:pending:1";
/// The prefix libvirt writes for it.
pub(crate) const PREFIX: &str = "vdev";

/// The pending removals recorded under `<metadata>`: (device type, ref).
pub(crate) fn read_pending(metadata: roxmltree::Node<'_, '_>) -> Vec<(String, String)> {
    metadata
        .children()
        .filter(|n| n.is_element() && n.tag_name().namespace() == Some(NAMESPACE))
        .flat_map(|p| p.children().filter(|n| n.is_element()))
        .filter(|n| n.tag_name().name() == "device")
        .filter_map(|n| {
            Some((
                n.attribute("type")?.to_owned(),
                n.attribute("ref")?.to_owned(),
            ))
        })
        .collect()
}

/// The element to store for `pending` (libvirt adds the namespace), or `None` to remove it.
pub(crate) fn pending_element(pending: &[(String, String)]) -> Option<String> {
    if pending.is_empty() {
        return None;
    }
    let mut root = El::new("pending");
    for (t, r) in pending {
        root = root.child(El::new("device").attr("type", t).attr("ref", r));
    }
    Some(root.to_xml())
}

/// The pending removals in metadata text as `virDomainGetMetadata` returns it (the element
/// without its namespace).
pub(crate) fn parse_fetched(text: &str) -> Vec<(String, String)> {
    let Ok(doc) = roxmltree::Document::parse(text) else {
        return Vec::new();
    };
    doc.root_element()
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "device")
        .filter_map(|n| {
            Some((
                n.attribute("type")?.to_owned(),
                n.attribute("ref")?.to_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_and_read_back() {
        let p = vec![("disk".to_owned(), "ua-disk-1".to_owned())];
        let el = pending_element(&p).unwrap();
        assert_eq!(
            el,
            "<pending><device type='disk' ref='ua-disk-1'/></pending>"
        );
        assert_eq!(parse_fetched(&el), p);
        assert_eq!(pending_element(&[]), None);
    }
}
