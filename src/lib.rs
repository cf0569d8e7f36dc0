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
pub mod camera;
pub mod commands;
pub mod config;
pub mod frame_queue;
pub mod health;
pub mod infer;
pub mod model_store;
pub mod model_switch;
pub mod monitor;
pub mod notify;
pub mod ort_runtime;
pub mod outbox;
pub mod publish;
pub mod registry;
pub mod release;
pub mod regions;
pub mod sensors;
pub mod shutdown;
pub mod stats;
pub mod telemetry;
pub mod trainer;
pub mod update;
pub mod watch;

/// The agent's own version, reported in telemetry and `--version`.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
