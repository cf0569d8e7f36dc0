//! Vehicles on the inference thread: for each tracked camera, the scene
//! (`track::scene`) follows the frame's regions, says which to classify,
//! and hands back the vehicles whose tracks ended; this stage publishes
//! each as one `…/vehicles/<camera>` message, shows it (with the crop of
//! its best view) to the vehicle taps, and publishes `…/counts/<camera>`
//! at every interval's end and at shutdown. Both are stored messages:
//! like predictions, they are never dropped here.

use opencv::core::{Mat, Rect};
use opencv::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::frame_queue::FrameJob;
use super::view::ShownTrack;
use crate::config::CameraConfig;
use crate::infer::{ModelIdentity, RegionPrediction};
use crate::privacy::PrivacyMasks;
use crate::publish::Outgoing;
use crate::track::counts::{Counted, Counts, Interval};
use crate::track::geometry::BBox;
use crate::track::ids::{TrackIdError, TrackIds};
use crate::track::journal::CountsJournal;
use crate::track::scene::{FrameInfo, Plan, Scene, Vehicle};
use crate::track::tracker::TrackKey;
use crate::track::vote::{Detected, NO_VEHICLE};
use crate::wire::model::DetectorSays;
use crate::util::throttle::Throttle;
use crate::wire::vehicles::{CountsMessage, Crossing, VehicleMessage};
use crate::wire::{rfc3339, Topics};

/// A vehicle as the stages after tracking see it.
pub struct Seen<'a> {
    pub message: &'a VehicleMessage,
    /// Its best view (BGR), cut from its frame.
    pub crop: Option<&'a Mat>,
}

/// A stage shown every vehicle once its track ends (the sampler, the
/// monitor). Like a `FrameTap`, it runs on the frame path: never wait.
pub trait VehicleTap: Send {
    fn vehicle(&mut self, vehicle: &Seen<'_>);
}

#[derive(Debug, thiserror::Error)]
pub enum VehicleError {
    #[error("publisher stopped; a vehicle or count message of camera {camera} was not sent")]
    PublisherGone { camera: String },
    #[error("cannot serialise a vehicle or count message: {0}")]
    Serialise(#[from] serde_json::Error),
}

/// One tracked camera.
struct Tracked {
    id: String,
    scene: Scene,
    counts: Counts,
    publish_frames: bool,
    /// Per live track: the device-wide id, once it has one.
    names: HashMap<TrackKey, String>,
    /// Each live track's best view so far, its privacy masks filled.
    best_crops: HashMap<TrackKey, Mat>,
    masks: PrivacyMasks,
    /// The model that last classified each live track.
    models: HashMap<TrackKey, Arc<ModelIdentity>>,
    /// The detector that last found each live track (detector cameras).
    detectors: HashMap<TrackKey, Arc<ModelIdentity>>,
    /// When its last frame came: a camera silent for `SILENT` has lost its vehicles from view.
    last_frame_at: Option<Instant>,
}

/// A tracked camera without a frame for this long (file finished, stream
/// stalled, camera lost) ends its tracks: their vehicles are reported now,
/// not when the camera comes back.
const SILENT: Duration = Duration::from_secs(2);

pub struct VehicleStage {
    device_id: String,
    topics: Topics,
    /// By camera index; None for cameras without tracking.
    cameras: Vec<Option<Tracked>>,
    ids: TrackIds,
    taps: Vec<Box<dyn VehicleTap>>,
    /// Track-id file trouble, logged once a minute at most.
    id_trouble: Throttle,
    /// Keeps each camera's open interval on disk for a crash.
    journal: Option<CountsJournal>,
    /// Intervals a crashed run left, published on the first tick.
    recovered: Vec<CountsMessage>,
}

/// What the inference thread does with a tracked camera's frame.
pub struct FramePlan {
    /// Per region of the job: its track and whether to classify it.
    pub plans: Vec<Option<Plan>>,
    /// The regions to classify (in `plans` order).
    pub to_classify: Vec<Rect>,
    /// Their indices in the job's regions.
    pub classify_index: Vec<usize>,
}

/// What the detector said of each of a frame's regions, and which detector it was.
#[derive(Clone, Copy)]
pub struct Detections<'a> {
    pub detected: &'a [Detected],
    pub model: &'a Arc<ModelIdentity>,
}

impl VehicleStage {
    /// `ids` is the device's track-id counter (in its state folder).
    pub fn new(device_id: &str, topics: &Topics, cameras: &[CameraConfig], interval: Duration, ids: TrackIds) -> VehicleStage {
        let now = SystemTime::now();
        let cameras = cameras
            .iter()
            .map(|c| {
                let scene = Scene::new(c)?;
                let counts = Counts::new(interval, scene.lane_ids(), scene.line_ids(), now);
                Some(Tracked {
                    id: c.id.clone(),
                    scene,
                    counts,
                    publish_frames: c.publishes_frames(),
                    names: HashMap::new(),
                    best_crops: HashMap::new(),
                    masks: PrivacyMasks::of(c),
                    models: HashMap::new(),
                    detectors: HashMap::new(),
                    last_frame_at: None,
                })
            })
            .collect();
        VehicleStage {
            device_id: device_id.to_string(),
            topics: topics.clone(),
            cameras,
            ids,
            taps: Vec::new(),
            id_trouble: Throttle::new(Duration::from_secs(60)),
            journal: None,
            recovered: Vec::new(),
        }
    }

