//! The installer's view: `cctv-agent snapshot` runs the camera's real
//! pipeline (OpenCV decode, motion regions, tracking, ONNX Runtime) on the
//! bundled clip and draws its layout; the picture is decoded and checked
//! pixel by pixel against the clip's own frame, decoded by OpenCV here.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::browser::Chromium;
use support::*;

/// Lane 0's colour and cover, as `view::draw` documents them.
const LANE_BGR: [f64; 3] = cctv_agent::view::draw::LANE_COLOURS[0];
const ALPHA: f64 = cctv_agent::view::draw::LANE_ALPHA;

fn config(dir: &Path, url: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"device_id = "pole-1"
state_dir = "{state}"
[mqtt]
url = "mqtt://127.0.0.1:9"
[model]
path = "{model}"
[[cameras]]
id = "road"
url = "{url}"
regions = "motion"
[cameras.tracking]
[[cameras.lanes]]
id = "east"
polygon = [[0, 0], [640, 0], [640, 203], [0, 203]]
[[cameras.lines]]
id = "middle"
from = [320, 0]
to = [320, 400]
"#,
        state = dir.join("state").display(),
        model = repo("models/efficientnet_lite0.onnx").display(),
        url = url.display(),
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn a_snapshot_shows_the_lane_tinted_and_the_rest_of_the_road_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("road.jpg");
    let output = Command::new(BIN)
        .args(["snapshot", "--camera", "road", "--frame", "50", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(config(dir.path(), &road_clip()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "snapshot failed: {stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("frame 50"), "it names the frame drawn: {stdout}");

    let picture = image::open(&out).expect("the snapshot is a JPEG that decodes").to_rgb8();
    let (w, h, raw) = clip_frame(50);
    assert_eq!((picture.width(), picture.height()), (w, h), "the snapshot has the frame's size");
    // Per pixel: how far the picture is from the raw frame, and from the raw frame under the lane's tint.
    let distance = |x: u32, y: u32, tinted: bool| {
        let p = picture.get_pixel(x, y);
        let i = ((y * w + x) * 3) as usize;
        (0..3)
            .map(|c| {
                let raw = raw[i + c] as f64; // BGR
                let expected = if tinted { ALPHA * LANE_BGR[c] + (1.0 - ALPHA) * raw } else { raw };
                (p[2 - c] as f64 - expected).abs() // RGB
            })
            .sum::<f64>()
            / 3.0
    };
    let grid = |y0: u32, y1: u32| (y0..y1).step_by(7).flat_map(move |y| (4..w - 4).step_by(11).map(move |x| (x, y)));
    // Inside the lane (y < 203): the tint, not the raw frame. Outside it: the raw frame.
    let inside_tinted = median(grid(10, 195).map(|(x, y)| distance(x, y, true)).collect());
    let inside_raw = median(grid(10, 195).map(|(x, y)| distance(x, y, false)).collect());
    let outside_raw = median(grid(212, h - 30).map(|(x, y)| distance(x, y, false)).collect());
    let outside_tinted = median(grid(212, h - 30).map(|(x, y)| distance(x, y, true)).collect());
    assert!(inside_tinted < 8.0 && inside_raw > 25.0, "inside the lane the road is tinted: {inside_tinted:.1} from tinted, {inside_raw:.1} from raw");
    assert!(outside_raw < 8.0 && outside_tinted > 25.0, "outside the lane the road is as it is: {outside_raw:.1} from raw, {outside_tinted:.1} from tinted");
    // The line is drawn in red down x = 320.
    let on_line = picture.get_pixel(320, 300);
    assert!(on_line[0] > 180 && on_line[1] < 80 && on_line[2] < 80, "the counting line is drawn: {on_line:?}");
}

#[test]
fn a_snapshot_of_a_camera_that_is_not_there_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &dir.path().join("no-such-clip.mp4"));
    let out = dir.path().join("x.jpg");
    let run = |camera: &str| Command::new(BIN).args(["snapshot", "--camera", camera, "--out"]).arg(&out).arg("--config").arg(&config).output().unwrap();

    let unknown = run("gate");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(stderr.contains("no camera `gate`") && stderr.contains("road"), "names the cameras there are: {stderr}");

    let dead = run("road");
    let stderr = String::from_utf8_lossy(&dead.stderr);
    assert!(!dead.status.success());
    assert!(stderr.contains("gave no frame") && stderr.contains("cameras.url"), "says what to check: {stderr}");
    assert!(!out.exists(), "no picture is written");
}

/// GET `path` from the page with `token` (if any): status and body.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut request = ureq::get(&format!("http://127.0.0.1:{port}{path}")).timeout(std::time::Duration::from_secs(5));
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(error) => panic!("GET {path}: {error}"),
    };
    let status = response.status();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut response.into_reader(), &mut body).unwrap();
    (status, body)
}

