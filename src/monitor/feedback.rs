//! Ground truth from the road: feedback names an earlier prediction by
//! `seq` and one of its regions, and gives the true road class. The book
//! remembers recent predictions (so feedback can find them) and keeps a
//! window of labelled regions, from which it computes the active model's
//! precision and per-class precision and recall.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::infer::ModelIdentity;

/// Largest feedback message accepted.
pub const MAX_FEEDBACK_BYTES: usize = 256 << 10;
/// Most labels in one message.
pub const MAX_LABELS_PER_MESSAGE: usize = 1000;

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

/// A message on `…/feedback`: one label, or an array of them.
pub fn parse(payload: &[u8]) -> Result<Vec<Label>, String> {
    if payload.len() > MAX_FEEDBACK_BYTES {
        return Err(format!("feedback of {} bytes is over the {MAX_FEEDBACK_BYTES}-byte limit: send fewer labels per message", payload.len()));
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Label),
        Many(Vec<Label>),
    }
    let labels = match serde_json::from_slice::<OneOrMany>(payload) {
        Ok(OneOrMany::One(label)) => vec![label],
        Ok(OneOrMany::Many(labels)) => labels,
        Err(_) => {
            return Err(r#"feedback must be {"seq": <prediction seq>, "region": <index in its regions>, "class": "<road class>"} or an array of those"#.into())
        }
    };
    if labels.len() > MAX_LABELS_PER_MESSAGE {
        return Err(format!("{} labels in one message: send at most {MAX_LABELS_PER_MESSAGE}", labels.len()));
    }
    Ok(labels)
}

/// What the book remembers of a prediction.
#[derive(Debug, Clone)]
pub struct Remembered {
    pub prediction_id: u64,
    pub camera: String,
    pub model: Arc<ModelIdentity>,
    pub classes: Vec<String>,
}

/// A labelled region in the window.
#[derive(Debug, Clone, Serialize)]
pub struct Labelled {
    pub seq: u64,
    pub region: usize,
    pub camera: String,
    pub predicted: String,
    pub truth: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip)]
    pub prediction_id: u64,
    #[serde(skip)]
    pub model: Arc<ModelIdentity>,
    #[serde(skip)]
    pub at: Instant,
    #[serde(skip)]
    pub wall: SystemTime,
}

