//! The model updater: a thread that watches the registry tag, and for each
//! new release downloads, verifies, validates and installs it away from the
//! frame path, then hands the loaded model to the inference thread, which
//! swaps it in between two frames.
//!
//! A release is refused — with a `model_rejected` event, the old model
//! serving on — if a file does not match its digest in [`MAX_GARBLED`]
//! downloads in a row, the record is not signed by a pinned key, has
//! expired, is not newer than the active version, needs a newer agent, its
//! spec names a file that is not one of the release's, it does not load,
//! does not match its record's shapes, or is too slow on this device. A
//! registry that cannot be reached, answers with an error status (server
//! trouble, credentials, a tag that points at what it does not serve yet),
//! breaks off or trickles only means "try again"
//! (`RegistryError::condemns_release`): with backoff from 1 s up to
//! `poll_seconds`, and the release is not remembered as seen. A refusal
//! that depended on the active version ("not newer") is judged again once
//! the active version changes (an operator's rollback).
//!
//! The release already serving, found at the tag again (every start), is
//! not a refusal: it is passed over quietly. A refusal is reported once
//! per release digest and active version, across restarts (the store
//! remembers the last one).
//!
//! Announcements only wake the thread: however many arrive, it checks the
//! registry at most once per [`MIN_CHECK_INTERVAL`].

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
use crate::infer::classifier::InferError;
use crate::infer::{ActiveModel, Classifier, ModelError};
use crate::models::store::{ModelStore, StoreError};
use crate::publish::sink::EventSink;
use crate::wire::events::Event;
use crate::models::registry::{Registry, RegistryError, RECORD_TYPE, SIGNATURE_TYPE};
use crate::models::release::{self, GoldenSet, PublicKey, ReleaseError, ReleaseRecord};
use crate::util::fs::FileError;
use crate::util::shutdown::Shutdown;
use crate::util::throttle::Throttle;

/// Why a downloaded release fails its checks on this device.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("the model does not load: {0}")]
    Load(ModelError),
    #[error("the record says input {record:?}, the model takes {model:?}")]
    Shape { record: Vec<i64>, model: [i64; 3] },
    #[error("the record says {record} classes, the labels file has {labels}")]
    Classes { record: usize, labels: usize },
    #[error("cannot make a test frame: {0}")]
    TestFrame(opencv::Error),
    #[error("the model fails on a test frame: {0}")]
    FailsOnTestFrame(InferError),
    #[error("too slow on this device: p95 {p95:.1} ms over registry.latency_budget_ms ({budget} ms)")]
    TooSlow { p95: f32, budget: f32 },
    #[error("cannot read the golden set: {0}")]
    GoldenRead(std::io::Error),
    #[error("the golden set is not valid: {0}")]
    GoldenInvalid(serde_json::Error),
    /// Only the release's own files are read (a name from the set never reaches a path unchecked).
    #[error("golden image {image:?} is not one of the release's files")]
    GoldenNotInRelease { image: String },
    #[error("cannot read golden image {image}: {source}")]
    GoldenImage { image: String, source: opencv::Error },
    #[error("golden image {image} cannot be decoded")]
    GoldenUndecodable { image: String },
    #[error("the model fails on golden image {image}: {source}")]
    FailsOnGolden { image: String, source: InferError },
    #[error("golden-set accuracy {correct}/{total} = {accuracy:.2}, below the required {required:.2}")]
    GoldenAccuracy { correct: usize, total: usize, accuracy: f32, required: f32 },
}

