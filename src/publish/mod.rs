//! Delivery: the task that owns the MQTT client ([`mqtt`]), the durable
//! [`outbox`] that numbers and stores messages until the broker acknowledges
//! them, and the producers' side of its channel ([`sink`]). It knows no
//! consumer: inbound topics go through a table consumers register with
//! ([`routes`]), and "stored, got seq N" goes out through a hook.

pub mod mqtt;
pub mod outbox;
pub mod routes;
pub mod sink;

pub use mqtt::{Kind, Outgoing, Publisher, PublisherStats};
pub use routes::{Inbound, Routes};
