//! Everything that leaves the device: topic names ([`topics`]), payloads
//! ([`messages`]) and the task that owns the MQTT client ([`mqtt`]).

pub mod messages;
pub mod mqtt;
pub mod topics;

pub use mqtt::{Outgoing, Publisher, PublisherStats};
pub use topics::Topics;
