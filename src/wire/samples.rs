//! `…/samples/<id>` (QoS 1, stored): a saved crop for retraining, published
//! in parts of at most 32 KiB of JPEG (docs/schema/sample.json).

use serde::Serialize;
use std::collections::BTreeMap;

use super::{ModelIdentity, RegionPrediction};

/// Why a region was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    LowConfidence,
    Random,
    FeedbackWrong,
}

/// The `<id>.json` beside each `<id>.jpg`, and part 0 of its MQTT message.
#[derive(Debug, Clone, Serialize)]
pub struct SampleMeta {
    pub id: String,
    pub reason: Reason,
    pub device: String,
    pub camera: String,
    /// A region's frame; for a vehicle, when it was last seen (its track's end).
    pub captured_at: String,
    /// A region's frame; for a vehicle, the frame of its best view.
    pub frame_index: u64,
    /// The region's index in its frame's prediction (frame samples only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<usize>,
    /// The vehicle this crop is the best view of (tracked cameras only):
    /// the `track` of its `…/vehicles/<camera>` message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
    pub model: ModelIdentity,
    #[serde(flatten)]
    pub prediction: Predicted,
    /// For regions marked wrong: the prediction's `seq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// For regions and vehicles marked wrong: the true class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<String>,
    pub saved_at: String,
    pub width: u32,
    pub height: u32,
    pub jpeg_bytes: usize,
}

/// What the model said of the crop, flattened into the metadata.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Predicted {
    /// A frame's region, as its prediction gave it.
    Region(RegionPrediction),
    /// A tracked vehicle: the consensus of its frames, as its vehicle message gave it.
    Vehicle(VehicleView),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VehicleView {
    /// `[x, y, w, h]` of its best view in that frame.
    pub bbox: [i32; 4],
    pub class: String,
    pub score: f32,
    /// Per class: how many of its classified frames said that class.
    pub votes: BTreeMap<String, u32>,
}

/// One chunk on `…/samples/<id>`.
#[derive(Serialize)]
pub struct SampleChunk<'a> {
    pub sample: &'a str,
    pub part: usize,
    pub parts: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<&'a SampleMeta>,
    pub jpeg_base64: String,
}
