//! Samples for retraining: JPEG crops of regions with their metadata.
//!
//! The inference thread cuts a small RGB crop of each region worth saving
//! (low confidence, a small random share, both at most `max_per_hour`) and,
//! while feedback flows, of every region, and offers it (never waiting: a
//! full channel drops the crop, counted). The sampler thread encodes it (the
//! `image` crate) and keeps the latest `recent` crops in memory, so that a
//! region the feedback later marks wrong can still be saved. It saves the
//! regions worth saving and those marked wrong, as
//! `<id>.jpg` + `<id>.json` in `samples.dir`, oldest deleted first to stay
//! within `max_bytes`. Each saved sample is published on
//! `…/samples/<id>` in chunks through the outbox (see `docs/mqtt.md`).

use base64::Engine;
use opencv::core::{Mat, Rect, Size};
use opencv::imgproc;
use opencv::prelude::*;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::WeakSender;

use crate::config::SamplesConfig;
use crate::util::fs::FileError;
use crate::infer::{ModelIdentity, RegionPrediction};
use crate::wire::rfc3339;
use crate::publish::Outgoing;

/// Raw JPEG bytes per published chunk (base64 makes each message ~43 KiB).
pub const CHUNK_BYTES: usize = 32 << 10;
/// Crops and requests waiting for the sampler thread.
const QUEUE: usize = 64;
const JPEG_QUALITY: u8 = 85;

/// A region's crop and what was predicted for it.
#[derive(Debug)]
pub struct Crop {
    pub prediction_id: u64,
    pub camera: String,
    pub captured_at: SystemTime,
    pub frame_index: u64,
    pub region: usize,
    pub model: Arc<ModelIdentity>,
    pub prediction: RegionPrediction,
    /// Saved at once for this reason; `None`: kept only in case feedback marks it wrong.
    pub reason: Option<Reason>,
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

#[derive(Debug)]
pub enum SamplerInput {
    Crop(Box<Crop>),
    /// Feedback said this region was wrong: save it with the true class.
    MarkedWrong { prediction_id: u64, region: usize, seq: u64, truth: String },
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
    /// Regions marked wrong whose crop was no longer in memory.
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
/// hourly limit is applied here, before any pixel is copied.
pub struct SampleTap {
    tx: SyncSender<SamplerInput>,
    stats: Arc<SampleStats>,
    max_side: u32,
    low_confidence_below: f32,
    random_rate: f64,
    max_per_hour: usize,
    saved_this_hour: VecDeque<Instant>,
    /// Crop every region for late feedback: never (`recent = 0`), always,
    /// or while feedback flows.
    keep_recent: KeepRecent,
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
        let mut reason = if prediction.score < self.low_confidence_below {
            Some(Reason::LowConfidence)
        } else if self.random_rate > 0.0 && fastrand::f64() < self.random_rate {
            Some(Reason::Random)
        } else {
            None
        };
        if reason.is_some() && !self.within_hourly_limit() {
            self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            reason = None;
        }
        let keep = match self.keep_recent {
            KeepRecent::Never => false,
            KeepRecent::Always => true,
            KeepRecent::WhileFeedbackFlows => self.stats.feedback_flowing(),
        };
        if reason.is_none() && !keep {
            return;
        }
        let [x, y, w, h] = prediction.bbox;
        let (width, height, rgb) = match crop_rgb(frame, Rect::new(x, y, w, h), self.max_side) {
            Ok(crop) => crop,
            Err(error) => {
                tracing::debug!(%error, camera, frame_index, "cannot crop a region for samples");
                return;
            }
        };
        let crop = Crop {
            prediction_id,
            camera: camera.to_string(),
            captured_at,
            frame_index,
            region,
            model: model.clone(),
            prediction: prediction.clone(),
            reason,
            width,
            height,
            rgb,
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(SamplerInput::Crop(Box::new(crop))) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl SampleTap {
    fn within_hourly_limit(&mut self) -> bool {
        let now = Instant::now();
        while self.saved_this_hour.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(3600)) {
            self.saved_this_hour.pop_front();
        }
        if self.saved_this_hour.len() >= self.max_per_hour {
            return false;
        }
        self.saved_this_hour.push_back(now);
        true
    }
}

/// `rect` of a BGR frame, scaled to fit `max_side`, as packed RGB.
pub fn crop_rgb(frame: &Mat, rect: Rect, max_side: u32) -> opencv::Result<(u32, u32, Vec<u8>)> {
    let rect = rect & Rect::new(0, 0, frame.cols(), frame.rows());
    if rect.width <= 0 || rect.height <= 0 {
        return Err(opencv::Error::new(opencv::core::StsBadArg, "region outside the frame".to_string()));
    }
    let region = Mat::roi(frame, rect)?;
    let longer = rect.width.max(rect.height) as f64;
    let scale = (max_side as f64 / longer).min(1.0);
    let size = Size::new(((rect.width as f64 * scale).round() as i32).max(1), ((rect.height as f64 * scale).round() as i32).max(1));
    let scaled = shrink(&region, size)?;
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
    let ms = captured_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    format!("{ms:013}-{}-{frame_index}-{region}", crate::util::fs::file_safe(camera))
}


struct Encoded {
    crop: Box<Crop>,
    jpeg: Vec<u8>,
}

pub use crate::wire::samples::{Reason, SampleChunk, SampleMeta};

pub struct Sampler {
    config: SamplesConfig,
    device_id: String,
    /// `…/samples/` (the id follows).
    topic_prefix: String,
    publisher: WeakSender<Outgoing>,
    stats: Arc<SampleStats>,
    recent: VecDeque<Encoded>,
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

