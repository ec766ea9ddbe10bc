//! What the code under test says through `tracing`, recorded so that a test can wait for the
//! event showing that the code has reached the point the test needs (an attach trying for a
//! lock, a request that timed out) instead of sleeping and assuming it has. [`install`] makes
//! the recorder this test binary's global subscriber; it keeps every event up to a level.
//! Shared by the QEMU and Xen driver tests (`#[path]`); needs the `tracing` crate.
#![allow(dead_code)]

use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{span, Event, Level, Metadata, Subscriber};

/// One event: its target, its message and its other fields (as text).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Where it came from (usually its module path).
    pub target: String,
    /// The message.
    pub message: String,
    /// The other fields, in order, each as `(name, value)`.
    pub fields: Vec<(String, String)>,
}

impl Recorded {
    /// The value of the field `name`, if the event has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

static EVENTS: Mutex<Vec<Recorded>> = Mutex::new(Vec::new());

fn events() -> std::sync::MutexGuard<'static, Vec<Recorded>> {
    EVENTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`Recorder`] keeps: events up to this level (the first [`install`]'s).
static MAX: OnceLock<Level> = OnceLock::new();

/// Make the recorder the global subscriber of this process, keeping the events of level `max`
/// and more severe (once: later calls do nothing).
pub fn install(max: Level) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = MAX.set(max);
        tracing::subscriber::set_global_default(Recorder)
            .expect("no other global tracing subscriber in this test binary");
    });
}

/// How many events have been recorded: what [`since`] and [`wait_for`] count from.
pub fn mark() -> usize {
    events().len()
}

/// The events recorded after `mark`.
pub fn since(mark: usize) -> Vec<Recorded> {
    events().get(mark..).unwrap_or_default().to_vec()
}

/// Wait until the events recorded after `mark` satisfy `done`, polling; fail after `deadline`
/// saying what was waited for (`what`) and which events came.
pub async fn wait_for(
    mark: usize,
    deadline: Duration,
    what: &str,
    done: impl Fn(&[Recorded]) -> bool,
) -> Vec<Recorded> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(seen) = check(mark, end, deadline, what, &done) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_for`] for a plain thread.
pub fn wait_for_blocking(
    mark: usize,
    deadline: Duration,
    what: &str,
    done: impl Fn(&[Recorded]) -> bool,
) -> Vec<Recorded> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(seen) = check(mark, end, deadline, what, &done) {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check(
    mark: usize,
    end: Instant,
    deadline: Duration,
    what: &str,
    done: &impl Fn(&[Recorded]) -> bool,
) -> Option<Vec<Recorded>> {
    let seen = since(mark);
    if done(&seen) {
        return Some(seen);
    }
    if Instant::now() >= end {
        let events: Vec<String> = seen
            .iter()
            .map(|e| format!("{}: {} {:?}", e.target, e.message, e.fields))
            .collect();
        panic!("waited {deadline:?} for {what}; the events meanwhile: {events:#?}");
    }
    None
}

struct Recorder;

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .push((field.name().to_owned(), value.to_owned()));
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && MAX.get().is_some_and(|max| metadata.level() <= max)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        events().push(Recorded {
            target: event.metadata().target().to_owned(),
            message: f.message,
            fields: f.fields,
        });
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}
