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
        /// Up to 100 of them, oldest first, as many as fit the message size cap.
        mistakes: Vec<Mistake<'a>>,
        /// Mistakes in the window not listed (over 100, or cut to fit the cap).
        mistakes_left_out: usize,
    },
    /// For a class mix or confidence alert: the camera's drift figures.
    Drift { camera: &'a str, figures: &'a DriftFigures },
}

/// A label the model got wrong: a frame's region, or a tracked vehicle.
#[derive(Debug, Serialize)]
pub struct Mistake<'a> {
    #[serde(flatten)]
    pub of: Labelled<'a>,
    pub camera: &'a str,
    pub predicted: &'a str,
    pub truth: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
}

/// What a label named, as feedback named it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Labelled<'a> {
    /// `seq` and `region`, as before tracking: a region of a prediction.
    Region { seq: u64, region: usize },
    /// A tracked camera's vehicle, by its `…/vehicles` message's `track`.
    Vehicle { track: &'a str },
}

/// Why a retrain request cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    #[error("the retrain request is {bytes} bytes even without mistakes listed, over the {max}-byte budget (mqtt.max_message_bytes)")]
    TooLarge { bytes: usize, max: usize },
    #[error("cannot serialise the retrain request: {0}")]
    Serialise(#[from] serde_json::Error),
}

impl RetrainRequest<'_> {
    /// The JSON in at most `max_bytes`: mistakes are left out from the
    /// newest end until it fits, and counted in `mistakes_left_out`.
    pub fn to_json_within(mut self, max_bytes: usize) -> Result<Vec<u8>, RetrainError> {
        loop {
            let json = serde_json::to_vec(&self)?;
            let excess = json.len().saturating_sub(max_bytes);
            if excess == 0 {
                return Ok(json);
            }
            let Evidence::Feedback { mistakes, mistakes_left_out, .. } = &mut self.evidence else {
                return Err(RetrainError::TooLarge { bytes: json.len(), max: max_bytes });
            };
            if mistakes.is_empty() {
                return Err(RetrainError::TooLarge { bytes: json.len(), max: max_bytes });
            }
            // Enough at once for the excess (a comma each); the loop checks the result.
            let mut freed = 0;
            while freed < excess {
                let Some(mistake) = mistakes.pop() else { break };
                freed += serde_json::to_vec(&mistake)?.len() + 1;
                *mistakes_left_out += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistakes_are_left_out_until_the_request_fits_and_the_count_says_how_many() {
        let model = ModelIdentity { name: "m".into(), version: "1".into(), sha256: "00".into() };
        let (per_class, confusion) = (BTreeMap::new(), BTreeMap::new());
        let source = "s".repeat(200);
        let request = |mistakes: usize| RetrainRequest {
            device: "pole",
            at: "2026-01-01T00:00:00.000Z".into(),
            model: &model,
            reason: "precision",
            value: 0.1,
            threshold: 0.4,
            evidence: Evidence::Feedback {
                labelled: 100,
                correct: 0,
                window_seconds: 1.0,
                per_class: &per_class,
                confusion: &confusion,
                mistakes: (0..mistakes as u64)
                    .map(|seq| Mistake { of: Labelled::Region { seq, region: 0 }, camera: "north", predicted: "car", truth: "truck", source: Some(&source) })
                    .collect(),
                mistakes_left_out: 0,
            },
            samples: "cctv/pole/samples/+".into(),
        };
        let whole = request(100).to_json_within(usize::MAX).unwrap();
        for max in [whole.len(), 10_000, 2_000, 600] {
            let json: serde_json::Value = serde_json::from_slice(&request(100).to_json_within(max).unwrap()).unwrap();
            let listed = json["evidence"]["mistakes"].as_array().unwrap();
            assert!(serde_json::to_vec(&json).unwrap().len() <= max);
            assert_eq!(listed.len() as u64 + json["evidence"]["mistakes_left_out"].as_u64().unwrap(), 100, "{max}");
            assert_eq!(listed.first().map(|m| m["seq"].as_u64().unwrap()), (listed.len() > 0).then_some(0), "the oldest are kept");
        }
        assert!(matches!(request(100).to_json_within(300), Err(RetrainError::TooLarge { .. })));
    }

    #[test]
    fn a_region_mistake_keeps_its_shape_and_a_vehicle_mistake_names_its_track_instead() {
        let region = Mistake { of: Labelled::Region { seq: 7, region: 1 }, camera: "north", predicted: "car", truth: "truck", source: None };
        assert_eq!(
            serde_json::to_value(&region).unwrap(),
            serde_json::json!({"seq": 7, "region": 1, "camera": "north", "predicted": "car", "truth": "truck"})
        );
        let vehicle = Mistake { of: Labelled::Vehicle { track: "north-12" }, camera: "north", predicted: "van", truth: "truck", source: Some("wim-1") };
        assert_eq!(
            serde_json::to_value(&vehicle).unwrap(),
            serde_json::json!({"track": "north-12", "camera": "north", "predicted": "van", "truth": "truck", "source": "wim-1"})
        );
    }
}