    /// Keeps open intervals in `journal`; publishes `recovered` (a crashed
    /// run's open intervals) first.
    pub fn with_journal(mut self, journal: CountsJournal, recovered: Vec<CountsMessage>) -> VehicleStage {
        self.journal = Some(journal);
        self.recovered = recovered.into_iter().map(|r| CountsMessage { recovered: true, ..r }).collect();
        self
    }

    pub fn with_tap(mut self, tap: Box<dyn VehicleTap>) -> VehicleStage {
        self.taps.push(tap);
        self
    }

    pub fn tracks(&self, camera: usize) -> bool {
        self.cameras.get(camera).is_some_and(Option::is_some)
    }

    pub fn publishes_frames(&self, camera: usize) -> bool {
        self.cameras.get(camera).and_then(Option::as_ref).is_none_or(|t| t.publish_frames)
    }

    /// When [`VehicleStage::tick`] has work next: an interval's end, or a
    /// camera with vehicles in view falling silent (None without tracked cameras).
    pub fn next_due(&self) -> Option<Instant> {
        let due = self.cameras.iter().flatten().map(|t| t.counts.due()).min()?;
        let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
        let silent = self.cameras.iter().flatten().filter(|t| t.scene.has_tracks()).filter_map(|t| t.last_frame_at).map(|at| at + SILENT).min();
        Some(silent.map_or(Instant::now() + wait, |s| s.min(Instant::now() + wait)))
    }

    /// A tracked camera's frame that is not observed (its detector did not
    /// run on it): the camera is not silent.
    pub fn heard_from(&mut self, camera: usize) {
        if let Some(tracked) = self.cameras.get_mut(camera).and_then(Option::as_mut) {
            tracked.last_frame_at = Some(Instant::now());
        }
    }

    /// The tracks in view on `camera` now, for the installer's view.
    pub fn shown_tracks(&self, camera: usize, min_vehicle_score: f32) -> Vec<ShownTrack> {
        let Some(tracked) = self.cameras.get(camera).and_then(Option::as_ref) else { return Vec::new() };
        tracked
            .scene
            .live(min_vehicle_score)
            .into_iter()
            .map(|t| ShownTrack {
                name: tracked.names.get(&t.key).cloned().unwrap_or_else(|| format!("#{}", t.key)),
                confirmed: t.confirmed,
                bbox: t.bbox,
                class: t.class,
                lane: t.lane,
            })
            .collect()
    }

