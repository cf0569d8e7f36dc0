//! One camera's view of its vehicles: the tracker, and for each track what
//! the vehicle message will say — frames, lane, line crossings, ground
//! positions for its speed, its best view, and the vote on its class.
//! The inference thread drives it: [`Scene::observe`] for each processed
//! frame's regions (which to classify), [`Scene::classified`] for each
//! classified region, and gets back the vehicles whose tracks ended.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use super::geometry::BBox;
use super::tracker::{Ended, TrackKey, Tracker, TrackerConfig};
use super::vote::{combine, Consensus, Detected, DetectorCall, DetectorVote, Vote};
use crate::config::{CameraConfig, TrackingConfig};
use crate::util::plane::{cross, polygon_contains, segments_meet, Homography, Point};
use crate::wire::vehicles::Direction;

/// A processed frame, as the scene needs it.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo {
    /// The camera's clock in seconds (video time for files): what speeds are measured on.
    pub clock_s: f64,
    pub captured_at: SystemTime,
    pub frame_index: u64,
    pub width: u32,
    pub height: u32,
}

/// What to do with one region of the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub track: TrackKey,
    /// Classify it in this frame (its track's turn).
    pub classify: bool,
    /// This is the track's best view so far: keep a crop of it.
    pub best_view: bool,
    /// Within `edge_margin` of the frame's edge: its vote counts only if no uncut view votes.
    pub cut: bool,
}

/// A line crossed, once per track.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossed {
    pub line: String,
    pub direction: Direction,
    pub at: SystemTime,
    pub frame: u64,
}

/// A track still in view, as the installer's view draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveTrack {
    pub key: TrackKey,
    pub confirmed: bool,
    /// Filtered if it had a region in the last frame, else predicted.
    pub bbox: BBox,
    /// The vote's class so far (None before its first classification).
    pub class: Option<String>,
    /// The lane its bottom centre was in most often so far.
    pub lane: Option<String>,
}

/// A vehicle whose track has ended: what its message says.
#[derive(Debug, Clone, PartialEq)]
pub struct Vehicle {
    pub key: TrackKey,
    pub consensus: Consensus,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub frames: u32,
    pub lane: Option<String>,
    pub crossings: Vec<Crossed>,
    pub speed_kmh: Option<f32>,
    pub best_bbox: BBox,
    pub best_frame: u64,
    /// What the detector called it (detector cameras).
    pub detector: Option<DetectorCall>,
}

struct Lane {
    id: String,
    polygon: Vec<Point>,
}

struct Line {
    id: String,
    from: Point,
    to: Point,
}

/// What the scene keeps of one track.
struct Record {
    first_seen: SystemTime,
    last_seen: SystemTime,
    frames: u32,
    /// Frames since it was last classified (it is due at `classify_every`).
    since_classified: u32,
    /// Frames per lane index (its bottom centre inside).
    lanes: BTreeMap<usize, u32>,
    /// Per line: the last bottom centre off the line, to find whether it crossed since.
    last_off: Vec<Option<Point>>,
    crossed: Vec<Crossed>,
    /// First and last ground positions (metres) with their clock, from uncut views.
    ground: Option<((f64, Point), (f64, Point))>,
    best: Option<(f32, BBox, u64)>,
    vote: Vote,
    /// Votes of views cut by the frame edge: used only if it had no other.
    cut_vote: Vote,
    detector: DetectorVote,
    /// Frames in which its region was mostly inside another track's region.
    frames_inside: u32,
}

impl Record {
    /// The vote its class comes from: its uncut views', or its cut ones if it had no other.
    fn counted_vote(&self) -> &Vote {
        if self.vote.is_empty() {
            &self.cut_vote
        } else {
            &self.vote
        }
    }
}

/// A region with at least this share of its area inside the region of
/// another track in the same frame is, in that frame, a second view of a
/// vehicle (a detector's box around its cab or its wheels beside the box
/// around all of it, or around the part of it in view as it enters). A
/// track that is a second view in most of its frames is no vehicle of its
/// own and is not reported; the vehicle's own track, seen whole for far
/// longer, is.
const PART_OF: f32 = 0.5;

pub struct Scene {
    tracker: Tracker,
    config: TrackingConfig,
    lanes: Vec<Lane>,
    lines: Vec<Line>,
    ground: Option<Homography>,
    records: HashMap<TrackKey, Record>,
    /// The last frame index seen: a smaller one means the source restarted.
    last_frame: Option<u64>,
}

impl Scene {
    /// The scene of a camera with tracking on; its config was validated.
    pub fn new(camera: &CameraConfig) -> Option<Scene> {
        let config = camera.tracking.clone()?;
        let tracker = Tracker::new(TrackerConfig { iou_gate: config.iou_gate as f32, confirm_hits: config.confirm_hits, max_misses: config.max_misses });
        let lanes = camera.lanes.iter().map(|l| Lane { id: l.id.clone(), polygon: l.polygon.clone() }).collect();
        let lines = camera.lines.iter().map(|l| Line { id: l.id.clone(), from: l.from, to: l.to }).collect();
        let ground = camera.calibration.as_ref().and_then(|c| Homography::from_points(&c.image, &c.ground).ok());
        Some(Scene { tracker, config, lanes, lines, ground, records: HashMap::new(), last_frame: None })
    }

