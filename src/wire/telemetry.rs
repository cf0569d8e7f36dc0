//! `…/telemetry` (QoS 0, every `telemetry.interval_seconds`) and the
//! figures each wing contributes to it.

use serde::Serialize;
use std::collections::BTreeMap;

use super::ModelIdentity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    Starting,
    Running,
    /// Failed; waiting before the next attempt to open it.
    Retrying,
    /// A file that reached its end (and does not loop).
    Finished,
    Stopped,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CameraSnapshot {
    pub id: String,
    pub state: CameraState,
    pub frames_in: u64,
    pub frames_processed: u64,
    pub frames_without_regions: u64,
    pub frames_dropped: u64,
    pub reconnects: u64,
    pub inference_errors: u64,
    pub decode_errors: u64,
    pub latency_ms_p50: Option<f32>,
    pub latency_ms_p95: Option<f32>,
    pub last_error: Option<String>,
    /// A detector camera's detector: how often it ran, and why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorSnapshot>,
}

/// `regions = "detector"`: what each processed frame got.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DetectorSnapshot {
    /// Frames the detector ran on.
    pub frames_detected: u64,
    /// Frames it did not run on because motion found nothing and no vehicle was tracked.
    pub frames_gated: u64,
    /// Frames between two detections (`detect_every` > 1): tracks only.
    pub frames_tracked_only: u64,
    /// Frames the detector failed on (skipped).
    pub errors: u64,
    pub latency_ms_p50: Option<f32>,
    pub latency_ms_p95: Option<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Disk,
    Memory,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OutboxFigures {
    pub mode: Option<Mode>,
    /// Stored messages not yet acknowledged by the broker, and their size.
    pub messages: u64,
    pub bytes: u64,
    pub capacity_bytes: u64,
    /// Messages dropped, oldest first, because the outbox was full.
    pub dropped: u64,
}

/// The monitor's part of telemetry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MonitorFigures {
    /// The active model's figures over the feedback window.
    pub feedback: Metrics,
    /// Labels refused (unknown seq or region, bad class, malformed message).
    pub feedback_rejected: u64,
    pub cameras: BTreeMap<String, DriftFigures>,
    /// Alerts raised now → latest value.
    pub alerts: BTreeMap<String, f64>,
    pub samples: Option<SampleFigures>,
    /// Inputs the monitor could not take in time.
    pub dropped: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ClassFigures {
    /// Labelled regions the model named this class, and the right ones among them.
    pub predicted: u64,
    pub correct: u64,
    /// Labelled regions that truly are this class.
    pub actual: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

/// The active model's figures over the feedback window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metrics {
    pub model_version: String,
    pub labelled: u64,
    pub correct: u64,
    /// Share of labelled regions named right. One class per region, so this
    /// is both the model's (micro-averaged) precision and its accuracy.
    pub precision: Option<f64>,
    pub per_class: BTreeMap<String, ClassFigures>,
    /// Predicted class → true class → count, for the mistakes only.
    pub confusion: BTreeMap<String, BTreeMap<String, u64>>,
    /// Age of the oldest label counted, seconds.
    pub window_seconds: f64,
}

/// The figures telemetry reports per camera, and alerts judge.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DriftFigures {
    /// `spec`, `learned`, or `learning` (with `baseline_regions` of `reference_regions` seen).
    pub baseline: String,
    pub baseline_regions: u64,
    /// Regions in the window; the class figures are judged once it is full.
    pub window_regions: usize,
    pub class_mix: BTreeMap<String, f64>,
    pub class_mix_distance: Option<f64>,
    pub mean_confidence: Option<f64>,
    /// Mean confidence over the baseline's.
    pub confidence_ratio: Option<f64>,
    /// Means over the input window (`None` until it is full).
    pub brightness: Option<f64>,
    pub contrast: Option<f64>,
    pub sharpness: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SampleFigures {
    pub saved: u64,
    pub files: u64,
    pub bytes: u64,
    pub evicted: u64,
    pub dropped: u64,
    pub rate_limited: u64,
    pub missed: u64,
    pub write_errors: u64,
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
    pub monitor: Option<MonitorFigures>,
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
    /// Messages over `mqtt.max_message_bytes`, refused before they got a `seq`.
    pub refused: u64,
    /// Command replies (unstored QoS 1) dropped: too many waiting for the broker.
    pub replies_dropped: u64,
    /// Commands dropped unread: they arrived faster than they are handled.
    pub inbound_dropped: u64,
    pub outbox: OutboxFigures,
}
