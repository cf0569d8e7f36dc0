//! `cctv-agent snapshot`: one annotated picture of what a camera's pipeline
//! sees, for the installer at the pole, without any network. It runs the
//! agent's own camera and inference workers on the one camera (its region
//! finder, detector, tracker, lanes and lines as configured) for a few
//! seconds, with the MQTT side replaced by a counter, and draws the frame it
//! was asked for. Files are read as fast as inference allows (`asap`), once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opencv::prelude::*;
use tokio::sync::mpsc;

use super::draw::{self, DrawError};
use crate::config::{CameraConfig, Config, Replay, SourceKind};
use crate::context::Context;
use crate::infer::{Classifier, Detector, ModelError};
use crate::pipeline::camera::CameraWorker;
use crate::pipeline::detection::DetectionStage;
use crate::pipeline::frame_queue::FrameQueue;
use crate::pipeline::inference::{InferenceWorker, PipelineError};
use crate::pipeline::stats::{CameraState, CameraStats};
use crate::pipeline::vehicles::VehicleStage;
use crate::pipeline::view::{FrameView, OwnedView, ViewTap};
use crate::track::ids::{TrackIdError, TrackIds};
use crate::util::health::Health;
use crate::util::shutdown::Shutdown;
use crate::wire::Topics;

/// Which frame to draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum At {
    /// The n-th decoded frame (0-based) of a file.
    Frame(u64),
    /// The first frame at or after this many seconds of the camera's clock
    /// (video time for a file, time since it opened for a live source).
    Seconds(f64),
}

