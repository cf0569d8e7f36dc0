//! Events on `…/events` (QoS 1, stored and numbered like predictions):
//! things an operator should hear about as they happen, rather than read
//! from the next telemetry. The sender waits for room, like predictions.

use serde::Serialize;
use std::time::SystemTime;

use super::model::ModelKind;
use super::rfc3339;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A camera failed (would not open, or stopped delivering frames); the
    /// agent keeps retrying it. Sent once per outage, not per retry.
    CameraLost { camera: String, reason: String },
    /// A lost camera delivers frames again.
    CameraBack { camera: String, down_s: f64 },
    /// The outbox was full: `dropped` messages numbered `first_seq` to
    /// `last_seq` (oldest first) were deleted unsent.
    OutboxOverflow { dropped: u64, first_seq: u64, last_seq: u64, dropped_total: u64 },
    /// The outbox cannot be written; messages are kept in memory meanwhile.
    OutboxUnavailable { path: String, error: String },
    /// The outbox is written to disk again.
    OutboxRestored { path: String },
    /// A new release passed its signature checks and is being downloaded.
    /// Every model event carries versions as strings, as `ModelIdentity` does,
    /// and says which model (`model_kind`: the classifier's or the
    /// detector's repository, and the model serving there); the probation
    /// events are the classifier's only.
    ModelDownloading { model_kind: ModelKind, name: String, version: String },
    /// Every file of it matched the signed record.
    ModelVerified { model_kind: ModelKind, name: String, version: String },
    /// A release was refused; the current model of that kind keeps serving.
    /// `name` and `version` as the record states them, if it could be read.
    ModelRejected { model_kind: ModelKind, name: Option<String>, version: Option<String>, reason: String },
    /// The inference thread swapped models between two frames.
    ModelActivated { model_kind: ModelKind, name: String, version: String, sha256: String, previous_version: String },
    /// A new release classified its first `registry.probation_frames` frames well.
    ModelProbationPassed { version: String, summary: String },
    /// A new release failed probation; `to_version` serves again.
    ModelRolledBack { version: String, to_version: String, reason: String },
    /// A monitored figure crossed its threshold (`raised`), or is back past
    /// its clear value (`cleared`). One of each per crossing.
    Alert {
        /// `precision`, or per camera: `class_mix`, `confidence`, `brightness`, `contrast`, `sharpness`.
        alert: String,
        state: AlertState,
        camera: Option<String>,
        value: f64,
        /// Which side of `threshold` is bad.
        bad: Bad,
        threshold: f64,
        clear_at: f64,
        /// Labelled regions, regions or measurements the value is made of.
        evidence: u64,
        /// Age of the oldest label counted (precision only; 0 otherwise).
        window_seconds: f64,
        model: super::ModelIdentity,
        /// What it means and what to do.
        advice: String,
    },
    /// Feedback that names no remembered prediction or region, or no road
    /// class, or is malformed; it is ignored. At most one a second:
    /// `also_rejected` counts those not reported since the last one.
    FeedbackRejected { prediction_seq: Option<u64>, region: Option<usize>, reason: String, also_rejected: u64 },
    /// Messages over `mqtt.max_message_bytes` were refused before they got a
    /// `seq` (so they leave no gap): `refused` since the last such event,
    /// the last one's `topic` and size.
    MessageRefused { refused: u64, refused_total: u64, topic: String, bytes: u64, max_bytes: u64 },
}

/// Which side of an alert's threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bad {
    Below,
    Above,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Raised,
    Cleared,
}

/// The payload of an event, without `seq` (the outbox adds it).
pub fn event_body(device: &str, event: &Event) -> Vec<u8> {
    let message = EventMessage { device, at: rfc3339(SystemTime::now()), event };
    serde_json::to_vec(&message).unwrap_or_else(|error| {
        tracing::error!(%error, ?event, "cannot serialise an event");
        b"{}".to_vec()
    })
}

#[derive(Serialize)]
struct EventMessage<'a> {
    device: &'a str,
    at: String,
    #[serde(flatten)]
    event: &'a Event,
}
