//! Ground truth from the road: feedback names an earlier prediction by
//! `seq` and one of its regions, and gives the true road class. The book
//! remembers recent predictions (so feedback can find them) and keeps a
//! window of labelled regions, from which it computes the active model's
//! precision and per-class precision and recall.

use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::infer::ModelIdentity;

/// Largest feedback message accepted.
pub const MAX_FEEDBACK_BYTES: usize = 256 << 10;
/// Most labels in one message.
pub const MAX_LABELS_PER_MESSAGE: usize = 1000;
/// Longest `source` kept (bytes); a longer one is cut at a character
/// boundary. It travels in retrain requests, 100 at a time, so it must stay
/// small whatever a sender writes.
pub const MAX_SOURCE_BYTES: usize = 256;
/// Longest `class` kept; no road class is this long, so a longer one is
/// refused as unknown without quoting all of it back in the rejection.
pub const MAX_CLASS_BYTES: usize = 64;

/// One label: `{"seq": 1234, "region": 0, "class": "truck", "source": "loop-3"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub seq: u64,
    pub region: usize,
    pub class: String,
    /// Who says so (an operator's tool, a loop detector...), kept for the evidence.
    #[serde(default)]
    pub source: Option<String>,
}

/// Why feedback (a message, or one label in it) was refused; the text,
/// which says what to send instead, goes into the `feedback_rejected` event.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("feedback of {bytes} bytes is over the {MAX_FEEDBACK_BYTES}-byte limit: send fewer labels per message")]
    TooLarge { bytes: usize },
    /// Not JSON, or not labels.
    #[error(r#"feedback must be {{"seq": <prediction seq>, "region": <index in its regions>, "class": "<road class>"}} or an array of those"#)]
    Malformed(#[source] serde_json::Error),
    #[error("{count} labels in one message: send at most {MAX_LABELS_PER_MESSAGE}")]
    TooManyLabels { count: usize },
    #[error("class `{class}` is not a road class: use one of {}", classes.join(", "))]
    UnknownClass { class: String, classes: Vec<String> },
    /// Too old (forgotten), or never given.
    #[error("seq {seq} is not a prediction this agent remembers{}: feedback must name a prediction's seq within the last monitor.remember_predictions predictions", oldest.map(|o| format!(" (the oldest remembered is {o})")).unwrap_or_default())]
    UnknownSeq { seq: u64, oldest: Option<u64> },
    #[error("prediction {seq} has {regions} regions; region {region} does not exist (regions count from 0; at most the first {MAX_REGIONS} are remembered)")]
    NoSuchRegion { seq: u64, regions: usize, region: usize },
}

/// A message on `…/feedback`: one label, or an array of them.
pub fn parse(payload: &[u8]) -> Result<Vec<Label>, FeedbackError> {
    if payload.len() > MAX_FEEDBACK_BYTES {
        return Err(FeedbackError::TooLarge { bytes: payload.len() });
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Label),
        Many(Vec<Label>),
    }
    let mut labels = match serde_json::from_slice::<OneOrMany>(payload) {
        Ok(OneOrMany::One(label)) => vec![label],
        Ok(OneOrMany::Many(labels)) => labels,
        Err(error) => return Err(FeedbackError::Malformed(error)),
    };
    if labels.len() > MAX_LABELS_PER_MESSAGE {
        return Err(FeedbackError::TooManyLabels { count: labels.len() });
    }
    for label in &mut labels {
        if let Some(source) = &mut label.source {
            truncate(source, MAX_SOURCE_BYTES);
        }
        if label.class.len() > MAX_CLASS_BYTES {
            truncate(&mut label.class, MAX_CLASS_BYTES);
            label.class.push('…');
        }
    }
    Ok(labels)
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let cut = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
    }
}

/// What the book remembers of a prediction. There are `remember_predictions`
/// (20000) of them, so each is ~80 bytes inline in one `VecDeque`, with no
/// heap allocation of its own.
#[derive(Debug, Clone)]
struct Remembered {
    seq: u64,
    prediction_id: u64,
    camera: Arc<str>,
    model: Arc<ModelIdentity>,
    /// Regions remembered (at most `MAX_REGIONS`).
    regions: u8,
    /// Per region: index into the book's classes (`UNKNOWN_CLASS` if not among them).
    classes: [u8; MAX_REGIONS],
}

