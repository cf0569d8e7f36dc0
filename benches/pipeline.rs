//! `make bench`: on the bundled clip (media/road.mp4), in one process:
//! decode only, inference only (preprocessing + ONNX Runtime, whole frame),
//! and the whole pipeline (camera thread → frame queue → inference thread →
//! serialised prediction, replay `asap`, regions `full`; MQTT excluded).
//! Two more measurements run the pipeline with monitoring on as the agent
//! runs it by default (a digest per prediction, input statistics every 25th
//! frame, low-confidence and random samples, the monitor task itself), and
//! the same while feedback flows (every region also cropped and
//! JPEG-encoded for late feedback), and print their ratios to the plain
//! pipeline. The pipeline is built with the same constructors as the agent's.
//! Rounds are interleaved so background noise hits all four alike; medians
//! are printed, with pipeline ÷ min(decode, inference).
//!
//! The bundled clip decodes ~20× faster than it classifies, which hides
//! whether decode and inference overlap; so the same is run again on the
//! clip scaled to 1920×1200 (made with ffmpeg into target/), where decoding
//! costs a real share of a core.

mod support;

use opencv::core::{Mat, Rect};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use cctv_agent::config::{CameraConfig, MonitorConfig, MotionConfig, RegionsConfig, Replay, SamplesConfig};
use cctv_agent::infer::Classifier;
use cctv_agent::monitor::samples::Sampler;
use cctv_agent::monitor::MonitorTask;
use cctv_agent::pipeline::camera::CameraWorker;
use cctv_agent::pipeline::frame_queue::FrameQueue;
use cctv_agent::pipeline::inference::InferenceWorker;
use cctv_agent::pipeline::stats::CameraStats;
use cctv_agent::publish::Routes;
use cctv_agent::util::health::Health;
use support::{bench_context, classifier, median, peak_rss_kib};

const ROUNDS: usize = 5;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clip = root.join("media/road.mp4");
    let load = classifier;
    println!("model: efficientnet_lite0, 1 intra-op thread; {ROUNDS} interleaved rounds per clip");
    measure(&clip, &load);
    match upscaled(&clip, &root.join("target/bench/road-1920x1200.mp4")) {
        Ok(big) => measure(&big, &load),
        Err(error) => println!("skipping the 1920x1200 run: {error}"),
    }
    println!("peak RSS: {} MiB", peak_rss_kib() / 1024);
}

fn measure(clip: &Path, load: &dyn Fn() -> Classifier) {
    let frames = decode_all(clip);
    println!("\nclip: {} ({} frames {}x{})", clip.display(), frames.len(), frames[0].cols(), frames[0].rows());
    let mut decode = Vec::new();
    let mut inference = Vec::new();
    let mut pipeline = Vec::new();
    let mut monitored = Vec::new();
    let mut with_feedback = Vec::new();
    let mut classifier = load();
    for round in 1..=ROUNDS {
        decode.push(decode_fps(clip));
        inference.push(inference_fps(&mut classifier, &frames));
        pipeline.push(pipeline_fps(clip, load(), frames.len(), Monitoring::Off));
        monitored.push(pipeline_fps(clip, load(), frames.len(), Monitoring::Default));
        with_feedback.push(pipeline_fps(clip, load(), frames.len(), Monitoring::FeedbackFlowing));
        println!(
            "round {round}: decode {:.1} fps, inference {:.1} fps, pipeline {:.1} fps, with monitoring {:.1} fps, while feedback flows {:.1} fps",
            decode[round - 1], inference[round - 1], pipeline[round - 1], monitored[round - 1], with_feedback[round - 1]
        );
    }
    drop(frames);
    let (d, i, p) = (median(&mut decode), median(&mut inference), median(&mut pipeline));
    let (m, f) = (median(&mut monitored), median(&mut with_feedback));
    println!("median: decode {d:.1} fps | inference {i:.1} fps | pipeline {p:.1} fps | with monitoring {m:.1} fps | while feedback flows {f:.1} fps");
    println!("with monitoring / pipeline = {:.3}; while feedback flows / pipeline = {:.3}", m / p, f / p);
    println!("pipeline / min(decode, inference) = {:.3}", p / d.min(i));
    println!("pipeline / serial (1 / (1/decode + 1/inference)) = {:.3}  (> 1: decode and inference overlap)", p * (1.0 / d + 1.0 / i));
}

/// The clip scaled up with ffmpeg (cached in target/).
fn upscaled(clip: &Path, out: &Path) -> Result<std::path::PathBuf, String> {
    if !out.exists() {
        std::fs::create_dir_all(out.parent().unwrap()).map_err(|e| e.to_string())?;
        let status = std::process::Command::new("ffmpeg")
            .args(["-y", "-loglevel", "error", "-i"])
            .arg(clip)
            .args(["-vf", "scale=1920:1200", "-c:v", "libx264", "-crf", "20", "-pix_fmt", "yuv420p"])
            .arg(out)
            .status()
            .map_err(|e| format!("ffmpeg: {e}"))?;
        if !status.success() {
            return Err(format!("ffmpeg exited with {status}"));
        }
    }
    Ok(out.to_path_buf())
}

