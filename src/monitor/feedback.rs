//! Ground truth from the road: feedback names an earlier prediction by
//! `seq` and one of its regions, or a tracked camera's vehicle by its
//! `track`, and gives the true road class. The book remembers recent
//! predictions and vehicles (so feedback can find them) and keeps a window
//! of labels, from which it computes the active model's precision and
//! per-class precision and recall. A tracked camera is judged by its
//! vehicles, one label each: its frames' predictions (`publish_frames`) are
//! remembered only to refuse their labels with what to send instead.

use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::vehicles::{RememberedVehicle, VehicleBook, REMEMBER_VEHICLES};
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
/// Longest `track` kept, likewise: a real one (`<camera id>-<n>`) has at most 85 bytes.
pub const MAX_TRACK_BYTES: usize = 96;

/// A label for a frame's region: `{"seq": 1234, "region": 0, "class": "truck", "source": "loop-3"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionLabel {
    pub seq: u64,
    pub region: usize,
    pub class: String,
    /// Who says so (an operator's tool, a loop detector...), kept for the evidence.
    #[serde(default)]
    pub source: Option<String>,
}

/// A label for a tracked camera's vehicle, as a loop detector or a
/// weigh-in-motion station reports it: `{"track": "north-118", "class": "truck", "source": "wim-2"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleLabel {
    /// The `track` of its `…/vehicles/<camera>` message.
    pub track: String,
    pub class: String,
    #[serde(default)]
    pub source: Option<String>,
}

/// One label of a feedback message; a message may mix both kinds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Label {
    Region(RegionLabel),
    Vehicle(VehicleLabel),
}

impl Label {
    /// The prediction and region it names, for a rejection event (none for a vehicle).
    pub fn seq_and_region(&self) -> (Option<u64>, Option<usize>) {
        match self {
            Label::Region(label) => (Some(label.seq), Some(label.region)),
            Label::Vehicle(_) => (None, None),
        }
    }

    fn texts_mut(&mut self) -> (&mut String, &mut Option<String>) {
        match self {
            Label::Region(label) => (&mut label.class, &mut label.source),
            Label::Vehicle(label) => (&mut label.class, &mut label.source),
        }
    }
}

