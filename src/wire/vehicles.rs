//! What tracked cameras publish: one message per vehicle, and counts per
//! interval. The outbox puts `seq` in front of each when it stores it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::ModelIdentity;

/// The way a vehicle crossed a counting line: `forward` from the line's
/// right to its left, looking from its `from` toward its `to` on the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Forward,
    Backward,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crossing {
    pub line: String,
    pub direction: Direction,
    /// When the frame in which it crossed was captured (RFC 3339).
    pub at: String,
    /// That frame's position in its source.
    pub frame: u64,
}

/// `…/vehicles/<camera>`: a vehicle, once, when its track has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VehicleMessage {
    pub device: String,
    pub camera: String,
    /// Unique on this device, across restarts: what per-vehicle feedback names.
    pub track: String,
    /// The consensus road class of its frames, or `none`.
    pub class: String,
    /// The consensus class's mean probability over the frames that voted.
    pub score: f32,
    /// Per class: how many of its classified frames said that class on their own.
    pub votes: BTreeMap<String, u32>,
    pub first_seen: String,
    pub last_seen: String,
    /// Frames it was seen in.
    pub frames: u32,
    /// Of those, the frames it was classified in.
    pub classified_frames: u32,
    /// The lane holding its bottom centre in most frames, if any.
    pub lane: Option<String>,
    pub crossings: Vec<Crossing>,
    /// Only for a calibrated camera: ground distance over time in view.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub speed_kmh: Option<f32>,
    /// `[x, y, w, h]` of its best view (the crop the sampler was given).
    pub bbox: [i32; 4],
    /// The frame of that view.
    pub best_frame: u64,
    /// The model that classified it last.
    pub model: ModelIdentity,
    /// What the detector called it, on a detector camera.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detector: Option<super::model::DetectorSays>,
}

/// Per class, how many vehicles.
pub type ClassCounts = BTreeMap<String, u64>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LineCounts {
    pub forward: ClassCounts,
    pub backward: ClassCounts,
}

/// `…/counts/<camera>`: the vehicles whose message was published in
/// `[from, to)`, by class, per line and direction and per lane. Each
/// vehicle is in exactly one interval: the one its track ended in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountsMessage {
    pub device: String,
    pub camera: String,
    pub from: String,
    pub to: String,
    /// Every vehicle of the interval, by class (in a lane or not, crossing or not).
    pub vehicles: ClassCounts,
    /// Every configured line, even with no crossing.
    pub lines: BTreeMap<String, LineCounts>,
    /// Every configured lane, even with no vehicle.
    pub lanes: BTreeMap<String, ClassCounts>,
    /// Sent again at start: the interval in progress when the last run
    /// crashed (it ends when it was last kept on disk).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}
