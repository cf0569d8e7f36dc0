//! The model updater: a thread that watches the registry tag, and for each
//! new release downloads, verifies, validates and installs it away from the
//! frame path, then hands the loaded model to the inference thread, which
//! swaps it in between two frames.
//!
//! A release is refused — with a `model_rejected` event, the old model
//! serving on — if a file does not match its digest, the record is not
//! signed by a pinned key, has expired, is not newer than the active
//! version, needs a newer agent, does not load, does not match its record's
//! shapes, or is too slow on this device.

use opencv::core::{Mat, Rect, Scalar, CV_8UC3};
use opencv::prelude::*;
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use super::recorder::RollbackRecorder;
use crate::config::RegistryConfig;
use crate::context::Context;
use crate::publish::{Inbound, Routes};
use crate::infer::spec::Layout;
use crate::models::probation::{ModelUpdate, ProbationPlan};
use crate::infer::{ActiveModel, Classifier};
use crate::models::store::ModelStore;
use crate::publish::sink::EventSink;
use crate::wire::events::Event;
use crate::models::registry::{Registry, RECORD_TYPE, SIGNATURE_TYPE};
use crate::models::release::{self, GoldenSet, PublicKey, ReleaseRecord};
use crate::util::shutdown::Shutdown;

/// Classifies every golden image (whole image) and counts the right road classes.
fn golden_accuracy(classifier: &mut Classifier, staging: &Path, golden: &str) -> Result<(usize, usize, f32), String> {
    let text = std::fs::read(staging.join(golden)).map_err(|e| format!("cannot read the golden set: {e}"))?;
    let set: GoldenSet = serde_json::from_slice(&text).map_err(|e| format!("the golden set is not valid: {e}"))?;
    let mut correct = 0;
    for sample in &set.samples {
        let path = staging.join(&sample.image);
        let image = opencv::imgcodecs::imread(&path, opencv::imgcodecs::IMREAD_COLOR).map_err(|e| e.to_string())?;
        if image.empty() {
            return Err(format!("golden image {} cannot be decoded", sample.image));
        }
        let rect = [Rect::new(0, 0, image.cols(), image.rows())];
        let regions = classifier.classify(&image, &rect).map_err(|e| format!("the model fails on golden image {}: {e}", sample.image))?;
        if regions.first().is_some_and(|r| r.class == sample.class) {
            correct += 1;
        }
    }
    Ok((correct, set.samples.len(), set.min_accuracy))
}

/// Largest release record or signature accepted.
const MAX_SMALL_BLOB: u64 = 1 << 20;
/// Free space to leave on the models' file system after a download.
const MIN_FREE_AFTER: u64 = 64 << 20;

pub struct Updater {
    config: RegistryConfig,
    keys: Vec<PublicKey>,
    store: ModelStore,
    active: ActiveModel,
    intra_threads: usize,
    events: EventSink,
    swap: SyncSender<ModelUpdate>,
    recorder: RollbackRecorder,
    /// An announcement arrived: check now rather than at the next poll.
    wake: std::sync::mpsc::Receiver<()>,
    shutdown: Shutdown,
}

impl Updater {
    /// Registers the route for release announcements (`<root>/fleet/models/+`),
    /// each of which wakes the updater for a check.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        context: &Context,
        config: RegistryConfig,
        keys: Vec<PublicKey>,
        intra_threads: usize,
        swap: SyncSender<ModelUpdate>,
        recorder: RollbackRecorder,
        routes: &mut Routes,
    ) -> Updater {
        let (wake_tx, wake) = std::sync::mpsc::sync_channel(1);
        routes.add("model updater", format!("{}+", context.topics.fleet_models_prefix()), move |inbound: Inbound| {
            tracing::info!(topic = %inbound.topic, "model release announced");
            let _ = wake_tx.try_send(());
        });
        Updater {
            store: ModelStore::new(&config.models_dir),
            config,
            keys,
            active: context.active_model.clone(),
            intra_threads,
            events: context.events(),
            swap,
            recorder,
            wake,
            shutdown: context.shutdown.clone(),
        }
    }
}

/// Why an attempt ended without a new model.
enum Outcome {
    /// Nothing new at the tag.
    Unchanged,
    /// The registry could not be reached or answered oddly: try again next poll.
    Retry(String),
    /// An operator pinned a version: look again after `unpin`.
    Paused,
    /// This release will never do: remember its digest and wait for another.
    Rejected { version: Option<u64>, reason: String },
    Activated,
}

