//! The bundled four-lane clip as the tests and the benches use it: its
//! truth, the camera's scene (lanes, line, calibration) built from that
//! truth, and its empty road held still. One file for both: the tests'
//! `support` declares it, `benches/support` includes it by path.

use serde_json::Value;
use std::path::{Path, PathBuf};

fn highway_clip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("media/highway.mp4")
}

/// `media/highway.truth.json`: four lanes both ways, a close pair, a vehicle
/// that stops in view, vehicles side by side; its lanes, line and calibration.
pub fn highway_truth() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("media/highway.truth.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The camera's tracking, lanes, line and calibration from the truth, as
/// TOML tables under `table` (`"cameras."` inside an agent's config, `""`
/// for a camera's own); `tracking` is extra lines of `[tracking]`.
pub fn highway_scene(truth: &Value, table: &str, tracking: &str) -> String {
    let mut scene = format!("[{table}tracking]\n{tracking}");
    for lane in truth["lanes"].as_array().unwrap() {
        scene += &format!("[[{table}lanes]]\nid = {}\npolygon = {}\n", lane["id"], lane["polygon"]);
    }
    for line in truth["lines"].as_array().unwrap() {
        scene += &format!("[[{table}lines]]\nid = {}\nfrom = {}\nto = {}\n", line["id"], line["from"], line["to"]);
    }
    let c = &truth["calibration"];
    scene += &format!("[{table}calibration]\nimage = {}\nground = {}\n", c["image"], c["ground"]);
    scene
}

/// `seconds` of the highway clip's empty road (its first frame, still), as
/// an MJPEG file in `dir`.
pub fn empty_road(dir: &Path, seconds: u32) -> PathBuf {
    use opencv::prelude::*;
    use opencv::videoio;
    let mut capture = videoio::VideoCapture::from_file(highway_clip().to_str().unwrap(), videoio::CAP_ANY).unwrap();
    let mut frame = opencv::core::Mat::default();
    assert!(capture.read(&mut frame).unwrap());
    let path = dir.join("empty.avi");
    let fourcc = videoio::VideoWriter::fourcc('M', 'J', 'P', 'G').unwrap();
    let mut writer = videoio::VideoWriter::new(path.to_str().unwrap(), fourcc, 25.0, frame.size().unwrap(), true).unwrap();
    for _ in 0..seconds * 25 {
        writer.write(&frame).unwrap();
    }
    writer.release().unwrap();
    path
}
