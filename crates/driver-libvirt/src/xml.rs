//! Domain XML: what vdev reads of a domain (read in [`crate::read`]; a device element parsed
//! as a tree with `roxmltree` when it is to be changed), and writing device XML (a small
//! element tree, escaped on output), including the pass-through rule for `xml.*` attributes.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use vdev_core::{Attributes, DeviceType, Error, Result};

use crate::metadata;

/// The prefix of pass-through attributes: `xml.PATH=VALUE` (see [`El::apply_passthrough`]).
pub(crate) const PASSTHROUGH: &str = "xml.";

/// An XML element to write: a name, attributes in order, text, children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: Option<String>,
    pub children: Vec<El>,
}

impl El {
    pub(crate) fn new(name: &str) -> Self {
        El {
            name: name.to_owned(),
            ..El::default()
        }
    }

    /// With attribute `k` set to `v` (replacing an earlier value).
    pub(crate) fn attr(mut self, k: &str, v: &str) -> Self {
        self.set(k, v);
        self
    }

    pub(crate) fn set(&mut self, k: &str, v: &str) {
        match self.attrs.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.to_owned(),
            None => self.attrs.push((k.to_owned(), v.to_owned())),
        }
    }

    pub(crate) fn child(mut self, c: El) -> Self {
        self.children.push(c);
        self
    }

    pub(crate) fn with_text(mut self, t: &str) -> Self {
        self.text = Some(t.to_owned());
        self
    }

    /// The first child named `name`, made when missing.
    pub(crate) fn child_mut(&mut self, name: &str) -> &mut El {
        let i = match self.children.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                self.children.push(El::new(name));
                self.children.len() - 1
            }
        };
        &mut self.children[i]
    }

    /// Remove every child named `name`.
    pub(crate) fn remove_children(&mut self, name: &str) {
        self.children.retain(|c| c.name != name);
    }

    /// A copy of a parsed element (namespaced elements keep their local name; device XML has
    /// none).
    pub(crate) fn from_node(n: roxmltree::Node<'_, '_>) -> El {
        El {
            name: n.tag_name().name().to_owned(),
            attrs: n
                .attributes()
                .map(|a| (a.name().to_owned(), a.value().to_owned()))
                .collect(),
            text: n
                .children()
                .filter(|c| c.is_text())
                .filter_map(|c| c.text())
                .map(str::trim)
                .find(|t| !t.is_empty())
                .map(str::to_owned),
            children: n
                .children()
                .filter(|c| c.is_element())
                .map(El::from_node)
                .collect(),
        }
    }

    /// Apply the pass-through attributes (`xml.PATH=VALUE`): the path's last part is an XML
    /// attribute, the parts before it are child elements, found or made in turn.
    /// `xml.driver.cache=none` gives `<driver cache='none'/>` inside the device element;
    /// `xml.sgio=filtered` sets `sgio` on the device element itself. Applied after the named
    /// attributes, so a pass-through value wins over what vdev wrote.
    pub(crate) fn apply_passthrough(&mut self, attrs: &Attributes) -> Result<()> {
        check_chars(attrs)?;
        for (name, value) in attrs.iter() {
            let Some(path) = name.strip_prefix(PASSTHROUGH) else {
                continue;
            };
            let parts: Vec<&str> = path.split('.').collect();
            let ok_part = |p: &str| {
                p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            };
            if parts.iter().any(|p| !ok_part(p)) {
                return Err(Error::invalid_attribute(
                    name,
                    "write xml.ELEMENT[.ELEMENT...].ATTRIBUTE=VALUE with XML names (a letter first), for example xml.driver.cache=none",
                ));
            }
            let (last, elems) = parts.split_last().expect("split gives one part at least");
            let mut at = &mut *self;
            for e in elems {
                at = at.child_mut(e);
            }
            at.set(last, value);
        }
        Ok(())
    }

    /// The element as XML text.
    pub(crate) fn to_xml(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }

    fn write(&self, s: &mut String) {
        let _ = write!(s, "<{}", self.name);
        for (k, v) in &self.attrs {
            let _ = write!(s, " {k}='{}'", escape(v));
        }
        if self.children.is_empty() && self.text.is_none() {
            s.push_str("/>");
            return;
        }
        s.push('>');
        if let Some(t) = &self.text {
            s.push_str(&escape(t));
        }
        for c in &self.children {
            c.write(s);
        }
        let _ = write!(s, "</{}>", self.name);
    }
}

/// Refuse a value holding a character XML cannot carry (control characters but tab, newline
/// and carriage return; U+FFFE, U+FFFF), which libvirt would refuse as XML that does not parse:
/// the error names the attribute instead (found by the `libvirt_xml` fuzz target).
pub(crate) fn check_chars(attrs: &Attributes) -> Result<()> {
    for (name, value) in attrs.iter() {
        let bad = value.chars().find(|&c| {
            (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
        });
        if let Some(c) = bad {
            return Err(Error::invalid_attribute(
                name,
                format!(
                    "the value holds the character U+{:04X}, which XML cannot carry; remove it",
                    u32::from(c)
                ),
            ));
        }
    }
    Ok(())
}

/// Escape text for an attribute value in single quotes or element text. Tab, newline and
/// carriage return are written as character references: a reader turns them into spaces in an
/// attribute value (and a carriage return into a newline in text), so written as they are they
/// would not read back the same (found by the `libvirt_xml` fuzz target).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// Which kind of device an element is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Disk,
    Nic,
}

