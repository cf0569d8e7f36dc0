//! Samples for retraining: JPEG crops of regions with their metadata.
//!
//! The inference thread cuts a small RGB crop of each region worth saving
//! (low confidence, a small random share, both at most `max_per_hour`) and,
//! while feedback flows, of every region, and offers it (never waiting: a
//! full channel drops the crop, counted). A tracked camera's frames are not
//! sampled: each of its vehicles is, once, by the best view of its track,
//! under the same rules (its consensus score is its confidence), so the
//! trainer gets one example per vehicle rather than a hundred near-copies.
//! The sampler thread encodes it (the `image` crate) and keeps the latest
//! `recent` region crops and, apart, the latest `recent` vehicle crops in
//! memory, so that a region or vehicle the feedback later marks wrong can
//! still be saved. It saves those worth saving and those marked wrong, as
//! `<id>.jpg` + `<id>.json` in `samples.dir`, oldest deleted first to stay
//! within `max_bytes`. Each saved sample is published on
//! `…/samples/<id>` in chunks through the outbox (see `docs/mqtt.md`).

use base64::Engine;
use opencv::core::{Mat, Rect, Size};
use opencv::imgproc;
use opencv::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::WeakSender;

use crate::config::{CameraConfig, SamplesConfig};
use crate::privacy::PrivacyMasks;
use crate::util::fs::FileError;
use crate::infer::{ModelIdentity, RegionPrediction};
use crate::wire::rfc3339;
use crate::wire::vehicles::VehicleMessage;
use crate::publish::Outgoing;

/// Raw JPEG bytes per published chunk (base64 makes each message ~43 KiB).
pub const CHUNK_BYTES: usize = 32 << 10;
/// Crops and requests waiting for the sampler thread.
const QUEUE: usize = 64;
const JPEG_QUALITY: u8 = 85;

/// A crop of a region or of a vehicle's best view, and what was predicted for it.
#[derive(Debug)]
pub struct Crop {
    pub of: CropOf,
    pub camera: String,
    /// A region's frame; a vehicle's last sighting (see `SampleMeta`).
    pub captured_at: SystemTime,
    pub frame_index: u64,
    pub model: Arc<ModelIdentity>,
    /// Saved at once for this reason; `None`: kept only in case feedback marks it wrong.
    pub reason: Option<Reason>,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

#[derive(Debug)]
pub enum CropOf {
    Region { prediction_id: u64, region: usize, prediction: RegionPrediction },
    Vehicle { track: String, view: VehicleView },
}

#[derive(Debug)]
pub enum SamplerInput {
    Crop(Box<Crop>),
    /// Feedback said this region was wrong: save it with the true class.
    MarkedWrong { prediction_id: u64, region: usize, seq: u64, truth: String },
    /// Feedback said this vehicle was another class: save its best view with the true class.
    VehicleMarkedWrong { track: String, truth: String },
}

#[derive(Debug, Default)]
pub struct SampleStats {
    pub saved: AtomicU64,
    pub bytes: AtomicU64,
    pub files: AtomicU64,
    /// Deleted to stay within the budget.
    pub evicted: AtomicU64,
    /// Crops not taken because the sampler was behind.
    pub dropped: AtomicU64,
    /// Low-confidence or random samples skipped by `max_per_hour`.
    pub rate_limited: AtomicU64,
    /// Regions and vehicles marked wrong whose crop was no longer in memory.
    pub missed: AtomicU64,
    pub write_errors: AtomicU64,
    /// Unix seconds of the last feedback message (0: none yet); set by the
    /// monitor. Crops for late feedback are kept only while feedback flows.
    pub last_feedback: AtomicU64,
}

/// Crops for late feedback are kept this long after the last feedback message.
const FEEDBACK_FLOWING: Duration = Duration::from_secs(3600);

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub use crate::wire::telemetry::SampleFigures;

impl SampleStats {
    /// The monitor heard feedback now.
    pub fn feedback_arrived(&self) {
        self.last_feedback.store(unix_seconds(), Ordering::Relaxed);
    }