fn decode_all(clip: &Path) -> Vec<Mat> {
    let mut capture = VideoCapture::from_file(clip.to_str().unwrap(), videoio::CAP_ANY).unwrap();
    let mut frames = Vec::new();
    let mut frame = Mat::default();
    while capture.read(&mut frame).unwrap() && !frame.empty() {
        frames.push(std::mem::take(&mut frame));
    }
    frames
}

fn decode_fps(clip: &Path) -> f64 {
    let started = Instant::now();
    let mut capture = VideoCapture::from_file(clip.to_str().unwrap(), videoio::CAP_ANY).unwrap();
    let mut frame = Mat::default();
    let mut n = 0;
    while capture.read(&mut frame).unwrap() && !frame.empty() {
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn inference_fps(classifier: &mut Classifier, frames: &[Mat]) -> f64 {
    let started = Instant::now();
    for frame in frames {
        let whole = Rect::new(0, 0, frame.cols(), frame.rows());
        std::hint::black_box(classifier.classify(frame, &[whole]).unwrap());
    }
    frames.len() as f64 / started.elapsed().as_secs_f64()
}

#[derive(Clone, Copy, PartialEq)]
enum Monitoring {
    Off,
    Default,
    FeedbackFlowing,
}

/// The pipeline as `agent::run` builds it (same constructors), minus MQTT:
/// this thread plays the publisher, numbering what arrives and telling the
/// monitor's stored hook, as the publisher does once a message is stored.
fn pipeline_fps(clip: &Path, classifier: Classifier, expected: usize, monitoring: Monitoring) -> f64 {
    let health = Health::new();
    let queue = Arc::new(FrameQueue::new());
    let stats = Arc::new(CameraStats::new("bench"));
    let (context, mut received) = bench_context(&classifier);
    let config = CameraConfig {
        id: "bench".into(),
        url: clip.display().to_string(),
        regions: RegionsConfig::Full,
        replay: Replay::Asap,
        loop_file: false,
        max_regions: 8,
        motion: MotionConfig::default(),
        max_frame_pixels: 4096 * 3072,
        tracking: None,
        lanes: Vec::new(),
        lines: Vec::new(),
        calibration: None,
        publish_frames: None,
        detect_every: None,
        motion_gate: None,
        gate_recheck_seconds: None,
        privacy_masks: Vec::new(),
    };
    let (_no_updates, updates) = std::sync::mpsc::sync_channel(1);
    let classes = cctv_agent::monitor::feedback_classes(&classifier.spec().taxonomy);
    let mut worker = InferenceWorker::new(&context, classifier, queue.clone(), vec![stats.clone()], health.register("inference"), updates);
    let mut camera = CameraWorker::new(&context, 0, config, queue.clone(), stats, health.register("camera"));
    // Monitoring as the agent runs it by default, minus MQTT: samples are saved, not published.
    let samples_dir = tempfile::tempdir().unwrap();
    let mut stored_hook = None;
    let mut monitor_thread = None;
    if monitoring != Monitoring::Off {
        let recent_before_feedback = monitoring == Monitoring::FeedbackFlowing;
        // The hourly cap pro rata: a 12 s clip in steady state saves at most one sample
        // (the default 120 would all be saved within the clip and overstate the cost).
        let config = SamplesConfig { dir: samples_dir.path().to_path_buf(), publish: false, recent_before_feedback, max_per_hour: 1, ..Default::default() };
        let (sampler, tap, sampler_tx, rx) = Sampler::new(config, &[], "bench".into(), context.topics.samples_prefix(), context.outgoing.downgrade());
        let sampler_stats = sampler.stats();
        std::thread::spawn(move || sampler.run(rx));
        let monitor_config = MonitorConfig::default();
        let every = monitor_config.drift.input_every_frames;
        let dir = samples_dir.path().join("monitor");
        let (task, sender) = MonitorTask::new(&context, monitor_config, dir, classes, Some((sampler_tx, sampler_stats)), &mut Routes::new());
        worker = worker.with_tap(Box::new(sender.digest_tap())).with_tap(Box::new(tap));
        camera = camera.with_tap(Box::new(sender.input_tap(every)));
        stored_hook = Some(sender.stored_hook());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        monitor_thread = Some(std::thread::spawn(move || runtime.block_on(task.run())));
    }
    let shutdown = context.shutdown.clone();
    drop(context);
    let started = Instant::now();
    let inference = std::thread::spawn(move || worker.run());
    let camera = std::thread::spawn(move || camera.run());
    let mut n = 0;
    while n < expected {
        let message = received.blocking_recv().expect("a prediction per frame");
        if let (Some(hook), Some(tag)) = (&stored_hook, message.tag) {
            hook(tag, n as u64);
        }
        n += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    camera.join().unwrap();
    queue.close();
    inference.join().unwrap().unwrap();
    shutdown.trigger();
    if let Some(monitor) = monitor_thread {
        monitor.join().unwrap();
    }
    n as f64 / elapsed
}
