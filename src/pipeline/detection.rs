//! Detector cameras on the inference thread: for each frame, whether the
//! detector runs (every `detect_every`-th frame, and only while motion
//! finds something or a vehicle is tracked: the gate), and the vehicles it
//! finds as the frame's regions. It owns the detector's session, as the
//! inference thread owns the classifier's.

use opencv::core::{Mat, Rect};
use opencv::prelude::*;
use std::sync::Arc;

use crate::config::{CameraConfig, Detection as DetectionConfig};
use crate::infer::classifier::InferError;
use crate::infer::detector::one_per_object;
use crate::infer::{Detection, Detector, ModelIdentity};
use crate::infer::RegionPrediction;
use crate::track::vote::{combine, Detected, DetectorCall, Vote};
use crate::wire::model::{ActiveModel, DetectorSays};

/// What a detector camera's frame gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the detector on it.
    Detect,
    /// Nothing moves and nothing is tracked: no detector.
    Gated,
    /// Between two detections (`detect_every`): the tracks coast.
    TrackedOnly,
}

/// A vehicle the detector found: its box in whole frame pixels and what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub rect: Rect,
    pub detected: Detected,
}

struct Camera {
    config: DetectionConfig,
    /// Most regions classified per frame: the most confident detections.
    max_regions: usize,
    /// Frames since the last detection; `None` forces one (first frame, gate just opened).
    since_detected: Option<u32>,
    /// Camera clock when the gate last closed, or last rechecked while closed.
    closed_since: Option<f64>,
}

pub struct DetectionStage {
    detector: Detector,
    identity: Arc<ModelIdentity>,
    /// The detector serving, for those outside the frame path (its updater).
    active: Option<ActiveModel>,
    /// By camera index; None for cameras that do not use the detector.
    cameras: Vec<Option<Camera>>,
}

impl DetectionStage {
    pub fn new(detector: Detector, cameras: &[CameraConfig]) -> DetectionStage {
        let cameras = cameras
            .iter()
            .map(|c| c.detection().map(|config| Camera { config, max_regions: c.max_regions, since_detected: None, closed_since: None }))
            .collect();
        let identity = Arc::new(detector.identity().clone());
        DetectionStage { detector, identity, active: None, cameras }
    }

    /// Keeps `active` naming the detector serving, from now and after each swap.
    pub fn with_active(mut self, active: ActiveModel) -> DetectionStage {
        if let Ok(mut shared) = active.write() {
            *shared = (*self.identity).clone();
        }
        self.active = Some(active);
        self
    }

    /// Whether `camera` finds its regions with the detector.
    pub fn detects(&self, camera: usize) -> bool {
        self.cameras.get(camera).is_some_and(Option::is_some)
    }

    pub fn identity(&self) -> &Arc<ModelIdentity> {
        &self.identity
    }

    /// A new detector, from the next frame on; the old one back.
    pub fn swap(&mut self, detector: Detector) -> Detector {
        self.identity = Arc::new(detector.identity().clone());
        if let Some(Ok(mut shared)) = self.active.as_ref().map(|a| a.write()) {
            *shared = (*self.identity).clone();
        }
        std::mem::replace(&mut self.detector, detector)
    }

    /// Whether to detect in the camera's frame at `clock_s` (its clock),
    /// given whether motion found anything in it and whether a vehicle is
    /// tracked on the camera.
    pub fn decide(&mut self, camera: usize, clock_s: f64, moving: bool, tracking: bool) -> Decision {
        match self.cameras.get_mut(camera).and_then(Option::as_mut) {
            Some(c) => decide_for(c, clock_s, moving, tracking),
            None => Decision::Detect,
        }
    }

    /// The vehicles in `frame` for `camera`: labels the detector's spec
    /// maps to road classes, one box per vehicle whatever its labels, the
    /// most confident first, at most the camera's `max_regions`, each at
    /// least 8 pixels a side.
    pub fn detect(&mut self, camera: usize, frame: &Mat) -> Result<Vec<Found>, InferError> {
        let max = self.cameras.get(camera).and_then(Option::as_ref).map_or(usize::MAX, |c| c.max_regions);
        let (width, height) = (frame.cols(), frame.rows());
        let vehicles: Vec<Detection> = self.detector.detect(frame)?.into_iter().filter(|d| !self.detector.road_classes(d).is_empty()).collect();
        let spec = self.detector.spec();
        // A place holds one vehicle: COCO's detector may box one pickup as a car and as a truck.
        let vehicles = one_per_object(vehicles, spec.nms_iou, spec.merge_contained.unwrap_or(1.0));
        Ok(vehicles
            .iter()
            .map(|d| Found {
                rect: d.rect(width, height),
                detected: Detected { label: self.detector.label(d).to_string(), score: d.score, classes: self.detector.road_classes(d).clone() },
            })
            .filter(|f| f.rect.width >= 8 && f.rect.height >= 8)
            .take(max)
            .collect())
    }

