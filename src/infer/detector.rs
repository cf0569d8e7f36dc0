//! One ONNX Runtime session running a detector: a whole frame in, boxes
//! with labels and scores out (decoded and NMS'd as its spec says).

use opencv::core::{Mat, Rect};
use opencv::prelude::*;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::Path;
use std::sync::Arc;

use super::classifier::{check_input, open_session, names, InferError, ModelError, SignatureError};
use super::detector_spec::{Decoding, DetectorSpec, Fit, YoloHead};
use super::preprocess;
use super::spec::Layout;
use crate::wire::model::ModelIdentity;

/// One box the detector found, in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// `[x, y, width, height]`, top-left and size, within the frame.
    pub bbox: [f32; 4],
    /// Index into the spec's labels.
    pub label: usize,
    /// Objectness × the label's probability.
    pub score: f32,
}

impl Detection {
    /// The box as whole pixels inside `width` × `height`.
    pub fn rect(&self, width: i32, height: i32) -> Rect {
        let [x, y, w, h] = self.bbox;
        let x0 = (x.floor() as i32).clamp(0, width);
        let y0 = (y.floor() as i32).clamp(0, height);
        let x1 = ((x + w).ceil() as i32).clamp(0, width);
        let y1 = ((y + h).ceil() as i32).clamp(0, height);
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }
}

/// A box before NMS, centre and size normalised to the model's input.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    centre: [f32; 2],
    size: [f32; 2],
    label: usize,
    score: f32,
}

impl Candidate {
    fn corners(&self) -> [f32; 4] {
        let [cx, cy] = self.centre;
        let [w, h] = self.size;
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Greedy per-label non-maximum suppression: the best box of a label
/// removes the others of that label overlapping it by more than `threshold`.
fn suppress(mut candidates: Vec<Candidate>, threshold: f32, keep: usize) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() == keep {
            break;
        }
        let corners = c.corners();
        if kept.iter().all(|k| k.label != c.label || iou(k.corners(), corners) <= threshold) {
            kept.push(c);
        }
    }
    kept
}

/// Same-label boxes mostly inside a larger one (intersection over their own
/// area above `threshold`) are parts of it: the larger box stays, with the
/// better of their scores. Best first again afterwards.
fn merge_contained(mut boxes: Vec<Candidate>, threshold: f32) -> Vec<Candidate> {
    let area = |c: &Candidate| c.size[0] * c.size[1];
    boxes.sort_by(|a, b| area(b).total_cmp(&area(a)));
    let mut kept: Vec<Candidate> = Vec::new();
    for c in boxes {
        let [x0, y0, x1, y1] = c.corners();
        let inside = |k: &Candidate| {
            let [kx0, ky0, kx1, ky1] = k.corners();
            let overlap = (x1.min(kx1) - x0.max(kx0)).max(0.0) * (y1.min(ky1) - y0.max(ky0)).max(0.0);
            k.label == c.label && overlap > threshold * area(&c)
        };
        match kept.iter_mut().find(|k| inside(k)) {
            Some(container) => container.score = container.score.max(c.score),
            None => kept.push(c),
        }
    }
    kept.sort_by(|a, b| b.score.total_cmp(&a.score));
    kept
}

