//! What every prediction carries: the model that made it and its regions.

use serde::{Deserialize, Serialize};

/// Names the exact model behind every prediction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopK {
    pub index: usize,
    pub label: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionPrediction {
    /// `[x, y, w, h]` in frame pixels.
    pub bbox: [i32; 4],
    /// Road class (see `models/road_taxonomy.toml`), or `none`.
    pub class: String,
    pub score: f32,
    pub top_k: Vec<TopK>,
    /// Model score of the first label minus the second's: small = torn between two.
    pub margin: f32,
    /// Entropy of the model's label distribution over ln(labels): 0 = certain, 1 = uniform.
    pub entropy: f32,
    /// Each road class's probability (`none` left out), for a tracked vehicle's vote; not published.
    #[serde(skip)]
    pub road_scores: Vec<(String, f32)>,
    /// The tracked vehicle this region is, on a tracked camera.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    /// What the detector said of this region, on a detector camera.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detector: Option<DetectorSays>,
}

/// The detector's label for a region or a vehicle, and its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorSays {
    /// The detector's own label (`truck`), not a road class.
    pub label: String,
    /// Objectness × label probability (a vehicle's: its mean over the frames it had this label).
    pub score: f32,
    /// A vehicle's: frames the detector found it in.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub frames: Option<u32>,
    pub model: ModelIdentity,
}

/// What a model does; a spec (or a release record) without `kind` is a
/// classifier's. Part of the contract: release records and model events
/// (`model_kind`) carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    #[default]
    Classifier,
    Detector,
}

impl ModelKind {
    pub fn is_classifier(&self) -> bool {
        *self == ModelKind::Classifier
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Classifier => "classifier",
            ModelKind::Detector => "detector",
        })
    }
}

/// The model serving now; the inference thread replaces it when it swaps.
pub type ActiveModel = std::sync::Arc<std::sync::RwLock<ModelIdentity>>;
