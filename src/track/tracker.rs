//! TEMPORARY greedy stand-in with the agreed API; replaced by the tracker branch.
use super::geometry::BBox;
pub struct TrackerConfig { pub iou_gate: f32, pub confirm_hits: u32, pub max_misses: u32 }
impl Default for TrackerConfig { fn default() -> Self { TrackerConfig { iou_gate: 0.2, confirm_hits: 3, max_misses: 12 } } }
pub type TrackKey = u64;
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assignment { pub key: TrackKey, pub confirmed: bool, pub filtered: BBox }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended { pub key: TrackKey, pub confirmed: bool }
#[derive(Debug, Default)]
pub struct Step { pub assigned: Vec<Option<Assignment>>, pub confirmed: Vec<TrackKey>, pub ended: Vec<Ended> }
pub struct TrackView { pub key: TrackKey, pub confirmed: bool, pub bbox: BBox, pub velocity: (f32, f32), pub hits: u32, pub misses: u32 }
struct T { key: u64, bbox: BBox, hits: u32, misses: u32, confirmed: bool }
pub struct Tracker { config: TrackerConfig, tracks: Vec<T>, next: u64 }
impl Tracker {
    pub fn new(config: TrackerConfig) -> Tracker { Tracker { config, tracks: vec![], next: 1 } }
    pub fn update(&mut self, _t: f64, regions: &[BBox]) -> Step {
        let mut step = Step::default();
        let mut used = vec![false; self.tracks.len()];
        for r in regions {
            let best = self.tracks.iter().enumerate().filter(|(i, _)| !used[*i]).map(|(i, t)| (i, t.bbox.iou(r))).filter(|(_, v)| *v >= self.config.iou_gate).max_by(|a, b| a.1.total_cmp(&b.1));
            let i = match best { Some((i, _)) => i, None => { self.tracks.push(T { key: self.next, bbox: *r, hits: 0, misses: 0, confirmed: false }); self.next += 1; used.push(false); self.tracks.len() - 1 } };
            used[i] = true;
            let t = &mut self.tracks[i];
            t.bbox = *r; t.hits += 1; t.misses = 0;
            if !t.confirmed && t.hits >= self.config.confirm_hits { t.confirmed = true; step.confirmed.push(t.key); }
            step.assigned.push(Some(Assignment { key: t.key, confirmed: t.confirmed, filtered: *r }));
        }
        let max = self.config.max_misses;
        for (i, t) in self.tracks.iter_mut().enumerate() { if !used[i] { t.misses += 1; } }
        self.tracks.retain(|t| { let gone = (t.confirmed && t.misses > max) || (!t.confirmed && t.misses > 0); if gone { step.ended.push(Ended { key: t.key, confirmed: t.confirmed }); } !gone });
        step
    }
    pub fn finish(&mut self) -> Vec<Ended> { self.tracks.drain(..).map(|t| Ended { key: t.key, confirmed: t.confirmed }).collect() }
    pub fn tracks(&self) -> Vec<TrackView> { self.tracks.iter().map(|t| TrackView { key: t.key, confirmed: t.confirmed, bbox: t.bbox, velocity: (0.0, 0.0), hits: t.hits, misses: t.misses }).collect() }
}
