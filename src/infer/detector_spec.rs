//! A detector's spec: the `.toml` beside its `.onnx` with `kind = "detector"`.
//! It says how to feed the model (size, colour, scaling, stretch or
//! letterbox), how to decode its output (raw YOLO heads with their anchors,
//! masks and strides), the score and NMS thresholds, and which of its labels
//! are road vehicles. Nothing about a particular detector is in the code.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::spec::{read_labels, read_text, ColorOrder, InputSpec, Layout, ModelKind, Resize, SpecError, MAX_INPUT_SIDE, MAX_VERSION};
use super::taxonomy::NO_VEHICLE;

/// Most boxes a detector reports per frame (after NMS).
pub const MAX_DETECTIONS: usize = 300;
/// Most heads, anchors per head and labels a spec may name.
const MAX_HEADS: usize = 8;
const MAX_ANCHORS: usize = 64;
const MAX_LABELS: usize = 10_000;

/// What is wrong with a detector spec, beyond what [`SpecError`] covers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectorSpecError {
    #[error("is a {found} spec, not a detector's: name a detector (kind = \"detector\") here")]
    NotADetector { found: ModelKind },
    #[error("input width and height must be 1 to {MAX_INPUT_SIDE}, mean and std finite, std non-zero")]
    BadInput,
    #[error("output.{field} is {value}: it must be within 0..1")]
    Threshold { field: &'static str, value: f32 },
    #[error("output.max_detections must be 1 to {MAX_DETECTIONS}")]
    MaxDetections,
    #[error("output.heads: give 1 to {MAX_HEADS} heads, each with a mask of at least one anchor")]
    Heads,
    #[error("output.heads[{head}]: anchor {anchor} is not in output.anchors (it has {anchors})")]
    Mask { head: usize, anchor: usize, anchors: usize },
    #[error("output.heads[{head}]: stride must be 1 to {MAX_INPUT_SIDE} and divide the input size")]
    Stride { head: usize },
    #[error("output.anchors: 1 to {MAX_ANCHORS} [width, height] pairs above 0")]
    Anchors,
    #[error("the labels file has {0} labels: give 1 to {MAX_LABELS}")]
    LabelCount(usize),
    #[error("classes: label `{0}` is not in the labels file")]
    UnknownLabel(String),
    #[error("classes: label `{0}` maps to no road class: give at least one, the detector's own first")]
    NoRoadClass(String),
    #[error("classes: label `{label}` maps to `{class}`, which is not a road class name (lower-case letters, digits, `_`; not `{NO_VEHICLE}`)")]
    BadRoadClass { label: String, class: String },
    #[error("classes: no label maps to a road class, so the detector would find no vehicle")]
    NoVehicleLabel,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorFile {
    name: String,
    version: String,
    #[allow(dead_code)] // read by `ModelKind::of` first
    kind: ModelKind,
    /// Labels file, one per line in the model's class order; relative to the spec.
    labels: PathBuf,
    input: DetectorInput,
    output: DetectorOutput,
    /// Detector label → road classes: the first is the detector's own call,
    /// the rest the finer classes the classifier may refine it to.
    classes: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorInput {
    name: String,
    width: u32,
    height: u32,
    layout: Layout,
    color: ColorOrder,
    resize: Resize,
    mean: [f32; 3],
    std: [f32; 3],
    fit: Fit,
    /// The grey the padding of a letterboxed frame is filled with (0–255).
    #[serde(default = "default_pad")]
    pad: u8,
}

fn default_pad() -> u8 {
    114
}

/// How a frame is brought to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Plain resize to width × height (as Darknet and OpenCV's `blobFromImage`).
    Stretch,
    /// Keep the aspect ratio, pad the rest (`input.pad`) centred.
    Letterbox,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorOutput {
    format: Format,
    /// `[width, height]` in input pixels (`yolo`).
    #[serde(default)]
    anchors: Vec<[f32; 2]>,
    #[serde(default)]
    heads: Vec<YoloHead>,
    score_threshold: f32,
    nms_iou: f32,
    #[serde(default = "default_max_detections")]
    max_detections: usize,
    /// A box of a label this much inside another box of that label (its
    /// intersection over the smaller box's area) is part of it: the larger
    /// box stays, with the better score. Off when absent.
    #[serde(default)]
    merge_contained: Option<f32>,
}

fn default_max_detections() -> usize {
    100
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    Yolo,
}

/// How the output tensors become boxes.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoding {
    /// Raw YOLO (v2–v4, Darknet layout) heads: per head `[N, A·(5+C), H, W]`,
    /// channels anchor-major `[tx, ty, tw, th, objectness, class logits…]`.
    /// The agent applies the sigmoids, the anchors and NMS. An anchor-free or
    /// end-to-end format (boxes and scores as outputs) would be another variant.
    Yolo {
        /// `[width, height]` in input pixels.
        anchors: Vec<[f32; 2]>,
        heads: Vec<YoloHead>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YoloHead {
    /// The output tensor's name.
    pub name: String,
    /// Input pixels per grid cell.
    pub stride: u32,
    /// Which of `anchors` this head predicts, in channel order.
    pub mask: Vec<usize>,
}

/// A detector spec with its labels loaded and checked.
#[derive(Debug, Clone)]
pub struct DetectorSpec {
    pub name: String,
    pub version: String,
    pub input: InputSpec,
    pub fit: Fit,
    pub pad: u8,
    pub decoding: Decoding,
    pub score_threshold: f32,
    pub nms_iou: f32,
    pub max_detections: usize,
    pub merge_contained: Option<f32>,
    pub labels: Vec<String>,
    /// Per label index: its road classes (empty: not a vehicle, ignored).
    pub road_classes: Vec<std::sync::Arc<[String]>>,
}

fn is_class_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') && name != NO_VEHICLE
}

impl DetectorSpec {
    pub fn load(path: &Path) -> Result<DetectorSpec, SpecError> {
        let text = read_text(path).map_err(|source| SpecError::Read { path: path.to_path_buf(), source })?;
        let invalid = |source: DetectorSpecError| SpecError::Detector { path: path.to_path_buf(), source };
        let kind = ModelKind::of(&text).map_err(|source| SpecError::Toml { path: path.to_path_buf(), source })?;
        if kind != ModelKind::Detector {
            return Err(invalid(DetectorSpecError::NotADetector { found: kind }));
        }
        let file: DetectorFile = toml::from_str(&text).map_err(|source| SpecError::Toml { path: path.to_path_buf(), source })?;
        if !file.version.parse::<u64>().is_ok_and(|v| (1..=MAX_VERSION).contains(&v)) {
            return Err(SpecError::BadVersion { path: path.to_path_buf(), version: file.version.chars().take(40).collect() });
        }
        let labels = read_labels(path, &file.labels)?;
        if !(1..=MAX_LABELS).contains(&labels.len()) {
            return Err(invalid(DetectorSpecError::LabelCount(labels.len())));
        }
        let i = file.input;
        let input = InputSpec { name: i.name, width: i.width, height: i.height, layout: i.layout, color: i.color, resize: i.resize, mean: i.mean, std: i.std };
        let side = 1..=MAX_INPUT_SIDE;
        if !side.contains(&input.width) || !side.contains(&input.height) || input.std.contains(&0.0) || input.std.iter().chain(&input.mean).any(|v| !v.is_finite()) {
            return Err(invalid(DetectorSpecError::BadInput));
        }
        let output = file.output;
        let thresholds = [("score_threshold", output.score_threshold), ("nms_iou", output.nms_iou), ("merge_contained", output.merge_contained.unwrap_or(0.5))];
        for (field, value) in thresholds {
            if !(value > 0.0 && value < 1.0) {
                return Err(invalid(DetectorSpecError::Threshold { field, value }));
            }
        }
        if !(1..=MAX_DETECTIONS).contains(&output.max_detections) {
            return Err(invalid(DetectorSpecError::MaxDetections));
        }
        let decoding = match output.format {
            Format::Yolo => Decoding::Yolo { anchors: output.anchors, heads: output.heads },
        };
        check_decoding(&decoding, &input).map_err(invalid)?;
        let mut road_classes: Vec<std::sync::Arc<[String]>> = vec![std::sync::Arc::from(Vec::new()); labels.len()];
        for (label, classes) in &file.classes {
            let index = labels.iter().position(|l| l == label).ok_or_else(|| invalid(DetectorSpecError::UnknownLabel(label.clone())))?;
            if classes.is_empty() {
                return Err(invalid(DetectorSpecError::NoRoadClass(label.clone())));
            }
            if let Some(class) = classes.iter().find(|c| !is_class_name(c)) {
                return Err(invalid(DetectorSpecError::BadRoadClass { label: label.clone(), class: class.chars().take(40).collect() }));
            }
            road_classes[index] = std::sync::Arc::from(classes.clone());
        }
        if road_classes.iter().all(|c| c.is_empty()) {
            return Err(invalid(DetectorSpecError::NoVehicleLabel));
        }
        Ok(DetectorSpec {
            name: file.name,
            version: file.version,
            input,
            fit: i.fit,
            pad: i.pad,
            decoding,
            score_threshold: output.score_threshold,
            nms_iou: output.nms_iou,
            max_detections: output.max_detections,
            merge_contained: output.merge_contained,
            labels,
            road_classes,
        })
    }

    /// Every file a detector spec's text names, by key, as written (relative
    /// to the spec): what a release of it carries beside the model and spec.
    pub fn named_files(text: &str) -> Result<Vec<(&'static str, PathBuf)>, toml::de::Error> {
        let file: DetectorFile = toml::from_str(text)?;
        // Destructured without `..`: a path key added to the spec must be
        // added here, or this does not compile (releases check these names).
        let DetectorFile { name: _, version: _, kind: _, labels, input: _, output: _, classes: _ } = file;
        Ok(vec![("labels", labels)])
    }

    /// The output tensors the model must have.
    pub fn output_names(&self) -> Vec<&str> {
        match &self.decoding {
            Decoding::Yolo { heads, .. } => heads.iter().map(|h| h.name.as_str()).collect(),
        }
    }
}

fn check_decoding(decoding: &Decoding, input: &InputSpec) -> Result<(), DetectorSpecError> {
    match decoding {
        Decoding::Yolo { anchors, heads } => {
            if anchors.is_empty() || anchors.len() > MAX_ANCHORS || anchors.iter().flatten().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(DetectorSpecError::Anchors);
            }
            if heads.is_empty() || heads.len() > MAX_HEADS || heads.iter().any(|h| h.mask.is_empty()) {
                return Err(DetectorSpecError::Heads);
            }
            for (i, head) in heads.iter().enumerate() {
                if let Some(anchor) = head.mask.iter().find(|a| **a >= anchors.len()) {
                    return Err(DetectorSpecError::Mask { head: i, anchor: *anchor, anchors: anchors.len() });
                }
                let s = head.stride;
                if s == 0 || s > MAX_INPUT_SIDE || input.width % s != 0 || input.height % s != 0 {
                    return Err(DetectorSpecError::Stride { head: i });
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled detector spec with one piece replaced, beside a copy of its labels.
    fn spec_replacing(dir: &Path, from: &str, to: &str) -> PathBuf {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        std::fs::copy(models.join("coco_labels.txt"), dir.join("coco_labels.txt")).unwrap();
        let text = std::fs::read_to_string(models.join("yolov3_tiny.toml")).unwrap();
        assert!(text.contains(from), "{from}");
        let path = dir.join("d.toml");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        path
    }

    fn error(from: &str, to: &str) -> SpecError {
        let dir = tempfile::tempdir().unwrap();
        DetectorSpec::load(&spec_replacing(dir.path(), from, to)).unwrap_err()
    }

    #[test]
    fn the_bundled_detector_spec_loads_with_its_vehicle_labels() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DetectorSpec::load(&spec_replacing(dir.path(), "", "")).unwrap();
        assert_eq!(spec.labels.len(), 80);
        let truck = spec.labels.iter().position(|l| l == "truck").unwrap();
        assert_eq!(&spec.road_classes[truck][..], ["truck", "van", "car"]);
        let person = spec.labels.iter().position(|l| l == "person").unwrap();
        assert!(spec.road_classes[person].is_empty());
        assert_eq!(spec.output_names(), ["yolo_13", "yolo_26"]);
    }

    #[test]
    fn a_broken_detector_spec_says_what_to_fix() {
        let cases: [(&str, &str, fn(&DetectorSpecError) -> bool); 7] = [
            ("std = [255.0, 255.0, 255.0]", "std = [nan, 255.0, 255.0]", |e| matches!(e, DetectorSpecError::BadInput)),
            ("kind = \"detector\"", "kind = \"classifier\"", |e| matches!(e, DetectorSpecError::NotADetector { .. })),
            ("mask = [3, 4, 5]", "mask = [3, 4, 6]", |e| matches!(e, DetectorSpecError::Mask { head: 0, anchor: 6, anchors: 6 })),
            ("stride = 32", "stride = 30", |e| matches!(e, DetectorSpecError::Stride { head: 0 })),
            ("score_threshold = 0.25", "score_threshold = 1.5", |e| matches!(e, DetectorSpecError::Threshold { field: "score_threshold", .. })),
            ("bus = [\"bus\"]", "buss = [\"bus\"]", |e| matches!(e, DetectorSpecError::UnknownLabel(l) if l == "buss")),
            ("bus = [\"bus\"]", "bus = [\"none\"]", |e| matches!(e, DetectorSpecError::BadRoadClass { .. })),
        ];
        for (from, to, expected) in cases {
            match error(from, to) {
                SpecError::Detector { source, .. } => assert!(expected(&source), "{from} → {to}: {source:?}"),
                other => panic!("{from} → {to}: {other:?}"),
            }
        }
        // A key the spec does not know is named by the TOML error.
        let typo = error("nms_iou", "nms_iuo");
        assert!(matches!(typo, SpecError::Toml { .. }) && typo.to_string().contains("nms_iuo"), "{typo}");
    }
}
