//! Reference-counted bus subscriptions. The node subscribes to a topic when its first local
//! connection takes an interest and unsubscribes a linger period after the last one left, unless
//! interest came back meanwhile. Bus calls are serialised, so a subscribe racing an unsubscribe
//! of the same topic always ends subscribed when there is interest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::bus::{Bus, BusError, Topic};

#[derive(Default)]
struct Entry {
    interest: usize,
    subscribed: bool,
}

pub struct Subscriptions {
    bus: Arc<dyn Bus>,
    entries: Mutex<HashMap<Topic, Entry>>,
    ops: tokio::sync::Mutex<()>,
    linger: Duration,
}

impl Subscriptions {
    pub fn new(bus: Arc<dyn Bus>, linger: Duration) -> Self {
        Self {
            bus,
            entries: Mutex::default(),
            ops: tokio::sync::Mutex::new(()),
            linger,
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Topic, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_subscribed(&self, topic: &Topic) -> bool {
        self.entries().get(topic).is_some_and(|e| e.subscribed)
    }

    /// Adds one unit of interest; when it returns `Ok`, the node receives the topic.
    pub async fn acquire(&self, topic: &Topic) -> Result<(), BusError> {
        {
            let mut entries = self.entries();
            let entry = entries.entry(topic.clone()).or_default();
            entry.interest += 1;
            if entry.subscribed {
                return Ok(());
            }
        }
        let _ops = self.ops.lock().await;
        if self.is_subscribed(topic) {
            return Ok(());
        }
        match self.bus.subscribe(topic).await {
            Ok(()) => {
                self.entries().entry(topic.clone()).or_default().subscribed = true;
                Ok(())
            }
            Err(e) => {
                self.drop_interest(topic);
                Err(e)
            }
        }
    }

    /// Removes one unit of interest; the last one schedules an unsubscribe.
    pub fn release(self: &Arc<Self>, topic: &Topic) {
        if self.drop_interest(topic) {
            let this = Arc::clone(self);
            let topic = topic.clone();
            tokio::spawn(async move {
                tokio::time::sleep(this.linger).await;
                this.unsubscribe_if_idle(&topic).await;
            });
        }
    }

    /// Returns `true` when no interest is left.
    fn drop_interest(&self, topic: &Topic) -> bool {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(topic) else {
            return false;
        };
        entry.interest = entry.interest.saturating_sub(1);
        if entry.interest == 0 && !entry.subscribed {
            entries.remove(topic);
            return false;
        }
        entry.interest == 0
    }

    async fn unsubscribe_if_idle(&self, topic: &Topic) {
        let _ops = self.ops.lock().await;
        {
            let mut entries = self.entries();
            match entries.get(topic) {
                Some(e) if e.interest == 0 && e.subscribed => entries.remove(topic),
                _ => return,
            };
        }
        if let Err(e) = self.bus.unsubscribe(topic).await {
            tracing::warn!(error = %e, "unsubscribe failed");
        }
    }

    /// Every topic the node currently listens to (for re-subscribing after a bus outage).
    pub fn topics(&self) -> Vec<Topic> {
        let entries = self.entries();
        entries
            .iter()
            .filter(|(_, e)| e.subscribed)
            .map(|(t, _)| t.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryHub;
    use crate::protocol::{NodeId, RoomId};

    #[tokio::test(start_paused = true)]
    async fn subscribes_once_and_unsubscribes_after_linger() {
        let hub = MemoryHub::new();
        let (bus, _rx) = hub.attach(NodeId::generate());
        let subs = Arc::new(Subscriptions::new(Arc::new(bus), Duration::from_secs(2)));
        let topic = Topic::Room(RoomId::parse("r").unwrap());
        subs.acquire(&topic).await.unwrap();
        subs.acquire(&topic).await.unwrap();
        subs.release(&topic);
        subs.release(&topic);
        assert_eq!(subs.topics(), vec![topic.clone()]);
        // Interest returns within the linger: the subscription stays.
        subs.acquire(&topic).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(subs.topics(), vec![topic.clone()]);
        subs.release(&topic);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(subs.topics().is_empty());
    }
}