    /// The thread's state and the inference thread's tap.
    pub fn new(config: SamplesConfig, device_id: String, topic_prefix: String, publisher: WeakSender<Outgoing>) -> (Sampler, SampleTap, SyncSender<SamplerInput>, Receiver<SamplerInput>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stats = Arc::new(SampleStats::default());
        let tap = SampleTap {
            tx: tx.clone(),
            stats: stats.clone(),
            max_side: config.max_side,
            low_confidence_below: config.low_confidence_below,
            random_rate: config.random_rate,
            max_per_hour: config.max_per_hour as usize,
            saved_this_hour: VecDeque::new(),
            keep_recent: match (config.recent, config.recent_before_feedback) {
                (0, _) => KeepRecent::Never,
                (_, true) => KeepRecent::Always,
                (_, false) => KeepRecent::WhileFeedbackFlows,
            },
        };
        let sampler = Sampler {
            config,
            device_id,
            topic_prefix,
            publisher,
            stats,
            recent: VecDeque::new(),
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
                    match self.recent.iter().position(|e| e.crop.prediction_id == prediction_id && e.crop.region == region) {
                        Some(at) => {
                            let encoded = self.recent.remove(at).expect("found");
                            self.save(&encoded, Reason::FeedbackWrong, Some(seq), Some(truth));
                        }
                        None => {
                            self.stats.missed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(seq, region, "region marked wrong is no longer in memory; raise samples.recent to keep more");
                        }
                    }
                }
            }
        }
    }

    fn take(&mut self, crop: Box<Crop>) {
        let jpeg = match encode_jpeg(&crop) {
            Ok(jpeg) => jpeg,
            Err(error) => {
                tracing::warn!(%error, camera = %crop.camera, "cannot encode a sample");
                return;
            }
        };
        let encoded = Encoded { crop, jpeg };
        if let Some(reason) = encoded.crop.reason {
            self.save(&encoded, reason, None, None);
        }
        if self.config.recent > 0 {
            self.recent.push_back(encoded);
            while self.recent.len() > self.config.recent {
                self.recent.pop_front();
            }
        }
    }

    fn save(&mut self, encoded: &Encoded, reason: Reason, seq: Option<u64>, truth: Option<String>) {
        let crop = &encoded.crop;
        let id = sample_id(crop.captured_at, &crop.camera, crop.frame_index, crop.region);
        let meta = SampleMeta {
            id: id.clone(),
            reason,
            device: self.device_id.clone(),
            camera: crop.camera.clone(),
            captured_at: rfc3339(crop.captured_at),
            frame_index: crop.frame_index,
            region: crop.region,
            model: (*crop.model).clone(),
            prediction: crop.prediction.clone(),
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
        }
    }

    #[test]
    fn crops_the_region_scaled_to_max_side_as_rgb() {
        // Blue (BGR) left half, red right half.
        let mut frame = Mat::new_rows_cols_with_default(100, 200, CV_8UC3, Scalar::new(255.0, 0.0, 0.0, 0.0)).unwrap();
        let mut right = Mat::roi_mut(&mut frame, Rect::new(100, 0, 100, 100)).unwrap();
        right.set_to_def(&Scalar::new(0.0, 0.0, 255.0, 0.0)).unwrap();
        let (w, h, rgb) = crop_rgb(&frame, Rect::new(100, 0, 100, 100), 32).unwrap();
        assert_eq!((w, h, rgb.len()), (32, 32, 32 * 32 * 3));
        assert_eq!(&rgb[..3], &[255, 0, 0], "red, in RGB order");
        // A box partly outside the frame is clipped, not refused.
        assert_eq!(crop_rgb(&frame, Rect::new(150, 50, 100, 100), 256).unwrap().0, 50);
        assert!(crop_rgb(&frame, Rect::new(300, 300, 10, 10), 256).is_err());
    }

    #[test]
    fn saves_within_the_budget_oldest_first_and_recovers_a_region_marked_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let config = SamplesConfig { dir: dir.path().to_path_buf(), max_bytes: 40_000, recent: 5, publish: false, ..Default::default() };
        let (never, _) = tokio::sync::mpsc::channel::<Outgoing>(1);
        let (sampler, tap, tx, rx) = Sampler::new(config, "dev".into(), "t/".into(), never.downgrade());
        drop(tap); // holds a sender: the thread would never end
        let stats = sampler.stats.clone();
        let model = Arc::new(ModelIdentity { name: "m".into(), version: "1".into(), sha256: "s".into() });
        let noise: Vec<u8> = (0..64 * 64 * 3).map(|_| fastrand::u8(..)).collect();
        let thread = std::thread::spawn(move || sampler.run(rx));
        for i in 0..12u64 {
            let crop = Crop {
                prediction_id: i,
                camera: "cam 1".into(),
                captured_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i),
                frame_index: i,
                region: 0,
                model: model.clone(),
                prediction: prediction(0.1),
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
}
