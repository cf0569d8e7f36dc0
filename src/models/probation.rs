//! Probation: the first frames a new release classifies on the road. The
//! previous model stays loaded until the new one passes; if the new one
//! errs, is too slow, or is far less confident than its predecessor was on
//! the same camera feed, the inference thread swaps the previous one back.

use std::collections::VecDeque;
use super::recorder::RollbackRecorder;
use super::store::InstalledModel;
use crate::infer::Classifier;

/// A model for the inference thread to swap in between two frames.
pub struct ModelUpdate {
    pub classifier: Classifier,
    /// None for an operator's choice (no probation).
    pub probation: Option<ProbationPlan>,
}

pub struct ProbationPlan {
    pub frames: u64,
    pub latency_budget_ms: f32,
    /// Fails if the mean top-1 score falls below this share of the previous model's.
    pub min_score_ratio: f32,
    pub version: u64,
    /// Where a rollback is recorded, and what serves after one (None: the configured model).
    pub recorder: RollbackRecorder,
    pub fallback: Option<InstalledModel>,
}

/// Top-1 scores of the model serving now, as the baseline for the next.
#[derive(Default)]
pub struct ConfidenceWindow {
    values: VecDeque<f32>,
}

const WINDOW: usize = 200;
/// Fewer frames than this say nothing about a model's confidence.
const MIN_EVIDENCE: usize = 20;
/// More errors than this during probation fail it at once.
const MAX_ERRORS: u64 = 5;

impl ConfidenceWindow {
    pub fn push(&mut self, score: f32) {
        if self.values.len() == WINDOW {
            self.values.pop_front();
        }
        self.values.push_back(score);
    }

    pub fn mean(&self) -> Option<f32> {
        (self.values.len() >= MIN_EVIDENCE).then(|| self.values.iter().sum::<f32>() / self.values.len() as f32)
    }

    pub fn clear(&mut self) {
        self.values.clear();
    }
}

pub enum Verdict {
    Pending,
    Passed(String),
    Failed(String),
}

pub struct Probation {
    pub plan: ProbationPlan,
    pub previous: Classifier,
    baseline: Option<f32>,
    scores: Vec<f32>,
    latencies: Vec<f32>,
    errors: u64,
}

impl Probation {
    pub fn new(plan: ProbationPlan, previous: Classifier, baseline: Option<f32>) -> Probation {
        Probation { plan, previous, baseline, scores: Vec::new(), latencies: Vec::new(), errors: 0 }
    }

    pub fn record(&mut self, latency_ms: f32, top1: Option<f32>) -> Verdict {
        self.latencies.push(latency_ms);
        self.scores.extend(top1);
        if (self.latencies.len() as u64) < self.plan.frames {
            return Verdict::Pending;
        }
        self.judge()
    }

    pub fn record_error(&mut self) -> Verdict {
        self.errors += 1;
        if self.errors > MAX_ERRORS {
            return Verdict::Failed(format!("{} inference errors in its first {} frames", self.errors, self.latencies.len() + self.errors as usize));
        }
        Verdict::Pending
    }

    fn judge(&self) -> Verdict {
        let mut latencies = self.latencies.clone();
        latencies.sort_by(f32::total_cmp);
        let p95 = latencies[((latencies.len() as f32 * 0.95).ceil() as usize).clamp(1, latencies.len()) - 1];
        if p95 > self.plan.latency_budget_ms {
            return Verdict::Failed(format!("p95 latency {p95:.1} ms on the road, over the {} ms budget", self.plan.latency_budget_ms));
        }
        let mean = (self.scores.len() >= MIN_EVIDENCE).then(|| self.scores.iter().sum::<f32>() / self.scores.len() as f32);
        if let (Some(mean), Some(baseline)) = (mean, self.baseline) {
            if mean < baseline * self.plan.min_score_ratio {
                return Verdict::Failed(format!(
                    "mean top-1 score {mean:.3} over {} frames, below {} x the previous model's {baseline:.3}",
                    self.scores.len(),
                    self.plan.min_score_ratio
                ));
            }
        }
        Verdict::Passed(format!(
            "{} frames: p95 {p95:.1} ms, mean top-1 score {}, previous model {}",
            self.latencies.len(),
            mean.map_or("n/a".into(), |m| format!("{m:.3}")),
            self.baseline.map_or("n/a".into(), |b| format!("{b:.3}"))
        ))
    }
}