    /// Whether a vehicle is being tracked on `camera`.
    pub fn has_tracks(&self, camera: usize) -> bool {
        self.cameras.get(camera).and_then(Option::as_ref).is_some_and(|t| t.scene.has_tracks())
    }

    /// Tracks a tracked camera's frame (with what the detector said of its
    /// regions, on a detector camera); publishes the vehicles that ended.
    pub fn observe(&mut self, job: &FrameJob, detections: Option<Detections<'_>>, min_vehicle_score: f32, sender: &dyn Fn(Outgoing) -> bool) -> Result<FramePlan, VehicleError> {
        let Some(tracked) = self.cameras.get_mut(job.camera).and_then(Option::as_mut) else {
            return Ok(FramePlan { plans: Vec::new(), to_classify: job.regions.clone(), classify_index: (0..job.regions.len()).collect() });
        };
        let frame = FrameInfo {
            clock_s: job.clock_s,
            captured_at: job.captured_at,
            frame_index: job.frame_index,
            width: job.frame.cols().max(0) as u32,
            height: job.frame.rows().max(0) as u32,
        };
        let boxes: Vec<BBox> = job.regions.iter().map(|r| BBox::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32)).collect();
        tracked.last_frame_at = Some(Instant::now());
        let detected = detections.map_or(&[][..], |d| d.detected);
        let (plans, ended) = tracked.scene.observe(frame, &boxes, detected, min_vehicle_score);
        if let Some(d) = detections {
            for plan in plans.iter().flatten() {
                tracked.detectors.insert(plan.track, d.model.clone());
            }
        }
        for (plan, rect) in plans.iter().zip(&job.regions) {
            if let Some(plan) = plan.filter(|p| p.best_view) {
                // Masked as it is kept: this crop may leave the device as a sample.
                let masked = Mat::roi(&job.frame, *rect).and_then(|roi| roi.try_clone()).and_then(|mut crop| {
                    tracked.masks.hide(&mut crop, rect.tl())?;
                    Ok(crop)
                });
                match masked {
                    Ok(crop) => {
                        tracked.best_crops.insert(plan.track, crop);
                    }
                    // Never kept unmasked: the earlier best view (if any) stays.
                    Err(error) => tracing::debug!(%error, "cannot keep a vehicle's best view"),
                }
            }
        }
        let classify_index: Vec<usize> = plans.iter().enumerate().filter(|(_, p)| p.is_some_and(|p| p.classify)).map(|(i, _)| i).collect();
        let to_classify = classify_index.iter().map(|i| job.regions[*i]).collect();
        self.publish_ended(job.camera, ended, sender)?;
        self.forget_dead(job.camera);
        Ok(FramePlan { plans, to_classify, classify_index })
    }

    /// Gives the classified regions (in `plan.to_classify` order) their
    /// tracks' votes and names.
    pub fn classified(&mut self, camera: usize, plan: &FramePlan, regions: &mut [RegionPrediction], model: &Arc<ModelIdentity>) {
        let Some(tracked) = self.cameras.get_mut(camera).and_then(Option::as_mut) else { return };
        let classified = plan.plans.iter().flatten().filter(|p| p.classify);
        for (p, region) in classified.zip(regions.iter_mut()) {
            let [x, y, w, h] = region.bbox;
            let bbox = BBox::new(x as f32, y as f32, w as f32, h as f32);
            tracked.scene.classified(p, bbox, &region.road_scores, &region.class, region.entropy);
            tracked.models.insert(p.track, model.clone());
            if tracked.publish_frames {
                region.track = Some(name_of(&mut tracked.names, &mut self.ids, &mut self.id_trouble, &tracked.id, p.track));
            }
        }
    }

