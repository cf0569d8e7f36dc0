//! `…/samples/<id>` (QoS 1, stored): a saved crop for retraining, published
//! in parts of at most 32 KiB of JPEG (docs/schema/sample.json).

use serde::Serialize;

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
    pub captured_at: String,
    pub frame_index: u64,
    pub region: usize,
    pub model: ModelIdentity,
    #[serde(flatten)]
    pub prediction: RegionPrediction,
    /// For regions marked wrong: the prediction's `seq` and the true class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<String>,
    pub saved_at: String,
    pub width: u32,
    pub height: u32,
    pub jpeg_bytes: usize,
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