    fn feedback_flowing(&self) -> bool {
        let last = self.last_feedback.load(Ordering::Relaxed);
        last > 0 && unix_seconds().saturating_sub(last) < FEEDBACK_FLOWING.as_secs()
    }
}

impl SampleStats {
    pub fn figures(&self) -> SampleFigures {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SampleFigures {
            saved: get(&self.saved),
            files: get(&self.files),
            bytes: get(&self.bytes),
            evicted: get(&self.evicted),
            dropped: get(&self.dropped),
            rate_limited: get(&self.rate_limited),
            missed: get(&self.missed),
            write_errors: get(&self.write_errors),
        }
    }
}

/// The inference thread's side: decides what to crop and offers it. The
/// hourly limit is applied here, before any pixel is copied. Its clones (the
/// frame tap and the vehicle tap) share that limit.
#[derive(Clone)]
pub struct SampleTap {
    tx: SyncSender<SamplerInput>,
    stats: Arc<SampleStats>,
    max_side: u32,
    low_confidence_below: f32,
    random_rate: f64,
    max_per_hour: usize,
    /// When each sample of the last hour was let through (only the inference thread locks it).
    saved_this_hour: Arc<Mutex<VecDeque<Instant>>>,
    /// Crop every region for late feedback: never (`recent = 0`), always,
    /// or while feedback flows.
    keep_recent: KeepRecent,
    /// Each camera's privacy masks, filled on every region crop.
    masks: Arc<HashMap<String, PrivacyMasks>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeepRecent {
    Never,
    Always,
    WhileFeedbackFlows,
}

impl SampleTap {
    /// Crops `region` of `frame` when it is worth keeping; never waits.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        frame: &Mat,
        prediction_id: u64,
        camera: &str,
        captured_at: SystemTime,
        frame_index: u64,
        region: usize,
        model: &Arc<ModelIdentity>,
        prediction: &RegionPrediction,
    ) {
        let reason = self.reason_to_save(prediction.score);
        let keep = match self.keep_recent {
            KeepRecent::Never => false,
            KeepRecent::Always => true,
            KeepRecent::WhileFeedbackFlows => self.stats.feedback_flowing(),
        };
        if reason.is_none() && !keep {
            return;
        }
        let [x, y, w, h] = prediction.bbox;
        let no_masks = PrivacyMasks::default();
        let masks = self.masks.get(camera).unwrap_or(&no_masks);
        let (width, height, rgb) = match crop_rgb(frame, Rect::new(x, y, w, h), self.max_side, masks) {
            Ok(crop) => crop,
            Err(error) => {
                tracing::debug!(%error, camera, frame_index, "cannot crop a region for samples");
                return;
            }
        };
        self.send(Crop {
            of: CropOf::Region { prediction_id, region, prediction: prediction.clone() },
            camera: camera.to_string(),
            captured_at,
            frame_index,
            model: model.clone(),
            reason,
            width,
            height,
            rgb,
        });
    }

    /// A tracked vehicle's best view (BGR), once, when its track has ended;
    /// never waits. One crop per vehicle is cheap, so it is kept for late
    /// feedback whenever `recent` is on, feedback flowing or not.
    pub fn offer_vehicle(&mut self, vehicle: &VehicleMessage, best_view: Option<&Mat>) {
        let Some(view) = best_view else {
            tracing::debug!(track = %vehicle.track, "a vehicle without a best view: nothing to sample");
            return;
        };
        let reason = self.reason_to_save(vehicle.score);
        if reason.is_none() && self.keep_recent == KeepRecent::Never {
            return;
        }
        // Its masks were filled when the pipeline kept it (`pipeline::vehicles`).
        let (width, height, rgb) = match crop_rgb(view, Rect::new(0, 0, view.cols(), view.rows()), self.max_side, &PrivacyMasks::default()) {
            Ok(crop) => crop,
            Err(error) => {
                tracing::debug!(%error, track = %vehicle.track, "cannot crop a vehicle for samples");
                return;
            }
        };
        // The message says when the vehicle was last seen, not when its best view was.
        let captured_at = humantime::parse_rfc3339(&vehicle.last_seen).unwrap_or_else(|_| SystemTime::now());
        let view = VehicleView { bbox: vehicle.bbox, class: vehicle.class.clone(), score: vehicle.score, votes: vehicle.votes.clone() };
        self.send(Crop {
            of: CropOf::Vehicle { track: vehicle.track.clone(), view },
            camera: vehicle.camera.clone(),
            captured_at,
            frame_index: vehicle.best_frame,
            model: Arc::new(vehicle.model.clone()),
            reason,
            width,
            height,
            rgb,
        });
    }

