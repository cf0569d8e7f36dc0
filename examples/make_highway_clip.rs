//! Builds `media/highway.mp4` and `media/highway.truth.json`: the vehicle
//! photographs of `media/sources/` driven along a synthetic four-lane road
//! (two lanes each way) seen from a fixed camera, for the tracker's tests
//! (issue #13): traffic in adjacent lanes at once, both directions, two
//! vehicles close behind each other, one that stops (1.6 s) and drives on,
//! speeds from 6 to 14 px/frame. The truth gives lanes, a counting line, a
//! ground calibration and every vehicle's boxes, crossing, speed and stop.
//! Encoded with ffmpeg (libx264). Deterministic.
//!
//! Run with `make clip`; check what the motion region finder makes of it
//! with `cargo run --release --example check_highway_clip`.

mod scene;

use image::RgbImage;
use scene::{Marking, Road, Scale, FPS, LEAD_IN_FRAMES};
use serde_json::json;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
/// Four lanes of 112 px between the edge lines, top to bottom.
const LANE_TOP: i32 = 46;
const LANE_HEIGHT: i32 = 112;
const LANES: [&str; 4] = ["east-1", "east-2", "west-1", "west-2"];
/// A lane is 3.5 m wide: 32 px to the metre, along and across the road.
const PX_PER_METRE: f64 = LANE_HEIGHT as f64 / 3.5;
/// The counting line: x = WIDTH / 2, drawn top to bottom.
const LINE_X: i32 = WIDTH as i32 / 2;
/// Frames of empty road after the last vehicle has gone.
const TAIL_FRAMES: u32 = 10;
const LIGHT_ASPHALT: [i32; 3] = [118, 118, 122];
/// Smallest gap between two vehicles in one lane, but for the close pair.
const MIN_GAP: i32 = 100;
/// The close pair's gap: 10 px at the motion finder's 320-px analysis width,
/// more than its 5×5 closing bridges.
const CLOSE_GAP: i32 = 30;

// Photo, road class, size: the two photos the bundled classifier names the
// same in every frame of the clip (car 100 %, motorcycle 100 % of the crops).
// The pickup and the van are left out: at lane size their crops flip between
// car and van (pickup: minibus) and between van, truck, tram and none with a
// few pixels of margin or a different encode, so no truth class would hold.
const CAR: (&str, &str, Scale) = ("crop_scenetext01_car.png", "car", Scale::Width(150));
const MOTORCYCLE: (&str, &str, Scale) = ("motorcycle_left.png", "motorcycle", Scale::Width(92));

/// Slows down to stand with its bottom-centre at about `at_x`, stands,
/// drives on: braking and accelerating linearly over the frames given,
/// standing still for `stand_frames` frame intervals (`stand_frames + 1` frames).
struct Stop {
    at_x: f64,
    brake_frames: u32,
    stand_frames: u32,
    accel_frames: u32,
}

struct Vehicle {
    photo: (&'static str, &'static str, Scale),
    /// Index into LANES; lanes 0 and 1 drive left to right, 2 and 3 right to left.
    lane: usize,
    /// First frame it shows (its front `speed` px into the frame), or for
    /// a follower the frame its leader starts.
    start: u32,
    /// px per frame.
    speed: f64,
    /// Drives `CLOSE_GAP` behind this vehicle (an index), at its speed.
    follows: Option<usize>,
    stop: Option<Stop>,
}

const fn drive(photo: (&'static str, &'static str, Scale), lane: usize, start: u32, speed: f64) -> Vehicle {
    Vehicle { photo, lane, start, speed, follows: None, stop: None }
}