/// Regions remembered per prediction; feedback for a later region is refused.
pub const MAX_REGIONS: usize = 32;
const UNKNOWN_CLASS: u8 = u8::MAX;

/// A labelled region in the window (a retrain request lists mistakes as `wire::retrain::Mistake`).
#[derive(Debug, Clone)]
pub struct Labelled {
    pub seq: u64,
    pub region: usize,
    pub camera: String,
    pub predicted: String,
    pub truth: String,
    pub source: Option<String>,
    pub prediction_id: u64,
    pub model: Arc<ModelIdentity>,
    pub at: Instant,
    pub wall: SystemTime,
}

impl Labelled {
    pub fn is_correct(&self) -> bool {
        self.predicted == self.truth
    }
}

pub use crate::wire::telemetry::{ClassFigures, Metrics};

pub struct LabelBook {
    /// Oldest first; `seq` rises (the publisher numbers in order).
    remembered: VecDeque<Remembered>,
    remember: usize,
    /// Valid true classes (road classes and `none`); predictions refer to them by index.
    classes: Vec<String>,
    window: VecDeque<Labelled>,
    window_len: usize,
    window_age: Duration,
}

impl LabelBook {
    pub fn new(remember: usize, window_len: usize, window_age: Duration, classes: Vec<String>) -> LabelBook {
        LabelBook { remembered: VecDeque::new(), remember, classes, window: VecDeque::new(), window_len, window_age }
    }

    /// Remembers the classes predicted for the regions of prediction `seq`.
    pub fn remember(&mut self, seq: u64, prediction_id: u64, camera: Arc<str>, model: Arc<ModelIdentity>, predicted: &[String]) {
        let mut classes = [UNKNOWN_CLASS; MAX_REGIONS];
        for (slot, class) in classes.iter_mut().zip(predicted) {
            *slot = self.classes.iter().position(|c| c == class).map_or(UNKNOWN_CLASS, |i| i.min(254) as u8);
        }
        let regions = predicted.len().min(MAX_REGIONS) as u8;
        if self.remembered.back().is_some_and(|last| last.seq >= seq) {
            tracing::debug!(seq, "prediction numbers went back; forgetting the older ones");
            self.remembered.clear();
        }
        self.remembered.push_back(Remembered { seq, prediction_id, camera, model, regions, classes });
        while self.remembered.len() > self.remember {
            self.remembered.pop_front();
        }
    }

    fn class_name(&self, index: u8) -> String {
        self.classes.get(index as usize).cloned().unwrap_or_else(|| "unknown".to_string())
    }

    /// Adds a label; a second label for the same region replaces the first.
    pub fn add(&mut self, label: Label) -> Result<&Labelled, FeedbackError> {
        if !self.classes.iter().any(|c| *c == label.class) {
            return Err(FeedbackError::UnknownClass { class: label.class, classes: self.classes.clone() });
        }
        let found = self.remembered.binary_search_by_key(&label.seq, |r| r.seq).ok().map(|i| &self.remembered[i]);
        let Some(prediction) = found else {
            return Err(FeedbackError::UnknownSeq { seq: label.seq, oldest: self.remembered.front().map(|r| r.seq) });
        };
        let Some(predicted) = prediction.classes[..prediction.regions as usize].get(label.region) else {
            return Err(FeedbackError::NoSuchRegion { seq: label.seq, regions: prediction.regions as usize, region: label.region });
        };
        let labelled = Labelled {
            seq: label.seq,
            region: label.region,
            camera: prediction.camera.to_string(),
            predicted: self.class_name(*predicted),
            truth: label.class,
            source: label.source,
            prediction_id: prediction.prediction_id,
            model: prediction.model.clone(),
            at: Instant::now(),
            wall: SystemTime::now(),
        };
        self.window.retain(|l| !(l.seq == labelled.seq && l.region == labelled.region));
        self.window.push_back(labelled);
        while self.window.len() > self.window_len {
            self.window.pop_front();
        }
        Ok(self.window.back().expect("just pushed"))
    }

    /// Drops labels older than the window's age.
    pub fn expire(&mut self, now: Instant) {
        while self.window.front().is_some_and(|l| now.duration_since(l.at) > self.window_age) {
            self.window.pop_front();
        }
    }

