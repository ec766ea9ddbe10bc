//! Reading a domain's XML in one pass, with `quick-xml`'s pull reader: only what vdev lists is
//! taken (the root's `id` and `type`, vdev's metadata, the devices' elements and their direct
//! children), and nothing is built for the rest of the document. A listing of a domain with
//! hundreds of disks spends most of its time here; see docs/design/0015 ("Reading the XML").
//!
//! Values are read as an XML reader gives them: entities and character references resolved,
//! attribute values normalised (XML 1.0, §3.3.3). A device's element is kept as a range of the
//! document's text, parsed as a tree only when a detach or an update needs it
//! ([`DevXml::el`](crate::xml::DevXml::el)).

use std::borrow::Cow;
use std::sync::Arc;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use vdev_core::{Error, Result};

use crate::metadata;
use crate::xml::{DevXml, DomXml, Kind};

/// The children of a device element vdev reads: the first of each name.
#[derive(Default)]
struct Parts<'a> {
    source: Option<BytesStart<'a>>,
    target: Option<BytesStart<'a>>,
    driver: Option<BytesStart<'a>>,
    readonly: bool,
    serial_seen: bool,
    serial: Option<String>,
    alias: Option<BytesStart<'a>>,
    address: Option<BytesStart<'a>>,
    mac: Option<BytesStart<'a>>,
    model: Option<BytesStart<'a>>,
    link: Option<BytesStart<'a>>,
}

impl<'a> Parts<'a> {
    /// Keep `child` (a direct child of the device) if it is the first of a name vdev reads.
    /// Whether its text is wanted (a first `serial`).
    fn keep(&mut self, child: &BytesStart<'a>) -> bool {
        let slot = match child.local_name().as_ref() {
            "source" => &mut self.source,
            "target" => &mut self.target,
            "driver" => &mut self.driver,
            "alias" => &mut self.alias,
            "address" => &mut self.address,
            "mac" => &mut self.mac,
            "model" => &mut self.model,
            "link" => &mut self.link,
            "readonly" => {
                self.readonly = true;
                return false;
            }
            "serial" => return !std::mem::replace(&mut self.serial_seen, true),
            _ => return false,
        };
        if slot.is_none() {
            *slot = Some(child.clone());
        }
        false
    }
}

/// The value of attribute `name` of `e`, as a reader gives it. An empty prefix (`:file`) is
/// no prefix, as the tree reads it.
fn attr<'b>(e: Option<&'b BytesStart<'_>>, name: &str) -> Option<Cow<'b, str>> {
    let a = e?.attributes().with_checks(false).flatten().find(|a| {
        let key: &str = a.key.as_ref();
        key == name || key.strip_prefix(':') == Some(name)
    })?;
    match a.normalized_value(quick_xml::XmlVersion::Implicit1_0) {
        Ok(v) => Some(v),
        Err(_) => lenient(&a.value).map(Cow::Owned),
    }
}

