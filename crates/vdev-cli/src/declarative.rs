//! `vdev plan`, `vdev apply`, `vdev export` and `vdev attach --from`: desired-state documents
//! and batches.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use serde_json::Value;
use vdev::{ApplyOptions, Attributes, Connection, DeviceType, Document, Error, NewDevice, Outcome};

use crate::output::print_json;

/// The text of FILE, or of standard input for `-`.
fn read_text(file: &str) -> vdev::Result<String> {
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    read.map_err(|e| Error::InvalidDocument {
        at: file.to_owned(),
        reason: format!("cannot be read: {e}"),
    })?;
    Ok(text)
}

/// A document read from FILE; its errors name the file.
fn read_document(file: &str) -> vdev::Result<Document> {
    Document::parse(&read_text(file)?).map_err(|e| in_file(file, e))
}

/// A document error with the file's name in front of its place.
fn in_file(file: &str, e: Error) -> Error {
    match e {
        Error::InvalidDocument { at, reason } => Error::InvalidDocument {
            at: format!("{file}: {at}"),
            reason,
        },
        e => e,
    }
}

/// The devices of `vdev attach --from FILE`: one JSON object of attributes per line (blank lines
/// and lines starting with # are skipped).
pub(crate) fn read_batch(file: &str, t: &DeviceType) -> vdev::Result<Vec<NewDevice>> {
    let text = read_text(file)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{file}: line {}", i + 1);
        let map: serde_json::Map<String, Value> =
            serde_json::from_str(line).map_err(|e| Error::InvalidDocument {
                at: at(),
                reason: format!(
                    "not a JSON object of attributes ({e}); write one device per line, as {{\"source\": \"/img/a.qcow2\"}}"
                ),
            })?;
        let mut attributes = Attributes::new();
        for (name, value) in map {
            let value = match value {
                Value::String(s) => s,
                Value::Bool(_) | Value::Number(_) => value.to_string(),
                _ => {
                    return Err(Error::InvalidDocument {
                        at: at(),
                        reason: format!("attribute '{name}' is not a string, number or boolean"),
                    })
                }
            };
            attributes
                .insert(name, value)
                .map_err(|e| Error::InvalidDocument {
                    at: at(),
                    reason: e.to_string(),
                })?;
        }
        out.push(NewDevice {
            device_type: t.clone(),
            attributes,
        });
    }
    if out.is_empty() {
        return Err(Error::InvalidDocument {
            at: file.to_owned(),
            reason: "has no device: write one JSON object of attributes per line".into(),
        });
    }
    Ok(out)
}

/// `vdev plan FILE`.
pub(crate) async fn plan(json_out: bool, conn: &Connection, file: &str) -> vdev::Result<()> {
    let doc = read_document(file)?;
    let plan = conn.plan(&doc).await.map_err(|e| in_file(file, e))?;
    if json_out {
        print_json(&serde_json::to_value(&plan).expect("a plan serialises"));
    } else if plan.is_empty() {
        println!("no changes: the domains are as {file} says");
    } else {
        for c in &plan.changes {
            println!("{}", c.to_line());
        }
    }
    Ok(())
}

/// `vdev apply FILE`: exit status 1 when a change failed, 3 when only pending removals remain.
pub(crate) async fn apply(
    json_out: bool,
    conn: &Connection,
    file: &str,
    options: &ApplyOptions,
) -> vdev::Result<()> {
    let doc = read_document(file)?;
    // On a terminal, a bar of the plan's changes, moved as each one ends.
    let bar = (!json_out && std::io::stderr().is_terminal()).then(|| {
        let p = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            p.set_style(style);
        }
        p.set_message(format!("planning and applying {file}"));
        p.enable_steady_tick(Duration::from_millis(120));
        p
    });
    let report = conn
        .apply_with_progress(&doc, options, &|pr: vdev::Progress<'_>| {
            if let Some(p) = &bar {
                if pr.ended == 1 {
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})",
                    ) {
                        p.set_style(style.progress_chars("=> "));
                    }
                }
                p.set_length(pr.total as u64);
                p.set_position(pr.ended as u64);
                let (outcome, _) = outcome_words(&pr.applied.outcome);
                p.set_message(format!("{}: {outcome}", pr.applied.change.to_line()));
            }
        })
        .await;
    if let Some(p) = bar {
        p.finish_and_clear();
    }
    let report = report.map_err(|e| in_file(file, e))?;
    if json_out {
        print_json(&serde_json::to_value(&report).expect("a report serialises"));
    } else if report.is_noop() {
        println!("no changes: the domains are already as {file} says");
    } else {
        for a in &report.changes {
            let (outcome, error) = outcome_words(&a.outcome);
            let mut line = format!("{}  {outcome}", a.change.to_line());
            if let Some(e) = error {
                line.push_str(&format!(": {e}"));
            }
            println!("{line}");
        }
        println!("{}", summary(&report));
    }
    let pending = report.count(&Outcome::Pending);
    let report = report.into_result()?;
    if pending > 0 {
        // Exit status 3, as a detach whose removal is pending.
        let c = &report
            .changes
            .iter()
            .find(|a| matches!(a.outcome, Outcome::Pending))
            .expect("a pending change")
            .change;
        return Err(Error::RemovalPending {
            domain: c.domain.clone(),
            device_type: c.device_type.to_string(),
            reference: c
                .reference
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default(),
        });
    }
    Ok(())
}

/// The last line of `vdev apply`: what changed, in numbers.
fn summary(report: &vdev::ApplyReport) -> String {
    let mut parts = Vec::new();
    for (o, words) in [
        (Outcome::Done, "made"),
        (Outcome::Pending, "removal pending"),
        (Outcome::NotMade, "needing a replacement, not made"),
        (
            Outcome::Failed {
                code: "",
                message: String::new(),
            },
            "failed",
        ),
        (Outcome::NotTried, "not tried"),
    ] {
        let n = report.count(&o);
        if n > 0 {
            parts.push(format!("{n} {words}"));
        }
    }
    if report.count(&Outcome::Done) + report.count(&Outcome::Pending) == 0 {
        format!("nothing changed ({})", parts.join(", "))
    } else {
        format!("changes: {}", parts.join(", "))
    }
}

fn outcome_words(o: &Outcome) -> (&'static str, Option<&str>) {
    match o {
        Outcome::Failed { message, .. } => (o.as_str(), Some(message.as_str())),
        _ => (o.as_str(), None),
    }
}

/// `vdev export DOMAIN`.
pub(crate) async fn export(json_out: bool, conn: &Connection, domain: &str) -> vdev::Result<()> {
    let doc = conn.export(domain).await?;
    if json_out {
        println!("{}", doc.to_json());
    } else {
        print!("{}", doc.to_yaml());
    }
    Ok(())
}