    /// Low confidence or the random share, within the hourly limit.
    fn reason_to_save(&mut self, score: f32) -> Option<Reason> {
        let reason = if score < self.low_confidence_below {
            Reason::LowConfidence
        } else if self.random_rate > 0.0 && fastrand::f64() < self.random_rate {
            Reason::Random
        } else {
            return None;
        };
        if self.within_hourly_limit() {
            Some(reason)
        } else {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    fn send(&self, crop: Crop) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(SamplerInput::Crop(Box::new(crop))) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn within_hourly_limit(&mut self) -> bool {
        let now = Instant::now();
        let mut saved = self.saved_this_hour.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while saved.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3600)) {
            saved.pop_front();
        }
        if saved.len() >= self.max_per_hour {
            return false;
        }
        saved.push_back(now);
        true
    }
}

/// `rect` of a BGR frame, its privacy `masks` filled (on a copy: the frame
/// is left as it is), scaled to fit `max_side`, as packed RGB.
pub fn crop_rgb(frame: &Mat, rect: Rect, max_side: u32, masks: &PrivacyMasks) -> opencv::Result<(u32, u32, Vec<u8>)> {
    let rect = rect & Rect::new(0, 0, frame.cols(), frame.rows());
    if rect.width <= 0 || rect.height <= 0 {
        return Err(opencv::Error::new(opencv::core::StsBadArg, "region outside the frame".to_string()));
    }
    let region = Mat::roi(frame, rect)?;
    if masks.is_empty() {
        return scaled_rgb(&region, rect, max_side);
    }
    let mut masked = region.try_clone()?;
    masks.hide(&mut masked, rect.tl())?;
    scaled_rgb(&masked, rect, max_side)
}

fn scaled_rgb(region: &impl opencv::core::ToInputArray, rect: Rect, max_side: u32) -> opencv::Result<(u32, u32, Vec<u8>)> {
    let longer = rect.width.max(rect.height) as f64;
    let scale = (max_side as f64 / longer).min(1.0);
    let size = Size::new(((rect.width as f64 * scale).round() as i32).max(1), ((rect.height as f64 * scale).round() as i32).max(1));
    let scaled = shrink(region, size)?;
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(&scaled, &mut rgb, imgproc::COLOR_BGR2RGB)?;
    Ok((size.width as u32, size.height as u32, rgb.data_bytes()?.to_vec()))
}

/// Scales down to `size`. INTER_AREA alone costs ~10 ms on a 1920×1200
/// frame at a non-integer factor; bilinear to twice the size first, then
/// area-averaging by exactly 2, gives nearly its quality in ~0.4 ms.
pub fn shrink(image: &impl opencv::core::ToInputArray, size: Size) -> opencv::Result<Mat> {
    let input = image.input_array()?;
    let from = input.size(-1)?;
    let mut out = Mat::default();
    if from.width > 4 * size.width && from.height > 4 * size.height {
        let mut half = Mat::default();
        imgproc::resize(image, &mut half, Size::new(size.width * 2, size.height * 2), 0.0, 0.0, imgproc::INTER_LINEAR)?;
        imgproc::resize(&half, &mut out, size, 0.0, 0.0, imgproc::INTER_AREA)?;
    } else {
        imgproc::resize(image, &mut out, size, 0.0, 0.0, imgproc::INTER_AREA)?;
    }
    Ok(out)
}

/// A sample's name: capture time (ms), camera, frame and region. Sorting
/// names sorts samples by capture time.
pub fn sample_id(captured_at: SystemTime, camera: &str, frame_index: u64, region: usize) -> String {
    format!("{:013}-{}-{frame_index}-{region}", unix_ms(captured_at), crate::util::fs::file_safe(camera))
}

/// A vehicle's sample name: time (ms), its track (unique on the device), and
/// `vehicle`, which no region's name ends with (theirs end in a digit).
pub fn vehicle_sample_id(captured_at: SystemTime, track: &str) -> String {
    format!("{:013}-{}-vehicle", unix_ms(captured_at), crate::util::fs::file_safe(track))
}

fn unix_ms(time: SystemTime) -> u128 {
    time.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}


struct Encoded {
    crop: Box<Crop>,
    jpeg: Vec<u8>,
}

pub use crate::wire::samples::{Predicted, Reason, SampleChunk, SampleMeta, VehicleView};

pub struct Sampler {
    config: SamplesConfig,
    device_id: String,
    /// `…/samples/` (the id follows).
    topic_prefix: String,
    publisher: WeakSender<Outgoing>,
    stats: Arc<SampleStats>,
    /// The latest region crops, for late feedback.
    recent: VecDeque<Encoded>,
    /// The latest vehicles' crops, apart: a busy untracked camera's regions
    /// would push them out within seconds, and a vehicle's label may come later.
    recent_vehicles: VecDeque<Encoded>,
    /// Saved samples on disk, oldest first: (id, bytes of both files).
    on_disk: VecDeque<(String, u64)>,
    /// A full or read-only disk fails every save: one line per interval.
    write_error_log: crate::util::throttle::Throttle,
}

impl Sampler {
    /// Figures shared with the monitor and telemetry.
    pub fn stats(&self) -> Arc<SampleStats> {
        self.stats.clone()
    }

