//! The inference thread: the only owner of the ONNX Runtime session. It takes
//! frames from the [`FrameQueue`], classifies their regions, and hands the
//! serialised prediction to the publisher (which numbers and stores it),
//! waiting if the publisher is behind (predictions are never dropped here).

use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

use crate::infer::{ActiveModel, Classifier, RegionPrediction};
use crate::models::probation::{ConfidenceWindow, ModelUpdate, Probation, Verdict};
use crate::models::store::ModelStore;
use crate::publish::sink::EventSink;
use crate::wire::events::Event;
use crate::pipeline::frame_queue::FrameQueue;
use crate::util::health::Heartbeat;
use crate::wire::messages::PredictionMessage;
use crate::wire::rfc3339;
use crate::publish::Outgoing;
use crate::wire::Topics;
use crate::monitor::samples::SampleTap;
use crate::monitor::PredictionDigest;
use crate::pipeline::stats::CameraStats;

pub struct InferenceWorker {
    pub device_id: String,
    pub classifier: Classifier,
    pub queue: Arc<FrameQueue>,
    pub stats: Vec<Arc<CameraStats>>,
    pub topics: Topics,
    pub sink: mpsc::Sender<Outgoing>,
    pub heartbeat: Arc<Heartbeat>,
    /// New models from the updater and operators, swapped in between two frames.
    pub updates: std::sync::mpsc::Receiver<ModelUpdate>,
    pub active: ActiveModel,
    pub events: EventSink,
    pub confidence: ConfidenceWindow,
    pub probation: Option<Probation>,
    /// Attach a digest to each prediction for the monitor.
    pub monitor: bool,
    /// Offers region crops to the sampler (None: samples off).
    pub samples: Option<SampleTap>,
}

/// The mean of the regions' top-1 model scores.
fn top1(regions: &[RegionPrediction]) -> Option<f32> {
    let scores: Vec<f32> = regions.iter().filter_map(|r| r.top_k.first().map(|t| t.score)).collect();
    (!scores.is_empty()).then(|| scores.iter().sum::<f32>() / scores.len() as f32)
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
        // Numbers predictions within this run, so that crops and digests can refer to one.
        let mut prediction_id = 0u64;
        let mut model = Arc::new(self.classifier.identity().clone());
        while let Some(job) = heartbeat.waiting(|| self.queue.pop()) {
            if let Ok(update) = self.updates.try_recv() {
                self.swap(update);
            }
            if *model != *self.classifier.identity() {
                model = Arc::new(self.classifier.identity().clone());
            }
            prediction_id += 1;
            let stats = &self.stats[job.camera];
            let started = Instant::now();
            let regions = match self.classifier.classify(&job.frame, &job.regions) {
                Ok(regions) => regions,
                Err(error) => {
                    CameraStats::add(&stats.inference_errors, 1);
                    tracing::warn!(camera = %stats.id, frame = job.frame_index, %error, "frame skipped");
                    if let Some(Verdict::Failed(reason)) = self.probation.as_mut().map(Probation::record_error) {
                        self.roll_back(reason);
                    }
                    continue;
                }
            };
            let inference_ms = started.elapsed().as_secs_f32() * 1000.0;
            let score = top1(&regions);
            if let Some(score) = score {
                self.confidence.push(score);
            }
            let camera = &stats.id;
            if let Some(samples) = &mut self.samples {
                for (index, region) in regions.iter().enumerate() {
                    samples.offer(&job.frame, prediction_id, camera, job.captured_at, job.frame_index, index, &model, region);
                }
            }
            self.queue.give_back(job.frame);
            stats.record_latency(inference_ms);
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
            let digest = self.monitor.then(|| {
                Box::new(PredictionDigest {
                    prediction_id,
                    camera: camera.clone(),
                    model: model.clone(),
                    reference: self.classifier.spec().reference.clone(),
                    regions: regions.iter().map(|r| (r.class.clone(), r.top_k.first().map_or(0.0, |t| t.score))).collect(),
                })
            });
            let outgoing = Outgoing::prediction(self.topics.predictions(camera), payload, digest);
            if heartbeat.waiting(|| self.sink.blocking_send(outgoing)).is_err() {
                return Err(format!("publisher stopped; the prediction for frame {} of {camera} was not sent", job.frame_index));
            }
            CameraStats::add(&stats.frames_processed, 1);
            match self.probation.as_mut().map(|p| p.record(inference_ms, score)) {
                Some(Verdict::Failed(reason)) => self.roll_back(reason),
                Some(Verdict::Passed(summary)) => {
                    let version = self.classifier.identity().version.clone();
                    tracing::info!(%version, %summary, "new model passed probation");
                    self.events.send_blocking(Event::ModelProbationPassed { version, summary });
                    self.probation = None;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every prediction before this names the old model, every one after the
    /// new. A release on probation keeps the old model loaded until it passes.
    fn swap(&mut self, update: ModelUpdate) {
        let old = std::mem::replace(&mut self.classifier, update.classifier);
        let previous_version = old.identity().version.clone();
        self.probation = update.probation.map(|plan| Probation::new(plan, old, self.confidence.mean()));
        self.confidence.clear();
        let new = self.classifier.identity().clone();
        tracing::info!(name = %new.name, version = %new.version, previous = %previous_version, "model swapped");
        self.events.send_blocking(Event::ModelActivated {
            name: new.name.clone(),
            version: new.version.clone(),
            sha256: new.sha256.clone(),
            previous_version,
        });
        self.publish_active();
    }

    /// The release on probation failed: the previous model serves again, from
    /// the next frame and after restarts, and this version is refused.
    fn roll_back(&mut self, reason: String) {
        let Some(probation) = self.probation.take() else { return };
        let failed = std::mem::replace(&mut self.classifier, probation.previous);
        let version = failed.identity().version.clone();
        let to_version = self.classifier.identity().version.clone();
        tracing::error!(%version, %to_version, %reason, "new model failed probation: rolled back");
        let store = ModelStore::new(&probation.plan.models_dir);
        if let Err(error) = store.refuse(probation.plan.version).and_then(|()| store.set_active(probation.plan.fallback.as_ref())) {
            tracing::error!(%error, "cannot record the rollback on disk; the failed model may serve again after a restart");
        }
        self.confidence.clear();
        self.events.send_blocking(Event::ModelRolledBack { version, to_version, reason });
        self.publish_active();
    }

    /// ActiveModel and the retained `…/model` state.
    fn publish_active(&mut self) {
        let new = self.classifier.identity().clone();
        if let Ok(mut active) = self.active.write() {
            *active = new.clone();
        }
        let payload = crate::wire::messages::model_state_payload(&self.device_id, &new);
        let _ = self.sink.blocking_send(Outgoing::new(self.topics.model(), payload, crate::publish::mqtt::Kind::Retained));
    }
}
