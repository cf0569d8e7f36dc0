//! Vehicles, not frames, end to end with a real broker, real ONNX Runtime,
//! the real model and real video through OpenCV: each vehicle of a clip
//! with known truth is reported once, in its lane, crossing the line the
//! right way within a few frames of the truth, classified as its photograph
//! is, counted exactly once; a restart reuses no track id and counts no
//! interval twice.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_cctv-agent");


/// Metres per pixel of that calibration.
const METRES_PER_PIXEL: f64 = 7.0 / 330.0;

fn tracked_camera(clip: &Path, replay: &str, scene: &str, extra: &str) -> String {
    format!("[counts]\ninterval_seconds = 2\n[[cameras]]\nid = \"road\"\nurl = \"{}\"\nregions = \"motion\"\nreplay = \"{replay}\"\n{extra}\n{scene}", clip.display())
}

/// The truth of one vehicle of the road clip, as the agent should report it.
#[derive(Debug)]
struct Expected {
    class: String,
    lane: &'static str,
    direction: &'static str,
    /// The frame at which its box's bottom centre passes x = 320.
    crossing_frame: u64,
    speed_kmh: f64,
    /// The photograph the clip shows it from.
    source: String,
}

fn road_vehicles() -> Vec<Expected> {
    let truth = road_truth();
    let fps = truth["fps"].as_f64().unwrap();
    truth["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["class"] != "none")
        .map(|o| {
            let eastbound = o["lane"] == 0;
            let frames = o["frames"].as_array().unwrap();
            let centre = |f: &Value| {
                let b = bbox(&f["bbox"]);
                b[0] as f64 + b[2] as f64 / 2.0
            };
            let crossing = frames.iter().find(|f| if eastbound { centre(f) > 320.0 } else { centre(f) < 320.0 }).unwrap();
            // Fully visible frames move at the clip's constant speed.
            let full: Vec<&Value> = frames.iter().filter(|f| f["fully_visible"] == true).collect();
            let (first, last) = (full.first().unwrap(), full.last().unwrap());
            let pixels = (bbox(&last["bbox"])[0] - bbox(&first["bbox"])[0]).abs() as f64;
            let seconds = (last["frame"].as_u64().unwrap() - first["frame"].as_u64().unwrap()) as f64 / fps;
            Expected {
                class: o["class"].as_str().unwrap().to_string(),
                lane: if eastbound { "east" } else { "west" },
                direction: if eastbound { "forward" } else { "backward" },
                crossing_frame: crossing["frame"].as_u64().unwrap(),
                speed_kmh: pixels * METRES_PER_PIXEL / seconds * 3.6,
                source: o["source"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

/// What the bundled model says of an image on its own (`cctv-agent classify`).
fn class_of_image(path: &Path) -> String {
    let out = Command::new(BIN).arg("classify").arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    line["class"].as_str().unwrap().to_string()
}

/// Payloads on `…/<kind>/…`, each once: QoS 1 may deliver a message twice
/// (what was in flight when the agent was killed is sent again), so, as the
/// contract says, receivers deduplicate on `seq`.
fn payloads(sub: &Subscriber, kind: &str) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    sub.all().into_iter().filter(|m| m.topic.contains(&format!("/{kind}/"))).map(|m| m.payload).filter(|p| seen.insert(p["seq"].as_u64())).collect()
}

/// Every count of every interval, summed: (what, class) → vehicles.
fn summed_counts(counts: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut sums = BTreeMap::new();
    let mut add = |what: String, m: &Value| {
        for (class, n) in m.as_object().unwrap() {
            *sums.entry((what.clone(), class.clone())).or_default() += n.as_u64().unwrap();
        }
    };
    for c in counts {
        add("all".into(), &c["vehicles"]);
        for (lane, m) in c["lanes"].as_object().unwrap() {
            add(format!("lane {lane}"), m);
        }
        for (line, m) in c["lines"].as_object().unwrap() {
            add(format!("line {line} forward"), &m["forward"]);
            add(format!("line {line} backward"), &m["backward"]);
        }
    }
    sums
}

/// The same tallies from the vehicle messages.
fn tallied_vehicles(vehicles: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut sums = BTreeMap::new();
    for v in vehicles {
        let class = v["class"].as_str().unwrap().to_string();
        *sums.entry(("all".to_string(), class.clone())).or_default() += 1;
        if let Some(lane) = v["lane"].as_str() {
            *sums.entry((format!("lane {lane}"), class.clone())).or_default() += 1;
        }
        for c in v["crossings"].as_array().unwrap() {
            *sums.entry((format!("line {} {}", c["line"].as_str().unwrap(), c["direction"].as_str().unwrap()), class.clone())).or_default() += 1;
        }
    }
    sums
}

#[test]
fn each_vehicle_is_reported_once_in_its_lane_and_direction_classified_as_its_photo_and_counted_once() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    let clip = road_clip();
    let mut agent = Agent::start(&agent_config(&broker, &tracked_camera(&clip, "asap", ROAD_SCENE, "")));
    let expected = road_vehicles();
    // The clip ends; its last vehicle is reported once the camera has been silent a moment.
    sub.wait_until(Duration::from_secs(90), "a vehicle message per vehicle", |all| {
        all.iter().filter(|m| m.topic.contains("/vehicles/")).count() >= expected.len()
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.terminate().success(), "{}", agent.log());
    std::thread::sleep(Duration::from_millis(500));

    let vehicles = payloads(&sub, "vehicles");
    assert_eq!(payloads(&sub, "predictions").len(), 0, "a tracked camera publishes vehicles, not frames");
    assert_eq!(vehicles.len(), expected.len(), "one message per vehicle (the horses are no vehicle): {vehicles:#?}");
    let tracks: BTreeSet<&str> = vehicles.iter().map(|v| v["track"].as_str().unwrap()).collect();
    assert_eq!(tracks.len(), vehicles.len(), "track ids are unique");
    for v in &vehicles {
        assert_matches_schema(v, "vehicle.json");
        let crossings = v["crossings"].as_array().unwrap();
        assert_eq!(crossings.len(), 1, "{v}");
        let frame = crossings[0]["frame"].as_u64().unwrap();
        // The vehicle is the truth's vehicle that crossed closest to that frame.
        let truth = expected.iter().min_by_key(|e| e.crossing_frame.abs_diff(frame)).unwrap();
        println!(
            "track {} {} lane {} {} crossed at frame {frame} (truth {}), {} km/h (truth {:.1}), {} frames, votes {}",
            v["track"], v["class"], v["lane"], crossings[0]["direction"], truth.crossing_frame, v["speed_kmh"], truth.speed_kmh, v["frames"], v["votes"]
        );
        assert!(frame.abs_diff(truth.crossing_frame) <= 3, "crossed at {frame}, truth {}: {v}", truth.crossing_frame);
        assert_eq!(v["lane"], truth.lane, "{v}");
        assert_eq!(crossings[0]["direction"], truth.direction, "{v}");
        assert_eq!(v["class"], truth.class.as_str(), "{v}");
        let speed = v["speed_kmh"].as_f64().expect("a calibrated camera gives speeds");
        assert!((speed - truth.speed_kmh).abs() <= 0.1 * truth.speed_kmh, "{speed} km/h, truth {:.1}", truth.speed_kmh);
        // One frame of a borderline vehicle (the pickup) may say van; its frames together say what its photograph does.
        let own = class_of_image(&repo("media/sources").join(&truth.source));
        assert_eq!(v["class"], own.as_str(), "the consensus is what the classifier says of the vehicle's photograph alone: {v}");
    }
    let matched: BTreeSet<u64> = vehicles
        .iter()
        .map(|v| {
            let frame = v["crossings"][0]["frame"].as_u64().unwrap();
            expected.iter().min_by_key(|e| e.crossing_frame.abs_diff(frame)).unwrap().crossing_frame
        })
        .collect();
    assert_eq!(matched.len(), expected.len(), "each truth vehicle reported, none twice");

    let counts = payloads(&sub, "counts");
    for c in &counts {
        assert_matches_schema(c, "counts.json");
    }
    assert_eq!(summed_counts(&counts), tallied_vehicles(&vehicles), "the counts are the vehicle messages, each once");
    assert_intervals_apart(&counts);
    sub.assert_seq_gapless();
}

/// No two counts intervals overlap, and each ends after it starts.
fn assert_intervals_apart(counts: &[Value]) {
    let mut spans: Vec<(String, String)> = counts.iter().map(|c| (c["from"].as_str().unwrap().to_string(), c["to"].as_str().unwrap().to_string())).collect();
    spans.sort();
    for (from, to) in &spans {
        assert!(from <= to, "{from} .. {to}");
    }
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "intervals overlap: {:?} and {:?}", pair[0], pair[1]);
    }
}

#[test]
fn on_a_four_lane_road_each_vehicle_is_one_message_through_stops_close_pairs_and_passing_traffic() {
    let truth = highway_truth();
    let clip = repo("media/highway.mp4");
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    let mut agent = Agent::start(&agent_config(&broker, &tracked_camera(&clip, "asap", &highway_scene(&truth, "cameras.", ""), "max_regions = 16")));
    let expected = truth["vehicles"].as_array().unwrap();
    sub.wait_until(Duration::from_secs(120), "a vehicle message per vehicle", |all| all.iter().filter(|m| m.topic.contains("/vehicles/")).count() >= expected.len());
    // Anything extra (a vehicle reported twice) would come within the silence that ends the clip's tracks.
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.terminate().success(), "{}", agent.log());
    std::thread::sleep(Duration::from_millis(500));

    let fps = truth["fps"].as_f64().unwrap();
    let metres_per_pixel = 1.0 / 32.0;
    let vehicles = payloads(&sub, "vehicles");
    let mut matched = BTreeMap::new();
    for v in &vehicles {
        assert_matches_schema(v, "vehicle.json");
        let crossing = &v["crossings"].as_array().unwrap().first().unwrap_or_else(|| panic!("crossed no line: {v}"))["frame"];
        let frame = crossing.as_u64().unwrap();
        // Its truth: the vehicle of its lane that crossed nearest that frame.
        let t = expected
            .iter()
            .filter(|t| t["lane"] == v["lane"])
            .min_by_key(|t| t["crossings"][0]["frame"].as_u64().unwrap().abs_diff(frame))
            .unwrap_or_else(|| panic!("no vehicle drove in lane {}: {v}", v["lane"]));
        let id = t["id"].as_u64().unwrap();
        let full: Vec<[i64; 4]> = t["frames"].as_array().unwrap().iter().filter(|f| f["fully_visible"] == true).map(|f| bbox(&f["bbox"])).collect();
        let full_frames: Vec<u64> = t["frames"].as_array().unwrap().iter().filter(|f| f["fully_visible"] == true).map(|f| f["frame"].as_u64().unwrap()).collect();
        let (a, b) = (full[0], full[full.len() - 1]);
        let metres = (((b[0] + b[2] / 2) - (a[0] + a[2] / 2)) as f64).hypot(((b[1] + b[3]) - (a[1] + a[3])) as f64) * metres_per_pixel;
        let truth_speed = metres / ((full_frames[full_frames.len() - 1] - full_frames[0]) as f64 / fps) * 3.6;
        let truth_frame = t["crossings"][0]["frame"].as_u64().unwrap();
        println!(
            "vehicle {id} ({} {} {}): track {} {} crossed {} at {frame} (truth {truth_frame}), {} km/h (truth over its uncut views {truth_speed:.1}), {} frames, votes {}",
            t["class"], t["lane"], t["direction"], v["track"], v["class"], v["crossings"][0]["direction"], v["speed_kmh"], v["frames"], v["votes"]
        );
        assert!(matched.insert(id, v["track"].clone()).is_none(), "vehicle {id} reported twice: {vehicles:#?}");
        assert!(frame.abs_diff(truth_frame) <= 3, "vehicle {id} crossed at {frame}, truth {truth_frame}");
        assert_eq!(v["crossings"][0]["direction"], t["direction"], "vehicle {id}");
        assert_eq!(v["class"], t["class"], "vehicle {id}");
        let speed = v["speed_kmh"].as_f64().unwrap();
        assert!((speed - truth_speed).abs() <= 0.1 * truth_speed, "vehicle {id}: {speed} km/h, truth {truth_speed:.1}");
    }
    assert_eq!(matched.len(), expected.len(), "every vehicle reported: {matched:?}");
    assert_eq!(vehicles.len(), expected.len(), "and nothing else");
    for source in expected.iter().map(|t| t["source"].as_str().unwrap()).collect::<BTreeSet<_>>() {
        let class = expected.iter().find(|t| t["source"] == source).unwrap()["class"].as_str().unwrap().to_string();
        assert_eq!(class_of_image(&repo("media/sources").join(source)), class, "the truth's class is the photograph's");
    }
    let counts = payloads(&sub, "counts");
    assert_eq!(summed_counts(&counts), tallied_vehicles(&vehicles), "the counts are the vehicle messages, each once");
    assert_intervals_apart(&counts);
}

#[test]
fn a_restart_mid_clip_reuses_no_track_id_and_counts_no_interval_twice() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    let clip = road_clip();
    // In real time, so that the agent is stopped with vehicles still to come.
    let config = agent_config(&broker, &tracked_camera(&clip, "realtime", ROAD_SCENE, "loop = true"));
    let agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "a first vehicle", |all| all.iter().any(|m| m.topic.contains("/vehicles/")));
    let dir = agent.into_dir();
    let before = payloads(&sub, "vehicles").len();
    let mut agent = Agent::start_in(dir, &config);
    sub.wait_until(Duration::from_secs(60), "vehicles after the restart", |all| all.iter().filter(|m| m.topic.contains("/vehicles/")).count() >= before + 3);
    assert!(agent.terminate().success(), "{}", agent.log());
    std::thread::sleep(Duration::from_millis(500));

    let vehicles = payloads(&sub, "vehicles");
    let tracks: Vec<&str> = vehicles.iter().map(|v| v["track"].as_str().unwrap()).collect();
    let unique: BTreeSet<&str> = tracks.iter().copied().collect();
    assert_eq!(unique.len(), tracks.len(), "a track id was reused across the restart: {tracks:?}");
    let counts = payloads(&sub, "counts");
    assert_intervals_apart(&counts);
    assert_eq!(summed_counts(&counts), tallied_vehicles(&vehicles), "each vehicle counted once, over both runs");
}

