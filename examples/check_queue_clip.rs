//! Checks `media/queue.mp4` against its truth: where the motion region finder
//! loses the queued vehicles, and whether the detector finds them there.
//!
//! (a) Decodes the clip with OpenCV and runs the agent's motion region finder
//! (`MotionConfig::default()`: MOG2, history 500, variance threshold 16, no
//! shadows, 320 px analysis width, learning rate 0.002 after 10 warm-up
//! frames) frame by frame. Per vehicle and phase (driving in, standing,
//! driving off) it prints the fully visible frames in which no region overlaps
//! the vehicle with IoU >= 0.3 ("lost"), and the regions on the empty road.
//! (b) Writes four frames per vehicle as PNG (one driving in, two standing:
//! 3 s in and 0.6 s before it starts, one driving off) and runs
//! `target/release/cctv-agent detect` on them (not built here: `cargo build
//! --release` first); per vehicle and frame, the best detection's IoU with
//! the truth (found: >= 0.5), its label, road class and score, beside the
//! motion finder's best IoU in that frame.
//!
//! `cargo run --release --example check_queue_clip [-- --every N] [--model M.onnx]`:
//! with `--every N` the detector also runs on every Nth frame and the recall
//! per vehicle and phase is printed. Fails if a vehicle is not lost by motion
//! while it stands.

use anyhow::{bail, ensure, Context, Result};
use cctv_agent::config::{MotionConfig, RegionsConfig};
use cctv_agent::pipeline::regions::RegionFinder;
use cctv_agent::track::geometry::BBox;
use opencv::core::{Mat, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, videoio};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const MAX_REGIONS: usize = 16;
/// Motion "has" a vehicle when a region overlaps it this much.
const MOTION_IOU: f32 = 0.3;
/// The detector finds a vehicle with a box this close to the truth.
const DETECT_IOU: f32 = 0.5;
const PHASES: [&str; 3] = ["driving in", "standing", "driving off"];

struct Truth {
    id: u64,
    class: String,
    /// The photo, short: `car`, `pickup`, `motorcycle`.
    photo: String,
    lane: String,
    /// Frames it stands still, inclusive.
    stands: (u32, u32),
    /// frame -> (box clipped to the frame, fully visible)
    boxes: BTreeMap<u32, (BBox, bool)>,
}

impl Truth {
    fn phase(&self, frame: u32) -> usize {
        if frame < self.stands.0 {
            0
        } else if frame <= self.stands.1 {
            1
        } else {
            2
        }
    }

    fn fully_visible(&self) -> impl Iterator<Item = u32> + '_ {
        self.boxes.iter().filter(|(_, (_, fully))| *fully).map(|(f, _)| *f)
    }
}

/// `3 4 5 9` as `3-5 9`.
fn ranges(frames: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < frames.len() {
        let mut j = i;
        while j + 1 < frames.len() && frames[j + 1] == frames[j] + 1 {
            j += 1;
        }
        out.push(if i == j { frames[i].to_string() } else { format!("{}-{}", frames[i], frames[j]) });
        i = j + 1;
    }
    if out.is_empty() { "-".into() } else { out.join(" ") }
}

/// `crop_dog_truck.png` as `pickup`.
fn photo_name(source: &str) -> String {
    let known = [("car", "car"), ("truck", "pickup"), ("van", "van"), ("motorcycle", "motorcycle")];
    known.iter().find(|(part, _)| source.contains(part)).map_or(source, |k| k.1).to_string()
}

fn number_box(v: &Value) -> Result<BBox> {
    let b: Vec<f32> = v.as_array().context("box")?.iter().map(|n| n.as_f64().unwrap_or(f64::NAN) as f32).collect();
    ensure!(b.len() == 4, "a box is [x, y, w, h]");
    Ok(BBox::new(b[0], b[1], b[2], b[3]))
}

fn load_truth(path: &Path) -> Result<(Value, Vec<Truth>)> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?)?;
    let mut vehicles = Vec::new();
    for v in doc["vehicles"].as_array().context("vehicles")? {
        let stopped = &v["stopped"];
        let stands = (stopped["from"].as_u64().context("stopped.from")? as u32, stopped["to"].as_u64().context("stopped.to")? as u32);
        let mut boxes = BTreeMap::new();
        for f in v["frames"].as_array().context("frames")? {
            let fully = f["fully_visible"].as_bool().context("fully_visible")?;
            boxes.insert(f["frame"].as_u64().context("frame")? as u32, (number_box(&f["bbox"])?, fully));
        }
        vehicles.push(Truth {
            id: v["id"].as_u64().context("id")?,
            class: v["class"].as_str().context("class")?.to_string(),
            photo: photo_name(v["source"].as_str().context("source")?),
            lane: v["lane"].as_str().context("lane")?.to_string(),
            stands,
            boxes,
        });
    }
    Ok((doc, vehicles))
}