    /// Ends the tracks of cameras gone silent, and publishes the counts of
    /// every interval that has ended.
    pub fn tick(&mut self, min_vehicle_score: f32, sender: &dyn Fn(Outgoing) -> bool) -> Result<(), VehicleError> {
        for interval in std::mem::take(&mut self.recovered) {
            let camera = interval.camera.clone();
            send(sender, Outgoing::stored(self.topics.counts(&camera), serde_json::to_vec(&interval)?), &camera)?;
        }
        let now = SystemTime::now();
        for index in 0..self.cameras.len() {
            let Some(tracked) = self.cameras[index].as_mut() else { continue };
            if tracked.scene.has_tracks() && tracked.last_frame_at.is_some_and(|at| at.elapsed() >= SILENT) {
                let ended = tracked.scene.finish(min_vehicle_score);
                self.publish_ended(index, ended, sender)?;
                self.forget_dead(index);
            }
            let Some(tracked) = self.cameras[index].as_mut() else { continue };
            let due = tracked.counts.take_due(now);
            let camera = tracked.id.clone();
            let published = !due.is_empty();
            for interval in due {
                self.send_counts(&camera, interval, sender)?;
            }
            if published {
                self.keep(index);
            }
        }
        Ok(())
    }

    /// Hands the camera's open interval to the journal.
    fn keep(&self, camera: usize) {
        if let (Some(journal), Some(tracked)) = (&self.journal, self.cameras.get(camera).and_then(Option::as_ref)) {
            journal.keep(&counts_message(&self.device_id, &tracked.id, tracked.counts.snapshot(SystemTime::now())));
        }
    }

    /// At shutdown: every open track's vehicle, then each camera's last counts.
    pub fn finish(&mut self, min_vehicle_score: f32, sender: &dyn Fn(Outgoing) -> bool) -> Result<(), VehicleError> {
        for index in 0..self.cameras.len() {
            let Some(tracked) = self.cameras[index].as_mut() else { continue };
            let ended = tracked.scene.finish(min_vehicle_score);
            self.publish_ended(index, ended, sender)?;
        }
        let now = SystemTime::now();
        for index in 0..self.cameras.len() {
            let Some(tracked) = self.cameras[index].as_mut() else { continue };
            let last = tracked.counts.finish(now);
            let camera = tracked.id.clone();
            for interval in last {
                self.send_counts(&camera, interval, sender)?;
            }
            self.keep(index);
        }
        Ok(())
    }

    /// Drops what is kept for tracks the scene no longer has (tentative
    /// ones that died as noise are never published, so nothing else would).
    fn forget_dead(&mut self, camera: usize) {
        let Some(tracked) = self.cameras.get_mut(camera).and_then(Option::as_mut) else { return };
        let scene = &tracked.scene;
        tracked.best_crops.retain(|key, _| scene.is_live(*key));
        tracked.models.retain(|key, _| scene.is_live(*key));
        tracked.detectors.retain(|key, _| scene.is_live(*key));
        tracked.names.retain(|key, _| scene.is_live(*key));
    }

    /// What is kept per live track (crops, models, names), for tests.
    pub fn kept(&self, camera: usize) -> usize {
        self.cameras.get(camera).and_then(Option::as_ref).map_or(0, |t| t.best_crops.len() + t.models.len() + t.names.len())
    }

    fn send_counts(&self, camera: &str, interval: Interval, sender: &dyn Fn(Outgoing) -> bool) -> Result<(), VehicleError> {
        let body = counts_message(&self.device_id, camera, interval);
        send(sender, Outgoing::stored(self.topics.counts(camera), serde_json::to_vec(&body)?), camera)
    }

