//! cctv-agent: an on-camera daemon that classifies the vehicles in a video
//! stream and publishes its predictions and telemetry over MQTT.
//!
//! # Layout
//! Data flows top to bottom:
//! - [`config`]: the TOML file, its defaults (one place) and its validation.
//! - [`camera`]: one thread per camera; decodes with OpenCV, finds [`regions`],
//!   and hands frames to the [`frame_queue`].
//! - [`infer`]: the model spec, preprocessing, the ONNX Runtime session and the
//!   road taxonomy; [`infer::worker`] is the thread that owns the session.
//! - [`publish`]: topics, payloads and the task that owns the MQTT client.
//! - [`telemetry`]: periodic device and pipeline figures; [`sensors`] reads
//!   temperatures and IIO sensors from sysfs.
//! - [`agent`]: the supervisor that wires everything and shuts it down.
//!
//! - [`outbox`]: numbers and stores predictions, events, samples and retrain
//!   requests on disk until the broker acknowledges them; [`commands`]
//!   answers operators on `…/cmd/+`.
//! - [`monitor`]: ground-truth feedback, drift, alerts, retrain requests and
//!   samples for retraining.
//!
//! Small shared pieces: [`stats`] (per-camera counters), [`shutdown`],
//! [`health`] (is every thread making progress?), [`notify`] (systemd's
//! READY/WATCHDOG protocol),
//! [`ort_runtime`] (finding the ONNX Runtime library), [`watch`] (a console
//! subscriber for operators).

pub mod agent;
pub mod config;
pub mod context;
pub mod infer;
pub mod models;
pub mod monitor;
pub mod ops;
pub mod pipeline;
pub mod publish;
pub mod util;
pub mod wire;

/// The agent's own version, reported in status, telemetry and `--version`.
pub use wire::messages::AGENT_VERSION;
