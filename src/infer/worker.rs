//! The inference thread: the only owner of the ONNX Runtime session. It takes
//! frames from the [`FrameQueue`], classifies their regions, and hands the
//! serialised prediction to the publisher (which numbers and stores it),
//! waiting if the publisher is behind (predictions are never dropped here).

use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

use super::{ActiveModel, Classifier};
use crate::publish::events::{Event, EventSink};
use crate::frame_queue::FrameQueue;
use crate::health::Heartbeat;
use crate::publish::messages::{rfc3339, PredictionMessage};
use crate::publish::{Outgoing, Topics};
use crate::stats::CameraStats;

pub struct InferenceWorker {
    pub device_id: String,
    pub classifier: Classifier,
    pub queue: Arc<FrameQueue>,
    pub stats: Vec<Arc<CameraStats>>,
    pub topics: Topics,
    pub sink: mpsc::Sender<Outgoing>,
    pub heartbeat: Arc<Heartbeat>,
    /// New models from the updater, swapped in between two frames.
    pub updates: std::sync::mpsc::Receiver<Classifier>,
    pub active: ActiveModel,
    pub events: EventSink,
}

impl InferenceWorker {
    /// Runs until the queue is closed and drained, or the publisher is gone.
    pub fn run(mut self) -> Result<(), String> {
        let span = tracing::info_span!("inference", model = %self.classifier.identity().name, version = %self.classifier.identity().version);
        let _entered = span.enter();
        let result = self.serve();
        self.heartbeat.finish();
        result
    }

    fn serve(&mut self) -> Result<(), String> {
        let heartbeat = self.heartbeat.clone();
        while let Some(job) = heartbeat.waiting(|| self.queue.pop()) {
            if let Ok(classifier) = self.updates.try_recv() {
                self.swap(classifier);
            }
            let stats = &self.stats[job.camera];
            let started = Instant::now();
            let regions = match self.classifier.classify(&job.frame, &job.regions) {
                Ok(regions) => regions,
                Err(error) => {
                    CameraStats::add(&stats.inference_errors, 1);
                    tracing::warn!(camera = %stats.id, frame = job.frame_index, %error, "frame skipped");
                    continue;
                }
            };
            let inference_ms = started.elapsed().as_secs_f32() * 1000.0;
            self.queue.give_back(job.frame);
            stats.record_latency(inference_ms);
            let camera = &stats.id;
            let message = PredictionMessage {
                device: &self.device_id,
                camera,
                frame_index: job.frame_index,
                captured_at: rfc3339(job.captured_at),
                model: self.classifier.identity(),
                inference_ms,
                regions: &regions,
            };
            let payload = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
            let outgoing = Outgoing::stored(self.topics.predictions(camera), payload);
            if heartbeat.waiting(|| self.sink.blocking_send(outgoing)).is_err() {
                return Err(format!("publisher stopped; the prediction for frame {} of {camera} was not sent", job.frame_index));
            }
            CameraStats::add(&stats.frames_processed, 1);
        }
        Ok(())
    }

    /// Every prediction before this names the old model, every one after the new.
    fn swap(&mut self, classifier: Classifier) {
        let old = std::mem::replace(&mut self.classifier, classifier);
        let new = self.classifier.identity().clone();
        tracing::info!(name = %new.name, version = %new.version, previous = %old.identity().version, "model swapped");
        if let Ok(mut active) = self.active.write() {
            *active = new.clone();
        }
        self.events.send_blocking(Event::ModelActivated {
            name: new.name.clone(),
            version: new.version.clone(),
            sha256: new.sha256.clone(),
            previous_version: old.identity().version.clone(),
        });
        let payload = crate::publish::messages::model_state_payload(&self.device_id, &new);
        let _ = self.sink.blocking_send(Outgoing { topic: self.topics.model(), payload, kind: crate::publish::mqtt::Kind::Retained });
    }
}
