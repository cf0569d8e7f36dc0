//! Monitoring: how well the model does on this road, told by the device.
//!
//! - [`feedback`]: true classes for earlier predictions and vehicles → precision, recall.
//! - [`vehicles`]: recent vehicles of tracked cameras, by track, for that feedback.
//! - [`drift`]: label-free signs per camera: class mix, confidence, input.
//! - [`input_stats`]: brightness, contrast, sharpness of a frame.
//! - [`alerts`]: hysteresis, so each crossing gives one alert and one clear.
//! - [`samples`]: JPEG crops for retraining, on disk and on MQTT.
//!
//! [`MonitorTask`] owns the books and the alerts. It hears of every
//! classified frame from the inference thread (a digest, through a
//! [`taps::DigestTap`]), of every tracked vehicle ([`taps::VehicleDigestTap`]),
//! of the `seq` each prediction got from the publisher's stored-message
//! hook, of feedback through the route it registers, and of input
//! statistics from the cameras ([`taps::InputTap`]).
//! It publishes alerts on `…/events` and retrain requests on
//! `<root>/fleet/retrain/<model>`, both stored and numbered like predictions.

pub mod alerts;
pub mod drift;
pub mod feedback;
pub mod input_stats;
pub mod samples;
pub mod taps;
pub mod vehicles;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

use crate::config::MonitorConfig;
use crate::context::Context;
use crate::publish::{Inbound, Routes};
use crate::infer::spec::Reference;
use crate::infer::{ActiveModel, ModelIdentity};
use crate::wire::events::{event_body, AlertState, Event};
use crate::wire::retrain::{Evidence, Labelled, Mistake, RetrainRequest};
use crate::wire::rfc3339;
use crate::util::fs::file_safe;
use crate::publish::Outgoing;
use crate::wire::Topics;
use crate::util::shutdown::Shutdown;
use alerts::{AlertBook, Rule, Transition};
use drift::{Baseline, BaselineFile, BaselineSource, CameraDrift, DriftFigures, InputStats};
use feedback::{LabelBook, Subject};
use samples::{SampleStats, SamplerInput};

/// Inputs waiting for the monitor; more are dropped (counted in telemetry).
/// Each classified frame brings two (its digest and its stored notice).
pub const QUEUE: usize = 2048;
/// How often alerts are judged and figures refreshed.
const TICK: Duration = Duration::from_secs(1);
/// At most one `feedback_rejected` event per this interval; the rest are counted in it.
const REJECTION_EVENT_INTERVAL: Duration = Duration::from_secs(1);
/// Mistakes listed in a retrain request (the counts cover all of them).
const MISTAKES_IN_REQUEST: usize = 100;

/// What the monitor needs of one stored prediction.
#[derive(Debug)]
pub struct PredictionDigest {
    pub prediction_id: u64,
    pub camera: String,
    pub model: Arc<ModelIdentity>,
    pub reference: Option<Arc<Reference>>,
    /// Per region: road class and top-1 model score.
    pub regions: Vec<(String, f32)>,
    /// A tracked camera's frame: its drift counts, its labels do not (its vehicles' do).
    pub tracked: bool,
}

/// What the monitor needs of a tracked camera's vehicle.
#[derive(Debug)]
pub struct VehicleDigest {
    pub track: String,
    pub camera: String,
    pub model: Arc<ModelIdentity>,
    /// Its consensus class.
    pub class: String,
}

#[derive(Debug)]
pub enum MonitorInput {
    /// A classified frame, before its prediction is stored.
    Digest(Box<PredictionDigest>),
    /// The prediction tagged `tag` (its `prediction_id`) was stored as `seq`.
    Stored { tag: u64, seq: u64 },
    /// A tracked camera's vehicle, once its message was sent to the publisher.
    Vehicle(Box<VehicleDigest>),
    Feedback(Vec<u8>),
    /// Feedback the broker sent because it is retained: it would be counted
    /// again at every connect, so it is refused (and counted as rejected).
    RetainedFeedback,
    Input { camera: String, stats: InputStats },
}

