//! Privacy masks end to end (issue #18), on the bundled clip through real
//! OpenCV, ONNX Runtime and Mosquitto: a mask over the near end of the
//! eastbound lane, where every eastbound vehicle comes into view (and so
//! where its best view, the first one whole, is taken). No
//! picture that leaves the agent — region samples, vehicles' best views,
//! the installer's page, a snapshot — shows a pixel of it (each JPEG
//! decoded and checked where the mask falls on it); the classifier still
//! sees it unless the mask says `apply_to_inference`, and then no region is
//! found there.

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::*;

/// `[x, y, w, h]` of the mask: x 0–240, y 0–195 (the eastbound lane's near
/// end; the westbound lane starts at y 200).
const MASK: [i64; 4] = [0, 0, 241, 196];

fn mask(apply_to_inference: bool) -> String {
    format!("[[cameras.privacy_masks]]\npolygon = [[0, 0], [240, 0], [240, 195], [0, 195]]\napply_to_inference = {apply_to_inference}\n")
}

/// Two cameras on the clip, once through at full speed, both masked: one
/// untracked (its regions are sampled) and one tracked (its vehicles' best
/// views are); every crop is kept and published.
fn cameras(apply_to_inference: bool, extra: &str) -> String {
    let clip = road_clip();
    format!(
        "[[cameras]]\nid = \"frames\"\nurl = \"{clip}\"\nregions = \"motion\"\nreplay = \"asap\"\n{mask}\n\
         [[cameras]]\nid = \"tracked\"\nurl = \"{clip}\"\nregions = \"motion\"\nreplay = \"asap\"\n[cameras.tracking]\n{mask}\n\
         [samples]\nrandom_rate = 1.0\nmax_per_hour = 100000\nmax_bytes = 67108864\n{extra}\n",
        clip = clip.display(),
        mask = mask(apply_to_inference),
    )
}

/// The part of `bbox` (`[x, y, w, h]` in the frame) the mask covers, if any.
fn overlap(bbox: [i64; 4]) -> Option<[i64; 4]> {
    let (x0, y0) = (bbox[0].max(MASK[0]), bbox[1].max(MASK[1]));
    let (x1, y1) = ((bbox[0] + bbox[2]).min(MASK[0] + MASK[2]), (bbox[1] + bbox[3]).min(MASK[1] + MASK[3]));
    (x1 > x0 && y1 > y0).then_some([x0, y0, x1 - x0, y1 - y0])
}

/// Of the pixels of `image` inside `area` (in the image's own pixels,
/// shrunk by `inset` on each side against JPEG's ringing at the edge):
/// the share that is black (every channel ≤ 40). None if nothing is left.
fn black_share(image: &image::RgbImage, area: [f64; 4], inset: f64) -> Option<f64> {
    let (x0, y0) = ((area[0] + inset).ceil() as u32, (area[1] + inset).ceil() as u32);
    let x1 = ((area[0] + area[2] - inset).floor() as u32).min(image.width());
    let y1 = ((area[1] + area[3] - inset).floor() as u32).min(image.height());
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let (mut black, mut all) = (0u64, 0u64);
    for y in y0..y1 {
        for x in x0..x1 {
            all += 1;
            black += u64::from(image.get_pixel(x, y).0.iter().all(|c| *c <= 40));
        }
    }
    Some(black as f64 / all as f64)
}

/// Of the pixels inside the mask that are not dark in the clip's own frame
/// `frame_index`: the share `picture` (a whole annotated frame) shows as
/// they are (every channel within 24). Overlays (boxes, labels, the
/// outline) are drawn colours, not the road's; a leak would be the road.
fn road_shown_in_mask(picture: &image::RgbImage, frame_index: u64) -> f64 {
    let (w, _, raw) = clip_frame(frame_index);
    let (mut shown, mut all) = (0u64, 0u64);
    for y in MASK[1]..(MASK[1] + MASK[3]).min(picture.height() as i64) {
        for x in MASK[0]..(MASK[0] + MASK[2]).min(picture.width() as i64) {
            let i = (y as usize * w as usize + x as usize) * 3;
            let rgb = [raw[i + 2], raw[i + 1], raw[i]];
            if rgb.iter().all(|c| *c <= 40) {
                continue;
            }
            all += 1;
            let p = picture.get_pixel(x as u32, y as u32).0;
            shown += u64::from(p.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 24));
        }
    }
    shown as f64 / all.max(1) as f64
}

