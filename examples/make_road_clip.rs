//! Builds `media/road.mp4`, a CCTV-like clip with known ground truth, and
//! `media/road.truth.json` beside it: real vehicle photographs
//! (`media/sources/`) moving across a fixed, synthetic two-lane road, seen
//! from a fixed camera. Encoded with ffmpeg (libx264). Deterministic.
//!
//! Run with `make clip`. The clip and its truth are committed; rerun only
//! when changing the scene.

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};
use std::io::Write;
use std::process::{Command, Stdio};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 400;
const FPS: u32 = 25;
/// Empty road first, so a background model can learn it.
const LEAD_IN_FRAMES: u32 = 20;
const SPEED_PX: i32 = 9;
const VEHICLE_WIDTH: u32 = 210;
/// Frames between one object's entry and the next one's.
const SPACING_FRAMES: u32 = 45;

struct Actor {
    file: &'static str,
    class: &'static str,
    /// Lane 0 drives left to right (upper lane), lane 1 right to left.
    lane: usize,
}

const ACTORS: &[Actor] = &[
    Actor { file: "crop_scenetext01_car.png", class: "car", lane: 0 },
    Actor { file: "crop_dog_truck.png", class: "car", lane: 1 }, // a pickup: see models/road_taxonomy.toml
    Actor { file: "motorcycle_left.png", class: "motorcycle", lane: 0 },
    Actor { file: "crop_bikes_f090_van.png", class: "van", lane: 1 },
    Actor { file: "horses.jpg", class: "none", lane: 0 },
];
const LANE_CENTRE_Y: [i32; 2] = [118, 288];

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let background = road();
    let sprites: Vec<RgbImage> = ACTORS
        .iter()
        .map(|a| {
            let img = image::open(root.join("media/sources").join(a.file)).expect("source photo").to_rgb8();
            let h = (img.height() as f64 * VEHICLE_WIDTH as f64 / img.width() as f64).round() as u32;
            // Not mirrored for the other lane: the classifier's answer on a
            // borderline photo (the pickup) changes with a mirror image.
            imageops::resize(&img, VEHICLE_WIDTH, h, FilterType::Triangle)
        })
        .collect();

    let travel_frames = |w: u32| ((WIDTH + w) as i32 / SPEED_PX + 1) as u32;
    let last_entry = LEAD_IN_FRAMES + SPACING_FRAMES * (ACTORS.len() as u32 - 1);
    let total = last_entry + travel_frames(VEHICLE_WIDTH) + 10;

    let out = root.join("media/road.mp4");
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s"])
        .arg(format!("{WIDTH}x{HEIGHT}"))
        .args(["-r", &FPS.to_string(), "-i", "-", "-c:v", "libx264", "-preset", "medium", "-crf", "20"])
        .args(["-threads", "1", "-g", "50", "-pix_fmt", "yuv420p", "-movflags", "+faststart"])
        .arg(&out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("ffmpeg (apt-get install ffmpeg)");
    let mut stdin = ffmpeg.stdin.take().unwrap();
    let mut truth: Vec<serde_json::Value> = ACTORS
        .iter()
        .map(|a| serde_json::json!({"class": a.class, "source": a.file, "lane": a.lane, "frames": []}))
        .collect();

    for frame in 0..total {
        let mut canvas = background.clone();
        for (i, (actor, sprite)) in ACTORS.iter().zip(&sprites).enumerate() {
            let entry = LEAD_IN_FRAMES + SPACING_FRAMES * i as u32;
            if frame < entry {
                continue;
            }
            let travelled = (frame - entry) as i32 * SPEED_PX;
            let w = sprite.width() as i32;
            let x = if actor.lane == 0 { -w + travelled } else { WIDTH as i32 - travelled };
            if x >= WIDTH as i32 || x + w <= 0 {
                continue;
            }
            let y = LANE_CENTRE_Y[actor.lane] - sprite.height() as i32 / 2;
            imageops::overlay(&mut canvas, sprite, x as i64, y as i64);
            let (x0, x1) = (x.max(0), (x + w).min(WIDTH as i32));
            let fully_visible = x >= 0 && x + w <= WIDTH as i32;
            truth[i]["frames"].as_array_mut().unwrap().push(serde_json::json!({
                "frame": frame, "bbox": [x0, y, x1 - x0, sprite.height()], "fully_visible": fully_visible
            }));
        }
        stdin.write_all(canvas.as_raw()).expect("writing to ffmpeg");
    }
    drop(stdin);
    assert!(ffmpeg.wait().unwrap().success(), "ffmpeg failed");
    let doc = serde_json::json!({
        "clip": "road.mp4", "width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": total,
        "note": "frame = 0-based decode index; bbox = [x, y, w, h] of the object's rectangle, clipped to the frame",
        "objects": truth,
    });
    std::fs::write(root.join("media/road.truth.json"), serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    println!("wrote {} ({total} frames) and its truth", out.display());
}

/// A fixed two-lane road seen from above the verge: textured asphalt, grass
/// verges, edge lines and a dashed centre line. Deterministic noise.
fn road() -> RgbImage {
    let mut seed: u32 = 0x2545_f491;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed % 21) as i32 - 10
    };
    RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
        let n = noise();
        let shade = |base: [i32; 3]| Rgb(base.map(|c| (c + n).clamp(0, 255) as u8));
        let y = y as i32;
        if !(30..=376).contains(&y) {
            shade([70, 110, 55]) // grass verge
        } else if (34..=38).contains(&y) || (368..=372).contains(&y) {
            shade([215, 215, 205]) // edge lines
        } else if (201..=205).contains(&y) && (x / 40) % 2 == 0 {
            shade([225, 225, 215]) // dashed centre line
        } else {
            shade([92, 92, 96]) // asphalt
        }
    })
}