    /// Each ended vehicle: its message, the taps, and the open interval's counts.
    fn publish_ended(&mut self, camera: usize, ended: Vec<Vehicle>, sender: &dyn Fn(Outgoing) -> bool) -> Result<(), VehicleError> {
        let Some(tracked) = self.cameras.get_mut(camera).and_then(Option::as_mut) else { return Ok(()) };
        let mut counted = false;
        for vehicle in ended {
            let crop = tracked.best_crops.remove(&vehicle.key);
            let model = tracked.models.remove(&vehicle.key);
            let name = tracked.names.remove(&vehicle.key);
            let detector = tracked.detectors.remove(&vehicle.key);
            let Some(model) = model else {
                // Never classified (each classification of it failed): nothing to say of it.
                tracing::debug!(camera = %tracked.id, frames = vehicle.frames, "a track ended without a classification");
                continue;
            };
            if vehicle.consensus.class == NO_VEHICLE {
                // Something moved (a person, an animal, a shadow), but its frames agree it is no vehicle.
                tracing::debug!(camera = %tracked.id, frames = vehicle.frames, "a track that is no vehicle ended");
                continue;
            }
            let track = name.unwrap_or_else(|| new_name(&mut self.ids, &mut self.id_trouble, &tracked.id));
            let mut message = vehicle_message(&self.device_id, &tracked.id, track, &vehicle, &model);
            if let (Some(call), Some(detector)) = (&vehicle.detector, detector) {
                message.detector = Some(DetectorSays { label: call.label.clone(), score: call.score, frames: Some(call.frames), model: (*detector).clone() });
            }
            let body = serde_json::to_vec(&message)?;
            send(sender, Outgoing::stored(self.topics.vehicles(&tracked.id), body), &tracked.id)?;
            tracked.counts.add(&Counted {
                class: &message.class,
                lane: message.lane.as_deref(),
                crossings: message.crossings.iter().map(|c| (c.line.as_str(), c.direction)).collect(),
            });
            counted = true;
            let seen = Seen { message: &message, crop: crop.as_ref() };
            for tap in &mut self.taps {
                tap.vehicle(&seen);
            }
        }
        if counted {
            self.keep(camera);
        }
        Ok(())
    }
}

/// The device-wide name of a live track: `<camera>-<n>`, n from the counter.
fn name_of(names: &mut HashMap<TrackKey, String>, ids: &mut TrackIds, trouble: &mut Throttle, camera: &str, track: TrackKey) -> String {
    names.entry(track).or_insert_with(|| new_name(ids, trouble, camera)).clone()
}

fn new_name(ids: &mut TrackIds, trouble: &mut Throttle, camera: &str) -> String {
    let (n, error) = ids.next_id();
    if let Some(error) = error {
        report(trouble, &error);
    }
    format!("{camera}-{n}")
}

fn report(trouble: &mut Throttle, error: &TrackIdError) {
    if let Some(suppressed) = trouble.allow() {
        tracing::warn!(%error, suppressed, "track ids may repeat after a restart");
    }
}

fn send(sender: &dyn Fn(Outgoing) -> bool, outgoing: Outgoing, camera: &str) -> Result<(), VehicleError> {
    if sender(outgoing) {
        Ok(())
    } else {
        Err(VehicleError::PublisherGone { camera: camera.to_string() })
    }
}

fn vehicle_message(device: &str, camera: &str, track: String, v: &Vehicle, model: &ModelIdentity) -> VehicleMessage {
    let b = v.best_bbox;
    VehicleMessage {
        device: device.to_string(),
        camera: camera.to_string(),
        track,
        class: v.consensus.class.clone(),
        score: v.consensus.score,
        votes: v.consensus.votes.clone(),
        first_seen: rfc3339(v.first_seen),
        last_seen: rfc3339(v.last_seen),
        frames: v.frames,
        classified_frames: v.consensus.frames,
        lane: v.lane.clone(),
        crossings: v.crossings.iter().map(|c| Crossing { line: c.line.clone(), direction: c.direction, at: rfc3339(c.at), frame: c.frame }).collect(),
        speed_kmh: v.speed_kmh.map(|s| (s * 10.0).round() / 10.0),
        bbox: [b.x.round() as i32, b.y.round() as i32, b.w.round() as i32, b.h.round() as i32],
        best_frame: v.best_frame,
        model: model.clone(),
        detector: None,
    }
}

