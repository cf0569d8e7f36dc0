//! The JSON payloads the agent publishes. `docs/mqtt.md` documents them;
//! change both together.

use serde::{Deserialize, Serialize};
use std::time::SystemTime;

use crate::infer::{ModelIdentity, RegionPrediction};
use crate::stats::CameraSnapshot;

/// RFC 3339, UTC, millisecond precision.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

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
    let message = StatusMessage { device, state, agent_version: crate::AGENT_VERSION, at: rfc3339(SystemTime::now()), model };
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

/// `…/telemetry`, QoS 0, every `telemetry.interval_seconds`.
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryMessage<'a> {
    pub device: &'a str,
    pub at: String,
    pub agent_version: &'a str,
    pub uptime_s: u64,
    pub model: &'a ModelIdentity,
    pub system: SystemFigures,
    pub agent: AgentFigures,
    pub cameras: Vec<CameraSnapshot>,
    pub mqtt: MqttFigures,
    /// Feedback figures, drift per camera, alerts raised, samples (absent when monitoring is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<crate::monitor::MonitorFigures>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SystemFigures {
    /// Whole-device CPU use since the last telemetry, 0–100.
    pub cpu_percent: f32,
    pub load_1m: f64,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    /// Free bytes on the file system of `state_dir`.
    pub state_disk_free_bytes: Option<u64>,
    /// Sensor label → degrees Celsius; empty where the device has no sensors.
    pub temperatures_c: std::collections::BTreeMap<String, f32>,
    /// IIO sensors: device name → reading (unit in its name) → value.
    pub sensors: std::collections::BTreeMap<String, std::collections::BTreeMap<String, f64>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AgentFigures {
    pub rss_bytes: Option<u64>,
    pub cpu_percent: Option<f32>,
    /// Frames waiting for inference.
    pub frame_queue: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MqttFigures {
    pub connected: bool,
    /// QoS 1 messages handed to the MQTT client, and those the broker acknowledged.
    pub submitted: u64,
    pub acknowledged: u64,
    pub connects: u64,
    /// Telemetry messages dropped because the outgoing queue was full.
    pub telemetry_dropped: u64,
    pub outbox: crate::publish::mqtt::OutboxFigures,
}