/// A value with a reference the reader refuses, read as a tree reads it: a character
/// reference to what is not a character (`&#xFFFFFF;`) is U+FFFD; an unknown entity leaves no
/// value.
fn lenient(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let c = rest[i..].chars().next().expect("found");
        if c != '&' {
            // Literal white space is normalised; `\r\n` counts once, a `\r` alone too.
            out.push(' ');
            let after = &rest[i + 1..];
            rest = match c {
                '\r' => after.strip_prefix('\n').unwrap_or(after),
                _ => after,
            };
            continue;
        }
        let end = rest[i..].find(';')? + i;
        let name = &rest[i + 1..end];
        let code = match name.strip_prefix("#x") {
            Some(hex) => Some(u32::from_str_radix(hex, 16).ok()),
            None => name.strip_prefix('#').map(|dec| dec.parse().ok()),
        };
        match code {
            Some(n) => out.push(n.and_then(char::from_u32).unwrap_or('\u{fffd}')),
            None => out.push_str(quick_xml::escape::resolve_predefined_entity(name)?),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// The first of `names` that `e` has.
fn first_attr<'b>(e: Option<&'b BytesStart<'_>>, names: &[&str]) -> Option<Cow<'b, str>> {
    names.iter().find_map(|n| attr(e, n))
}

/// A device element being read: its kind, its own attributes, its children so far, where it
/// starts.
struct Open<'a> {
    kind: Kind,
    el: BytesStart<'a>,
    parts: Parts<'a>,
    start: usize,
}

fn unparsable(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend_with(
        crate::NAME,
        "libvirt returned domain XML that does not parse",
        e,
    )
}

/// What is wrong with a document the reader took apart without an error.
#[derive(Debug, thiserror::Error)]
enum Malformed {
    #[error("the document does not have exactly one root element")]
    Root,
    #[error("the entity &{0}; is not one of XML's own")]
    Entity(String),
    #[error("a second byte order mark (U+FEFF) comes before the root element")]
    SecondMark,
}

/// How much of each device a reading takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Detail {
    /// Everything a listing shows: each device's attributes too.
    #[default]
    Listing,
    /// What an attach chooses a free target, unit and MAC by: each device's kind, alias and
    /// key, and the SCSI addresses; no attributes (`DevXml::attrs` is empty).
    Keys,
}

/// Read a domain's XML (see the module's documentation), each device with its attributes.
pub(crate) fn parse_domain(xml: String) -> Result<DomXml> {
    parse_domain_with(xml, Detail::Listing)
}

/// Read a domain's XML, taking `detail` of each device.
pub(crate) fn parse_domain_with(xml: String, detail: Detail) -> Result<DomXml> {
    let text: Arc<String> = Arc::new(xml);
    // The reader counts positions after a byte order mark: read what follows it. It would skip
    // a second mark too, uncounted, and every position after it would be 3 bytes off; a mark
    // is no character the document may have before its root anyway.
    let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if body.starts_with('\u{feff}') {
        return Err(unparsable(Malformed::SecondMark));
    }
    let base = text.len() - body.len();
    let mut reader = Reader::from_str(body);
    // Elements are matched by depth; a tree reader is lenient about end tags that spell the
    // name differently (`</:disk>`), and so is this one.
    reader.config_mut().check_end_names = false;
    let mut d = DomXml::default();
    let mut st = State {
        detail,
        ..State::default()
    };
    loop {
        let before = base + reader.buffer_position() as usize;
        let ev = reader.read_event().map_err(unparsable)?;
        let after = base + reader.buffer_position() as usize;
        match ev {
            Event::Start(e) => st.start(&mut d, &text, e, false, before, after)?,
            Event::Empty(e) => st.start(&mut d, &text, e, true, before, after)?,
            Event::End(_) => st.end(&mut d, &text, after),
            Event::Text(t) => st.push_text(&t.xml10_content()),
            Event::CData(t) => st.push_text(&t),
            Event::GeneralRef(g) => {
                if st.collecting.is_some() {
                    let name = g.xml10_content();
                    if name.starts_with('#') {
                        // A reference to what is not a character (`&#xa33333;`) is U+FFFD, as
                        // the tree reads it (and as `lenient` reads one in a value).
                        let c = g.resolve_char_ref().ok().flatten().unwrap_or('\u{fffd}');
                        st.push_text(c.encode_utf8(&mut [0; 4]));
                    } else {
                        let v = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| unparsable(Malformed::Entity(name.into_owned())))?;
                        st.push_text(v);
                    }
                }
            }
            Event::Comment(_) => st.end_text(&mut d),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if !st.root_seen || st.depth != 0 {
        return Err(unparsable(Malformed::Root));
    }
    Ok(d)
}

/// Where the reader is.
#[derive(Default)]
struct State<'a> {
    /// Elements open, the root being 1.
    depth: usize,
    root_seen: bool,
    in_devices: bool,
    metadata_start: Option<usize>,
    device: Option<Open<'a>>,
    /// A text being read: its element's depth, whether it is the emulator's (else a device's
    /// serial), the text so far.
    collecting: Option<(usize, bool, String)>,
    /// How much of each device is taken.
    detail: Detail,
}

