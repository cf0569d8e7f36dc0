//! `<root>/fleet/retrain/<model>` (QoS 1, stored): the device asks the
//! trainer for a better model, with its evidence (docs/schema/retrain.json).

use serde::Serialize;
use std::collections::BTreeMap;

use super::telemetry::{ClassFigures, DriftFigures};
use super::ModelIdentity;

#[derive(Debug, Serialize)]
pub struct RetrainRequest<'a> {
    pub device: &'a str,
    pub at: String,
    pub model: &'a ModelIdentity,
    /// `precision`, `class_mix` or `confidence`.
    pub reason: &'a str,
    pub value: f64,
    pub threshold: f64,
    pub evidence: Evidence<'a>,
    /// The topic filter where this device publishes its samples.
    pub samples: String,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Evidence<'a> {
    /// For a precision alert: the feedback window.
    Feedback {
        labelled: u64,
        correct: u64,
        window_seconds: f64,
        per_class: &'a BTreeMap<String, ClassFigures>,
        /// Predicted class → true class → count, for the mistakes only.
        confusion: &'a BTreeMap<String, BTreeMap<String, u64>>,
        /// Up to 100 of them, oldest first.
        mistakes: Vec<Mistake<'a>>,
    },
    /// For a class mix or confidence alert: the camera's drift figures.
    Drift { camera: &'a str, figures: &'a DriftFigures },
}

/// A labelled region the model named wrong.
#[derive(Debug, Serialize)]
pub struct Mistake<'a> {
    pub seq: u64,
    pub region: usize,
    pub camera: &'a str,
    pub predicted: &'a str,
    pub truth: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
}
