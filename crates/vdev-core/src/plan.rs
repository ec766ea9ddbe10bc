//! Plans: the changes that take domains from what they have to a [`Document`](crate::desired::Document)'s desired state,
//! computed by [`crate::Connection::plan`] and made by [`crate::Connection::apply`].
//!
//! How a desired entry finds its device: by the first attribute of the type's
//! [`DeviceTypeSchema::identity`] that the entry gives (or its explicit `id`, the reference),
//! compared in normal form ([`crate::AttributeSpec::normal`]). Then:
//!
//! | entry | device found | change |
//! |---|---|---|
//! | present | no | [`ChangeOp::Add`] |
//! | present | yes, same values | none |
//! | present | yes, only updatable attributes differ | [`ChangeOp::Update`] of those |
//! | present | yes, another attribute differs | [`ChangeOp::Replace`]: reported, never made |
//! | absent | yes | [`ChangeOp::Remove`] |
//! | absent | no | none |
//!
//! and a device of an `exclusive` type that no entry names is a [`ChangeOp::Remove`]. Only the
//! attributes an entry gives are compared, and only those the driver lists under the same name
//! and meaning ([`crate::AttributeSpec::listed`]): a default the hypervisor filled in is not a
//! difference.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::attributes::Attributes;
#[cfg(test)]
use crate::desired::Document;
use crate::desired::{invalid, DesiredDevice, DesiredState, DomainDocument};
use crate::error::{Error, Result};
use crate::types::{AttributeSpec, Device, DeviceRef, DeviceState, DeviceType, DeviceTypeSchema};

/// What a [`Change`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeOp {
    /// Attach a new device (`+` in `vdev plan`).
    Add,
    /// Detach a device (`-`).
    Remove,
    /// Change updatable attributes in place (`~`).
    Update,
    /// The device differs in an attribute that cannot be changed while it is attached (`!`):
    /// reported, never made by `apply`. Detach it (or mark its entry absent) and apply again.
    Replace,
}

impl ChangeOp {
    /// The sign `vdev plan` prints: `+`, `-`, `~` or `!`.
    pub fn sign(self) -> char {
        match self {
            ChangeOp::Add => '+',
            ChangeOp::Remove => '-',
            ChangeOp::Update => '~',
            ChangeOp::Replace => '!',
        }
    }

    /// Its name: `add`, `remove`, `update`, `replace`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Add => "add",
            ChangeOp::Remove => "remove",
            ChangeOp::Update => "update",
            ChangeOp::Replace => "replace",
        }
    }
}

impl fmt::Display for ChangeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What it does.
    pub op: ChangeOp,
    /// The domain, as the document names it.
    pub domain: String,
    /// The device type.
    #[serde(rename = "type")]
    pub device_type: DeviceType,
    /// The device's reference: `None` for an add whose reference the driver will choose.
    #[serde(rename = "ref")]
    pub reference: Option<DeviceRef>,
    /// Add: the new device's attributes. Update: the attributes that change, with their new
    /// values. Replace: the desired values that differ. Remove: the device's listed attributes.
    pub attrs: Attributes,
    /// The index of the document entry it comes from (in its domain's `devices`); `None` for
    /// the removal of a device of an `exclusive` type that no entry names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<usize>,
    /// Why, for a replace: which values differ and why they cannot be changed in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Change {
    /// The change as `vdev plan` prints it: `+ vm1 disk source=/img/a.qcow2 format=qcow2`.
    pub fn to_line(&self) -> String {
        let mut s = format!("{} {} {}", self.op.sign(), self.domain, self.device_type);
        if let Some(r) = &self.reference {
            s.push(' ');
            s.push_str(r.as_str());
        }
        for (n, v) in self.attrs.iter() {
            s.push_str(&format!(" {n}={v}"));
        }
        if let Some(r) = &self.reason {
            s.push_str(&format!("  ({r})"));
        }
        s
    }
}