#[test]
fn the_page_shows_the_camera_and_its_counts_rise_as_vehicles_pass() {
    let broker = Mosquitto::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("view.token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let cameras = format!(
        r#"[[cameras]]
id = "road"
url = "{clip}"
regions = "motion"
loop = true
[cameras.tracking]
[[cameras.lanes]]
id = "east"
polygon = [[0, 0], [640, 0], [640, 203], [0, 203]]
[[cameras.lanes]]
id = "west"
polygon = [[0, 203], [640, 203], [640, 400], [0, 400]]
[view]
listen = "0.0.0.0:{port}"
token_file = "{token}"
max_fps = 4
"#,
        clip = road_clip().display(),
        token = token_file.display(),
    );
    let _agent = Agent::start(&agent_config(&broker, &cameras));
    let token = Some("s3cret-token");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let total = |state: &serde_json::Value| state["cameras"][0]["total"].as_u64().unwrap_or(0);
    let mut first: Option<serde_json::Value> = None;
    let mut rising = None;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { continue };
        drop(stream);
        let (status, body) = get(port, "/state.json", token);
        assert_eq!(status, 200);
        let state: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if state["cameras"][0]["frame_index"].is_null() {
            continue;
        }
        match &first {
            None => first = Some(state),
            Some(f) if total(&state) > total(f) => {
                rising = Some((f.clone(), state));
                break;
            }
            Some(_) => {}
        }
    }
    let (before, after) = rising.expect("the counts table rose while the clip played");
    assert_eq!(after["model"]["name"], "efficientnet_lite0", "the page names the model serving: {after}");
    let counts = after["cameras"][0]["counts"].as_array().unwrap();
    assert!(counts.iter().any(|r| r["lane"] == "east" || r["lane"] == "west"), "counts are per lane: {counts:?} (before: {before})");
    // The picture is the camera's frame, annotated.
    let (status, jpeg) = get(port, "/cameras/road.jpg", token);
    assert_eq!(status, 200);
    let picture = image::load_from_memory(&jpeg).expect("the page's picture is a JPEG");
    assert_eq!((picture.width(), picture.height()), (640, 400));
    let (status, page) = get(port, "/", token);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("camera-road"));
    // Without the token, nothing (the bind is not loopback-only).
    assert_eq!(get(port, "/state.json", None).0, 401);
    assert_eq!(get(port, "/cameras/road.jpg", Some("wrong")).0, 401);

    // The page in a real browser, opened with the token as an installer would.
    let mut browser = Chromium::open(&format!("http://127.0.0.1:{port}/?token=s3cret-token"));
    let shown = browser.wait_for(Duration::from_secs(20), "the camera's picture", IMAGE, |v| v["natural"][0].as_f64().unwrap_or(0.0) > 0.0);
    assert_eq!(shown["natural"], serde_json::json!([640, 400]), "the stream shows the camera's frame: {shown}");
    let (left, top, width, height) = (shown["rect"][0].as_f64().unwrap(), shown["rect"][1].as_f64().unwrap(), shown["rect"][2].as_f64().unwrap(), shown["rect"][3].as_f64().unwrap());
    assert!(width > 100.0 && height > 60.0, "the picture has a size on the page: {shown}");
    browser.wait_for(Duration::from_secs(10), "the model's name", "document.getElementById('model').textContent", |v| v.as_str().unwrap_or("").contains("efficientnet_lite0"));
    let total = |v: &serde_json::Value| v.as_str().and_then(|t| t.parse::<u64>().ok());
    let first = browser.wait_for(Duration::from_secs(10), "the counts table", "document.getElementById('total-road').textContent", |v| total(v).is_some());
    let first = total(&first).unwrap();
    browser.wait_for(Duration::from_secs(30), "the counts table to change", "document.getElementById('total-road').textContent", |v| total(v).is_some_and(|t| t > first));
    let rows = browser.eval("[...document.querySelectorAll('#counts-road tbody tr')].map(r => r.cells[0].textContent)");
    assert!(rows.as_array().unwrap().iter().any(|lane| lane == "east" || lane == "west"), "rows per lane: {rows}");

    // The pointer over the picture reads frame pixels; a click adds the point to the polygon.
    let (x, y) = (left + width * 0.5, top + height * 0.25);
    browser.mouse("mouseMoved", x, y);
    let coords = browser.wait_for(Duration::from_secs(5), "the pointer's coordinates", "document.getElementById('coords-road').textContent", |v| v.as_str().is_some_and(|t| t.contains(',')));
    let point: Vec<i64> = coords.as_str().unwrap().split(',').map(|c| c.trim().parse().unwrap()).collect();
    assert!((point[0] - 320).abs() <= 2 && (point[1] - 100).abs() <= 2, "the middle of the picture's top quarter is about (320, 100): {coords}");
    browser.mouse("mousePressed", x, y);
    browser.mouse("mouseReleased", x, y);
    let polygon = browser.eval("document.getElementById('polygon-road').value");
    assert_eq!(polygon.as_str().unwrap(), format!("polygon = [[{}, {}]]", point[0], point[1]));
    assert_eq!(browser.eval("document.getElementById('line-road').value"), "", "one point is no line yet");
    // A second click: the last two points are also a counting line.
    let (x2, y2) = (left + width * 0.75, top + height * 0.75);
    browser.mouse("mouseMoved", x2, y2);
    browser.mouse("mousePressed", x2, y2);
    browser.mouse("mouseReleased", x2, y2);
    let second: Vec<i64> = browser.eval("document.getElementById('coords-road').textContent").as_str().unwrap().split(',').map(|c| c.trim().parse().unwrap()).collect();
    assert!((second[0] - 480).abs() <= 2 && (second[1] - 300).abs() <= 2, "{second:?}");
    let polygon = browser.eval("document.getElementById('polygon-road').value");
    assert_eq!(polygon.as_str().unwrap(), format!("polygon = [[{}, {}], [{}, {}]]", point[0], point[1], second[0], second[1]));
    let line = browser.eval("document.getElementById('line-road').value");
    assert_eq!(line.as_str().unwrap(), format!("from = [{}, {}]\nto = [{}, {}]", point[0], point[1], second[0], second[1]));

    // The screenshot shows the road: many colours where the picture is, not a blank page.
    let png = browser.screenshot();
    // docs/page-road.jpg is this screenshot (CCTV_PAGE_SCREENSHOT=/tmp/page.png, then JPEG).
    if let Ok(path) = std::env::var("CCTV_PAGE_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
    let shot = image::load_from_memory(&png).expect("a PNG screenshot").to_rgb8();
    let scale = shot.width() as f64 / 1280.0;
    let mut colours = std::collections::HashSet::new();
    let mut luma = Vec::new();
    for py in (top * scale) as u32..((top + height) * scale) as u32 {
        for px in (left * scale) as u32..((left + width) * scale) as u32 {
            let p = shot.get_pixel(px.min(shot.width() - 1), py.min(shot.height() - 1)).0;
            colours.insert((p[0] / 16, p[1] / 16, p[2] / 16));
            luma.push(0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64);
        }
    }
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    let spread = (luma.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / luma.len() as f64).sqrt();
    assert!(colours.len() > 100 && spread > 15.0, "the screenshot's picture is not blank: {} colours, luma spread {spread:.1}", colours.len());
}

/// The camera's <img> on the page: its natural size (0 until a frame has
/// arrived) and its place on the page.
const IMAGE: &str = "(() => { const i = document.getElementById('camera-road'); const r = i.getBoundingClientRect(); \
    return { natural: [i.naturalWidth, i.naturalHeight], rect: [r.left, r.top, r.width, r.height] }; })()";
