//! The recent events of one service, numbered, for `/events` long-polls.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::wire::{EventRecord, EventsPage, ProgressInfo};

/// The last `capacity` events of a service. Each gets the next sequence number; a reader asks
/// for those after the last number it has seen and may wait for new ones.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<VecDeque<EventRecord>>,
    capacity: usize,
    last: watch::Sender<u64>,
}

impl EventLog {
    /// An empty log keeping `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
            last: watch::Sender::new(0),
        }
    }

    /// Appends an event of the election, or a progress report, described by `text`.
    pub fn push(
        &self,
        text: String,
        event: Option<idns_core::Event>,
        progress: Option<ProgressInfo>,
    ) -> u64 {
        let mut q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let seq = *self.last.borrow() + 1;
        if q.len() >= self.capacity {
            q.pop_front();
        }
        q.push_back(EventRecord {
            seq,
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            text,
            event,
            progress,
        });
        // Under the lock, so numbers and order agree.
        self.last.send_replace(seq);
        seq
    }

    /// The sequence number of the newest event (0 before the first).
    pub fn last(&self) -> u64 {
        *self.last.borrow()
    }

    /// The events after `after`, at most `limit`.
    pub fn after(&self, after: u64, limit: usize) -> EventsPage {
        let q = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let first = q.front().map_or(after + 1, |e| e.seq);
        let events: Vec<EventRecord> = q
            .iter()
            .filter(|e| e.seq > after)
            .take(limit)
            .cloned()
            .collect();
        let next = events.last().map_or(after.max(first - 1), |e| e.seq);
        EventsPage {
            missed: first > after + 1 && !q.is_empty(),
            events,
            next,
        }
    }

    /// Waits up to `wait` for an event after `after` (or until `stop` says so), then returns
    /// what there is.
    pub async fn wait_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> EventsPage {
        let mut rx = self.last.subscribe();
        let newer = rx.wait_for(|last| *last > after);
        tokio::select! {
            _ = tokio::time::timeout(wait, newer) => {}
            () = stopped(&mut stop) => {}
        }
        self.after(after, limit)
    }
}

/// Waits until `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_events_and_drops_the_oldest() {
        let log = EventLog::new(3);
        for i in 0..5 {
            log.push(format!("e{i}"), None, None);
        }
        let page = log.after(0, 100);
        assert!(page.missed);
        assert_eq!(
            page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(page.next, 5);
        let page = log.after(3, 1);
        assert!(!page.missed);
        assert_eq!(page.events[0].text, "e3");
        assert_eq!(page.next, 4);
        let page = log.after(5, 10);
        assert!(page.events.is_empty());
        assert_eq!(page.next, 5);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_a_new_event() {
        let log = std::sync::Arc::new(EventLog::new(10));
        let (_tx, stop) = watch::channel(false);
        let reader = {
            let log = log.clone();
            tokio::spawn(async move { log.wait_after(0, 10, Duration::from_secs(60), stop).await })
        };
        tokio::task::yield_now().await;
        log.push("hello".into(), None, None);
        let page = reader.await.unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].text, "hello");
    }
}