/// The changes that take domains to a desired state: removals first, then updates, then
/// replacements (reported only), then additions, domain by domain in the document's order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// The changes; empty when every domain is as the document says.
    pub changes: Vec<Change>,
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes of `op` it has.
    pub fn count(&self, op: ChangeOp) -> usize {
        self.changes.iter().filter(|c| c.op == op).count()
    }
}

/// How an entry is identified: by the reference, or by an attribute's normal value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ident {
    Reference(String),
    Attribute { name: String, value: String },
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ident::Reference(r) => write!(f, "id={r}"),
            Ident::Attribute { name, value } => write!(f, "{name}={value}"),
        }
    }
}

fn ident_of(schema: &DeviceTypeSchema, entry: &DesiredDevice) -> Option<Ident> {
    if let Some(r) = &entry.id {
        return Some(Ident::Reference(r.to_string()));
    }
    schema
        .identity
        .iter()
        .filter_map(|n| schema.attribute(n))
        .find_map(|spec| {
            spec.names()
                .find_map(|n| entry.attrs.get(n))
                .map(|v| Ident::Attribute {
                    name: spec.name.clone(),
                    value: spec.normal(v).into_owned(),
                })
        })
}

fn matches(schema: &DeviceTypeSchema, ident: &Ident, device: &Device) -> bool {
    match ident {
        Ident::Reference(r) => device.reference.as_str() == r,
        Ident::Attribute { name, value } => {
            let spec = schema
                .attribute(name)
                .expect("identity names a schema attribute");
            device
                .attributes
                .get(&spec.name)
                .is_some_and(|v| spec.normal(v) == value.as_str())
        }
    }
}

/// A device's listed attributes that mean what the schema's attributes of the same name mean:
/// what `export` writes and a removal shows.
pub(crate) fn comparable_attributes(schema: &DeviceTypeSchema, device: &Device) -> Attributes {
    let mut out = Attributes::new();
    for spec in schema.attributes.iter().filter(|s| s.listed) {
        if let Some(v) = device.attributes.get(&spec.name) {
            // Listed values were valid attributes once; a value the core's rules refuse is left out.
            let _ = out.insert(spec.name.clone(), v.to_owned());
        }
    }
    out
}

/// The document of one domain's current state: each device with its comparable attributes and,
/// where its identity needs it, its reference.
pub(crate) fn export_domain(schemas: &[DeviceTypeSchema], devices: &[Device]) -> DomainDocument {
    let mut doc = DomainDocument::default();
    for d in devices {
        if d.state == DeviceState::RemovalPending {
            continue;
        }
        let Some(schema) = schemas.iter().find(|s| s.device_type == d.device_type) else {
            continue;
        };
        let attrs = comparable_attributes(schema, d);
        let mut entry = DesiredDevice {
            device_type: d.device_type.clone(),
            state: DesiredState::Present,
            id: None,
            attrs,
        };
        // Without an identifying attribute (an empty CD-ROM drive), name its reference.
        let identified = ident_of(schema, &entry).is_some_and(|i| {
            devices
                .iter()
                .filter(|x| x.device_type == d.device_type && matches(schema, &i, x))
                .count()
                == 1
        });
        if !identified {
            entry.id = Some(d.reference.clone());
        }
        doc.devices.push(entry);
    }
    doc
}