    /// What a region's message says of the detector's view of it.
    pub fn says(&self, detected: &Detected) -> DetectorSays {
        DetectorSays { label: detected.label.clone(), score: detected.score, frames: None, model: (*self.identity).clone() }
    }
}

/// A classified region of a detector camera: its class as the two stages
/// agree on it (the same rule as a tracked vehicle's, over one frame).
pub fn refine(region: &mut RegionPrediction, detected: &Detected, min_vehicle_score: f32) {
    let mut vote = Vote::default();
    vote.add(&region.road_scores, &region.class, 1.0, 0.0);
    let call = DetectorCall { label: detected.label.clone(), score: detected.score, frames: 1, classes: detected.classes.clone() };
    let agreed = combine(&vote, Some(&call), min_vehicle_score);
    region.class = agreed.class;
    region.score = agreed.score;
}

fn decide_for(c: &mut Camera, clock_s: f64, moving: bool, tracking: bool) -> Decision {
    if c.config.motion_gate && !moving && !tracking {
        // A looping file's clock starts again: so does the wait.
        let since = match c.closed_since {
            Some(since) if since <= clock_s => since,
            _ => *c.closed_since.insert(clock_s),
        };
        c.since_detected = None;
        let recheck = c.config.recheck_seconds;
        if recheck > 0 && clock_s - since >= recheck as f64 {
            c.closed_since = Some(clock_s);
            return Decision::Detect;
        }
        return Decision::Gated;
    }
    c.closed_since = None;
    match c.since_detected {
        Some(n) if n + 1 < c.config.every => {
            c.since_detected = Some(n + 1);
            Decision::TrackedOnly
        }
        _ => {
            c.since_detected = Some(0);
            Decision::Detect
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(every: u32, motion_gate: bool, recheck_seconds: u64) -> Camera {
        Camera { config: DetectionConfig { every, motion_gate, recheck_seconds }, max_regions: 8, since_detected: None, closed_since: None }
    }

    fn decide(c: &mut Camera, clock_s: f64, moving: bool, tracking: bool) -> Decision {
        decide_for(c, clock_s, moving, tracking)
    }

    #[test]
    fn every_nth_frame_is_detected_while_something_moves_and_none_while_the_road_is_empty() {
        let mut c = camera(3, true, 0);
        let moving: Vec<Decision> = (0..7).map(|i| decide(&mut c, i as f64 * 0.04, true, false)).collect();
        use Decision::*;
        assert_eq!(moving, [Detect, TrackedOnly, TrackedOnly, Detect, TrackedOnly, TrackedOnly, Detect]);
        // Nothing moves, nothing tracked: gated for ever without a recheck.
        assert!((0..500).all(|i| decide(&mut c, 1.0 + i as f64 * 0.04, false, false) == Gated));
        // The gate opens: the first frame is detected at once.
        assert_eq!(decide(&mut c, 30.0, true, false), Detect);
        // A standing vehicle is tracked: the detector keeps running though nothing moves.
        assert_eq!(decide(&mut c, 30.04, false, true), TrackedOnly);
        assert_eq!(decide(&mut c, 30.08, false, true), TrackedOnly);
        assert_eq!(decide(&mut c, 30.12, false, true), Detect);
    }

    #[test]
    fn a_closed_gate_is_rechecked_on_schedule_and_without_the_gate_every_frame_counts() {
        let mut c = camera(1, true, 10);
        let detected = (0..=1000).filter(|i| decide(&mut c, *i as f64 * 0.04, false, false) == Decision::Detect).count();
        // 40 s of empty road: a check at 10, 20, 30 and 40 s.
        assert_eq!(detected, 4);
        let mut ungated = camera(2, false, 10);
        let detected = (0..10).filter(|i| decide(&mut ungated, *i as f64 * 0.04, false, false) == Decision::Detect).count();
        assert_eq!(detected, 5);
    }
}
