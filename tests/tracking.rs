//! The tracker on real video: the four-lane clip decoded by OpenCV, its
//! regions found by the agent's motion finder, tracked by the agent's
//! tracker, scored against the clip's truth with CLEAR-MOT figures (MOTA,
//! ID switches, fragments), which the test prints. Each truth vehicle must
//! be one track from its confirmation to its exit: no ID switch, no second
//! track for it, including the vehicle that stops in view and the pair
//! driving close behind each other.

mod support;

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio;
use serde_json::Value;
use std::collections::BTreeMap;
use support::*;

use cctv_agent::config::{MotionConfig, RegionsConfig};
use cctv_agent::pipeline::regions::RegionFinder;
use cctv_agent::track::geometry::BBox;
use cctv_agent::track::metrics::ClearMot;
use cctv_agent::track::tracker::{Tracker, TrackerConfig};

fn to_box(b: [i64; 4]) -> BBox {
    BBox::new(b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32)
}

#[test]
fn each_vehicle_of_the_four_lane_clip_is_one_track_without_id_switches() {
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(repo("media/highway.truth.json")).unwrap()).unwrap();
    let fps = truth["fps"].as_f64().unwrap();
    // Per frame: the truth boxes of the vehicles in view (clipped to the frame).
    // A vehicle entering is a tentative track for its first frames: CLEAR-MOT counts those as misses.
    let mut per_frame: BTreeMap<u64, Vec<(u64, BBox)>> = BTreeMap::new();
    for v in truth["vehicles"].as_array().unwrap() {
        for f in v["frames"].as_array().unwrap() {
            per_frame.entry(f["frame"].as_u64().unwrap()).or_default().push((v["id"].as_u64().unwrap(), to_box(bbox(&f["bbox"]))));
        }
    }

    let clip = repo("media/highway.mp4");
    let mut capture = videoio::VideoCapture::from_file(clip.to_str().unwrap(), videoio::CAP_ANY).unwrap();
    let mut finder = RegionFinder::new(&RegionsConfig::Motion, &MotionConfig::default()).unwrap();
    let mut tracker = Tracker::new(TrackerConfig::default());
    let mut mot = ClearMot::new();
    let mut frame = Mat::default();
    let mut index = 0u64;
    while capture.read(&mut frame).unwrap() && !frame.empty() {
        let regions: Vec<BBox> = finder.find(&frame, 16).unwrap().iter().map(|r| BBox::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32)).collect();
        let step = tracker.update(index as f64 / fps, &regions);
        let hypotheses: Vec<(u64, BBox)> = step.assigned.iter().flatten().filter(|a| a.confirmed).map(|a| (a.key, a.filtered)).collect();
        mot.add_frame(per_frame.get(&index).map_or(&[][..], Vec::as_slice), &hypotheses);
        index += 1;
    }
    assert_eq!(index, truth["frames"].as_u64().unwrap(), "every frame decoded");
    let figures = mot.figures();
    println!("four-lane clip, motion regions, default tracker: {figures}");
    println!("tracks per vehicle: {:?}", mot.keys_per_truth());
    assert_eq!(figures.id_switches, 0, "{figures}");
    for (vehicle, keys) in mot.keys_per_truth() {
        assert_eq!(keys.len(), 1, "vehicle {vehicle} was {} tracks: {keys:?}", keys.len());
    }
    assert_eq!(mot.keys_per_truth().len(), truth["vehicles"].as_array().unwrap().len(), "every vehicle tracked");
    // Misses are the frames before a track is confirmed; false positives should be rare.
    assert!(figures.mota().unwrap() > 0.9, "{figures}");
}