impl Updater {
    pub fn run(self) {
        let registry = match Registry::new(&self.config.url) {
            Ok(registry) => registry,
            Err(error) => return tracing::error!(%error, "model updates are off: fix registry.url"),
        };
        let mut seen: Option<String> = None;
        let poll = Duration::from_secs(self.config.poll_seconds);
        loop {
            match self.check(&registry, &mut seen) {
                Outcome::Unchanged | Outcome::Activated | Outcome::Paused => {}
                Outcome::Retry(error) => tracing::warn!(%error, url = %self.config.url, "cannot check the model registry; will retry"),
                Outcome::Rejected { version, reason } => {
                    tracing::warn!(version, %reason, "model release rejected; the current model keeps serving");
                    self.events.send_blocking(Event::ModelRejected { version, reason });
                }
            }
            // Until the next poll, an announcement, or shutdown (checked twice a second).
            let next_poll = Instant::now() + poll;
            loop {
                if self.shutdown.is_triggered() {
                    return;
                }
                let left = next_poll.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match self.wake.recv_timeout(left.min(Duration::from_millis(500))) {
                    Ok(()) => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        if self.shutdown.sleep(left.min(Duration::from_millis(500))) {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn active_version(&self) -> u64 {
        self.active.read().map(|m| release::numeric_version(&m.version)).unwrap_or(0)
    }

    fn check(&self, registry: &Registry, seen: &mut Option<String>) -> Outcome {
        let digest = match registry.tag_digest(&self.config.tag) {
            Ok(Some(digest)) => digest,
            Ok(None) => return Outcome::Unchanged,
            Err(error) => return Outcome::Retry(error),
        };
        if seen.as_deref() == Some(digest.as_str()) {
            return Outcome::Unchanged;
        }
        let outcome = self.try_release(registry, &digest);
        if let Outcome::Rejected { .. } = outcome {
            let _ = std::fs::remove_dir_all(self.store.staging(&digest));
        }
        if !matches!(outcome, Outcome::Retry(_) | Outcome::Paused) {
            *seen = Some(digest);
        }
        outcome
    }

    fn try_release(&self, registry: &Registry, digest: &str) -> Outcome {
        let rejected = |version: Option<u64>, reason: String| Outcome::Rejected { version, reason };
        let (manifest, _) = match registry.manifest(digest) {
            Ok(m) => m,
            Err(error) => return Outcome::Retry(error),
        };
        if manifest.config.media_type != RECORD_TYPE {
            return rejected(None, format!("the manifest's config is {}, not a release record", manifest.config.media_type));
        }
        let record_bytes = match registry.blob(&manifest.config, MAX_SMALL_BLOB) {
            Ok(bytes) => bytes,
            Err(error) => return rejected(None, error),
        };
        let Some(signature_layer) = manifest.layers.iter().find(|l| l.media_type == SIGNATURE_TYPE) else {
            return rejected(None, "the release has no signature layer".into());
        };
        let signature = match registry.blob(signature_layer, MAX_SMALL_BLOB) {
            Ok(bytes) => bytes,
            Err(error) => return rejected(None, error),
        };
        let record = match release::verify(&record_bytes, &signature, &self.keys, self.active_version()) {
            Ok(record) => record,
            Err(reason) => {
                let version = serde_json::from_slice::<ReleaseRecord>(&record_bytes).ok().map(|r| r.version);
                return rejected(version, reason);
            }
        };
        let version = Some(record.version);
        if self.store.refused().contains(&record.version) {
            return rejected(version, format!("version {} was rolled back by an operator; publish a newer version", record.version));
        }
        if let Some(pinned) = self.store.pinned() {
            tracing::info!(pinned, release = record.version, "pinned by an operator: not installing (send cmd/unpin to allow updates)");
            return Outcome::Paused;
        }
        tracing::info!(name = %record.name, version = record.version, "downloading a new model release");
        self.events.send_blocking(Event::ModelDownloading { name: record.name.clone(), version: record.version });

        let total: u64 = record.files.iter().map(|f| f.size).sum();
        if total > self.config.max_model_bytes {
            return rejected(version, format!("the release is {total} bytes, over registry.max_model_bytes ({})", self.config.max_model_bytes));
        }
        let staging = self.store.staging(digest);
        if let Err(e) = std::fs::create_dir_all(&staging) {
            return Outcome::Retry(format!("cannot create {}: {e}", staging.display()));
        }
        if let Some(free) = crate::util::fs::free_bytes(&staging) {
            if free < total + MIN_FREE_AFTER {
                return Outcome::Retry(format!("only {free} bytes free for a {total}-byte release; free disk space"));
            }
        }
        for file in &record.files {
            let Some(layer) = manifest.layers.iter().find(|l| l.title() == Some(file.name.as_str())) else {
                return rejected(version, format!("the release has no layer for {}", file.name));
            };
            if layer.digest != format!("sha256:{}", file.sha256) || layer.size != file.size {
                return rejected(version, format!("the layer for {} does not match the signed record", file.name));
            }
            if let Err(error) = registry.blob_to_file(layer, &staging.join(&file.name)) {
                return if error.contains("does not match") { rejected(version, error) } else { Outcome::Retry(error) };
            }
        }
        self.events.send_blocking(Event::ModelVerified { name: record.name.clone(), version: record.version });

        let classifier = match self.validate(&staging, &record) {
            Ok(classifier) => classifier,
            Err(reason) => return rejected(version, reason),
        };
        // What serves if this release fails probation: what is active now.
        let fallback = match self.store.active(&self.keys) {
            Ok(active) => active,
            Err(error) => {
                tracing::warn!(%error, "the active installed model does not verify; a failed probation falls back to the configured model");
                None
            }
        };
        let installed = match self.store.install(&staging, &record_bytes, &signature, &record) {
            Ok(installed) => installed,
            Err(error) => return Outcome::Retry(error),
        };
        let identity = classifier.identity().clone();
        let probation = ProbationPlan {
            frames: self.config.probation_frames,
            latency_budget_ms: self.config.latency_budget_ms,
            min_score_ratio: self.config.probation_min_score_ratio,
            version: record.version,
            recorder: self.recorder.clone(),
            fallback,
        };
        let probation = (probation.frames > 0).then_some(probation);
        if self.swap.send(ModelUpdate { classifier, probation }).is_err() {
            return Outcome::Retry("the inference thread has stopped".into());
        }
        tracing::info!(name = %identity.name, version = %identity.version, dir = %installed.dir.display(), "new model installed and handed to inference");
        Outcome::Activated
    }

    /// Loads the staged model and checks it on this device: shapes against
    /// the record, and p95 latency of a full-frame classification.
    fn validate(&self, staging: &Path, record: &ReleaseRecord) -> Result<Classifier, String> {
        let mut classifier = Classifier::load(&staging.join(&record.model_file), &staging.join(&record.spec_file), self.intra_threads)
            .map_err(|e| format!("the model does not load: {e}"))?
            .with_version(record.version.to_string());
        let input = &classifier.spec().input;
        let (h, w) = (input.height as i64, input.width as i64);
        let expected = if input.layout == Layout::Nhwc { [h, w, 3] } else { [3, h, w] };
        let shape_ok = record.input_shape.len() == 4 && record.input_shape[1..].iter().zip(expected).all(|(&r, e)| r == -1 || r == e);
        if !shape_ok {
            return Err(format!("the record says input {:?}, the model takes {expected:?}", record.input_shape));
        }
        if classifier.spec().labels.len() != record.output_classes {
            return Err(format!("the record says {} classes, the labels file has {}", record.output_classes, classifier.spec().labels.len()));
        }
        let frame = Mat::new_rows_cols_with_default(400, 640, CV_8UC3, Scalar::all(128.0)).map_err(|e| e.to_string())?;
        let rect = [Rect::new(0, 0, 640, 400)];
        let mut times = Vec::with_capacity(self.config.validation_runs);
        for _ in 0..self.config.validation_runs.max(1) {
            let started = Instant::now();
            classifier.classify(&frame, &rect).map_err(|e| format!("the model fails on a test frame: {e}"))?;
            times.push(started.elapsed().as_secs_f32() * 1000.0);
        }
        times.sort_by(f32::total_cmp);
        let p95 = times[((times.len() as f32 * 0.95).ceil() as usize).clamp(1, times.len()) - 1];
        if p95 > self.config.latency_budget_ms {
            return Err(format!("too slow on this device: p95 {p95:.1} ms over registry.latency_budget_ms ({} ms)", self.config.latency_budget_ms));
        }
        if let Some(golden) = &record.golden_file {
            let (correct, total, required) = golden_accuracy(&mut classifier, staging, golden)?;
            let accuracy = correct as f32 / total.max(1) as f32;
            if accuracy < required {
                return Err(format!("golden-set accuracy {correct}/{total} = {accuracy:.2}, below the required {required:.2}"));
            }
            tracing::info!(correct, total, "golden set passed");
        }
        tracing::info!(p95_ms = p95, "new model validated");
        Ok(classifier)
    }
}