/// One detection per object whatever its label: where two boxes overlap
/// by more than `nms_iou`, or one lies `contained` inside the other (its
/// intersection over its own area), they are one object. It keeps the
/// best score's label and score, and the larger box. For a detector whose
/// labels split one kind of object (COCO's `car` and `truck` on one
/// pickup, frame by frame). Best first.
pub fn one_per_object(mut detections: Vec<Detection>, nms_iou: f32, contained: f32) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let corners = |d: &Detection| [d.bbox[0], d.bbox[1], d.bbox[0] + d.bbox[2], d.bbox[1] + d.bbox[3]];
    let area = |d: &Detection| d.bbox[2] * d.bbox[3];
    let mut kept: Vec<Detection> = Vec::new();
    for d in detections {
        let c = corners(&d);
        let same = kept.iter_mut().find(|k| {
            let kc = corners(k);
            let overlap = (c[2].min(kc[2]) - c[0].max(kc[0])).max(0.0) * (c[3].min(kc[3]) - c[1].max(kc[1])).max(0.0);
            iou(c, kc) > nms_iou || overlap > contained * area(&d).min(area(k))
        });
        match same {
            Some(k) if area(&d) > area(k) => k.bbox = d.bbox,
            Some(_) => {}
            None => kept.push(d),
        }
    }
    kept
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Candidates of one raw YOLO head, `data` laid out `[A·(5+C), H, W]` for one image.
fn decode_yolo_head(data: &[f32], grid: (usize, usize), anchors: &[[f32; 2]], input: (f32, f32), classes: usize, threshold: f32, out: &mut Vec<Candidate>) {
    let (rows, cols) = grid;
    let plane = rows * cols;
    let per_anchor = (5 + classes) * plane;
    for (a, anchor) in anchors.iter().enumerate() {
        let block = &data[a * per_anchor..(a + 1) * per_anchor];
        for cell in 0..plane {
            let objectness = sigmoid(block[4 * plane + cell]);
            if objectness < threshold {
                continue; // a class probability is at most 1
            }
            let (best, logit) = (0..classes)
                .map(|c| (c, block[(5 + c) * plane + cell]))
                .max_by(|x, y| x.1.total_cmp(&y.1))
                .unwrap_or((0, f32::NEG_INFINITY));
            let score = objectness * sigmoid(logit);
            if !(score >= threshold) {
                continue;
            }
            let (row, col) = (cell / cols, cell % cols);
            let centre = [(col as f32 + sigmoid(block[cell])) / cols as f32, (row as f32 + sigmoid(block[plane + cell])) / rows as f32];
            let size = [block[2 * plane + cell].exp() * anchor[0] / input.0, block[3 * plane + cell].exp() * anchor[1] / input.1];
            if centre.iter().chain(&size).all(|v| v.is_finite()) {
                out.push(Candidate { centre, size, label: best, score });
            }
        }
    }
}

/// How the model's input maps back to the frame: frame = (input − offset) / scale, per axis.
#[derive(Debug, Clone, Copy)]
struct Placement {
    scale: [f32; 2],
    offset: [f32; 2],
}

pub struct Detector {
    session: Session,
    spec: DetectorSpec,
    identity: ModelIdentity,
    /// Reused input buffer: `3 * h * w` floats.
    input: Vec<f32>,
}

impl Detector {
    pub fn load(model_path: &Path, spec_path: &Path, intra_threads: usize) -> Result<Detector, ModelError> {
        let spec = DetectorSpec::load(spec_path)?;
        let (session, sha256) = open_session(model_path, intra_threads)?;
        check_signature(&session, &spec).map_err(|source| ModelError::Mismatch { path: model_path.to_path_buf(), source })?;
        let identity = ModelIdentity { name: spec.name.clone(), version: spec.version.clone(), sha256 };
        Ok(Detector { session, spec, identity, input: Vec::new() })
    }

    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    /// A release's version (from its signed record) instead of the spec's.
    pub fn with_version(mut self, version: String) -> Detector {
        self.identity.version = version;
        self
    }

    pub fn spec(&self) -> &DetectorSpec {
        &self.spec
    }

    pub fn label(&self, detection: &Detection) -> &str {
        &self.spec.labels[detection.label]
    }

    /// The road classes a detection's label stands for (empty: not a vehicle).
    pub fn road_classes(&self, detection: &Detection) -> &Arc<[String]> {
        &self.spec.road_classes[detection.label]
    }