#[test]
fn a_crash_even_twice_in_a_row_loses_no_counts_the_interval_in_progress_is_sent_again_marked_recovered() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    // A long interval: what the killed run counted is only in its journal.
    let config = agent_config(&broker, &tracked_camera(&road_clip(), "realtime", ROAD_SCENE, "loop = true").replace("interval_seconds = 2", "interval_seconds = 3600"));
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "two vehicles", |all| all.iter().filter(|m| m.topic.contains("/vehicles/")).count() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    agent.kill(); // as in a power cut: no shutdown, no last counts
    let before = payloads(&sub, "vehicles").len();
    // Killed again right after the restart, before it counted anything (a crash loop at boot).
    let mut agent = Agent::start_in(agent.into_dir(), &config);
    agent.wait_for_log("marked recovered", 1, Duration::from_secs(20));
    agent.kill();
    let mut agent = Agent::start_in(agent.into_dir(), &config);
    sub.wait_until(Duration::from_secs(60), "more vehicles after the restart", |all| all.iter().filter(|m| m.topic.contains("/vehicles/")).count() >= before + 2);
    assert!(agent.terminate().success(), "{}", agent.log());
    std::thread::sleep(Duration::from_millis(500));

    let vehicles = payloads(&sub, "vehicles");
    // An interval sent again after a second crash has the same `from`: receivers keep the first.
    let mut froms = BTreeSet::new();
    let counts: Vec<Value> = payloads(&sub, "counts").into_iter().filter(|c| froms.insert(c["from"].as_str().unwrap().to_string())).collect();
    let recovered: Vec<&Value> = counts.iter().filter(|c| c["recovered"] == true).collect();
    assert_eq!(recovered.len(), 1, "the killed run's open interval, once: {counts:#?}");
    for c in &counts {
        assert_matches_schema(c, "counts.json");
    }
    let first_run: BTreeSet<&str> = vehicles[..before].iter().map(|v| v["track"].as_str().unwrap()).collect();
    assert_eq!(recovered[0]["vehicles"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum::<u64>(), first_run.len() as u64, "it holds the killed run's vehicles");
    assert_intervals_apart(&counts);
    let told: Vec<String> = vehicles.iter().map(|v| format!("#{} {} {} {} {}", v["seq"], v["track"], v["class"], v["lane"], v["last_seen"])).collect();
    assert_eq!(summed_counts(&counts), tallied_vehicles(&vehicles), "every vehicle of both runs counted once: {told:#?}\n{counts:#?}");
}

