//! Monitoring end to end with a real broker, real ONNX Runtime and the real
//! model: feedback → precision → one alert, one retrain request, one clear;
//! samples on disk and on MQTT; label-free drift per camera.

mod support;

use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

const FEEDBACK: &str = "cctv/test-pole/feedback";

fn camera(id: &str, url: &Path, extra: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"{}\"\nregions = \"full\"\nreplay = \"asap\"\n{extra}\n", url.display())
}

fn latest_monitor(sub: &Subscriber) -> Value {
    sub.on("/telemetry").last().map(|m| m.payload["monitor"].clone()).unwrap_or(Value::Null)
}

fn alerts(sub: &Subscriber, state: &str) -> Vec<Value> {
    sub.events("alert").into_iter().filter(|e| e["state"] == state).collect()
}

fn retrain_requests(sub: &Subscriber) -> Vec<Value> {
    sub.all().into_iter().filter(|m| m.topic.starts_with("cctv/fleet/retrain/")).map(|m| m.payload).collect()
}


/// Frame `index` of the bundled clip (BGR).
fn clip_frame(index: u64) -> Mat {
    let mut capture = videoio::VideoCapture::from_file(road_clip().to_str().unwrap(), videoio::CAP_ANY).unwrap();
    let mut frame = Mat::default();
    for _ in 0..=index {
        assert!(capture.read(&mut frame).unwrap(), "clip has frame {index}");
    }
    frame
}

/// A BGR image scaled to `width`×`height`, as RGB.
fn scaled_rgb(image: &Mat, width: i32, height: i32) -> Vec<u8> {
    let mut scaled = Mat::default();
    imgproc::resize(image, &mut scaled, Size::new(width, height), 0.0, 0.0, imgproc::INTER_AREA).unwrap();
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(&scaled, &mut rgb, imgproc::COLOR_BGR2RGB).unwrap();
    rgb.data_bytes().unwrap().to_vec()
}

/// Frame `index` of the bundled clip, scaled to `width`×`height`, as RGB.
fn clip_frame_rgb(index: u64, width: i32, height: i32) -> Vec<u8> {
    scaled_rgb(&clip_frame(index), width, height)
}

fn send_feedback(port: u16, labels: &[(u64, &str)]) {
    let labels: Vec<Value> = labels.iter().map(|(seq, class)| json!({"seq": seq, "region": 0, "class": class, "source": "test-sensor"})).collect();
    publish(port, FEEDBACK, &serde_json::to_vec(&labels).unwrap());
}

fn other_class(class: &str) -> &'static str {
    if class == "car" { "truck" } else { "car" }
}