/// Why feedback (a message, or one label in it) was refused; the text,
/// which says what to send instead, goes into the `feedback_rejected` event.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("feedback of {bytes} bytes is over the {MAX_FEEDBACK_BYTES}-byte limit: send fewer labels per message")]
    TooLarge { bytes: usize },
    /// Not JSON, or not labels.
    #[error(r#"feedback must be {{"seq": <prediction seq>, "region": <index in its regions>, "class": "<road class>"}} or, for a tracked camera's vehicle, {{"track": "<its track>", "class": "<road class>"}} (either may add "source"), or an array of those"#)]
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
    /// A tracked camera is judged by its vehicles, once each, not by its frames.
    #[error(r#"seq {seq} is a frame of camera {camera}, which tracks vehicles and is judged by them: label the vehicle instead, {{"track": "<its track: the region's, or its …/vehicles/{camera} message's>", "class": "<road class>"}}"#)]
    TrackedFrame { seq: u64, camera: String },
    /// Too old (forgotten), never published (class `none`), or never given.
    #[error("track `{track}` is not a vehicle this agent remembers{}: feedback must name the track of one of the last {REMEMBER_VEHICLES} vehicles published on …/vehicles/<camera>", oldest.as_ref().map(|o| format!(" (the oldest remembered is `{o}`)")).unwrap_or_default())]
    UnknownTrack { track: String, oldest: Option<String> },
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
        if let Label::Vehicle(vehicle) = label {
            shorten(&mut vehicle.track, MAX_TRACK_BYTES);
        }
        let (class, source) = label.texts_mut();
        shorten(class, MAX_CLASS_BYTES);
        if let Some(source) = source {
            truncate(source, MAX_SOURCE_BYTES);
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

/// Cuts a name no one could have meant (it names nothing this long) and
/// marks the cut, so that a rejection quotes it short and never as a real name.
fn shorten(text: &mut String, max: usize) {
    if text.len() > max {
        truncate(text, max);
        text.push('…');
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
    /// A tracked camera's frame: its labels are refused (its vehicles are labelled instead).
    tracked: bool,
    /// Regions remembered (at most `MAX_REGIONS`).
    regions: u8,
    /// Per region: index into the book's classes (`UNKNOWN_CLASS` if not among them).
    classes: [u8; MAX_REGIONS],
}

/// Regions remembered per prediction; feedback for a later region is refused.
pub const MAX_REGIONS: usize = 32;
const UNKNOWN_CLASS: u8 = u8::MAX;

/// What a label in the window is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A region of a prediction of an untracked camera.
    Region { seq: u64, region: usize, prediction_id: u64 },
    /// A tracked camera's vehicle.
    Vehicle { track: Arc<str> },
}

/// A label in the window (a retrain request lists mistakes as `wire::retrain::Mistake`).
#[derive(Debug, Clone)]
pub struct Labelled {
    pub subject: Subject,
    pub camera: String,
    pub predicted: String,
    pub truth: String,
    pub source: Option<String>,
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
    vehicles: VehicleBook,
    /// Valid true classes (road classes and `none`); predictions refer to them by index.
    classes: Vec<String>,
    window: VecDeque<Labelled>,
    window_len: usize,
    window_age: Duration,
}

impl LabelBook {
    /// Remembers the last `remember` predictions and `remember_vehicles` vehicles.
    pub fn new(remember: usize, remember_vehicles: usize, window_len: usize, window_age: Duration, classes: Vec<String>) -> LabelBook {
        LabelBook {
            remembered: VecDeque::new(),
            remember,
            vehicles: VehicleBook::new(remember_vehicles),
            classes,
            window: VecDeque::new(),
            window_len,
            window_age,
        }
    }

    /// Remembers the classes predicted for the regions of prediction `seq`.
    pub fn remember(&mut self, seq: u64, prediction_id: u64, camera: Arc<str>, model: Arc<ModelIdentity>, predicted: &[String], tracked: bool) {
        let mut classes = [UNKNOWN_CLASS; MAX_REGIONS];
        for (slot, class) in classes.iter_mut().zip(predicted) {
            *slot = self.class_index(class);
        }
        let regions = predicted.len().min(MAX_REGIONS) as u8;
        if self.remembered.back().is_some_and(|last| last.seq >= seq) {
            tracing::debug!(seq, "prediction numbers went back; forgetting the older ones");
            self.remembered.clear();
        }
        self.remembered.push_back(Remembered { seq, prediction_id, camera, model, tracked, regions, classes });
        while self.remembered.len() > self.remember {
            self.remembered.pop_front();
        }
    }

    /// Remembers a tracked camera's vehicle and its consensus class.
    pub fn remember_vehicle(&mut self, track: Arc<str>, camera: Arc<str>, model: Arc<ModelIdentity>, class: &str) {
        let class = self.class_index(class);
        self.vehicles.remember(RememberedVehicle { track, camera, model, class });
    }

    fn class_index(&self, class: &str) -> u8 {
        self.classes.iter().position(|c| c == class).map_or(UNKNOWN_CLASS, |i| i.min(254) as u8)
    }

    fn class_name(&self, index: u8) -> String {
        self.classes.get(index as usize).cloned().unwrap_or_else(|| "unknown".to_string())
    }

    /// Adds a label; a second label for the same region or vehicle replaces the first.
    pub fn add(&mut self, label: Label) -> Result<&Labelled, FeedbackError> {
        let labelled = match label {
            Label::Region(label) => self.region_label(label)?,
            Label::Vehicle(label) => self.vehicle_label(label)?,
        };
        self.window.retain(|l| l.subject != labelled.subject);
        self.window.push_back(labelled);
        while self.window.len() > self.window_len {
            self.window.pop_front();
        }
        Ok(self.window.back().expect("just pushed"))
    }

    fn known_class(&self, class: String) -> Result<String, FeedbackError> {
        if self.classes.contains(&class) {
            Ok(class)
        } else {
            Err(FeedbackError::UnknownClass { class, classes: self.classes.clone() })
        }
    }

    fn region_label(&self, label: RegionLabel) -> Result<Labelled, FeedbackError> {
        let truth = self.known_class(label.class)?;
        let found = self.remembered.binary_search_by_key(&label.seq, |r| r.seq).ok().map(|i| &self.remembered[i]);
        let Some(prediction) = found else {
            return Err(FeedbackError::UnknownSeq { seq: label.seq, oldest: self.remembered.front().map(|r| r.seq) });
        };
        if prediction.tracked {
            return Err(FeedbackError::TrackedFrame { seq: label.seq, camera: prediction.camera.to_string() });
        }
        let Some(predicted) = prediction.classes[..prediction.regions as usize].get(label.region) else {
            return Err(FeedbackError::NoSuchRegion { seq: label.seq, regions: prediction.regions as usize, region: label.region });
        };
        Ok(Labelled {
            subject: Subject::Region { seq: label.seq, region: label.region, prediction_id: prediction.prediction_id },
            camera: prediction.camera.to_string(),
            predicted: self.class_name(*predicted),
            truth,
            source: label.source,
            model: prediction.model.clone(),
            at: Instant::now(),
            wall: SystemTime::now(),
        })
    }

    fn vehicle_label(&self, label: VehicleLabel) -> Result<Labelled, FeedbackError> {
        let truth = self.known_class(label.class)?;
        let Some(vehicle) = self.vehicles.find(&label.track) else {
            return Err(FeedbackError::UnknownTrack { track: label.track, oldest: self.vehicles.oldest().map(str::to_string) });
        };
        Ok(Labelled {
            subject: Subject::Vehicle { track: vehicle.track.clone() },
            camera: vehicle.camera.to_string(),
            predicted: self.class_name(vehicle.class),
            truth,
            source: label.source,
            model: vehicle.model.clone(),
            at: Instant::now(),
            wall: SystemTime::now(),
        })
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
        Label::Region(RegionLabel { seq, region, class: class.into(), source: None })
    }

    fn vehicle_label(track: &str, class: &str) -> Label {
        Label::Vehicle(VehicleLabel { track: track.into(), class: class.into(), source: Some("wim-1".into()) })
    }

    fn book_with(n: u64, model: &Arc<ModelIdentity>, class: &str) -> LabelBook {
        let mut book = LabelBook::new(100, 5, 10, Duration::from_secs(3600), classes());
        for seq in 1..=n {
            book.remember(seq, seq, Arc::from("c"), model.clone(), &[class.to_string(), "truck".to_string()], false);
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
        let error = parse(b"not json").unwrap_err().to_string();
        assert!(error.contains("\"seq\"") && error.contains("\"track\""), "{error}");
        assert!(matches!(parse(br#"{"seq":3,"class":"car"}"#), Err(FeedbackError::Malformed(_))));
        assert!(parse(&vec![b' '; MAX_FEEDBACK_BYTES + 1]).unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn a_message_may_mix_region_and_vehicle_labels() {
        let labels = parse(br#"[{"seq":3,"region":1,"class":"car"},{"track":"road-7","class":"truck","source":"wim-1"},{"track":"road-8","class":"van"}]"#).unwrap();
        match &labels[..] {
            [Label::Region(r), Label::Vehicle(v), Label::Vehicle(w)] => {
                assert_eq!((r.seq, r.region, r.class.as_str()), (3, 1, "car"));
                assert_eq!((v.track.as_str(), v.class.as_str(), v.source.as_deref()), ("road-7", "truck", Some("wim-1")));
                assert_eq!((w.track.as_str(), w.source.as_deref()), ("road-8", None));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(labels[0].seq_and_region(), (Some(3), Some(1)));
        assert_eq!(labels[1].seq_and_region(), (None, None));
        let one = parse(br#"{"track":"road-7","class":"truck"}"#).unwrap();
        assert!(matches!(&one[..], [Label::Vehicle(v)] if v.track == "road-7"));
    }

    #[test]
    fn a_label_of_neither_shape_is_malformed_and_so_is_its_whole_message() {
        for payload in [
            &br#"{"track":"road-7"}"#[..],                                 // no class
            br#"{"track":7,"class":"car"}"#,                               // a track is a string
            br#"{"track":"road-7","class":"car","speed":80}"#,             // unknown field
            br#"{"seq":3,"region":0,"track":"road-7","class":"car"}"#,     // both at once
            br#"{"track":"road-7","region":0,"class":"car"}"#,             // half of each
            br#"[{"track":"road-7","class":"car"},{"trak":"road-8","class":"car"}]"#, // one bad label
            br#""road-7""#,
        ] {
            let error = parse(payload).unwrap_err();
            assert!(matches!(error, FeedbackError::Malformed(_)), "{}: {error}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn precision_counts_each_vehicle_once_and_names_its_track() {
        let v1 = model("1");
        let mut book = LabelBook::new(100, 5, 10, Duration::from_secs(3600), classes());
        for (n, class) in [(1, "car"), (2, "car"), (3, "bus"), (4, "truck")] {
            book.remember_vehicle(Arc::from(format!("road-{n}")), Arc::from("road"), v1.clone(), class);
        }
        for (track, truth) in [("road-1", "car"), ("road-2", "truck"), ("road-3", "bus"), ("road-4", "truck")] {
            book.add(vehicle_label(track, truth)).unwrap();
        }
        // A second label for a vehicle replaces the first: still 4.
        let again = book.add(vehicle_label("road-2", "truck")).unwrap();
        assert!(!again.is_correct());
        assert_eq!((again.subject.clone(), again.camera.as_str(), again.predicted.as_str()), (Subject::Vehicle { track: Arc::from("road-2") }, "road", "car"));
        let m = book.metrics(&v1);
        assert_eq!((m.labelled, m.correct, m.precision), (4, 3, Some(0.75)));
        assert_eq!(m.confusion["car"]["truck"], 1);
    }

    #[test]
    fn a_vehicle_label_for_an_unknown_or_forgotten_track_is_refused_naming_it() {
        let v1 = model("1");
        let mut book = LabelBook::new(100, 2, 10, Duration::from_secs(3600), classes());
        for n in 1..=3 {
            book.remember_vehicle(Arc::from(format!("road-{n}")), Arc::from("road"), v1.clone(), "car");
        }
        let forgotten = book.add(vehicle_label("road-1", "car")).unwrap_err();
        assert!(matches!(&forgotten, FeedbackError::UnknownTrack { track, oldest: Some(oldest) } if track == "road-1" && oldest == "road-2"), "{forgotten:?}");
        let text = book.add(vehicle_label("north-99", "car")).unwrap_err().to_string();
        assert!(text.contains("track `north-99`") && text.contains("`road-2`") && text.contains("…/vehicles/"), "{text}");
        assert!(book.add(vehicle_label("road-3", "spaceship")).unwrap_err().to_string().contains("car, truck, bus, none"));
        assert_eq!(book.metrics(&v1).labelled, 0);
        book.add(vehicle_label("road-3", "car")).unwrap();
        assert_eq!(book.metrics(&v1).labelled, 1);
    }

    #[test]
    fn a_tracked_cameras_frame_is_not_labelled_by_seq_and_the_refusal_says_to_name_the_track() {
        let v1 = model("1");
        let mut book = LabelBook::new(100, 5, 10, Duration::from_secs(3600), classes());
        book.remember(1, 1, Arc::from("road"), v1.clone(), &["car".to_string()], true);
        book.remember(2, 2, Arc::from("side"), v1.clone(), &["car".to_string()], false);
        let error = book.add(label(1, 0, "truck")).unwrap_err();
        assert!(matches!(&error, FeedbackError::TrackedFrame { seq: 1, camera } if camera == "road"), "{error:?}");
        assert!(error.to_string().contains(r#"{"track": "#), "{error}");
        book.add(label(2, 0, "truck")).unwrap();
        assert_eq!(book.metrics(&v1).labelled, 1, "only the untracked camera's frame counts");
    }

    #[test]
    fn a_long_track_is_refused_without_being_quoted_back() {
        let payload = serde_json::json!({"track": "t".repeat(100_000), "class": "car"});
        let label = parse(&serde_json::to_vec(&payload).unwrap()).unwrap().remove(0);
        let v1 = model("1");
        let mut book = LabelBook::new(100, 5, 10, Duration::from_secs(3600), classes());
        book.remember_vehicle(Arc::from("t".repeat(MAX_TRACK_BYTES)), Arc::from("road"), v1, "car");
        let error = book.add(label).unwrap_err().to_string();
        assert!(error.len() < 400, "{error}");
    }

    #[test]
    fn a_long_source_is_cut_and_a_long_class_is_refused_without_being_quoted_back() {
        let payload = serde_json::json!({"seq": 1, "region": 0, "class": "c".repeat(10_000), "source": "é".repeat(100_000)});
        let label = parse(&serde_json::to_vec(&payload).unwrap()).unwrap().remove(0);
        let Label::Region(region) = &label else { panic!("{label:?}") };
        let source = region.source.clone().unwrap();
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
            let Label::Region(first) = &labels[0] else { panic!("a region label: {:?}", labels[0]) };
            proptest::prop_assert_eq!((first.seq, first.region), (seq, region));
            if class.len() <= MAX_CLASS_BYTES {
                proptest::prop_assert_eq!(&first.class, &class);
            }
            if let Some(source) = source.filter(|s| s.len() <= MAX_SOURCE_BYTES) {
                proptest::prop_assert_eq!(first.source.as_deref(), Some(source.as_str()));
            }
        }

        /// Vehicle labels with arbitrary text, after a region label: kept as vehicles, within bounds.
        #[test]
        fn any_vehicle_label_parses_within_bounds(track in ".{0,300}", class in ".{0,300}", source in proptest::option::of(".{0,2000}")) {
            let payload = serde_json::json!([{"seq": 1, "region": 0, "class": "car"}, {"track": track, "class": class, "source": source}]);
            let labels = check_bounds(&serde_json::to_vec(&payload).unwrap()).expect("well-formed labels");
            let Label::Vehicle(vehicle) = &labels[1] else { panic!("a vehicle label: {:?}", labels[1]) };
            if track.len() <= MAX_TRACK_BYTES {
                proptest::prop_assert_eq!(&vehicle.track, &track);
            }
        }
    }

    fn check_bounds(payload: &[u8]) -> Option<Vec<Label>> {
        match parse(payload) {
            Ok(labels) => {
                assert!(labels.len() <= MAX_LABELS_PER_MESSAGE);
                for label in &labels {
                    let (class, source, track) = match label {
                        Label::Region(l) => (&l.class, &l.source, None),
                        Label::Vehicle(l) => (&l.class, &l.source, Some(&l.track)),
                    };
                    assert!(source.as_ref().is_none_or(|s| s.len() <= MAX_SOURCE_BYTES), "{label:?}");
                    assert!(class.len() <= MAX_CLASS_BYTES + '…'.len_utf8(), "{label:?}");
                    assert!(track.is_none_or(|t| t.len() <= MAX_TRACK_BYTES + '…'.len_utf8()), "{label:?}");
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