#[test]
fn with_publish_frames_a_tracked_camera_also_publishes_frames_whose_regions_name_their_vehicle() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    let mut agent = Agent::start(&agent_config(&broker, &tracked_camera(&road_clip(), "asap", &ROAD_SCENE.replace("[cameras.tracking]", "[cameras.tracking]\nclassify_every = 4"), "publish_frames = true")));
    sub.wait_until(Duration::from_secs(90), "every vehicle", |all| all.iter().filter(|m| m.topic.contains("/vehicles/")).count() >= road_vehicles().len());
    assert!(agent.terminate().success(), "{}", agent.log());
    let vehicles = payloads(&sub, "vehicles");
    let tracks: BTreeSet<String> = vehicles.iter().map(|v| v["track"].as_str().unwrap().to_string()).collect();
    let frames = payloads(&sub, "predictions");
    assert!(!frames.is_empty());
    let mut seen = BTreeSet::new();
    for f in &frames {
        assert_matches_schema(f, "prediction.json");
        for r in f["regions"].as_array().unwrap() {
            seen.insert(r["track"].as_str().expect("each region names its track").to_string());
        }
    }
    // Every vehicle was classified in some published frame; frames of tracks that were no vehicle (the horses) also appear.
    assert!(tracks.is_subset(&seen), "{tracks:?} not all in {seen:?}");
    for v in &vehicles {
        let classified = v["classified_frames"].as_u64().unwrap();
        let frames = v["frames"].as_u64().unwrap();
        assert!(classified * 3 <= frames, "classify_every = 4 classifies about a quarter of the frames: {classified} of {frames}");
    }
}

