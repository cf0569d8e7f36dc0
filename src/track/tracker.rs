//! The multi-object tracker: which region of this frame is which vehicle.
//!
//! Each frame, every track's Kalman filter is predicted to the frame's
//! time and the regions are assigned to the predictions by the optimal
//! (Hungarian) assignment on IoU, gated: confirmed tracks first, then the
//! tentative ones with what is left (SORT's association in ByteTrack's
//! cascade). Two cases a background subtractor produces are caught before
//! a region becomes a new track: a region spanning two confirmed vehicles
//! (a merge: both coast on their predictions) and a piece of one (a split:
//! it is folded into that vehicle's measurement). A track without a region
//! coasts on its prediction with its velocity damped, so a vehicle hidden
//! for a few frames or lost while stopped is found again under its key.

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

use super::geometry::BBox;
use super::kalman::KalmanBox;

/// How regions become tracks and tracks end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// Least IoU between a track's predicted box and a region for them to be associated.
    pub iou_gate: f32,
    /// Frames with a region before a tentative track is confirmed.
    pub confirm_hits: u32,
    /// Processed frames in a row without a region before a confirmed track ends.
    pub max_misses: u32,
}

impl Default for TrackerConfig {
    fn default() -> TrackerConfig {
        TrackerConfig { iou_gate: 0.2, confirm_hits: 3, max_misses: 12 }
    }
}

/// Local to one Tracker, rising from 1, never reused within it.
pub type TrackKey = u64;

/// A region's track after this frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment {
    pub key: TrackKey,
    pub confirmed: bool,
    /// The track's box after this frame's update (Kalman-filtered).
    pub filtered: BBox,
}

/// A track that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub key: TrackKey,
    /// False: a tentative track that died (noise); the caller forgets it.
    pub confirmed: bool,
}

/// What one frame did to the tracks.
#[derive(Debug, Default)]
pub struct Step {
    /// Per region, in the order given: the track it belongs to now (a new
    /// tentative track if it matched none), or None when the region was
    /// judged a fragment of a tracked vehicle or a merge of two, or is
    /// unusable (no area, a non-finite field), and used for no track.
    pub assigned: Vec<Option<Assignment>>,
    /// Tracks confirmed by this frame.
    pub confirmed: Vec<TrackKey>,
    /// Tracks that ended with this frame.
    pub ended: Vec<Ended>,
}

/// A live track as the tracker sees it now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackView {
    pub key: TrackKey,
    pub confirmed: bool,
    /// Filtered if it had a region in the last frame, else predicted.
    pub bbox: BBox,
    /// Of the box's centre, in pixels per second.
    pub velocity: (f32, f32),
    /// Frames with a region, in all.
    pub hits: u32,
    /// Frames without a region, in a row up to now.
    pub misses: u32,
}

/// IoU in ten-thousandths: the assignment's weights are integers.
const IOU_SCALE: f32 = 10_000.0;
/// A coasting track's velocity decays with this time constant (seconds).
/// A vehicle that is not seen is more likely slowing (in a queue, or lost
/// by the background subtractor because it stopped) than keeping its speed;
/// but a fast one hidden behind another for max_misses frames (~0.5 s at
/// 25 fps) must still be carried most of the way: at 1 s it keeps ~80% of
/// its travel over 0.5 s, and a stopped one's prediction drifts at most
/// one second's travel however long it coasts.
const COAST_VELOCITY_DECAY_S: f64 = 1.0;
/// A region holding this share of each of two confirmed tracks'
/// predicted boxes spans both: a merge.
const MERGE_COVERS: f32 = 0.6;
/// …unless one of those boxes alone holds this share of the region: then
/// it is that vehicle, with another hidden behind it.
const MERGE_ONE_EXPLAINS: f32 = 0.8;
/// An unmatched region with this share of its area inside a confirmed
/// track's predicted box is a piece of that vehicle.
const FRAGMENT_INSIDE: f32 = 0.8;

struct Track {
    key: TrackKey,
    filter: KalmanBox,
    confirmed: bool,
    hits: u32,
    misses: u32,
}

