//! The inference thread: the only owner of the ONNX Runtime session. It takes
//! frames from the [`FrameQueue`], classifies their regions, shows each
//! classified frame to the taps (monitoring, samples) and hands the
//! prediction to the publisher (which numbers and stores it), waiting if the
//! publisher is behind: predictions are never dropped here. It touches no
//! file: a rollback is recorded on the model store's own thread.

use opencv::core::Mat;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::mpsc;

use super::detection::{refine, Decision, DetectionStage};
use super::frame_queue::FrameQueue;
use super::stats::CameraStats;
use super::vehicles::{Detections, VehicleError, VehicleStage};
use super::view::{FrameView, ViewTap};
use super::frame_queue::FrameJob;
use opencv::core::Rect;
use crate::context::Context;
use crate::infer::spec::Reference;
use crate::infer::{Classifier, ModelIdentity, RegionPrediction};
use crate::models::probation::{ConfidenceWindow, ModelUpdate, Probation, Verdict};
use crate::models::recorder::Rollback;
use crate::models::target::DetectorUpdate;
use crate::publish::sink::EventSink;
use crate::publish::{Kind, Outgoing};
use crate::util::health::Heartbeat;
use crate::wire::events::Event;
use crate::wire::messages::{model_state_payload, PredictionMessage};
use crate::wire::{rfc3339, ActiveModel, Topics};

/// A classified frame, as the stages after classification see it.
pub struct Classified<'a> {
    /// Numbers predictions within this run; the tag its stored message carries.
    pub prediction_id: u64,
    pub camera: &'a str,
    pub frame: &'a Mat,
    pub frame_index: u64,
    pub captured_at: SystemTime,
    /// One shared `Arc` per model, so taps can keep it cheaply.
    pub model: &'a Arc<ModelIdentity>,
    /// The model spec's reference figures for drift, if it has them.
    pub reference: Option<&'a Arc<Reference>>,
    pub regions: &'a [RegionPrediction],
    pub inference_ms: f32,
    /// A tracked camera's frame: its regions are vehicles the vehicle taps
    /// hear of once each, so per-frame samples and precision skip it.
    pub tracked: bool,
}

/// A stage the inference thread shows every classified frame to, before the
/// frame is recycled and before the prediction goes to the publisher. It
/// runs on the frame path, so it must never wait: take what it needs (a
/// crop, a digest) and queue it with `try_send`, counting what does not fit.
pub trait FrameTap: Send {
    fn classified(&mut self, frame: &Classified<'_>);
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("publisher stopped; the prediction for frame {frame_index} of {camera} was not sent")]
    PublisherGone { camera: String, frame_index: u64 },
    #[error("cannot serialise a prediction: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error(transparent)]
    Vehicles(#[from] VehicleError),
}

/// Turns a classified frame into its `…/predictions/<camera>` message and
/// hands it to the publisher.
struct PredictionSink {
    device_id: String,
    topics: Topics,
    outgoing: mpsc::Sender<Outgoing>,
}

impl PredictionSink {
    fn message(&self, frame: &Classified<'_>) -> Result<Outgoing, PipelineError> {
        let message = PredictionMessage {
            device: &self.device_id,
            camera: frame.camera,
            frame_index: frame.frame_index,
            captured_at: rfc3339(frame.captured_at),
            model: frame.model,
            inference_ms: frame.inference_ms,
            regions: frame.regions,
        };
        let body = serde_json::to_vec(&message)?;
        Ok(Outgoing::stored_tagged(self.topics.predictions(frame.camera), body, frame.prediction_id))
    }

