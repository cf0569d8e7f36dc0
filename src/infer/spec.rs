//! The model spec: the data that travels with a model file and says how to
//! feed it (size, colour order, scaling) and how to read its output.

use serde::Deserialize;
use std::path::{Path, PathBuf};

use super::taxonomy::RoadTaxonomy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    pub name: String,
    pub version: String,
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
    pub fn load(path: &Path) -> Result<ModelSpec, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!("cannot read model spec {}: {e} (every model needs a spec file beside it: see models/efficientnet_lite0.toml)", path.display())
        })?;
        let file: SpecFile =
            toml::from_str(&text).map_err(|e| format!("model spec {}: {}", path.display(), e.to_string().trim_end()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let labels_path = base.join(&file.labels);
        let labels: Vec<String> = std::fs::read_to_string(&labels_path)
            .map_err(|e| format!("cannot read labels {} named by {}: {e}", labels_path.display(), path.display()))?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        let taxonomy_path = base.join(&file.taxonomy);
        let taxonomy = RoadTaxonomy::load(&taxonomy_path, labels.len())?;
        let input = file.input;
        if input.width == 0 || input.height == 0 || input.std.contains(&0.0) {
            return Err(format!("model spec {}: input width, height and std must be non-zero", path.display()));
        }
        if file.output.top_k == 0 {
            return Err(format!("model spec {}: output.top_k must be at least 1", path.display()));
        }
        let reference = match file.reference {
            Some(reference) => Some(std::sync::Arc::new(
                check_reference(reference, &taxonomy).map_err(|e| format!("model spec {}: reference: {e}", path.display()))?,
            )),
            None => None,
        };
        Ok(ModelSpec { name: file.name, version: file.version, input, output: file.output, labels, taxonomy, reference })
    }
}

/// Known classes, non-negative shares, normalised to sum to 1.
fn check_reference(mut reference: Reference, taxonomy: &RoadTaxonomy) -> Result<Reference, String> {
    for (class, share) in &reference.classes {
        if class != super::taxonomy::NO_VEHICLE && !taxonomy.class_names().any(|c| c == class) {
            let known: Vec<&str> = taxonomy.class_names().collect();
            return Err(format!("class `{class}` is not in the taxonomy ({} or {})", known.join(", "), super::taxonomy::NO_VEHICLE));
        }
        if !share.is_finite() || *share < 0.0 {
            return Err(format!("class `{class}` has share {share}: shares are fractions ≥ 0"));
        }
    }
    let total: f64 = reference.classes.values().sum();
    if total <= 0.0 {
        return Err("classes must hold at least one share above 0".into());
    }
    reference.classes.values_mut().for_each(|share| *share /= total);
    if let Some(confidence) = reference.mean_confidence {
        if !(0.0..=1.0).contains(&confidence) {
            return Err(format!("mean_confidence {confidence} is not within 0..1"));
        }
    }
    Ok(reference)
}