    pub fn lane_ids(&self) -> Vec<String> {
        self.lanes.iter().map(|l| l.id.clone()).collect()
    }

    pub fn line_ids(&self) -> Vec<String> {
        self.lines.iter().map(|l| l.id.clone()).collect()
    }

    /// Tracks the frame's regions. Returns a plan per region (None: not a
    /// vehicle of its own, e.g. a fragment of one) and the vehicles whose
    /// tracks ended; a source that restarted ends every track first.
    /// `detected` is empty, or what the detector said of each region.
    pub fn observe(&mut self, frame: FrameInfo, regions: &[BBox], detected: &[Detected], min_vehicle_score: f32) -> (Vec<Option<Plan>>, Vec<Vehicle>) {
        let mut ended = Vec::new();
        if self.last_frame.is_some_and(|last| frame.frame_index <= last) {
            ended = self.finish(min_vehicle_score);
        }
        self.last_frame = Some(frame.frame_index);
        let step = self.tracker.update(frame.clock_s, regions);
        let margin = self.config.edge_margin as f32;
        let cut: Vec<bool> = regions
            .iter()
            .map(|r| r.x <= margin || r.y <= margin || r.right() >= frame.width as f32 - margin || r.bottom() >= frame.height as f32 - margin)
            .collect();
        let keys: Vec<Option<TrackKey>> = step.assigned.iter().map(|a| a.as_ref().map(|a| a.key)).collect();
        let part_of_another = |i: usize, key: TrackKey| {
            let r = &regions[i];
            regions.iter().zip(&keys).any(|(other, k)| k.is_some_and(|k| k != key) && r.fraction_inside(other) >= PART_OF)
        };
        let mut plans = Vec::with_capacity(regions.len());
        for (i, assignment) in step.assigned.iter().enumerate() {
            let Some(a) = assignment else {
                plans.push(None);
                continue;
            };
            let cut = cut[i];
            let record = self.records.entry(a.key).or_insert_with(|| Record {
                first_seen: frame.captured_at,
                last_seen: frame.captured_at,
                frames: 0,
                since_classified: u32::MAX,
                lanes: BTreeMap::new(),
                last_off: vec![None; self.lines.len()],
                crossed: Vec::new(),
                ground: None,
                best: None,
                vote: Vote::default(),
                cut_vote: Vote::default(),
                detector: DetectorVote::default(),
                frames_inside: 0,
            });
            if part_of_another(i, a.key) {
                record.frames_inside += 1;
            }
            if let Some(d) = detected.get(i) {
                record.detector.add(d);
            }
            record.last_seen = frame.captured_at;
            record.frames += 1;
            let (x, y) = a.filtered.bottom_centre();
            let point = [x as f64, y as f64];
            if let Some(lane) = self.lanes.iter().position(|l| polygon_contains(&l.polygon, point)) {
                *record.lanes.entry(lane).or_default() += 1;
            }
            for (line, last_off) in self.lines.iter().zip(record.last_off.iter_mut()) {
                if cross(line.from, line.to, point) == 0.0 {
                    continue; // on the line is not across it yet: a later frame decides
                }
                if let Some(last) = last_off.replace(point) {
                    if record.crossed.iter().all(|c| c.line != line.id) {
                        if let Some(direction) = crossing(line, last, point) {
                            record.crossed.push(Crossed { line: line.id.clone(), direction, at: frame.captured_at, frame: frame.frame_index });
                        }
                    }
                }
            }
            if let (Some(h), false) = (&self.ground, cut) {
                if let Some(g) = h.apply(point) {
                    let first = record.ground.map_or((frame.clock_s, g), |(first, _)| first);
                    record.ground = Some((first, (frame.clock_s, g)));
                }
            }
            // The best view: the largest uncut one; a cut one only until there is another.
            let region = regions[i];
            let quality = region.area() * if cut { 0.01 } else { 1.0 };
            let best_view = record.best.is_none_or(|(q, _, _)| quality > q);
            if best_view {
                record.best = Some((quality, region, frame.frame_index));
            }
            // Cut views are classified only while the track has no vote at all.
            let due = record.since_classified.saturating_add(1) >= self.config.classify_every;
            let classify = due && (!cut || (record.vote.is_empty() && record.cut_vote.is_empty()));
            record.since_classified = if classify { 0 } else { record.since_classified.saturating_add(1) };
            plans.push(Some(Plan { track: a.key, classify, best_view, cut }));
        }
        for e in step.ended {
            ended.extend(self.close(e, min_vehicle_score));
        }
        (plans, ended)
    }

