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
}

/// The model serving now; the inference thread replaces it when it swaps.
pub type ActiveModel = std::sync::Arc<std::sync::RwLock<ModelIdentity>>;