/// Classifies every golden image (whole image) and counts the right road classes.
fn golden_accuracy(classifier: &mut Classifier, staging: &Path, record: &ReleaseRecord, golden: &str) -> Result<(usize, usize, f32), ValidationError> {
    let text = std::fs::read(staging.join(golden)).map_err(ValidationError::GoldenRead)?;
    let set: GoldenSet = serde_json::from_slice(&text).map_err(ValidationError::GoldenInvalid)?;
    let mut correct = 0;
    for sample in &set.samples {
        if record.file(&sample.image).is_none() {
            return Err(ValidationError::GoldenNotInRelease { image: sample.image.chars().take(80).collect() });
        }
        let path = staging.join(&sample.image);
        let image = opencv::imgcodecs::imread(&path, opencv::imgcodecs::IMREAD_COLOR)
            .map_err(|source| ValidationError::GoldenImage { image: sample.image.clone(), source })?;
        if image.empty() {
            return Err(ValidationError::GoldenUndecodable { image: sample.image.clone() });
        }
        let rect = [Rect::new(0, 0, image.cols(), image.rows())];
        let regions = classifier
            .classify(&image, &rect)
            .map_err(|source| ValidationError::FailsOnGolden { image: sample.image.clone(), source })?;
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
/// However many announcements arrive, the registry is asked at most this often.
pub const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// First wait after a transient failure; it doubles up to `poll_seconds`.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Downloads of a release that do not match their digest before it is
/// refused: one garbled answer may be transit damage, the same mismatch
/// every time is the registry's copy.
pub const MAX_GARBLED: u32 = 3;

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
        // One pending wake-up at most: a flood of announcements is one check.
        let (wake_tx, wake) = std::sync::mpsc::sync_channel(1);
        let announced_log = Throttle::for_warnings();
        routes.add("model updater", format!("{}+", context.topics.fleet_models_prefix()), move |inbound: Inbound| {
            if let Some(suppressed) = announced_log.allow() {
                tracing::info!(topic = %inbound.topic, suppressed, "model release announced");
            }
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
    /// The registry could not be reached or answered with an error status: try again next poll.
    Retry(RetryReason),
    /// An operator pinned a version: look again after `unpin`.
    Paused,
    /// The tag points at the release serving now (as at every start).
    Current,
    /// This release will never do: remember its digest and wait for another.
    Rejected { version: Option<u64>, reason: Rejection },
    Activated,
}

/// What failed this time but may work at the next poll.
#[derive(Debug, thiserror::Error)]
enum RetryReason {
    #[error(transparent)]
    Registry(RegistryError),
    #[error(transparent)]
    Staging(FileError),
    #[error("only {free} bytes free for a {total}-byte release; free disk space")]
    DiskFull { free: u64, total: u64 },
    #[error(transparent)]
    Install(StoreError),
    #[error("the inference thread has stopped")]
    InferenceStopped,
    #[error("the registry named {0}")]
    Store(StoreError),
}

/// Why a release is refused (for good, or until the active version changes);
/// its Display is the `model_rejected` event's reason.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error("the manifest's config is {0}, not a release record")]
    NotARecord(String),
    /// An answer that proves the release bad (`RegistryError::condemns_release`).
    #[error(transparent)]
    Registry(RegistryError),
    /// Bytes that did not match their digest download after download.
    #[error("{error} ({downloads} downloads in a row)")]
    Garbled { downloads: u32, error: RegistryError },
    #[error("the release has no signature layer")]
    NoSignature,
    #[error(transparent)]
    Release(ReleaseError),
    #[error("version {0} was rolled back by an operator; publish a newer version")]
    RolledBack(u64),
    #[error("the release is {total} bytes, over registry.max_model_bytes ({max})")]
    TooLarge { total: u64, max: u64 },

    #[error("the release has no layer for {0}")]
    NoLayer(String),
    #[error("the layer for {0} does not match the signed record")]
    LayerMismatch(String),
    #[error(transparent)]
    Invalid(ValidationError),
}

impl Memory {
    /// A registry error while fetching the release at `digest`: refuse it
    /// if the error proves it bad, or after [`MAX_GARBLED`] garbled
    /// downloads of it in a row; anything else is tried again (with backoff).
    fn registry_failure(&mut self, digest: &str, error: RegistryError, version: Option<u64>) -> Outcome {
        if error.condemns_release() {
            return Outcome::Rejected { version, reason: Rejection::Registry(error) };
        }
        if error.is_garbled() {
            let downloads = match &self.garbled {
                Some((d, n)) if d == digest => n + 1,
                _ => 1,
            };
            if downloads >= MAX_GARBLED {
                self.garbled = None;
                return Outcome::Rejected { version, reason: Rejection::Garbled { downloads, error } };
            }
            self.garbled = Some((digest.to_string(), downloads));
        }
        Outcome::Retry(RetryReason::Registry(error))
    }
}

/// A release judged for good, so the tag's digest is not fetched again
/// while it stays put, unless the judgement depended on the active version.
#[derive(Debug, Clone, PartialEq)]
struct Judged {
    digest: String,
    /// The active version a "not newer" refusal was made against.
    against: Option<u64>,
}

impl Judged {
    fn covers(&self, digest: &str, active: u64) -> bool {
        self.digest == digest && self.against.is_none_or(|v| v == active)
    }
}

/// What the thread remembers between checks.
#[derive(Debug, Default)]
struct Memory {
    judged: Option<Judged>,
    /// The digest whose `model_downloading` was sent: once, not per retry.
    downloading: Option<String>,
    /// A release whose bytes did not match their digest, and how many times.
    garbled: Option<(String, u32)>,
}

/// The wait after the n-th transient failure in a row: 1 s doubling, at most `cap`.
fn backoff(failures: u32, cap: Duration) -> Duration {
    FIRST_RETRY.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(cap)
}

impl Updater {
    pub fn run(self) {
        let registry = match Registry::new(&self.config.url) {
            Ok(registry) => registry,
            Err(error) => return tracing::error!(%error, "model updates are off: fix registry.url"),
        };
        let mut memory = Memory::default();
        let poll = Duration::from_secs(self.config.poll_seconds);
        let mut failures = 0u32;
        // Transient failures repeat at every retry: one line per minute, with the count.
        let retry_log = Throttle::new(Duration::from_secs(60));
        loop {
            let checked = Instant::now();
            let wait = match self.check(&registry, &mut memory) {
                Outcome::Retry(error) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures, poll);
                    if let Some(suppressed) = retry_log.allow() {
                        tracing::warn!(%error, url = %self.config.url, failures, retry_in_s = wait.as_secs(), suppressed, "cannot fetch the model release; will retry");
                    }
                    wait
                }
                outcome => {
                    if failures > 0 {
                        tracing::info!(failures, "the model registry answers again");
                    }
                    failures = 0;
                    if let Outcome::Rejected { version, reason } = outcome {
                        tracing::warn!(version, %reason, "model release rejected; the current model keeps serving");
                        self.events.send_blocking(Event::ModelRejected { version: version.map(|v| v.to_string()), reason: reason.to_string() });
                    }
                    poll
                }
            };
            if self.wait(checked, wait) {
                return;
            }
        }
    }

    /// Until `checked + wait`, or an announcement (but not before
    /// `checked + MIN_CHECK_INTERVAL`), or shutdown (checked twice a
    /// second); true on shutdown.
    fn wait(&self, checked: Instant, wait: Duration) -> bool {
        let mut next = checked + wait;
        loop {
            if self.shutdown.is_triggered() {
                return true;
            }
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.wake.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(()) => next = next.min(checked + MIN_CHECK_INTERVAL),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if self.shutdown.sleep(left.min(Duration::from_millis(500))) {
                        return true;
                    }
                }
            }
        }
    }

    fn active_version(&self) -> u64 {
        self.active.read().map(|m| release::numeric_version(&m.version)).unwrap_or(0)
    }

    /// Whether this record is that of the installed release serving now:
    /// the same bytes as the active release's record (which was verified
    /// when it was loaded), and the model serving is its model.
    fn is_serving(&self, record_bytes: &[u8]) -> bool {
        if self.store.active_record_bytes().as_deref() != Some(record_bytes) {
            return false;
        }
        let Ok(record) = release::parse_record(record_bytes) else { return false };
        let Some(model) = record.file(&record.model_file) else { return false };
        self.active.read().is_ok_and(|m| m.name == record.name && m.version == record.version.to_string() && m.sha256 == model.sha256)
    }

    fn check(&self, registry: &Registry, memory: &mut Memory) -> Outcome {
        let digest = match registry.tag_digest(&self.config.tag) {
            Ok(Some(digest)) => digest,
            Ok(None) => return Outcome::Unchanged,
            Err(error) => return Outcome::Retry(RetryReason::Registry(error)),
        };
        let active = self.active_version();
        if memory.judged.as_ref().is_some_and(|j| j.covers(&digest, active)) {
            return Outcome::Unchanged;
        }
        let staging = match self.store.staging(&digest) {
            Ok(staging) => staging,
            Err(error) => return Outcome::Retry(RetryReason::Store(error)),
        };
        let outcome = self.try_release(registry, &digest, &staging, active, memory);
        if let Outcome::Rejected { .. } | Outcome::Current = outcome {
            let _ = std::fs::remove_dir_all(&staging);
        }
        match &outcome {
            Outcome::Retry(_) | Outcome::Paused => {}
            // Judged against this active version: a rollback makes them worth another look.
            Outcome::Rejected { reason: Rejection::Release(ReleaseError::NotNewer { .. }), .. } | Outcome::Current => {
                memory.judged = Some(Judged { digest: digest.clone(), against: Some(active) });
            }
            _ => memory.judged = Some(Judged { digest: digest.clone(), against: None }),
        }
        if !matches!(outcome, Outcome::Retry(_)) {
            memory.garbled = None;
        }
        match outcome {
            Outcome::Rejected { version, reason } if self.store.reported() == Some((digest.clone(), active)) => {
                tracing::info!(version, %reason, "model release refused again (reported before); the current model keeps serving");
                Outcome::Unchanged
            }
            Outcome::Rejected { version, reason } => {
                if let Err(error) = self.store.set_reported(&digest, active) {
                    tracing::warn!(%error, "cannot note the refusal as reported: it is reported again after a restart");
                }
                Outcome::Rejected { version, reason }
            }
            outcome => outcome,
        }
    }

    fn try_release(&self, registry: &Registry, digest: &str, staging: &Path, active: u64, memory: &mut Memory) -> Outcome {
        let rejected = |version: Option<u64>, reason: Rejection| Outcome::Rejected { version, reason };
        let (manifest, _) = match registry.manifest(digest) {
            Ok(m) => m,
            Err(error) => return memory.registry_failure(digest, error, None),
        };
        if manifest.config.media_type != RECORD_TYPE {
            return rejected(None, Rejection::NotARecord(manifest.config.media_type));
        }
        let record_bytes = match registry.blob(&manifest.config, MAX_SMALL_BLOB) {
            Ok(bytes) => bytes,
            Err(error) => return memory.registry_failure(digest, error, None),
        };
        let Some(signature_layer) = manifest.layers.iter().find(|l| l.media_type == SIGNATURE_TYPE) else {
            return rejected(None, Rejection::NoSignature);
        };
        let signature = match registry.blob(signature_layer, MAX_SMALL_BLOB) {
            Ok(bytes) => bytes,
            Err(error) => return memory.registry_failure(digest, error, None),
        };
        let record = match release::verify(&record_bytes, &signature, &self.keys, active) {
            Ok(record) => record,
            Err(ReleaseError::NotNewer { version, .. }) if version == active && self.is_serving(&record_bytes) => {
                tracing::debug!(version, "the release at the tag is the one serving");
                return Outcome::Current;
            }
            Err(reason) => {
                // For the event only: the version as the (unverified) record states it.
                let version = serde_json::from_slice::<ReleaseRecord>(&record_bytes).ok().map(|r| r.version);
                return rejected(version, Rejection::Release(reason));
            }
        };
        let version = Some(record.version);
        if self.store.refused().contains(&record.version) {
            return rejected(version, Rejection::RolledBack(record.version));
        }
        if let Some(pinned) = self.store.pinned() {
            tracing::info!(pinned, release = record.version, "pinned by an operator: not installing (send cmd/unpin to allow updates)");
            return Outcome::Paused;
        }
        // Checked again here (verify did) so that no sum below can wrap.
        let total = match release::total_size(&record) {
            Ok(total) => total,
            Err(reason) => return rejected(version, Rejection::Release(reason)),
        };
        if total > self.config.max_model_bytes {
            return rejected(version, Rejection::TooLarge { total, max: self.config.max_model_bytes });
        }
        if memory.downloading.as_deref() != Some(digest) {
            tracing::info!(name = %record.name, version = record.version, "downloading a new model release");
            self.events.send_blocking(Event::ModelDownloading { name: record.name.clone(), version: record.version.to_string() });
            memory.downloading = Some(digest.to_string());
        }
        if let Err(e) = crate::util::fs::create_private_dir_all(staging) {
            return Outcome::Retry(RetryReason::Staging(e));
        }
        if let Some(free) = crate::util::fs::free_bytes(staging) {
            if total.checked_add(MIN_FREE_AFTER).is_none_or(|needed| free < needed) {
                return Outcome::Retry(RetryReason::DiskFull { free, total });
            }
        }
        for file in &record.files {
            let Some(layer) = manifest.layers.iter().find(|l| l.title() == Some(file.name.as_str())) else {
                return rejected(version, Rejection::NoLayer(file.name.clone()));
            };
            if layer.digest != format!("sha256:{}", file.sha256) || layer.size != file.size {
                return rejected(version, Rejection::LayerMismatch(file.name.clone()));
            }
            if let Err(error) = registry.blob_to_file(layer, &staging.join(&file.name)) {
                return memory.registry_failure(digest, error, version);
            }
        }
        // Before anything reads the files the spec names (labels, taxonomy).
        let spec = staging.join(&record.spec_file);
        let spec_text = match std::fs::read_to_string(&spec) {
            Ok(text) => text,
            Err(e) => return Outcome::Retry(RetryReason::Staging(FileError::new("read", &spec, e))),
        };
        if let Err(reason) = release::check_spec(&record, &spec_text) {
            return rejected(version, Rejection::Release(reason));
        }
        self.events.send_blocking(Event::ModelVerified { name: record.name.clone(), version: record.version.to_string() });

        let classifier = match self.validate(staging, &record) {
            Ok(classifier) => classifier,
            Err(reason) => return rejected(version, Rejection::Invalid(reason)),
        };
        // What serves if this release fails probation: what is active now.
        let fallback = match self.store.active(&self.keys) {
            Ok(active) => active,
            Err(error) => {
                tracing::warn!(%error, "the active installed model does not verify; a failed probation falls back to the configured model");
                None
            }
        };
        let installed = match self.store.install(staging, &record_bytes, &signature, &record) {
            Ok(installed) => installed,
            Err(error) => return Outcome::Retry(RetryReason::Install(error)),
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
            return Outcome::Retry(RetryReason::InferenceStopped);
        }
        tracing::info!(name = %identity.name, version = %identity.version, dir = %installed.dir.display(), "new model installed and handed to inference");
        Outcome::Activated
    }

    /// Loads the staged model and checks it on this device: shapes against
    /// the record, and p95 latency of a full-frame classification.
    fn validate(&self, staging: &Path, record: &ReleaseRecord) -> Result<Classifier, ValidationError> {
        let mut classifier = Classifier::load(&staging.join(&record.model_file), &staging.join(&record.spec_file), self.intra_threads)
            .map_err(ValidationError::Load)?
            .with_version(record.version.to_string());
        let input = &classifier.spec().input;
        let (h, w) = (input.height as i64, input.width as i64);
        let expected = if input.layout == Layout::Nhwc { [h, w, 3] } else { [3, h, w] };
        let shape_ok = record.input_shape.len() == 4 && record.input_shape[1..].iter().zip(expected).all(|(&r, e)| r == -1 || r == e);
        if !shape_ok {
            return Err(ValidationError::Shape { record: record.input_shape.clone(), model: expected });
        }
        if classifier.spec().labels.len() != record.output_classes {
            return Err(ValidationError::Classes { record: record.output_classes, labels: classifier.spec().labels.len() });
        }
        let frame = Mat::new_rows_cols_with_default(400, 640, CV_8UC3, Scalar::all(128.0)).map_err(ValidationError::TestFrame)?;
        let rect = [Rect::new(0, 0, 640, 400)];
        let mut times = Vec::with_capacity(self.config.validation_runs.clamp(1, 1024));
        for _ in 0..self.config.validation_runs.max(1) {
            let started = Instant::now();
            classifier.classify(&frame, &rect).map_err(ValidationError::FailsOnTestFrame)?;
            times.push(started.elapsed().as_secs_f32() * 1000.0);
        }
        times.sort_by(f32::total_cmp);
        let p95 = times[((times.len() as f32 * 0.95).ceil() as usize).clamp(1, times.len()) - 1];
        if p95 > self.config.latency_budget_ms {
            return Err(ValidationError::TooSlow { p95, budget: self.config.latency_budget_ms });
        }
        if let Some(golden) = &record.golden_file {
            let (correct, total, required) = golden_accuracy(&mut classifier, staging, record, golden)?;
            let accuracy = correct as f32 / total.max(1) as f32;
            if accuracy < required {
                return Err(ValidationError::GoldenAccuracy { correct, total, accuracy, required });
            }
            tracing::info!(correct, total, "golden set passed");
        }
        tracing::info!(p95_ms = p95, "new model validated");
        Ok(classifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_garbled_download_is_retried_and_refused_only_after_max_garbled_in_a_row() {
        let garbled = || RegistryError::DigestMismatch { digest: "sha256:00".into() };
        let mut memory = Memory::default();
        for _ in 1..MAX_GARBLED {
            assert!(matches!(memory.registry_failure("sha256:a", garbled(), Some(2)), Outcome::Retry(_)));
        }
        // Another release starts its own count.
        assert!(matches!(memory.registry_failure("sha256:b", garbled(), Some(3)), Outcome::Retry(_)));
        for _ in 1..MAX_GARBLED - 1 {
            assert!(matches!(memory.registry_failure("sha256:b", garbled(), Some(3)), Outcome::Retry(_)));
        }
        match memory.registry_failure("sha256:b", garbled(), Some(3)) {
            Outcome::Rejected { version: Some(3), reason } => {
                assert!(reason.to_string().contains("does not match its digest") && reason.to_string().contains("3 downloads in a row"), "{reason}")
            }
            _ => panic!("refused after {MAX_GARBLED} garbled downloads"),
        }
        let too_large = RegistryError::TooLarge { digest: "sha256:00".into(), size: 2, max: 1 };
        assert!(matches!(memory.registry_failure("sha256:c", too_large, None), Outcome::Rejected { .. }));
    }
}