impl<'a> State<'a> {
    fn start(
        &mut self,
        d: &mut DomXml,
        text: &Arc<String>,
        e: BytesStart<'a>,
        empty: bool,
        before: usize,
        after: usize,
    ) -> Result<()> {
        // A child element ends the text of its parent (a tree's first text node).
        self.end_text(d);
        self.depth += 1;
        match self.depth {
            1 => {
                if self.root_seen {
                    return Err(unparsable(Malformed::Root));
                }
                self.root_seen = true;
                d.running = attr(Some(&e), "id").is_some_and(|id| id != "-1");
                d.hypervisor = attr(Some(&e), "type").unwrap_or_default().into_owned();
            }
            2 => match e.local_name().as_ref() {
                "metadata" if !empty => self.metadata_start = Some(before),
                "devices" if !empty => self.in_devices = true,
                _ => {}
            },
            3 if self.in_devices => match e.local_name().as_ref() {
                name @ ("disk" | "interface") => {
                    let open = Open {
                        kind: if name == "disk" {
                            Kind::Disk
                        } else {
                            Kind::Nic
                        },
                        el: e.clone(),
                        parts: Parts::default(),
                        start: before,
                    };
                    if empty {
                        push_device(d, open, text, after, self.keys_only());
                    } else {
                        self.device = Some(open);
                    }
                }
                "controller" if attr(Some(&e), "type").as_deref() == Some("scsi") => {
                    if let Some(i) = attr(Some(&e), "index").and_then(|v| v.parse().ok()) {
                        d.scsi_controllers.push(i);
                    }
                }
                "emulator" if !empty => self.collecting = Some((3, true, String::new())),
                _ => {}
            },
            4 => {
                if let Some(dev) = &mut self.device {
                    if dev.parts.keep(&e) && !empty {
                        self.collecting = Some((4, false, String::new()));
                    }
                }
            }
            _ => {}
        }
        if empty {
            self.depth -= 1;
        }
        Ok(())
    }

    fn end(&mut self, d: &mut DomXml, text: &Arc<String>, after: usize) {
        self.end_text(d);
        match self.depth {
            2 => {
                self.in_devices = false;
                if let Some(start) = self.metadata_start.take() {
                    d.removals = read_metadata(&text[start..after]);
                }
            }
            3 => {
                if let Some(open) = self.device.take() {
                    push_device(d, open, text, after, self.keys_only());
                }
            }
            _ => {}
        }
        self.depth = self.depth.saturating_sub(1);
    }

    fn keys_only(&self) -> bool {
        self.detail == Detail::Keys
    }

    fn push_text(&mut self, t: &str) {
        if let Some((_, _, s)) = &mut self.collecting {
            s.push_str(t);
        }
    }

    /// The text being read is complete: kept where it belongs.
    fn end_text(&mut self, d: &mut DomXml) {
        let Some((_, emulator, t)) = self.collecting.take() else {
            return;
        };
        // An element without text has none (`<serial></serial>` as `<serial/>`).
        if t.is_empty() {
            return;
        }
        if emulator {
            d.emulator = Some(t.trim().to_owned());
        } else if let Some(dev) = &mut self.device {
            dev.parts.serial = Some(t);
        }
    }
}

/// vdev's records in the `<metadata>` element (its text, `start..end` of the document): read
/// as a tree, being small; none if it does not parse alone.
fn read_metadata(element: &str) -> Vec<metadata::Record> {
    match roxmltree::Document::parse(element) {
        Ok(doc) => metadata::read(doc.root_element()),
        Err(e) => {
            tracing::debug!(error = %e, "the domain's metadata does not parse alone");
            Vec::new()
        }
    }
}

/// The SCSI address (controller, unit) of a disk on bus `scsi` with a drive `address`.
fn scsi_unit(address: Option<&BytesStart<'_>>, scsi: bool) -> Option<(u32, u32)> {
    if !scsi || attr(address, "type").as_deref() != Some("drive") {
        return None;
    }
    let num = |k| attr(address, k).and_then(|v| v.parse().ok());
    Some((num("controller")?, num("unit")?))
}