    /// Every box in `frame` (8-bit BGR) at or above the spec's score, best first.
    pub fn detect(&mut self, frame: &Mat) -> Result<Vec<Detection>, InferError> {
        let spec = &self.spec;
        let input = &spec.input;
        let (w, h) = (input.width as usize, input.height as usize);
        self.input.resize(3 * w * h, 0.0);
        let (fw, fh) = (frame.cols(), frame.rows());
        let whole = Rect::new(0, 0, fw, fh);
        if fw <= 0 || fh <= 0 {
            return Err(InferError::Preprocess { rect: whole, source: opencv::Error::new(opencv::core::StsBadSize, "empty frame") });
        }
        let placement = match spec.fit {
            Fit::Stretch => {
                preprocess::region_into(frame, whole, input, &mut self.input).map_err(|source| InferError::Preprocess { rect: whole, source })?;
                Placement { scale: [w as f32 / fw as f32, h as f32 / fh as f32], offset: [0.0, 0.0] }
            }
            Fit::Letterbox => {
                let (scale, offset) = preprocess::letterbox_into(frame, input, spec.pad, &mut self.input).map_err(|source| InferError::Preprocess { rect: whole, source })?;
                Placement { scale: [scale, scale], offset }
            }
        };
        let shape = match input.layout {
            Layout::Nchw => [1, 3, h, w],
            Layout::Nhwc => [1, h, w, 3],
        };
        let tensor = TensorRef::from_array_view((shape, self.input.as_slice()))?;
        let outputs = self.session.run(ort::inputs![input.name.as_str() => tensor])?;
        let mut candidates = Vec::new();
        match &spec.decoding {
            Decoding::Yolo { anchors, heads } => {
                for head in heads {
                    let output = outputs.get(&head.name).ok_or_else(|| InferError::NoOutput(head.name.clone()))?;
                    let (shape, data) = output.try_extract_tensor::<f32>()?;
                    let grid = head_grid(head, &shape[..], spec)?;
                    let head_anchors: Vec<[f32; 2]> = head.mask.iter().map(|a| anchors[*a]).collect();
                    let one_image = &data[..head_anchors.len() * (5 + spec.labels.len()) * grid.0 * grid.1];
                    decode_yolo_head(one_image, grid, &head_anchors, (w as f32, h as f32), spec.labels.len(), spec.score_threshold, &mut candidates);
                }
            }
        }
        let mut kept = suppress(candidates, spec.nms_iou, spec.max_detections);
        if let Some(threshold) = spec.merge_contained {
            kept = merge_contained(kept, threshold);
        }
        Ok(kept
            .into_iter()
            .filter_map(|c| {
                let [x0, y0, x1, y1] = c.corners();
                let to_frame = |v: f32, axis: usize, size: f32, limit: i32| ((v * size - placement.offset[axis]) / placement.scale[axis]).clamp(0.0, limit as f32);
                let (x0, x1) = (to_frame(x0, 0, w as f32, fw), to_frame(x1, 0, w as f32, fw));
                let (y0, y1) = (to_frame(y0, 1, h as f32, fh), to_frame(y1, 1, h as f32, fh));
                (x1 > x0 && y1 > y0).then_some(Detection { bbox: [x0, y0, x1 - x0, y1 - y0], label: c.label, score: c.score })
            })
            .collect())
    }
}

/// A head's `(rows, columns)`, checked against the spec: `[N ≥ 1, A·(5+C), H, W]`.
fn head_grid(head: &YoloHead, shape: &[i64], spec: &DetectorSpec) -> Result<(usize, usize), InferError> {
    let expected = expected_head_shape(head, spec);
    if shape.len() != 4 || shape[0] < 1 || shape[1..] != expected[1..] {
        return Err(InferError::OutputShape { name: head.name.clone(), shape: shape.to_vec(), expected: expected.to_vec() });
    }
    Ok((expected[2] as usize, expected[3] as usize))
}

fn expected_head_shape(head: &YoloHead, spec: &DetectorSpec) -> [i64; 4] {
    let channels = head.mask.len() * (5 + spec.labels.len());
    [1, channels as i64, (spec.input.height / head.stride) as i64, (spec.input.width / head.stride) as i64]
}

