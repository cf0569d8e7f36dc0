//! CLEAR-MOT figures (Bernardin & Stiefelhagen, 2008) of a tracker's output
//! against the truth, for the tests.
//!
//! Per frame, the truth objects and the hypotheses (track keys) are matched
//! one to one at IoU ≥ 0.5: last frame's correspondences are kept while
//! still valid, the rest are assigned optimally (Hungarian). A truth object
//! matched to a hypothesis other than its last one is an ID switch; one that
//! was tracked, lost while present and tracked again is a fragmentation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use super::geometry::BBox;
use super::tracker::{match_by_iou, TrackKey};

/// A truth object's identity.
pub type TruthId = u64;

/// Least IoU for a hypothesis to be the truth object, as CLEAR-MOT uses.
const MATCH_IOU: f32 = 0.5;

/// The counts over all frames so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MotFigures {
    pub truth_boxes: u64,
    pub matches: u64,
    /// Truth boxes matched by no hypothesis (FN).
    pub misses: u64,
    /// Hypotheses matching no truth box (FP).
    pub false_positives: u64,
    pub id_switches: u64,
    pub fragmentations: u64,
}

impl MotFigures {
    /// 1 − (FN + FP + IDSW) / GT; None without truth boxes.
    pub fn mota(&self) -> Option<f64> {
        let errors = self.misses + self.false_positives + self.id_switches;
        (self.truth_boxes > 0).then(|| 1.0 - errors as f64 / self.truth_boxes as f64)
    }
}

impl fmt::Display for MotFigures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mota() {
            Some(mota) => write!(f, "MOTA {mota:.2}")?,
            None => write!(f, "MOTA n/a")?,
        }
        write!(
            f,
            ", ID switches {}, fragments {}, misses {}, false positives {} over {} truth boxes",
            self.id_switches, self.fragmentations, self.misses, self.false_positives, self.truth_boxes
        )
    }
}

/// Accumulates the figures frame by frame.
#[derive(Debug, Default)]
pub struct ClearMot {
    figures: MotFigures,
    /// Last frame's correspondences, kept while still valid.
    current: HashMap<TruthId, TrackKey>,
    /// Each truth object's latest hypothesis, however long ago.
    last_match: HashMap<TruthId, TrackKey>,
    /// Truth objects tracked once, missed since: their next match resumes a
    /// fragmented trajectory.
    interrupted: HashSet<TruthId>,
    keys: BTreeMap<TruthId, BTreeSet<TrackKey>>,
}

impl ClearMot {
    pub fn new() -> ClearMot {
        ClearMot::default()
    }

    /// One frame: the truth objects present and the tracker's hypotheses.
    pub fn add_frame(&mut self, truth: &[(TruthId, BBox)], hypotheses: &[(TrackKey, BBox)]) {
        let mut matched: Vec<Option<usize>> = vec![None; truth.len()];
        let mut hypothesis_used = vec![false; hypotheses.len()];
        for (slot, (id, truth_box)) in matched.iter_mut().zip(truth) {
            let Some(&key) = self.current.get(id) else { continue };
            let still_valid = (0..hypotheses.len()).find(|&h| {
                !hypothesis_used[h] && hypotheses[h].0 == key && same_object(&hypotheses[h].1, truth_box)
            });
            if let Some(h) = still_valid {
                *slot = Some(h);
                hypothesis_used[h] = true;
            }
        }

        let free_truth: Vec<usize> = (0..truth.len()).filter(|&i| matched[i].is_none()).collect();
        let free_hypotheses: Vec<usize> = (0..hypotheses.len()).filter(|&h| !hypothesis_used[h]).collect();
        let truth_boxes: Vec<BBox> = free_truth.iter().map(|&i| truth[i].1).collect();
        let hypothesis_boxes: Vec<BBox> = free_hypotheses.iter().map(|&h| hypotheses[h].1).collect();
        for (i, h) in match_by_iou(&truth_boxes, &hypothesis_boxes, MATCH_IOU) {
            matched[free_truth[i]] = Some(free_hypotheses[h]);
            hypothesis_used[free_hypotheses[h]] = true;
        }

        self.current.clear();
        for (&(id, _), slot) in truth.iter().zip(&matched) {
            self.figures.truth_boxes += 1;
            let Some(h) = *slot else {
                self.figures.misses += 1;
                if self.last_match.contains_key(&id) {
                    self.interrupted.insert(id);
                }
                continue;
            };
            let key = hypotheses[h].0;
            self.figures.matches += 1;
            if self.last_match.insert(id, key).is_some_and(|last| last != key) {
                self.figures.id_switches += 1;
            }
            if self.interrupted.remove(&id) {
                self.figures.fragmentations += 1;
            }
            self.current.insert(id, key);
            self.keys.entry(id).or_default().insert(key);
        }
        self.figures.false_positives += hypothesis_used.iter().filter(|used| !**used).count() as u64;
    }