/// The device read, with its element's range `open.start..end` of the document; with
/// `keys_only`, without its attributes.
fn push_device(d: &mut DomXml, open: Open<'_>, text: &Arc<String>, end: usize, keys_only: bool) {
    let Open {
        kind,
        el,
        parts: p,
        start,
    } = open;
    if keys_only {
        let key = match kind {
            Kind::Disk => {
                let scsi = attr(p.target.as_ref(), "bus").as_deref() == Some("scsi");
                d.scsi_units.extend(scsi_unit(p.address.as_ref(), scsi));
                attr(p.target.as_ref(), "dev")
                    .unwrap_or_default()
                    .into_owned()
            }
            Kind::Nic => attr(p.mac.as_ref(), "address")
                .unwrap_or_default()
                .to_ascii_lowercase(),
        };
        d.devices.push(DevXml {
            kind,
            alias: attr(p.alias.as_ref(), "name").map(Cow::into_owned),
            key,
            attrs: Vec::new(),
            text: Arc::clone(text),
            range: start..end,
        });
        return;
    }
    let mut attrs = Vec::with_capacity(10);
    let mut put = |k: &'static str, v: Option<Cow<'_, str>>| {
        if let Some(v) = v {
            attrs.push((k, v.into_owned()));
        }
    };
    let (alias, key) = match kind {
        Kind::Disk => {
            put(
                "source",
                first_attr(p.source.as_ref(), &["file", "dev", "name", "volume"]),
            );
            put("type", attr(Some(&el), "type"));
            put("format", attr(p.driver.as_ref(), "type"));
            let media = attr(Some(&el), "device");
            let cdrom = media.as_deref() == Some("cdrom");
            put("media", media);
            let bus = attr(p.target.as_ref(), "bus");
            let scsi = bus.as_deref() == Some("scsi");
            put("bus", bus);
            let target = attr(p.target.as_ref(), "dev");
            let key = target.as_deref().unwrap_or_default().to_owned();
            put("target", target);
            put(
                "readonly",
                Some(Cow::Borrowed(if p.readonly { "true" } else { "false" })),
            );
            put("serial", p.serial.map(Cow::Owned));
            if cdrom {
                put("tray", attr(p.target.as_ref(), "tray"));
            }
            d.scsi_units.extend(scsi_unit(p.address.as_ref(), scsi));
            (attr(p.alias.as_ref(), "name"), key)
        }
        Kind::Nic => {
            put("netdev", attr(Some(&el), "type"));
            put(
                "source",
                first_attr(p.source.as_ref(), &["network", "bridge", "dev"]),
            );
            put("model", attr(p.model.as_ref(), "type"));
            let mac = attr(p.mac.as_ref(), "address");
            let key = mac.as_deref().unwrap_or_default().to_ascii_lowercase();
            put("mac", mac);
            put(
                "link",
                Some(attr(p.link.as_ref(), "state").unwrap_or(Cow::Borrowed("up"))),
            );
            put("ifname", attr(p.target.as_ref(), "dev"));
            (attr(p.alias.as_ref(), "name"), key)
        }
    };
    d.devices.push(DevXml {
        kind,
        alias: alias.map(Cow::into_owned),
        key,
        attrs,
        text: Arc::clone(text),
        range: start..end,
    });
}
#[cfg(test)]
mod tests {
    use crate::read_tree::assert_readings_agree;

