//! Checks `media/highway.mp4` against its truth the way the agent sees it:
//! decodes it with OpenCV, runs the motion region finder (default
//! `MotionConfig`, up to 16 regions) frame by frame and matches its regions
//! to the truth's boxes. Prints, per vehicle, the share of its fully visible
//! frames found as one region (IoU >= 0.5), the frames it was merged with
//! another vehicle into one region or split into several, and the regions
//! that match no vehicle.
//!
//! `cargo run --release --example check_highway_clip [-- --crops DIR]`:
//! with `--crops`, each vehicle's region in the middle of its found frames
//! (with `--every N`: in every Nth of them) is written to DIR as a PNG, for
//! `cctv-agent classify DIR/*.png`.

use anyhow::{ensure, Context, Result};
use cctv_agent::config::{MotionConfig, RegionsConfig};
use cctv_agent::pipeline::regions::RegionFinder;
use cctv_agent::track::geometry::BBox;
use opencv::core::{Mat, Rect, Vector};
use opencv::prelude::*;
use opencv::{imgcodecs, videoio};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

const MAX_REGIONS: usize = 16;
const MIN_IOU: f32 = 0.5;

#[derive(Default)]
struct Tally {
    visible: Vec<u32>,
    found: Vec<u32>,
    merged: Vec<u32>,
    split: Vec<u32>,
    /// Fully visible, not found: frame and the best IoU any region had.
    missed: Vec<(u32, f32)>,
    /// Frame and region of each find, for the crops.
    finds: Vec<(u32, Rect)>,
    iou_sum: f32,
}

