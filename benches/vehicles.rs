//! `make bench`, issue #13 "Vehicles, not frames": what tracking costs and
//! saves, in one process, on `media/highway.mp4` (960×540, 431 frames at
//! 25 fps = 17.24 s of video, 12 vehicles; regions `motion`, max_regions 16,
//! replay `asap`). Four configurations, run in interleaved rounds (the
//! starting configuration rotates each round):
//!
//! 1. tracking off — today's path: every region of every frame with motion
//!    classified, one prediction per such frame (the baseline);
//! 2. tracking on, classify_every = 1;
//! 3. tracking on, classify_every = 5;
//! 4. tracking on, classify_every = 1, publish_frames = true.
//!
//! The pipeline is built with the agent's own constructors (CameraWorker,
//! FrameQueue, InferenceWorker with `with_vehicles(VehicleStage::new(…))`
//! as `agent::run` does, a Context whose outgoing channel a thread of this
//! bench drains in place of the publisher; MQTT and the outbox excluded),
//! by `support::run_pipeline`, which benches/detector.rs shares.
//!
//! Per run: frames/s (wall, from the first frame decoded to the inference
//! thread's end, which includes reporting the vehicles still in view),
//! CPU time per frame (this process's user+sys from getrusage, before and
//! after, over the frames decoded: nothing else runs in the process
//! meanwhile), regions classified per frame, and the messages and payload
//! bytes handed to the publisher by topic kind, scaled to a minute of video.
//!
//! Regions classified: where per-frame predictions are published (1 and 4)
//! this is exact, the regions of the prediction payloads. Without them (2
//! and 3) nothing outside src/ sees each classification, so the figure is
//! a lower bound marked `≥`: the sum of the vehicle messages'
//! `classified_frames` (it leaves out cut views, tracks never confirmed and
//! tracks that were no vehicle). Run 4 prints both, so the gap shows.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

use cctv_agent::config::CameraConfig;
use support::{camera_config, camera_text, clip_info, highway_scene, highway_truth, median, peak_rss_kib, repo, run_pipeline, COUNTS_INTERVAL};

const ROUNDS: usize = 5;
const KINDS: [&str; 4] = ["predictions", "vehicles", "counts", "other"];

#[derive(Clone, Copy)]
struct Setup {
    name: &'static str,
    /// None: tracking off; Some(k): classify every k-th frame of a vehicle.
    classify_every: Option<u32>,
    publish_frames: bool,
}

const SETUPS: [Setup; 4] = [
    Setup { name: "1 tracking off", classify_every: None, publish_frames: true },
    Setup { name: "2 tracking, every 1", classify_every: Some(1), publish_frames: false },
    Setup { name: "3 tracking, every 5", classify_every: Some(5), publish_frames: false },
    Setup { name: "4 every 1 + frames", classify_every: Some(1), publish_frames: true },
];

/// What one run measured.
#[derive(Clone, Default)]
struct Run {
    frames: u64,
    video_s: f64,
    fps: f64,
    cpu_ms_per_frame: f64,
    /// Exact (from prediction payloads), where predictions were published.
    regions_exact: Option<u64>,
    /// Sum of the vehicle messages' classified_frames (a lower bound).
    regions_in_vehicles: u64,
    vehicles: u64,
    /// Per kind: messages, payload bytes.
    by_kind: BTreeMap<&'static str, (u64, u64)>,
}

impl Run {
    fn per_min(&self, n: u64) -> f64 {
        n as f64 * 60.0 / self.video_s
    }
    fn messages(&self) -> u64 {
        self.by_kind.values().map(|(n, _)| n).sum()
    }
    fn bytes(&self) -> u64 {
        self.by_kind.values().map(|(_, b)| b).sum()
    }
    fn messages_per_min(&self) -> f64 {
        self.per_min(self.messages())
    }
    fn kib_per_min(&self) -> f64 {
        self.per_min(self.bytes()) / 1024.0
    }
    fn regions_per_frame(&self) -> (f64, bool) {
        match self.regions_exact {
            Some(n) => (n as f64 / self.frames as f64, true),
            None => (self.regions_in_vehicles as f64 / self.frames as f64, false),
        }
    }
}