    /// Texts where a one-pass reader could go wrong, each read as the tree reads it: positions
    /// after a byte order mark, entities and character references in values and text (also to
    /// what is not a character),
    /// attribute value normalisation, an attribute with an empty prefix (`:file`), CDATA, comments, nested elements of the same names
    /// (a backing store's source), empty and repeated children.
    #[test]
    fn the_reader_reads_what_the_tree_reads() {
        let dev = "<devices><emulator> /usr/bin/q&amp;emu </emulator>\
            <disk type='file' device='cdrom'><source file='/a&apos;b&#x41;\tc' index='2'/>\
            <backingStore type='file'><source file='/base.img'/></backingStore>\
            <target dev='sdb' bus='scsi' tray='open'/><serial>S<![CDATA[<1>]]>&lt;2</serial>\
            <serial>second</serial><readonly/><alias name='ua-x'/>\
            <address type='drive' controller='0' bus='0' target='0' unit='7'/></disk>\
            <disk type='block' device='disk'><serial></serial><source dev='/dev/sdz'/></disk><disk/>\
            <interface type='bridge'><mac address='52:54:00:AB:CD:EF'/><source bridge='br0'/>\
            <!-- c --><link state='down'/><alias name='net1'/></interface>\
            <controller type='scsi' index='2'/></devices>";
        for xml in [
            format!("\u{feff}<domain type='qemu' id='4'>{dev}</domain>"),
            format!("<?xml version='1.0'?>\n<!-- x -->\n<domain type='kvm' id='-1'>\r\n{dev}</domain>"),
            format!("<domain type='qemu' id='2'>{}</domain>", dev.replace("name='net1'", "name='n&#xFFFFFF;1&#x41;\t'")),
            format!("<domain type='qemu' id='3'>{}</domain>", dev.replace("name='net1'", "name='n&#xFFFFFF;1\r2\r\n3'")),
            format!("<domain type='qemu'>{}</domain>", dev.replace("<source file='/a", "<source :file='/a")),
            // References to what is not a character in a text (the emulator's, a serial's).
            format!("<domain type='qemu' id='5'>{}</domain>", dev.replace("q&amp;emu", "q&#xa33333;emu").replace("S<![CDATA", "&#xFFFFFF;S<![CDATA")),
            format!("<domain type='xen'><metadata><vdev:removal xmlns:vdev='urn:vdev:libvirt:removal:1:disk:ua-x' type='disk' ref='ua-x' state='pending' at='1'/></metadata>{dev}</domain>"),
        ] {
            assert_readings_agree(&xml);
            let d = crate::read::parse_domain(xml.clone()).expect("reads");
            assert_eq!(d.devices.len(), 4, "{xml}");
            // The element's range is the element, as libvirt wrote it.
            assert!(d.devices[0].xml().starts_with("<disk type='file'"));
            assert!(d.devices[0].xml().ends_with("</disk>"));
        }
        let none = "<domain><devices/></domain>";
        assert_readings_agree(none);
        assert!(crate::read::parse_domain(none.to_owned())
            .unwrap()
            .devices
            .is_empty());
    }

    /// A second byte order mark after the first (found by `libvirt_xml`: a character the
    /// document may not have before its root) is refused, not read at positions 3 bytes off
    /// (which cut a character in two and panicked). Seed `second-byte-order-mark.xml`.
    #[test]
    fn a_second_byte_order_mark_is_refused() {
        let xml =
            "\u{feff}\u{feff}<domain type='qemu' id='1'>\u{e9}\u{e9}<metadata><x/></metadata>\
                   <devices><disk type='file'>\u{e9}<target dev='sda'/></disk></devices></domain>";
        crate::read_tree::assert_readings_agree(xml);
        let r = crate::read::parse_domain(xml.to_owned());
        assert!(r.is_err(), "{r:?}");
        // One mark is read as before.
        let one = &xml[3..];
        assert_eq!(
            crate::read::parse_domain(one.to_owned())
                .unwrap()
                .devices
                .len(),
            1
        );
    }

    /// What is not XML is an error, never a device list made of it.
    #[test]
    fn what_is_not_xml_is_refused() {
        for bad in [
            "",
            "<domain>",
            "<a/><b/>",
            "<domain><devices><emulator>&nosuch;</emulator></devices></domain>",
        ] {
            let r = crate::read::parse_domain(bad.to_owned());
            assert!(r.is_err(), "{bad:?}: {r:?}");
        }
    }
}
