//! cctv-agent: an on-camera daemon that classifies the vehicles in a video
//! stream and publishes its predictions and telemetry over MQTT.
//!
//! # Layout
//! The folders are the data flow; each is one wing, and may use only the
//! ones listed before it (checked by `tests/layering.rs`; ARCHITECTURE.md):
//! - [`wire`] and [`util`]: leaves — the MQTT contract (topics, every
//!   payload) and helpers that know no feature (files, shutdown, health).
//! - [`config`]: the TOML file, its defaults (one place) and its validation.
//! - [`infer`]: classification only — model spec, preprocessing, the ONNX
//!   Runtime session, the road taxonomy.
//! - [`publish`]: the task that owns the MQTT client and the durable outbox;
//!   inbound messages go through routes the consumers register.
//! - [`context`]: what every component is built from.
//! - [`models`]: releases — registry, signed records, updater, store, probation.
//! - [`pipeline`]: camera threads, regions, the frame queue and the inference
//!   thread, which shows classified frames to taps and hands predictions on.
//! - [`monitor`]: ground-truth feedback, drift, alerts, retrain requests and
//!   samples, fed by the pipeline's taps and the publisher's stored hook.
//! - [`ops`]: telemetry, commands, the console `watch`, systemd notify.
//! - [`view`]: the installer's local page: annotated frames, counts, the model.
//! - [`agent`]: the supervisor that builds and wires everything and shuts it down.

pub mod agent;
pub mod config;
pub mod context;
pub mod infer;
pub mod models;
pub mod monitor;
pub mod ops;
pub mod pipeline;
pub mod privacy;
pub mod publish;
pub mod track;
pub mod util;
pub mod view;
pub mod wire;

/// The agent's own version, reported in status, telemetry and `--version`.
pub use wire::messages::AGENT_VERSION;
