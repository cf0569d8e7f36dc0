//! The model spec: the data that travels with a model file and says how to
//! feed it (size, colour order, scaling) and how to read its output.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::taxonomy::{RoadTaxonomy, TaxonomyError, NO_VEHICLE};

/// Why a model spec (with its labels and taxonomy) cannot be used; each
/// names the spec file, or the file it names.
pub const MAX_TOP_K: usize = 20;
pub const MAX_INPUT_SIDE: u32 = 4096;
/// JSON's largest safe integer, 2^53 − 1: the bound on release versions too.
pub const MAX_VERSION: u64 = (1 << 53) - 1;
/// Largest spec, labels or taxonomy file read.
const MAX_TEXT_BYTES: u64 = 16 << 20;

/// A spec, labels or taxonomy file: regular, bounded, UTF-8.
pub(crate) fn read_text(path: &Path) -> std::io::Result<String> {
    let bytes = crate::util::fs::read_regular_file(path, MAX_TEXT_BYTES)?;
    String::from_utf8(bytes).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text"))
}

/// The labels file a spec at `spec` names (relative to it): one label per
/// line in output order, blank lines left out.
pub(crate) fn read_labels(spec: &Path, labels: &Path) -> Result<Vec<String>, SpecError> {
    let labels_path = spec.parent().unwrap_or(Path::new(".")).join(labels);
    Ok(read_text(&labels_path)
        .map_err(|source| SpecError::Labels { labels: labels_path.clone(), spec: spec.to_path_buf(), source })?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read model spec {}: {source} (every model needs a spec file beside it, same name, .toml: see models/efficientnet_lite0.toml for a classifier, models/yolov3_tiny.toml for a detector)", path.display())]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("model spec {}: {}", path.display(), source.to_string().trim_end())]
    Toml { path: PathBuf, #[source] source: toml::de::Error },
    #[error("cannot read labels {} named by {}: {source}", labels.display(), spec.display())]
    Labels { labels: PathBuf, spec: PathBuf, #[source] source: std::io::Error },
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    #[error("model spec {}: input width and height must be 1 to {MAX_INPUT_SIDE}, mean and std finite, std non-zero", path.display())]
    BadInput { path: PathBuf },
    /// Each class of the top k goes into every region of every prediction message.
    #[error("model spec {}: output.top_k must be 1 to {MAX_TOP_K}", path.display())]
    BadTopK { path: PathBuf },
    /// Releases compare versions as integers within JSON's safe range.
    #[error("model spec {}: version \"{version}\" must be an integer from 1 to {MAX_VERSION}", path.display())]
    BadVersion { path: PathBuf, version: String },
    #[error("model spec {}: reference: {source}", path.display())]
    Reference { path: PathBuf, #[source] source: ReferenceError },
    #[error("model spec {}: {source}", path.display())]
    Detector { path: PathBuf, #[source] source: super::detector_spec::DetectorSpecError },
    /// A detector's spec where a classifier's is needed.
    #[error("model spec {}: is a detector's (kind = \"detector\"): name it under [detector], not [model]", path.display())]
    NotAClassifier { path: PathBuf },
}

/// What a model does (a spec without `kind` is a classifier's): part of the
/// contract, since release records and events carry it too.
pub use crate::wire::model::ModelKind;

impl ModelKind {
    /// The `kind` of a spec's text, before the rest is read by its kind's rules.
    pub fn of(text: &str) -> Result<ModelKind, toml::de::Error> {
        #[derive(Deserialize)]
        struct KindOnly {
            #[serde(default)]
            kind: ModelKind,
        }
        Ok(toml::from_str::<KindOnly>(text)?.kind)
    }
}

/// What is wrong with a spec's `[reference]` (the trainer's class mix).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceError {
    #[error("class `{class}` is not in the taxonomy ({} or {NO_VEHICLE})", known.join(", "))]
    UnknownClass { class: String, known: Vec<String> },
    #[error("class `{class}` has share {share}: shares are fractions ≥ 0")]
    BadShare { class: String, share: f64 },
    #[error("classes must hold at least one share above 0")]
    NoShare,
    #[error("mean_confidence {0} is not within 0..1")]
    MeanConfidence(f64),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    pub name: String,
    pub version: String,
    /// `classifier` (the default) for this spec.
    #[serde(default)]
    pub kind: ModelKind,
    /// Labels file, one per line in output order; relative to the spec file.
    pub labels: PathBuf,
    /// Road taxonomy file; relative to the spec file.
    pub taxonomy: PathBuf,
    pub input: InputSpec,
    pub output: OutputSpec,
    /// What the trainer saw: the baseline for label-free drift checks.
    /// Without it the agent learns a baseline on each camera.
    #[serde(default)]
    pub reference: Option<Reference>,
}

/// The class mix and confidence the model showed on the trainer's data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Road class → share of regions (normalised when loaded; `none` included).
    pub classes: std::collections::BTreeMap<String, f64>,
    /// Mean top-1 model score.
    pub mean_confidence: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub color: ColorOrder,
    pub resize: Resize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    Bilinear,
    Area,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub activation: Activation,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_top_k() -> usize {
    5
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Softmax,
    None,
}

/// A spec file with its labels and taxonomy loaded.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub version: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub labels: Vec<String>,
    pub taxonomy: RoadTaxonomy,
    pub reference: Option<std::sync::Arc<Reference>>,
}

impl ModelSpec {
    pub fn load(path: &Path) -> Result<ModelSpec, SpecError> {
        let text = read_text(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
        if ModelKind::of(&text).is_ok_and(|kind| kind != ModelKind::Classifier) {
            return Err(SpecError::NotAClassifier { path: path.to_path_buf() });
        }
        let file: SpecFile = toml::from_str(&text).map_err(|source| SpecError::Toml { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let labels = read_labels(path, &file.labels)?;
        let taxonomy_path = base.join(&file.taxonomy);
        let taxonomy = RoadTaxonomy::load(&taxonomy_path, labels.len())?;
        let input = file.input;
        let side = 1..=MAX_INPUT_SIDE;
        if !side.contains(&input.width) || !side.contains(&input.height) || input.std.contains(&0.0) || input.std.iter().chain(&input.mean).any(|v| !v.is_finite()) {
            return Err(SpecError::BadInput { path: path.to_path_buf() });
        }
        if !(1..=MAX_TOP_K).contains(&file.output.top_k) {
            return Err(SpecError::BadTopK { path: path.to_path_buf() });
        }
        if !file.version.parse::<u64>().is_ok_and(|v| (1..=MAX_VERSION).contains(&v)) {
            return Err(SpecError::BadVersion { path: path.to_path_buf(), version: file.version.chars().take(40).collect() });
        }
        let reference = match file.reference {
            Some(reference) => Some(std::sync::Arc::new(
                check_reference(reference, &taxonomy).map_err(|source| SpecError::Reference { path: path.to_path_buf(), source })?,
            )),
            None => None,
        };
        Ok(ModelSpec { name: file.name, version: file.version, input, output: file.output, labels, taxonomy, reference })
    }
}

/// Known classes, non-negative shares, normalised to sum to 1.
fn check_reference(mut reference: Reference, taxonomy: &RoadTaxonomy) -> Result<Reference, ReferenceError> {
    for (class, share) in &reference.classes {
        if class != NO_VEHICLE && !taxonomy.class_names().any(|c| c == class) {
            let known = taxonomy.class_names().map(str::to_string).collect();
            return Err(ReferenceError::UnknownClass { class: class.clone(), known });
        }
        if !share.is_finite() || *share < 0.0 {
            return Err(ReferenceError::BadShare { class: class.clone(), share: *share });
        }
    }
    let total: f64 = reference.classes.values().sum();
    if total <= 0.0 {
        return Err(ReferenceError::NoShare);
    }
    reference.classes.values_mut().for_each(|share| *share /= total);
    if let Some(confidence) = reference.mean_confidence {
        if !(0.0..=1.0).contains(&confidence) {
            return Err(ReferenceError::MeanConfidence(confidence));
        }
    }
    Ok(reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled spec with `extra` appended, beside copies of its labels and taxonomy.
    fn spec_with(dir: &Path, extra: &str) -> PathBuf {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        for file in ["imagenet_labels.txt", "road_taxonomy.toml"] {
            std::fs::copy(models.join(file), dir.join(file)).unwrap();
        }
        let text = std::fs::read_to_string(models.join("efficientnet_lite0.toml")).unwrap();
        let path = dir.join("m.toml");
        std::fs::write(&path, format!("{text}\n{extra}")).unwrap();
        path
    }

    /// The bundled spec with one line replaced.
    fn spec_replacing(dir: &Path, from: &str, to: &str) -> PathBuf {
        let path = spec_with(dir, "");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(&path, text.replace(from, to)).unwrap();
        path
    }

    #[test]
    fn a_spec_that_would_make_oversized_predictions_or_block_releases_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // 1000 classes per region × 8 regions made every prediction 540 KB, over the message cap.
        let top_k = ModelSpec::load(&spec_replacing(dir.path(), "top_k = 5", "top_k = 1000")).unwrap_err();
        assert!(matches!(top_k, SpecError::BadTopK { .. }), "{top_k:?}");
        // 2^64 − 1 as the configured model's version refused every release as "not newer".
        let version = ModelSpec::load(&spec_replacing(dir.path(), "version = \"1\"", "version = \"18446744073709551615\"")).unwrap_err();
        assert!(matches!(version, SpecError::BadVersion { .. }), "{version:?}");
        let labels = ModelSpec::load(&spec_replacing(dir.path(), "labels = \"imagenet_labels.txt\"", "labels = \"/dev/zero\"")).unwrap_err();
        assert!(matches!(labels, SpecError::Labels { .. }) && labels.to_string().contains("not a regular file"), "{labels}");
    }

    #[test]
    fn the_bundled_spec_loads_and_a_bad_reference_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec::load(&spec_with(dir.path(), "")).unwrap();
        assert_eq!((spec.labels.len(), spec.reference.is_none()), (1000, true));
        let error = ModelSpec::load(&spec_with(dir.path(), "[reference]\nclasses = { car = 0.5, tank = 0.5 }")).unwrap_err();
        assert!(
            matches!(&error, SpecError::Reference { source: ReferenceError::UnknownClass { class, .. }, .. } if class == "tank"),
            "{error:?}"
        );
        assert!(error.to_string().contains("class `tank` is not in the taxonomy ("), "{error}");
        assert!(error.to_string().ends_with(" or none)"), "{error}");
    }

    #[test]
    fn a_missing_spec_or_labels_file_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let error = ModelSpec::load(&dir.path().join("absent.toml")).unwrap_err();
        assert!(matches!(&error, SpecError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound), "{error:?}");
        assert!(error.to_string().contains("every model needs a spec file beside it"), "{error}");
        let path = spec_with(dir.path(), "");
        std::fs::remove_file(dir.path().join("imagenet_labels.txt")).unwrap();
        assert!(matches!(ModelSpec::load(&path), Err(SpecError::Labels { .. })));
    }
}