/// Digests waiting for their `seq`; older ones are given up (their notice was dropped).
const PENDING_DIGESTS: usize = 4096;

pub struct MonitorTask {
    device_id: String,
    topics: Topics,
    config: MonitorConfig,
    /// `<state_dir>/monitor`: learned baselines.
    dir: PathBuf,
    active: ActiveModel,
    /// Valid true classes for feedback: the road classes and `none`.
    classes: Vec<String>,
    publisher: mpsc::WeakSender<Outgoing>,
    samples: Option<(std::sync::mpsc::SyncSender<SamplerInput>, Arc<SampleStats>)>,
    figures: Arc<Mutex<MonitorFigures>>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Taken by `run`.
    inputs: Option<mpsc::Receiver<MonitorInput>>,
    shutdown: Shutdown,
    /// `mqtt.max_message_bytes`: retrain requests are trimmed to fit it.
    max_message_bytes: usize,
    /// One log line per interval for rejected labels (a flood sends thousands).
    rejection_log: crate::util::throttle::Throttle,
}

impl MonitorTask {
    /// Registers the route for `…/feedback`; the returned sender feeds the
    /// monitor from the frame path (taps) and the publisher (stored hook).
    /// `samples`: the sampler's input and figures (None: samples off).
    pub fn new(
        context: &Context,
        config: MonitorConfig,
        dir: PathBuf,
        classes: Vec<String>,
        samples: Option<(std::sync::mpsc::SyncSender<SamplerInput>, Arc<SampleStats>)>,
        routes: &mut Routes,
    ) -> (MonitorTask, MonitorSender) {
        let (tx, inputs) = mpsc::channel(QUEUE);
        let sender = MonitorSender { tx, dropped: Default::default() };
        let feedback = sender.clone();
        routes.add("monitor", context.topics.feedback(), move |inbound: Inbound| {
            tracing::debug!(topic = %inbound.topic, bytes = inbound.payload.len(), "feedback");
            feedback.offer(if inbound.retained { MonitorInput::RetainedFeedback } else { MonitorInput::Feedback(inbound.payload) });
        });
        let task = MonitorTask {
            device_id: context.device_id.clone(),
            topics: context.topics.clone(),
            config,
            dir,
            active: context.active_model.clone(),
            classes,
            publisher: context.outgoing.downgrade(),
            samples,
            figures: Default::default(),
            dropped: sender.dropped.clone(),
            inputs: Some(inputs),
            shutdown: context.shutdown.clone(),
            max_message_bytes: crate::config::DEFAULT_MAX_MESSAGE_BYTES,
            rejection_log: crate::util::throttle::Throttle::for_warnings(),
        };
        (task, sender)
    }

    /// `mqtt.max_message_bytes`, as the publisher was given it.
    pub fn with_max_message_bytes(mut self, max: usize) -> MonitorTask {
        self.max_message_bytes = max;
        self
    }

    /// The monitor's part of telemetry, refreshed every second.
    pub fn figures(&self) -> Arc<Mutex<MonitorFigures>> {
        self.figures.clone()
    }
}

pub use crate::wire::telemetry::MonitorFigures;

/// The monitor's working state.
struct Books {
    labels: LabelBook,
    cameras: BTreeMap<String, CameraDrift>,
    alerts: AlertBook,
    rejected: u64,
    rejected_unreported: u64,
    last_rejection_event: Option<Instant>,
    /// One shared copy of each camera id for the remembered predictions.
    camera_ids: BTreeMap<String, Arc<str>>,
    /// When a retrain request last went out, by model sha256 and reason.
    retrain_requested: BTreeMap<(String, String), Instant>,
    /// Digests whose prediction has not been reported stored yet, oldest first.
    pending: VecDeque<Box<PredictionDigest>>,
}