#[test]
fn feedback_drives_one_precision_alert_one_retrain_request_one_clear_and_saves_the_mistakes() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    let config = format!(
        "{}\n[monitor]\nfeedback_window = 40\nmin_labelled = 20\n[samples]\nmax_bytes = 1048576\nrandom_rate = 1.0\nmax_per_hour = 100000\nrecent = 400\nrecent_before_feedback = true\n",
        agent_config(&broker, &camera("road", &road_clip(), ""))
    );
    let mut agent = Agent::start(&config);
    let frames = road_clip_frames() as usize;
    sub.wait_until(Duration::from_secs(120), "every frame's prediction", |_| sub.on("/predictions/road").len() >= frames);
    let mut predictions: Vec<(u64, String, u64)> = sub
        .on("/predictions/road")
        .iter()
        .map(|m| (m.payload["seq"].as_u64().unwrap(), m.payload["regions"][0]["class"].as_str().unwrap().to_string(), m.payload["frame_index"].as_u64().unwrap()))
        .collect();
    predictions.sort();
    let agree = |range: std::ops::Range<usize>| -> Vec<(u64, &str)> { predictions[range].iter().map(|(seq, class, _)| (*seq, class.as_str())).collect() };
    let disagree = |range: std::ops::Range<usize>| -> Vec<(u64, &str)> { predictions[range].iter().map(|(seq, class, _)| (*seq, other_class(class))).collect() };

    // Feedback that agrees: precision 1, nothing raised.
    send_feedback(broker.port, &agree(0..30));
    sub.wait_until(Duration::from_secs(10), "30 labels in telemetry", |_| latest_monitor(&sub)["feedback"]["labelled"] == 30);
    assert_eq!(latest_monitor(&sub)["feedback"]["precision"], 1.0);
    assert!(sub.events("alert").is_empty(), "{:?}", sub.events("alert"));

    // Bad feedback: each refused with what to send, nothing counted.
    publish(broker.port, FEEDBACK, br#"{"seq": 999999999, "region": 0, "class": "car"}"#);
    std::thread::sleep(Duration::from_millis(1100));
    publish(broker.port, FEEDBACK, json!({"seq": predictions[0].0, "region": 0, "class": "spaceship"}).to_string().as_bytes());
    std::thread::sleep(Duration::from_millis(1100));
    publish(broker.port, FEEDBACK, b"car, I think");
    sub.wait_until(Duration::from_secs(10), "3 rejections", |_| sub.events("feedback_rejected").len() == 3 && latest_monitor(&sub)["feedback_rejected"] == 3);
    let reasons: Vec<String> = sub.events("feedback_rejected").iter().map(|e| e["reason"].as_str().unwrap().to_string()).collect();
    assert!(reasons[0].contains("seq 999999999"), "{reasons:?}");
    assert!(reasons[1].contains("spaceship") && reasons[1].contains("bus, car, motorcycle"), "{reasons:?}");
    assert!(reasons[2].contains("\"seq\""), "{reasons:?}");
    for event in sub.events("feedback_rejected") {
        assert_matches_schema(&event, "event.json");
    }
    assert_eq!(latest_monitor(&sub)["feedback"]["labelled"], 30);

    // Feedback that marks predictions wrong drives precision below 0.40.
    let wrong = disagree(30..70);
    for batch in wrong.chunks(10) {
        send_feedback(broker.port, batch);
        std::thread::sleep(Duration::from_millis(300));
    }
    sub.wait_until(Duration::from_secs(10), "the precision alert", |_| !alerts(&sub, "raised").is_empty());
    std::thread::sleep(Duration::from_millis(2500)); // more judgements: still one alert
    let raised = alerts(&sub, "raised");
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_matches_schema(&raised[0], "event.json");
    assert_eq!((raised[0]["alert"].as_str(), raised[0]["threshold"].as_f64()), (Some("precision"), Some(0.40)));
    assert!(raised[0]["value"].as_f64().unwrap() < 0.40 && raised[0]["evidence"] == 40, "{}", raised[0]);
    assert_eq!(raised[0]["model"]["version"], "1");
    let requests = retrain_requests(&sub);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_matches_schema(&requests[0], "retrain.json");
    let request = &requests[0];
    assert_eq!(request["model"]["name"], "efficientnet_lite0");
    assert_eq!(request["evidence"]["labelled"], 40);
    let wrong_seqs: BTreeSet<u64> = wrong.iter().map(|(seq, _)| *seq).collect();
    let mistakes = request["evidence"]["mistakes"].as_array().unwrap();
    assert!(mistakes.len() >= 30, "{request}");
    assert!(mistakes.iter().all(|m| wrong_seqs.contains(&m["seq"].as_u64().unwrap()) && m["source"] == "test-sensor"), "{request}");
    assert!(!request["evidence"]["confusion"].as_object().unwrap().is_empty());
    assert_eq!(latest_monitor(&sub)["feedback"]["precision"], 0.0);
    assert_eq!(latest_monitor(&sub)["alerts"]["precision"], 0.0);

    // Recovery: one clear, still one alert and one request.
    for batch in agree(70..110).chunks(10) {
        send_feedback(broker.port, batch);
        std::thread::sleep(Duration::from_millis(300));
    }
    sub.wait_until(Duration::from_secs(10), "the clear", |_| !alerts(&sub, "cleared").is_empty());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!((alerts(&sub, "raised").len(), alerts(&sub, "cleared").len(), retrain_requests(&sub).len()), (1, 1, 1));
    let cleared = &alerts(&sub, "cleared")[0];
    assert_matches_schema(cleared, "event.json");
    assert!(cleared["value"].as_f64().unwrap() >= 0.5);
    assert!(cleared["seq"].as_u64() > raised[0]["seq"].as_u64());
    let monitor = latest_monitor(&sub);
    assert_eq!((monitor["feedback"]["labelled"].as_u64(), monitor["feedback"]["precision"].as_f64()), (Some(40), Some(1.0)));
    assert!(monitor["alerts"].as_object().unwrap().is_empty());

    // The regions marked wrong reach the trainer as samples with their true class.
    sub.wait_until(Duration::from_secs(20), "a sample for every region marked wrong", |_| {
        let missed = latest_monitor(&sub)["samples"]["missed"].as_u64().unwrap_or(0);
        samples(&sub).values().filter(|(meta, _)| meta["reason"] == "feedback_wrong").count() as u64 + missed == 40
    });
    let marked: Vec<(Value, Vec<u8>)> = samples(&sub).into_values().filter(|(meta, _)| meta["reason"] == "feedback_wrong").collect();
    assert!(marked.len() >= 30, "only {} of 40 regions marked wrong were saved", marked.len());
    let truth_of: BTreeMap<u64, &str> = wrong.iter().copied().collect();
    for (meta, jpeg) in &marked {
        let seq = meta["seq"].as_u64().unwrap();
        assert_eq!(meta["truth"].as_str(), truth_of.get(&seq).copied(), "{meta}");
        let (_, predicted, frame_index) = predictions.iter().find(|p| p.0 == seq).unwrap();
        assert_eq!((meta["class"].as_str(), meta["frame_index"].as_u64()), (Some(predicted.as_str()), Some(*frame_index)));
        let image = image::load_from_memory(jpeg).expect("a valid JPEG").to_rgb8();
        // The whole 640×400 frame (regions = "full"), scaled to samples.max_side = 256.
        assert_eq!((image.width(), image.height(), meta["bbox"].clone()), (256, 160, json!([0, 0, 640, 400])));
        let expected = clip_frame_rgb(*frame_index, 256, 160);
        let difference: f64 = image.as_raw().iter().zip(&expected).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / expected.len() as f64;
        assert!(difference < 8.0, "sample of frame {frame_index} differs from the frame by {difference:.1} per channel");
    }

    // The disk budget holds: the oldest samples went.
    let figures = latest_monitor(&sub)["samples"].clone();
    let on_disk: u64 = std::fs::read_dir(agent.state_dir().join("samples")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    println!("samples: {figures}; {on_disk} bytes on disk; {} received on MQTT", samples(&sub).len());
    assert!(on_disk <= 1 << 20, "{on_disk} bytes on disk");
    // Every frame's crop was saved, or dropped and counted when the sampler was behind (a busy machine).
    let (saved, dropped) = (figures["saved"].as_u64().unwrap(), figures["dropped"].as_u64().unwrap());
    assert!(figures["evicted"].as_u64().unwrap() > 0 && (saved + dropped) as usize >= frames && saved as usize >= frames / 2, "{figures}");
    assert!(agent.terminate().success(), "{}", agent.log());
}

/// The bundled clip through an ffmpeg filter.
fn filtered_clip(dir: &Path, name: &str, filter: &str) -> std::path::PathBuf {
    let out = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(road_clip())
        .args(["-vf", filter, "-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&out)
        .status()
        .expect("ffmpeg (apt-get install ffmpeg)");
    assert!(status.success());
    out
}

#[test]
fn a_dark_and_a_blurred_camera_alert_for_themselves_only_and_a_foreign_class_mix_alerts_and_asks_for_retraining() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    let clips = tempfile::tempdir().unwrap();
    let dark = filtered_clip(clips.path(), "dark.mp4", "lutyuv=y=val*0.15");
    let blurred = filtered_clip(clips.path(), "blurred.mp4", "gblur=sigma=4");
    // The trainer says this model saw buses only: the road clip's mix is far from it.
    let model = bundled_model_with("efficientnet_lite0.toml", |spec| spec + "\n[reference]\nclasses = { bus = 1.0 }\n");
    let cameras = [camera("road", &road_clip(), ""), camera("dark", &dark, ""), camera("blurred", &blurred, "")].concat();
    let config = format!(
        "{}\n[monitor.drift]\nclass_window = 100\ninput_every_frames = 10\ninput_window = 10\n[samples]\nenabled = false\n",
        agent_config(&broker, &cameras)
    )
    .replace(&repo("models/efficientnet_lite0.onnx").display().to_string(), &model.path().join("efficientnet_lite0.onnx").display().to_string());
    let mut agent = Agent::start(&config);
    let frames = road_clip_frames() as usize;
    sub.wait_until(Duration::from_secs(180), "every camera's frames", |_| {
        ["road", "dark", "blurred"].iter().all(|c| sub.on(&format!("/predictions/{c}")).len() >= frames)
    });
    std::thread::sleep(Duration::from_millis(2500)); // the last judgements and telemetry

    let raised: BTreeSet<(String, String)> = alerts(&sub, "raised")
        .iter()
        .map(|e| (e["alert"].as_str().unwrap().to_string(), e["camera"].as_str().unwrap().to_string()))
        .collect();
    let has = |alert: &str, camera: &str| raised.contains(&(alert.to_string(), camera.to_string()));
    println!("raised: {raised:?}");
    assert!(has("brightness", "dark"), "{raised:?}");
    assert!(has("sharpness", "blurred"), "{raised:?}");
    for input in ["brightness", "contrast", "sharpness"] {
        assert!(!has(input, "road"), "the untouched camera raised {input}: {raised:?}");
    }
    assert!(!has("brightness", "blurred") && !has("contrast", "blurred"), "{raised:?}");
    for camera in ["road", "dark", "blurred"] {
        assert!(has("class_mix", camera), "{raised:?}");
    }
    for event in sub.events("alert") {
        assert_matches_schema(&event, "event.json");
    }
    assert_eq!(alerts(&sub, "raised").len(), raised.len(), "one alert per crossing");

    let cameras = latest_monitor(&sub)["cameras"].clone();
    println!("{cameras:#}");
    let figure = |camera: &str, what: &str| cameras[camera][what].as_f64().unwrap();
    assert!(figure("road", "brightness") > 80.0 && figure("dark", "brightness") < 20.0);
    assert!(figure("road", "sharpness") > 10.0 * figure("blurred", "sharpness"));
    assert_eq!(cameras["road"]["baseline"], "spec");
    assert!(figure("road", "class_mix_distance") > 0.35);

    // Drift in what the model sees asks the trainer once (per model and reason);
    // a camera problem does not.
    let requests = retrain_requests(&sub);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_matches_schema(&requests[0], "retrain.json");
    assert_eq!(requests[0]["reason"], "class_mix");
    assert!(["road", "dark", "blurred"].contains(&requests[0]["evidence"]["camera"].as_str().unwrap()));
    assert!(agent.terminate().success(), "{}", agent.log());
}

/// A clip of one still photo, `frames` frames long.
fn still_clip(dir: &Path, photo: &str, frames: u32) -> std::path::PathBuf {
    let out = dir.join(format!("{photo}.mp4"));
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-loop", "1", "-i"])
        .arg(repo("media/sources").join(photo))
        .args(["-frames:v", &frames.to_string(), "-r", "25", "-vf", "scale=640:400,format=yuv420p", "-c:v", "libx264", "-preset", "ultrafast"])
        .arg(&out)
        .status()
        .expect("ffmpeg (apt-get install ffmpeg)");
    assert!(status.success());
    out
}

fn learned_baseline_log_lines(agent: &Agent) -> usize {
    agent.log().matches("learned this camera's class mix baseline").count()
}

/// Issue #12, bug 7: `cam.1` and `cam_1` were both kept in
/// `baseline-cam_1.json`, so after a restart one camera was judged against
/// the other's baseline: a class_mix alert at 1.0 and a retrain request.
#[test]
fn cameras_whose_ids_differ_only_in_punctuation_keep_their_own_baselines_across_a_restart() {
    let broker = Mosquitto::start();
    let clips = tempfile::tempdir().unwrap();
    // Each camera sees one still scene, so its class mix never drifts from its own baseline.
    const FRAMES: usize = 100;
    let motorcycle = still_clip(clips.path(), "motorcycle_left.png", FRAMES as u32);
    let horses = still_clip(clips.path(), "horses.jpg", FRAMES as u32);
    let cameras = [camera("cam.1", &motorcycle, ""), camera("cam_1", &horses, "")].concat();
    let config = format!(
        "{}\n[monitor.drift]\nclass_window = 30\nreference_regions = 30\n[samples]\nenabled = false\n",
        agent_config(&broker, &cameras)
    );
    let all_frames = |sub: &Subscriber| ["cam.1", "cam_1"].iter().all(|c| sub.on(&format!("/predictions/{c}")).len() >= FRAMES);

    let sub = Subscriber::start(broker.port, "cctv/#");
    let mut first = Agent::start(&config);
    sub.wait_until(Duration::from_secs(120), "every frame of both cameras", |_| all_frames(&sub));
    let baselines = first.state_dir().join("monitor");
    sub.wait_until(Duration::from_secs(10), "both baselines on disk", |_| std::fs::read_dir(&baselines).map(|d| d.count()).unwrap_or(0) >= 2);
    std::thread::sleep(Duration::from_millis(2500)); // judgements against the baselines just learned
    assert_eq!(learned_baseline_log_lines(&first), 2, "{}", first.log());
    assert!(alerts(&sub, "raised").is_empty(), "{:?}", alerts(&sub, "raised"));
    assert!(first.terminate().success(), "{}", first.log());

    // Two files, each naming its camera, with mixes far enough apart that
    // judging one camera by the other's baseline raises class_mix.
    let mut files: BTreeMap<String, Value> = BTreeMap::new();
    for entry in std::fs::read_dir(&baselines).unwrap() {
        let file: Value = serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        files.insert(file["camera"].as_str().unwrap().to_string(), file);
    }
    assert_eq!(files.keys().map(String::as_str).collect::<Vec<_>>(), ["cam.1", "cam_1"], "{files:?}");
    let mix = |camera: &str| -> BTreeMap<String, f64> { serde_json::from_value(files[camera]["classes"].clone()).unwrap() };
    let (a, b) = (mix("cam.1"), mix("cam_1"));
    let distance = 0.5 * a.keys().chain(b.keys()).collect::<BTreeSet<_>>().iter().map(|c| (a.get(*c).unwrap_or(&0.0) - b.get(*c).unwrap_or(&0.0)).abs()).sum::<f64>();
    assert!(distance > 0.35, "the two scenes must differ for this test to mean anything: {a:?} {b:?}");

    // After a restart each camera is judged against its own baseline, loaded, not learned again.
    let sub = Subscriber::start(broker.port, "cctv/#");
    let mut second = Agent::start_in(first.into_dir(), &config);
    sub.wait_until(Duration::from_secs(120), "every frame of both cameras again", |_| all_frames(&sub));
    sub.wait_until(Duration::from_secs(10), "both full windows judged", |_| {
        let cameras = latest_monitor(&sub)["cameras"].clone();
        ["cam.1", "cam_1"].iter().all(|c| cameras[c]["class_mix_distance"].is_number())
    });
    std::thread::sleep(Duration::from_millis(2500));
    let cameras = latest_monitor(&sub)["cameras"].clone();
    println!("{cameras:#}");
    for camera in ["cam.1", "cam_1"] {
        assert_eq!(cameras[camera]["baseline"], "learned", "{cameras}");
        assert!(cameras[camera]["class_mix_distance"].as_f64().unwrap() < 0.1, "{camera} judged against another baseline: {cameras}");
    }
    assert!(alerts(&sub, "raised").is_empty(), "{:?}", alerts(&sub, "raised"));
    assert!(retrain_requests(&sub).is_empty(), "{:?}", retrain_requests(&sub));
    assert_eq!(learned_baseline_log_lines(&second), 0, "a baseline was learned again instead of loaded: {}", second.log());
    assert!(!second.log().contains("belongs to another camera"), "{}", second.log());
    assert!(second.terminate().success(), "{}", second.log());
}

/// Issue #12: the outbox, samples and baselines were created 0644 under a
/// umask of 022 (systemd's UMask=0077 only hid it). What the agent keeps is
/// its own, whoever starts it.
#[test]
fn files_under_state_dir_are_owner_only_whatever_the_umask() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    let config = format!(
        "{}\n[monitor.drift]\nreference_regions = 20\n[samples]\nrandom_rate = 1.0\nmax_per_hour = 100000\n",
        agent_config(&broker, &camera("road", &road_clip(), ""))
    );
    // SAFETY: umask is process-wide; it is inherited by the agent started
    // here and put back at once (other tests' files do not depend on it).
    let old = unsafe { libc::umask(0o022) };
    let mut agent = Agent::start(&config);
    unsafe { libc::umask(old) };
    let state = agent.state_dir();
    sub.wait_until(Duration::from_secs(60), "a baseline, samples and the outbox on disk", |_| {
        state.join("outbox.redb").exists() && state.join("monitor/baseline-road.json").exists() && std::fs::read_dir(state.join("samples")).map(|d| d.count() >= 2).unwrap_or(false)
    });
    assert!(agent.terminate().success(), "{}", agent.log());

    use std::os::unix::fs::PermissionsExt;
    let mut seen = Vec::new();
    let mut folders = vec![state.clone()];
    while let Some(folder) = folders.pop() {
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", folder.display());
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
                seen.push(path);
            }
        }
    }
    assert!(seen.iter().any(|p| p.ends_with("outbox.redb")) && seen.iter().any(|p| p.extension().is_some_and(|e| e == "jpg")), "{seen:?}");
}

