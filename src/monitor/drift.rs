//! Drift without labels, per camera: the mix of predicted classes against a
//! baseline, the mean confidence against the baseline's, and what the
//! camera sees (brightness, contrast, sharpness). The baseline comes from
//! the model's spec (`[reference]`, what the trainer saw) or is learned
//! from the camera's first `reference_regions` regions under that model.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// What a camera sees, measured on the camera thread (see `input_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct InputStats {
    pub brightness: f64,
    pub contrast: f64,
    pub sharpness: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineSource {
    /// The model's spec file (`[reference]`).
    Spec,
    /// Learned on this camera.
    Learned,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub source: BaselineSource,
    /// sha256 of the model it belongs to.
    pub model_sha256: String,
    pub classes: BTreeMap<String, f64>,
    pub mean_confidence: Option<f64>,
    pub regions: u64,
}

/// A learned baseline as kept on disk (`<state_dir>/monitor/`). It names
/// its camera: a file is taken only by the camera it names, whatever its
/// file name says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineFile {
    pub camera: String,
    #[serde(flatten)]
    pub baseline: Baseline,
}

/// Half the summed absolute differences of two class mixes: the share of
/// regions that would have to change class to turn one into the other.
pub fn total_variation(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>) -> f64 {
    let classes: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    0.5 * classes.into_iter().map(|c| (a.get(c).unwrap_or(&0.0) - b.get(c).unwrap_or(&0.0)).abs()).sum::<f64>()
}

/// Counts → shares.
fn shares(counts: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    let total: u64 = counts.values().sum();
    counts.iter().filter(|(_, n)| **n > 0).map(|(c, n)| (c.clone(), *n as f64 / total.max(1) as f64)).collect()
}

#[derive(Debug, Default)]
struct Learning {
    counts: BTreeMap<String, u64>,
    confidence_sum: f64,
    regions: u64,
}

/// One camera's windows and baseline under its current model.
pub struct CameraDrift {
    class_window: usize,
    reference_regions: usize,
    input_window: usize,
    model_sha256: String,
    regions: VecDeque<(String, f32)>,
    counts: BTreeMap<String, u64>,
    confidence_sum: f64,
    baseline: Option<Baseline>,
    learning: Learning,
    inputs: VecDeque<InputStats>,
}

pub use crate::wire::telemetry::DriftFigures;

impl CameraDrift {
    pub fn new(class_window: usize, reference_regions: usize, input_window: usize) -> CameraDrift {
        CameraDrift {
            class_window,
            reference_regions,
            input_window,
            model_sha256: String::new(),
            regions: VecDeque::new(),
            counts: BTreeMap::new(),
            confidence_sum: 0.0,
            baseline: None,
            learning: Learning::default(),
            inputs: VecDeque::new(),
        }
    }

    pub fn model_sha256(&self) -> &str {
        &self.model_sha256
    }

    /// A new model on this camera: its predictions start a new window and
    /// are judged against `baseline` (its spec's, or one learned earlier),
    /// or a new baseline is learned. Input statistics do not depend on the model.
    pub fn start_model(&mut self, model_sha256: &str, baseline: Option<Baseline>) {
        self.model_sha256 = model_sha256.to_string();
        self.regions.clear();
        self.counts.clear();
        self.confidence_sum = 0.0;
        self.baseline = baseline;
        self.learning = Learning::default();
    }

    /// Records one classified region. Returns the baseline when this region
    /// completed learning it (so the caller can keep it on disk).
    pub fn record_region(&mut self, class: &str, top1: f32) -> Option<&Baseline> {
        self.regions.push_back((class.to_string(), top1));
        *self.counts.entry(class.to_string()).or_default() += 1;
        self.confidence_sum += top1 as f64;
        while self.regions.len() > self.class_window {
            let (class, score) = self.regions.pop_front().expect("not empty");
            if let Some(n) = self.counts.get_mut(&class) {
                *n -= 1;
            }
            self.confidence_sum -= score as f64;
        }
        if self.baseline.is_some() {
            return None;
        }
        let learning = &mut self.learning;
        *learning.counts.entry(class.to_string()).or_default() += 1;
        learning.confidence_sum += top1 as f64;
        learning.regions += 1;
        if learning.regions < self.reference_regions as u64 {
            return None;
        }
        self.baseline = Some(Baseline {
            source: BaselineSource::Learned,
            model_sha256: self.model_sha256.clone(),
            classes: shares(&learning.counts),
            mean_confidence: Some(learning.confidence_sum / learning.regions as f64),
            regions: learning.regions,
        });
        self.baseline.as_ref()
    }

    pub fn record_input(&mut self, stats: InputStats) {
        self.inputs.push_back(stats);
        while self.inputs.len() > self.input_window {
            self.inputs.pop_front();
        }
    }