    /// Figures for `model` over the window (labels of other models are not counted).
    pub fn metrics(&self, model: &ModelIdentity) -> Metrics {
        let mut m = Metrics { model_version: model.version.clone(), ..Default::default() };
        let now = Instant::now();
        for label in self.labels_of(model) {
            m.labelled += 1;
            m.window_seconds = m.window_seconds.max(now.duration_since(label.at).as_secs_f64());
            m.per_class.entry(label.predicted.clone()).or_default().predicted += 1;
            m.per_class.entry(label.truth.clone()).or_default().actual += 1;
            if label.is_correct() {
                m.correct += 1;
                m.per_class.entry(label.truth.clone()).or_default().correct += 1;
            } else {
                *m.confusion.entry(label.predicted.clone()).or_default().entry(label.truth.clone()).or_default() += 1;
            }
        }
        let share = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
        m.precision = share(m.correct, m.labelled);
        for figures in m.per_class.values_mut() {
            figures.precision = share(figures.correct, figures.predicted);
            figures.recall = share(figures.correct, figures.actual);
        }
        m
    }

    /// The window's labels for `model`, oldest first.
    pub fn labels_of<'a>(&'a self, model: &'a ModelIdentity) -> impl Iterator<Item = &'a Labelled> + 'a {
        self.window.iter().filter(move |l| *l.model == *model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(version: &str) -> Arc<ModelIdentity> {
        Arc::new(ModelIdentity { name: "m".into(), version: version.into(), sha256: format!("sha-{version}") })
    }

    fn classes() -> Vec<String> {
        ["car", "truck", "bus", "none"].iter().map(|s| s.to_string()).collect()
    }

    fn label(seq: u64, region: usize, class: &str) -> Label {
        Label { seq, region, class: class.into(), source: None }
    }

    fn book_with(n: u64, model: &Arc<ModelIdentity>, class: &str) -> LabelBook {
        let mut book = LabelBook::new(100, 10, Duration::from_secs(3600), classes());
        for seq in 1..=n {
            book.remember(seq, seq, Arc::from("c"), model.clone(), &[class.to_string(), "truck".to_string()]);
        }
        book
    }

    #[test]
    fn precision_and_recall_per_class_over_the_window_of_the_active_model() {
        let v1 = model("1");
        let mut book = book_with(20, &v1, "car");
        for seq in 1..=6 {
            book.add(label(seq, 0, "car")).unwrap();
        }
        for seq in 7..=8 {
            book.add(label(seq, 0, "truck")).unwrap();
        }
        book.add(label(9, 1, "bus")).unwrap();
        let m = book.metrics(&v1);
        assert_eq!((m.labelled, m.correct), (9, 6));
        assert!((m.precision.unwrap() - 6.0 / 9.0).abs() < 1e-9);
        assert_eq!(m.per_class["car"], ClassFigures { predicted: 8, correct: 6, actual: 6, precision: Some(0.75), recall: Some(1.0) });
        assert_eq!(m.per_class["truck"].recall, Some(0.0));
        assert_eq!(m.confusion["car"]["truck"], 2);
        assert_eq!(m.confusion["truck"]["bus"], 1);
        // The window holds 10: the oldest labels leave first.
        for seq in 10..=20 {
            book.add(label(seq, 0, "truck")).unwrap();
        }
        assert_eq!(book.metrics(&v1).correct, 0);
        // Another model's labels are not counted for the active one.
        assert_eq!(book.metrics(&model("2")).labelled, 0);
    }

    #[test]
    fn a_second_label_for_a_region_replaces_the_first() {
        let v1 = model("1");
        let mut book = book_with(3, &v1, "car");
        book.add(label(1, 0, "truck")).unwrap();
        book.add(label(1, 0, "car")).unwrap();
        let m = book.metrics(&v1);
        assert_eq!((m.labelled, m.correct), (1, 1));
    }

    #[test]
    fn unknown_seq_region_or_class_is_refused_with_what_to_send() {
        let v1 = model("1");
        let mut book = book_with(3, &v1, "car");
        assert!(book.add(label(99, 0, "car")).unwrap_err().to_string().contains("seq 99"));
        assert!(book.add(label(1, 5, "car")).unwrap_err().to_string().contains("region 5 does not exist"));
        let error = book.add(label(1, 0, "spaceship")).unwrap_err().to_string();
        assert!(error.contains("car, truck, bus, none"), "{error}");
        assert!(matches!(book.add(label(99, 0, "car")), Err(FeedbackError::UnknownSeq { seq: 99, oldest: Some(1) })));
        assert!(matches!(book.add(label(1, 5, "car")), Err(FeedbackError::NoSuchRegion { regions: 2, region: 5, .. })));
        assert_eq!(book.metrics(&v1).labelled, 0);
    }

    #[test]
    fn remembers_only_the_latest_predictions_and_expires_old_labels() {
        let v1 = model("1");
        let mut book = book_with(150, &v1, "car");
        assert!(book.add(label(50, 0, "car")).is_err());
        book.add(label(150, 0, "car")).unwrap();
        book.window_age = Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(5));
        book.expire(Instant::now());
        assert_eq!(book.metrics(&v1).labelled, 0);
    }