#[test]
fn check_config_names_the_bad_lane_line_or_calibration_key() {
    let dir = tempfile::tempdir().unwrap();
    let broker_free = "[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n";
    for (scene, key) in [
        ("[[cameras.lanes]]\nid = \"a\"\npolygon = [[0, 0], [10, 0]]", "cameras[0].lanes[0].polygon"),
        ("[[cameras.lanes]]\nid = \"a\"\npolygon = [[0, 0], [10, 10], [10, 0], [0, 10]]", "cameras[0].lanes[0].polygon"),
        ("[[cameras.lines]]\nid = \"g\"\nfrom = [5, 5]\nto = [5, 5]", "cameras[0].lines[0].to"),
        ("[cameras.calibration]\nimage = [[0, 0], [10, 0], [20, 0], [0, 10]]\nground = [[0, 0], [1, 0], [1, 1], [0, 1]]", "cameras[0].calibration.image"),
    ] {
        let text = format!(
            "device_id = \"p\"\n{broker_free}[model]\npath = \"m.onnx\"\n[[cameras]]\nid = \"c\"\nurl = \"clip.mp4\"\nregions = \"motion\"\n[cameras.tracking]\n{scene}\n"
        );
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN).arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{key}: {stderr}");
    }
}

#[test]
fn with_the_detector_each_car_on_the_four_lane_road_is_one_message_in_its_lane_and_direction() {
    let truth = highway_truth();
    let clip = repo("media/highway.mp4");
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    // A detector's box of a vehicle half in view does not reach the frame's edge as a
    // motion blob's does: a wider margin keeps such views out of its speed.
    let scene = highway_scene(&truth, "cameras.", "edge_margin = 24\n");
    let camera = tracked_camera(&clip, "asap", &scene, "max_regions = 16").replace("regions = \"motion\"", "regions = \"detector\"");
    let mut agent = Agent::start(&agent_config(&broker, &camera));
    sub.wait_until(Duration::from_secs(120), "the clip to finish", |all| {
        all.iter().rev().find(|m| m.topic.ends_with("/telemetry")).is_some_and(|t| t.payload["cameras"][0]["state"] == "finished")
    });
    // The clip's last tracks end once the camera has been silent a moment.
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.terminate().success(), "{}", agent.log());
    std::thread::sleep(Duration::from_millis(500));

    let fps = truth["fps"].as_f64().unwrap();
    let expected = truth["vehicles"].as_array().unwrap();
    let vehicles = payloads(&sub, "vehicles");
    let mut matched = BTreeMap::new();
    for v in &vehicles {
        assert_matches_schema(v, "vehicle.json");
        let crossing = v["crossings"].as_array().unwrap().first().unwrap_or_else(|| panic!("crossed no line (a phantom, or a vehicle seen twice): {v}"));
        let frame = crossing["frame"].as_u64().unwrap();
        let t = expected
            .iter()
            .filter(|t| t["lane"] == v["lane"])
            .min_by_key(|t| t["crossings"][0]["frame"].as_u64().unwrap().abs_diff(frame))
            .unwrap_or_else(|| panic!("no vehicle drove in lane {}: {v}", v["lane"]));
        let id = t["id"].as_u64().unwrap();
        let truth_frame = t["crossings"][0]["frame"].as_u64().unwrap();
        println!("vehicle {id} ({} {} {}): {} crossed {} at {frame} (truth {truth_frame}), {} km/h, {} frames, detector {}", t["class"], t["lane"], t["direction"], v["class"], crossing["direction"], v["speed_kmh"], v["frames"], v["detector"]);
        assert!(matched.insert(id, v["track"].clone()).is_none(), "vehicle {id} reported twice: {vehicles:#?}");
        assert!(frame.abs_diff(truth_frame) <= 3, "vehicle {id} crossed at {frame}, truth {truth_frame}");
        assert_eq!(crossing["direction"], t["direction"], "vehicle {id}");
        assert_eq!(v["class"], t["class"], "vehicle {id}");
        assert_eq!(v["detector"]["model"]["name"], "yolov3_tiny", "{v}");
        if t["class"] == "car" {
            assert_eq!(v["detector"]["label"], "car", "{v}");
            // Speed over its uncut views, as the motion test measures it.
            let full: Vec<&Value> = t["frames"].as_array().unwrap().iter().filter(|f| f["fully_visible"] == true).collect();
            let (a, b) = (bbox(&full[0]["bbox"]), bbox(&full[full.len() - 1]["bbox"]));
            let metres = (((b[0] + b[2] / 2) - (a[0] + a[2] / 2)) as f64).hypot(((b[1] + b[3]) - (a[1] + a[3])) as f64) / 32.0;
            let seconds = (full[full.len() - 1]["frame"].as_u64().unwrap() - full[0]["frame"].as_u64().unwrap()) as f64 / fps;
            let (speed, truth_speed) = (v["speed_kmh"].as_f64().unwrap(), metres / seconds * 3.6);
            assert!((speed - truth_speed).abs() <= 0.1 * truth_speed, "vehicle {id}: {speed} km/h, truth {truth_speed:.1}");
        }
    }
    // YOLOv3-tiny at 416×416 sees the clip's 92-px motorcycles as ~40 px: it misses most of
    // them (the motion finder does not); every car it must find, each once.
    let cars: Vec<u64> = expected.iter().filter(|t| t["class"] == "car").map(|t| t["id"].as_u64().unwrap()).collect();
    let missed: Vec<&u64> = cars.iter().filter(|id| !matched.contains_key(id)).collect();
    assert!(missed.is_empty(), "cars missed: {missed:?} (found {matched:?})");
    let motorcycles = expected.len() - cars.len();
    println!("motorcycles found: {} of {motorcycles}", matched.len() - cars.len());
    let counts = payloads(&sub, "counts");
    assert_eq!(summed_counts(&counts), tallied_vehicles(&vehicles), "the counts are the vehicle messages, each once");
    assert_intervals_apart(&counts);
    let telemetry = sub.on("/telemetry").last().unwrap().payload.clone();
    let camera = &telemetry["cameras"][0];
    assert_eq!(camera["detector"]["errors"], 0, "{camera}");
    assert_eq!(camera["detector"]["frames_tracked_only"], 0, "detect_every = 1: {camera}");
    assert!(camera["detector"]["frames_detected"].as_u64().unwrap() >= 400, "the gate is open while vehicles move: {camera}");
}