/// Plan one domain: `key` is its name in the document, `devices` what it has now.
pub(crate) fn plan_domain(
    key: &str,
    doc: &DomainDocument,
    schemas: &[DeviceTypeSchema],
    devices: &[Device],
    driver: &str,
) -> Result<Vec<Change>> {
    let schema_of = |t: &DeviceType, at: &str| -> Result<&DeviceTypeSchema> {
        schemas.iter().find(|s| &s.device_type == t).ok_or_else(|| {
            invalid(
                at,
                "",
                &format!(
                    "the {driver} driver has no device type '{t}'; its types: {}",
                    schemas
                        .iter()
                        .map(|s| s.device_type.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    };
    for (i, t) in doc.exclusive.iter().enumerate() {
        schema_of(t, &format!("domains.{key}.exclusive[{i}]"))?;
    }

    let mut removes = Vec::new();
    let mut updates = Vec::new();
    let mut replaces = Vec::new();
    let mut adds = Vec::new();
    // (type, identity) -> entry index, to refuse two entries with one identity.
    let mut seen: BTreeMap<(DeviceType, Ident), usize> = BTreeMap::new();
    // Listed devices that some entry (present or absent) names.
    let mut named: Vec<bool> = vec![false; devices.len()];

    for (i, entry) in doc.devices.iter().enumerate() {
        let at = format!("domains.{key}.devices[{i}]");
        let t = &entry.device_type;
        let schema = schema_of(t, &format!("{at}.type"))?;
        let names_ok = match entry.state {
            DesiredState::Present => schema.check_names(&entry.attrs),
            DesiredState::Absent => match entry.attrs.names().find(|n| !schema.accepts(n)) {
                Some(_) => schema.check_names(&entry.attrs),
                None => Ok(()),
            },
        };
        if let Err(e) = names_ok {
            // Required attributes matter only for an entry that is added: checked below.
            if !matches!(e, Error::MissingAttribute { .. }) {
                return Err(invalid(&format!("{at}.attrs"), "", &e.to_string()));
            }
        }
        let Some(ident) = ident_of(schema, entry) else {
            let by: Vec<&str> = schema.identity.iter().map(String::as_str).collect();
            return Err(invalid(
                &at,
                "",
                &if by.is_empty() {
                    format!("a {t} entry needs an `id` (the device's reference, as `vdev devices` lists it): nothing else identifies a {t} of the {driver} driver")
                } else {
                    format!("the entry gives none of the attributes that identify a {t} ({}), nor an `id`: give one, so that it can be found again", by.join(", "))
                },
            ));
        };
        if let Some(first) = seen.insert((t.clone(), ident.clone()), i) {
            return Err(invalid(
                &at,
                "",
                &format!("entry {first} is the same {t} ({ident}): give each device once"),
            ));
        }
        let found: Vec<usize> = devices
            .iter()
            .enumerate()
            .filter(|(_, d)| &d.device_type == t && matches(schema, &ident, d))
            .map(|(j, _)| j)
            .collect();
        if found.len() > 1 {
            let refs: Vec<&str> = found
                .iter()
                .map(|&j| devices[j].reference.as_str())
                .collect();
            return Err(invalid(
                &at,
                "",
                &format!(
                    "{ident} matches {} {t} devices ({}): identify it by its `id` instead",
                    found.len(),
                    refs.join(", ")
                ),
            ));
        }
        let change = |op, reference: Option<DeviceRef>, attrs, reason| Change {
            op,
            domain: key.to_owned(),
            device_type: t.clone(),
            reference,
            attrs,
            entry: Some(i),
            reason,
        };
        match (entry.state, found.first()) {
            (DesiredState::Absent, None) => {}
            (DesiredState::Absent, Some(&j)) => {
                named[j] = true;
                let d = &devices[j];
                removes.push(change(
                    ChangeOp::Remove,
                    Some(d.reference.clone()),
                    comparable_attributes(schema, d),
                    None,
                ));
            }
            (DesiredState::Present, None) => {
                let mut attrs = entry.attrs.clone();
                if let Some(id) = &entry.id {
                    let Some(a) = &schema.reference_attribute else {
                        return Err(invalid(
                            &format!("{at}.id"),
                            "",
                            &format!(
                                "no {t} has the reference '{id}', and the {driver} driver chooses the references of new devices itself: identify the entry by {} instead",
                                if schema.identity.is_empty() { "an existing device's `id`".to_owned() } else { schema.identity.join(" or ") }
                            ),
                        ));
                    };
                    match attrs.get(a) {
                        Some(v) if v != id.as_str() => {
                            return Err(invalid(
                                &at,
                                "",
                                &format!("`id` is '{id}' but attribute {a} (which chooses the reference) is '{v}': give one of them"),
                            ))
                        }
                        _ => attrs
                            .insert(a.clone(), id.to_string())
                            .map_err(|e| invalid(&format!("{at}.id"), "", &e.to_string()))?,
                    }
                }
                schema
                    .check_names(&attrs)
                    .map_err(|e| invalid(&format!("{at}.attrs"), "", &e.to_string()))?;
                adds.push(change(ChangeOp::Add, entry.id.clone(), attrs, None));
            }
            (DesiredState::Present, Some(&j)) => {
                named[j] = true;
                let d = &devices[j];
                if d.state == DeviceState::RemovalPending {
                    replaces.push(change(
                        ChangeOp::Replace,
                        Some(d.reference.clone()),
                        entry.attrs.clone(),
                        Some(
                            "its removal is pending: apply again once the guest has released it"
                                .to_owned(),
                        ),
                    ));
                    continue;
                }
                let (mut upd, mut fixed, mut why) =
                    (Attributes::new(), Attributes::new(), Vec::new());
                for (name, want) in entry.attrs.iter() {
                    let Some(spec) = schema.attribute(name).filter(|s| s.listed) else {
                        continue;
                    };
                    let Some(have) = d.attributes.get(&spec.name) else {
                        continue;
                    };
                    if spec.normal(want) == spec.normal(have) {
                        continue;
                    }
                    if spec.updatable {
                        let _ = upd.insert(name.to_owned(), want.to_owned());
                    } else {
                        let _ = fixed.insert(name.to_owned(), want.to_owned());
                        why.push(describe_difference(spec, have, want));
                    }
                }
                if !fixed.is_empty() {
                    // Everything that differs, so that the replacement is complete.
                    for (n, v) in upd.iter() {
                        let _ = fixed.insert(n.to_owned(), v.to_owned());
                    }
                    replaces.push(change(
                        ChangeOp::Replace,
                        Some(d.reference.clone()),
                        fixed,
                        Some(format!(
                            "{}: cannot change while attached; detach it (or mark the entry absent), then apply again",
                            why.join(", ")
                        )),
                    ));
                } else if !upd.is_empty() {
                    updates.push(change(
                        ChangeOp::Update,
                        Some(d.reference.clone()),
                        upd,
                        None,
                    ));
                }
            }
        }
    }

    for (j, d) in devices.iter().enumerate() {
        if named[j] || !doc.exclusive.contains(&d.device_type) {
            continue;
        }
        let schema = schema_of(&d.device_type, "")?;
        removes.push(Change {
            op: ChangeOp::Remove,
            domain: key.to_owned(),
            device_type: d.device_type.clone(),
            reference: Some(d.reference.clone()),
            attrs: comparable_attributes(schema, d),
            entry: None,
            reason: None,
        });
    }

    let mut out = removes;
    out.extend(updates);
    out.extend(replaces);
    out.extend(adds);
    Ok(out)
}

fn describe_difference(spec: &AttributeSpec, have: &str, want: &str) -> String {
    format!("{} is '{have}', wanted '{want}'", spec.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::AttributeSpec;

    fn schema() -> Vec<DeviceTypeSchema> {
        vec![
            DeviceTypeSchema {
                device_type: DeviceType::DISK,
                description: "a disk".into(),
                attributes: vec![
                    AttributeSpec::optional("source", "image", "/a").updatable(),
                    AttributeSpec::optional("bus", "bus", "scsi"),
                    AttributeSpec::optional("readonly", "ro", "true").boolean(),
                    AttributeSpec::optional("id", "ref", "d1"),
                    AttributeSpec::optional("backend", "domain", "Domain-0").not_listed(),
                ],
                passthrough_prefixes: vec![],
                identity: vec!["id".into(), "source".into()],
                reference_attribute: Some("id".into()),
            },
            DeviceTypeSchema {
                device_type: DeviceType::NETWORK,
                description: "a NIC".into(),
                attributes: vec![
                    AttributeSpec::optional("mac", "mac", "52:54:00:00:00:01").case_insensitive(),
                    AttributeSpec::optional("link", "up or down", "up").updatable(),
                ],
                passthrough_prefixes: vec![],
                identity: vec!["mac".into()],
                reference_attribute: None,
            },
        ]
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        Attributes::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    fn dev(t: &DeviceType, r: &str, pairs: &[(&str, &str)]) -> Device {
        Device {
            device_type: t.clone(),
            reference: DeviceRef::new(r).unwrap(),
            state: DeviceState::Connected,
            attributes: attrs(pairs),
        }
    }

    fn plan(doc: &str, devices: &[Device]) -> Result<Vec<Change>> {
        let d = Document::parse(doc).unwrap();
        plan_domain("vm1", &d.domains["vm1"], &schema(), devices, "test")
    }

    fn ops(c: &[Change]) -> Vec<(ChangeOp, Option<String>)> {
        c.iter()
            .map(|c| (c.op, c.reference.as_ref().map(|r| r.to_string())))
            .collect()
    }

    fn present() -> Vec<Device> {
        vec![
            dev(
                &DeviceType::DISK,
                "d0",
                &[
                    ("id", "d0"),
                    ("source", "/a"),
                    ("bus", "scsi"),
                    ("readonly", "false"),
                    ("backend", "/local/x"),
                ],
            ),
            dev(
                &DeviceType::DISK,
                "d1",
                &[
                    ("id", "d1"),
                    ("source", "/b"),
                    ("bus", "scsi"),
                    ("readonly", "true"),
                ],
            ),
            dev(
                &DeviceType::NETWORK,
                "n0",
                &[("mac", "52:54:00:00:00:01"), ("link", "up")],
            ),
        ]
    }

    #[test]
    fn a_document_of_what_is_there_plans_nothing_even_spelled_differently() {
        let c = plan(
            r#"domains: {vm1: {devices: [
                {type: disk, attrs: {source: /a, readonly: off, backend: Domain-0}},
                {type: disk, attrs: {source: /b, readonly: yes}},
                {type: network, attrs: {mac: "52:54:00:00:00:01"}}]}}"#,
            &present(),
        )
        .unwrap();
        assert!(c.is_empty(), "{c:?}");
        let c = plan(
            r#"domains: {vm1: {devices: [{type: network, attrs: {mac: "52:54:00:00:00:01"}}]}}"#,
            &present(),
        )
        .unwrap();
        assert!(c.is_empty(), "nothing is removed without exclusive: {c:?}");
    }

    #[test]
    fn adds_removes_updates_and_replacements_are_told_apart() {
        let c = plan(
            r#"domains: {vm1: {exclusive: [disk], devices: [
                {type: disk, attrs: {source: /new, bus: virtio}},
                {type: disk, id: d1, attrs: {source: /b2}},
                {type: network, attrs: {mac: "52:54:00:00:00:01", link: down}},
                {type: network, state: absent, attrs: {mac: "52:54:00:00:00:99"}}]}}"#,
            &present(),
        )
        .unwrap();
        assert_eq!(
            ops(&c),
            vec![
                (ChangeOp::Remove, Some("d0".into())),
                (ChangeOp::Update, Some("d1".into())),
                (ChangeOp::Update, Some("n0".into())),
                (ChangeOp::Add, None),
            ]
        );
        assert_eq!(c[0].entry, None);
        assert_eq!(c[1].attrs, attrs(&[("source", "/b2")]));
        assert_eq!(c[3].entry, Some(0));
        let c = plan(
            r#"domains: {vm1: {devices: [{type: disk, attrs: {source: /a, bus: virtio}}]}}"#,
            &present(),
        )
        .unwrap();
        assert_eq!(ops(&c), vec![(ChangeOp::Replace, Some("d0".into()))]);
        assert!(
            c[0].reason
                .as_deref()
                .unwrap()
                .contains("bus is 'scsi', wanted 'virtio'"),
            "{c:?}"
        );
    }

    #[test]
    fn an_absent_entry_removes_only_what_is_there() {
        let c = plan(
            r#"domains: {vm1: {devices: [{type: disk, state: absent, attrs: {source: /b}}]}}"#,
            &present(),
        )
        .unwrap();
        assert_eq!(ops(&c), vec![(ChangeOp::Remove, Some("d1".into()))]);
        let c = plan(r#"domains: {vm1: {devices: [{type: network, state: absent, attrs: {mac: "52:54:00:00:00:0A"}}]}}"#, &present()).unwrap();
        assert!(c.is_empty());
    }

    #[test]
    fn an_id_is_passed_as_the_reference_attribute_where_the_driver_has_one() {
        let c = plan(
            r#"domains: {vm1: {devices: [{type: disk, id: data9, attrs: {source: /z}}]}}"#,
            &present(),
        )
        .unwrap();
        assert_eq!(c[0].attrs, attrs(&[("id", "data9"), ("source", "/z")]));
        assert_eq!(c[0].reference.as_ref().map(|r| r.as_str()), Some("data9"));
        let e = plan(
            r#"domains: {vm1: {devices: [{type: network, id: n7, attrs: {link: up}}]}}"#,
            &present(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("domains.vm1.devices[0].id"), "{e}");
    }

    fn invalid_at(doc: &str) -> String {
        match plan(doc, &present()).unwrap_err() {
            e @ Error::InvalidDocument { .. } => e.to_string(),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn ambiguities_and_unknowns_are_refused_naming_the_entry() {
        let e = invalid_at(
            r#"domains: {vm1: {devices: [{type: disk, attrs: {source: /q}}, {type: disk, attrs: {source: /q, bus: scsi}}]}}"#,
        );
        assert!(
            e.starts_with("domains.vm1.devices[1]") && e.contains("entry 0"),
            "{e}"
        );
        let mut two = present();
        two.push(dev(
            &DeviceType::DISK,
            "d2",
            &[("id", "d2"), ("source", "/b")],
        ));
        let e = plan(
            r#"domains: {vm1: {devices: [{type: disk, attrs: {source: /b}}]}}"#,
            &two,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("matches 2 disk devices (d1, d2)"), "{e}");
        let e = invalid_at(r#"domains: {vm1: {devices: [{type: disk, attrs: {bus: scsi}}]}}"#);
        assert!(
            e.contains("none of the attributes that identify a disk (id, source)"),
            "{e}"
        );
        let e = invalid_at(
            r#"domains: {vm1: {devices: [{type: disk, attrs: {source: /q, colour: red}}]}}"#,
        );
        assert!(
            e.starts_with("domains.vm1.devices[0].attrs") && e.contains("colour"),
            "{e}"
        );
        let e = invalid_at(r#"domains: {vm1: {devices: [{type: tape, attrs: {source: /q}}]}}"#);
        assert!(
            e.starts_with("domains.vm1.devices[0].type") && e.contains("disk, network"),
            "{e}"
        );
        let e = invalid_at(r#"domains: {vm1: {exclusive: [tape]}}"#);
        assert!(e.starts_with("domains.vm1.exclusive[0]"), "{e}");
        let e = invalid_at(
            r#"domains: {vm1: {devices: [{type: network, attrs: {mac: "52:54:00:aa:00:07"}}, {type: network, attrs: {mac: "52:54:00:AA:00:07"}}]}}"#,
        );
        assert!(
            e.contains("entry 0 is the same network (mac=52:54:00:aa:00:07)"),
            "{e}"
        );
    }

    #[test]
    fn export_then_plan_is_empty() {
        let s = schema();
        let devs = present();
        let doc = Document {
            domains: [("vm1".to_owned(), export_domain(&s, &devs))]
                .into_iter()
                .collect(),
        };
        assert!(
            !doc.to_yaml().contains("backend"),
            "not-listed attributes are not exported"
        );
        let c = plan_domain("vm1", &doc.domains["vm1"], &s, &devs, "test").unwrap();
        assert!(c.is_empty(), "{c:?}");
    }
}