    /// The retained `…/model` state.
    fn model_state(&self, model: &ModelIdentity) {
        let payload = model_state_payload(&self.device_id, model);
        let _ = self.outgoing.blocking_send(Outgoing::new(self.topics.model(), payload, Kind::Retained));
    }
}

pub struct InferenceWorker {
    classifier: Classifier,
    queue: Arc<FrameQueue>,
    /// Indexed by `FrameJob::camera`.
    stats: Vec<Arc<CameraStats>>,
    predictions: PredictionSink,
    heartbeat: Arc<Heartbeat>,
    /// New models from the updater and operators, swapped in between two frames.
    updates: std::sync::mpsc::Receiver<ModelUpdate>,
    active: ActiveModel,
    events: EventSink,
    taps: Vec<Box<dyn FrameTap>>,
    /// The installer's views: shown the frames they ask for, classified or not.
    view_taps: Vec<Box<dyn ViewTap>>,
    /// Tracked cameras' vehicles and counts.
    vehicles: Option<VehicleStage>,
    /// Detector cameras' detector.
    detection: Option<DetectionStage>,
    /// New detectors from the detector's updater, swapped in between two frames.
    detector_updates: Option<std::sync::mpsc::Receiver<DetectorUpdate>>,
    // State below is only used by the thread in `run`.
    confidence: ConfidenceWindow,
    probation: Option<Probation>,
}

/// The mean of the regions' top-1 model scores.
fn top1(regions: &[RegionPrediction]) -> Option<f32> {
    let scores: Vec<f32> = regions.iter().filter_map(|r| r.top_k.first().map(|t| t.score)).collect();
    (!scores.is_empty()).then(|| scores.iter().sum::<f32>() / scores.len() as f32)
}

impl InferenceWorker {
    pub fn new(
        context: &Context,
        classifier: Classifier,
        queue: Arc<FrameQueue>,
        stats: Vec<Arc<CameraStats>>,
        heartbeat: Arc<Heartbeat>,
        updates: std::sync::mpsc::Receiver<ModelUpdate>,
    ) -> InferenceWorker {
        InferenceWorker {
            classifier,
            queue,
            stats,
            predictions: PredictionSink {
                device_id: context.device_id.clone(),
                topics: context.topics.clone(),
                outgoing: context.outgoing.clone(),
            },
            heartbeat,
            updates,
            active: context.active_model.clone(),
            events: context.events(),
            taps: Vec::new(),
            vehicles: None,
            view_taps: Vec::new(),
            detection: None,
            detector_updates: None,
            confidence: ConfidenceWindow::default(),
            probation: None,
        }
    }

    /// Shows every classified frame to `tap` too (in the order taps are added).
    pub fn with_tap(mut self, tap: Box<dyn FrameTap>) -> InferenceWorker {
        self.taps.push(tap);
        self
    }

    /// Shows `tap` the frames it asks for (any processed frame, classified or not).
    pub fn with_view_tap(mut self, tap: Box<dyn ViewTap>) -> InferenceWorker {
        self.view_taps.push(tap);
        self
    }

    /// Tracks the vehicles of the cameras that have tracking on.
    pub fn with_vehicles(mut self, stage: VehicleStage) -> InferenceWorker {
        self.vehicles = Some(stage);
        self
    }

    /// Finds the regions of detector cameras with the detector.
    pub fn with_detection(mut self, stage: DetectionStage) -> InferenceWorker {
        self.detection = Some(stage);
        self
    }

    /// Swaps in the detectors `updates` brings (`with_detection` gives the first).
    pub fn with_detector_updates(mut self, updates: std::sync::mpsc::Receiver<DetectorUpdate>) -> InferenceWorker {
        self.detector_updates = Some(updates);
        self
    }

    /// Runs until the queue is closed and drained, or the publisher is gone.
    pub fn run(mut self) -> Result<(), PipelineError> {
        let span = tracing::info_span!("inference", model = %self.classifier.identity().name, version = %self.classifier.identity().version);
        let _entered = span.enter();
        let result = self.serve();
        self.heartbeat.finish();
        result
    }

