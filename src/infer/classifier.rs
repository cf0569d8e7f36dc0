//! One ONNX Runtime session and the model it runs.

use opencv::core::{Mat, Rect};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

use super::preprocess;
use super::spec::{Activation, Layout, ModelSpec};
pub use crate::wire::model::{ModelIdentity, RegionPrediction, TopK};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    Runtime(String),
    #[error("model {path} does not fit its spec: {message}")]
    Mismatch { path: PathBuf, message: String },
}

#[derive(Debug, thiserror::Error)]
#[error("inference failed: {0}")]
pub struct InferError(String);

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
        let spec = ModelSpec::load(spec_path).map_err(ModelError::Spec)?;
        let sha256 = crate::util::fs::sha256_file(model_path).map_err(|e| ModelError::File { path: model_path.to_path_buf(), message: e.source.to_string() })?;
        let environment = crate::infer::runtime::environment().map_err(ModelError::Runtime)?;
        let session = build_session(environment, model_path, intra_threads).map_err(|message| ModelError::File {
            path: model_path.to_path_buf(),
            message: format!("ONNX Runtime cannot load it ({message}); is it an ONNX model file?"),
        })?;
        check_signature(&session, &spec).map_err(|message| ModelError::Mismatch { path: model_path.to_path_buf(), message })?;
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
            preprocess::region_into(frame, *rect, input, slot).map_err(|e| InferError(format!("preprocessing {rect:?}: {e}")))?;
        }
        let shape = match input.layout {
            Layout::Nchw => [rects.len(), 3, h, w],
            Layout::Nhwc => [rects.len(), h, w, 3],
        };
        let mut rows = self.run(shape)?;
        Ok(rects.iter().zip(rows.iter_mut()).map(|(rect, row)| self.describe(*rect, row)).collect())
    }

    fn run(&mut self, shape: [usize; 4]) -> Result<Vec<Vec<f32>>, InferError> {
        let tensor = TensorRef::from_array_view((shape, self.input.as_slice())).map_err(|e| InferError(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.spec.input.name.as_str() => tensor])
            .map_err(|e| InferError(e.to_string()))?;
        let output = outputs
            .get(&self.spec.output.name)
            .ok_or_else(|| InferError(format!("the model gave no output named `{}`", self.spec.output.name)))?;
        let (shape, data) = output.try_extract_tensor::<f32>().map_err(|e| InferError(e.to_string()))?;
        let classes = *shape.last().unwrap_or(&0) as usize;
        if classes != self.spec.labels.len() {
            return Err(InferError(format!("output has {classes} classes, labels file has {}", self.spec.labels.len())));
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
        RegionPrediction { bbox: [rect.x, rect.y, rect.width, rect.height], class: class.to_string(), score, top_k, margin, entropy }
    }
}

/// Built in its own function: ort's builder errors are not `Send`, so they
/// are turned into strings here.
fn build_session(environment: &ort::environment::Environment, path: &Path, intra_threads: usize) -> Result<Session, String> {
    let build = || -> ort::Result<Session> {
        Ok(Session::builder(environment)?
            .with_optimization_level(GraphOptimizationLevel::Level3)?
            .with_intra_threads(intra_threads)?
            // Spinning threads steal the decoder's core on small devices.
            .with_intra_op_spinning(false)?
            .commit_from_file(path)?)
    };
    build().map_err(|e| e.to_string())
}

/// The model must take the spec's input and give the spec's output.
fn check_signature(session: &Session, spec: &ModelSpec) -> Result<(), String> {
    let input = session
        .inputs()
        .iter()
        .find(|i| i.name() == spec.input.name)
        .ok_or_else(|| format!("it has no input named `{}` (its inputs: {})", spec.input.name, names(session.inputs())))?;
    let (h, w) = (spec.input.height as i64, spec.input.width as i64);
    let expected = match spec.input.layout {
        Layout::Nchw => [-1, 3, h, w],
        Layout::Nhwc => [-1, h, w, 3],
    };
    let shape: Vec<i64> = input.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default();
    let fits = shape.len() == 4 && shape.iter().zip(expected).skip(1).all(|(have, want)| *have == want || *have == -1);
    if !fits {
        return Err(format!("input `{}` has shape {shape:?}, the spec needs [N, ...] = {expected:?}", spec.input.name));
    }
    let output = session
        .outputs()
        .iter()
        .find(|o| o.name() == spec.output.name)
        .ok_or_else(|| format!("it has no output named `{}` (its outputs: {})", spec.output.name, names(session.outputs())))?;
    let classes = output.dtype().tensor_shape().and_then(|s| s.last().copied()).unwrap_or(-1);
    if classes != -1 && classes as usize != spec.labels.len() {
        return Err(format!("output `{}` has {classes} classes but the labels file has {}", spec.output.name, spec.labels.len()));
    }
    Ok(())
}

fn names(outlets: &[ort::value::Outlet]) -> String {
    outlets.iter().map(|o| format!("`{}`", o.name())).collect::<Vec<_>>().join(", ")
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
