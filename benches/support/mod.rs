//! What the benches that run the whole pipeline share (`mod support;` in
//! benches/vehicles.rs, benches/detector.rs and, for its context and
//! helpers, benches/pipeline.rs): the bundled models, the
//! highway clip's scene, one camera built in-process with the agent's own
//! constructors and a clip run through it, and the measuring helpers.

#![allow(dead_code)] // each bench uses a part

#[path = "../../tests/support/highway.rs"]
mod highway;
#[allow(unused_imports)] // each bench uses a part
pub use highway::{empty_road, highway_scene, highway_truth};

use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cctv_agent::config::CameraConfig;
use cctv_agent::context::Context;
use cctv_agent::infer::{Classifier, Detector};
use cctv_agent::pipeline::camera::CameraWorker;
use cctv_agent::pipeline::detection::DetectionStage;
use cctv_agent::pipeline::frame_queue::FrameQueue;
use cctv_agent::pipeline::inference::InferenceWorker;
use cctv_agent::pipeline::stats::{CameraSnapshot, CameraStats};
use cctv_agent::pipeline::vehicles::VehicleStage;
use cctv_agent::publish::Outgoing;
use cctv_agent::track::ids::TrackIds;
use cctv_agent::util::health::Health;
use cctv_agent::util::shutdown::Shutdown;
use cctv_agent::wire::Topics;

/// The agent's default `[counts] interval_seconds`.
pub const COUNTS_INTERVAL: Duration = Duration::from_secs(60);

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The bundled classifier, one intra-op thread (the agent's default).
pub fn classifier() -> Classifier {
    let model = repo("models/efficientnet_lite0.onnx");
    Classifier::load(&model, &model.with_extension("toml"), 1).expect("the classifier loads (make build fetches ONNX Runtime)")
}

/// The bundled detector, one intra-op thread (the agent's default).
pub fn detector() -> Detector {
    let model = repo("models/yolov3_tiny.onnx");
    Detector::load(&model, &model.with_extension("toml"), 1).expect("the detector loads (make build fetches ONNX Runtime)")
}

/// A clip's frame rate and frame count, as OpenCV reports them.
pub fn clip_info(clip: &Path) -> (f64, u64) {
    let capture = VideoCapture::from_file(clip.to_str().unwrap(), videoio::CAP_ANY).unwrap();
    (capture.get(videoio::CAP_PROP_FPS).unwrap(), capture.get(videoio::CAP_PROP_FRAME_COUNT).unwrap() as u64)
}

/// A camera's config text: the clip replayed `asap`, at most 16 regions a
/// frame, its regions found by `regions` (`motion` or `detector`).
pub fn camera_text(id: &str, clip: &Path, regions: &str) -> String {
    format!("id = {id:?}\nurl = {:?}\nregions = {regions:?}\nreplay = \"asap\"\nmax_regions = 16\n", clip.display().to_string())
}

/// The camera as the agent's config would give it.
pub fn camera_config(text: &str) -> CameraConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("camera config: {e}\n{text}"))
}

/// The workers' context, device `bench` under `cctv/`, and the receiving
/// end of its outgoing channel, which a thread of the bench drains in place
/// of the publisher.
pub fn bench_context(classifier: &Classifier) -> (Context, tokio::sync::mpsc::Receiver<Outgoing>) {
    let (outgoing, received) = tokio::sync::mpsc::channel::<Outgoing>(256);
    let context = Context {
        device_id: "bench".into(),
        topics: Topics::new("cctv", "bench"),
        outgoing,
        active_model: Arc::new(std::sync::RwLock::new(classifier.identity().clone())),
        shutdown: Shutdown::new(),
    };
    (context, received)
}

/// What one pass of a clip through the pipeline measured.
pub struct Pass {
    /// Frames decoded.
    pub frames: u64,
    /// Those frames' length at the clip's frame rate, seconds.
    pub video_s: f64,
    /// Frames decoded per second of wall clock, from the first frame decoded
    /// to the inference thread's end (which includes reporting the vehicles
    /// still in view).
    pub fps: f64,
    /// This process's user + system CPU over the pass, per frame decoded.
    pub cpu_ms_per_frame: f64,
    /// The camera's counters at the end (with `detector` for a detector camera).
    pub camera: CameraSnapshot,
    /// Everything handed to the publisher, in order.
    pub messages: Vec<Outgoing>,
}

/// One pass of the camera's clip, the pipeline as `agent::run` builds it
/// (CameraWorker, FrameQueue, InferenceWorker with the vehicle stage where
/// the camera tracks and the detection stage where it has `regions =
/// "detector"`), minus MQTT and the outbox: a thread of this bench plays the
/// publisher and keeps what arrives. The models are loaded before the clock
/// starts; nothing else runs in the process meanwhile.
pub fn run_pipeline(config: CameraConfig, clip_fps: f64) -> Pass {
    run_pipeline_with_view(config, clip_fps, None)
}

/// The same, with a view tap on the inference thread as the agent adds one
/// for `[view]` (benches/view.rs).
pub fn run_pipeline_with_view(config: CameraConfig, clip_fps: f64, view: Option<Box<dyn cctv_agent::pipeline::view::ViewTap>>) -> Pass {
    let classifier = classifier();
    let detector = config.detection().map(|_| detector());
    let health = Health::new();
    let queue = Arc::new(FrameQueue::new());
    let stats = CameraStats::new(&config.id);
    let stats = Arc::new(if detector.is_some() { stats.with_detector() } else { stats });
    let (context, mut received) = bench_context(&classifier);
    let (_no_updates, updates) = std::sync::mpsc::sync_channel(1);
    let state = tempfile::tempdir().unwrap();
    let cameras = std::slice::from_ref(&config);
    let mut worker = InferenceWorker::new(&context, classifier, queue.clone(), vec![stats.clone()], health.register("inference"), updates);
    if config.tracking.is_some() {
        let ids = TrackIds::open(&state.path().join("track_ids")).unwrap();
        worker = worker.with_vehicles(VehicleStage::new(&context.device_id, &context.topics, cameras, COUNTS_INTERVAL, ids));
    }
    if let Some(detector) = detector {
        worker = worker.with_detection(DetectionStage::new(detector, cameras));
    }
    if let Some(view) = view {
        worker = worker.with_view_tap(view);
    }
    let camera = CameraWorker::new(&context, 0, config, queue.clone(), stats.clone(), health.register("camera"));
    drop(context);

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    // Ends when every sender (the workers' contexts) is gone.
    let publisher = std::thread::spawn(move || {
        let mut all = Vec::new();
        while let Some(message) = received.blocking_recv() {
            all.push(message);
        }
        all
    });
    let inference = std::thread::spawn(move || worker.run());
    let camera = std::thread::spawn(move || camera.run());
    camera.join().unwrap();
    queue.close();
    inference.join().unwrap().expect("the inference thread ends cleanly");
    let elapsed = started.elapsed().as_secs_f64();
    let messages = publisher.join().unwrap();
    let cpu = cpu_seconds() - cpu_before;

    let camera = stats.snapshot();
    let frames = camera.frames_in;
    Pass {
        frames,
        video_s: frames as f64 / clip_fps,
        fps: frames as f64 / elapsed,
        cpu_ms_per_frame: cpu * 1000.0 / frames as f64,
        camera,
        messages,
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// This process's user + system CPU time so far.
pub fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}
