//! One ONNX Runtime session and the model it runs.

use opencv::core::{Mat, Rect};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

use super::preprocess;
use super::runtime::RuntimeError;
use super::spec::{Activation, InputSpec, Layout, ModelSpec, SpecError};
pub use crate::wire::model::{ModelIdentity, RegionPrediction, TopK};

/// Why a model cannot be served: its spec, ONNX Runtime, the file, or the
/// file against its spec.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file cannot be read (to hash it).
    #[error("model file {path}: {source}")]
    File { path: PathBuf, #[source] source: std::io::Error },
    /// ONNX Runtime refuses the file.
    #[error("model file {path}: ONNX Runtime cannot load it ({source}); is it an ONNX model file?")]
    Load { path: PathBuf, #[source] source: ort::Error },
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The library failed to load once; every later load reports the same failure.
    #[error(transparent)]
    Runtime(#[from] &'static RuntimeError),
    #[error("model {path} does not fit its spec: {source}")]
    Mismatch { path: PathBuf, #[source] source: SignatureError },
}

/// How a model's inputs or outputs differ from what its spec says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("it has no input named `{name}` (its inputs: {})", quoted(found))]
    NoInput { name: String, found: Vec<String> },
    #[error("input `{name}` has shape {shape:?}, the spec needs [N, ...] = {expected:?}")]
    InputShape { name: String, shape: Vec<i64>, expected: [i64; 4] },
    #[error("it has no output named `{name}` (its outputs: {})", quoted(found))]
    NoOutput { name: String, found: Vec<String> },
    #[error("output `{name}` has {classes} classes but the labels file has {labels}")]
    OutputClasses { name: String, classes: i64, labels: usize },
    /// A detector head whose shape does not follow from the spec's input, strides, anchors and labels.
    #[error("output `{name}` has shape {shape:?}, the spec needs {expected:?}")]
    OutputShape { name: String, shape: Vec<i64>, expected: Vec<i64> },
}

/// Why one batch of regions was not classified (the frame is skipped).
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("inference failed: preprocessing {rect:?}: {source}")]
    Preprocess { rect: Rect, #[source] source: opencv::Error },
    #[error("inference failed: {0}")]
    Runtime(#[from] ort::Error),
    #[error("inference failed: the model gave no output named `{0}`")]
    NoOutput(String),
    #[error("inference failed: output has {classes} classes, labels file has {labels}")]
    OutputClasses { classes: usize, labels: usize },
    #[error("inference failed: output `{name}` has shape {shape:?}, the spec needs {expected:?}")]
    OutputShape { name: String, shape: Vec<i64>, expected: Vec<i64> },
}

/// Shannon entropy of a probability distribution, divided by its maximum.
fn normalized_entropy(probabilities: &[f32]) -> f32 {
    if probabilities.len() < 2 {
        return 0.0;
    }
    let h: f32 = probabilities.iter().filter(|p| **p > 0.0).map(|p| -p * p.ln()).sum();
    (h / (probabilities.len() as f32).ln()).clamp(0.0, 1.0)
}

pub struct Classifier {
    session: Session,
    spec: ModelSpec,
    identity: ModelIdentity,
    /// Reused input buffer: `batch * 3 * h * w` floats.
    input: Vec<f32>,
}

impl Classifier {
    pub fn load(model_path: &Path, spec_path: &Path, intra_threads: usize) -> Result<Classifier, ModelError> {
        let spec = ModelSpec::load(spec_path)?;
        let (session, sha256) = open_session(model_path, intra_threads)?;
        check_signature(&session, &spec).map_err(|source| ModelError::Mismatch { path: model_path.to_path_buf(), source })?;
        let identity = ModelIdentity { name: spec.name.clone(), version: spec.version.clone(), sha256 };
        Ok(Classifier { session, spec, identity, input: Vec::new() })
    }

    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    /// A release's version (from its signed record) instead of the spec's.
    pub fn with_version(mut self, version: String) -> Classifier {
        self.identity.version = version;
        self
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Classifies each rectangle of `frame` in one batched run.
    pub fn classify(&mut self, frame: &Mat, rects: &[Rect]) -> Result<Vec<RegionPrediction>, InferError> {
        if rects.is_empty() {
            return Ok(Vec::new());
        }
        let input = &self.spec.input;
        let (w, h) = (input.width as usize, input.height as usize);
        let per_image = 3 * w * h;
        self.input.resize(rects.len() * per_image, 0.0);
        for (rect, slot) in rects.iter().zip(self.input.chunks_exact_mut(per_image)) {
            preprocess::region_into(frame, *rect, input, slot).map_err(|source| InferError::Preprocess { rect: *rect, source })?;
        }
        let shape = match input.layout {
            Layout::Nchw => [rects.len(), 3, h, w],
            Layout::Nhwc => [rects.len(), h, w, 3],
        };
        let mut rows = self.run(shape)?;
        Ok(rects.iter().zip(rows.iter_mut()).map(|(rect, row)| self.describe(*rect, row)).collect())
    }

    fn run(&mut self, shape: [usize; 4]) -> Result<Vec<Vec<f32>>, InferError> {
        let tensor = TensorRef::from_array_view((shape, self.input.as_slice()))?;
        let outputs = self.session.run(ort::inputs![self.spec.input.name.as_str() => tensor])?;
        let output = outputs.get(&self.spec.output.name).ok_or_else(|| InferError::NoOutput(self.spec.output.name.clone()))?;
        let (shape, data) = output.try_extract_tensor::<f32>()?;
        let classes = *shape.last().unwrap_or(&0) as usize;
        if classes != self.spec.labels.len() {
            return Err(InferError::OutputClasses { classes, labels: self.spec.labels.len() });
        }
        Ok(data.chunks_exact(classes).map(<[f32]>::to_vec).collect())
    }

    fn describe(&self, rect: Rect, scores: &mut [f32]) -> RegionPrediction {
        if self.spec.output.activation == Activation::Softmax {
            preprocess::softmax(scores);
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        let k = self.spec.output.top_k.min(order.len());
        order.select_nth_unstable_by(k - 1, |a, b| scores[*b].total_cmp(&scores[*a]));
        order.truncate(k);
        order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
        let top_k: Vec<TopK> = order
            .into_iter()
            .map(|index| TopK { index, label: self.spec.labels[index].clone(), score: scores[index] })
            .collect();
        let margin = top_k[0].score - top_k.get(1).map_or(0.0, |t| t.score);
        let entropy = normalized_entropy(scores);
        let (class, score) = self.spec.taxonomy.classify(scores);
        let road_scores = self.spec.taxonomy.scores(scores);
        RegionPrediction { bbox: [rect.x, rect.y, rect.width, rect.height], class: class.to_string(), score, top_k, margin, entropy, road_scores, track: None, detector: None }
    }
}

/// A model file's session and its sha256 (a classifier's or a detector's).
pub(crate) fn open_session(model_path: &Path, intra_threads: usize) -> Result<(Session, String), ModelError> {
    // ONNX Runtime would read a FIFO or /dev/zero for ever.
    crate::util::fs::check_regular_file(model_path).map_err(|source| ModelError::File { path: model_path.to_path_buf(), source })?;
    let sha256 = crate::util::fs::sha256_file(model_path).map_err(|e| ModelError::File { path: model_path.to_path_buf(), source: e.source })?;
    let environment = crate::infer::runtime::environment()?;
    let session = build_session(environment, model_path, intra_threads).map_err(|source| ModelError::Load { path: model_path.to_path_buf(), source })?;
    Ok((session, sha256))
}

/// Built in its own function: ort's builder errors carry the (not `Send`)
/// builder, so they become plain `ort::Error`s here.
fn build_session(environment: &ort::environment::Environment, path: &Path, intra_threads: usize) -> ort::Result<Session> {
    let build = || -> ort::Result<Session> {
        Ok(Session::builder(environment)?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_intra_threads(intra_threads)?
            // Spinning threads steal the decoder's core on small devices.
            .with_intra_op_spinning(false)?
            .commit_from_file(path)?)
    };
    build()
}

/// The model must take the input `spec` describes: `[N, …]` in its layout.
pub(crate) fn check_input(session: &Session, spec: &InputSpec) -> Result<(), SignatureError> {
    let input = session
        .inputs()
        .iter()
        .find(|i| i.name() == spec.name)
        .ok_or_else(|| SignatureError::NoInput { name: spec.name.clone(), found: names(session.inputs()) })?;
    let (h, w) = (spec.height as i64, spec.width as i64);
    let expected = match spec.layout {
        Layout::Nchw => [-1, 3, h, w],
        Layout::Nhwc => [-1, h, w, 3],
    };
    let shape: Vec<i64> = input.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default();
    let fits = shape.len() == 4 && shape.iter().zip(expected).skip(1).all(|(have, want)| *have == want || *have == -1);
    if !fits {
        return Err(SignatureError::InputShape { name: spec.name.clone(), shape, expected });
    }
    Ok(())
}

/// The model must take the spec's input and give the spec's output.
fn check_signature(session: &Session, spec: &ModelSpec) -> Result<(), SignatureError> {
    check_input(session, &spec.input)?;
    let output = session
        .outputs()
        .iter()
        .find(|o| o.name() == spec.output.name)
        .ok_or_else(|| SignatureError::NoOutput { name: spec.output.name.clone(), found: names(session.outputs()) })?;
    let classes = output.dtype().tensor_shape().and_then(|s| s.last().copied()).unwrap_or(-1);
    if classes != -1 && classes as usize != spec.labels.len() {
        return Err(SignatureError::OutputClasses { name: spec.output.name.clone(), classes, labels: spec.labels.len() });
    }
    Ok(())
}

pub(crate) fn names(outlets: &[ort::value::Outlet]) -> Vec<String> {
    outlets.iter().map(|o| o.name().to_string()).collect()
}

/// `` `a`, `b` ``: names as the messages show them.
fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}


#[cfg(test)]
mod tests {
    use super::normalized_entropy;

    #[test]
    fn entropy_is_zero_when_certain_and_one_when_uniform() {
        assert_eq!(normalized_entropy(&[1.0, 0.0, 0.0, 0.0]), 0.0);
        assert!((normalized_entropy(&[0.25; 4]) - 1.0).abs() < 1e-6);
        let torn = normalized_entropy(&[0.5, 0.5, 0.0, 0.0]);
        assert!((torn - 0.5).abs() < 1e-6, "{torn}");
    }
}