    /// The classification of a region `observe` planned: its road-class
    /// probabilities (`none` left out), its own class and its entropy.
    pub fn classified(&mut self, plan: &Plan, region: BBox, probabilities: &[(String, f32)], class: &str, entropy: f32) {
        if let Some(record) = self.records.get_mut(&plan.track) {
            let vote = if plan.cut { &mut record.cut_vote } else { &mut record.vote };
            vote.add(probabilities, class, region.area(), entropy);
        }
    }

    /// Whether `key` is a track still open.
    pub fn is_live(&self, key: TrackKey) -> bool {
        self.records.contains_key(&key)
    }

    /// The tracks in view now, with their class and lane so far. Costs a
    /// vote per track: for a view taken now and then, not every frame.
    pub fn live(&self, min_vehicle_score: f32) -> Vec<LiveTrack> {
        self.tracker
            .tracks()
            .into_iter()
            .map(|t| {
                let record = self.records.get(&t.key);
                let class = record.and_then(|r| {
                    let detector = r.detector.call();
                    (!r.counted_vote().is_empty() || detector.is_some()).then(|| combine(r.counted_vote(), detector.as_ref(), min_vehicle_score).class)
                });
                let lane = record.and_then(|r| self.lane_of(r));
                LiveTrack { key: t.key, confirmed: t.confirmed, bbox: t.bbox, class, lane }
            })
            .collect()
    }

    /// Whether any track is open (tentative or confirmed).
    pub fn has_tracks(&self) -> bool {
        !self.records.is_empty()
    }

    /// Ends every track (shutdown, or the source restarted): their vehicles.
    pub fn finish(&mut self, min_vehicle_score: f32) -> Vec<Vehicle> {
        let ended = self.tracker.finish();
        let vehicles = ended.into_iter().filter_map(|e| self.close(e, min_vehicle_score)).collect();
        self.records.clear();
        vehicles
    }

    /// The lane a track's bottom centre was in most often (the first such lane on a tie).
    fn lane_of(&self, record: &Record) -> Option<String> {
        record.lanes.iter().max_by_key(|(index, n)| (**n, std::cmp::Reverse(**index))).map(|(i, _)| self.lanes[*i].id.clone())
    }

    fn close(&mut self, ended: Ended, min_vehicle_score: f32) -> Option<Vehicle> {
        let record = self.records.remove(&ended.key)?;
        if !ended.confirmed || record.frames_inside * 2 > record.frames {
            return None;
        }
        let vote = record.counted_vote();
        let detector = record.detector.call();
        let lane = self.lane_of(&record);
        let speed_kmh = record.ground.and_then(|((t0, g0), (t1, g1))| {
            let dt = t1 - t0;
            // Under half a second of uncut views says little about speed.
            (dt >= 0.5).then(|| ((g1[0] - g0[0]).hypot(g1[1] - g0[1]) / dt * 3.6) as f32)
        });
        let (_, best_bbox, best_frame) = record.best.unwrap_or_default();
        Some(Vehicle {
            key: ended.key,
            consensus: combine(vote, detector.as_ref(), min_vehicle_score),
            first_seen: record.first_seen,
            last_seen: record.last_seen,
            frames: record.frames,
            lane,
            crossings: record.crossed,
            speed_kmh,
            best_bbox,
            best_frame,
            detector,
        })
    }
}

/// The way `from → to` (bottom centres, neither on the line) crosses `line`, if it does.
fn crossing(line: &Line, from: Point, to: Point) -> Option<Direction> {
    let (before, after) = (cross(line.from, line.to, from), cross(line.from, line.to, to));
    if (before > 0.0) == (after > 0.0) || !segments_meet(line.from, line.to, from, to) {
        return None;
    }
    // Positive is the line's right, looking from `from` toward `to`.
    Some(if before > 0.0 { Direction::Forward } else { Direction::Backward })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(from: Point, to: Point) -> Line {
        Line { id: "l".into(), from, to }
    }

    #[test]
    fn a_vehicle_moving_right_crosses_a_top_to_bottom_line_forward() {
        let l = line([480.0, 0.0], [480.0, 540.0]);
        assert_eq!(crossing(&l, [470.0, 300.0], [490.0, 300.0]), Some(Direction::Forward));
        assert_eq!(crossing(&l, [490.0, 300.0], [470.0, 300.0]), Some(Direction::Backward));
        // Beyond the segment's end, or not reaching it: no crossing.
        assert_eq!(crossing(&l, [470.0, 600.0], [490.0, 600.0]), None);
        assert_eq!(crossing(&l, [460.0, 300.0], [470.0, 300.0]), None);
    }

    #[test]
    fn a_line_drawn_left_to_right_counts_a_vehicle_moving_up_forward() {
        // Looking from (0, 200) toward (640, 200) the right is down the screen.
        let l = line([0.0, 200.0], [640.0, 200.0]);
        assert_eq!(crossing(&l, [300.0, 210.0], [300.0, 190.0]), Some(Direction::Forward));
    }
}
