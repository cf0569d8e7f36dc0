//! One thread per camera: opens the source with OpenCV, decodes frames, finds
//! the regions to classify, and hands frames to the [`FrameQueue`].
//!
//! The loop is `run` → `run_once` → wait with backoff → `run_once` ...: any
//! failure (missing file, unreachable URL, stream that stops) is logged with
//! what to check, counted, and retried; other cameras are not affected.

use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{CameraConfig, Replay, SourceKind};
use crate::pipeline::frame_queue::{FrameJob, FrameQueue};
use crate::util::health::Heartbeat;
use crate::publish::sink::EventSink;
use crate::wire::events::Event;
use crate::context::Context;
use crate::pipeline::regions::RegionFinder;
use crate::privacy::PrivacyMasks;
use crate::util::shutdown::Shutdown;
use crate::pipeline::stats::{CameraState, CameraStats};

/// How long opening or reading a network stream may take before it counts as failed.
const STREAM_TIMEOUT_MS: i32 = 5000;
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How far each successive skip over undecodable frames of a file jumps,
/// and how many in a row are tried before the file counts as ended.
const SKIP_STEPS: [u64; 4] = [1, 5, 25, 100];
const MAX_SKIPS: usize = SKIP_STEPS.len();
/// Frame rate assumed for realtime replay when the file does not say.
const FALLBACK_FPS: f64 = 25.0;