/// What a snapshot drew.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    pub frame_index: u64,
    pub clock_s: f64,
    pub width: u32,
    pub height: u32,
    pub regions: usize,
    pub tracks: usize,
    /// Vehicles whose tracks ended before the frame (reported, as the agent would).
    pub vehicles: usize,
    /// The source ended before the frame asked for: this is its last frame.
    pub ended_early: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("no camera `{camera}` in the config: pass --camera with one of its cameras ({known})")]
    UnknownCamera { camera: String, known: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("cannot number tracks in a scratch folder: {0}")]
    TrackIds(#[from] TrackIdError),
    #[error("cannot make a scratch folder {path} ({source}): set TMPDIR to a writable folder")]
    Scratch { path: PathBuf, source: crate::util::fs::FileError },
    #[error("camera `{camera}` gave no frame within {waited_s} s ({reason}); check cameras.url and that the camera is reachable")]
    NoFrame { camera: String, waited_s: u64, reason: String },
    #[error(transparent)]
    Draw(#[from] DrawError),
    #[error("cannot write the snapshot to {path}: {source}; check the folder exists and is writable")]
    Write { path: PathBuf, source: crate::util::fs::FileError },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("the pipeline stopped before the frame: {0}")]
    Inference(#[from] PipelineError),
    #[error("the inference thread panicked; this is a bug")]
    Panicked,
}

/// A live source that opens slower than this is reported as giving no frame.
const OPEN_WAIT: Duration = Duration::from_secs(20);

/// The latest view the pipeline showed, kept until the one asked for comes.
struct Kept {
    view: OwnedView,
    /// It is the frame asked for (else the last before the source ended).
    done: bool,
}

/// Keeps a copy of every frame up to the one asked for (a snapshot reads a
/// few seconds of video: the copies are cheap next to inference), so a clip
/// shorter than asked still gives its last frame.
struct SnapshotTap {
    at: At,
    kept: Arc<Mutex<Option<Kept>>>,
    shutdown: Shutdown,
}

impl SnapshotTap {
    fn reached(&self, frame_index: u64, clock_s: f64) -> bool {
        match self.at {
            At::Frame(n) => frame_index >= n,
            At::Seconds(s) => clock_s >= s,
        }
    }
}

impl ViewTap for SnapshotTap {
    fn wants(&mut self, _camera: usize, _frame_index: u64, _clock_s: f64) -> bool {
        !self.kept.lock().is_ok_and(|k| k.as_ref().is_some_and(|k| k.done))
    }

    fn show(&mut self, view: &FrameView<'_>) {
        let Ok(owned) = view.to_owned() else { return };
        let done = self.reached(view.frame_index, view.clock_s);
        if let Ok(mut kept) = self.kept.lock() {
            *kept = Some(Kept { view: owned, done });
        }
        if done {
            self.shutdown.trigger();
        }
    }
}

/// Runs `camera`'s pipeline until the frame `at`, draws it and writes it to
/// `out` (JPEG; PNG if its name ends in `.png`).
pub fn take(config: &Config, camera: &str, at: At, out: &Path) -> Result<Taken, SnapshotError> {
    let Some(camera_config) = config.cameras.iter().find(|c| c.id == camera) else {
        let known = config.cameras.iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(", ");
        return Err(SnapshotError::UnknownCamera { camera: camera.to_string(), known });
    };
    let mut camera_config: CameraConfig = camera_config.clone();
    let is_file = matches!(camera_config.source(), SourceKind::File(_));
    if is_file {
        camera_config.replay = Replay::Asap;
        camera_config.loop_file = false;
    }
    let classifier = Classifier::load(&config.model.path, &config.model.spec_path(), config.model.intra_threads)?;
    let detector = match camera_config.detection() {
        Some(_) => Some(Detector::load(&config.detector_path(), &config.detector_spec_path(), config.model.intra_threads)?),
        None => None,
    };

    let shutdown = Shutdown::new();
    let (outgoing, mut outgoing_rx) = mpsc::channel(1024);
    let context = Context {
        device_id: config.device_id.clone(),
        topics: Topics::new(&config.mqtt.topic_root, &config.device_id),
        outgoing,
        active_model: Arc::new(std::sync::RwLock::new(classifier.identity().clone())),
        shutdown: shutdown.clone(),
    };
    // What the agent would publish: counted (vehicles), not sent.
    let vehicles_topic = context.topics.vehicles(&camera_config.id);
    let drain = std::thread::Builder::new()
        .name("snapshot-drain".into())
        .spawn(move || {
            let mut vehicles = 0usize;
            while let Some(message) = outgoing_rx.blocking_recv() {
                vehicles += usize::from(message.topic == vehicles_topic);
            }
            vehicles
        })
        .map_err(SnapshotError::Thread)?;

    let health = Health::new();
    let queue = Arc::new(FrameQueue::new());
    let stats = Arc::new(if camera_config.detection().is_some() { CameraStats::new(&camera_config.id).with_detector() } else { CameraStats::new(&camera_config.id) });
    let (_swap_tx, swap_rx) = std::sync::mpsc::sync_channel(1);
    let kept = Arc::new(Mutex::new(None));
    let tap = SnapshotTap { at, kept: kept.clone(), shutdown: shutdown.clone() };
    let mut worker = InferenceWorker::new(&context, classifier, queue.clone(), vec![stats.clone()], health.register("inference"), swap_rx).with_view_tap(Box::new(tap));
    let scratch = scratch_dir();
    crate::util::fs::create_private_dir_all(&scratch).map_err(|source| SnapshotError::Scratch { path: scratch.clone(), source })?;
    if camera_config.tracking.is_some() {
        let ids = TrackIds::open(&scratch.join("track_ids"))?;
        let interval = Duration::from_secs(config.counts.interval_seconds);
        worker = worker.with_vehicles(VehicleStage::new(&context.device_id, &context.topics, std::slice::from_ref(&camera_config), interval, ids));
    }
    if let Some(detector) = detector {
        worker = worker.with_detection(DetectionStage::new(detector, std::slice::from_ref(&camera_config)));
    }
    let inference = std::thread::Builder::new().name("inference".into()).spawn(move || worker.run()).map_err(SnapshotError::Thread)?;
    let camera_worker = CameraWorker::new(&context, 0, camera_config.clone(), queue.clone(), stats.clone(), health.register("camera"));
    let camera_thread = std::thread::Builder::new().name("camera".into()).spawn(move || camera_worker.run()).map_err(SnapshotError::Thread)?;
    drop(context);

    // Until the frame is taken, the file ends, or a live source stays dark too long.
    let started = Instant::now();
    let extra = match at {
        At::Seconds(s) if !is_file => Duration::from_secs_f64(s.clamp(0.0, 3600.0)),
        _ => Duration::ZERO,
    };
    let mut waited_out = false;
    loop {
        if shutdown.is_triggered() || camera_thread.is_finished() {
            break;
        }
        let has_frame = kept.lock().is_ok_and(|k| k.is_some());
        if !has_frame && started.elapsed() > OPEN_WAIT + extra && !is_file {
            waited_out = true;
            break;
        }
        if !has_frame && is_file && stats.state() == CameraState::Retrying {
            waited_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    shutdown.trigger();
    queue.close();
    let _ = camera_thread.join();
    let result = inference.join();
    let vehicles = drain.join().unwrap_or(0);
    let _ = std::fs::remove_dir_all(&scratch);
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error.into()),
        Err(_) => return Err(SnapshotError::Panicked),
    }
    let kept = kept.lock().ok().and_then(|mut k| k.take());
    let Some(kept) = kept else {
        let reason = stats.snapshot().last_error.unwrap_or_else(|| if waited_out { "it did not open".into() } else { "the source has no frames".into() });
        return Err(SnapshotError::NoFrame { camera: camera.to_string(), waited_s: started.elapsed().as_secs(), reason });
    };
    let view = kept.view.view(&camera_config.id);
    let image = draw::annotate(&view, &camera_config)?;
    let png = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let bytes = if png { draw::png(&image)? } else { draw::jpeg(&image, 90)? };
    crate::util::fs::write_atomically(out, &bytes).map_err(|source| SnapshotError::Write { path: out.to_path_buf(), source })?;
    let shown = &kept.view;
    Ok(Taken {
        frame_index: shown.frame_index,
        clock_s: shown.clock_s,
        width: shown.frame.cols().max(0) as u32,
        height: shown.frame.rows().max(0) as u32,
        regions: shown.regions.len(),
        tracks: shown.tracks.len(),
        vehicles,
        ended_early: !kept.done,
    })
}

/// A private folder for the run's track numbers (the agent's state folder is
/// left alone: the agent may be running).
fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("cctv-agent-snapshot-{}-{nanos}", std::process::id()))
}
