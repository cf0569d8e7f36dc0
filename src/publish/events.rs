//! Events on `…/events` (QoS 1): things an operator should hear about as
//! they happen, rather than read from the next telemetry. Never dropped:
//! the sender waits for room, like predictions.

use rumqttc::QoS;
use serde::Serialize;
use std::time::SystemTime;
use tokio::sync::mpsc;

use super::messages::rfc3339;
use super::Outgoing;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A camera failed (would not open, or stopped delivering frames); the
    /// agent keeps retrying it. Sent once per outage, not per retry.
    CameraLost { camera: String, reason: String },
    /// A lost camera delivers frames again.
    CameraBack { camera: String, down_s: f64 },
}

#[derive(Serialize)]
struct EventMessage<'a> {
    device: &'a str,
    at: String,
    #[serde(flatten)]
    event: &'a Event,
}

#[derive(Clone)]
pub struct EventSink {
    device_id: String,
    topic: String,
    tx: mpsc::Sender<Outgoing>,
}

impl EventSink {
    pub fn new(device_id: &str, topic: String, tx: mpsc::Sender<Outgoing>) -> EventSink {
        EventSink { device_id: device_id.to_string(), topic, tx }
    }

    /// Sends from a plain thread, waiting for room; a closed publisher
    /// (shutdown) is not an error worth more than a log line.
    pub fn send_blocking(&self, event: Event) {
        let message = EventMessage { device: &self.device_id, at: rfc3339(SystemTime::now()), event: &event };
        let payload = match serde_json::to_vec(&message) {
            Ok(payload) => payload,
            Err(error) => return tracing::error!(%error, "cannot serialise an event"),
        };
        let outgoing = Outgoing { topic: self.topic.clone(), payload, qos: QoS::AtLeastOnce, retain: false };
        if self.tx.blocking_send(outgoing).is_err() {
            tracing::debug!(?event, "publisher gone; event not sent");
        }
    }
}