fn counts_message(device: &str, camera: &str, interval: Interval) -> CountsMessage {
    CountsMessage {
        device: device.to_string(),
        camera: camera.to_string(),
        from: rfc3339(interval.from),
        to: rfc3339(interval.to),
        vehicles: interval.vehicles,
        lines: interval.lines,
        lanes: interval.lanes,
        recovered: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC3};
    use std::cell::RefCell;

    fn camera() -> CameraConfig {
        toml::from_str("id = \"north\"\nurl = \"clip.mp4\"\nregions = \"motion\"\n[tracking]\n[[lines]]\nid = \"gantry\"\nfrom = [320, 0]\nto = [320, 240]\n").unwrap()
    }

    fn job(frame_index: u64, regions: Vec<Rect>) -> FrameJob {
        let frame = Mat::new_rows_cols_with_default(240, 640, CV_8UC3, Scalar::all(90.0)).unwrap();
        FrameJob { camera: 0, frame_index, captured_at: SystemTime::now(), clock_s: frame_index as f64 / 25.0, frame, regions }
    }

    /// Classifies every region it is asked to as a sure car.
    fn car(rect: &Rect) -> RegionPrediction {
        RegionPrediction {
            bbox: [rect.x, rect.y, rect.width, rect.height],
            class: "car".into(),
            score: 0.9,
            top_k: Vec::new(),
            margin: 0.5,
            entropy: 0.2,
            road_scores: vec![("car".into(), 0.9), ("van".into(), 0.05)],
            track: None,
            detector: None,
        }
    }

    #[test]
    fn flickering_noise_keeps_nothing_and_a_vehicle_is_published_once_with_its_crossing() {
        let dir = tempfile::tempdir().unwrap();
        let ids = TrackIds::open(&dir.path().join("track_ids")).unwrap();
        let mut stage = VehicleStage::new("pole-17", &Topics::new("cctv", "pole-17"), &[camera()], Duration::from_secs(60), ids);
        let sent = RefCell::new(Vec::new());
        let send = |o: Outgoing| {
            sent.borrow_mut().push(o);
            true
        };
        let model = Arc::new(ModelIdentity { name: "m".into(), version: "1".into(), sha256: "0".repeat(64) });
        let mut frame = 0;
        // Noise: a box that shows one frame in three, in a new place each time, never confirmed.
        for i in 0..60 {
            let regions = if i % 3 == 0 { vec![Rect::new(20 + (i * 37) % 500, 10, 30, 30)] } else { vec![] };
            let plan = stage.observe(&job(frame, regions), None, 0.3, &send).unwrap();
            let mut classified: Vec<RegionPrediction> = plan.to_classify.iter().map(car).collect();
            stage.classified(0, &plan, &mut classified, &model);
            frame += 1;
        }
        assert_eq!(stage.kept(0), 0, "nothing kept for tracks that died as noise");
        // A car drives right across the line.
        for step in 0..60 {
            let plan = stage.observe(&job(frame, vec![Rect::new(10 + step * 8, 100, 120, 60)]), None, 0.3, &send).unwrap();
            let mut classified: Vec<RegionPrediction> = plan.to_classify.iter().map(car).collect();
            stage.classified(0, &plan, &mut classified, &model);
            frame += 1;
        }
        for _ in 0..20 {
            stage.observe(&job(frame, vec![]), None, 0.3, &send).unwrap();
            frame += 1;
        }
        assert_eq!(stage.kept(0), 0);
        let sent = sent.into_inner();
        let vehicles: Vec<VehicleMessage> =
            sent.iter().filter(|o| o.topic.contains("/vehicles/")).map(|o| serde_json::from_slice(&o.payload).unwrap()).collect();
        assert_eq!(vehicles.len(), 1, "one vehicle: {vehicles:?}");
        let v = &vehicles[0];
        assert_eq!((v.class.as_str(), v.track.as_str(), v.crossings.len()), ("car", "north-1", 1));
        assert_eq!(v.crossings[0].direction, crate::wire::vehicles::Direction::Forward);
        assert!(v.speed_kmh.is_none(), "no calibration, no speed");
    }
}
