//! A vehicle's class by the consensus of its frames: the road-class
//! probabilities of every frame it was classified in, weighted by how
//! much of it the frame saw and how sure the model was, averaged; the
//! taxonomy's own rule (the class with the most mass, or `none` when the
//! vehicle classes together hold too little) then picks on the average.

use std::collections::BTreeMap;
use std::sync::Arc;

/// The class reported when a vehicle's frames hold no vehicle (as the taxonomy's).
pub const NO_VEHICLE: &str = "none";

#[derive(Debug, Clone, Default)]
pub struct Vote {
    /// Per road class: the sum of weight × probability.
    mass: BTreeMap<String, f64>,
    weight: f64,
    /// Per class: frames whose own answer it was.
    votes: BTreeMap<String, u32>,
    frames: u32,
}

/// What the frames agreed on.
#[derive(Debug, Clone, PartialEq)]
pub struct Consensus {
    pub class: String,
    /// The class's weighted mean probability (for `none`: one minus the vehicle classes' mass).
    pub score: f32,
    pub votes: BTreeMap<String, u32>,
    pub frames: u32,
}

impl Vote {
    /// Adds one classified view: its road-class probabilities (`none` left
    /// out), its own class, its area in pixels and its normalised entropy
    /// (0 = certain, 1 = uniform).
    pub fn add(&mut self, probabilities: &[(String, f32)], own_class: &str, area: f32, entropy: f32) {
        // A sure answer on a big view counts most; an unsure one still a little.
        let weight = area.max(1.0) as f64 * (1.0 - entropy as f64).clamp(0.05, 1.0);
        if !weight.is_finite() {
            return;
        }
        for (class, p) in probabilities {
            if p.is_finite() {
                *self.mass.entry(class.clone()).or_default() += weight * *p as f64;
            }
        }
        self.weight += weight;
        *self.votes.entry(own_class.to_string()).or_default() += 1;
        self.frames += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// The consensus under the taxonomy's `min_vehicle_score`; `none` with no view.
    pub fn consensus(&self, min_vehicle_score: f32) -> Consensus {
        let finish = |class: &str, score: f64| Consensus { class: class.to_string(), score: score as f32, votes: self.votes.clone(), frames: self.frames };
        if self.weight <= 0.0 {
            return finish(NO_VEHICLE, 0.0);
        }
        let mean = |m: f64| m / self.weight;
        let vehicle: f64 = self.mass.values().map(|m| mean(*m)).sum();
        match self.mass.iter().max_by(|a, b| a.1.total_cmp(b.1)) {
            Some((class, m)) if vehicle >= min_vehicle_score as f64 => finish(class, mean(*m)),
            _ => finish(NO_VEHICLE, (1.0 - vehicle).max(0.0)),
        }
    }
}

impl Vote {
    /// The consensus among `classes` only: the one of them with the most
    /// mass, if together they hold at least `min_vehicle_score`.
    fn consensus_within(&self, classes: &[String], min_vehicle_score: f32) -> Option<Consensus> {
        if self.weight <= 0.0 {
            return None;
        }
        let mass = |class: &String| self.mass.get(class).copied().unwrap_or(0.0) / self.weight;
        let total: f64 = classes.iter().map(mass).sum();
        let best = classes.iter().max_by(|a, b| mass(a).total_cmp(&mass(b)))?;
        (total >= min_vehicle_score as f64).then(|| Consensus { class: best.clone(), score: mass(best) as f32, votes: self.votes.clone(), frames: self.frames })
    }
}

/// What the detector said of one region: its label, score, and the road
/// classes the label stands for (the detector's own first).
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub label: String,
    pub score: f32,
    pub classes: Arc<[String]>,
}

/// The detector's labels for one track over the frames it detected it in.
#[derive(Debug, Clone, Default)]
pub struct DetectorVote {
    /// Per label: summed score, frames, its road classes.
    labels: BTreeMap<String, (f64, u32, Arc<[String]>)>,
}

/// The detector's call on a track: the label with the most summed score.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorCall {
    pub label: String,
    /// Its mean score over the frames it was that label.
    pub score: f32,
    /// Frames the detector found it in, under any label.
    pub frames: u32,
    pub classes: Arc<[String]>,
}

impl DetectorVote {
    pub fn add(&mut self, detected: &Detected) {
        if !detected.score.is_finite() || detected.classes.is_empty() {
            return;
        }
        let entry = self.labels.entry(detected.label.clone()).or_insert_with(|| (0.0, 0, detected.classes.clone()));
        entry.0 += detected.score as f64;
        entry.1 += 1;
    }

