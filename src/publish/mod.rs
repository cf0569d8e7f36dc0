//! Everything that leaves the device: topic names ([`topics`]), payloads
//! ([`messages`], [`events`]) and the task that owns the MQTT client ([`mqtt`]).

pub mod events;
pub mod messages;
pub mod mqtt;
pub mod topics;

pub use mqtt::{Outgoing, Publisher, PublisherStats};
pub use topics::Topics;