fn main() {
    let wall = std::time::Instant::now();
    let clip = repo("media/highway.mp4");
    let truth = highway_truth();
    let (fps, frames) = clip_info(&clip);
    println!(
        "clip: {} ({frames} frames at {fps} fps = {:.2} s of video, {} vehicles in its truth); regions motion, max_regions 16, replay asap",
        clip.display(),
        frames as f64 / fps,
        truth["vehicles"].as_array().unwrap().len()
    );
    println!("model: efficientnet_lite0, 1 intra-op thread; {ROUNDS} interleaved rounds, the first configuration rotating; counts interval {} s", COUNTS_INTERVAL.as_secs());
    println!("per minute of video; bytes = payloads handed to the publisher (before its `seq`, MQTT framing excluded)\n");

    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); SETUPS.len()];
    for round in 0..ROUNDS {
        for i in 0..SETUPS.len() {
            let s = (round + i) % SETUPS.len();
            let run = run_once(&clip, fps, &truth, SETUPS[s]);
            print_run(&format!("round {}", round + 1), SETUPS[s], &run);
            runs[s].push(run);
        }
    }

    println!("\nmedians of {ROUNDS}:");
    let medians: Vec<Run> = runs.iter().map(|r| median_run(r)).collect();
    for (setup, m) in SETUPS.iter().zip(&medians) {
        print_run("median", *setup, m);
    }
    println!("  messages/min by kind (median):");
    for (setup, m) in SETUPS.iter().zip(&medians) {
        let kinds: Vec<String> = KINDS
            .iter()
            .filter_map(|k| m.by_kind.get(k).filter(|(n, _)| *n > 0).map(|(n, b)| format!("{k} {:.1} ({:.1} KiB)", m.per_min(*n), m.per_min(*b) / 1024.0)))
            .collect();
        println!("    {:<20} {}", setup.name, kinds.join(", "));
    }

    println!("  counts go out per {} s of wall clock and at the end: a run at asap spans one interval (two across a boundary), so", COUNTS_INTERVAL.as_secs());
    println!("  their per-minute figure is that closing message scaled to the clip; at realtime it is one per interval");
    println!("\nagainst (1) tracking off, this run: ratio of medians [median of the per-round ratios]");
    println!("  {:<20} {:>14} {:>14} {:>14} {:>14}", "", "fps", "CPU/frame", "messages/min", "bytes/min");
    let base = &runs[0];
    for (s, setup) in SETUPS.iter().enumerate().skip(1) {
        let cell = |f: &dyn Fn(&Run) -> f64| {
            let of_medians = f(&medians[s]) / f(&medians[0]);
            let mut paired: Vec<f64> = runs[s].iter().zip(base).map(|(r, b)| f(r) / f(b)).collect();
            format!("{of_medians:.3} [{:.3}]", median(&mut paired))
        };
        println!(
            "  {:<20} {:>14} {:>14} {:>14} {:>14}",
            setup.name,
            cell(&|r| r.fps),
            cell(&|r| r.cpu_ms_per_frame),
            cell(&|r| r.messages_per_min()),
            cell(&|r| r.kib_per_min())
        );
    }
    println!("\npeak RSS: {} MiB; whole bench {:.0} s", peak_rss_kib() / 1024, wall.elapsed().as_secs_f64());
}

/// The camera as the agent's config would give it: the scene (lanes, line,
/// calibration) from the clip's truth, as `tests/vehicles.rs` has it.
fn camera_config_for(clip: &Path, truth: &Value, setup: Setup) -> CameraConfig {
    let mut text = camera_text("highway", clip, "motion");
    if let Some(k) = setup.classify_every {
        text += &format!("publish_frames = {}\n", setup.publish_frames);
        text += &highway_scene(truth, "", &format!("classify_every = {k}\n"));
    }
    let config = camera_config(&text);
    assert_eq!(config.tracking.is_some(), setup.classify_every.is_some());
    assert_eq!(config.publishes_frames(), setup.publish_frames);
    config
}

/// One pass over the clip (`support::run_pipeline`), its messages sorted by kind.
fn run_once(clip: &Path, fps: f64, truth: &Value, setup: Setup) -> Run {
    let pass = run_pipeline(camera_config_for(clip, truth, setup), fps);
    let mut run = Run { frames: pass.frames, video_s: pass.video_s, fps: pass.fps, cpu_ms_per_frame: pass.cpu_ms_per_frame, ..Run::default() };
    let mut regions = 0;
    for kind in KINDS {
        run.by_kind.insert(kind, (0, 0));
    }
    for m in &pass.messages {
        let kind = m.topic.split('/').nth(2).and_then(|k| KINDS.iter().find(|known| **known == k)).copied().unwrap_or("other");
        let entry = run.by_kind.get_mut(kind).unwrap();
        entry.0 += 1;
        entry.1 += m.payload.len() as u64;
        if kind == "predictions" || kind == "vehicles" {
            let body: Value = serde_json::from_slice(&m.payload).unwrap();
            if kind == "predictions" {
                regions += body["regions"].as_array().map_or(0, Vec::len) as u64;
            } else {
                run.vehicles += 1;
                run.regions_in_vehicles += body["classified_frames"].as_u64().unwrap_or(0);
            }
        }
    }
    run.regions_exact = setup.publish_frames.then_some(regions);
    run
}

fn print_run(label: &str, setup: Setup, r: &Run) {
    let (regions, exact) = r.regions_per_frame();
    let lower = if setup.classify_every.is_some() && exact { format!(" (vehicles' ≥{:.2})", r.regions_in_vehicles as f64 / r.frames as f64) } else { String::new() };
    println!(
        "{label:<8} {:<20} {:>6.1} fps  CPU {:>5.1} ms/frame  regions/frame {}{regions:.2}{lower}  vehicles {:>2}  {:>6.1} msg/min  {:>7.1} KiB/min",
        setup.name,
        r.fps,
        r.cpu_ms_per_frame,
        if exact { "" } else { "≥" },
        r.vehicles,
        r.messages_per_min(),
        r.kib_per_min()
    );
}

/// Each figure's median on its own (a run of medians, not a median run).
fn median_run(runs: &[Run]) -> Run {
    let m = |f: &dyn Fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let u = |f: &dyn Fn(&Run) -> u64| {
        let mut v: Vec<u64> = runs.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    let mut by_kind = BTreeMap::new();
    for kind in KINDS {
        let get = |r: &Run| r.by_kind.get(kind).copied().unwrap_or_default();
        by_kind.insert(kind, (u(&|r| get(r).0), u(&|r| get(r).1)));
    }
    Run {
        frames: u(&|r| r.frames),
        video_s: m(&|r| r.video_s),
        fps: m(&|r| r.fps),
        cpu_ms_per_frame: m(&|r| r.cpu_ms_per_frame),
        regions_exact: runs[0].regions_exact.map(|_| u(&|r| r.regions_exact.unwrap_or(0))),
        regions_in_vehicles: u(&|r| r.regions_in_vehicles),
        vehicles: u(&|r| r.vehicles),
        by_kind,
    }
}