fn bbox_of(v: &Value) -> [i64; 4] {
    let b: Vec<i64> = v.as_array().unwrap().iter().map(|c| c.as_f64().unwrap().round() as i64).collect();
    [b[0], b[1], b[2], b[3]]
}

#[test]
fn no_picture_that_leaves_the_agent_shows_a_pixel_of_a_privacy_mask() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let port = free_port();
    let config = agent_config(&broker, &cameras(false, &format!("[view]\nlisten = \"127.0.0.1:{port}\"\nmax_fps = 10\n")));
    let mut agent = Agent::start(&config);
    let finished = |camera: &str| camera_telemetry(&sub, camera).is_some_and(|c| c["state"] == "finished");
    // The page's picture while vehicles are in the mask: taken as the clip plays.
    let mut pictures = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !(finished("frames") && finished("tracked")) {
        assert!(std::time::Instant::now() < deadline, "the clip did not finish within 90 s");
        if let Ok(response) = ureq::get(&format!("http://127.0.0.1:{port}/cameras/tracked.jpg")).timeout(Duration::from_secs(5)).call() {
            let frame_index: u64 = response.header("x-frame-index").expect("the picture's frame").parse().unwrap();
            let mut jpeg = Vec::new();
            std::io::Read::read_to_end(&mut response.into_reader(), &mut jpeg).unwrap();
            pictures.push((frame_index, jpeg));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    sub.wait_until(Duration::from_secs(20), "every vehicle's sample", |_| {
        let vehicles = sub.on("/vehicles/tracked").len();
        vehicles > 0 && samples(&sub).values().filter(|(meta, _)| meta["track"].is_string()).count() >= vehicles
    });
    assert!(agent.terminate().success());

    // The classifier saw the masked area: regions there were predicted.
    let in_mask = sub.on("/predictions/frames").iter().flat_map(|m| m.payload["regions"].as_array().unwrap().clone()).filter(|r| overlap(bbox_of(&r["bbox"])).is_some_and(|o| o[2] * o[3] * 2 > bbox_of(&r["bbox"])[2] * bbox_of(&r["bbox"])[3])).count();
    assert!(in_mask > 0, "regions mostly inside the mask were classified (the mask is not applied to inference)");

    // Every published crop: black where the mask falls on it, the road elsewhere.
    let (mut checked_regions, mut checked_vehicles) = (0, 0);
    for (id, (meta, jpeg)) in samples(&sub) {
        let crop = image::load_from_memory(&jpeg).unwrap_or_else(|e| panic!("sample {id}: {e}")).to_rgb8();
        let bbox = bbox_of(&meta["bbox"]);
        let Some(o) = overlap(bbox) else { continue };
        let (sx, sy) = (crop.width() as f64 / bbox[2] as f64, crop.height() as f64 / bbox[3] as f64);
        let area = [(o[0] - bbox[0]) as f64 * sx, (o[1] - bbox[1]) as f64 * sy, o[2] as f64 * sx, o[3] as f64 * sy];
        let Some(share) = black_share(&crop, area, 2.0) else { continue };
        assert!(share > 0.97, "sample {id} ({} of {bbox:?}): only {share:.3} of the masked part is black", meta["camera"]);
        if meta["track"].is_string() {
            checked_vehicles += 1;
        } else {
            checked_regions += 1;
        }
    }
    println!("{checked_regions} region samples and {checked_vehicles} vehicle samples overlap the mask: all black there");
    assert!(checked_regions >= 5 && checked_vehicles >= 1, "the test saw crops over the mask: {checked_regions} regions, {checked_vehicles} vehicles");

    // The page's pictures: not the road where the mask is, the road elsewhere.
    pictures.dedup_by_key(|(frame, _)| *frame);
    assert!(pictures.len() >= 3, "the page had pictures: {}", pictures.len());
    for (frame_index, jpeg) in &pictures {
        let picture = image::load_from_memory(jpeg).unwrap().to_rgb8();
        let leaked = road_shown_in_mask(&picture, *frame_index);
        assert!(leaked < 0.01, "the page's picture of frame {frame_index} shows {leaked:.3} of the masked road");
        let outside = black_share(&picture, [0.0, 210.0, 640.0, 150.0], 0.0).unwrap();
        assert!(outside < 0.2, "the road outside the mask shows: {outside:.3} black");
    }
}

#[test]
fn a_snapshot_fills_the_mask_and_outlines_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let camera = format!("[[cameras]]\nid = \"tracked\"\nurl = \"{}\"\nregions = \"motion\"\n[cameras.tracking]\n{}", road_clip().display(), mask(false));
    std::fs::write(&config, format!("device_id = \"pole-1\"\nstate_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:9\"\n[model]\npath = \"{}\"\n{camera}", dir.path().join("state").display(), repo("models/efficientnet_lite0.onnx").display())).unwrap();
    // Frame 40: the first eastbound car is inside the mask.
    let out = dir.path().join("snap.png");
    let run = Command::new(BIN).args(["snapshot", "--camera", "tracked", "--frame", "40", "--out"]).arg(&out).arg("--config").arg(&config).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let picture = image::open(&out).unwrap().to_rgb8();
    assert_eq!((picture.width(), picture.height()), (640, 400));
    // Not a pixel of the road where the mask is (the car there drawn as a box only).
    let leaked = road_shown_in_mask(&picture, 40);
    assert!(leaked < 0.01, "the snapshot shows {leaked:.3} of the masked road");
    let share = black_share(&picture, [2.0, 30.0, 236.0, 163.0], 0.0).unwrap();
    assert!(share > 0.8, "{share:.3} of the mask is black");
    // The outline is drawn (magenta), and the road outside the mask is not black.
    let outline = (30..190).filter(|y| { let p = picture.get_pixel(240, *y).0; p[0] > 150 && p[1] < 100 && p[2] > 150 }).count();
    assert!(outline > 100, "the mask's outline: {outline} magenta pixels on x = 240");
    let outside = black_share(&picture, [0.0, 210.0, 640.0, 150.0], 0.0).unwrap();
    assert!(outside < 0.2, "the road outside the mask shows: {outside:.3} black");
}