/// `media/queue.truth.json`: five vehicles drive in, stand 6 s at a stop line, drive off.
fn queue_truth() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("media/queue.truth.json")).unwrap()).unwrap()
}

/// The vehicle messages of one run of the queue clip with `regions`.
fn queue_run(regions: &str) -> (Vec<Value>, Vec<Value>, Value) {
    let truth = queue_truth();
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    let scene = highway_scene(&truth, "cameras.", "edge_margin = 24\n");
    let camera = tracked_camera(&repo("media/queue.mp4"), "asap", &scene, "max_regions = 16").replace("regions = \"motion\"", &format!("regions = \"{regions}\""));
    let mut agent = Agent::start(&agent_config(&broker, &camera));
    sub.wait_until(Duration::from_secs(150), "the clip to finish", |all| {
        all.iter().rev().find(|m| m.topic.ends_with("/telemetry")).is_some_and(|t| t.payload["cameras"][0]["state"] == "finished")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.terminate().success(), "{}", agent.log());
    std::thread::sleep(Duration::from_millis(500));
    let telemetry = sub.on("/telemetry").last().unwrap().payload["cameras"][0].clone();
    (payloads(&sub, "vehicles"), payloads(&sub, "counts"), telemetry)
}

#[test]
fn vehicles_standing_at_a_light_are_lost_by_motion_but_the_detector_counts_each_once() {
    let truth = queue_truth();
    let expected = truth["vehicles"].as_array().unwrap();
    assert!(expected.iter().all(|t| t["stopped"]["to"].as_u64().unwrap() - t["stopped"]["from"].as_u64().unwrap() >= 150), "each stands ≥ 6 s");

    // Motion: a standing vehicle fades into the background within ~2 s; when it drives
    // off it is a new track, so the clip gives more vehicle messages than vehicles.
    let (motion, _, _) = queue_run("motion");
    println!("motion: {} vehicle messages for {} vehicles", motion.len(), expected.len());
    assert!(motion.len() > expected.len(), "the clip no longer shows motion losing standing vehicles: {motion:#?}");

    let (vehicles, counts, camera) = queue_run("detector");
    let mut matched = BTreeSet::new();
    for v in &vehicles {
        assert_matches_schema(v, "vehicle.json");
        let crossing = v["crossings"].as_array().unwrap().first().unwrap_or_else(|| panic!("crossed no line: {v}"));
        let frame = crossing["frame"].as_u64().unwrap();
        let t = expected
            .iter()
            .filter(|t| t["lane"] == v["lane"])
            .min_by_key(|t| t["crossings"][0]["frame"].as_u64().unwrap().abs_diff(frame))
            .unwrap_or_else(|| panic!("no vehicle drove in lane {}: {v}", v["lane"]));
        let id = t["id"].as_u64().unwrap();
        println!("vehicle {id} ({} {} from {}): {} crossed at {frame} (truth {}), {} frames, votes {}, detector {} {}", t["class"], t["lane"], t["source"], v["class"], t["crossings"][0]["frame"], v["frames"], v["votes"], v["detector"]["label"], v["detector"]["score"]);
        assert!(matched.insert(id), "vehicle {id} reported twice: {vehicles:#?}");
        assert!(frame.abs_diff(t["crossings"][0]["frame"].as_u64().unwrap()) <= 3, "vehicle {id} crossed at {frame}: {v}");
        assert_eq!(crossing["direction"], t["direction"], "vehicle {id}");
        // Seen from arriving to leaving, standing included: one track for all of it.
        let (first, last) = (t["frames"][0]["frame"].as_u64().unwrap(), t["frames"].as_array().unwrap().last().unwrap()["frame"].as_u64().unwrap());
        assert!(v["frames"].as_u64().unwrap() >= (last - first) * 8 / 10, "vehicle {id} seen in {} of {} frames: {v}", v["frames"], last - first + 1);
        if t["source"] == "crop_dog_truck.png" {
            // The classifier spreads this pickup over pickup / jeep / minibus (car and van);
            // COCO calls it car or truck: the two stages agree on one of car, van.
            assert!(v["class"] == "car" || v["class"] == "van", "vehicle {id}: {v}");
        } else {
            assert_eq!(v["class"], t["class"], "vehicle {id}");
        }
    }
    assert_eq!(matched.len(), expected.len(), "every vehicle reported: {matched:?}");
    assert_eq!(summed_counts(&counts), tallied_vehicles(&vehicles), "the counts are the vehicle messages, each once");
    assert_intervals_apart(&counts);
    // While they stand, nothing moves but the tracks keep the detector running.
    assert_eq!(camera["detector"]["errors"], 0, "{camera}");
    let gated = camera["detector"]["frames_gated"].as_u64().unwrap();
    assert!(gated <= 110, "gated only on the empty road before and after: {camera}");
}
