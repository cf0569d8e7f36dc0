//! Builds `media/queue.mp4` and `media/queue.truth.json`: a queue at a red
//! light, for what motion regions miss. The vehicle photographs of
//! `media/sources/` drive in from the left in both lanes of a one-way,
//! two-lane road, brake and queue behind each other at a stop line, stand
//! completely still for at least 6 s (long enough for the agent's MOG2
//! background, learning rate 0.002, to take them in), then drive off one after
//! the other across a counting line beyond the stop line and leave the frame.
//! Empty road for 2 s before the first vehicle and after the last. The truth
//! gives the lanes, the counting line, the stop line and its queue zone, a
//! ground calibration, every vehicle's boxes, the frames it stands still and
//! its line crossing. Encoded with ffmpeg (libx264). Deterministic.
//!
//! `cargo run --release --example make_queue_clip`; then
//! `cargo run --release --example check_queue_clip` prints where the motion
//! region finder and the detector lose the vehicles.

mod scene;

use image::RgbImage;
use scene::{Marking, Road, Scale, FPS};
use serde_json::json;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
/// Two lanes of 175 px between the edge lines, both driving left to right.
const LANE_TOP: i32 = 95;
const LANE_HEIGHT: i32 = 175;
const LANES: [&str; 2] = ["east-1", "east-2"];
/// A lane is 3.5 m wide: 50 px to the metre, along and across the road.
const PX_PER_METRE: f64 = LANE_HEIGHT as f64 / 3.5;
/// The stop line: 8 px of paint across both lanes from this column on.
const STOP_X: i32 = 660;
const STOP_LINE_WIDTH: i32 = 8;
/// A queue's first vehicle stands with its front this far before the stop line.
const STOP_MARGIN: i32 = 10;
/// The counting line, x = LINE_X top to bottom: beyond the stop line, and
/// beyond the bottom-centre of every standing vehicle.
const LINE_X: i32 = 800;
/// Empty road before the first vehicle (the motion model's warm-up, then a
/// stretch of empty road) and after the last has gone: 2 s each.
const LEAD_IN_FRAMES: u32 = 2 * FPS;
const TAIL_FRAMES: u32 = 2 * FPS;
/// Between two queued vehicles: 12 px at the motion finder's 320-px analysis
/// width, and apart for a detector.
const QUEUE_GAP: i32 = 36;
/// Smallest gap between vehicles in the two lanes (each centred in its lane).
const LANE_CLEARANCE: i32 = 30;
/// px per frame driving in (18 km/h) and driving off (21.6 km/h).
const SPEED_IN: f64 = 10.0;
const SPEED_OUT: f64 = 12.0;
/// Braking to a stop and accelerating back, evenly, over this many frames (1 s).
const BRAKE_FRAMES: f64 = 25.0;
const ACCEL_FRAMES: f64 = 25.0;
/// The light turns green at this frame: the first vehicle in each lane starts.
const GREEN: u32 = 280;
/// Each follower starts this long after the vehicle ahead (0.48 s).
const REACTION_FRAMES: u32 = 12;
/// Every vehicle stands at least this long (6 s): MOG2 at the agent's default
/// learning rate (0.002) takes a still object in after ~53 frames
/// (0.998^n < 0.9), so each is lost for about 100 frames.
const MIN_STAND_FRAMES: u32 = 6 * FPS;
const LIGHT_ASPHALT: [i32; 3] = [118, 118, 122]; // the highway clip's

// Photo, road class, size. YOLOv3-tiny sees the whole 960x540 frame at
// 416x416: on this road the car and the pickup photos are found from 150 px
// wide, the motorcycle photo only from about 180 px (at 150 px in about half
// the frames, at the highway clip's 92 px never); all are drawn larger than on
// the highway clip, and every one is found in every frame it is fully in view
// (`check_queue_clip -- --every 1`). The van photo (a rear window, no wheels)
// is found at no size from 120 to 300 px and is left out. The pickup is class
// `car` as in the road clip (models/road_taxonomy.toml); the detector calls it
// `car` standing and often `truck` moving.
const CAR: (&str, &str, Scale) = ("crop_scenetext01_car.png", "car", Scale::Width(180));
const PICKUP: (&str, &str, Scale) = ("crop_dog_truck.png", "car", Scale::Width(180));
const MOTORCYCLE: (&str, &str, Scale) = ("motorcycle_left.png", "motorcycle", Scale::Width(210));

