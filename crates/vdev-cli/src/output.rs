//! How the `vdev` command prints: tables for people, JSON for programs.

use std::io::Write;

use serde_json::{json, Value};
use vdev::{Attributes, Device, DeviceEvent};

pub(crate) fn device_json(domain: &str, dev: &Device) -> Value {
    json!({
        "domain": domain,
        "type": dev.device_type.as_str(),
        "ref": dev.reference.as_str(),
        "state": dev.state.as_str(),
        "attrs": attrs_json(&dev.attributes),
    })
}

pub(crate) fn attrs_json(a: &Attributes) -> Value {
    Value::Object(
        a.iter()
            .map(|(n, v)| (n.to_owned(), Value::from(v)))
            .collect(),
    )
}

pub(crate) fn event_json(ev: &DeviceEvent) -> Value {
    let (kind, state) = match ev {
        DeviceEvent::Added { .. } => ("added", None),
        DeviceEvent::Removed { .. } => ("removed", None),
        DeviceEvent::StateChanged { state, .. } => ("state-changed", Some(state.as_str())),
        DeviceEvent::Updated { .. } => ("updated", None),
        _ => ("other", None),
    };
    let mut v = json!({"event": kind, "domain": ev.domain().name, "type": ev.device_type().as_str(), "ref": ev.reference().as_str()});
    if let Some(s) = state {
        v["state"] = s.into();
    }
    if let DeviceEvent::Updated { attributes, .. } = ev {
        v["attrs"] = attrs_json(attributes);
    }
    v
}

pub(crate) fn event_line(ev: &DeviceEvent) -> String {
    let what = match ev {
        DeviceEvent::Added { .. } => "added".to_owned(),
        DeviceEvent::Removed { .. } => "removed".to_owned(),
        DeviceEvent::StateChanged { state, .. } => format!("state {state}"),
        DeviceEvent::Updated { attributes, .. } => format!(
            "updated {}",
            attributes
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        _ => "changed".to_owned(),
    };
    format!(
        "{} {} {} {what}",
        ev.domain().name,
        ev.device_type(),
        ev.reference()
    )
}

pub(crate) fn print_json(v: &Value) {
    println!("{v}");
}

pub(crate) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
}
