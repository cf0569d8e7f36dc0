//! A vehicle's class by the consensus of its frames: the road-class
//! probabilities of every frame it was classified in, weighted by how
//! much of it the frame saw and how sure the model was, averaged; the
//! taxonomy's own rule (the class with the most mass, or `none` when the
//! vehicle classes together hold too little) then picks on the average.

use std::collections::BTreeMap;

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

#[cfg(test)]
mod tests {
    use super::*;

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