    #[test]
    fn parses_one_label_or_an_array_and_explains_a_bad_message() {
        assert_eq!(parse(br#"{"seq":3,"region":0,"class":"car"}"#).unwrap().len(), 1);
        assert_eq!(parse(br#"[{"seq":3,"region":0,"class":"car","source":"loop-1"},{"seq":4,"region":1,"class":"bus"}]"#).unwrap().len(), 2);
        assert!(parse(b"not json").unwrap_err().to_string().contains("\"seq\""));
        assert!(matches!(parse(br#"{"seq":3,"class":"car"}"#), Err(FeedbackError::Malformed(_))));
        assert!(parse(&vec![b' '; MAX_FEEDBACK_BYTES + 1]).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn a_long_source_is_cut_and_a_long_class_is_refused_without_being_quoted_back() {
        let payload = serde_json::json!({"seq": 1, "region": 0, "class": "c".repeat(10_000), "source": "é".repeat(100_000)});
        let label = parse(&serde_json::to_vec(&payload).unwrap()).unwrap().remove(0);
        let source = label.source.clone().unwrap();
        assert_eq!(source.len(), MAX_SOURCE_BYTES);
        assert!(source.chars().all(|c| c == 'é'));
        let v1 = model("1");
        let mut book = book_with(3, &v1, "car");
        let error = book.add(label).unwrap_err().to_string();
        assert!(error.len() < 300, "{error}");
    }

    proptest::proptest! {
        /// Arbitrary bytes: no panic, and whatever is accepted is within bounds.
        #[test]
        fn any_payload_parses_within_bounds(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            check_bounds(&payload);
        }

        /// Well-formed labels with arbitrary text: the same bounds hold, and numbers are kept.
        #[test]
        fn any_label_parses_within_bounds(seq: u64, region in 0usize..100_000, class in ".{0,300}", source in proptest::option::of(".{0,2000}"), many: bool) {
            let label = serde_json::json!({"seq": seq, "region": region, "class": class, "source": source});
            let payload = if many { serde_json::json!([label, label]) } else { label };
            let labels = check_bounds(&serde_json::to_vec(&payload).unwrap()).expect("a well-formed label");
            proptest::prop_assert_eq!(labels.len(), if many { 2 } else { 1 });
            proptest::prop_assert_eq!((labels[0].seq, labels[0].region), (seq, region));
            if class.len() <= MAX_CLASS_BYTES {
                proptest::prop_assert_eq!(&labels[0].class, &class);
            }
            if let Some(source) = source.filter(|s| s.len() <= MAX_SOURCE_BYTES) {
                proptest::prop_assert_eq!(labels[0].source.as_deref(), Some(source.as_str()));
            }
        }
    }

    fn check_bounds(payload: &[u8]) -> Option<Vec<Label>> {
        match parse(payload) {
            Ok(labels) => {
                assert!(labels.len() <= MAX_LABELS_PER_MESSAGE);
                for label in &labels {
                    assert!(label.source.as_ref().is_none_or(|s| s.len() <= MAX_SOURCE_BYTES), "{label:?}");
                    assert!(label.class.len() <= MAX_CLASS_BYTES + '…'.len_utf8(), "{label:?}");
                }
                Some(labels)
            }
            Err(error) => {
                assert!(error.to_string().len() < 400, "{error}");
                None
            }
        }
    }
}