struct Vehicle {
    photo: (&'static str, &'static str, Scale),
    /// Index into LANES.
    lane: usize,
    /// The frame it first shows, its front SPEED_IN px into the frame.
    enters: u32,
}

/// Lane by lane, from the stop line back. No photo drives over the spot where
/// the same photo stood: the background model has learnt it there, and the
/// same pixels passing again would be lost as background too (in a first
/// version, a second car photo behind the first was lost for 3 frames where
/// the first had stood).
fn vehicles() -> Vec<Vehicle> {
    vec![
        Vehicle { photo: CAR, lane: 0, enters: LEAD_IN_FRAMES },
        Vehicle { photo: PICKUP, lane: 0, enters: LEAD_IN_FRAMES + 26 },
        Vehicle { photo: MOTORCYCLE, lane: 0, enters: LEAD_IN_FRAMES + 50 },
        Vehicle { photo: PICKUP, lane: 1, enters: LEAD_IN_FRAMES + 2 },
        Vehicle { photo: CAR, lane: 1, enters: LEAD_IN_FRAMES + 30 },
    ]
}

/// Where a vehicle's front is (px from the left edge, unrounded) at a frame:
/// in at SPEED_IN, braking evenly to stand with its front at `spot`, standing
/// until `starts`, accelerating evenly to SPEED_OUT, on out of the frame.
struct Motion {
    enters: u32,
    spot: f64,
    brakes: f64,
    starts: f64,
}

impl Motion {
    fn new(enters: u32, spot: i32, starts: u32) -> Motion {
        let brake_distance = SPEED_IN * BRAKE_FRAMES / 2.0;
        let brakes = enters as f64 + (spot as f64 - brake_distance - SPEED_IN) / SPEED_IN;
        Motion { enters, spot: spot as f64, brakes, starts: starts as f64 }
    }

    fn front(&self, frame: u32) -> f64 {
        let t = frame as f64;
        let stands = self.brakes + BRAKE_FRAMES;
        if t < self.brakes {
            SPEED_IN * (1.0 + t - self.enters as f64)
        } else if t < stands {
            self.spot - SPEED_IN * (stands - t).powi(2) / (2.0 * BRAKE_FRAMES)
        } else if t < self.starts {
            self.spot
        } else if t < self.starts + ACCEL_FRAMES {
            self.spot + SPEED_OUT * (t - self.starts).powi(2) / (2.0 * ACCEL_FRAMES)
        } else {
            self.spot + SPEED_OUT * (ACCEL_FRAMES / 2.0 + t - self.starts - ACCEL_FRAMES)
        }
    }
}

