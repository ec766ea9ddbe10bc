//! Declarative devices on a [`Connection`]: [`Connection::plan`], [`Connection::apply`],
//! [`Connection::export`] and the batch they attach with, [`Connection::attach_batch`].

use std::time::Duration;

use serde::Serialize;
use tracing::debug;

use crate::connection::Connection;
use crate::desired::{Document, DomainDocument};
use crate::domain::Domain;
use crate::driver::NewDevice;
use crate::error::{Error, Result};
use crate::options::{AttachOptions, DetachOptions, Scope, UpdateOptions};
use crate::plan::{export_domain, plan_domain, Change, ChangeOp, Plan};
use crate::types::DeviceRef;

/// How [`Connection::apply`] makes its changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOptions {
    /// How long each removal waits for the guest before it is reported pending (as
    /// [`DetachOptions::timeout`]).
    pub timeout: Duration,
    /// Where the changes go (see [`Scope`]); `None`: the driver's default.
    pub scope: Option<Scope>,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            timeout: DetachOptions::DEFAULT_TIMEOUT,
            scope: None,
        }
    }
}

/// What became of one change of an apply.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Made: for an add, the new device's reference is in [`Applied::change`]'s `reference`.
    Done,
    /// A removal that was asked; the guest has not released the device yet (it is listed
    /// removal-pending and goes when the guest lets go).
    Pending,
    /// A replace: reported, not made (see [`ChangeOp::Replace`]).
    NotMade,
    /// It failed; nothing of it was made (for an add: nothing of its batch).
    Failed {
        /// The error's code ([`Error::code`]).
        code: &'static str,
        /// The error's message.
        message: String,
    },
    /// Not tried, because an earlier change failed.
    NotTried,
}

impl Outcome {
    /// Its name, as `vdev apply --json` writes it: `done`, `removal-pending`, `not-made`,
    /// `failed`, `not-tried`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Pending => "removal-pending",
            Outcome::NotMade => "not-made",
            Outcome::Failed { .. } => "failed",
            Outcome::NotTried => "not-tried",
        }
    }
}

/// One change of an apply and its outcome. Serialised (the one JSON form of every face: the
/// CLI, libvdev) as the change's fields, `"outcome"` ([`Outcome::as_str`]) and, for a
/// failure, `"error": {"code", "message"}`.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The change (an add's `reference` is filled in once it is made).
    pub change: Change,
    /// What became of it.
    pub outcome: Outcome,
}

impl Serialize for Applied {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let mut v = serde_json::to_value(&self.change).map_err(S::Error::custom)?;
        v["outcome"] = self.outcome.as_str().into();
        if let Outcome::Failed { code, message } = &self.outcome {
            v["error"] = serde_json::json!({"code": code, "message": message});
        }
        v.serialize(s)
    }
}

/// What [`Connection::apply`] did, change by change. Serialised as `{"changed", "changes"}`
/// (see [`ApplyReport::changed`] and [`Applied`]).
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Every change of the plan, in the order it was made, with its outcome.
    pub changes: Vec<Applied>,
    /// The first failure, if any (the one [`ApplyReport::into_result`] returns).
    pub error: Option<Error>,
}

impl Serialize for ApplyReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ApplyReport", 2)?;
        st.serialize_field("changed", &self.changed())?;
        st.serialize_field("changes", &self.changes)?;
        st.end()
    }
}

impl ApplyReport {
    /// Whether anything was changed: a change made, or a removal asked.
    pub fn changed(&self) -> bool {
        self.changes
            .iter()
            .any(|a| matches!(a.outcome, Outcome::Done | Outcome::Pending))
    }

    /// Whether nothing needed doing (the domains were already as the document says).
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes ended with `outcome`'s kind (compared by variant).
    pub fn count(&self, outcome: &Outcome) -> usize {
        let want = std::mem::discriminant(outcome);
        self.changes
            .iter()
            .filter(|a| std::mem::discriminant(&a.outcome) == want)
            .count()
    }

    /// `Ok` when no change failed; otherwise the first failure ([`Error::InBatch`] for an add,
    /// naming its document entry). Pending removals and unmade replacements are not failures:
    /// look at [`ApplyReport::count`] for them.
    pub fn into_result(mut self) -> Result<ApplyReport> {
        match self.error.take() {
            None => Ok(self),
            Some(e) => Err(e),
        }
    }
}

