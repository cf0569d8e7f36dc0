//! `make bench`, issue #17: does the installer's page slow the frame path?
//! On `media/highway.mp4` (regions `motion`, tracking on with the clip's
//! lanes and line, replay `asap`), the agent's own pipeline
//! (`support::run_pipeline_with_view`) in three configurations, in
//! interleaved rounds (the first rotating):
//!
//! 1. page closed — no `[view]`: no view tap (the baseline);
//! 2. page open at the default `max_fps = 2`: the agent's `LiveTap` (frames
//!    copied and handed over by `try_send`, drawn and JPEG-encoded on the
//!    `view-encoder` thread) feeding a `ViewHub` served by the agent's
//!    axum server on a loopback port, with a client reading the camera's
//!    MJPEG stream and polling `state.json` once a second, as the page does;
//! 3. the same at the highest rate allowed, `max_fps = 10`.
//!
//! Per run: frames/s (wall), CPU per frame (this process: pipeline, encoder,
//! server and client alike — the client's share is small: it only counts
//! bytes) and the pictures the client received. Printed: medians, and the
//! ratios to (1), of the medians and the median of the per-round ratios.
//! The page's vehicle counter (a map increment per vehicle) is left out.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cctv_agent::config::CameraConfig;
use cctv_agent::util::shutdown::Shutdown;
use cctv_agent::view::hub::ViewHub;
use cctv_agent::view::live::LiveTap;
use support::{camera_config, camera_text, clip_info, highway_scene, highway_truth, median, repo, run_pipeline_with_view, Pass};

const ROUNDS: usize = 5;
/// Page closed, or open at this many pictures per second.
const SETUPS: [Option<f64>; 3] = [None, Some(2.0), Some(10.0)];

fn name(setup: Option<f64>) -> String {
    match setup {
        None => "1 page closed".into(),
        Some(fps) => format!("{} page open, {fps} fps", if fps < 5.0 { 2 } else { 3 }),
    }
}

struct Run {
    fps: f64,
    cpu_ms_per_frame: f64,
    pictures: u64,
}

fn main() {
    let clip = repo("media/highway.mp4");
    let truth = highway_truth();
    let (clip_fps, frames) = clip_info(&clip);
    let config = {
        let mut text = camera_text("highway", &clip, "motion");
        text += &highway_scene(&truth, "", "");
        camera_config(&text)
    };
    println!("clip: {} ({frames} frames at {clip_fps} fps), regions motion, tracking on, replay asap; {ROUNDS} interleaved rounds\n", clip.display());
    let mut runs: Vec<Vec<Run>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for i in 0..SETUPS.len() {
            let s = (round + i) % SETUPS.len();
            let run = run_once(&config, clip_fps, SETUPS[s]);
            println!("round {}  {:<22} {:>7.1} frames/s  {:>6.2} ms CPU/frame  {:>4} pictures to the page", round + 1, name(SETUPS[s]), run.fps, run.cpu_ms_per_frame, run.pictures);
            runs[s].push(run);
        }
    }
    println!("\nmedians of {ROUNDS}, and against (1) page closed: ratio of medians [median of the per-round ratios]");
    let med = |r: &[Run], f: &dyn Fn(&Run) -> f64| median(&mut r.iter().map(f).collect::<Vec<_>>());
    for (s, setup) in SETUPS.iter().enumerate() {
        let cell = |f: &dyn Fn(&Run) -> f64| {
            if s == 0 {
                return String::new();
            }
            let mut paired: Vec<f64> = runs[s].iter().zip(&runs[0]).map(|(r, b)| f(r) / f(b)).collect();
            format!("{:.3} [{:.3}]", med(&runs[s], f) / med(&runs[0], f), median(&mut paired))
        };
        println!(
            "  {:<22} {:>7.1} frames/s {:>16}   {:>6.2} ms CPU/frame {:>16}   {:>4.0} pictures",
            name(*setup),
            med(&runs[s], &|r| r.fps),
            cell(&|r| r.fps),
            med(&runs[s], &|r| r.cpu_ms_per_frame),
            cell(&|r| r.cpu_ms_per_frame),
            med(&runs[s], &|r| r.pictures as f64),
        );
    }
}

/// One pass over the clip; with the page open, the server and its client
/// run for the pass and stop after it.
fn run_once(config: &CameraConfig, clip_fps: f64, setup: Option<f64>) -> Run {
    let Some(max_fps) = setup else {
        let pass = run_pipeline_with_view(config.clone(), clip_fps, None);
        return Run { fps: pass.fps, cpu_ms_per_frame: pass.cpu_ms_per_frame, pictures: 0 };
    };
    let hub = ViewHub::new("bench", vec![config.id.clone()]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let shutdown = Shutdown::new();
    let server = {
        let (hub, shutdown) = (hub.clone(), shutdown.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                cctv_agent::view::server::serve(listener, hub, None, shutdown).await.unwrap();
            });
        })
    };
    let done = Arc::new(AtomicBool::new(false));
    let pictures = Arc::new(AtomicU64::new(0));
    let stream = {
        let (done, pictures) = (done.clone(), pictures.clone());
        let url = format!("http://127.0.0.1:{port}/cameras/{}.mjpg", config.id);
        std::thread::spawn(move || {
            let mut body = ureq::get(&url).call().expect("the page's stream").into_reader();
            let mut buffer = vec![0u8; 64 * 1024];
            const PART: &[u8] = b"\r\nContent-Type: image/jpeg\r\n";
            // Ends when the server closes the stream. Each part's header is
            // counted once: the bytes kept between reads are too few for a whole one.
            let mut tail: Vec<u8> = Vec::new();
            while let Ok(n) = body.read(&mut buffer) {
                if n == 0 || done.load(Ordering::Relaxed) {
                    break;
                }
                tail.extend_from_slice(&buffer[..n]);
                pictures.fetch_add(tail.windows(PART.len()).filter(|w| *w == PART).count() as u64, Ordering::Relaxed);
                let keep = tail.len().saturating_sub(PART.len() - 1);
                tail.drain(..keep);
            }
        })
    };
    let poll = {
        let done = done.clone();
        let url = format!("http://127.0.0.1:{port}/state.json");
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let _ = ureq::get(&url).call().map(|r| r.into_string());
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let tap = LiveTap::start(hub, vec![config.clone()], Duration::from_secs_f64(1.0 / max_fps)).unwrap();
    let pass: Pass = run_pipeline_with_view(config.clone(), clip_fps, Some(Box::new(tap)));
    done.store(true, Ordering::Relaxed);
    shutdown.trigger();
    server.join().unwrap();
    let _ = stream.join();
    poll.join().unwrap();
    Run { fps: pass.fps, cpu_ms_per_frame: pass.cpu_ms_per_frame, pictures: pictures.load(Ordering::Relaxed) }
}