impl Labelled {
    pub fn is_correct(&self) -> bool {
        self.predicted == self.truth
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ClassFigures {
    /// Labelled regions the model named this class, and the right ones among them.
    pub predicted: u64,
    pub correct: u64,
    /// Labelled regions that truly are this class.
    pub actual: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

/// The active model's figures over the window.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metrics {
    pub model_version: String,
    pub labelled: u64,
    pub correct: u64,
    /// Share of labelled regions named right. One class per region, so this
    /// is both the model's (micro-averaged) precision and its accuracy.
    pub precision: Option<f64>,
    pub per_class: BTreeMap<String, ClassFigures>,
    /// Predicted class → true class → count, for the mistakes only.
    pub confusion: BTreeMap<String, BTreeMap<String, u64>>,
    /// Age of the oldest label counted, seconds.
    pub window_seconds: f64,
}

pub struct LabelBook {
    remembered: BTreeMap<u64, Remembered>,
    remember: usize,
    window: VecDeque<Labelled>,
    window_len: usize,
    window_age: Duration,
}

impl LabelBook {
    pub fn new(remember: usize, window_len: usize, window_age: Duration) -> LabelBook {
        LabelBook { remembered: BTreeMap::new(), remember, window: VecDeque::new(), window_len, window_age }
    }

    pub fn remember(&mut self, seq: u64, prediction: Remembered) {
        self.remembered.insert(seq, prediction);
        while self.remembered.len() > self.remember {
            self.remembered.pop_first();
        }
    }

    /// Adds a label; a second label for the same region replaces the first.
    /// `classes` are the valid true classes.
    pub fn add(&mut self, label: Label, classes: &[String]) -> Result<&Labelled, String> {
        if !classes.iter().any(|c| *c == label.class) {
            return Err(format!("class `{}` is not a road class: use one of {}", label.class, classes.join(", ")));
        }
        let Some(prediction) = self.remembered.get(&label.seq) else {
            let oldest = self.remembered.keys().next().map(|s| format!(" (the oldest remembered is {s})")).unwrap_or_default();
            return Err(format!(
                "seq {} is not a prediction this agent remembers{oldest}: feedback must name a prediction's seq within the last monitor.remember_predictions predictions",
                label.seq
            ));
        };
        let Some(predicted) = prediction.classes.get(label.region) else {
            return Err(format!("prediction {} has {} regions; region {} does not exist (regions count from 0)", label.seq, prediction.classes.len(), label.region));
        };
        let labelled = Labelled {
            seq: label.seq,
            region: label.region,
            camera: prediction.camera.clone(),
            predicted: predicted.clone(),
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
        let mut book = LabelBook::new(100, 10, Duration::from_secs(3600));
        for seq in 1..=n {
            book.remember(seq, Remembered { prediction_id: seq, camera: "c".into(), model: model.clone(), classes: vec![class.into(), "truck".into()] });
        }
        book
    }

    #[test]
    fn precision_and_recall_per_class_over_the_window_of_the_active_model() {
        let v1 = model("1");
        let mut book = book_with(20, &v1, "car");
        for seq in 1..=6 {
            book.add(label(seq, 0, "car"), &classes()).unwrap();
        }
        for seq in 7..=8 {
            book.add(label(seq, 0, "truck"), &classes()).unwrap();
        }
        book.add(label(9, 1, "bus"), &classes()).unwrap();
        let m = book.metrics(&v1);
        assert_eq!((m.labelled, m.correct), (9, 6));
        assert!((m.precision.unwrap() - 6.0 / 9.0).abs() < 1e-9);
        assert_eq!(m.per_class["car"], ClassFigures { predicted: 8, correct: 6, actual: 6, precision: Some(0.75), recall: Some(1.0) });
        assert_eq!(m.per_class["truck"].recall, Some(0.0));
        assert_eq!(m.confusion["car"]["truck"], 2);
        assert_eq!(m.confusion["truck"]["bus"], 1);
        // The window holds 10: the oldest labels leave first.
        for seq in 10..=20 {
            book.add(label(seq, 0, "truck"), &classes()).unwrap();
        }
        assert_eq!(book.metrics(&v1).correct, 0);
        // Another model's labels are not counted for the active one.
        assert_eq!(book.metrics(&model("2")).labelled, 0);
    }

    #[test]
    fn a_second_label_for_a_region_replaces_the_first() {
        let v1 = model("1");
        let mut book = book_with(3, &v1, "car");
        book.add(label(1, 0, "truck"), &classes()).unwrap();
        book.add(label(1, 0, "car"), &classes()).unwrap();
        let m = book.metrics(&v1);
        assert_eq!((m.labelled, m.correct), (1, 1));
    }

    #[test]
    fn unknown_seq_region_or_class_is_refused_with_what_to_send() {
        let v1 = model("1");
        let mut book = book_with(3, &v1, "car");
        assert!(book.add(label(99, 0, "car"), &classes()).unwrap_err().contains("seq 99"));
        assert!(book.add(label(1, 5, "car"), &classes()).unwrap_err().contains("region 5 does not exist"));
        let error = book.add(label(1, 0, "spaceship"), &classes()).unwrap_err();
        assert!(error.contains("car, truck, bus, none"), "{error}");
        assert_eq!(book.metrics(&v1).labelled, 0);
    }

    #[test]
    fn remembers_only_the_latest_predictions_and_expires_old_labels() {
        let v1 = model("1");
        let mut book = book_with(150, &v1, "car");
        assert!(book.add(label(50, 0, "car"), &classes()).is_err());
        book.add(label(150, 0, "car"), &classes()).unwrap();
        book.window_age = Duration::from_millis(1);
        std::thread::sleep(Duration::from_millis(5));
        book.expire(Instant::now());
        assert_eq!(book.metrics(&v1).labelled, 0);
    }

    #[test]
    fn parses_one_label_or_an_array_and_explains_a_bad_message() {
        assert_eq!(parse(br#"{"seq":3,"region":0,"class":"car"}"#).unwrap().len(), 1);
        assert_eq!(parse(br#"[{"seq":3,"region":0,"class":"car","source":"loop-1"},{"seq":4,"region":1,"class":"bus"}]"#).unwrap().len(), 2);
        assert!(parse(b"not json").unwrap_err().contains("\"seq\""));
        assert!(parse(br#"{"seq":3,"class":"car"}"#).is_err());
        assert!(parse(&vec![b' '; MAX_FEEDBACK_BYTES + 1]).unwrap_err().contains("limit"));
    }
}