/// How this frame's regions were used, while associating.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RegionUse {
    Free,
    /// No area or a non-finite field, or spans two confirmed tracks.
    Unused,
    /// Associated with the track at this index.
    Track(usize),
    /// A piece of the confirmed track at this index.
    Fragment(usize),
}

/// The tracks of one camera.
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_key: TrackKey,
    /// The last frame's time, None before the first (and after `finish`).
    last_t: Option<f64>,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Tracker {
        Tracker { config, tracks: Vec::new(), next_key: 1, last_t: None }
    }

    /// One processed frame at `t` seconds on the camera's clock (rises; the
    /// gap varies) with its regions (maybe none). A `t` that is not finite
    /// or goes back predicts nothing for this frame.
    pub fn update(&mut self, t: f64, regions: &[BBox]) -> Step {
        let dt = self.advance_clock(t);
        for track in &mut self.tracks {
            if track.misses > 0 {
                track.filter.damp_velocity((-dt / COAST_VELOCITY_DECAY_S).exp());
            }
            track.filter.predict(dt);
        }
        let predicted: Vec<BBox> = self.tracks.iter().map(|track| track.filter.bbox()).collect();

        let mut uses: Vec<RegionUse> = regions
            .iter()
            .map(|region| if region.is_usable() { RegionUse::Free } else { RegionUse::Unused })
            .collect();
        for (region, region_use) in regions.iter().zip(uses.iter_mut()) {
            if *region_use == RegionUse::Free && self.is_merge(region, &predicted) {
                *region_use = RegionUse::Unused;
            }
        }
        self.associate(true, regions, &predicted, &mut uses);
        self.mark_fragments(regions, &predicted, &mut uses);
        self.associate(false, regions, &predicted, &mut uses);

        let mut step = Step { assigned: vec![None; regions.len()], ..Step::default() };
        self.apply(regions, &predicted, &uses, &mut step);
        self.start_tracks(regions, &uses, &mut step);
        step
    }

    /// Ends every track (shutdown, source rewound): what `update` would
    /// report as ended. The next frame's time starts the clock afresh; keys
    /// go on rising.
    pub fn finish(&mut self) -> Vec<Ended> {
        self.last_t = None;
        self.tracks.drain(..).map(|track| Ended { key: track.key, confirmed: track.confirmed }).collect()
    }

    pub fn tracks(&self) -> Vec<TrackView> {
        self.tracks
            .iter()
            .map(|track| TrackView {
                key: track.key,
                confirmed: track.confirmed,
                bbox: track.filter.bbox(),
                velocity: track.filter.velocity(),
                hits: track.hits,
                misses: track.misses,
            })
            .collect()
    }

    /// Seconds since the last frame: 0 for the first, or when `t` is not
    /// finite or went back (a clock step; the next gap counts from `t`).
    fn advance_clock(&mut self, t: f64) -> f64 {
        if !t.is_finite() {
            return 0.0;
        }
        let dt = self.last_t.map_or(0.0, |last| (t - last).max(0.0));
        self.last_t = Some(t);
        dt
    }

    /// Whether `region` spans two confirmed vehicles rather than being one.
    fn is_merge(&self, region: &BBox, predicted: &[BBox]) -> bool {
        let mut spanned = 0;
        for (track, prediction) in self.tracks.iter().zip(predicted) {
            if !track.confirmed || prediction.fraction_inside(region) < MERGE_COVERS {
                continue;
            }
            if region.fraction_inside(prediction) >= MERGE_ONE_EXPLAINS {
                return false;
            }
            spanned += 1;
        }
        spanned >= 2
    }

    /// Assigns the free regions to the tracks of one kind (confirmed or
    /// tentative) that have none yet.
    fn associate(&self, confirmed: bool, regions: &[BBox], predicted: &[BBox], uses: &mut [RegionUse]) {
        let taken: Vec<bool> = (0..self.tracks.len())
            .map(|index| uses.contains(&RegionUse::Track(index)))
            .collect();
        let tracks: Vec<usize> = (0..self.tracks.len())
            .filter(|&index| self.tracks[index].confirmed == confirmed && !taken[index])
            .collect();
        let free: Vec<usize> = (0..regions.len()).filter(|&r| uses[r] == RegionUse::Free).collect();
        let track_boxes: Vec<BBox> = tracks.iter().map(|&index| predicted[index]).collect();
        let region_boxes: Vec<BBox> = free.iter().map(|&r| regions[r]).collect();
        for (t, r) in match_by_iou(&track_boxes, &region_boxes, self.config.iou_gate) {
            uses[free[r]] = RegionUse::Track(tracks[t]);
        }
    }

    /// Free regions that lie inside a confirmed track's predicted box are
    /// pieces of it (a split region), not new vehicles.
    fn mark_fragments(&self, regions: &[BBox], predicted: &[BBox], uses: &mut [RegionUse]) {
        for (region, region_use) in regions.iter().zip(uses.iter_mut()) {
            if *region_use != RegionUse::Free {
                continue;
            }
            let holder = self
                .tracks
                .iter()
                .zip(predicted)
                .enumerate()
                .filter(|(_, (track, _))| track.confirmed)
                .map(|(index, (_, prediction))| (index, region.fraction_inside(prediction)))
                .filter(|&(_, inside)| inside >= FRAGMENT_INSIDE)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((index, _)) = holder {
                *region_use = RegionUse::Fragment(index);
            }
        }
    }

    /// Updates the tracks with their regions (or counts their misses) and
    /// ends those that are done.
    fn apply(&mut self, regions: &[BBox], predicted: &[BBox], uses: &[RegionUse], step: &mut Step) {
        let confirm_hits = self.config.confirm_hits.max(1);
        let max_misses = self.config.max_misses;
        for (index, track) in self.tracks.iter_mut().enumerate() {
            let Some(region) = uses.iter().position(|u| *u == RegionUse::Track(index)) else {
                track.misses = track.misses.saturating_add(1);
                if !track.confirmed || track.misses > max_misses {
                    step.ended.push(Ended { key: track.key, confirmed: track.confirmed });
                }
                continue;
            };
            // A split vehicle is measured by its pieces together, when they
            // fit its prediction better than the piece it was matched to.
            let whole = regions
                .iter()
                .zip(uses)
                .filter(|(_, u)| **u == RegionUse::Fragment(index))
                .fold(regions[region], |whole, (piece, _)| whole.union(piece));
            let prediction = &predicted[index];
            let measured =
                if whole.iou(prediction) > regions[region].iou(prediction) { whole } else { regions[region] };
            track.filter.update(measured);
            track.hits = track.hits.saturating_add(1);
            track.misses = 0;
            if !track.confirmed && track.hits >= confirm_hits {
                track.confirmed = true;
                step.confirmed.push(track.key);
            }
            step.assigned[region] =
                Some(Assignment { key: track.key, confirmed: track.confirmed, filtered: track.filter.bbox() });
        }
        let ended = &step.ended;
        self.tracks.retain(|track| !ended.iter().any(|e| e.key == track.key));
    }

    /// A tentative track for each region left free.
    fn start_tracks(&mut self, regions: &[BBox], uses: &[RegionUse], step: &mut Step) {
        let confirmed = self.config.confirm_hits <= 1;
        for (r, region) in regions.iter().enumerate() {
            if uses[r] != RegionUse::Free {
                continue;
            }
            let Some(filter) = KalmanBox::new(*region) else { continue };
            let key = self.next_key;
            self.next_key += 1;
            if confirmed {
                step.confirmed.push(key);
            }
            step.assigned[r] = Some(Assignment { key, confirmed, filtered: filter.bbox() });
            self.tracks.push(Track { key, filter, confirmed, hits: 1, misses: 0 });
        }
    }
}

