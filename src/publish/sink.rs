//! The producers' side of the publisher's channel for events.

use tokio::sync::mpsc;

use super::Outgoing;
use crate::wire::events::{event_body, Event};

/// Holds only a weak sender: an event source never keeps the publisher
/// from finishing its shutdown.
#[derive(Clone)]
pub struct EventSink {
    device_id: String,
    topic: String,
    tx: mpsc::WeakSender<Outgoing>,
}

impl EventSink {
    pub fn new(device_id: &str, topic: String, tx: &mpsc::Sender<Outgoing>) -> EventSink {
        EventSink { device_id: device_id.to_string(), topic, tx: tx.downgrade() }
    }

    /// Sends from a plain thread, waiting for room; a closed publisher
    /// (shutdown) is not an error worth more than a log line.
    pub fn send_blocking(&self, event: Event) {
        let outgoing = Outgoing::stored(self.topic.clone(), event_body(&self.device_id, &event));
        if self.tx.upgrade().is_none_or(|tx| tx.blocking_send(outgoing).is_err()) {
            tracing::debug!(?event, "publisher gone; event not sent");
        }
    }
}
