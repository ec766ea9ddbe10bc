//! Entry points for the fuzz targets (`fuzz/`, feature `fuzzing`): what libvirt (or anyone who
//! defined the domain) may have written in a domain's XML, fed with arbitrary text. Not a public
//! API.

use std::collections::BTreeSet;

use vdev_core::Attributes;

use crate::listing::Definitions;
use crate::xml;

/// A domain's XML as the listing, a detach and an update read it: parsed (the one-pass reader
/// giving what a tree gives, wherever the tree can read the text); each device element
/// read alone and, when it parses, written again, which must read back the same element; then
/// listed as a listing merges the live and the stored definitions: each reference once, even
/// from XML that repeats an alias (libvirt never does). `passthrough` is one `xml.PATH=VALUE` attribute applied to each element as attach
/// applies it: refused with an error or written, never a panic.
pub fn domain_xml(text: &str, passthrough: (&str, &str)) {
    crate::read_tree::assert_readings_agree(text);
    let Ok(dom) = xml::parse_domain(text.to_owned()) else {
        return;
    };
    let extra =
        Attributes::from_pairs([(format!("xml.{}", passthrough.0), passthrough.1.to_owned())]).ok();
    for dev in &dom.devices {
        let _ = dev.identity();
        let Ok(mut el) = dev.el() else { continue };
        let written = el.to_xml();
        let doc = roxmltree::Document::parse(&written).expect("what vdev writes parses");
        assert_eq!(
            xml::El::from_node(doc.root_element()),
            el,
            "an element written reads back the same: {written}"
        );
        if let Some(a) = &extra {
            if el.apply_passthrough(a).is_ok() {
                let again = el.to_xml();
                roxmltree::Document::parse(&again).expect("a pass-through result parses");
            }
        }
    }
    let live = dom.running.then(|| dom.clone());
    let listed = Definitions {
        live,
        stored: Some(dom),
    }
    .listed(None, |_, _| {});
    let mut seen = BTreeSet::new();
    for d in &listed {
        assert!(
            seen.insert((d.device_type.clone(), d.reference.clone())),
            "listed twice: {} {}",
            d.device_type,
            d.reference
        );
    }
}