fn vehicles() -> Vec<Vehicle> {
    vec![
        // Opposite directions side by side (east-2 / west-1), overtaken in the next lane.
        drive(CAR, 1, LEAD_IN_FRAMES, 10.0),
        drive(CAR, 2, LEAD_IN_FRAMES + 4, 8.0),
        drive(MOTORCYCLE, 0, 40, 14.0),
        drive(MOTORCYCLE, 3, 50, 12.0),
        // The close pair.
        drive(CAR, 0, 120, 9.0),
        Vehicle { follows: Some(4), ..drive(CAR, 0, 120, 9.0) },
        // The one that stops, passed by traffic in the lanes beside it. It
        // stands 1.6 s: MOG2 at the agent's default learning rate (0.002)
        // takes a still object into the background after ~53 frames
        // (0.998^n < 0.9); standing 3 s it is lost from ~47 frames on.
        Vehicle {
            stop: Some(Stop { at_x: 620.0, brake_frames: 10, stand_frames: 40, accel_frames: 10 }),
            ..drive(CAR, 3, 150, 10.0)
        },
        drive(CAR, 1, 175, 6.0),
        drive(MOTORCYCLE, 2, 190, 7.0),
        drive(CAR, 0, 290, 13.0),
        drive(CAR, 3, 320, 11.0),
        drive(MOTORCYCLE, 1, 340, 14.0),
    ]
}

fn rightward(lane: usize) -> bool {
    lane < 2
}

/// How far its front has come into the frame (px), per frame from `start`
/// until it has gone; the frames it stands still, if it stops.
struct Path {
    start: u32,
    front: Vec<f64>,
    stands: Option<(u32, u32)>,
}

fn path(all: &[Vehicle], sprite_widths: &[i32], me: usize) -> Path {
    let v = &all[me];
    let w = sprite_widths[me] as f64;
    let mut front = match v.follows {
        // Same start and speed as the leader, CLOSE_GAP behind its rear.
        Some(leader) => vec![all[leader].speed - sprite_widths[leader] as f64 - CLOSE_GAP as f64],
        None => vec![v.speed],
    };
    // Speed profile: cruise, brake linearly to 0, stand, accelerate back.
    let speed_at = |k: u32, brake_at: u32, s: &Stop| {
        let j = k.saturating_sub(brake_at);
        let (brake, stand, accel) = (s.brake_frames, s.stand_frames, s.accel_frames);
        if j == 0 || j >= brake + stand + accel {
            v.speed
        } else if j < brake {
            v.speed * (brake - j) as f64 / brake as f64
        } else if j < brake + stand {
            0.0
        } else {
            v.speed * (j + 1 - brake - stand) as f64 / accel as f64
        }
    };
    let brake_at = v.stop.as_ref().map(|s| {
        let front_at_stop = if rightward(v.lane) { s.at_x + w / 2.0 } else { WIDTH as f64 - s.at_x + w / 2.0 };
        let braking = v.speed * (s.brake_frames as f64 - 1.0) / 2.0;
        ((front_at_stop - front[0] - braking) / v.speed).round() as u32
    });
    let mut still = Vec::new();
    while *front.last().unwrap() < WIDTH as f64 + w {
        let k = front.len() as u32;
        let speed = match (&v.stop, brake_at) {
            (Some(s), Some(b)) => speed_at(k, b, s),
            _ => v.speed,
        };
        if speed == 0.0 {
            still.push(v.start + k);
        }
        front.push(front.last().unwrap() + speed);
    }
    let stands = (!still.is_empty()).then(|| (still[0] - 1, *still.last().unwrap()));
    Path { start: v.start, front, stands }
}