    pub fn figures(&self) -> DriftFigures {
        let full = self.regions.len() >= self.class_window;
        let class_mix = shares(&self.counts);
        let mean_confidence = (!self.regions.is_empty()).then(|| self.confidence_sum / self.regions.len() as f64);
        let (baseline, baseline_regions) = match &self.baseline {
            Some(b) => (format!("{:?}", b.source).to_lowercase(), b.regions),
            None => ("learning".to_string(), self.learning.regions),
        };
        let class_mix_distance = self.baseline.as_ref().filter(|_| full).map(|b| total_variation(&class_mix, &b.classes));
        let confidence_ratio = match (&self.baseline, mean_confidence) {
            (Some(Baseline { mean_confidence: Some(reference), .. }), Some(mean)) if full && *reference > 0.0 => Some(mean / reference),
            _ => None,
        };
        let input_full = self.inputs.len() >= self.input_window;
        let mean = |f: fn(&InputStats) -> f64| input_full.then(|| self.inputs.iter().map(f).sum::<f64>() / self.inputs.len() as f64);
        DriftFigures {
            baseline,
            baseline_regions,
            window_regions: self.regions.len(),
            class_mix,
            class_mix_distance,
            mean_confidence,
            confidence_ratio,
            brightness: mean(|s| s.brightness),
            contrast: mean(|s| s.contrast),
            sharpness: mean(|s| s.sharpness),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(c, s)| (c.to_string(), *s)).collect()
    }

    #[test]
    fn total_variation_is_zero_for_the_same_mix_and_one_for_disjoint_mixes() {
        assert_eq!(total_variation(&mix(&[("car", 0.7), ("truck", 0.3)]), &mix(&[("car", 0.7), ("truck", 0.3)])), 0.0);
        assert!((total_variation(&mix(&[("car", 1.0)]), &mix(&[("bus", 1.0)])) - 1.0).abs() < 1e-12);
        assert!((total_variation(&mix(&[("car", 0.8), ("truck", 0.2)]), &mix(&[("car", 0.5), ("truck", 0.5)])) - 0.3).abs() < 1e-12);
    }

    #[test]
    fn learns_a_baseline_then_judges_a_full_window_against_it() {
        let mut drift = CameraDrift::new(4, 6, 2);
        drift.start_model("sha", None);
        let mut learned = None;
        for class in ["car", "car", "car", "truck", "car", "car"] {
            learned = drift.record_region(class, 0.8).cloned().or(learned);
        }
        let baseline = learned.expect("learned after 6 regions");
        assert_eq!(baseline.source, BaselineSource::Learned);
        assert!((baseline.classes["car"] - 5.0 / 6.0).abs() < 1e-9);
        // The window is the last 4 (car, truck, car, car), the baseline 5/6 car: 1/12 apart.
        assert_eq!(drift.figures().class_mix_distance.map(|d| (d * 1000.0).round()), Some(83.0));
        for _ in 0..4 {
            drift.record_region("bus", 0.4);
        }
        let figures = drift.figures();
        assert_eq!(figures.class_mix, mix(&[("bus", 1.0)]));
        assert!((figures.class_mix_distance.unwrap() - 1.0).abs() < 1e-9);
        assert!((figures.confidence_ratio.unwrap() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn a_spec_baseline_is_used_at_once_and_a_new_model_starts_over() {
        let mut drift = CameraDrift::new(2, 100, 2);
        let spec = Baseline { source: BaselineSource::Spec, model_sha256: "a".into(), classes: mix(&[("bus", 1.0)]), mean_confidence: None, regions: 0 };
        drift.start_model("a", Some(spec));
        assert_eq!(drift.figures().class_mix_distance, None, "window not full yet");
        drift.record_region("car", 0.9);
        drift.record_region("car", 0.9);
        assert_eq!(drift.figures().class_mix_distance, Some(1.0));
        assert_eq!(drift.figures().confidence_ratio, None, "the spec gave no confidence");
        drift.start_model("b", None);
        let figures = drift.figures();
        assert_eq!((figures.baseline.as_str(), figures.window_regions, figures.class_mix_distance), ("learning", 0, None));
    }

    #[test]
    fn input_figures_are_means_over_a_full_window() {
        let mut drift = CameraDrift::new(2, 2, 3);
        drift.record_input(InputStats { brightness: 10.0, contrast: 1.0, sharpness: 5.0 });
        drift.record_input(InputStats { brightness: 20.0, contrast: 2.0, sharpness: 5.0 });
        assert_eq!(drift.figures().brightness, None);
        drift.record_input(InputStats { brightness: 30.0, contrast: 3.0, sharpness: 5.0 });
        drift.record_input(InputStats { brightness: 40.0, contrast: 4.0, sharpness: 5.0 });
        assert_eq!(drift.figures().brightness, Some(30.0));
        assert_eq!(drift.figures().contrast, Some(3.0));
    }
}
