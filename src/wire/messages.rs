//! The JSON payloads the agent publishes. `docs/mqtt.md` documents them;
//! change both together.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

use super::{rfc3339, ModelIdentity, RegionPrediction};

/// The agent's own version, reported in status, telemetry and `--version`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceState {
    Online,
    Offline,
}

/// `…/status`, retained.
#[derive(Debug, Clone, Serialize)]
pub struct StatusMessage<'a> {
    pub device: &'a str,
    pub state: DeviceState,
    pub agent_version: &'a str,
    pub at: String,
    /// Missing in the Last Will when the model could not be loaded.
    pub model: Option<&'a ModelIdentity>,
}

/// The retained status payload.
pub fn status_payload(device: &str, state: DeviceState, model: Option<&ModelIdentity>) -> Vec<u8> {
    let message = StatusMessage { device, state, agent_version: AGENT_VERSION, at: rfc3339(SystemTime::now()), model };
    serde_json::to_vec(&message).unwrap_or_default()
}

/// The retained `…/model` payload.
pub fn model_state_payload(device: &str, model: &ModelIdentity) -> Vec<u8> {
    serde_json::to_vec(&ModelState { device, active: model, at: rfc3339(SystemTime::now()) }).unwrap_or_default()
}

/// `…/model`, retained: the model serving now.
#[derive(Debug, Clone, Serialize)]
pub struct ModelState<'a> {
    pub device: &'a str,
    pub active: &'a ModelIdentity,
    pub at: String,
}

/// `…/predictions/<camera>`, QoS 1, one per frame that had regions. The
/// outbox puts `seq` in front when it stores the message.
#[derive(Debug, Clone, Serialize)]
pub struct PredictionMessage<'a> {
    pub device: &'a str,
    pub camera: &'a str,
    /// Position of the frame in its source (0-based; restarts at 0 when a file loops).
    pub frame_index: u64,
    pub captured_at: String,
    pub model: &'a ModelIdentity,
    /// Wall time of preprocessing + inference for the whole frame.
    pub inference_ms: f32,
    pub regions: &'a [RegionPrediction],
}

/// `…/cmd/<name>/reply`, QoS 1, not stored: one per command.
#[derive(Debug, Serialize)]
pub struct CommandReply<'a> {
    pub device: &'a str,
    pub command: &'a str,
    /// The request's `id`, if it had one.
    pub id: Option<serde_json::Value>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    pub at: String,
}

/// The `result` of a `ping` reply.
#[derive(Debug, Serialize)]
pub struct PingResult<'a> {
    pub agent_version: &'a str,
    pub model: &'a ModelIdentity,
    pub uptime_s: u64,
}

/// The `result` of a `rollback`, `pin` or `unpin` reply.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ModelChoice {
    /// The version serving now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<bool>,
}
