//! Builds `media/road.mp4`, a CCTV-like clip with known ground truth, and
//! `media/road.truth.json` beside it: real vehicle photographs
//! (`media/sources/`) moving across a fixed, synthetic two-lane road, seen
//! from a fixed camera. Encoded with ffmpeg (libx264). Deterministic.
//!
//! Run with `make clip`. The clip and its truth are committed; rerun only
//! when changing the scene.

mod scene;

use scene::{Marking, Road, Scale, DARK_ASPHALT, FPS, LEAD_IN_FRAMES};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 400;
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
    // Two lanes between grass verges, a dashed centre line.
    let markings = vec![Marking { rows: 201..=205, dash: Some(40) }];
    let road = Road { width: WIDTH, height: HEIGHT, asphalt: 30..=376, markings, asphalt_colour: DARK_ASPHALT };
    let background = road.draw();
    let sprites: Vec<_> = ACTORS.iter().map(|a| scene::sprite(a.file, Scale::Width(VEHICLE_WIDTH))).collect();

    let travel_frames = |w: u32| ((WIDTH + w) as i32 / SPEED_PX + 1) as u32;
    let last_entry = LEAD_IN_FRAMES + SPACING_FRAMES * (ACTORS.len() as u32 - 1);
    let total = last_entry + travel_frames(VEHICLE_WIDTH) + 10;

    let mut encoder = scene::Encoder::start(scene::root().join("media/road.mp4"), WIDTH, HEIGHT, 20, 2 * FPS);
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
            let (bbox, fully_visible) = scene::draw(&mut canvas, sprite, x, y);
            truth[i]["frames"].as_array_mut().unwrap().push(serde_json::json!({
                "frame": frame, "bbox": bbox, "fully_visible": fully_visible
            }));
        }
        encoder.frame(&canvas);
    }
    let out = encoder.finish();
    let doc = serde_json::json!({
        "clip": "road.mp4", "width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": total,
        "note": "frame = 0-based decode index; bbox = [x, y, w, h] of the object's rectangle, clipped to the frame",
        "objects": truth,
    });
    scene::write_truth(&scene::root().join("media/road.truth.json"), &doc);
    println!("wrote {} ({total} frames) and its truth", out.display());
}
