//! Topic names: `<topic_root>/<device_id>/...`. Built here only.

#[derive(Debug, Clone)]
pub struct Topics {
    root: String,
    base: String,
}

impl Topics {
    pub fn new(topic_root: &str, device_id: &str) -> Topics {
        Topics { root: topic_root.to_string(), base: format!("{topic_root}/{device_id}") }
    }

    /// `<topic_root>/fleet/models/<model>`: where the trainer announces a release (retained).
    pub fn release_announcement(topic_root: &str, model_name: &str) -> String {
        format!("{topic_root}/fleet/models/{model_name}")
    }

    /// `<root>/fleet/models/`: the trainer announces releases under it (retained).
    pub fn fleet_models_prefix(&self) -> String {
        format!("{}/fleet/models/", self.root)
    }

    /// Retained `online` / `offline`; the Last Will sets `offline`.
    pub fn status(&self) -> String {
        format!("{}/status", self.base)
    }

    pub fn predictions(&self, camera_id: &str) -> String {
        format!("{}/predictions/{camera_id}", self.base)
    }

    /// QoS 1, stored: one per tracked vehicle, when it has left the view.
    pub fn vehicles(&self, camera_id: &str) -> String {
        format!("{}/vehicles/{camera_id}", self.base)
    }

    /// QoS 1, stored: a tracked camera's counts per interval.
    pub fn counts(&self, camera_id: &str) -> String {
        format!("{}/counts/{camera_id}", self.base)
    }

    /// QoS 1: camera, outbox, model and alert events.
    pub fn events(&self) -> String {
        format!("{}/events", self.base)
    }

    /// The subscription for operator commands: `…/cmd/<name>`.
    pub fn commands(&self) -> String {
        format!("{}/cmd/+", self.base)
    }

    /// Where the reply to `…/cmd/<name>` goes.
    pub fn command_reply(&self, name: &str) -> String {
        format!("{}/cmd/{name}/reply", self.base)
    }

    /// The command name in a topic matched by [`Topics::commands`].
    pub fn command_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&self.base)?.strip_prefix("/cmd/").filter(|name| !name.contains('/'))
    }

    /// Retained: the model serving now.
    pub fn model(&self) -> String {
        format!("{}/model", self.base)
    }

    /// Ground truth for earlier predictions (the agent subscribes).
    pub fn feedback(&self) -> String {
        format!("{}/feedback", self.base)
    }

    /// `…/samples/`: each saved sample is published under it by id, in chunks.
    pub fn samples_prefix(&self) -> String {
        format!("{}/samples/", self.base)
    }

    /// `<root>/fleet/retrain/<model>`: the device asks the trainer for a better model.
    pub fn retrain(&self, model_name: &str) -> String {
        format!("{}/fleet/retrain/{model_name}", self.root)
    }

    pub fn telemetry(&self) -> String {
        format!("{}/telemetry", self.base)
    }
}
