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
        Ok(ModelSpec { name: file.name, version: file.version, input, output: file.output, labels, taxonomy })
    }
}