impl Kind {
    pub(crate) fn device_type(self) -> DeviceType {
        match self {
            Kind::Disk => DeviceType::DISK,
            Kind::Nic => DeviceType::NETWORK,
        }
    }

    pub(crate) fn of(t: &DeviceType) -> Option<Kind> {
        match t.as_str() {
            "disk" => Some(Kind::Disk),
            "network" => Some(Kind::Nic),
            _ => None,
        }
    }
}

/// One device as a definition (live or stored) has it.
#[derive(Debug, Clone)]
pub(crate) struct DevXml {
    pub kind: Kind,
    /// libvirt's alias (`ua-...` for user aliases); the live definition has one for every
    /// device, the stored one only for user aliases.
    pub alias: Option<String>,
    /// What identifies the device in both definitions when it has no user alias: a disk's
    /// target dev, a NIC's MAC.
    pub key: String,
    /// The listed attributes.
    pub attrs: Vec<(&'static str, String)>,
    /// The domain XML it was read from, and where in it the element is: the element is made
    /// only when a detach or update needs it ([`DevXml::xml`], [`DevXml::el`]).
    pub text: std::sync::Arc<String>,
    pub range: std::ops::Range<usize>,
}

impl DevXml {
    /// The device's reference: its alias, else its key.
    pub(crate) fn reference(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.key)
    }

    /// The element's XML, as libvirt wrote it.
    pub(crate) fn xml(&self) -> &str {
        &self.text[self.range.clone()]
    }

    /// The element, to change and write again.
    pub(crate) fn el(&self) -> Result<El> {
        let doc = roxmltree::Document::parse(self.xml()).map_err(|e| {
            Error::backend_with(
                crate::NAME,
                "a device element of libvirt's XML does not parse alone",
                e,
            )
        })?;
        Ok(El::from_node(doc.root_element()))
    }

