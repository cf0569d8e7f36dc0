//! What every component is built from: who the device is, its topics, the
//! publisher's channel, the model serving now, and the shutdown signal. The
//! supervisor makes one; each component's constructor takes what it needs
//! from it into its own private state.

use tokio::sync::mpsc;

use crate::publish::sink::EventSink;
use crate::publish::Outgoing;
use crate::util::shutdown::Shutdown;
use crate::wire::{ActiveModel, Topics};

#[derive(Clone)]
pub struct Context {
    pub device_id: String,
    pub topics: Topics,
    /// Everything that leaves the device goes through this channel to the publisher.
    pub outgoing: mpsc::Sender<Outgoing>,
    pub active_model: ActiveModel,
    pub shutdown: Shutdown,
}

impl Context {
    /// A sender of `…/events` that never keeps the publisher from finishing.
    pub fn events(&self) -> EventSink {
        EventSink::new(&self.device_id, self.topics.events(), &self.outgoing)
    }
}