fn main() {
    let lanes_bottom = LANE_TOP + 2 * LANE_HEIGHT;
    let markings = vec![Marking { rows: LANE_TOP + LANE_HEIGHT - 2..=LANE_TOP + LANE_HEIGHT + 2, dash: Some(40) }];
    let road = Road { width: WIDTH, height: HEIGHT, asphalt: LANE_TOP - 10..=lanes_bottom + 10, markings, asphalt_colour: LIGHT_ASPHALT };
    let mut background = road.draw();
    road.paint_across(&mut background, STOP_X..=STOP_X + STOP_LINE_WIDTH - 1, LANE_TOP..=lanes_bottom - 1);

    let vehicles = vehicles();
    let sprites: Vec<RgbImage> = vehicles.iter().map(|v| scene::sprite(v.photo.0, v.photo.2)).collect();
    for (v, s) in vehicles.iter().zip(&sprites) {
        // Centred in its lane: at least LANE_CLEARANCE from a vehicle in the other lane.
        assert!(s.height() as i32 <= LANE_HEIGHT - LANE_CLEARANCE, "{} is too tall for a lane", v.photo.0);
    }

    // Queue spots and start frames, lane by lane from the stop line back:
    // each follower stands QUEUE_GAP behind the one ahead and starts
    // REACTION_FRAMES after it.
    let mut motions = Vec::new();
    let mut queue_position = Vec::new();
    let mut ahead: Vec<Option<usize>> = Vec::new();
    for (i, v) in vehicles.iter().enumerate() {
        let before = (0..i).rev().find(|&j| vehicles[j].lane == v.lane);
        let (spot, starts, position) = match before {
            None => (STOP_X - STOP_MARGIN, GREEN, 1),
            Some(j) => {
                let m: &Motion = &motions[j];
                (m.spot as i32 - sprites[j].width() as i32 - QUEUE_GAP, m.starts as u32 + REACTION_FRAMES, queue_position[j] + 1)
            }
        };
        let motion = Motion::new(v.enters, spot, starts);
        if let Some(j) = before {
            // Braking no sooner than the one ahead (and starting later) keeps
            // the gap at least QUEUE_GAP all the way (checked per frame below).
            assert!(motion.brakes >= motions[j].brakes, "vehicle {} brakes before the one ahead", i + 1);
        }
        assert!(motion.brakes >= v.enters as f64, "vehicle {} enters too close to its spot", i + 1);
        motions.push(motion);
        queue_position.push(position);
        ahead.push(before);
    }

    // Where each vehicle is, unclipped: its [x, y, w, h] if any of it shows.
    let place = |i: usize, frame: u32| -> Option<[i32; 4]> {
        if frame < vehicles[i].enters {
            return None;
        }
        let (w, h) = (sprites[i].width() as i32, sprites[i].height() as i32);
        let x = motions[i].front(frame).round() as i32 - w;
        let y = LANE_TOP + LANE_HEIGHT * vehicles[i].lane as i32 + LANE_HEIGHT / 2 - h / 2;
        (x < WIDTH as i32 && x + w > 0).then_some([x, y, w, h])
    };
    let gone = |i: usize| (vehicles[i].enters..).find(|&f| place(i, f).is_none()).unwrap();
    let total = (0..vehicles.len()).map(gone).max().unwrap() + TAIL_FRAMES;

    // A key frame every 10 s: the static road noise makes key frames dear.
    let mut encoder = scene::Encoder::start(scene::root().join("media/queue.mp4"), WIDTH, HEIGHT, 20, 10 * FPS);
    let mut frames: Vec<Vec<serde_json::Value>> = vec![Vec::new(); vehicles.len()];
    let mut seen: Vec<Vec<(u32, [i32; 4])>> = vec![Vec::new(); vehicles.len()];
    for frame in 0..total {
        let mut canvas = background.clone();
        let shown: Vec<(usize, [i32; 4])> = (0..vehicles.len()).filter_map(|i| Some((i, place(i, frame)?))).collect();
        for (n, &(i, a)) in shown.iter().enumerate() {
            for &(j, b) in &shown[n + 1..] {
                if vehicles[i].lane == vehicles[j].lane {
                    let gap = (b[0] - (a[0] + a[2])).max(a[0] - (b[0] + b[2]));
                    assert!(gap >= QUEUE_GAP, "frame {frame}: vehicles {} and {} are {gap} px apart", i + 1, j + 1);
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
    let kmh = |px_per_frame: f64| (px_per_frame * FPS as f64 / PX_PER_METRE * 3.6 * 10.0).round() / 10.0;
    let mut truth = Vec::new();
    let mut timeline = Vec::new();
    for (i, v) in vehicles.iter().enumerate() {
        let track = &seen[i];
        let (first, last) = (track.first().unwrap(), track.last().unwrap());
        let (x0, x1) = (bottom_centre(&first.1).0, bottom_centre(&last.1).0);
        let seconds = (last.0 - first.0) as f64 / FPS as f64;
        let speed_kmh = (x1 - x0).abs() / PX_PER_METRE / seconds * 3.6;
        // Stands still: the longest run of frames with the box it has at its spot.
        let spot_box = track.iter().find(|(f, _)| *f as f64 >= motions[i].brakes + BRAKE_FRAMES).unwrap().1;
        let still: Vec<u32> = track.iter().filter(|(_, b)| *b == spot_box).map(|t| t.0).collect();
        let (from, to) = (still[0], *still.last().unwrap());
        assert_eq!(still.len() as u32, to - from + 1, "vehicle {} stands still in one run", i + 1);
        assert!(to - from >= MIN_STAND_FRAMES, "vehicle {} stands {} frame intervals", i + 1, to - from);
        assert!(bottom_centre(&spot_box).0 < LINE_X as f64, "vehicle {} stands past the counting line", i + 1);
        let crossing = track.iter().find(|(_, b)| bottom_centre(b).0 > LINE_X as f64);
        let crossings: Vec<_> =
            crossing.iter().map(|(frame, _)| json!({"line": "count", "frame": frame, "direction": "forward"})).collect();
        assert_eq!(crossings.len(), 1, "vehicle {} crosses the line once", i + 1);
        let fully: Vec<u32> = frames[i].iter().filter(|f| f["fully_visible"] == true).map(|f| f["frame"].as_u64().unwrap() as u32).collect();
        let mut vehicle = json!({
            "id": i + 1, "class": v.photo.1, "source": v.photo.0, "lane": LANES[v.lane], "direction": "forward",
            "speed_kmh": (speed_kmh * 10.0).round() / 10.0, "approach_kmh": kmh(SPEED_IN), "leave_kmh": kmh(SPEED_OUT),
            "crossings": crossings, "stops": true,
            "stopped": {"from": from, "to": to, "bbox": spot_box},
            "queue_position": queue_position[i],
        });
        if let Some(j) = ahead[i] {
            vehicle["queued_behind"] = json!({"vehicle": j + 1, "gap_px": QUEUE_GAP});
        }
        vehicle["frames"] = json!(frames[i]);
        truth.push(vehicle);
        timeline.push(format!(
            "  {} {:<24} {}: in {}, fully in {}, stands {}-{}, crosses {}, partly out from {}, gone {}",
            i + 1, v.photo.0, LANES[v.lane], first.0, fully[0], from, to, crossing.unwrap().0, fully.last().unwrap() + 1, last.0 + 1
        ));
    }

    let lanes: Vec<_> = LANES
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (top, bottom) = (LANE_TOP + LANE_HEIGHT * i as i32, LANE_TOP + LANE_HEIGHT * (i as i32 + 1));
            json!({"id": id, "polygon": [[0, top], [WIDTH, top], [WIDTH, bottom], [0, bottom]]})
        })
        .collect();
    let (w_m, h_m) = (WIDTH as f64 / PX_PER_METRE, (2 * LANE_HEIGHT) as f64 / PX_PER_METRE);
    let doc = json!({
        "clip": "queue.mp4", "width": WIDTH, "height": HEIGHT, "fps": FPS, "frames": total,
        "note": concat!(
            "frame = 0-based decode index. lanes: id and polygon [[x, y], ...] in image pixels, top to bottom; ",
            "both drive left to right. lines: id, from, to in pixels; a vehicle moving right crosses a ",
            "top-to-bottom line forward. stop_line: the painted stop line's left edge, from, to, and its width in ",
            "pixels; zones: id and polygon, queue = both lanes from the left edge to the stop line. calibration: ",
            "four image points and the same points on the ground in metres (x along the road, y across it; 50 px ",
            "per metre, the camera looks straight down). vehicles: id; class = expected road class ",
            "(models/road_taxonomy.toml); source = the photo in media/sources; lane = lane id; direction = relative ",
            "to the first line; speed_kmh = mean ground speed from its first to its last frame in view (bottom-centre ",
            "of the unclipped box), standing included; approach_kmh, leave_kmh = its speed driving in and driving ",
            "off; crossings: line, frame = first frame whose unclipped box bottom-centre is past the line, direction; ",
            "stops = it stands still in view, then stopped = {from, to, bbox}: the frames it stands still ",
            "(inclusive; the same box in every one) and its box there; queue_position: 1 = first at the stop line; ",
            "queued_behind = {vehicle, gap_px}: it stands that far behind that vehicle, same lane; frames: ",
            "{frame, bbox = [x, y, w, h] clipped to the frame, fully_visible} for every frame any of it shows. ",
            "Made by examples/make_queue_clip.rs."
        ),
        "lanes": lanes,
        "lines": [{"id": "count", "from": [LINE_X, 0], "to": [LINE_X, HEIGHT]}],
        "stop_line": {"from": [STOP_X, LANE_TOP], "to": [STOP_X, lanes_bottom], "width": STOP_LINE_WIDTH},
        "zones": [{"id": "queue", "polygon": [[0, LANE_TOP], [STOP_X, LANE_TOP], [STOP_X, lanes_bottom], [0, lanes_bottom]]}],
        "calibration": {
            "image": [[0, LANE_TOP], [WIDTH as i32, LANE_TOP], [WIDTH as i32, lanes_bottom], [0, lanes_bottom]],
            "ground": [[0.0, 0.0], [w_m, 0.0], [w_m, h_m], [0.0, h_m]],
        },
        "vehicles": truth,
    });
    scene::write_truth(&scene::root().join("media/queue.truth.json"), &doc);
    println!("wrote {} ({total} frames, {:.1} s) and its truth; light green at frame {GREEN}", out.display(), total as f64 / FPS as f64);
    for line in timeline {
        println!("{line}");
    }
}