impl MonitorTask {
    pub async fn run(mut self) {
        let mut inputs = self.inputs.take().expect("run once");
        let shutdown = self.shutdown.clone();
        let mut books = Books {
            labels: LabelBook::new(
                self.config.remember_predictions,
                vehicles::REMEMBER_VEHICLES,
                self.config.feedback_window,
                Duration::from_secs(self.config.feedback_window_seconds),
                self.classes.clone(),
            ),
            camera_ids: BTreeMap::new(),
            cameras: BTreeMap::new(),
            alerts: AlertBook::default(),
            rejected: 0,
            rejected_unreported: 0,
            last_rejection_event: None,
            retrain_requested: BTreeMap::new(),
            pending: VecDeque::new(),
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(MonitorInput::Digest(digest)) => {
                        if books.pending.len() == PENDING_DIGESTS {
                            books.pending.pop_front();
                        }
                        books.pending.push_back(digest);
                    }
                    Some(MonitorInput::Stored { tag, seq }) => {
                        // Digests arrive before their notice (the inference thread sends the
                        // digest before the prediction); older unmatched ones lost their notice.
                        while books.pending.front().is_some_and(|d| d.prediction_id < tag) {
                            books.pending.pop_front();
                        }
                        if books.pending.front().is_some_and(|d| d.prediction_id == tag) {
                            let digest = books.pending.pop_front().expect("checked");
                            self.on_prediction(&mut books, seq, *digest).await;
                        }
                    }
                    Some(MonitorInput::Vehicle(vehicle)) => {
                        let camera = Self::camera_id(&mut books, &vehicle.camera);
                        books.labels.remember_vehicle(Arc::from(vehicle.track), camera, vehicle.model, &vehicle.class);
                    }
                    Some(MonitorInput::Feedback(payload)) => {
                        self.on_feedback(&mut books, &payload).await;
                        self.judge_precision(&mut books).await;
                    }
                    Some(MonitorInput::RetainedFeedback) => {
                        let reason = "retained feedback is not counted (it would count again at every connect): publish it without retain, and clear the retained message (an empty retained message on the same topic)".to_string();
                        self.reject(&mut books, None, None, reason).await;
                    }
                    Some(MonitorInput::Input { camera, stats }) => self.camera(&mut books, &camera).record_input(stats),
                    None => return,
                },
                _ = tick.tick() => {
                    books.labels.expire(Instant::now());
                    self.judge_precision(&mut books).await;
                    self.judge_drift(&mut books).await;
                    self.update_figures(&books);
                }
                _ = shutdown.wait() => return,
            }
        }
    }

    fn camera<'a>(&self, books: &'a mut Books, camera: &str) -> &'a mut CameraDrift {
        let drift = &self.config.drift;
        books
            .cameras
            .entry(camera.to_string())
            .or_insert_with(|| CameraDrift::new(drift.class_window, drift.reference_regions, drift.input_window))
    }

    async fn on_prediction(&self, books: &mut Books, seq: u64, digest: PredictionDigest) {
        // The inference thread shares one `Arc` per model across its digests.
        let model = digest.model.clone();
        if self.camera(books, &digest.camera).model_sha256() != model.sha256 {
            let baseline = self.baseline_for(&digest.camera, &model, digest.reference.as_deref()).await;
            self.camera(books, &digest.camera).start_model(&model.sha256, baseline);
        }
        let drift = self.camera(books, &digest.camera);
        let mut learned = None;
        for (class, top1) in &digest.regions {
            if let Some(baseline) = drift.record_region(class, *top1) {
                learned = Some(baseline.clone());
            }
        }
        if let Some(baseline) = learned {
            tracing::info!(camera = %digest.camera, regions = baseline.regions, classes = ?baseline.classes, "learned this camera's class mix baseline");
            let path = self.baseline_path(&digest.camera);
            let file = BaselineFile { camera: digest.camera.clone(), baseline };
            tokio::task::spawn_blocking(move || {
                let json = serde_json::to_vec_pretty(&file).unwrap_or_default();
                let written = crate::util::fs::create_private_dir_all(path.parent().expect("has a folder"))
                    .and_then(|()| crate::util::fs::write_atomically(&path, &json));
                if let Err(error) = written {
                    tracing::warn!(path = %path.display(), %error, "cannot keep the learned baseline (it is learned again after a restart): make state_dir writable");
                }
            });
        }
        let classes: Vec<String> = digest.regions.into_iter().map(|(class, _)| class).collect();
        let camera = Self::camera_id(books, &digest.camera);
        books.labels.remember(seq, digest.prediction_id, camera, model, &classes, digest.tracked);
    }

    /// One shared copy per camera id, for everything the books remember.
    fn camera_id(books: &mut Books, camera: &str) -> Arc<str> {
        books.camera_ids.entry(camera.to_string()).or_insert_with(|| Arc::from(camera)).clone()
    }

    /// Distinct for distinct ids (`file_safe` is injective).
    fn baseline_path(&self, camera: &str) -> PathBuf {
        self.dir.join(format!("baseline-{}.json", file_safe(camera)))
    }

    /// The spec's reference, else a baseline learned earlier for this model on this camera.
    async fn baseline_for(&self, camera: &str, model: &ModelIdentity, reference: Option<&Reference>) -> Option<Baseline> {
        if let Some(reference) = reference {
            return Some(Baseline {
                source: BaselineSource::Spec,
                model_sha256: model.sha256.clone(),
                classes: reference.classes.clone(),
                mean_confidence: reference.mean_confidence,
                regions: 0,
            });
        }
        let path = self.baseline_path(camera);
        let (camera, sha) = (camera.to_string(), model.sha256.clone());
        tokio::task::spawn_blocking(move || load_baseline(&path, &camera, &sha)).await.ok().flatten()
    }

    async fn on_feedback(&self, books: &mut Books, payload: &[u8]) {
        if let Some((_, stats)) = &self.samples {
            stats.feedback_arrived();
        }
        let labels = match feedback::parse(payload) {
            Ok(labels) => labels,
            Err(reason) => return self.reject(books, None, None, reason.to_string()).await,
        };
        for label in labels {
            let (seq, region) = label.seq_and_region();
            match books.labels.add(label) {
                Ok(labelled) => {
                    if !labelled.is_correct() {
                        tracing::debug!(subject = ?labelled.subject, predicted = %labelled.predicted, truth = %labelled.truth, "feedback: prediction was wrong");
                        let truth = labelled.truth.clone();
                        let marked = match &labelled.subject {
                            Subject::Region { seq, region, prediction_id } => SamplerInput::MarkedWrong { prediction_id: *prediction_id, region: *region, seq: *seq, truth },
                            Subject::Vehicle { track } => SamplerInput::VehicleMarkedWrong { track: track.to_string(), truth },
                        };
                        if let Some((samples, _)) = &self.samples {
                            let _ = samples.try_send(marked);
                        }
                    }
                }
                Err(reason) => self.reject(books, seq, region, reason.to_string()).await,
            }
        }
    }

    async fn reject(&self, books: &mut Books, seq: Option<u64>, region: Option<usize>, reason: String) {
        books.rejected += 1;
        books.rejected_unreported += 1;
        if let Some(suppressed) = self.rejection_log.allow() {
            tracing::warn!(?seq, ?region, %reason, suppressed, "feedback ignored");
        }
        if books.last_rejection_event.is_some_and(|at| at.elapsed() < REJECTION_EVENT_INTERVAL) {
            return;
        }
        books.last_rejection_event = Some(Instant::now());
        let also_rejected = books.rejected_unreported - 1;
        books.rejected_unreported = 0;
        self.send(self.topics.events(), event_body(&self.device_id, &Event::FeedbackRejected { prediction_seq: seq, region, reason, also_rejected })).await;
    }

    async fn judge_precision(&self, books: &mut Books) {
        let model = self.active_model();
        let metrics = books.labels.metrics(&model);
        let rule = Rule::below(self.config.precision_alert_below, self.config.precision_clear_at);
        let value = metrics.precision.filter(|_| metrics.labelled >= self.config.min_labelled as u64);
        let Some(transition) = books.alerts.judge("precision", rule, value) else { return };
        let value = value.expect("judged");
        let advice = match transition {
            Transition::Raised => format!(
                "{} of {} labelled regions and vehicles named right; {}",
                metrics.correct,
                metrics.labelled,
                self.retrain_note(books, &model, "precision")
            ),
            Transition::Cleared => format!("{} of {} labelled regions and vehicles named right again", metrics.correct, metrics.labelled),
        };
        self.alert(transition, "precision", None, rule, value, metrics.labelled, metrics.window_seconds, &model, advice).await;
        if transition == Transition::Raised {
            let wrong = books.labels.labels_of(&model).filter(|l| !l.is_correct()).count();
            let mistakes: Vec<Mistake> = books
                .labels
                .labels_of(&model)
                .filter(|l| !l.is_correct())
                .take(MISTAKES_IN_REQUEST)
                .map(|l| Mistake {
                    of: match &l.subject {
                        Subject::Region { seq, region, .. } => Labelled::Region { seq: *seq, region: *region },
                        Subject::Vehicle { track } => Labelled::Vehicle { track },
                    },
                    camera: &l.camera,
                    predicted: &l.predicted,
                    truth: &l.truth,
                    source: l.source.as_deref(),
                })
                .collect();
            let evidence = Evidence::Feedback {
                labelled: metrics.labelled,
                correct: metrics.correct,
                window_seconds: metrics.window_seconds,
                per_class: &metrics.per_class,
                confusion: &metrics.confusion,
                mistakes_left_out: wrong - mistakes.len(),
                mistakes,
            };
            if let Some(body) = self.retrain_body(&model, "precision", value, rule, evidence) {
                self.request_retrain(books, &model, "precision", body).await;
            }
        }
    }

    async fn judge_drift(&self, books: &mut Books) {
        let model = self.active_model();
        let d = &self.config.drift;
        let cameras: Vec<(String, DriftFigures)> = books.cameras.iter().map(|(id, drift)| (id.clone(), drift.figures())).collect();
        for (camera, figures) in cameras {
            let window = figures.window_regions as u64;
            let checks = [
                ("class_mix", Rule::above(d.class_mix_alert_above, d.class_mix_clear_below), figures.class_mix_distance, window),
                ("confidence", Rule::below(d.confidence_alert_below, d.confidence_clear_at), figures.confidence_ratio, window),
                ("brightness", Rule::below(d.brightness_alert_below, d.brightness_clear_at), figures.brightness, d.input_window as u64),
                ("contrast", Rule::below(d.contrast_alert_below, d.contrast_clear_at), figures.contrast, d.input_window as u64),
                ("sharpness", Rule::below(d.sharpness_alert_below, d.sharpness_clear_at), figures.sharpness, d.input_window as u64),
            ];
            for (what, rule, value, evidence) in checks {
                let key = format!("{what}/{camera}");
                let Some(transition) = books.alerts.judge(&key, rule, value) else { continue };
                let value = value.expect("judged");
                let model_related = matches!(what, "class_mix" | "confidence");
                let advice = match (transition, model_related) {
                    (Transition::Raised, true) => format!(
                        "camera {camera}'s {what} differs from its baseline ({}): the road or the camera changed, or the model does not fit it; {}",
                        if figures.baseline == "spec" { "the model's spec" } else { "learned on this camera" },
                        self.retrain_note(books, &model, what)
                    ),
                    (Transition::Raised, false) => {
                        format!("check camera {camera}: lens, focus, lighting, position ({what} {value:.1})")
                    }
                    (Transition::Cleared, _) => format!("{what} on camera {camera} is back within bounds"),
                };
                self.alert(transition, what, Some(&camera), rule, value, evidence, 0.0, &model, advice).await;
                if transition == Transition::Raised && model_related {
                    if let Some(body) = self.retrain_body(&model, what, value, rule, Evidence::Drift { camera: &camera, figures: &figures }) {
                        self.request_retrain(books, &model, what, body).await;
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn alert(
        &self,
        transition: Transition,
        alert: &str,
        camera: Option<&str>,
        rule: Rule,
        value: f64,
        evidence: u64,
        window_seconds: f64,
        model: &ModelIdentity,
        advice: String,
    ) {
        let state = match transition {
            Transition::Raised => AlertState::Raised,
            Transition::Cleared => AlertState::Cleared,
        };
        match transition {
            Transition::Raised => tracing::warn!(alert, ?camera, value, threshold = rule.alert_at, %advice, "alert raised"),
            Transition::Cleared => tracing::info!(alert, ?camera, value, clear_at = rule.clear_at, "alert cleared"),
        }
        let event = Event::Alert {
            alert: alert.to_string(),
            state,
            camera: camera.map(str::to_string),
            value,
            bad: rule.bad,
            threshold: rule.alert_at,
            clear_at: rule.clear_at,
            evidence,
            window_seconds,
            model: model.clone(),
            advice,
        };
        self.send(self.topics.events(), event_body(&self.device_id, &event)).await;
    }

    /// False while a request for this model and reason is younger than `retrain_interval_seconds`.
    fn retrain_due(&self, books: &Books, model: &ModelIdentity, reason: &str) -> bool {
        let interval = Duration::from_secs(self.config.retrain_interval_seconds);
        !books.retrain_requested.get(&(model.sha256.clone(), reason.to_string())).is_some_and(|at| at.elapsed() < interval)
    }

    /// The alert's word on retraining, true to whether a request goes out.
    fn retrain_note(&self, books: &Books, model: &ModelIdentity, reason: &str) -> String {
        let topic = self.topics.retrain(&model.name);
        if self.retrain_due(books, model, reason) {
            format!("a retrain request with the evidence went to {topic}")
        } else {
            format!("retraining was already requested on {topic} within monitor.retrain_interval_seconds")
        }
    }

    /// The serialised retrain request (made while the books are borrowed for
    /// the evidence), trimmed to fit the message size cap.
    fn retrain_body(&self, model: &ModelIdentity, reason: &str, value: f64, rule: Rule, evidence: Evidence<'_>) -> Option<Vec<u8>> {
        let request = RetrainRequest {
            device: &self.device_id,
            at: rfc3339(SystemTime::now()),
            model,
            reason,
            value,
            threshold: rule.alert_at,
            evidence,
            samples: format!("{}+", self.topics.samples_prefix()),
        };
        let budget = crate::publish::mqtt::stored_body_budget(self.max_message_bytes, &self.topics.retrain(&model.name));
        request
            .to_json_within(budget)
            .inspect_err(|error| tracing::error!(%error, reason, "retrain request not sent"))
            .ok()
    }

    async fn request_retrain(&self, books: &mut Books, model: &ModelIdentity, reason: &str, body: Vec<u8>) {
        if !self.retrain_due(books, model, reason) {
            tracing::info!(reason, "retrain already requested for this model within monitor.retrain_interval_seconds; not asking again");
            return;
        }
        books.retrain_requested.insert((model.sha256.clone(), reason.to_string()), Instant::now());
        tracing::warn!(topic = %self.topics.retrain(&model.name), reason, "retrain requested");
        self.send(self.topics.retrain(&model.name), body).await;
    }

    /// Stored and numbered, like predictions.
    async fn send(&self, topic: String, body: Vec<u8>) {
        let Some(publisher) = self.publisher.upgrade() else { return };
        if publisher.send(Outgoing::stored(topic, body)).await.is_err() {
            tracing::debug!("publisher gone; monitor message not sent");
        }
    }

    fn active_model(&self) -> ModelIdentity {
        self.active.read().map(|m| m.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    fn update_figures(&self, books: &Books) {
        let figures = MonitorFigures {
            feedback: books.labels.metrics(&self.active_model()),
            feedback_rejected: books.rejected,
            cameras: books.cameras.iter().map(|(id, drift)| (id.clone(), drift.figures())).collect(),
            alerts: books.alerts.raised().clone(),
            samples: self.samples.as_ref().map(|(_, stats)| stats.figures()),
            dropped: self.dropped.load(std::sync::atomic::Ordering::Relaxed),
        };
        if let Ok(mut slot) = self.figures.lock() {
            *slot = figures;
        }
    }
}

/// The classes feedback may name: the model's road classes and `none`.
pub fn feedback_classes(taxonomy: &crate::infer::taxonomy::RoadTaxonomy) -> Vec<String> {
    taxonomy.class_names().map(str::to_string).chain([crate::infer::taxonomy::NO_VEHICLE.to_string()]).collect()
}

/// The producers' side: never waits; a full queue drops the input, counted.
#[derive(Clone)]
pub struct MonitorSender {
    tx: mpsc::Sender<MonitorInput>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl MonitorSender {
    pub fn offer(&self, input: MonitorInput) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(input) {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// For the publisher: each stored prediction's `seq`, by its tag.
    pub fn stored_hook(&self) -> crate::publish::mqtt::StoredHook {
        let sender = self.clone();
        Box::new(move |tag, seq| sender.offer(MonitorInput::Stored { tag, seq }))
    }

    /// For the inference thread: a digest of every classified frame.
    pub fn digest_tap(&self) -> taps::DigestTap {
        taps::DigestTap { sender: self.clone() }
    }

    /// For the inference thread's vehicle stage: every tracked vehicle, by its track.
    pub fn vehicle_tap(&self) -> taps::VehicleDigestTap {
        taps::VehicleDigestTap { sender: self.clone(), model: None }
    }

    /// For a camera thread: brightness, contrast and sharpness every `every` frames.
    pub fn input_tap(&self, every: u64) -> taps::InputTap {
        taps::InputTap { sender: self.clone(), every: every.max(1) }
    }
}
/// The baseline learned for `model_sha256` on `camera`, if `path` holds
/// one. A file that names another camera (a copy, an older agent's naming
/// that gave two ids one file) or cannot be read is ignored: the baseline
/// is learned again rather than judged against the wrong one.
fn load_baseline(path: &std::path::Path, camera: &str, model_sha256: &str) -> Option<Baseline> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, camera, "cannot read the learned baseline; learning it again");
            return None;
        }
    };
    let file: BaselineFile = match serde_json::from_slice(&bytes) {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, camera, "ignoring a learned baseline that is not this agent's format (it names no camera); learning it again");
            return None;
        }
    };
    if file.camera != camera {
        tracing::warn!(path = %path.display(), camera, owner = %file.camera, "ignoring a learned baseline that belongs to another camera; learning this camera's again");
        return None;
    }
    (file.baseline.model_sha256 == model_sha256).then_some(file.baseline)
}


#[cfg(test)]
mod tests {
    use super::*;

    fn file(camera: &str, sha: &str) -> Vec<u8> {
        let baseline = Baseline { source: BaselineSource::Learned, model_sha256: sha.into(), classes: [("car".to_string(), 1.0)].into(), mean_confidence: Some(0.9), regions: 10 };
        serde_json::to_vec(&BaselineFile { camera: camera.into(), baseline }).unwrap()
    }

    #[test]
    fn a_baseline_file_is_taken_only_by_the_camera_and_model_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.json");
        std::fs::write(&path, file("cam_1", "a")).unwrap();
        assert!(load_baseline(&path, "cam_1", "a").is_some());
        assert!(load_baseline(&path, "cam.1", "a").is_none(), "another camera's baseline was taken");
        assert!(load_baseline(&path, "cam_1", "b").is_none(), "another model's baseline was taken");
        // An older agent's file names no camera: not trusted.
        let legacy = serde_json::json!({"source": "learned", "model_sha256": "a", "classes": {"car": 1.0}, "mean_confidence": 0.9, "regions": 10});
        std::fs::write(&path, legacy.to_string()).unwrap();
        assert!(load_baseline(&path, "cam_1", "a").is_none());
        assert!(load_baseline(&dir.path().join("missing.json"), "cam_1", "a").is_none());
    }
}