    /// The thread's state and the inference thread's tap, which fills the
    /// `cameras`' privacy masks on every crop it takes.
    pub fn new(config: SamplesConfig, cameras: &[CameraConfig], device_id: String, topic_prefix: String, publisher: WeakSender<Outgoing>) -> (Sampler, SampleTap, SyncSender<SamplerInput>, Receiver<SamplerInput>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stats = Arc::new(SampleStats::default());
        let tap = SampleTap {
            tx: tx.clone(),
            stats: stats.clone(),
            max_side: config.max_side,
            low_confidence_below: config.low_confidence_below,
            random_rate: config.random_rate,
            max_per_hour: config.max_per_hour as usize,
            saved_this_hour: Default::default(),
            keep_recent: match (config.recent, config.recent_before_feedback) {
                (0, _) => KeepRecent::Never,
                (_, true) => KeepRecent::Always,
                (_, false) => KeepRecent::WhileFeedbackFlows,
            },
            masks: Arc::new(cameras.iter().map(|c| (c.id.clone(), PrivacyMasks::of(c))).collect()),
        };
        let sampler = Sampler {
            config,
            device_id,
            topic_prefix,
            publisher,
            stats,
            recent: VecDeque::new(),
            recent_vehicles: VecDeque::new(),
            on_disk: VecDeque::new(),
            write_error_log: crate::util::throttle::Throttle::for_warnings(),
        };
        (sampler, tap, tx, rx)
    }

    /// Runs until every sender is gone.
    pub fn run(mut self, inputs: Receiver<SamplerInput>) {
        if let Err(error) = crate::util::fs::create_private_dir_all(&self.config.dir) {
            tracing::error!(dir = %self.config.dir.display(), %error, "cannot create the samples folder; samples are not saved: make samples.dir writable");
        }
        self.on_disk = existing_samples(&self.config.dir);
        self.stats.files.store(self.on_disk.len() as u64, Ordering::Relaxed);
        self.stats.bytes.store(self.on_disk.iter().map(|(_, b)| b).sum(), Ordering::Relaxed);
        self.enforce_budget();
        for input in inputs {
            match input {
                SamplerInput::Crop(crop) => self.take(crop),
                SamplerInput::MarkedWrong { prediction_id, region, seq, truth } => {
                    let found = self.recent.iter().position(|e| matches!(e.crop.of, CropOf::Region { prediction_id: p, region: r, .. } if p == prediction_id && r == region));
                    match found.and_then(|at| self.recent.remove(at)) {
                        Some(encoded) => self.save(&encoded, Reason::FeedbackWrong, Some(seq), Some(truth)),
                        None => {
                            self.stats.missed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(seq, region, "region marked wrong is no longer in memory; raise samples.recent to keep more");
                        }
                    }
                }
                SamplerInput::VehicleMarkedWrong { track, truth } => {
                    let found = self.recent_vehicles.iter().position(|e| matches!(&e.crop.of, CropOf::Vehicle { track: t, .. } if *t == track));
                    match found.and_then(|at| self.recent_vehicles.remove(at)) {
                        Some(encoded) => self.save(&encoded, Reason::FeedbackWrong, None, Some(truth)),
                        None => {
                            self.stats.missed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%track, "vehicle marked wrong is no longer in memory; raise samples.recent to keep more");
                        }
                    }
                }
            }
        }
    }