    pub fn figures(&self) -> MotFigures {
        self.figures
    }

    /// Every hypothesis each truth object was matched to: one each is a
    /// vehicle followed under one key.
    pub fn keys_per_truth(&self) -> &BTreeMap<TruthId, BTreeSet<TrackKey>> {
        &self.keys
    }
}

impl fmt::Display for ClearMot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.figures.fmt(f)
    }
}

/// Whether a hypothesis still covers a truth box well enough to stay its match.
fn same_object(hypothesis: &BBox, truth: &BBox) -> bool {
    hypothesis.is_usable() && truth.is_usable() && hypothesis.iou(truth) >= MATCH_IOU
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: f32) -> BBox {
        BBox::new(x, 0.0, 100.0, 100.0)
    }

    #[test]
    fn counts_misses_false_positives_switches_and_fragments() {
        let (a, b, far) = (square(0.0), square(300.0), square(700.0));
        let mut mot = ClearMot::new();
        mot.add_frame(&[(1, a), (2, b)], &[(10, a), (20, b)]);
        // 2 is missed, then found under another key: a switch, and a fragment.
        mot.add_frame(&[(1, a), (2, b)], &[(10, a)]);
        mot.add_frame(&[(1, a), (2, b)], &[(10, a), (30, b)]);
        // 2 has left; a hypothesis on nothing.
        mot.add_frame(&[(1, a)], &[(10, a), (40, far)]);
        // 10 still overlaps 1 enough: kept, though 50 fits better (50 is a false positive).
        mot.add_frame(&[(1, a)], &[(50, a), (10, square(20.0))]);
        mot.add_frame(&[(1, a)], &[(10, a)]);
        // 10 is gone: 1 is now 50, a second switch.
        mot.add_frame(&[(1, a)], &[(50, a)]);

        let figures = mot.figures();
        assert_eq!(
            figures,
            MotFigures {
                truth_boxes: 10,
                matches: 9,
                misses: 1,
                false_positives: 2,
                id_switches: 2,
                fragmentations: 1
            }
        );
        assert_eq!(
            mot.to_string(),
            "MOTA 0.50, ID switches 2, fragments 1, misses 1, false positives 2 over 10 truth boxes"
        );
        let keys: Vec<(TruthId, Vec<TrackKey>)> =
            mot.keys_per_truth().iter().map(|(id, keys)| (*id, keys.iter().copied().collect())).collect();
        assert_eq!(keys, vec![(1, vec![10, 50]), (2, vec![20, 30])]);
    }

    #[test]
    fn matches_the_most_pairs_not_the_single_best() {
        // 1–10 is the best pair (0.90), but taking it leaves 2 unmatched;
        // 1–20 (0.54) and 2–10 (0.54) match both.
        let mut mot = ClearMot::new();
        mot.add_frame(&[(1, square(0.0)), (2, square(35.0))], &[(10, square(5.0)), (20, square(-30.0))]);
        assert_eq!(mot.figures().matches, 2);
        assert_eq!(mot.figures().mota(), Some(1.0));
    }

    #[test]
    fn no_truth_no_mota_and_bad_boxes_match_nothing() {
        let mut mot = ClearMot::new();
        assert_eq!(mot.figures().mota(), None);
        mot.add_frame(&[], &[(1, square(0.0))]);
        assert_eq!(
            mot.to_string(),
            "MOTA n/a, ID switches 0, fragments 0, misses 0, false positives 1 over 0 truth boxes"
        );
        mot.add_frame(&[(1, BBox::new(f32::NAN, 0.0, 100.0, 100.0))], &[(1, square(0.0))]);
        mot.add_frame(&[(2, square(0.0))], &[(2, BBox::new(0.0, 0.0, -100.0, 100.0))]);
        assert_eq!((mot.figures().matches, mot.figures().misses), (0, 2));
    }
}