fn main() {
    let markings = vec![
        // Dashed between the lanes of one direction, a solid double line between the directions.
        Marking { rows: LANE_TOP + LANE_HEIGHT - 2..=LANE_TOP + LANE_HEIGHT + 2, dash: Some(40) },
        Marking { rows: LANE_TOP + 2 * LANE_HEIGHT - 6..=LANE_TOP + 2 * LANE_HEIGHT - 4, dash: None },
        Marking { rows: LANE_TOP + 2 * LANE_HEIGHT + 4..=LANE_TOP + 2 * LANE_HEIGHT + 6, dash: None },
        Marking { rows: LANE_TOP + 3 * LANE_HEIGHT - 2..=LANE_TOP + 3 * LANE_HEIGHT + 2, dash: Some(40) },
    ];
    let lanes_bottom = LANE_TOP + 4 * LANE_HEIGHT;
    let asphalt = LANE_TOP - 10..=lanes_bottom + 10;
    // Lighter than the road clip's: on darker asphalt the motorcycle photo's
    // mid-grey parts are taken for road and its blob falls apart.
    let road = Road { width: WIDTH, height: HEIGHT, asphalt, markings, asphalt_colour: LIGHT_ASPHALT };
    let background = road.draw();

    let vehicles = vehicles();
    let sprites: Vec<RgbImage> = vehicles.iter().map(|v| scene::sprite(v.photo.0, v.photo.2)).collect();
    for (v, s) in vehicles.iter().zip(&sprites) {
        // Centred in its lane: at least CLOSE_GAP from a vehicle in the next lane.
        assert!(s.height() as i32 <= LANE_HEIGHT - CLOSE_GAP, "{} is too tall for a lane", v.photo.0);
    }
    let sprite_widths: Vec<i32> = sprites.iter().map(|s| s.width() as i32).collect();
    let paths: Vec<Path> = (0..vehicles.len()).map(|i| path(&vehicles, &sprite_widths, i)).collect();
    let total = paths.iter().map(|p| p.start + p.front.len() as u32).max().unwrap() + TAIL_FRAMES;

    // Where each vehicle is, unclipped: its [x, y, w, h] if any of it shows.
    let place = |i: usize, frame: u32| -> Option<[i32; 4]> {
        let p = &paths[i];
        let front = *p.front.get(frame.checked_sub(p.start)? as usize)?;
        let (w, h) = (sprites[i].width() as i32, sprites[i].height() as i32);
        let front = front.round() as i32;
        let x = if rightward(vehicles[i].lane) { front - w } else { WIDTH as i32 - front };
        let y = LANE_TOP + LANE_HEIGHT * vehicles[i].lane as i32 + LANE_HEIGHT / 2 - h / 2;
        (x < WIDTH as i32 && x + w > 0).then_some([x, y, w, h])
    };

    // A key frame every 10 s: the static road noise makes key frames dear.
    let mut encoder = scene::Encoder::start(scene::root().join("media/highway.mp4"), WIDTH, HEIGHT, 20, 10 * FPS);
    let mut frames: Vec<Vec<serde_json::Value>> = vec![Vec::new(); vehicles.len()];
    let mut seen: Vec<Vec<(u32, [i32; 4])>> = vec![Vec::new(); vehicles.len()];
    for frame in 0..total {
        let mut canvas = background.clone();
        let shown: Vec<(usize, [i32; 4])> = (0..vehicles.len()).filter_map(|i| Some((i, place(i, frame)?))).collect();
        for (n, &(i, a)) in shown.iter().enumerate() {
            for &(j, b) in &shown[n + 1..] {
                if vehicles[i].lane == vehicles[j].lane {
                    let gap = (b[0] - (a[0] + a[2])).max(a[0] - (b[0] + b[2]));
                    let close_pair = vehicles[i].follows == Some(j) || vehicles[j].follows == Some(i);
                    let needed = if close_pair { CLOSE_GAP } else { MIN_GAP };
                    assert!(gap >= needed, "frame {frame}: vehicles {} and {} are {gap} px apart", i + 1, j + 1);
                }
            }
            let (bbox, fully_visible) = scene::draw(&mut canvas, &sprites[i], a[0], a[1]);
            frames[i].push(json!({"frame": frame, "bbox": bbox, "fully_visible": fully_visible}));
            seen[i].push((frame, a));
        }
        encoder.frame(&canvas);
    }
    let out = encoder.finish();

    let bottom_centre = |b: &[i32; 4]| (b[0] as f64 + b[2] as f64 / 2.0, (b[1] + b[3]) as f64);
    let mut truth = Vec::new();
    for (i, v) in vehicles.iter().enumerate() {
        let track = &seen[i];
        let (first, last) = (track.first().unwrap(), track.last().unwrap());
        let (x0, x1) = (bottom_centre(&first.1).0, bottom_centre(&last.1).0);
        let seconds = (last.0 - first.0) as f64 / FPS as f64;
        let speed_kmh = (x1 - x0).abs() / PX_PER_METRE / seconds * 3.6;
        let rightward = rightward(v.lane);
        let crossing = track.iter().find(|(_, b)| {
            let x = bottom_centre(b).0;
            if rightward { x > LINE_X as f64 } else { x < LINE_X as f64 }
        });
        let direction = if rightward { "forward" } else { "backward" };
        let crossings: Vec<_> =
            crossing.iter().map(|(frame, _)| json!({"line": "gantry", "frame": frame, "direction": direction})).collect();
        assert_eq!(crossings.len(), 1, "vehicle {} crosses the line once", i + 1);
        let mut vehicle = json!({
            "id": i + 1, "class": v.photo.1, "source": v.photo.0, "lane": LANES[v.lane], "direction": direction,
            "speed_kmh": (speed_kmh * 10.0).round() / 10.0, "crossings": crossings, "stops": v.stop.is_some(),
        });
        if let Some((from, to)) = paths[i].stands {
            let bbox = track.iter().find(|t| t.0 == from).expect("stands in view").1;
            vehicle["stopped"] = json!({"from": from, "to": to, "bbox": bbox});
        }
        if let Some(leader) = v.follows {
            vehicle["follows"] = json!({"vehicle": leader + 1, "gap_px": CLOSE_GAP});
        }
        vehicle["frames"] = json!(frames[i]);
        truth.push(vehicle);
    }

    let lanes: Vec<_> = LANES
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (top, bottom) = (LANE_TOP + LANE_HEIGHT * i as i32, LANE_TOP + LANE_HEIGHT * (i as i32 + 1));
            json!({"id": id, "polygon": [[0, top], [WIDTH, top], [WIDTH, bottom], [0, bottom]]})
        })
        .collect();
    let (w_m, h_m) = (WIDTH as f64 / PX_PER_METRE, (4 * LANE_HEIGHT) as f64 / PX_PER_METRE);
    let doc = json!({
        "clip": "highway.mp4", "width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": total,
        "note": concat!(
            "frame = 0-based decode index. lanes: id and polygon [[x, y], ...] in image pixels, top to bottom; ",
            "east-* drive left to right, west-* right to left. lines: id, from, to in pixels; a vehicle moving ",
            "right crosses a top-to-bottom line forward. calibration: four image points and the same points on ",
            "the ground in metres (x along the road, y across it; 32 px per metre, the camera looks straight down). ",
            "vehicles: id; class = expected road class (models/road_taxonomy.toml); source = the photo in ",
            "media/sources; lane = lane id; direction = relative to the first line; speed_kmh = mean ground speed ",
            "from its first to its last frame in view (bottom-centre of the unclipped box); crossings: line, frame ",
            "= first frame whose unclipped box bottom-centre is past the line, direction; stops = it stands still ",
            "in view, then stopped = {from, to, bbox}: the frames it stands still (inclusive) and its box there; ",
            "follows = {vehicle, gap_px}: it drives that close behind that vehicle, same lane and speed; frames: ",
            "{frame, bbox = [x, y, w, h] clipped to the frame, fully_visible} for every frame any of it shows. ",
            "Made by examples/make_highway_clip.rs."
        ),
        "lanes": lanes,
        "lines": [{"id": "gantry", "from": [LINE_X, 0], "to": [LINE_X, HEIGHT]}],
        "calibration": {
            "image": [[0, LANE_TOP], [WIDTH as i32, LANE_TOP], [WIDTH as i32, lanes_bottom], [0, lanes_bottom]],
            "ground": [[0.0, 0.0], [w_m, 0.0], [w_m, h_m], [0.0, h_m]],
        },
        "vehicles": truth,
    });
    scene::write_truth(&scene::root().join("media/highway.truth.json"), &doc);
    println!("wrote {} ({total} frames) and its truth", out.display());
}
