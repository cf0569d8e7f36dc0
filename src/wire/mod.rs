//! The contract with everyone on the other end of MQTT: topic names
//! ([`topics`]) and every payload as a type ([`model`], [`messages`],
//! [`events`], …), with the timestamp format ([`time`]). `docs/mqtt.md` and
//! `docs/schema/` document them; change both together.
//!
//! A leaf: it imports nothing of the crate, so every wing can use it.

pub mod events;
pub mod messages;
pub mod model;
pub mod releases;
pub mod retrain;
pub mod samples;
pub mod telemetry;
pub mod time;
pub mod topics;
pub mod vehicles;

pub use model::{ActiveModel, ModelIdentity, ModelKind, RegionPrediction, TopK};
pub use time::rfc3339;
pub use topics::Topics;