    /// Whether `r` names this device (by alias or key).
    pub(crate) fn answers_to(&self, r: &str) -> bool {
        self.alias.as_deref() == Some(r) || self.key == r
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// What names the device in both definitions: its user alias, else its key (libvirt's own
    /// aliases are not kept in the stored definition).
    pub(crate) fn identity(&self) -> &str {
        match &self.alias {
            Some(a) if is_user_alias(a) => a,
            _ => &self.key,
        }
    }
}

/// Whether an alias is a user alias (kept in the stored definition).
pub(crate) fn is_user_alias(a: &str) -> bool {
    a.starts_with("ua-")
}

/// A domain's definition, as far as vdev reads it.
#[derive(Debug, Clone, Default)]
pub(crate) struct DomXml {
    /// Whether it is the definition of a running domain (the root has an `id`).
    pub running: bool,
    pub devices: Vec<DevXml>,
    /// Indexes of the SCSI controllers.
    pub scsi_controllers: Vec<u32>,
    /// (controller, unit) of every SCSI disk address.
    pub scsi_units: BTreeSet<(u32, u32)>,
    /// The removals recorded in vdev's metadata.
    pub removals: Vec<metadata::Record>,
    /// The emulator.
    pub emulator: Option<String>,
    /// The domain type (`qemu`, `kvm`, `xen`, ...): the root's `type`.
    pub hypervisor: String,
}

pub(crate) use crate::read::{parse_domain, parse_domain_with, Detail};

/// The `index`-th target name with `prefix`: 0 → `sda`, 25 → `sdz`, 26 → `sdaa`, as Linux
/// and libvirt name disks.
pub(crate) fn target_name(prefix: &str, index: usize) -> String {
    let mut letters = Vec::new();
    let mut i = index + 1;
    while i > 0 {
        i -= 1;
        letters.push(b'a' + (i % 26) as u8);
        i /= 26;
    }
    letters.reverse();
    format!("{prefix}{}", String::from_utf8(letters).expect("ascii"))
}

/// The target name prefix libvirt expects for a bus.
pub(crate) fn target_prefix(bus: &str) -> &'static str {
    match bus {
        "virtio" => "vd",
        "ide" => "hd",
        "xen" => "xvd",
        "fdc" => "fd",
        _ => "sd",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_count_like_linux() {
        assert_eq!(target_name("sd", 0), "sda");
        assert_eq!(target_name("sd", 25), "sdz");
        assert_eq!(target_name("sd", 26), "sdaa");
        assert_eq!(target_name("vd", 27), "vdab");
        assert_eq!(target_name("sd", 701), "sdzz");
        assert_eq!(target_name("sd", 702), "sdaaa");
    }

    #[test]
    fn the_passthrough_rule_maps_paths_onto_elements_and_attributes() {
        let mut el = El::new("disk")
            .attr("type", "file")
            .child(El::new("driver").attr("type", "qcow2"));
        let a = Attributes::from_pairs([
            ("xml.driver.cache", "none"),
            ("xml.sgio", "filtered"),
            ("xml.boot.order", "2"),
            ("xml.iotune.total_bytes_sec", "1000"),
            ("source", "/ignored/not/passthrough"),
        ])
        .unwrap();
        el.apply_passthrough(&a).unwrap();
        let x = el.to_xml();
        assert!(x.contains("<driver type='qcow2' cache='none'/>"), "{x}");
        assert!(x.contains("sgio='filtered'"), "{x}");
        assert!(x.contains("<boot order='2'/>"), "{x}");
        assert!(x.contains("<iotune total_bytes_sec='1000'/>"), "{x}");
        assert!(!x.contains("ignored"), "{x}");
    }

    #[test]
    fn passthrough_names_must_be_xml_names() {
        let mut el = El::new("disk");
        for bad in ["xml.1driver.cache", "xml.driver.-cache"] {
            let a = Attributes::from_pairs([(bad, "x")]).unwrap();
            assert!(el.apply_passthrough(&a).is_err(), "{bad}");
        }
    }

    #[test]
    fn characters_xml_cannot_carry_are_refused_naming_the_attribute() {
        let mut el = El::new("disk");
        for (name, value) in [("xml.driver.cache", "no\u{14}ne"), ("serial", "A\u{1b}B")] {
            let a = Attributes::from_pairs([(name, value)]).unwrap();
            let e = el.apply_passthrough(&a).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidAttribute { name: n, .. } if n == name),
                "{e:?}"
            );
        }
        let fine = Attributes::from_pairs([("xml.driver.cache", "a\tb")]).unwrap();
        el.apply_passthrough(&fine).unwrap();
    }

    #[test]
    fn whitespace_a_reader_would_normalise_reads_back_the_same() {
        let el = El::new("alias")
            .attr("name", "a\tb\nc\rd")
            .with_text("x\ry\r\nz");
        let x = el.to_xml();
        let doc = roxmltree::Document::parse(&x).unwrap();
        assert_eq!(El::from_node(doc.root_element()), el, "{x}");
    }

    #[test]
    fn values_are_escaped() {
        let x = El::new("source").attr("file", "/a'b&<c>").to_xml();
        assert_eq!(x, "<source file='/a&apos;b&amp;&lt;c&gt;'/>");
        let x = El::new("serial").with_text("A&B").to_xml();
        assert_eq!(x, "<serial>A&amp;B</serial>");
    }

    #[test]
    fn a_domain_is_read() {
        let xml = r#"<domain type='qemu' id='3'>
  <name>vm</name>
  <metadata><vdev:removal xmlns:vdev="urn:vdev:libvirt:removal:1:disk:ua-disk-1" type="disk" ref="ua-disk-1" state="pending" at="7"/></metadata>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/img/a.qcow2' index='1'/>
      <target dev='sda' bus='scsi'/>
      <serial>S1</serial>
      <alias name='ua-disk-1'/>
      <address type='drive' controller='0' bus='0' target='0' unit='3'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sdb' bus='scsi' tray='open'/>
      <readonly/>
      <alias name='scsi0-0-0-1'/>
    </disk>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <interface type='user'>
      <mac address='52:54:00:AA:bb:01'/>
      <model type='virtio'/>
      <link state='down'/>
      <alias name='net0'/>
    </interface>
  </devices>
</domain>"#;
        crate::read_tree::assert_readings_agree(xml);
        let d = parse_domain(xml.to_owned()).unwrap();
        assert!(d.running);
        assert_eq!(d.scsi_controllers, vec![0]);
        assert!(d.scsi_units.contains(&(0, 3)));
        assert_eq!(d.removals.len(), 1);
        assert!(d.removals[0].is("disk", "ua-disk-1") && !d.removals[0].gone);
        assert_eq!(d.devices.len(), 3);
        let disk = &d.devices[0];
        assert_eq!(disk.reference(), "ua-disk-1");
        assert_eq!(disk.get("source"), Some("/img/a.qcow2"));
        assert_eq!(disk.get("format"), Some("qcow2"));
        assert_eq!(disk.get("serial"), Some("S1"));
        assert_eq!(disk.get("readonly"), Some("false"));
        let cd = &d.devices[1];
        assert_eq!(cd.get("media"), Some("cdrom"));
        assert_eq!(cd.get("tray"), Some("open"));
        assert_eq!(cd.get("source"), None);
        let nic = &d.devices[2];
        assert_eq!(nic.key, "52:54:00:aa:bb:01");
        assert_eq!(nic.get("link"), Some("down"));
        assert_eq!(nic.get("netdev"), Some("user"));
        assert_eq!(d.emulator.as_deref(), Some("/usr/bin/qemu-system-x86_64"));
    }
}