/// The detector's answer for one image.
struct Detection {
    bbox: BBox,
    label: String,
    road_class: Option<String>,
    score: f64,
}

/// Runs `cctv-agent detect` on the images: their detections, by image.
fn run_detector(binary: &Path, model: &Path, images: &[PathBuf]) -> Result<BTreeMap<PathBuf, Vec<Detection>>> {
    let out = Command::new(binary).arg("detect").arg("--model").arg(model).args(images).output().context("running cctv-agent detect")?;
    ensure!(out.status.success(), "cctv-agent detect failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut answers = BTreeMap::new();
    for line in String::from_utf8(out.stdout)?.lines().filter(|l| l.starts_with('{')) {
        let doc: Value = serde_json::from_str(line)?;
        let image = PathBuf::from(doc["image"].as_str().context("image")?);
        let mut found = Vec::new();
        for d in doc["detections"].as_array().context("detections")? {
            found.push(Detection {
                bbox: number_box(&d["box"])?,
                label: d["label"].as_str().unwrap_or("?").to_string(),
                road_class: d["road_class"].as_str().map(str::to_string),
                score: d["score"].as_f64().unwrap_or(0.0),
            });
        }
        answers.insert(image, found);
    }
    ensure!(answers.len() == images.len(), "cctv-agent detect answered for {} of {} images", answers.len(), images.len());
    Ok(answers)
}

/// The newest file under `dir` (recursively) modified after `than`, if any.
fn newer_than(dir: &Path, than: std::time::SystemTime) -> Option<PathBuf> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if let Ok(modified) = meta.modified() {
                if modified > than && newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                    newest = Some((modified, path));
                }
            }
        }
    }
    newest.map(|(_, p)| p)
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut every = 0u32;
    let mut model = root.join("models/yolov3_tiny.onnx");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--every", Some(n)) => every = n.parse().context("--every N")?,
            ("--model", Some(m)) => model = PathBuf::from(m),
            _ => bail!("usage: check_queue_clip [--every N] [--model M.onnx]"),
        }
    }
    let (doc, vehicles) = load_truth(&root.join("media/queue.truth.json"))?;
    let total = doc["frames"].as_u64().context("frames")? as u32;
    let first_vehicle = vehicles.iter().filter_map(|v| v.boxes.keys().next().copied()).min().context("no vehicles")?;
    let last_vehicle = vehicles.iter().filter_map(|v| v.boxes.keys().last().copied()).max().context("no vehicles")?;

    // The detector's frames: per vehicle, one driving in (the middle of its
    // fully visible frames before it stands), two standing, one driving off.
    let mut picked: Vec<[(u32, &str); 4]> = Vec::new();
    for v in &vehicles {
        let (from, to) = v.stands;
        let before: Vec<u32> = v.fully_visible().filter(|&f| f < from).collect();
        let after: Vec<u32> = v.fully_visible().filter(|&f| f > to).collect();
        ensure!(!before.is_empty() && !after.is_empty(), "vehicle {} is not fully in view driving in and off", v.id);
        picked.push([
            (before[before.len() / 2], "driving in"),
            ((from + 75).min(to), "standing 3 s"),
            (to.saturating_sub(15).max(from), "standing, last 0.6 s"),
            (after[after.len() / 2], "driving off"),
        ]);
    }
    let mut detector_frames: BTreeSet<u32> = picked.iter().flatten().map(|p| p.0).collect();
    if every > 0 {
        detector_frames.extend((0..total).step_by(every as usize));
    }
    let dir = std::env::temp_dir().join(format!("check_queue_clip-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let png = |frame: u32| dir.join(format!("f{frame:04}.png"));

    // (a) The motion region finder, every frame; the detector's frames saved on the way.
    let clip = root.join("media").join(doc["clip"].as_str().context("clip")?);
    let mut capture = videoio::VideoCapture::from_file(clip.to_str().unwrap(), videoio::CAP_ANY)?;
    ensure!(capture.is_opened()?, "cannot open {}", clip.display());
    let motion = MotionConfig::default();
    let mut finder = RegionFinder::new(&RegionsConfig::Motion, &motion)?;
    // Per vehicle: frame -> best IoU of any region.
    let mut best_iou: Vec<BTreeMap<u32, f32>> = vehicles.iter().map(|_| BTreeMap::new()).collect();
    let mut empty_road = (0u32, 0u32, Vec::new()); // frames, regions, frames with regions
    let mut strays: Vec<(u32, BBox)> = Vec::new(); // regions on no vehicle while there are some
    let mut frame = Mat::default();
    let mut n = 0u32;
    while capture.read(&mut frame)? {
        let regions: Vec<BBox> = finder
            .find(&frame, MAX_REGIONS)?
            .iter()
            .map(|r| BBox::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32))
            .collect();
        for (v, best) in vehicles.iter().zip(best_iou.iter_mut()) {
            if let Some((t, _)) = v.boxes.get(&n) {
                best.insert(n, regions.iter().map(|r| r.iou(t)).fold(0.0, f32::max));
            }
        }
        let here: Vec<&BBox> = vehicles.iter().filter_map(|v| v.boxes.get(&n).map(|b| &b.0)).collect();
        if !here.is_empty() {
            // A region is mostly on a vehicle, or holds most of one.
            let on_one = |r: &BBox| here.iter().any(|t| r.intersection(t) >= 0.5 * r.area().min(t.area()));
            strays.extend(regions.iter().filter(|r| !on_one(r)).map(|r| (n, *r)));
        }
        let warmed = n >= motion.warmup_frames;
        if warmed && (n < first_vehicle || n > last_vehicle) {
            empty_road.0 += 1;
            empty_road.1 += regions.len() as u32;
            if !regions.is_empty() {
                empty_road.2.push(n);
            }
        }
        if detector_frames.contains(&n) {
            imgcodecs::imwrite(png(n).to_str().unwrap(), &frame, &Vector::new())?;
        }
        n += 1;
    }
    ensure!(n == total, "decoded {n} frames, the truth says {total}");

    println!(
        "{n} frames decoded; motion regions: MotionConfig::default() (learning rate {}, warm-up {} frames, analysis width {} px, \
         min area {}), at most {MAX_REGIONS}; lost = fully visible, no region with IoU >= {MOTION_IOU}",
        motion.learning_rate, motion.warmup_frames, motion.analysis_width, motion.min_area_fraction
    );
    println!("{:>3} {:<10} {:<10} {:<7} {:>8}  {:<16} {:<28} {:<16}", "id", "photo", "class", "lane", "stands", "driving in lost", "standing lost", "driving off lost");
    let mut not_lost = Vec::new();
    for (v, best) in vehicles.iter().zip(&best_iou) {
        let mut cells = Vec::new();
        for phase in 0..3 {
            let visible: Vec<u32> = v.fully_visible().filter(|&f| v.phase(f) == phase).collect();
            let lost: Vec<u32> = visible.iter().copied().filter(|f| best[f] < MOTION_IOU).collect();
            let mut cell = format!("{}/{}", lost.len(), visible.len());
            if phase == 1 {
                match lost.first() {
                    Some(f) => cell += &format!(" from +{} ({f})", f - v.stands.0),
                    None => not_lost.push(v.id),
                }
            }
            cells.push((cell, lost));
        }
        println!(
            "{:>3} {:<10} {:<10} {:<7} {:>8}  {:<16} {:<28} {:<16}",
            v.id, v.photo, v.class, v.lane, format!("{}-{}", v.stands.0, v.stands.1), cells[0].0, cells[1].0, cells[2].0
        );
        let all_lost: Vec<u32> = cells.iter().flat_map(|c| c.1.iter().copied()).collect();
        println!("      lost in frames {}", ranges(&all_lost));
    }
    println!(
        "empty road (frames {}-{} and {}-{}): {} regions in {} of {} frames{}",
        motion.warmup_frames, first_vehicle.saturating_sub(1), last_vehicle + 1, total - 1,
        empty_road.1, empty_road.2.len(), empty_road.0,
        if empty_road.2.is_empty() { String::new() } else { format!(": {}", ranges(&empty_road.2)) }
    );

    let stray_frames: Vec<u32> = strays.iter().map(|s| s.0).collect::<BTreeSet<_>>().into_iter().collect();
    println!("regions on no vehicle while vehicles are in view: {} in {} frames: {}", strays.len(), stray_frames.len(), ranges(&stray_frames));
    for (f, r) in strays.iter().take(10) {
        println!("      frame {f}: [{}, {}, {}, {}]", r.x, r.y, r.w, r.h);
    }

    // (b) The detector on the saved frames.
    let binary = root.join("target/release/cctv-agent");
    let Ok(meta) = std::fs::metadata(&binary) else {
        println!("detector: {} is missing; build it (cargo build --release) and run again", binary.display());
        std::fs::remove_dir_all(&dir)?;
        ensure!(not_lost.is_empty(), "motion never loses vehicles {not_lost:?} while they stand");
        return Ok(());
    };
    let built = meta.modified()?;
    for newer in [newer_than(&root.join("src"), built), newer_than(&model.with_extension("toml"), built)].into_iter().flatten() {
        println!("detector: warning: {} is newer than {}: the binary may be stale", newer.display(), binary.display());
    }
    let images: Vec<PathBuf> = detector_frames.iter().map(|&f| png(f)).collect();
    let answers = run_detector(&binary, &model, &images)?;
    // The detection (with a road class) for vehicle `v` in `frame`: the
    // best-scoring one of IoU >= DETECT_IOU (nms is per label: a car and a
    // truck box may both lie on the pickup), else the closest; IoU and it.
    let best_detection = |v: &Truth, frame: u32| -> Option<(f32, &Detection)> {
        let (t, _) = v.boxes.get(&frame)?;
        let vehicles = answers[&png(frame)].iter().filter(|d| d.road_class.is_some()).map(|d| (d.bbox.iou(t), d));
        let found = vehicles.clone().filter(|(iou, _)| *iou >= DETECT_IOU).max_by(|a, b| a.1.score.total_cmp(&b.1.score));
        found.or_else(|| vehicles.filter(|(iou, _)| *iou > 0.0).max_by(|a, b| a.0.total_cmp(&b.0)))
    };
    println!(
        "\ndetector: {} detect --model {} on {} frames; found = a vehicle detection with IoU >= {DETECT_IOU}; \
         motion = best region IoU in that frame",
        binary.strip_prefix(&root).unwrap_or(&binary).display(), model.strip_prefix(&root).unwrap_or(&model).display(), images.len()
    );
    for (v, frames) in vehicles.iter().zip(&picked) {
        let found = frames.iter().filter(|(f, _)| best_detection(v, *f).is_some_and(|(iou, _)| iou >= DETECT_IOU)).count();
        println!("{:>3} {:<10} {:<10} {:<7} found in {found} of {}", v.id, v.photo, v.class, v.lane, frames.len());
        for &(f, what) in frames {
            let answer = match best_detection(v, f) {
                Some((iou, d)) => format!(
                    "{:<5} IoU {iou:.2} {} -> {} {:.2}{}",
                    if iou >= DETECT_IOU { "found" } else { "MISS" },
                    d.label,
                    d.road_class.as_deref().unwrap_or("-"),
                    d.score,
                    if iou >= DETECT_IOU && d.road_class.as_deref() != Some(v.class.as_str()) { " (not the truth's class)" } else { "" }
                ),
                None => "MISS  no vehicle detection overlaps it".into(),
            };
            println!("      frame {f:>3} {what:<21} motion IoU {:.2}  detector {answer}", best_iou[(v.id - 1) as usize][&f]);
        }
    }
    if every > 0 {
        let which = if every == 1 { "every frame".to_string() } else { format!("every {every}th frame") };
        println!("\ndetector on {which}, fully visible vehicles: found / frames (of them with the truth's road class), mean > lowest score when found");
        println!("{:>3} {:<10} {:<10} {:<7} {:<26} {:<26} {:<26}", "id", "photo", "class", "lane", PHASES[0], PHASES[1], PHASES[2]);
        for v in &vehicles {
            let mut cells = Vec::new();
            for phase in 0..3 {
                let frames: Vec<u32> = v.fully_visible().filter(|f| f % every == 0 && v.phase(*f) == phase).collect();
                let hits: Vec<&Detection> = frames
                    .iter()
                    .filter_map(|&f| best_detection(v, f).filter(|(iou, _)| *iou >= DETECT_IOU).map(|(_, d)| d))
                    .collect();
                let right_class = hits.iter().filter(|d| d.road_class.as_deref() == Some(v.class.as_str())).count();
                let mean = hits.iter().map(|d| d.score).sum::<f64>() / hits.len().max(1) as f64;
                let min = hits.iter().map(|d| d.score).fold(f64::NAN, f64::min);
                cells.push(format!("{}/{} ({right_class}) {mean:.2} >{min:.2}", hits.len(), frames.len()));
            }
            println!("{:>3} {:<10} {:<10} {:<7} {:<26} {:<26} {:<26}", v.id, v.photo, v.class, v.lane, cells[0], cells[1], cells[2]);
        }
        let empty: Vec<u32> = detector_frames.iter().copied().filter(|&f| f < first_vehicle || f > last_vehicle).collect();
        let false_alarms: usize = empty.iter().map(|&f| answers[&png(f)].iter().filter(|d| d.road_class.is_some()).count()).sum();
        println!("empty-road frames: {false_alarms} vehicle detections in {} frames", empty.len());
    }
    std::fs::remove_dir_all(&dir)?;
    ensure!(not_lost.is_empty(), "motion never loses vehicles {not_lost:?} while they stand");
    println!("\nmotion loses every vehicle while it stands");
    Ok(())
}