impl Connection {
    /// Create several devices in `domain` in one batch, all or none (see
    /// [`crate::Driver::attach_batch`]): their references, in order, or an error after which
    /// none of them is attached. Each entry is checked as [`Connection::attach_with`] checks
    /// one, before anything changes; a refused entry is [`Error::InBatch`] naming its index.
    pub async fn attach_batch(
        &self,
        domain: &Domain,
        devices: &[NewDevice],
        options: &AttachOptions,
    ) -> Result<Vec<DeviceRef>> {
        self.writable("attach")?;
        self.require(self.capabilities.attach, "attach")?;
        self.require_scope(options.scope, "attach")?;
        for (i, d) in devices.iter().enumerate() {
            let checked = match self.check_schema(&d.device_type).await {
                Ok(s) => s.check_names(&d.attributes),
                Err(e) => Err(e),
            };
            checked.map_err(|e| Error::InBatch {
                index: i,
                entry: d.to_string(),
                error: Box::new(e),
            })?;
        }
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        debug!(driver = self.driver_name, domain = %domain.name, devices = devices.len(), "attach batch");
        self.driver
            .attach_batch(domain, devices, options)
            .await
            .map_err(self.ctx(Some(domain)))
    }

    /// The changes that would take the document's domains to the state it describes (see
    /// [`crate::plan`] for how entries are matched and compared). Changes nothing.
    ///
    /// Errors before anything is looked at twice: [`Error::InvalidDocument`] naming the entry
    /// for an unknown type or attribute, a missing identity, two entries with one identity, or
    /// one that matches two devices; [`Error::DomainNotFound`] for a domain that is not there.
    pub async fn plan(&self, document: &Document) -> Result<Plan> {
        let mut plan = Plan::default();
        for (key, doc) in &document.domains {
            let (_, changes) = self.plan_one(key, doc).await?;
            plan.changes.extend(changes);
        }
        Ok(plan)
    }

    async fn plan_one(&self, key: &str, doc: &DomainDocument) -> Result<(Domain, Vec<Change>)> {
        let domain = self.resolve_domain(key).await?;
        let schemas = self.check_types().await?;
        let devices = self.devices(&domain, None).await?;
        let changes = plan_domain(key, doc, schemas, &devices, self.driver_name)?;
        Ok((domain, changes))
    }

    /// A document of what `domain` has now: each device (but those whose removal is pending)
    /// with the attributes the driver lists under the names it accepts. [`Connection::plan`] of
    /// it is empty.
    pub async fn export(&self, domain: &str) -> Result<Document> {
        let d = self.resolve_domain(domain).await?;
        let schemas = self.check_types().await?;
        let devices = self.devices(&d, None).await?;
        Ok(Document {
            domains: [(domain.to_owned(), export_domain(schemas, &devices))]
                .into_iter()
                .collect(),
        })
    }

    /// Make the document's state real: plan (as [`Connection::plan`], whose errors come before
    /// anything changes), then, domain by domain, remove (waiting as detach does), update, and
    /// add every new device of the domain in one batch ([`Connection::attach_batch`]: all or
    /// none). Replacements are reported, not made.
    ///
    /// Returns the report of every change; a failure stops the changes after it (they are
    /// [`Outcome::NotTried`]) and is kept in the report ([`ApplyReport::into_result`]). When a
    /// batch fails, the domain is planned again once: devices another process attached
    /// meanwhile (applying the same document at the same time) are then no longer added, and
    /// the rest is attached.
    pub async fn apply(&self, document: &Document, options: &ApplyOptions) -> Result<ApplyReport> {
        self.apply_with_progress(document, options, &|_| {}).await
    }