/// The model must take the spec's input and give each head the spec names, in its shape.
fn check_signature(session: &Session, spec: &DetectorSpec) -> Result<(), SignatureError> {
    check_input(session, &spec.input)?;
    match &spec.decoding {
        Decoding::Yolo { heads, .. } => {
            for head in heads {
                let output = session
                    .outputs()
                    .iter()
                    .find(|o| o.name() == head.name)
                    .ok_or_else(|| SignatureError::NoOutput { name: head.name.clone(), found: names(session.outputs()) })?;
                let shape: Vec<i64> = output.dtype().tensor_shape().map(|s| s.iter().copied().collect()).unwrap_or_default();
                let expected = expected_head_shape(head, spec);
                let fits = shape.len() == 4 && shape.iter().zip(expected).skip(1).all(|(have, want)| *have == want || *have == -1);
                if !fits {
                    return Err(SignatureError::OutputShape { name: head.name.clone(), shape, expected: expected.to_vec() });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(x: f32, label: usize, score: f32) -> Candidate {
        Candidate { centre: [x, 0.5], size: [0.2, 0.2], label, score }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_of_one_label_only() {
        let kept = suppress(vec![candidate(0.5, 0, 0.6), candidate(0.52, 0, 0.9), candidate(0.51, 1, 0.5), candidate(0.9, 0, 0.4)], 0.45, 10);
        let summary: Vec<(usize, f32)> = kept.iter().map(|c| (c.label, c.score)).collect();
        // The 0.6 box overlaps the 0.9 one of its label; the other label's box stays.
        assert_eq!(summary, [(0, 0.9), (1, 0.5), (0, 0.4)]);
        assert_eq!(suppress(vec![candidate(0.1, 0, 0.5), candidate(0.9, 0, 0.6)], 0.45, 1).len(), 1);
    }

    #[test]
    fn a_box_inside_a_larger_one_of_its_label_is_part_of_it() {
        // A car and the box around its rear wheel, scored higher; a person inside the car's box stays.
        let car = Candidate { centre: [0.5, 0.5], size: [0.4, 0.2], label: 2, score: 0.6 };
        let wheel = Candidate { centre: [0.4, 0.55], size: [0.15, 0.1], label: 2, score: 0.8 };
        let person = Candidate { centre: [0.4, 0.55], size: [0.15, 0.1], label: 0, score: 0.5 };
        let merged = merge_contained(vec![wheel, car, person], 0.8);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert_eq!((merged[0].size, merged[0].score), (car.size, 0.8));
        assert_eq!(merged[1].label, 0);
    }

    #[test]
    fn a_yolo_cell_decodes_to_its_anchor_scaled_box_and_score() {
        // One anchor, two classes, a 2×2 grid: only cell (row 1, col 0) is confident.
        let (rows, cols, classes) = (2, 2, 2);
        let plane = rows * cols;
        let mut data = vec![-20.0f32; (5 + classes) * plane];
        let cell = cols; // row 1, col 0
        data[cell] = 0.0; // tx: sigmoid 0.5
        data[plane + cell] = 0.0; // ty
        data[2 * plane + cell] = 0.0; // tw: exp 1
        data[3 * plane + cell] = (2.0f32).ln(); // th: exp 2
        data[4 * plane + cell] = 20.0; // objectness ≈ 1
        data[6 * plane + cell] = 0.0; // class 1: sigmoid 0.5
        let mut out = Vec::new();
        decode_yolo_head(&data, (rows, cols), &[[10.0, 20.0]], (100.0, 100.0), classes, 0.25, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let c = out[0];
        assert_eq!(c.label, 1);
        assert!((c.score - 0.5).abs() < 1e-4, "{}", c.score);
        assert!((c.centre[0] - 0.25).abs() < 1e-6 && (c.centre[1] - 0.75).abs() < 1e-6, "{:?}", c.centre);
        assert!((c.size[0] - 0.1).abs() < 1e-6 && (c.size[1] - 0.4).abs() < 1e-6, "{:?}", c.size);
    }

    #[test]
    fn a_pickup_boxed_as_car_and_as_truck_is_one_object_with_the_better_label_and_the_larger_box() {
        let car = Detection { bbox: [244.0, 144.0, 180.0, 82.0], label: 2, score: 0.73 };
        let truck = Detection { bbox: [240.0, 140.0, 190.0, 90.0], label: 7, score: 0.31 };
        let beside = Detection { bbox: [469.0, 138.0, 167.0, 98.0], label: 2, score: 0.9 };
        let one = one_per_object(vec![truck, car, beside.clone()], 0.45, 0.8);
        assert_eq!(one.len(), 2, "{one:?}");
        assert_eq!(one[0], beside);
        assert_eq!((one[1].label, one[1].score, one[1].bbox), (2, 0.73, [240.0, 140.0, 190.0, 90.0]));
    }

    #[test]
    fn a_box_becomes_whole_pixels_inside_the_frame() {
        let d = Detection { bbox: [-3.5, 10.2, 50.0, 200.0], label: 0, score: 0.9 };
        assert_eq!(d.rect(40, 100), Rect::new(0, 10, 40, 90));
    }
}