/// Why a camera stopped or would not start; each says what to check. The
/// camera thread retries every kind with backoff.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    #[error("video file {} does not exist: fix the camera's `url`", .0.display())]
    NoFile(std::path::PathBuf),
    #[error("device {} does not exist: is the camera plugged in?", .0.display())]
    NoDevice(std::path::PathBuf),
    /// A socket, folder or device node given as a file: not a video source.
    #[error("{} is {kind}, not a video file: point the camera's `url` at a file, a FIFO, a /dev/video device or an rtsp:// stream", .path.display())]
    NotAFile { path: std::path::PathBuf, kind: &'static str },
    /// A FIFO that nothing writes to. It is not handed to OpenCV until data
    /// waits in it: OpenCV would block in open, holding its FFmpeg lock,
    /// and no other camera could open.
    #[error("nothing has written to the FIFO {} for {FIFO_WAIT:?}: start the process that feeds it", .0.display())]
    NoWriter(std::path::PathBuf),
    #[error("cannot open the FIFO {} to wait for data: {source} (may the agent's user read it?)", .path.display())]
    Fifo { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot open {url}: {source}")]
    Open { url: String, source: opencv::Error },
    /// Refused before decoding: one such frame costs hundreds of megabytes.
    #[error("{url} sends {width}×{height} frames, over the camera's `max_frame_pixels` ({max}): lower the camera's resolution or raise the limit")]
    FrameTooLarge { url: String, width: u64, height: u64, max: u64 },
    /// OpenCV said nothing opened; `hint` says what to check for this kind of source.
    #[error("cannot open {url}: {hint}")]
    NotOpened { url: String, hint: &'static str },
    #[error("{url} opened but gave no frame: is it a video file that OpenCV's FFmpeg can decode?")]
    NoFrame { url: String },
    #[error("reading {url}: {source}")]
    Read { url: String, source: opencv::Error },
    #[error("{url} stopped delivering frames: check that the camera is powered and reachable")]
    Stopped { url: String },
    #[error("cannot set up region finding: {0}")]
    RegionSetup(opencv::Error),
    #[error("finding regions in frame {frame}: {source}")]
    Regions { frame: u64, source: opencv::Error },
    #[error("cannot fill the privacy masks hidden from inference in frame {frame} ({source}): check the camera's privacy_masks polygons, or set apply_to_inference = false")]
    Masks { frame: u64, source: opencv::Error },
}

/// How a successful `run_once` ended.
enum Ended {
    /// The file ended and does not loop.
    Finished,
    /// The file ended and loops: open it again at once.
    Rewind,
    Shutdown,
}

/// A stage the camera thread shows every decoded frame to (before regions
/// are found). It runs on the camera thread, so it must never wait.
pub trait CameraTap: Send {
    fn decoded(&mut self, camera: &str, frame_index: u64, frame: &Mat);
}

pub struct CameraWorker {
    index: usize,
    config: CameraConfig,
    queue: Arc<FrameQueue>,
    stats: Arc<CameraStats>,
    shutdown: Shutdown,
    heartbeat: Arc<Heartbeat>,
    events: EventSink,
    /// Filled on each frame before anything sees it, when some mask is to be hidden from inference.
    masks: PrivacyMasks,
    taps: std::cell::RefCell<Vec<Box<dyn CameraTap>>>,
    // State below is only used by the thread in `run`.
    /// When the current outage began (set on failure, cleared on the next frame).
    lost_since: std::cell::Cell<Option<Instant>>,
    /// `config.url` without credentials, for every log line, event and error.
    shown_url: String,
}

impl CameraWorker {
    /// The camera at `index` in the config; `stats` are its counters.
    pub fn new(context: &Context, index: usize, config: CameraConfig, queue: Arc<FrameQueue>, stats: Arc<CameraStats>, heartbeat: Arc<Heartbeat>) -> CameraWorker {
        CameraWorker {
            index,
            queue,
            stats,
            shutdown: context.shutdown.clone(),
            heartbeat,
            events: context.events(),
            taps: Default::default(),
            lost_since: Default::default(),
            shown_url: config.shown_url(),
            masks: PrivacyMasks::of(&config),
            config,
        }
    }

    pub fn with_tap(self, tap: Box<dyn CameraTap>) -> CameraWorker {
        self.taps.borrow_mut().push(tap);
        self
    }

    pub fn run(self) {
        let span = tracing::info_span!("camera", id = %self.config.id);
        let _entered = span.enter();
        self.heartbeat.beat();
        self.run_until_done();
        self.heartbeat.finish();
    }

    fn run_until_done(&self) {
        let mut backoff = BACKOFF_START;
        let mut attempts = 0u64;
        loop {
            if attempts > 0 {
                CameraStats::add(&self.stats.reconnects, 1);
            }
            attempts += 1;
            self.stats.set_state(CameraState::Starting);
            let started = Instant::now();
            match self.run_once() {
                Ok(Ended::Finished) => {
                    tracing::info!(url = %self.shown_url, "file finished; set `loop = true` to replay it");
                    self.stats.set_state(CameraState::Finished);
                    return;
                }
                Ok(Ended::Shutdown) => break,
                Ok(Ended::Rewind) => {
                    backoff = BACKOFF_START;
                    continue;
                }
                Err(error) => {
                    // A source that ran for a while earns a fresh backoff.
                    if started.elapsed() > BACKOFF_MAX {
                        backoff = BACKOFF_START;
                    }
                    tracing::warn!(%error, retry_in_s = backoff.as_secs(), "camera failed; retrying");
                    if self.lost_since.get().is_none() {
                        self.lost_since.set(Some(Instant::now()));
                        let event = Event::CameraLost { camera: self.config.id.clone(), reason: error.to_string() };
                        self.heartbeat.waiting(|| self.events.send_blocking(event));
                    }
                    self.stats.set_error(Some(error.to_string()));
                    self.stats.set_state(CameraState::Retrying);
                    if self.heartbeat.waiting(|| self.shutdown.sleep(backoff)) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        self.stats.set_state(CameraState::Stopped);
    }

    fn run_once(&self) -> Result<Ended, CameraError> {
        let source = self.config.source();
        // Held until OpenCV has opened the FIFO, so the data seen stays there for it.
        let _fifo = match &source {
            SourceKind::File(path) if is_fifo(path) => match self.heartbeat.waiting(|| wait_for_data(path, &self.shutdown))? {
                Some(fifo) => Some(fifo),
                None => return Ok(Ended::Shutdown),
            },
            _ => None,
        };
        let mut capture = open(&source, &self.config.url, &self.shown_url)?;
        drop(_fifo);
        // What the container or stream declares, checked before the first decode.
        let declared = |property| capture.get(property).ok().filter(|v| v.is_finite() && *v > 0.0).unwrap_or(0.0) as u64;
        self.check_frame_size(declared(videoio::CAP_PROP_FRAME_WIDTH), declared(videoio::CAP_PROP_FRAME_HEIGHT))?;
        let detection = self.config.detection();
        let mut finder = match detection {
            // The detector runs on every frame it is due: no motion to find.
            Some(d) if !d.motion_gate => RegionFinder::Nothing,
            _ => RegionFinder::new(&self.config.regions, &self.config.motion).map_err(CameraError::RegionSetup)?,
        };
        let is_file = matches!(source, SourceKind::File(_));
        let wait_for_inference = is_file && self.config.replay == Replay::Asap;
        let pace = is_file && self.config.replay == Replay::Realtime;
        let fps = capture.get(videoio::CAP_PROP_FPS).ok().filter(|f| f.is_finite() && *f > 0.0).unwrap_or(FALLBACK_FPS);
        let frame_interval = Duration::from_secs_f64(1.0 / fps);
        let started = Instant::now();
        let mut frame_index: u64 = 0;
        let mut frame = Mat::default();
        // Frames the container says it holds (0 for live sources), and
        // consecutive attempts to skip past undecodable frames.
        let frame_count = capture.get(videoio::CAP_PROP_FRAME_COUNT).ok().filter(|n| n.is_finite() && *n > 0.0).unwrap_or(0.0) as u64;
        let mut skips = 0usize;
        // Frames without regions still go to inference: a tracker must see
        // them (that is how it knows a vehicle has gone), a detector finds its own.
        let every_frame = self.config.tracking.is_some() || detection.is_some();
        tracing::info!(url = %self.shown_url, fps, "camera opened");
        loop {
            if self.shutdown.is_triggered() {
                return Ok(Ended::Shutdown);
            }
            self.heartbeat.beat();
            let got = capture.read(&mut frame).map_err(|source| CameraError::Read { url: self.shown_url.clone(), source })?;
            if got && !frame.empty() {
                skips = 0;
                // A stream may change resolution after it opened.
                self.check_frame_size(frame.cols() as u64, frame.rows() as u64)?;
            }
            if !got || frame.empty() {
                if is_file {
                    if frame_index == 0 {
                        return Err(CameraError::NoFrame { url: self.shown_url.clone() });
                    }
                    // A damaged stretch mid-file: seek past it instead of ending the file.
                    if skips < MAX_SKIPS && frame_index + 1 < frame_count {
                        let target = (frame_index + SKIP_STEPS[skips]).min(frame_count - 1);
                        skips += 1;
                        tracing::warn!(url = %self.shown_url, frame = frame_index, skip_to = target, "undecodable frame; skipping ahead");
                        CameraStats::add(&self.stats.decode_errors, target - frame_index);
                        let _ = capture.set(videoio::CAP_PROP_POS_FRAMES, target as f64);
                        frame_index = target;
                        continue;
                    }
                    return Ok(if self.config.loop_file { Ended::Rewind } else { Ended::Finished });
                }
                return Err(CameraError::Stopped { url: self.shown_url.clone() });
            }
            if frame_index == 0 {
                self.stats.set_state(CameraState::Running);
                self.stats.set_error(None);
                if let Some(since) = self.lost_since.take() {
                    let down_s = since.elapsed().as_secs_f64();
                    tracing::info!(down_s, "camera back");
                    let event = Event::CameraBack { camera: self.config.id.clone(), down_s };
                    self.heartbeat.waiting(|| self.events.send_blocking(event));
                }
            }
            let captured_at = SystemTime::now();
            CameraStats::add(&self.stats.frames_in, 1);
            if self.masks.hides_from_inference() {
                self.masks.hide_from_inference(&mut frame).map_err(|source| CameraError::Masks { frame: frame_index, source })?;
            }
            for tap in self.taps.borrow_mut().iter_mut() {
                tap.decoded(&self.config.id, frame_index, &frame);
            }
            let regions = finder
                .find(&frame, self.config.max_regions)
                .map_err(|source| CameraError::Regions { frame: frame_index, source })?;
            if regions.is_empty() {
                CameraStats::add(&self.stats.frames_without_regions, 1);
            }
            if !regions.is_empty() || every_frame {
                // The queue takes the frame; decode the next one into a recycled buffer.
                let decoded = std::mem::replace(&mut frame, self.queue.take_spare());
                let clock_s = if is_file { frame_index as f64 / fps } else { started.elapsed().as_secs_f64() };
                let job = FrameJob { camera: self.index, frame_index, captured_at, clock_s, frame: decoded, regions };
                if wait_for_inference {
                    if !self.heartbeat.waiting(|| self.queue.push_wait(job)) {
                        return Ok(Ended::Shutdown);
                    }
                } else {
                    CameraStats::add(&self.stats.frames_dropped, self.queue.push_latest(job));
                }
            }
            frame_index += 1;
            if pace {
                let due = frame_interval * frame_index as u32;
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    if self.heartbeat.waiting(|| self.shutdown.sleep(wait)) {
                        return Ok(Ended::Shutdown);
                    }
                }
            }
        }
    }
}

impl CameraWorker {
    fn check_frame_size(&self, width: u64, height: u64) -> Result<(), CameraError> {
        let max = self.config.max_frame_pixels;
        if width.saturating_mul(height) > max {
            return Err(CameraError::FrameTooLarge { url: self.shown_url.clone(), width, height, max });
        }
        Ok(())
    }
}

/// How long a FIFO may stay silent before the camera counts as failed (and
/// is retried with backoff like any other).
const FIFO_WAIT: Duration = Duration::from_secs(5);

fn is_fifo(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// Waits until data waits in the FIFO at `path`, without reading it: opened
/// non-blocking (which never waits for a writer) and polled. Returns the
/// open FIFO, to hold while OpenCV opens it too; `None` on shutdown.
fn wait_for_data(path: &std::path::Path, shutdown: &Shutdown) -> Result<Option<std::fs::File>, CameraError> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| CameraError::Fifo { path: path.to_path_buf(), source })?;
    let started = Instant::now();
    while started.elapsed() < FIFO_WAIT {
        if shutdown.is_triggered() {
            return Ok(None);
        }
        let mut poll = libc::pollfd { fd: fifo.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for a file that stays open across the call.
        let ready = unsafe { libc::poll(&mut poll, 1, 200) };
        if ready > 0 && poll.revents & libc::POLLIN != 0 {
            return Ok(Some(fifo));
        }
        if ready > 0 {
            // A writer came and went (POLLHUP): poll would not wait again on this open.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Err(CameraError::NoWriter(path.to_path_buf()))
}

/// What kind of special file `file_type` is, or `None` for a regular file or a FIFO.
fn special_kind(file_type: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_file() || file_type.is_fifo() {
        None
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_dir() {
        Some("a folder")
    } else {
        Some("a device")
    }
}

/// Opens a source with OpenCV; a source that did not open is an error that
/// says what to check.
/// `shown` is `url` without credentials, for the errors.
fn open(source: &SourceKind, url: &str, shown: &str) -> Result<VideoCapture, CameraError> {
    let capture = match source {
        SourceKind::File(path) => {
            // stat, unlike open, never waits on a FIFO's writer (run_once waited for its data).
            let Ok(metadata) = std::fs::metadata(path) else {
                return Err(CameraError::NoFile(path.clone()));
            };
            if let Some(kind) = special_kind(metadata.file_type()) {
                return Err(CameraError::NotAFile { path: path.clone(), kind });
            }
            VideoCapture::from_file(url, videoio::CAP_ANY)
        }
        SourceKind::Device(path) => {
            if !path.exists() {
                return Err(CameraError::NoDevice(path.clone()));
            }
            VideoCapture::from_file(url, videoio::CAP_V4L2)
        }
        SourceKind::Stream(_) => {
            // Timeouts only work as open-time parameters of the FFmpeg backend.
            let params = Vector::from_slice(&[
                videoio::CAP_PROP_OPEN_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
                videoio::CAP_PROP_READ_TIMEOUT_MSEC,
                STREAM_TIMEOUT_MS,
            ]);
            VideoCapture::from_file_with_params(url, videoio::CAP_FFMPEG, &params)
        }
    }
    .map_err(|source| CameraError::Open { url: shown.to_string(), source })?;
    // OpenCV returns Ok even when nothing opened.
    if !capture.is_opened().unwrap_or(false) {
        let hint = match source {
            SourceKind::File(_) => "is it a video file that OpenCV's FFmpeg can decode?",
            SourceKind::Device(_) => "is it a V4L2 capture device, and may the agent's user open it?",
            SourceKind::Stream(_) => "check the URL, the credentials, and that the camera is reachable",
        };
        return Err(CameraError::NotOpened { url: shown.to_string(), hint });
    }
    Ok(capture)
}