    /// [`Connection::apply`], calling `progress` as each change ends (a batch's adds end
    /// together), for a progress display: with the change and its outcome, how many changes
    /// have ended so far and how many the plan has.
    pub async fn apply_with_progress(
        &self,
        document: &Document,
        options: &ApplyOptions,
        progress: &(dyn Fn(Progress<'_>) + Send + Sync),
    ) -> Result<ApplyReport> {
        self.writable("apply")?;
        // Every domain is planned before anything changes, so that an error in the last
        // domain's entries leaves the first domain as it was.
        let mut planned = Vec::new();
        for (key, doc) in &document.domains {
            let (domain, changes) = self.plan_one(key, doc).await?;
            planned.push((key, doc, domain, changes));
        }
        let total = planned.iter().map(|p| p.3.len()).sum();
        let mut report = ApplyReport::default();
        let mut ended = Ended {
            report: &mut report,
            progress,
            total,
        };
        for (key, doc, domain, changes) in planned {
            if ended.report.error.is_some() {
                for change in changes {
                    ended.push(change, Outcome::NotTried);
                }
                continue;
            }
            self.apply_domain(key, doc, &domain, changes, options, &mut ended)
                .await;
        }
        Ok(report)
    }

    async fn apply_domain(
        &self,
        key: &str,
        doc: &DomainDocument,
        domain: &Domain,
        changes: Vec<Change>,
        options: &ApplyOptions,
        ended: &mut Ended<'_>,
    ) {
        let (adds, others): (Vec<Change>, Vec<Change>) =
            changes.into_iter().partition(|c| c.op == ChangeOp::Add);
        for change in others {
            if ended.report.error.is_some() {
                ended.push(change, Outcome::NotTried);
                continue;
            }
            let reference = change
                .reference
                .clone()
                .expect("only adds lack a reference");
            let result = match change.op {
                ChangeOp::Remove => {
                    let o = DetachOptions {
                        timeout: options.timeout,
                        scope: options.scope,
                        ..DetachOptions::default()
                    };
                    self.detach(domain, &change.device_type, &reference, &o)
                        .await
                }
                ChangeOp::Update => {
                    let o = UpdateOptions {
                        scope: options.scope,
                    };
                    self.update_with(domain, &change.device_type, &reference, &change.attrs, &o)
                        .await
                }
                ChangeOp::Replace | ChangeOp::Add => {
                    ended.push(change, Outcome::NotMade);
                    continue;
                }
            };
            let outcome = match result {
                Ok(()) => Outcome::Done,
                Err(Error::RemovalPending { .. }) => Outcome::Pending,
                Err(e) => fail(ended.report, e),
            };
            ended.push(change, outcome);
        }
        if adds.is_empty() {
            return;
        }
        if ended.report.error.is_some() {
            for change in adds {
                ended.push(change, Outcome::NotTried);
            }
            return;
        }
        let attach = AttachOptions {
            scope: options.scope,
        };
        let mut adds = adds;
        for attempt in 0..2 {
            let batch: Vec<NewDevice> = adds
                .iter()
                .map(|c| NewDevice {
                    device_type: c.device_type.clone(),
                    attributes: c.attrs.clone(),
                })
                .collect();
            match self.attach_batch(domain, &batch, &attach).await {
                Ok(refs) => {
                    for (mut change, r) in adds.into_iter().zip(refs) {
                        change.reference = Some(r);
                        ended.push(change, Outcome::Done);
                    }
                    return;
                }
                Err(e) => {
                    // Another process may have attached some of them meanwhile (its disk
                    // holds the image's lock, its NIC the MAC): plan again, once, and attach
                    // what is still missing. A failure of our own plans the same adds again
                    // and is reported.
                    if attempt == 0 && matches!(e, Error::InBatch { .. }) {
                        match self.plan_one(key, doc).await {
                            Ok((_, again)) => {
                                let again: Vec<Change> = again
                                    .into_iter()
                                    .filter(|c| c.op == ChangeOp::Add)
                                    .collect();
                                debug!(domain = %domain.name, before = adds.len(), after = again.len(), "a batch failed: planned again");
                                if again.len() < adds.len() {
                                    adds = again;
                                    if adds.is_empty() {
                                        return;
                                    }
                                    continue;
                                }
                            }
                            Err(e2) => debug!(error = %e2, "planning again failed"),
                        }
                    }
                    let e = entry_error(e, &adds);
                    let (code, message) = (e.code(), e.to_string());
                    ended.report.error.get_or_insert(e);
                    for change in adds {
                        let outcome = Outcome::Failed {
                            code,
                            message: message.clone(),
                        };
                        ended.push(change, outcome);
                    }
                    return;
                }
            }
        }
    }
}

/// Where [`Connection::apply_with_progress`] is: one change that ended, with its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// The change and its outcome.
    pub applied: &'a Applied,
    /// How many changes have ended so far, this one included.
    pub ended: usize,
    /// How many changes the plan has.
    pub total: usize,
}

/// The report being written, and who is told of each change that ends.
struct Ended<'a> {
    report: &'a mut ApplyReport,
    progress: &'a (dyn Fn(Progress<'_>) + Send + Sync),
    total: usize,
}

impl Ended<'_> {
    fn push(&mut self, change: Change, outcome: Outcome) {
        self.report.changes.push(Applied { change, outcome });
        (self.progress)(Progress {
            applied: self.report.changes.last().expect("just pushed"),
            ended: self.report.changes.len(),
            total: self.total,
        });
    }
}

/// Record the first failure; the outcome of the change that failed.
fn fail(report: &mut ApplyReport, e: Error) -> Outcome {
    let outcome = Outcome::Failed {
        code: e.code(),
        message: e.to_string(),
    };
    report.error.get_or_insert(e);
    outcome
}

/// A batch's error with its index turned into the document entry's.
fn entry_error(e: Error, adds: &[Change]) -> Error {
    match e {
        Error::InBatch {
            index,
            entry,
            error,
        } => {
            let c = &adds[index.min(adds.len() - 1)];
            Error::InBatch {
                index: c.entry.unwrap_or(index),
                entry: format!(
                    "domains.{}.devices[{}], {entry}",
                    c.domain,
                    c.entry.unwrap_or(index)
                ),
                error,
            }
        }
        e => e,
    }
}