/// The pairs (row, column) of the assignment that maximises the summed IoU
/// between `rows` and `columns`, among pairs that overlap by at least
/// `least`.
pub(crate) fn match_by_iou(rows: &[BBox], columns: &[BBox], least: f32) -> Vec<(usize, usize)> {
    if rows.is_empty() || columns.is_empty() {
        return Vec::new();
    }
    // Kuhn-Munkres assigns every row: it wants no more rows than columns.
    let transposed = rows.len() > columns.len();
    let (short, long) = if transposed { (columns, rows) } else { (rows, columns) };
    let weights = Matrix::from_fn(short.len(), long.len(), |(s, l)| gated_weight(&short[s], &long[l], least));
    let (_, assignment) = kuhn_munkres(&weights);
    assignment
        .into_iter()
        .enumerate()
        .filter(|&(s, l)| weights[(s, l)] > 0)
        .map(|(s, l)| if transposed { (l, s) } else { (s, l) })
        .collect()
}

/// The pair's weight in the assignment: 0 (never paired) below the gate,
/// without overlap, or for a box without area or with a non-finite field.
fn gated_weight(a: &BBox, b: &BBox, least: f32) -> i64 {
    let iou = if a.is_usable() && b.is_usable() { a.iou(b) } else { 0.0 };
    if iou > 0.0 && iou >= least {
        ((iou * IOU_SCALE).round() as i64).max(1)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::track::metrics::{ClearMot, TruthId};

    const FRAME: f64 = 1.0 / 25.0;

    /// One frame of a synthetic scene: where the vehicles are and the
    /// regions a background subtractor would report for them.
    struct Frame {
        t: f64,
        truth: Vec<(TruthId, BBox)>,
        regions: Vec<BBox>,
    }

    /// The frames at these indices (25 fps), each visible vehicle's region
    /// its box jittered by up to 2 px.
    fn scene(
        seed: u64,
        frames: impl IntoIterator<Item = usize>,
        truth_at: impl Fn(usize) -> Vec<(TruthId, BBox)>,
    ) -> Vec<Frame> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut shake = move || rng.f32() * 4.0 - 2.0;
        frames
            .into_iter()
            .map(|f| {
                let truth = truth_at(f);
                let regions = truth
                    .iter()
                    .map(|(_, b)| BBox::new(b.x + shake(), b.y + shake(), b.w + shake(), b.h + shake()))
                    .collect();
                Frame { t: t(f), truth, regions }
            })
            .collect()
    }

    /// What the tracker made of a scene.
    struct Outcome {
        steps: Vec<Step>,
        mot: ClearMot,
        confirmed: Vec<TrackKey>,
        ended: Vec<Ended>,
        /// Every key any region was given.
        keys: BTreeSet<TrackKey>,
    }

    /// Runs the scene, showing `inspect` each frame's step and the tracker
    /// after it; the hypotheses are the confirmed tracks that had a region
    /// in the frame, at their filtered boxes.
    fn track(name: &str, frames: &[Frame], mut inspect: impl FnMut(usize, &Step, &Tracker)) -> Outcome {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut outcome = Outcome {
            steps: Vec::new(),
            mot: ClearMot::new(),
            confirmed: Vec::new(),
            ended: Vec::new(),
            keys: BTreeSet::new(),
        };
        for (f, frame) in frames.iter().enumerate() {
            let step = tracker.update(frame.t, &frame.regions);
            assert_eq!(step.assigned.len(), frame.regions.len());
            inspect(f, &step, &tracker);
            let hypotheses: Vec<(TrackKey, BBox)> =
                step.assigned.iter().flatten().filter(|a| a.confirmed).map(|a| (a.key, a.filtered)).collect();
            outcome.mot.add_frame(&frame.truth, &hypotheses);
            outcome.keys.extend(step.assigned.iter().flatten().map(|a| a.key));
            outcome.confirmed.extend(&step.confirmed);
            outcome.ended.extend(&step.ended);
            outcome.steps.push(step);
        }
        outcome.ended.extend(tracker.finish());
        println!("{name}: {}", outcome.mot);
        outcome
    }

    /// What the user cares about: no ID switch, each vehicle followed under
    /// one confirmed key of its own, and no confirmed track on anything else.
    fn assert_one_key_per_vehicle(outcome: &Outcome, vehicles: usize) {
        let figures = outcome.mot.figures();
        assert_eq!(figures.id_switches, 0, "{figures}");
        let per_truth = outcome.mot.keys_per_truth();
        assert_eq!(per_truth.len(), vehicles, "vehicles matched: {per_truth:?}");
        for (id, keys) in per_truth {
            assert_eq!(keys.len(), 1, "vehicle {id} had keys {keys:?}");
        }
        let distinct: BTreeSet<TrackKey> = per_truth.values().flatten().copied().collect();
        assert_eq!(distinct.len(), vehicles, "vehicles shared keys: {per_truth:?}");
        assert_eq!(outcome.confirmed.len(), vehicles, "confirmed {:?}", outcome.confirmed);
        let confirmed_ends = outcome.ended.iter().filter(|e| e.confirmed).count();
        assert_eq!(confirmed_ends, vehicles, "ended {:?}", outcome.ended);
    }

    fn t(frame: usize) -> f64 {
        frame as f64 * FRAME
    }

    #[test]
    fn tracks_are_confirmed_after_hits_and_end_after_misses() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let car = BBox::new(100.0, 100.0, 100.0, 60.0);
        let first = tracker.update(0.0, &[car]);
        assert_eq!(first.assigned, vec![Some(Assignment { key: 1, confirmed: false, filtered: car })]);
        assert!(tracker.update(t(1), &[car]).confirmed.is_empty());
        let third = tracker.update(t(2), &[car]);
        assert_eq!(third.confirmed, vec![1]);
        assert!(third.assigned[0].is_some_and(|a| a.key == 1 && a.confirmed));

        // Noise for one frame: a tentative track that dies at its first miss.
        let noise = BBox::new(500.0, 300.0, 40.0, 40.0);
        assert_eq!(tracker.update(t(3), &[car, noise]).assigned[1].map(|a| a.key), Some(2));
        assert_eq!(tracker.update(t(4), &[car]).ended, vec![Ended { key: 2, confirmed: false }]);

        // The car goes: it coasts max_misses frames, ends at the next.
        for miss in 1..=12 {
            let step = tracker.update(t(4 + miss as usize), &[]);
            assert!(step.ended.is_empty(), "ended at miss {miss}");
            assert_eq!(tracker.tracks()[0].misses, miss);
        }
        assert_eq!(tracker.update(t(17), &[]).ended, vec![Ended { key: 1, confirmed: true }]);
        assert!(tracker.tracks().is_empty());
        assert_eq!(tracker.update(t(18), &[car]).assigned[0].map(|a| a.key), Some(3));
    }

    #[test]
    fn confirmed_tracks_are_served_before_tentative_ones() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let parked = BBox::new(0.0, 0.0, 100.0, 100.0);
        for frame in 0..3 {
            tracker.update(t(frame), &[parked]);
        }
        let newcomer = BBox::new(30.0, 0.0, 100.0, 100.0);
        let step = tracker.update(t(3), &[parked, newcomer]);
        assert_eq!(step.assigned[1].map(|a| (a.key, a.confirmed)), Some((2, false)));
        // One region, nearer the tentative track (IoU 0.90) than the
        // confirmed one (0.60): the confirmed one takes it.
        let step = tracker.update(t(4), &[BBox::new(25.0, 0.0, 100.0, 100.0)]);
        assert_eq!(step.assigned[0].map(|a| a.key), Some(1));
        assert_eq!(step.ended, vec![Ended { key: 2, confirmed: false }]);
    }

    #[test]
    fn a_hidden_vehicle_keeps_its_key_even_when_fast() {
        // 1: 100 px wide at 15 px/frame, hidden 10 frames; 2: slower, in the
        // next lane, hidden max_misses frames.
        let frames = scene(1, 0..60, |f| {
            let mut truth = Vec::new();
            if !(25..35).contains(&f) {
                truth.push((1, BBox::new(15.0 * f as f32, 100.0, 100.0, 60.0)));
            }
            if !(30..42).contains(&f) {
                truth.push((2, BBox::new(900.0 - 6.0 * f as f32, 250.0, 120.0, 70.0)));
            }
            truth
        });
        let outcome = track("occlusion", &frames, |_, _, _| {});
        assert_one_key_per_vehicle(&outcome, 2);
        assert_eq!(outcome.keys.len(), 2, "keys {:?}", outcome.keys);
    }

    /// A queue that slows from 10 px/frame to a stop over 25 frames, stands
    /// 75 frames (3 s), and goes on: the front position at frame `f`.
    fn stop_and_go(f: usize) -> f32 {
        let speed = |f: usize| match f {
            0..30 => 10.0,
            30..55 => 10.0 * (55 - f) as f32 / 25.0,
            55..130 => 0.0,
            130..155 => 10.0 * (f - 130) as f32 / 25.0,
            _ => 10.0,
        };
        (0..f).map(speed).sum()
    }

    #[test]
    fn a_vehicle_that_stops_in_traffic_keeps_its_key() {
        // Two vehicles 30 px apart, stopping and going together.
        let frames = scene(2, 0..200, |f| {
            let front = 200.0 + stop_and_go(f);
            vec![(1, BBox::new(front, 300.0, 150.0, 80.0)), (2, BBox::new(front - 180.0, 300.0, 150.0, 80.0))]
        });
        let outcome = track("stop and go", &frames, |_, _, _| {});
        assert_one_key_per_vehicle(&outcome, 2);
        assert_eq!(outcome.mot.figures().fragmentations, 0);
    }

    #[test]
    fn a_vehicle_lost_while_stopping_is_found_again() {
        // Lane 1's region vanishes for max_misses frames while it stands;
        // lane 2's while it brakes (moving ~4 px/frame), and it stops unseen.
        let lane_1_lost = 70..82;
        let lane_2_lost = 45..57;
        let frames = scene(3, 0..200, |f| {
            let mut truth = Vec::new();
            if !lane_1_lost.contains(&f) {
                truth.push((1, BBox::new(100.0 + stop_and_go(f), 100.0, 120.0, 70.0)));
            }
            if !lane_2_lost.contains(&f) {
                truth.push((2, BBox::new(100.0 + stop_and_go(f), 300.0, 120.0, 70.0)));
            }
            truth
        });
        let mut lane_2_speeds = Vec::new();
        let outcome = track("stopped and lost", &frames, |f, _, tracker| {
            if lane_2_lost.contains(&f) {
                let coasting = tracker.tracks().into_iter().find(|v| v.misses > 0).expect("lane 2 coasts");
                lane_2_speeds.push(coasting.velocity.0);
            }
        });
        assert_one_key_per_vehicle(&outcome, 2);
        // Damped while coasting: e^(-11 frames / 1 s) of its speed is left.
        let (first, last) = (lane_2_speeds[0], lane_2_speeds[lane_2_speeds.len() - 1]);
        assert!(first > 50.0 && last < 0.7 * first, "coasting speeds {lane_2_speeds:?}");
    }

    /// Two 150 px vehicles 20 px apart in one lane at 10 px/frame.
    fn close_behind(f: usize) -> Vec<(TruthId, BBox)> {
        let x = 10.0 * f as f32;
        vec![(1, BBox::new(x + 170.0, 200.0, 150.0, 80.0)), (2, BBox::new(x, 200.0, 150.0, 80.0))]
    }

    #[test]
    fn two_vehicles_close_behind_each_other_stay_two() {
        let outcome = track("close behind", &scene(4, 0..100, close_behind), |_, _, _| {});
        assert_one_key_per_vehicle(&outcome, 2);
        assert_eq!(outcome.keys.len(), 2);
    }

    /// Two vehicles in adjacent lanes (their boxes overlap by 20 px in y)
    /// passing each other at 12 px/frame each way, meeting at frame 37.
    fn passing(f: usize) -> Vec<(TruthId, BBox)> {
        let x = 12.0 * f as f32;
        vec![(1, BBox::new(x, 100.0, 120.0, 80.0)), (2, BBox::new(888.0 - x, 160.0, 120.0, 80.0))]
    }

    #[test]
    fn vehicles_passing_in_adjacent_lanes_do_not_swap() {
        let outcome = track("passing", &scene(5, 0..75, passing), |_, _, _| {});
        assert_one_key_per_vehicle(&outcome, 2);
    }

    #[test]
    fn a_split_region_is_no_new_vehicle() {
        // Front and back halves for frames 20–21 and 50.
        let split_frames = [20, 21, 50];
        let mut frames = scene(6, 0..80, |f| vec![(1, BBox::new(10.0 * f as f32, 200.0, 150.0, 80.0))]);
        for f in split_frames {
            let car = frames[f].truth[0].1;
            let back = BBox::new(car.x, car.y, 70.0, car.h);
            let front = BBox::new(car.x + 80.0, car.y + 5.0, 70.0, car.h - 5.0);
            frames[f].regions = vec![back, front];
        }
        let outcome = track("split", &frames, |_, _, _| {});
        assert_one_key_per_vehicle(&outcome, 1);
        assert_eq!(outcome.keys, BTreeSet::from([1]), "a piece started a track");
        for f in split_frames {
            let assigned = &outcome.steps[f].assigned;
            let used: Vec<&Assignment> = assigned.iter().flatten().collect();
            assert_eq!((used.len(), assigned.len()), (1, 2), "frame {f}: {assigned:?}");
            // Measured by both halves: the filtered box stays whole.
            assert!(used[0].filtered.w > 135.0, "frame {f}: {:?}", used[0].filtered);
        }
    }

    /// Runs a scene whose regions merge into their union on `merged`
    /// frames, and checks neither vehicle's box jumped to the union then.
    fn assert_merge_updates_neither(name: &str, truth_at: fn(usize) -> Vec<(TruthId, BBox)>, merged: &[usize]) {
        let mut frames = scene(7, 0..80, truth_at);
        for &f in merged {
            let regions = &frames[f].regions;
            let union = regions.iter().fold(regions[0], |union, region| union.union(region));
            frames[f].regions = vec![union];
        }
        let outcome = track(name, &frames, |f, step, tracker| {
            if merged.contains(&f) {
                assert_eq!(step.assigned, vec![None], "frame {f}");
                for (view, (_, truth)) in tracker.tracks().iter().zip(truth_at(f)) {
                    assert!(view.bbox.iou(&truth) > 0.7, "frame {f}: {view:?} vs {truth:?}");
                }
            }
        });
        assert_one_key_per_vehicle(&outcome, 2);
        assert_eq!(outcome.keys.len(), 2, "keys {:?}", outcome.keys);
    }

    #[test]
    fn merged_regions_update_neither_vehicle() {
        assert_merge_updates_neither("merge, same lane", close_behind, &[30, 31, 60]);
        assert_merge_updates_neither("merge, passing", passing, &[36, 37]);
    }

    #[test]
    fn a_car_hidden_behind_a_truck_does_not_stop_the_truck() {
        // A car overtakes in the far lane; while it is wholly behind the
        // truck in the image (frames 19–28) the only region is the truck's,
        // which covers most of both boxes but is the truck: not a merge.
        let frames = scene(10, 0..50, |f| {
            let truck = BBox::new(100.0 + 6.0 * f as f32, 200.0, 250.0, 130.0);
            let car = BBox::new(-200.0 + 22.0 * f as f32, 180.0, 100.0, 80.0);
            let hidden = car.x >= truck.x && car.right() <= truck.right();
            if hidden {
                vec![(1, truck)]
            } else {
                vec![(1, truck), (2, car)]
            }
        });
        let outcome = track("hidden behind", &frames, |f, step, _| {
            if (19..29).contains(&f) {
                assert!(step.assigned[0].is_some_and(|a| a.confirmed), "frame {f}: {:?}", step.assigned);
            }
        });
        assert_one_key_per_vehicle(&outcome, 2);
    }

    #[test]
    fn dropped_frames_keep_the_keys() {
        // Every seventh processed frame comes three intervals after the last.
        let processed = (0..50usize).scan(0, |frame, step| {
            *frame += if step % 7 == 6 { 3 } else { 1 };
            Some(*frame)
        });
        let frames = scene(8, processed, |f| {
            let x = f as f32;
            vec![(1, BBox::new(15.0 * x, 100.0, 100.0, 60.0)), (2, BBox::new(1000.0 - 5.0 * x, 250.0, 130.0, 80.0))]
        });
        let outcome = track("dropped frames", &frames, |_, _, _| {});
        assert_one_key_per_vehicle(&outcome, 2);
        assert_eq!(outcome.keys.len(), 2);
    }

    #[test]
    fn flickering_noise_is_never_confirmed() {
        // A still box in one frame of three, beside a passing car.
        let mut frames = scene(9, 0..90, |f| vec![(1, BBox::new(8.0 * f as f32, 100.0, 120.0, 70.0))]);
        for frame in frames.iter_mut().step_by(3) {
            frame.regions.push(BBox::new(400.0, 400.0, 60.0, 40.0));
        }
        let outcome = track("flicker", &frames, |_, _, _| {});
        assert_one_key_per_vehicle(&outcome, 1);
        assert_eq!(outcome.mot.figures().false_positives, 0);
        let noise_deaths = outcome.ended.iter().filter(|e| !e.confirmed).count();
        assert_eq!(noise_deaths, 30, "ended {:?}", outcome.ended);
    }

    #[test]
    fn unusable_regions_and_clocks_are_ignored() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let car = BBox::new(100.0, 100.0, 100.0, 60.0);
        let bad = [
            BBox::new(f32::NAN, 0.0, 10.0, 10.0),
            BBox::new(0.0, 0.0, 0.0, 10.0),
            BBox::new(0.0, 0.0, 10.0, -5.0),
            BBox::new(0.0, f32::INFINITY, 10.0, 10.0),
        ];
        let mut regions = bad.to_vec();
        regions.push(car);
        for (frame, clock) in [0.0, f64::NAN, 0.08, 0.04, f64::INFINITY, 0.12].into_iter().enumerate() {
            let step = tracker.update(clock, &regions);
            assert_eq!(step.assigned[..4], [None; 4], "frame {frame}");
            assert_eq!(step.assigned[4].map(|a| a.key), Some(1), "frame {frame}");
        }
        assert!(tracker.update(0.16, &[]).ended.is_empty());
        let views = tracker.tracks();
        assert_eq!(views.len(), 1);
        assert!(views[0].bbox.is_usable() && views[0].bbox.iou(&car) > 0.8, "{views:?}");

        // Confirmed at once, ended at the first miss; a gate no IoU passes.
        let mut strict = Tracker::new(TrackerConfig { iou_gate: f32::NAN, confirm_hits: 0, max_misses: 0 });
        let step = strict.update(0.0, &[car]);
        assert_eq!(step.confirmed, vec![1]);
        let step = strict.update(0.04, &[BBox::new(600.0, 100.0, 100.0, 60.0)]);
        assert_eq!((step.confirmed, step.ended), (vec![2], vec![Ended { key: 1, confirmed: true }]));
    }

    #[test]
    fn finish_ends_every_track_and_keys_go_on_rising() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let (car, van) = (BBox::new(0.0, 0.0, 100.0, 60.0), BBox::new(400.0, 0.0, 150.0, 90.0));
        for frame in 0..3 {
            tracker.update(t(frame), &[car]);
        }
        tracker.update(t(3), &[car, van]);
        let ended = tracker.finish();
        assert_eq!(ended, vec![Ended { key: 1, confirmed: true }, Ended { key: 2, confirmed: false }]);
        assert!(tracker.tracks().is_empty() && tracker.finish().is_empty());
        // The source rewound: time starts again, keys do not.
        assert_eq!(tracker.update(0.0, &[car]).assigned[0].map(|a| a.key), Some(3));
    }
}