/// The bundled clip as a tracked camera: two lanes and a counting line.
/// `extra` is more of the camera's keys (before its sub-tables).
fn tracked_camera(id: &str, extra: &str) -> String {
    format!(
        r#"[[cameras]]
id = "{id}"
url = "{url}"
regions = "motion"
replay = "asap"
{extra}
{scene}"#,
        url = road_clip().display(),
        scene = ROAD_SCENE,
    )
}

/// `bbox` of frame `index` of the bundled clip, scaled to `width`×`height`, as RGB.
fn clip_crop_rgb(index: u64, bbox: [i64; 4], width: i32, height: i32) -> Vec<u8> {
    let frame = clip_frame(index);
    let region = Mat::roi(&frame, opencv::core::Rect::new(bbox[0] as i32, bbox[1] as i32, bbox[2] as i32, bbox[3] as i32)).unwrap();
    scaled_rgb(&region.try_clone().unwrap(), width, height)
}

/// Issue #13: a loop detector or weigh-in-motion station labels vehicles,
/// not frames. On a tracked camera each vehicle counts once in precision,
/// its frames not at all, and the trainer gets one sample per vehicle.
#[test]
fn per_vehicle_feedback_counts_vehicles_not_frames_and_saves_the_mistaken_vehicles_best_view() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/#");
    // Frames are published too, so that the test can label one by seq (refused)
    // and see that the per-frame sampler offers none of them.
    let config = format!(
        "{}\n[monitor]\nfeedback_window = 40\nmin_labelled = 4\nprecision_alert_below = 0.8\nprecision_clear_at = 0.9\n[samples]\nrandom_rate = 1.0\nmax_per_hour = 100000\n",
        agent_config(&broker, &tracked_camera("road", "publish_frames = true"))
    );
    let mut agent = Agent::start(&config);
    agent.wait_for_log("file finished", 1, Duration::from_secs(120));
    // The last tracks end once the camera has been silent for 2 s.
    std::thread::sleep(Duration::from_secs(4));
    let vehicles: Vec<Value> = sub.on("/vehicles/road").into_iter().map(|m| m.payload).collect();
    let tracks: Vec<(String, String)> = vehicles.iter().map(|v| (v["track"].as_str().unwrap().to_string(), v["class"].as_str().unwrap().to_string())).collect();
    println!("vehicles: {tracks:?}");
    assert!(tracks.len() >= 3, "the clip's vehicles were not tracked: {tracks:?}\n{}", agent.log());
    let frames = sub.on("/predictions/road");
    assert!(frames.len() > 5 * tracks.len(), "publish_frames = true: {} frame predictions", frames.len());

    // One sample per vehicle (random_rate = 1), tied to its track; none per frame.
    sub.wait_until(Duration::from_secs(20), "a sample per vehicle", |_| samples(&sub).len() >= tracks.len());
    std::thread::sleep(Duration::from_millis(500));
    let saved = samples(&sub);
    let sampled: BTreeSet<&str> = saved.values().filter_map(|(meta, _)| meta["track"].as_str()).collect();
    let all_tracks: BTreeSet<&str> = tracks.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(saved.len(), tracks.len(), "a tracked camera's frames were sampled: {:?}", saved.keys().collect::<Vec<_>>());
    assert_eq!(sampled, all_tracks);

    // The sensor's labels: every vehicle, all but one agreeing; with them, a
    // label for one of the camera's frames by seq, which must not count.
    let (wrong_track, predicted) = tracks[1].clone();
    let truth = other_class(&predicted);
    let mut labels: Vec<Value> = tracks
        .iter()
        .map(|(track, class)| json!({"track": track, "class": if *track == wrong_track { truth } else { class.as_str() }, "source": "wim-1"}))
        .collect();
    let frame_seq = frames[frames.len() / 2].payload["seq"].as_u64().unwrap();
    labels.insert(1, json!({"seq": frame_seq, "region": 0, "class": "car"}));
    for label in &labels {
        assert_matches_schema(label, "feedback.json");
    }
    publish(broker.port, FEEDBACK, &serde_json::to_vec(&labels).unwrap());
    let n = tracks.len() as u64;
    sub.wait_until(Duration::from_secs(10), "the vehicles' labels in telemetry", |_| latest_monitor(&sub)["feedback"]["labelled"].as_u64().is_some_and(|l| l >= n));
    std::thread::sleep(Duration::from_millis(1500)); // a later figure would show the frame's label too
    let feedback = latest_monitor(&sub)["feedback"].clone();
    println!("feedback: {feedback}");
    assert_eq!((feedback["labelled"].as_u64(), feedback["correct"].as_u64()), (Some(n), Some(n - 1)), "{feedback}");
    assert!((feedback["precision"].as_f64().unwrap() - (n - 1) as f64 / n as f64).abs() < 1e-9, "{feedback}");
    assert_eq!(feedback["confusion"][&predicted][truth], 1, "{feedback}");

    // An unknown track is refused, naming it and saying what to send.
    publish(broker.port, FEEDBACK, br#"{"track": "road-999999", "class": "car"}"#);
    sub.wait_until(Duration::from_secs(10), "2 rejections", |_| sub.events("feedback_rejected").len() == 2);
    let rejected = sub.events("feedback_rejected");
    for event in &rejected {
        assert_matches_schema(event, "event.json");
    }
    let reasons: Vec<&str> = rejected.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert!(reasons[0].contains(&format!("seq {frame_seq}")) && reasons[0].contains("tracks vehicles") && reasons[0].contains("\"track\""), "{reasons:?}");
    assert!(reasons[1].contains("track `road-999999`") && reasons[1].contains("/vehicles/"), "{reasons:?}");
    assert!(rejected[1]["prediction_seq"].is_null());
    assert_eq!(latest_monitor(&sub)["feedback"]["labelled"], n);

    // Precision below 0.8 with 4 labels: one alert, one retrain request whose mistake names the track.
    sub.wait_until(Duration::from_secs(10), "the precision alert", |_| !alerts(&sub, "raised").is_empty());
    let requests = retrain_requests(&sub);
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_matches_schema(&requests[0], "retrain.json");
    let mistakes = requests[0]["evidence"]["mistakes"].clone();
    assert_eq!(mistakes, json!([{"track": wrong_track, "camera": "road", "predicted": predicted, "truth": truth, "source": "wim-1"}]), "{}", requests[0]);

    // The vehicle marked wrong reaches the trainer: its best view, with its true class.
    sub.wait_until(Duration::from_secs(20), "the mistaken vehicle's sample", |_| samples(&sub).values().any(|(meta, _)| meta["reason"] == "feedback_wrong"));
    let marked: Vec<(Value, Vec<u8>)> = samples(&sub).into_values().filter(|(meta, _)| meta["reason"] == "feedback_wrong").collect();
    assert_eq!(marked.len(), 1, "{marked:?}");
    let (meta, jpeg) = &marked[0];
    let vehicle = vehicles.iter().find(|v| v["track"] == wrong_track.as_str()).unwrap();
    assert_eq!((meta["track"].as_str(), meta["truth"].as_str(), meta["class"].as_str()), (Some(wrong_track.as_str()), Some(truth), Some(predicted.as_str())), "{meta}");
    assert_eq!((&meta["bbox"], &meta["frame_index"], &meta["votes"]), (&vehicle["bbox"], &vehicle["best_frame"], &vehicle["votes"]), "{meta}");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(agent.state_dir().join("samples").join(format!("{}.json", meta["id"].as_str().unwrap()))).unwrap()).unwrap();
    assert_eq!((on_disk["track"].as_str(), on_disk["truth"].as_str()), (Some(wrong_track.as_str()), Some(truth)));
    let image = image::load_from_memory(jpeg).expect("a valid JPEG").to_rgb8();
    let view = bbox(&vehicle["bbox"]);
    let scale = (256.0 / view[2].max(view[3]) as f64).min(1.0);
    let (width, height) = ((view[2] as f64 * scale).round() as u32, (view[3] as f64 * scale).round() as u32);
    assert_eq!((image.width(), image.height()), (width, height));
    let expected = clip_crop_rgb(vehicle["best_frame"].as_u64().unwrap(), view, width as i32, height as i32);
    let difference: f64 = image.as_raw().iter().zip(&expected).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>() / expected.len() as f64;
    assert!(difference < 8.0, "the sample differs from the vehicle's best view by {difference:.1} per channel");
    assert!(agent.terminate().success(), "{}", agent.log());
}
