//! What the updater needs to know of a kind of model: how a staged release
//! is loaded and checked on this device, and where the loaded model goes.
//! [`ClassifierReleases`]: shapes against the record, p95 latency, the
//! golden set, then a swap with probation. [`DetectorReleases`]: shapes
//! against the record and p95 latency, then a swap between two frames (no
//! golden set and no probation yet: both would need boxes to judge by).
//! The rest (registry, signature, kind, version, download, install) is the
//! same for every kind, in [`super::updater`].

use opencv::core::{Mat, Rect, Scalar, CV_8UC3};
use opencv::prelude::*;
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use super::recorder::RollbackRecorder;
use crate::config::RegistryConfig;
use crate::infer::classifier::InferError;
use crate::infer::spec::{InputSpec, Layout, ModelKind};
use crate::infer::{Classifier, Detector, ModelError, ModelIdentity};
use crate::models::probation::{ModelUpdate, ProbationPlan};
use crate::models::release::{GoldenSet, ReleaseRecord};
use crate::models::store::InstalledModel;

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

/// The inference thread has stopped: nothing takes the model.
#[derive(Debug)]
pub struct InferenceStopped;

/// One kind of model's part in the update path.
pub trait Target: Send {
    /// The model loaded from a release, on its way to the inference thread.
    type Model: Send;
    /// The kind of release this repository holds: a release of another
    /// kind is refused before anything is downloaded.
    fn kind(&self) -> ModelKind;
    /// Loads the staged release (`record` verified, files checked) and checks
    /// it on this device, away from the frame path.
    fn validate(&self, staging: &Path, record: &ReleaseRecord, config: &RegistryConfig) -> Result<Self::Model, ValidationError>;
    /// Whether a new release can fail after it serves, and so needs to know
    /// what is active before it is installed (the fallback).
    fn has_probation(&self) -> bool {
        false
    }
    /// Hands the installed model to the inference thread, which swaps it in
    /// between two frames; the identity it will serve under.
    fn hand_over(&self, model: Self::Model, record: &ReleaseRecord, config: &RegistryConfig, fallback: Option<InstalledModel>) -> Result<ModelIdentity, InferenceStopped>;
}

/// The record's input shape and classes against what the loaded model takes.
fn check_shapes(input: &InputSpec, labels: usize, record: &ReleaseRecord) -> Result<(), ValidationError> {
    let (h, w) = (input.height as i64, input.width as i64);
    let expected = if input.layout == Layout::Nhwc { [h, w, 3] } else { [3, h, w] };
    let shape_ok = record.input_shape.len() == 4 && record.input_shape[1..].iter().zip(expected).all(|(&r, e)| r == -1 || r == e);
    if !shape_ok {
        return Err(ValidationError::Shape { record: record.input_shape.clone(), model: expected });
    }
    if labels != record.output_classes {
        return Err(ValidationError::Classes { record: record.output_classes, labels });
    }
    Ok(())
}

/// The p95 of `config.validation_runs` runs of `run` on a grey 640 × 400
/// frame, refused over `config.latency_budget_ms`.
fn p95_latency(config: &RegistryConfig, mut run: impl FnMut(&Mat) -> Result<(), InferError>) -> Result<f32, ValidationError> {
    let frame = Mat::new_rows_cols_with_default(400, 640, CV_8UC3, Scalar::all(128.0)).map_err(ValidationError::TestFrame)?;
    let mut times = Vec::with_capacity(config.validation_runs.clamp(1, 1024));
    for _ in 0..config.validation_runs.max(1) {
        let started = Instant::now();
        run(&frame).map_err(ValidationError::FailsOnTestFrame)?;
        times.push(started.elapsed().as_secs_f32() * 1000.0);
    }
    times.sort_by(f32::total_cmp);
    let p95 = times[((times.len() as f32 * 0.95).ceil() as usize).clamp(1, times.len()) - 1];
    if p95 > config.latency_budget_ms {
        return Err(ValidationError::TooSlow { p95, budget: config.latency_budget_ms });
    }
    Ok(p95)
}

/// Classifier releases (`registry.url`): swapped in on probation.
pub struct ClassifierReleases {
    pub intra_threads: usize,
    pub swap: SyncSender<ModelUpdate>,
    /// Where a failed probation is recorded.
    pub recorder: RollbackRecorder,
}

impl Target for ClassifierReleases {
    type Model = Classifier;

    fn kind(&self) -> ModelKind {
        ModelKind::Classifier
    }

    /// Shapes against the record, p95 latency of a full-frame
    /// classification, and the golden set if the release has one.
    fn validate(&self, staging: &Path, record: &ReleaseRecord, config: &RegistryConfig) -> Result<Classifier, ValidationError> {
        let mut classifier = Classifier::load(&staging.join(&record.model_file), &staging.join(&record.spec_file), self.intra_threads)
            .map_err(ValidationError::Load)?
            .with_version(record.version.to_string());
        check_shapes(&classifier.spec().input, classifier.spec().labels.len(), record)?;
        let whole = [Rect::new(0, 0, 640, 400)];
        let p95 = p95_latency(config, |frame| classifier.classify(frame, &whole).map(drop))?;
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

    fn has_probation(&self) -> bool {
        true
    }

    fn hand_over(&self, classifier: Classifier, record: &ReleaseRecord, config: &RegistryConfig, fallback: Option<InstalledModel>) -> Result<ModelIdentity, InferenceStopped> {
        let identity = classifier.identity().clone();
        let probation = ProbationPlan {
            frames: config.probation_frames,
            latency_budget_ms: config.latency_budget_ms,
            min_score_ratio: config.probation_min_score_ratio,
            version: record.version,
            recorder: self.recorder.clone(),
            fallback,
        };
        let probation = (probation.frames > 0).then_some(probation);
        self.swap.send(ModelUpdate { classifier, probation }).map_err(|_| InferenceStopped)?;
        Ok(identity)
    }
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

/// A detector for the inference thread to swap in between two frames
/// (`DetectionStage::swap`): the frame before it is searched by the old
/// detector, the one after by this one.
pub struct DetectorUpdate {
    pub detector: Detector,
}

/// Detector releases (`[detector.registry]`): swapped in at once.
pub struct DetectorReleases {
    pub intra_threads: usize,
    pub swap: SyncSender<DetectorUpdate>,
}

impl Target for DetectorReleases {
    type Model = Detector;

    fn kind(&self) -> ModelKind {
        ModelKind::Detector
    }

    /// Shapes against the record (the spec's input, its number of labels;
    /// loading checked each head against the spec) and p95 latency of a
    /// whole-frame detection.
    fn validate(&self, staging: &Path, record: &ReleaseRecord, config: &RegistryConfig) -> Result<Detector, ValidationError> {
        let mut detector = Detector::load(&staging.join(&record.model_file), &staging.join(&record.spec_file), self.intra_threads)
            .map_err(ValidationError::Load)?
            .with_version(record.version.to_string());
        check_shapes(&detector.spec().input, detector.spec().labels.len(), record)?;
        let p95 = p95_latency(config, |frame| detector.detect(frame).map(drop))?;
        tracing::info!(p95_ms = p95, "new detector validated");
        Ok(detector)
    }

    fn hand_over(&self, detector: Detector, _: &ReleaseRecord, _: &RegistryConfig, _: Option<InstalledModel>) -> Result<ModelIdentity, InferenceStopped> {
        let identity = detector.identity().clone();
        self.swap.send(DetectorUpdate { detector }).map_err(|_| InferenceStopped)?;
        Ok(identity)
    }
}