fn bbox(r: &Rect) -> BBox {
    BBox::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32)
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

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (crops, every) = match args.as_slice() {
        [] => (None, 0),
        [flag, dir] if flag == "--crops" => (Some(PathBuf::from(dir)), 0),
        [flag, dir, every, n] if flag == "--crops" && every == "--every" => (Some(PathBuf::from(dir)), n.parse()?),
        _ => anyhow::bail!("usage: check_highway_clip [--crops DIR [--every N]]"),
    };
    let media = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("media");
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(media.join("highway.truth.json"))?)?;
    let vehicles = truth["vehicles"].as_array().context("vehicles")?;
    // frame -> [(vehicle index, box, fully visible)]
    let mut boxes: BTreeMap<u32, Vec<(usize, BBox, bool)>> = BTreeMap::new();
    for (i, v) in vehicles.iter().enumerate() {
        for f in v["frames"].as_array().context("frames")? {
            let b: Vec<f32> = f["bbox"].as_array().unwrap().iter().map(|n| n.as_f64().unwrap() as f32).collect();
            let entry = (i, BBox::new(b[0], b[1], b[2], b[3]), f["fully_visible"].as_bool().unwrap());
            boxes.entry(f["frame"].as_u64().unwrap() as u32).or_default().push(entry);
        }
    }

    let clip = media.join(truth["clip"].as_str().context("clip")?);
    let mut capture = videoio::VideoCapture::from_file(clip.to_str().unwrap(), videoio::CAP_ANY)?;
    ensure!(capture.is_opened()?, "cannot open {}", clip.display());
    let mut finder = RegionFinder::new(&RegionsConfig::Motion, &MotionConfig::default())?;
    let mut tallies: Vec<Tally> = vehicles.iter().map(|_| Tally::default()).collect();
    let mut strays: Vec<(u32, Rect)> = Vec::new();
    let mut frame = Mat::default();
    let mut n = 0u32;
    while capture.read(&mut frame)? {
        let regions = finder.find(&frame, MAX_REGIONS)?;
        let here = boxes.get(&n).map(Vec::as_slice).unwrap_or(&[]);
        for r in &regions {
            let rb = bbox(r);
            // A region is mostly on a vehicle, or holds most of one.
            let on_one = here.iter().any(|(_, t, _)| rb.intersection(t) >= 0.5 * rb.area().min(t.area()));
            if !on_one {
                strays.push((n, *r));
            }
            let held: Vec<usize> = here.iter().filter(|(_, t, _)| rb.intersection(t) >= 0.5 * t.area()).map(|e| e.0).collect();
            if held.len() >= 2 {
                for &i in &held {
                    tallies[i].merged.push(n);
                }
            }
        }
        for &(i, t, fully) in here {
            if !fully {
                continue;
            }
            let tally = &mut tallies[i];
            tally.visible.push(n);
            let best = regions.iter().map(|r| (bbox(r).iou(&t), *r)).max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((iou, r)) if iou >= MIN_IOU => {
                    tally.found.push(n);
                    tally.finds.push((n, r));
                    tally.iou_sum += iou;
                }
                _ => tally.missed.push((n, best.map_or(0.0, |b| b.0))),
            }
            let parts = regions.iter().filter(|r| bbox(r).intersection(&t) >= 0.5 * bbox(r).area()).count();
            if parts >= 2 {
                tally.split.push(n);
            }
        }
        n += 1;
    }
    ensure!(n == truth["frames"].as_u64().unwrap() as u32, "decoded {n} frames, the truth says {}", truth["frames"]);

    println!("{n} frames decoded; regions: motion, MotionConfig::default(), at most {MAX_REGIONS}; found = one region with IoU >= {MIN_IOU}");
    println!("{:>3} {:<10} {:<7} {:<8} {:>5} {:>5} {:>6} {:>4} {:>6} {:>5}  missed frames (best IoU)", "id", "class", "lane", "dir", "full", "found", "share", "IoU", "merged", "split");
    for (v, t) in vehicles.iter().zip(&tallies) {
        let share = 100.0 * t.found.len() as f64 / t.visible.len().max(1) as f64;
        let missed: Vec<String> = t.missed.iter().map(|(f, iou)| format!("{f}({iou:.2})")).collect();
        println!(
            "{:>3} {:<10} {:<7} {:<8} {:>5} {:>5} {:>5.1}% {:>4.2} {:>6} {:>5}  {}",
            v["id"].as_u64().unwrap(), v["class"].as_str().unwrap(), v["lane"].as_str().unwrap(), v["direction"].as_str().unwrap(),
            t.visible.len(), t.found.len(), share, t.iou_sum / t.found.len().max(1) as f32, t.merged.len(), t.split.len(), missed.join(" ")
        );
        if !t.merged.is_empty() || !t.split.is_empty() {
            println!("      merged in {}; split in {}", ranges(&t.merged), ranges(&t.split));
        }
        if let Some(stopped) = v.get("stopped") {
            let (from, to) = (stopped["from"].as_u64().unwrap() as u32, stopped["to"].as_u64().unwrap() as u32);
            let standing: Vec<u32> = (from..=to).collect();
            let found: Vec<u32> = t.found.iter().copied().filter(|f| (from..=to).contains(f)).collect();
            let lost: Vec<u32> = standing.iter().copied().filter(|f| !found.contains(f)).collect();
            println!(
                "      stands still in frames {from}-{to} ({} frames): found in {} of them; not found in {}{}",
                standing.len(), found.len(), ranges(&lost),
                lost.first().map_or(String::new(), |f| format!(" (first miss {} frames after it stopped)", f - from)),
            );
        }
    }
    let stray_frames: Vec<u32> = strays.iter().map(|s| s.0).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    println!("regions matching no vehicle: {} in {} frames: {}", strays.len(), stray_frames.len(), ranges(&stray_frames));
    for (f, r) in strays.iter().take(20) {
        println!("      frame {f}: [{}, {}, {}, {}]", r.x, r.y, r.width, r.height);
    }

    let short: Vec<String> = vehicles
        .iter()
        .zip(&tallies)
        .filter(|(_, t)| t.found.len() * 10 < t.visible.len() * 9)
        .map(|(v, _)| v["id"].to_string())
        .collect();

    if let Some(dir) = crops {
        std::fs::create_dir_all(&dir)?;
        // frame -> [(crop file, region)], read in a second pass.
        let mut wanted: BTreeMap<u32, Vec<(PathBuf, Rect)>> = BTreeMap::new();
        for (v, t) in vehicles.iter().zip(&tallies) {
            let picked: Vec<&(u32, Rect)> =
                if every == 0 { t.finds.get(t.finds.len() / 2).into_iter().collect() } else { t.finds.iter().step_by(every).collect() };
            for &(f, r) in picked {
                let path = dir.join(format!("v{:02}_{}_f{f:03}.png", v["id"].as_u64().unwrap(), v["class"].as_str().unwrap()));
                wanted.entry(f).or_default().push((path, r));
            }
        }
        let mut capture = videoio::VideoCapture::from_file(clip.to_str().unwrap(), videoio::CAP_ANY)?;
        let mut n = 0u32;
        while capture.read(&mut frame)? {
            for (path, r) in wanted.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
                let crop = Mat::roi(&frame, *r)?.try_clone()?;
                imgcodecs::imwrite(path.to_str().unwrap(), &crop, &Vector::new())?;
            }
            n += 1;
        }
        println!("crops of the found regions in {}", dir.display());
    }
    ensure!(short.is_empty(), "found as one region on fewer than 90 % of their fully visible frames: vehicles {}", short.join(", "));
    println!("every vehicle found as one region on at least 90 % of its fully visible frames");
    Ok(())
}
