//! A fan-out of device events, for drivers.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::{broadcast, watch};

use crate::driver::EventStream;
use crate::error::Error;
use crate::types::DeviceEvent;

/// What most drivers need behind [`crate::Driver::events`]: every subscriber gets every event
/// sent after it subscribed, in order; a subscriber that falls more than the capacity behind gets
/// one error saying how many it lost, then goes on; [`EventHub::close`] ends every stream after
/// the events already sent. Cheap to clone: clones share the hub.
#[derive(Debug, Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    driver: &'static str,
    tx: broadcast::Sender<DeviceEvent>,
    closed: watch::Sender<bool>,
}

impl EventHub {
    /// How many events a subscriber may fall behind by default.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A hub for the driver called `driver` (named in the error about lost events).
    pub fn new(driver: &'static str) -> Self {
        Self::with_capacity(driver, Self::DEFAULT_CAPACITY)
    }

    /// A hub whose subscribers may fall `capacity` events behind.
    pub fn with_capacity(driver: &'static str, capacity: usize) -> Self {
        EventHub {
            inner: Arc::new(Inner {
                driver,
                tx: broadcast::channel(capacity.max(1)).0,
                closed: watch::channel(false).0,
            }),
        }
    }

    /// Deliver `event` to every current subscriber (none: it is dropped).
    pub fn send(&self, event: DeviceEvent) {
        let _ = self.inner.tx.send(event);
    }

    /// A stream of the events sent from now on.
    pub fn subscribe(&self) -> EventStream {
        let (rx, closed, driver) = (
            self.inner.tx.subscribe(),
            self.closed_signal(),
            self.inner.driver,
        );
        futures::stream::unfold((rx, closed), move |(mut rx, mut closed)| async move {
            loop {
                if *closed.borrow() {
                    // Deliver what was sent before the close, then end.
                    return match rx.try_recv() {
                        Ok(ev) => Some((Ok(ev), (rx, closed))),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            Some((Err(events_lost(driver, n)), (rx, closed)))
                        }
                        Err(_) => None,
                    };
                }
                tokio::select! {
                    r = rx.recv() => match r {
                        Ok(ev) => return Some((Ok(ev), (rx, closed))),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            return Some((Err(events_lost(driver, n)), (rx, closed)))
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = closed.changed() => {}
                }
            }
        })
        .boxed()
    }

    /// End every stream (after the events already sent). Idempotent.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Whether [`EventHub::close`] was called.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// A signal that turns `true` when the hub closes, for streams a driver builds itself.
    pub fn closed_signal(&self) -> watch::Receiver<bool> {
        self.inner.closed.subscribe()
    }
}

/// The error an event stream yields when its consumer fell `n` events behind.
pub fn events_lost(driver: &str, n: u64) -> Error {
    Error::backend(
        driver,
        format!("{n} device events were lost because the consumer fell behind; list the devices again to resynchronise"),
    )
}