    fn serve(&mut self) -> Result<(), PipelineError> {
        let heartbeat = self.heartbeat.clone();
        let outgoing = self.predictions.outgoing.clone();
        let send = |message: Outgoing| heartbeat.waiting(|| outgoing.blocking_send(message)).is_ok();
        let mut prediction_id = 0u64;
        let mut model = Arc::new(self.classifier.identity().clone());
        loop {
            // With tracked cameras, wake at each counts interval's end even without frames.
            let next = match self.vehicles.as_ref().and_then(VehicleStage::next_due) {
                Some(due) => heartbeat.waiting(|| self.queue.pop_until(due)),
                None => heartbeat.waiting(|| self.queue.pop()).ok_or(true),
            };
            let job = match next {
                Ok(job) => job,
                Err(closed) => {
                    if let Some(vehicles) = self.vehicles.as_mut() {
                        vehicles.tick(self.classifier.spec().taxonomy.min_vehicle_score(), &send)?;
                    }
                    if closed {
                        break;
                    }
                    continue;
                }
            };
            if let Some(vehicles) = self.vehicles.as_mut() {
                vehicles.tick(self.classifier.spec().taxonomy.min_vehicle_score(), &send)?;
            }
            if let Ok(update) = self.updates.try_recv() {
                self.swap(update);
            }
            if let Some(update) = self.detector_updates.as_ref().and_then(|u| u.try_recv().ok()) {
                self.swap_detector(update);
            }
            if *model != *self.classifier.identity() {
                model = Arc::new(self.classifier.identity().clone());
            }
            prediction_id += 1;
            let mut job = job;
            let stats = self.stats[job.camera].clone();
            // A detector camera's regions: the detector's, when it is due.
            let mut detected = Vec::new();
            if let Some(detection) = self.detection.as_mut().filter(|d| d.detects(job.camera)) {
                let tracking = self.vehicles.as_ref().is_some_and(|v| v.has_tracks(job.camera));
                let counters = stats.detector.as_ref();
                match detection.decide(job.camera, job.clock_s, !job.regions.is_empty(), tracking) {
                    Decision::Detect => {
                        let started = Instant::now();
                        match detection.detect(job.camera, &job.frame) {
                            Ok(found) => {
                                if let Some(c) = counters {
                                    CameraStats::add(&c.frames_detected, 1);
                                    c.record_latency(started.elapsed().as_secs_f32() * 1000.0);
                                }
                                (job.regions, detected) = found.into_iter().map(|f| (f.rect, f.detected)).unzip();
                            }
                            Err(error) => {
                                if let Some(c) = counters {
                                    CameraStats::add(&c.errors, 1);
                                }
                                tracing::warn!(camera = %stats.id, frame = job.frame_index, %error, "frame skipped: the detector failed on it");
                                self.queue.give_back(job.frame);
                                continue;
                            }
                        }
                    }
                    skipped => {
                        if let Some(c) = counters {
                            CameraStats::add(if skipped == Decision::Gated { &c.frames_gated } else { &c.frames_tracked_only }, 1);
                        }
                        if let Some(vehicles) = self.vehicles.as_mut() {
                            vehicles.heard_from(job.camera);
                        }
                        self.show_view(&job, &[], &[]);
                        self.queue.give_back(job.frame);
                        CameraStats::add(&stats.frames_processed, 1);
                        continue;
                    }
                }
            }
            let tracked = self.vehicles.as_ref().is_some_and(|v| v.tracks(job.camera));
            let min_vehicle_score = self.classifier.spec().taxonomy.min_vehicle_score();
            let detections = self.detection.as_ref().filter(|_| !detected.is_empty()).map(|d| Detections { detected: &detected, model: d.identity() });
            let plan = match self.vehicles.as_mut().filter(|_| tracked) {
                Some(vehicles) => Some(vehicles.observe(&job, detections, min_vehicle_score, &send)?),
                None => None,
            };
            let rects = plan.as_ref().map_or(&job.regions, |p| &p.to_classify);
            if rects.is_empty() {
                // A tracked camera's frame with nothing to classify this time.
                self.show_view(&job, &job.regions, &[]);
                self.queue.give_back(job.frame);
                CameraStats::add(&stats.frames_processed, 1);
                continue;
            }
            let started = Instant::now();
            let mut regions = match self.classifier.classify(&job.frame, rects) {
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
            stats.record_latency(inference_ms);
            if let Some(detection) = self.detection.as_ref().filter(|_| !detected.is_empty()) {
                // Each classified region's detection: the index into the job's regions.
                let indices: Vec<usize> = plan.as_ref().map_or_else(|| (0..regions.len()).collect(), |p| p.classify_index.clone());
                for (region, index) in regions.iter_mut().zip(indices) {
                    if let Some(d) = detected.get(index) {
                        refine(region, d, min_vehicle_score);
                        region.detector = Some(detection.says(d));
                    }
                }
            }
            if let (Some(vehicles), Some(plan)) = (self.vehicles.as_mut(), plan.as_ref()) {
                vehicles.classified(job.camera, plan, &mut regions, &model);
            }
            let score = top1(&regions);
            if let Some(score) = score {
                self.confidence.push(score);
            }
            self.show_view(&job, &job.regions, &regions);
            let publish_frame = self.vehicles.as_ref().is_none_or(|v| v.publishes_frames(job.camera));
            if publish_frame {
                let classified = Classified {
                    prediction_id,
                    camera: &stats.id,
                    frame: &job.frame,
                    frame_index: job.frame_index,
                    captured_at: job.captured_at,
                    model: &model,
                    reference: self.classifier.spec().reference.as_ref(),
                    regions: &regions,
                    inference_ms,
                    tracked,
                };
                for tap in &mut self.taps {
                    tap.classified(&classified);
                }
                let outgoing = self.predictions.message(&classified)?;
                self.queue.give_back(job.frame);
                if !send(outgoing) {
                    return Err(PipelineError::PublisherGone { camera: stats.id.clone(), frame_index: job.frame_index });
                }
            } else {
                self.queue.give_back(job.frame);
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
        // Shutdown: the vehicles still in view, then the last counts.
        if let Some(vehicles) = self.vehicles.as_mut() {
            let min_vehicle_score = self.classifier.spec().taxonomy.min_vehicle_score();
            vehicles.finish(min_vehicle_score, &send)?;
        }
        Ok(())
    }

    /// Shows the frame to the view taps that want it; the tracks' view is
    /// built only when one does.
    fn show_view(&mut self, job: &FrameJob, regions: &[Rect], classified: &[RegionPrediction]) {
        // Built for the first tap that wants this frame, shared with the rest.
        let mut tracks: Option<Vec<_>> = None;
        for tap in &mut self.view_taps {
            if !tap.wants(job.camera, job.frame_index, job.clock_s) {
                continue;
            }
            let tracks = tracks.get_or_insert_with(|| {
                let min_vehicle_score = self.classifier.spec().taxonomy.min_vehicle_score();
                self.vehicles.as_ref().map(|v| v.shown_tracks(job.camera, min_vehicle_score)).unwrap_or_default()
            });
            tap.show(&FrameView {
                camera: job.camera,
                camera_id: &self.stats[job.camera].id,
                frame: &job.frame,
                frame_index: job.frame_index,
                clock_s: job.clock_s,
                regions,
                classified,
                tracks,
            });
        }
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
            model_kind: crate::wire::ModelKind::Classifier,
            name: new.name.clone(),
            version: new.version.clone(),
            sha256: new.sha256.clone(),
            previous_version,
        });
        self.publish_active();
    }

    /// Every region before this names the old detector, every one after the new.
    fn swap_detector(&mut self, update: DetectorUpdate) {
        let Some(detection) = self.detection.as_mut() else {
            return tracing::warn!("a new detector, but no camera uses one: not swapped");
        };
        let old = detection.swap(update.detector);
        let (new, previous_version) = (detection.identity().as_ref().clone(), old.identity().version.clone());
        tracing::info!(name = %new.name, version = %new.version, previous = %previous_version, "detector swapped");
        self.events.send_blocking(Event::ModelActivated {
            model_kind: crate::wire::ModelKind::Detector,
            name: new.name,
            version: new.version,
            sha256: new.sha256,
            previous_version,
        });
    }

    /// The release on probation failed: the previous model serves again from
    /// the next frame, and the model store's thread records that this version
    /// is refused and what serves after a restart.
    fn roll_back(&mut self, reason: String) {
        let Some(probation) = self.probation.take() else { return };
        let failed = std::mem::replace(&mut self.classifier, probation.previous);
        let version = failed.identity().version.clone();
        let to_version = self.classifier.identity().version.clone();
        tracing::error!(%version, %to_version, %reason, "new model failed probation: rolled back");
        let plan = probation.plan;
        plan.recorder.record(Rollback { version: plan.version, fallback: plan.fallback });
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
        self.predictions.model_state(&new);
    }
}
