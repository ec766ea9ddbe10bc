//! A fan-out of device events, for drivers.

use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use tokio::sync::{broadcast, watch};

use crate::driver::EventStream;
use crate::error::Error;
use crate::types::DeviceEvent;

/// What most drivers need behind [`crate::Driver::events`]: every subscriber gets every event
/// sent after it subscribed, in order; a subscriber that falls more than the capacity behind gets
/// one error saying how many it lost, then goes on; [`EventHub::close`] ends every stream after
/// the events already sent. Cheap to clone: clones share the hub.
///
/// The buffer is made when the first subscriber comes: a connection nobody listens to (a
/// one-shot command) allocates nothing for events, and what is sent before then reaches nobody,
/// as it would with no subscriber.
#[derive(Debug, Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    driver: &'static str,
    capacity: usize,
    tx: OnceLock<broadcast::Sender<DeviceEvent>>,
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
                capacity: capacity.max(1),
                tx: OnceLock::new(),
                closed: watch::channel(false).0,
            }),
        }
    }

    /// Deliver `event` to every current subscriber (none: it is dropped).
    pub fn send(&self, event: DeviceEvent) {
        if let Some(tx) = self.inner.tx.get() {
            let _ = tx.send(event);
        }
    }

    /// A stream of the events sent from now on.
    pub fn subscribe(&self) -> EventStream {
        let tx = self
            .inner
            .tx
            .get_or_init(|| broadcast::channel(self.inner.capacity).0);
        let (rx, closed, driver) = (tx.subscribe(), self.closed_signal(), self.inner.driver);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceRef, DeviceType, Domain};

    fn added(n: u32) -> DeviceEvent {
        DeviceEvent::Added {
            domain: Domain::new(Some(1), "vm"),
            device_type: DeviceType::DISK,
            reference: DeviceRef::new(format!("d{n}")).unwrap(),
        }
    }

    fn reference(e: &DeviceEvent) -> &str {
        e.reference().as_str()
    }

    /// A subscriber gets what is sent after it subscribed, in order; what was sent before any
    /// subscriber came reaches nobody; closing ends the stream after what was sent.
    #[tokio::test]
    async fn subscribers_get_what_is_sent_after_they_came() {
        let hub = EventHub::with_capacity("test", 8);
        hub.send(added(0));
        let mut first = hub.subscribe();
        hub.send(added(1));
        let mut second = hub.subscribe();
        hub.send(added(2));
        hub.close();
        let mut got = Vec::new();
        while let Some(e) = first.next().await {
            got.push(reference(&e.unwrap()).to_owned());
        }
        assert_eq!(got, ["d1", "d2"]);
        let e = second.next().await.expect("one event").unwrap();
        assert_eq!(reference(&e), "d2");
        assert!(second.next().await.is_none());
    }

    /// A subscriber that falls more than the capacity behind gets one error, then goes on.
    #[tokio::test]
    async fn a_subscriber_behind_is_told_how_many_it_lost() {
        let hub = EventHub::with_capacity("test", 2);
        let mut s = hub.subscribe();
        for n in 0..5 {
            hub.send(added(n));
        }
        let e = s.next().await.expect("an item").unwrap_err();
        assert!(e.to_string().contains("3 device events were lost"), "{e}");
        let e = s.next().await.expect("an item").unwrap();
        assert_eq!(reference(&e), "d3");
    }
}