    pub fn call(&self) -> Option<DetectorCall> {
        let frames = self.labels.values().map(|(_, n, _)| n).sum();
        let (label, (sum, n, classes)) = self.labels.iter().max_by(|a, b| a.1 .0.total_cmp(&b.1 .0))?;
        Some(DetectorCall { label: label.clone(), score: (sum / *n as f64) as f32, frames, classes: classes.clone() })
    }
}

/// Two stages agree on a class: the detector says what kind of object it
/// is (COCO's `truck` covers pickups, vans and lorries), the classifier
/// picks the finest class among those the detector's label stands for;
/// where the classifier's frames hold too little of them, the detector's
/// own class stands, with the detector's score. Without a detector call,
/// the classifier's consensus as it is.
pub fn combine(vote: &Vote, detector: Option<&DetectorCall>, min_vehicle_score: f32) -> Consensus {
    let Some(call) = detector else { return vote.consensus(min_vehicle_score) };
    vote.consensus_within(&call.classes, min_vehicle_score).unwrap_or_else(|| Consensus {
        class: call.classes[0].clone(),
        score: call.score,
        votes: vote.votes.clone(),
        frames: vote.frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detected(label: &str, score: f32, classes: &[&str]) -> Detected {
        Detected { label: label.into(), score, classes: classes.iter().map(|c| c.to_string()).collect::<Vec<_>>().into() }
    }

    #[test]
    fn the_classifier_refines_the_detectors_truck_but_cannot_overrule_it() {
        let mut detector = DetectorVote::default();
        for _ in 0..3 {
            detector.add(&detected("truck", 0.6, &["truck", "van", "car"]));
        }
        detector.add(&detected("car", 0.9, &["car", "van"]));
        let call = detector.call().unwrap();
        assert_eq!((call.label.as_str(), call.frames), ("truck", 4));
        assert!((call.score - 0.6).abs() < 1e-6);
        // The classifier sees a van: a finer class within COCO's truck.
        let mut vote = Vote::default();
        vote.add(&p(&[("van", 0.5), ("bus", 0.3)]), "van", 10_000.0, 0.3);
        assert_eq!(combine(&vote, Some(&call), 0.25).class, "van");
        // It sees a bus, which a truck cannot be: the detector's truck stands, with its score.
        let mut vote = Vote::default();
        vote.add(&p(&[("bus", 0.9)]), "bus", 10_000.0, 0.3);
        let c = combine(&vote, Some(&call), 0.25);
        assert_eq!((c.class.as_str(), c.score), ("truck", call.score));
        // It sees no vehicle at all: the detector found one, so it is one.
        assert_eq!(combine(&Vote::default(), Some(&call), 0.25).class, "truck");
        // Without the detector, the classifier's word.
        assert_eq!(combine(&vote, None, 0.25).class, "bus");
    }

    fn p(pairs: &[(&str, f32)]) -> Vec<(String, f32)> {
        pairs.iter().map(|(c, p)| (c.to_string(), *p)).collect()
    }

    #[test]
    fn a_vehicle_half_seen_as_none_while_entering_is_still_its_class() {
        let mut vote = Vote::default();
        // Entering: small, unsure, mostly no vehicle.
        for _ in 0..4 {
            vote.add(&p(&[("car", 0.15), ("van", 0.05)]), "none", 2_000.0, 0.9);
        }
        // In full view: big and sure.
        for _ in 0..6 {
            vote.add(&p(&[("car", 0.8), ("van", 0.1)]), "car", 20_000.0, 0.3);
        }
        let c = vote.consensus(0.3);
        assert_eq!(c.class, "car");
        assert!(c.score > 0.7, "{c:?}");
        assert_eq!(c.votes, BTreeMap::from([("car".to_string(), 6), ("none".to_string(), 4)]));
        assert_eq!(c.frames, 10);
    }

    #[test]
    fn too_little_vehicle_mass_over_all_frames_is_none_and_no_frame_is_none() {
        let mut vote = Vote::default();
        vote.add(&p(&[("car", 0.1)]), "none", 10_000.0, 0.5);
        vote.add(&p(&[("car", 0.2)]), "none", 10_000.0, 0.5);
        let c = vote.consensus(0.3);
        assert_eq!(c.class, "none");
        assert!((c.score - 0.85).abs() < 1e-5, "{c:?}");
        assert_eq!(Vote::default().consensus(0.3).class, "none");
    }

    #[test]
    fn synonyms_summed_per_frame_beat_a_single_confident_frame_of_another_class() {
        let mut vote = Vote::default();
        vote.add(&p(&[("truck", 0.9)]), "truck", 10_000.0, 0.2);
        for _ in 0..3 {
            vote.add(&p(&[("van", 0.6), ("truck", 0.2)]), "van", 10_000.0, 0.4);
        }
        assert_eq!(vote.consensus(0.3).class, "van");
    }
}