#[test]
fn a_mask_applied_to_inference_is_never_found_or_classified() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let mut agent = Agent::start(&agent_config(&broker, &cameras(true, "")));
    sub.wait_until(Duration::from_secs(90), "the clip, through", |_| {
        ["frames", "tracked"].iter().all(|c| camera_telemetry(&sub, c).is_some_and(|t| t["state"] == "finished"))
    });
    assert!(agent.terminate().success());
    let regions: Vec<[i64; 4]> = sub.on("/predictions/frames").iter().flat_map(|m| m.payload["regions"].as_array().unwrap().iter().map(|r| bbox_of(&r["bbox"])).collect::<Vec<_>>()).collect();
    assert!(!regions.is_empty(), "the rest of the road still gives regions");
    // A region may end at the mask's edge (a car half in), never reach into it.
    for bbox in &regions {
        let into = overlap(*bbox).map_or(0, |o| o[2] * o[3]);
        assert!(into <= bbox[2].max(bbox[3]) * 3, "region {bbox:?} reaches {into} px² into the mask");
    }
    // Vehicles are still reported, with their best views outside the mask.
    let vehicles = sub.on("/vehicles/tracked");
    assert!(!vehicles.is_empty(), "the westbound vehicles and the eastbound ones before the mask are tracked");
    for v in &vehicles {
        let bbox = bbox_of(&v.payload["bbox"]);
        assert!(overlap(bbox).is_none_or(|o| o[2] * o[3] <= bbox[2].max(bbox[3]) * 3), "vehicle best view {bbox:?} reaches into the mask");
    }
}
