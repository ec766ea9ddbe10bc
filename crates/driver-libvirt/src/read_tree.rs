//! The reading of a domain's XML as [`crate::read`] did it before, over a `roxmltree` tree:
//! kept for the tests and the `libvirt_xml` fuzz target, which check that both readings agree
//! (the tree is the reference: it is a complete XML parser). Not used by the driver.

use vdev_core::{Error, Result};

use crate::metadata;
use crate::xml::{DevXml, DomXml, Kind};

/// Read a domain's XML as a tree.
pub(crate) fn parse_domain_tree(xml: &str) -> Result<DomXml> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| {
        Error::backend_with(
            crate::NAME,
            "libvirt returned domain XML that does not parse",
            e,
        )
    })?;
    let text: std::sync::Arc<String> = std::sync::Arc::new(xml.to_owned());
    let root = doc.root_element();
    let mut d = DomXml {
        running: root.attribute("id").is_some_and(|id| id != "-1"),
        hypervisor: root.attribute("type").unwrap_or_default().to_owned(),
        ..DomXml::default()
    };
    for top in root.children().filter(|n| n.is_element()) {
        match top.tag_name().name() {
            "metadata" => d.removals = metadata::read(top),
            "devices" => {
                for n in top.children().filter(|n| n.is_element()) {
                    match n.tag_name().name() {
                        "disk" => {
                            let (dev, unit) = disk(n, &text);
                            d.scsi_units.extend(unit);
                            d.devices.push(dev);
                        }
                        "interface" => d.devices.push(nic(n, &text)),
                        "controller" if n.attribute("type") == Some("scsi") => {
                            if let Some(i) = n.attribute("index").and_then(|v| v.parse().ok()) {
                                d.scsi_controllers.push(i);
                            }
                        }
                        "emulator" => d.emulator = n.text().map(|t| t.trim().to_owned()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(d)
}

/// The children of a device element vdev reads, found in one pass.
#[derive(Default)]
struct Parts<'a, 'i> {
    source: Option<roxmltree::Node<'a, 'i>>,
    target: Option<roxmltree::Node<'a, 'i>>,
    driver: Option<roxmltree::Node<'a, 'i>>,
    readonly: bool,
    serial: Option<roxmltree::Node<'a, 'i>>,
    alias: Option<roxmltree::Node<'a, 'i>>,
    address: Option<roxmltree::Node<'a, 'i>>,
    mac: Option<roxmltree::Node<'a, 'i>>,
    model: Option<roxmltree::Node<'a, 'i>>,
    link: Option<roxmltree::Node<'a, 'i>>,
}

fn parts<'a, 'i>(n: roxmltree::Node<'a, 'i>) -> Parts<'a, 'i> {
    let mut p = Parts::default();
    for c in n.children().filter(|c| c.is_element()) {
        let slot = match c.tag_name().name() {
            "source" => &mut p.source,
            "target" => &mut p.target,
            "driver" => &mut p.driver,
            "serial" => &mut p.serial,
            "alias" => &mut p.alias,
            "address" => &mut p.address,
            "mac" => &mut p.mac,
            "model" => &mut p.model,
            "link" => &mut p.link,
            "readonly" => {
                p.readonly = true;
                continue;
            }
            _ => continue,
        };
        slot.get_or_insert(c);
    }
    p
}

/// A disk, and its SCSI (controller, unit) where it has a drive address on a SCSI bus.
fn disk(n: roxmltree::Node<'_, '_>, text: &std::sync::Arc<String>) -> (DevXml, Option<(u32, u32)>) {
    let p = parts(n);
    let mut attrs = Vec::with_capacity(10);
    let mut put = |k: &'static str, v: Option<&str>| {
        if let Some(v) = v {
            attrs.push((k, v.to_owned()));
        }
    };
    put(
        "source",
        p.source.and_then(|s| {
            s.attribute("file")
                .or_else(|| s.attribute("dev"))
                .or_else(|| s.attribute("name"))
                .or_else(|| s.attribute("volume"))
        }),
    );
    put("type", n.attribute("type"));
    put("format", p.driver.and_then(|d| d.attribute("type")));
    put("media", n.attribute("device"));
    let bus = p.target.and_then(|t| t.attribute("bus"));
    put("bus", bus);
    let target = p.target.and_then(|t| t.attribute("dev"));
    put("target", target);
    put("readonly", Some(if p.readonly { "true" } else { "false" }));
    put("serial", p.serial.and_then(|s| s.text()));
    if n.attribute("device") == Some("cdrom") {
        put("tray", p.target.and_then(|t| t.attribute("tray")));
    }
    let unit = p
        .address
        .filter(|a| a.attribute("type") == Some("drive") && bus == Some("scsi"))
        .and_then(|a| {
            let num = |k| a.attribute(k).and_then(|v: &str| v.parse().ok());
            Some((num("controller")?, num("unit")?))
        });
    let dev = DevXml {
        kind: Kind::Disk,
        alias: p.alias.and_then(|a| a.attribute("name")).map(str::to_owned),
        key: target.unwrap_or_default().to_owned(),
        attrs,
        text: text.clone(),
        range: n.range(),
    };
    (dev, unit)
}

fn nic(n: roxmltree::Node<'_, '_>, text: &std::sync::Arc<String>) -> DevXml {
    let p = parts(n);
    let mut attrs = Vec::with_capacity(7);
    let mut put = |k: &'static str, v: Option<&str>| {
        if let Some(v) = v {
            attrs.push((k, v.to_owned()));
        }
    };
    put("netdev", n.attribute("type"));
    put(
        "source",
        p.source.and_then(|s| {
            s.attribute("network")
                .or_else(|| s.attribute("bridge"))
                .or_else(|| s.attribute("dev"))
        }),
    );
    put("model", p.model.and_then(|m| m.attribute("type")));
    let mac = p.mac.and_then(|m| m.attribute("address"));
    put("mac", mac);
    put(
        "link",
        Some(p.link.and_then(|l| l.attribute("state")).unwrap_or("up")),
    );
    put("ifname", p.target.and_then(|t| t.attribute("dev")));
    DevXml {
        kind: Kind::Nic,
        alias: p.alias.and_then(|a| a.attribute("name")).map(str::to_owned),
        key: mac.unwrap_or_default().to_ascii_lowercase(),
        attrs,
        text: text.clone(),
        range: n.range(),
    }
}

/// What a reading gives, in a form two readings can be compared in.
fn summary(d: &DomXml) -> String {
    let mut s = format!(
        "running {} hypervisor {:?} emulator {:?} scsi {:?} units {:?} removals {:?}\n",
        d.running, d.hypervisor, d.emulator, d.scsi_controllers, d.scsi_units, d.removals
    );
    for dev in &d.devices {
        let mut attrs = dev.attrs.clone();
        attrs.sort();
        s += &format!(
            "{:?} {:?} {:?} {:?} {:?}\n",
            dev.kind, dev.alias, dev.key, attrs, dev.range
        );
    }
    s
}

/// The reader's reading of `xml` is the tree's, where the tree can read it; the reader's
/// reading of the keys only is its full reading without the attributes, wherever the reader
/// reads it. Panics otherwise.
pub(crate) fn assert_readings_agree(xml: &str) {
    use crate::read::{parse_domain_with, Detail};
    match (
        parse_domain_with(xml.to_owned(), Detail::Listing),
        parse_domain_with(xml.to_owned(), Detail::Keys),
    ) {
        (Ok(mut full), Ok(keys)) => {
            assert!(keys.devices.iter().all(|d| d.attrs.is_empty()));
            full.devices.iter_mut().for_each(|d| d.attrs.clear());
            assert_eq!(
                summary(&keys),
                summary(&full),
                "the keys of {xml:?} are not the full reading's"
            );
        }
        (Err(_), Err(_)) => {}
        (full, keys) => panic!(
            "one reading of {xml:?} refused it: full {:?}, keys {:?}",
            full.err(),
            keys.err()
        ),
    }
    let Ok(tree) = parse_domain_tree(xml) else {
        return;
    };
    match crate::read::parse_domain(xml.to_owned()) {
        Ok(read) => assert_eq!(
            summary(&read),
            summary(&tree),
            "the readings of {xml:?} differ"
        ),
        Err(e) => panic!("the reader refused what the tree reads: {e}: {xml:?}"),
    }
}