    fn take(&mut self, mut crop: Box<Crop>) {
        let jpeg = match encode_jpeg(&crop) {
            Ok(jpeg) => jpeg,
            Err(error) => {
                tracing::warn!(%error, camera = %crop.camera, "cannot encode a sample");
                return;
            }
        };
        // Kept for late feedback as JPEG only: the raw pixels take many times more memory.
        crop.rgb = Vec::new();
        let encoded = Encoded { crop, jpeg };
        if let Some(reason) = encoded.crop.reason {
            self.save(&encoded, reason, None, None);
        }
        if self.config.recent > 0 {
            let ring = match encoded.crop.of {
                CropOf::Region { .. } => &mut self.recent,
                CropOf::Vehicle { .. } => &mut self.recent_vehicles,
            };
            ring.push_back(encoded);
            while ring.len() > self.config.recent {
                ring.pop_front();
            }
        }
    }

    fn save(&mut self, encoded: &Encoded, reason: Reason, seq: Option<u64>, truth: Option<String>) {
        let crop = &encoded.crop;
        let (id, region, track, prediction) = match &crop.of {
            CropOf::Region { region, prediction, .. } => {
                (sample_id(crop.captured_at, &crop.camera, crop.frame_index, *region), Some(*region), None, Predicted::Region(prediction.clone()))
            }
            CropOf::Vehicle { track, view } => (vehicle_sample_id(crop.captured_at, track), None, Some(track.clone()), Predicted::Vehicle(view.clone())),
        };
        let meta = SampleMeta {
            id: id.clone(),
            reason,
            device: self.device_id.clone(),
            camera: crop.camera.clone(),
            captured_at: rfc3339(crop.captured_at),
            frame_index: crop.frame_index,
            region,
            track,
            model: (*crop.model).clone(),
            prediction,
            seq,
            truth,
            saved_at: rfc3339(SystemTime::now()),
            width: crop.width,
            height: crop.height,
            jpeg_bytes: encoded.jpeg.len(),
        };
        let json = serde_json::to_vec_pretty(&meta).unwrap_or_default();
        if let Err(error) = write_sample(&self.config.dir, &id, &encoded.jpeg, &json) {
            self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.write_error_log.allow() {
                tracing::warn!(dir = %self.config.dir.display(), %error, suppressed, "cannot save a sample; check samples.dir and free space");
            }
            return;
        }
        let bytes = (encoded.jpeg.len() + json.len()) as u64;
        self.on_disk.retain(|(existing, _)| *existing != id);
        self.on_disk.push_back((id.clone(), bytes));
        self.stats.saved.fetch_add(1, Ordering::Relaxed);
        self.stats.files.store(self.on_disk.len() as u64, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.enforce_budget();
        tracing::debug!(%id, ?reason, "sample saved");
        if self.config.publish {
            self.publish(&id, &meta, &encoded.jpeg);
        }
    }

    fn enforce_budget(&mut self) {
        while self.stats.bytes.load(Ordering::Relaxed) > self.config.max_bytes {
            let Some((id, bytes)) = self.on_disk.pop_front() else { break };
            for extension in ["jpg", "json"] {
                let _ = std::fs::remove_file(self.config.dir.join(format!("{id}.{extension}")));
            }
            self.stats.bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.files.store(self.on_disk.len() as u64, Ordering::Relaxed);
    }

    /// Chunks of at most `CHUNK_BYTES` JPEG bytes; part 0 carries the metadata.
    fn publish(&self, id: &str, meta: &SampleMeta, jpeg: &[u8]) {
        let Some(publisher) = self.publisher.upgrade() else { return };
        let parts = jpeg.len().div_ceil(CHUNK_BYTES).max(1);
        for (part, bytes) in jpeg.chunks(CHUNK_BYTES).enumerate() {
            let chunk = SampleChunk {
                sample: id,
                part,
                parts,
                meta: (part == 0).then_some(meta),
                jpeg_base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            };
            let body = serde_json::to_vec(&chunk).unwrap_or_default();
            if publisher.blocking_send(Outgoing::stored(format!("{}{id}", self.topic_prefix), body)).is_err() {
                return;
            }
        }
    }
}

/// Why a sample was not kept (it is counted and logged, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Encode(#[from] image::ImageError),
    #[error(transparent)]
    Write(#[from] FileError),
}

fn encode_jpeg(crop: &Crop) -> Result<Vec<u8>, SampleError> {
    let mut jpeg = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY);
    encoder.encode(&crop.rgb, crop.width, crop.height, image::ExtendedColorType::Rgb8)?;
    Ok(jpeg)
}

/// Each file written under a temporary name and renamed: a crash leaves no half sample.
fn write_sample(dir: &Path, id: &str, jpeg: &[u8], json: &[u8]) -> Result<(), SampleError> {
    crate::util::fs::write_atomically(&dir.join(format!("{id}.jpg")), jpeg)?;
    crate::util::fs::write_atomically(&dir.join(format!("{id}.json")), json)?;
    Ok(())
}

/// Samples a previous run saved, oldest first.
fn existing_samples(dir: &Path) -> VecDeque<(String, u64)> {
    let mut found: std::collections::BTreeMap<String, u64> = Default::default();
    let Ok(entries) = std::fs::read_dir(dir) else { return VecDeque::new() };
    for entry in entries.flatten() {
        let path: PathBuf = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".tmp") {
            let _ = std::fs::remove_file(&path); // a crash's leftover
            continue;
        }
        let Some(id) = name.strip_suffix(".jpg").or_else(|| name.strip_suffix(".json")) else { continue };
        *found.entry(id.to_string()).or_default() += entry.metadata().map(|m| m.len()).unwrap_or(0);
    }
    found.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC3};

    fn prediction(score: f32) -> RegionPrediction {
        RegionPrediction {
            bbox: [10, 20, 100, 50],
            class: "car".into(),
            score,
            top_k: vec![crate::infer::TopK { index: 1, label: "cab".into(), score }],
            margin: 0.1,
            entropy: 0.5,
            road_scores: vec![],
            track: None,
            detector: None,
        }
    }

    #[test]
    fn crops_the_region_scaled_to_max_side_as_rgb() {
        // Blue (BGR) left half, red right half.
        let mut frame = Mat::new_rows_cols_with_default(100, 200, CV_8UC3, Scalar::new(255.0, 0.0, 0.0, 0.0)).unwrap();
        let mut right = Mat::roi_mut(&mut frame, Rect::new(100, 0, 100, 100)).unwrap();
        right.set_to_def(&Scalar::new(0.0, 0.0, 255.0, 0.0)).unwrap();
        let (w, h, rgb) = crop_rgb(&frame, Rect::new(100, 0, 100, 100), 32, &PrivacyMasks::default()).unwrap();
        assert_eq!((w, h, rgb.len()), (32, 32, 32 * 32 * 3));
        assert_eq!(&rgb[..3], &[255, 0, 0], "red, in RGB order");
        // A box partly outside the frame is clipped, not refused.
        assert_eq!(crop_rgb(&frame, Rect::new(150, 50, 100, 100), 256, &PrivacyMasks::default()).unwrap().0, 50);
        assert!(crop_rgb(&frame, Rect::new(300, 300, 10, 10), 256, &PrivacyMasks::default()).is_err());
    }

    #[test]
    fn saves_within_the_budget_oldest_first_and_recovers_a_region_marked_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let config = SamplesConfig { dir: dir.path().to_path_buf(), max_bytes: 40_000, recent: 5, publish: false, ..Default::default() };
        let (never, _) = tokio::sync::mpsc::channel::<Outgoing>(1);
        let (sampler, tap, tx, rx) = Sampler::new(config, &[], "dev".into(), "t/".into(), never.downgrade());
        drop(tap); // holds a sender: the thread would never end
        let stats = sampler.stats.clone();
        let model = Arc::new(ModelIdentity { name: "m".into(), version: "1".into(), sha256: "s".into() });
        let noise: Vec<u8> = (0..64 * 64 * 3).map(|_| fastrand::u8(..)).collect();
        let thread = std::thread::spawn(move || sampler.run(rx));
        for i in 0..12u64 {
            let crop = Crop {
                of: CropOf::Region { prediction_id: i, region: 0, prediction: prediction(0.1) },
                camera: "cam 1".into(),
                captured_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i),
                frame_index: i,
                model: model.clone(),
                reason: (i < 10).then_some(Reason::LowConfidence),
                width: 64,
                height: 64,
                rgb: noise.clone(),
            };
            tx.send(SamplerInput::Crop(Box::new(crop))).unwrap();
        }
        tx.send(SamplerInput::MarkedWrong { prediction_id: 11, region: 0, seq: 99, truth: "truck".into() }).unwrap();
        tx.send(SamplerInput::MarkedWrong { prediction_id: 0, region: 0, seq: 1, truth: "truck".into() }).unwrap();
        drop(tx);
        thread.join().unwrap();

        let figures = stats.figures();
        assert_eq!((figures.saved, figures.missed), (11, 1), "{figures:?}");
        let total: u64 = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(total <= 40_000 && total == figures.bytes, "{total} bytes on disk, {figures:?}");
        assert!(figures.evicted > 0);
        let newest = sample_id(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_011), "cam 1", 11, 0);
        assert!(newest.contains("-cam_201-11-0"));
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(format!("{newest}.json"))).unwrap()).unwrap();
        assert_eq!((meta["reason"].as_str(), meta["truth"].as_str(), meta["seq"].as_u64()), (Some("feedback_wrong"), Some("truck"), Some(99)));
        let jpeg = image::load_from_memory(&std::fs::read(dir.path().join(format!("{newest}.jpg"))).unwrap()).unwrap();
        assert_eq!((jpeg.width(), jpeg.height()), (64, 64));
        // The oldest went first.
        assert!(!dir.path().join(format!("{}.jpg", sample_id(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000), "cam 1", 0, 0))).exists());
    }

    fn vehicle_message(track: &str, score: f32) -> VehicleMessage {
        VehicleMessage {
            device: "dev".into(),
            camera: "road".into(),
            track: track.into(),
            class: "van".into(),
            score,
            votes: [("van".to_string(), 7), ("car".to_string(), 2)].into(),
            first_seen: "2026-11-27T10:28:10.000Z".into(),
            last_seen: "2026-11-27T10:28:12.412Z".into(),
            frames: 12,
            classified_frames: 9,
            lane: Some("east".into()),
            crossings: vec![],
            speed_kmh: None,
            bbox: [100, 40, 120, 60],
            best_frame: 41,
            model: ModelIdentity { name: "m".into(), version: "1".into(), sha256: "s".into() },
            detector: None,
        }
    }

    fn best_view() -> Mat {
        Mat::new_rows_cols_with_default(60, 120, CV_8UC3, Scalar::new(0.0, 0.0, 255.0, 0.0)).unwrap()
    }

    fn crops(rx: &Receiver<SamplerInput>) -> Vec<Box<Crop>> {
        rx.try_iter().filter_map(|input| if let SamplerInput::Crop(crop) = input { Some(crop) } else { None }).collect()
    }

    #[test]
    fn a_vehicle_is_offered_once_by_its_consensus_score_within_the_hourly_limit_the_frame_tap_shares() {
        let config = SamplesConfig { recent: 0, random_rate: 0.0, low_confidence_below: 0.5, max_per_hour: 2, ..Default::default() };
        let (never, _) = tokio::sync::mpsc::channel::<Outgoing>(1);
        let (sampler, mut frames, _tx, rx) = Sampler::new(config, &[], "dev".into(), "t/".into(), never.downgrade());
        let mut vehicles = frames.clone();
        vehicles.offer_vehicle(&vehicle_message("road-1", 0.9), Some(&best_view()));
        assert!(crops(&rx).is_empty(), "a confident vehicle is not saved (random_rate 0, recent 0)");
        vehicles.offer_vehicle(&vehicle_message("road-2", 0.3), Some(&best_view()));
        vehicles.offer_vehicle(&vehicle_message("road-3", 0.3), None);
        let offered = crops(&rx);
        assert_eq!(offered.len(), 1);
        let crop = &offered[0];
        assert!(matches!(&crop.of, CropOf::Vehicle { track, view } if track == "road-2" && view.class == "van" && view.bbox == [100, 40, 120, 60]));
        assert_eq!((crop.reason, crop.frame_index, crop.width, crop.height), (Some(Reason::LowConfidence), 41, 120, 60));
        assert_eq!(rfc3339(crop.captured_at), "2026-11-27T10:28:12.412Z");
        assert_eq!(&crop.rgb[..3], &[255, 0, 0], "red, in RGB order");
        // The frame tap spent the last of the hour's budget: the next vehicle waits.
        let frame = Mat::new_rows_cols_with_default(100, 200, CV_8UC3, Scalar::all(0.0)).unwrap();
        let model = Arc::new(ModelIdentity { name: "m".into(), version: "1".into(), sha256: "s".into() });
        frames.offer(&frame, 1, "side", SystemTime::now(), 1, 0, &model, &prediction(0.1));
        assert_eq!(crops(&rx).len(), 1);
        vehicles.offer_vehicle(&vehicle_message("road-4", 0.3), Some(&best_view()));
        assert!(crops(&rx).is_empty());
        assert_eq!(sampler.stats.figures().rate_limited, 1);
    }

    #[test]
    fn a_vehicle_marked_wrong_is_saved_with_its_track_and_true_class_though_regions_flooded_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let config = SamplesConfig { dir: dir.path().to_path_buf(), recent: 3, recent_before_feedback: false, publish: false, random_rate: 0.0, low_confidence_below: 0.0, ..Default::default() };
        let (never, _) = tokio::sync::mpsc::channel::<Outgoing>(1);
        let (sampler, mut tap, tx, rx) = Sampler::new(config, &[], "dev".into(), "t/".into(), never.downgrade());
        let stats = sampler.stats();
        // Kept for late feedback although no feedback has come yet (one crop per vehicle is cheap).
        tap.offer_vehicle(&vehicle_message("road-7", 0.9), Some(&best_view()));
        drop(tap);
        let thread = std::thread::spawn(move || sampler.run(rx));
        let model = Arc::new(ModelIdentity { name: "m".into(), version: "1".into(), sha256: "s".into() });
        for i in 0..10u64 {
            let crop = Crop {
                of: CropOf::Region { prediction_id: i, region: 0, prediction: prediction(0.9) },
                camera: "side".into(),
                captured_at: SystemTime::now(),
                frame_index: i,
                model: model.clone(),
                reason: None,
                width: 8,
                height: 8,
                rgb: vec![0; 8 * 8 * 3],
            };
            tx.send(SamplerInput::Crop(Box::new(crop))).unwrap();
        }
        tx.send(SamplerInput::VehicleMarkedWrong { track: "road-7".into(), truth: "truck".into() }).unwrap();
        tx.send(SamplerInput::VehicleMarkedWrong { track: "road-8".into(), truth: "truck".into() }).unwrap();
        drop(tx);
        thread.join().unwrap();

        assert_eq!((stats.figures().saved, stats.figures().missed), (1, 1), "{:?}", stats.figures());
        let id = vehicle_sample_id(humantime::parse_rfc3339("2026-11-27T10:28:12.412Z").unwrap(), "road-7");
        assert_eq!(id, "1795775292412-road-7-vehicle");
        let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join(format!("{id}.json"))).unwrap()).unwrap();
        assert_eq!((meta["reason"].as_str(), meta["track"].as_str(), meta["truth"].as_str()), (Some("feedback_wrong"), Some("road-7"), Some("truck")));
        assert_eq!((meta["class"].as_str(), meta["frame_index"].as_u64(), meta["votes"]["van"].as_u64()), (Some("van"), Some(41), Some(7)));
        assert!(meta.get("region").is_none() && meta.get("seq").is_none() && meta.get("top_k").is_none(), "{meta}");
        let jpeg = image::load_from_memory(&std::fs::read(dir.path().join(format!("{id}.jpg"))).unwrap()).unwrap();
        assert_eq!((jpeg.width(), jpeg.height()), (120, 60));
    }
}
