//! Integration tests: the real agent binary against real Mosquitto, real
//! ONNX Runtime, real OpenCV decoding and a real RTSP server.

mod support;

use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::Duration;
use support::*;

const ROAD_CLASSES: &[&str] = &["car", "van", "truck", "bus", "motorcycle", "bicycle", "tram", "none"];

fn camera(id: &str, url: &str, extra: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\n{extra}\n")
}

/// Waits until telemetry says the file camera finished and every prediction
/// it made has arrived; returns those predictions.
fn wait_for_file_to_finish(sub: &Subscriber, camera: &str, timeout: Duration) -> Vec<Value> {
    let suffix = format!("/predictions/{camera}");
    sub.wait_until(timeout, &format!("camera {camera} to finish"), |messages| {
        let Some(telemetry) = messages.iter().rev().find(|m| m.topic.ends_with("/telemetry")) else { return false };
        let Some(cam) = telemetry.payload["cameras"].as_array().and_then(|cs| cs.iter().find(|c| c["id"] == camera)) else {
            return false;
        };
        let received = messages.iter().filter(|m| m.topic.ends_with(&suffix)).count() as u64;
        cam["state"] == "finished" && cam["frames_processed"].as_u64() == Some(received)
    });
    sub.on(&suffix).into_iter().map(|m| m.payload).collect()
}

fn sha256_of_bundled_model() -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(repo("models/efficientnet_lite0.onnx")).unwrap();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn classify_gives_the_road_class_of_real_photos() {
    let cases = [
        ("crop_dog_truck.png", "car"), // a pickup: a light 4-tyre vehicle in models/road_taxonomy.toml
        ("crop_scenetext01_car.png", "car"),
        ("motorcycle_left.png", "motorcycle"),
        ("crop_bikes_f090_van.png", "van"),
        ("horses.jpg", "none"),
    ];
    let images: Vec<_> = cases.iter().map(|(f, _)| repo("media/sources").join(f)).collect();
    let out = Command::new(BIN).arg("classify").arg("--model").arg(repo("models/efficientnet_lite0.onnx")).args(&images).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), cases.len());
    for ((file, class), line) in cases.iter().zip(&lines) {
        assert!(line["image"].as_str().unwrap().ends_with(file));
        assert_eq!(line["class"], *class, "{file}: {line}");
        let top_k = line["top_k"].as_array().unwrap();
        assert_eq!(top_k.len(), 5);
        let scores: Vec<f64> = top_k.iter().map(|t| t["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "top_k sorted: {scores:?}");
        assert!(top_k.iter().all(|t| t["index"].as_u64().unwrap() < 1000 && t["label"].is_string()));
    }
    // The motorcycle's top label is one of ImageNet's two motorbike classes.
    let top = lines[2]["top_k"][0]["index"].as_u64().unwrap();
    assert!(top == 665 || top == 670, "motorcycle top-1 index {top}");
}

#[test]
fn classify_reports_an_unreadable_image_and_still_classifies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("not-an-image.png");
    std::fs::write(&bogus, b"plain text").unwrap();
    let good = repo("media/sources/motorcycle_left.png");
    let out = Command::new(BIN).arg("classify").arg("--model").arg(repo("models/efficientnet_lite0.onnx")).arg(&bogus).arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not-an-image.png") && stderr.contains("cannot read it as an image"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"class\":\"motorcycle\""), "{stdout}");
}

#[test]
fn motion_regions_on_the_road_clip_get_the_true_road_class() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let cameras = camera("road", &road_clip().display().to_string(), "regions = \"motion\"\nreplay = \"asap\"");
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    let predictions = wait_for_file_to_finish(&sub, "road", Duration::from_secs(120));
    assert!(agent.terminate().success(), "{}", agent.log());

    let truth = road_truth();
    let by_frame: BTreeMap<u64, &Value> = predictions.iter().map(|p| (p["frame_index"].as_u64().unwrap(), p)).collect();
    let mut report = Vec::new();
    for object in truth["objects"].as_array().unwrap() {
        let class = object["class"].as_str().unwrap();
        let visible: Vec<&Value> = object["frames"].as_array().unwrap().iter().filter(|f| f["fully_visible"] == true).collect();
        let mut found: BTreeMap<String, usize> = BTreeMap::new();
        for frame in &visible {
            let expected = bbox(&frame["bbox"]);
            let Some(prediction) = by_frame.get(&frame["frame"].as_u64().unwrap()) else { continue };
            let best = prediction["regions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (iou(&bbox(&r["bbox"]), &expected), r))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((overlap, region)) = best {
                if overlap >= 0.5 {
                    *found.entry(region["class"].as_str().unwrap().to_string()).or_default() += 1;
                }
            }
        }
        let matched: usize = found.values().sum();
        let correct = found.get(class).copied().unwrap_or(0);
        report.push(format!("{class}: {matched}/{} visible frames found, classes {found:?}", visible.len()));
        // asap replay drops nothing: the detector must find the object in most frames...
        assert!(matched * 10 >= visible.len() * 8, "{class} found in too few frames:\n{}", report.join("\n"));
        // ...and the classifier must name it correctly in most of them.
        assert!(correct * 10 >= matched * 6, "{class} misclassified:\n{}", report.join("\n"));
    }
    println!("{}", report.join("\n"));
}

#[test]
fn predictions_carry_the_contract_fields_with_no_gaps_and_status_follows_the_agent() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let cameras = camera("road", &road_clip().display().to_string(), "regions = \"full\"\nreplay = \"asap\"");
    let config = agent_config(&broker, &cameras);
    let mut agent = Agent::start(&config);
    let predictions = wait_for_file_to_finish(&sub, "road", Duration::from_secs(120));
    let status = agent.terminate();
    assert!(status.success(), "exit {status}; log:\n{}", agent.log());

    // Every frame of the clip, once, in order, with rising seq; numbers in
    // between went to the samples and events this device published.
    let frames: Vec<u64> = predictions.iter().map(|p| p["frame_index"].as_u64().unwrap()).collect();
    let truth = road_truth();
    assert_eq!(frames, (0..truth["frames"].as_u64().unwrap()).collect::<Vec<_>>());
    let seqs: Vec<u64> = predictions.iter().map(|p| p["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "seq repeats or goes back");
    sub.assert_seq_gapless();

    let sha = sha256_of_bundled_model();
    for p in &predictions {
        assert_matches_schema(p, "prediction.json");
        assert_eq!(p["device"], "test-pole");
        assert_eq!(p["camera"], "road");
        let at = p["captured_at"].as_str().unwrap();
        assert!(at.ends_with('Z') && humantime::parse_rfc3339(at).is_ok(), "captured_at {at}");
        assert_eq!(p["model"]["name"], "efficientnet_lite0");
        assert_eq!(p["model"]["version"], "1");
        assert_eq!(p["model"]["sha256"], sha.as_str());
        let regions = p["regions"].as_array().unwrap();
        assert_eq!(regions.len(), 1);
        assert_eq!(bbox(&regions[0]["bbox"]), [0, 0, 640, 400]);
        assert!(ROAD_CLASSES.contains(&regions[0]["class"].as_str().unwrap()));
        let score = regions[0]["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score));
        assert_eq!(regions[0]["top_k"].as_array().unwrap().len(), 5);
    }

    for m in sub.on("/status") {
        assert_matches_schema(&m.payload, "status.json");
    }
    // The broker keeps the last status for subscribers that come later.
    let late = Subscriber::start(broker.port, "cctv/test-pole/status");
    late.wait_until(Duration::from_secs(5), "the retained status", |m| !m.is_empty());
    let retained = &late.all()[0];
    assert!(retained.retain && retained.payload["state"] == "offline", "{retained:?}");
    for m in sub.on("/telemetry") {
        assert_matches_schema(&m.payload, "telemetry.json");
    }
    let states: Vec<String> = sub.on("/status").iter().map(|m| m.payload["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states.first().map(String::as_str), Some("online"));
    assert_eq!(states.last().map(String::as_str), Some("offline"), "states: {states:?}");

    let telemetry = sub.on("/telemetry");
    let last = &telemetry.last().expect("telemetry arrived").payload;
    assert_eq!(last["model"]["sha256"], sha.as_str());
    assert!(last["system"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(last["agent"]["rss_bytes"].as_u64().unwrap() > 10_000_000);
    assert!(last["system"]["cpu_percent"].is_number());
    let cam = &last["cameras"][0];
    assert_eq!(cam["frames_in"].as_u64(), Some(frames.len() as u64));
    assert_eq!(cam["frames_dropped"].as_u64(), Some(0));
    assert!(cam["latency_ms_p50"].as_f64().unwrap() > 0.0);
    assert!(cam["latency_ms_p95"].as_f64().unwrap() >= cam["latency_ms_p50"].as_f64().unwrap());

    // A restart on the same state continues the sequence: no number is reused.
    let last_seq = *seqs.last().unwrap();
    let before = sub.on("/predictions/road").len();
    let mut again = Agent::start_in(agent.into_dir(), &config);
    sub.wait_until(Duration::from_secs(60), "a prediction after the restart", |m| {
        m.iter().filter(|m| m.topic.ends_with("/predictions/road")).count() > before
    });
    assert!(again.terminate().success());
    let first_after = sub.on("/predictions/road")[before].payload["seq"].as_u64().unwrap();
    assert_eq!(first_after, last_seq + 1);
}

#[test]
fn the_last_will_marks_the_device_offline_when_the_agent_dies() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/status");
    let mut agent = Agent::start(&agent_config(&broker, &camera("road", &road_clip().display().to_string(), "")));
    sub.wait_until(Duration::from_secs(30), "online", |m| m.iter().any(|m| m.payload["state"] == "online"));
    agent.kill();
    sub.wait_until(Duration::from_secs(10), "offline from the Last Will", |m| m.last().is_some_and(|m| m.payload["state"] == "offline"));
}

#[test]
fn predictions_reach_a_tls_broker_that_the_configured_ca_vouches_for() {
    let certs = TestCertificates::new();
    let (broker, plain_port) = Mosquitto::start_tls(&certs, false);
    let sub = Subscriber::start(plain_port, "cctv/test-pole/predictions/+");
    let config = agent_config(&broker, &camera("road", &road_clip().display().to_string(), "regions = \"full\"\nreplay = \"asap\""))
        .replace("url = \"mqtt://127.0.0.1:", "url = \"mqtts://localhost:")
        .replace("[model]", &format!("ca_file = \"{}\"\n[model]", certs.ca.display()));
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "a prediction over TLS", |m| !m.is_empty());
    assert!(agent.terminate().success(), "{}", agent.log());
}

#[test]
fn watch_prints_one_line_per_prediction() {
    let broker = Mosquitto::start();
    let mut watch = Command::new(BIN)
        .args(["watch", "--url", &broker.url(), "--device", "test-pole"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500)); // let it subscribe
    let mut agent = Agent::start(&agent_config(&broker, &camera("road", &road_clip().display().to_string(), "regions = \"full\"\nreplay = \"asap\"")));
    let mut lines = Vec::new();
    while lines.len() < 3 {
        lines.push(rx.recv_timeout(Duration::from_secs(60)).expect("watch printed a line"));
    }
    agent.terminate();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(lines[0], "test-pole is online");
    // seq 1 is the first frame's; samples and events may take numbers in between.
    assert!(lines[1].starts_with("test-pole/road #1 frame 0 | "), "{}", lines[1]);
    assert!(lines[2].starts_with("test-pole/road #") && lines[2].contains(" frame 1 | "), "{}", lines[2]);
}

#[test]
fn an_rtsp_camera_is_classified() {
    let server = RtspServer::serve(&road_clip());
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/predictions/+");
    let cameras = camera("rtsp", &server.url(), "regions = \"motion\"");
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    // The first object on the clip is a car, about 1.5 s in.
    sub.wait_until(Duration::from_secs(60), "a car from the RTSP camera", |messages| {
        messages.iter().any(|m| m.payload["regions"].as_array().is_some_and(|rs| rs.iter().any(|r| r["class"] == "car")))
    });
    assert!(agent.terminate().success(), "{}", agent.log());
    assert!(agent.log().contains("camera opened"));
}

#[test]
fn bad_cameras_are_reported_and_the_good_one_keeps_serving() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let dir = tempfile::tempdir().unwrap();
    let noise = dir.path().join("noise.mp4");
    std::fs::write(&noise, (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<_>>()).unwrap();
    let missing = dir.path().join("missing.mp4");
    let dead_port = free_port();
    let cameras = [
        camera("good", &road_clip().display().to_string(), "regions = \"full\"\nloop = true"),
        camera("missing", &missing.display().to_string(), ""),
        camera("noise", &noise.display().to_string(), ""),
        camera("unreachable", &format!("rtsp://127.0.0.1:{dead_port}/cam"), ""),
    ]
    .concat();
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    sub.wait_until(Duration::from_secs(60), "predictions from the good camera and errors for the bad ones", |messages| {
        let good = messages.iter().filter(|m| m.topic.ends_with("/predictions/good")).count();
        let Some(t) = messages.iter().rev().find(|m| m.topic.ends_with("/telemetry")) else { return false };
        let errors = t.payload["cameras"].as_array().unwrap().iter().filter(|c| c["last_error"].is_string()).count();
        good >= 20 && errors == 3
    });
    let telemetry = sub.on("/telemetry").last().unwrap().payload.clone();
    let camera_state = |id: &str| telemetry["cameras"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap().clone();
    assert_eq!(camera_state("good")["state"], "running");
    let missing_state = camera_state("missing");
    assert!(missing_state["last_error"].as_str().unwrap().contains("does not exist"), "{missing_state}");
    let noise_state = camera_state("noise");
    assert!(noise_state["last_error"].as_str().unwrap().contains("video file"), "{noise_state}");
    let unreachable = camera_state("unreachable");
    assert!(unreachable["last_error"].as_str().unwrap().contains("reachable"), "{unreachable}");
    for id in ["missing", "noise", "unreachable"] {
        assert_eq!(camera_state(id)["state"], "retrying", "{id}");
    }
    assert!(agent.terminate().success());
    let log = agent.log();
    assert!(log.contains("missing.mp4 does not exist"), "{log}");
    // Nothing the bad cameras did stopped the good camera's predictions.
    let cameras_seen: HashSet<String> = sub.on("").iter().filter(|m| m.topic.contains("/predictions/")).map(|m| m.payload["camera"].as_str().unwrap().to_string()).collect();
    assert_eq!(cameras_seen, HashSet::from(["good".to_string()]));
}

#[test]
fn a_config_with_a_wrong_key_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    let good = std::fs::read_to_string(repo("config/example.toml")).unwrap();
    std::fs::write(&path, good.replace("interval_seconds = 10", "interval_secs = 10")).unwrap();

    let check = Command::new(BIN).arg("check-config").arg(&path).output().unwrap();
    assert_eq!(check.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains("interval_secs") && stderr.contains("interval_seconds"), "{stderr}");

    let run = Command::new(BIN).arg("run").arg("--config").arg(&path).output().unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("interval_secs"));

    let example = Command::new(BIN).arg("check-config").arg(repo("config/example.toml")).output().unwrap();
    assert!(example.status.success(), "the documented example must stay valid: {}", String::from_utf8_lossy(&example.stderr));
}

/// Issue #12, bug 6: configs that `check-config` passed and `run` then
/// crashed on (a panic, a 4 TB allocation, a dead updater thread) or
/// misbehaved with (never connected, a broker that drops everything, the
/// password in every log line). Each is refused by both, naming its key.
#[test]
fn configs_run_cannot_use_are_refused_by_check_config_and_run_with_the_key_named() {
    let password = "pw-Never-Printed-9";
    let example = std::fs::read_to_string(repo("config/example.toml")).unwrap();
    let registry = |extra: &str| format!("{example}\n[registry]\nurl = \"http://127.0.0.1:5000/roadside/vc\"\npublic_keys = [\"trainer.pub\"]\n{extra}\n");
    let cases: Vec<(&str, String)> = vec![
        ("mqtt.queue_capacity", example.replace("queue_capacity = 256", "queue_capacity = 4611686018427387904")),
        ("registry.validation_runs", registry("validation_runs = 1000000000000")),
        ("registry.poll_seconds", registry("poll_seconds = 9223372036854775807")),
        ("registry.latency_budget_ms", registry("latency_budget_ms = nan")),
        ("registry.latency_budget_ms", registry("latency_budget_ms = -5.0")),
        ("registry.probation_min_score_ratio", registry("probation_min_score_ratio = nan")),
        ("device_id", example.replace("device_id = \"pole-17\"", &format!("device_id = \"{}\"", "d".repeat(70_000)))),
        ("mqtt.topic_root", example.replace("topic_root = \"cctv\"", "topic_root = \"$SYS\"")),
        ("mqtt.url", example.replace("mqtt://127.0.0.1:1883", &format!("mqtt://pole:{password}@127.0.0.1:1883"))),
        ("cameras[0].id", example.replace("id = \"north\"", &format!("id = \"{}\"", "c".repeat(300)))),
        ("cameras[1].id", example.replace("id = \"lanes\"", "id = \"lanes/+\"")),
        ("samples.random_rate", example.replace("random_rate = 0.002", "random_rate = nan")),
        ("samples.low_confidence_below", example.replace("low_confidence_below = 0.5", "low_confidence_below = -1.0")),
        ("monitor.drift.class_mix_alert_above", example.replace("class_mix_alert_above = 0.35", "class_mix_alert_above = -0.35")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    for (key, config) in &cases {
        std::fs::write(&path, config).unwrap();
        let check = Command::new(BIN).arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(2), "{key}: check-config passed it: {stderr}");
        assert!(stderr.contains(&format!("`{key}`")), "{key}: {stderr}");
        assert!(!stderr.contains(password) && !String::from_utf8_lossy(&check.stdout).contains(password), "{key}: the password was printed: {stderr}");
        assert!(stderr.len() < 1000, "{key}: {} bytes of error", stderr.len());

        // The same validation at `run`: refused before anything starts.
        let run = Command::new(BIN).arg("run").arg("--config").arg(&path).env("CCTV_LOG", "debug").output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && stderr.contains(&format!("`{key}`")), "{key}: run: {stderr}");
        assert!(!stderr.contains(password), "{key}: run printed the password: {stderr}");
    }
    // The credentials case says where the password goes instead.
    std::fs::write(&path, &cases.iter().find(|(key, _)| *key == "mqtt.url").unwrap().1).unwrap();
    let check = Command::new(BIN).arg("check-config").arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&check.stderr).contains("mqtt.password_file"), "{}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn a_model_that_is_not_onnx_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("broken.onnx");
    std::fs::write(&model, b"this is not a protobuf").unwrap();
    let spec = std::fs::read_to_string(repo("models/efficientnet_lite0.toml")).unwrap();
    std::fs::write(dir.path().join("broken.toml"), spec).unwrap();
    for file in ["imagenet_labels.txt", "road_taxonomy.toml"] {
        std::fs::copy(repo("models").join(file), dir.path().join(file)).unwrap();
    }

    let out = Command::new(BIN).arg("classify").arg("--model").arg(&model).arg(repo("media/sources/horses.jpg")).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.onnx") && stderr.contains("is it an ONNX model file?"), "{stderr}");

    let broker = Mosquitto::start();
    let config = agent_config(&broker, &camera("road", &road_clip().display().to_string(), ""))
        .replace(&repo("models/efficientnet_lite0.onnx").display().to_string(), &model.display().to_string());
    std::fs::write(dir.path().join("agent.toml"), config).unwrap();
    let run = Command::new(BIN).arg("run").arg("--config").arg(dir.path().join("agent.toml")).output().unwrap();
    assert!(!run.status.success(), "the agent must not serve without a model");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("cannot load the model") && stderr.contains("broken.onnx"), "{stderr}");
}

#[test]
fn systemd_hears_ready_status_watchdog_pings_and_stopping() {
    let broker = Mosquitto::start();
    let notify = NotifySocket::new();
    let started = std::time::Instant::now();
    let env = [("NOTIFY_SOCKET", notify.path.display().to_string()), ("WATCHDOG_USEC", "1000000".to_string())];
    let mut agent = Agent::start_with_env(&agent_config(&broker, &camera("road", &road_clip().display().to_string(), "loop = true")), &env);
    let ready = notify.wait_for("READY=1", started, Duration::from_secs(30));
    notify.wait_for("STATUS=serving", ready, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    // Pings at half the watchdog interval: about 4 in 2 s.
    assert!(notify.count("WATCHDOG=1", ready, std::time::Instant::now()) >= 3, "{:?}", notify.messages());
    let before_stop = std::time::Instant::now();
    assert!(agent.terminate().success());
    notify.wait_for("STOPPING=1", before_stop, Duration::from_secs(2));
}

#[test]
fn the_watchdog_goes_quiet_while_a_camera_hangs_and_resumes_when_it_recovers() {
    // An RTSP server stopped with SIGSTOP: the camera's read blocks inside
    // OpenCV (up to its 5 s timeout, over `stall_seconds`), a real hang.
    let server = RtspServer::serve(&road_clip());
    let broker = Mosquitto::start();
    let notify = NotifySocket::new();
    let started = std::time::Instant::now();
    let cameras = [camera("road", &road_clip().display().to_string(), "loop = true"), camera("stuck", &server.url(), "")].concat();
    let config = agent_config(&broker, &cameras).replace("[model]", "[watchdog]\nstall_seconds = 2\n[model]");
    let env = [("NOTIFY_SOCKET", notify.path.display().to_string()), ("WATCHDOG_USEC", "500000".to_string())];
    let mut agent = Agent::start_with_env(&config, &env);

    let ready = notify.wait_for("READY=1", started, Duration::from_secs(30));
    let reading = wait_for_status_containing(&notify, "stuck running", ready, Duration::from_secs(30));
    server.freeze(true);
    let stalled = notify.wait_for("STATUS=stalled: ", reading, Duration::from_secs(15));
    let status = notify.messages().into_iter().map(|(_, m)| m).find(|m| m.starts_with("STATUS=stalled")).unwrap();
    assert!(status.contains("camera stuck"), "{status}");
    assert!(!status.contains("camera road"), "the other camera is not held up: {status}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(notify.count("WATCHDOG=1", stalled, std::time::Instant::now()), 0, "pings must stop while a camera hangs");

    // The server carries on: the camera reads again and pings resume.
    server.freeze(false);
    let thawed = std::time::Instant::now();
    notify.wait_for("WATCHDOG=1", thawed, Duration::from_secs(20));
    wait_for_status_containing(&notify, "stuck running", thawed, Duration::from_secs(30));
    assert!(agent.terminate().success(), "{}", agent.log());
}

/// When a STATUS line after `after` first contained `text`.
fn wait_for_status_containing(notify: &NotifySocket, text: &str, after: std::time::Instant, timeout: Duration) -> std::time::Instant {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some((at, _)) = notify.messages().into_iter().find(|(at, m)| *at > after && m.starts_with("STATUS=") && m.contains(text)) {
            return at;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no STATUS with `{text}` within {timeout:?}; seen: {:?}", notify.messages());
}

/// Purges the package even when an assertion fails half-way.
struct PurgeOnDrop;
impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "cctv-agent"]).output();
    }
}

#[test]
fn the_debian_package_installs_runs_and_is_removed_cleanly() {
    if std::env::var_os("CCTV_SKIP_PACKAGE_TEST").is_some() {
        eprintln!("CCTV_SKIP_PACKAGE_TEST is set: not installing the package");
        return;
    }
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(uid.trim(), "0", "installing the package needs root: run make test as root, or set CCTV_SKIP_PACKAGE_TEST=1");
    let installed = Command::new("dpkg-query").args(["-W", "-f=${Status}", "cctv-agent"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&installed.stdout).contains("installed"),
        "cctv-agent is already installed on this machine; the test would replace it: remove it first"
    );
    let build = Command::new(repo("scripts/build-deb.sh")).arg("amd64").output().unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let deb = repo(String::from_utf8(build.stdout).unwrap().trim());

    let _purge = PurgeOnDrop;
    let install = Command::new("dpkg").arg("-i").arg(&deb).output().unwrap();
    assert!(install.status.success(), "dpkg -i: {}", String::from_utf8_lossy(&install.stderr));

    let version = Command::new("/usr/bin/cctv-agent").arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("cctv-agent {}", env!("CARGO_PKG_VERSION")));
    let check = Command::new("/usr/bin/cctv-agent").args(["check-config", "/etc/cctv-agent/agent.toml"]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // The installed binary finds the installed ONNX Runtime and model with nothing set.
    let classify = Command::new("/usr/bin/cctv-agent")
        .args(["classify", "--model", "/usr/share/cctv-agent/models/efficientnet_lite0.onnx"])
        .arg(repo("media/sources/motorcycle_left.png"))
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&classify.stdout).contains("\"class\":\"motorcycle\""), "{}", String::from_utf8_lossy(&classify.stderr));
    let verify = Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/cctv-agent.service"]).output().unwrap();
    assert!(verify.status.success() && verify.stderr.is_empty(), "systemd-analyze verify: {}", String::from_utf8_lossy(&verify.stderr));
    // Exposure 2.5 or lower ("OK") in systemd's own hardening score.
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=25", "/lib/systemd/system/cctv-agent.service"])
        .output()
        .unwrap();
    assert!(security.status.success(), "{}", String::from_utf8_lossy(&security.stdout));

    let purge = Command::new("dpkg").args(["--purge", "cctv-agent"]).output().unwrap();
    assert!(purge.status.success(), "{}", String::from_utf8_lossy(&purge.stderr));
    for path in ["/usr/bin/cctv-agent", "/usr/lib/cctv-agent", "/usr/share/cctv-agent", "/etc/cctv-agent", "/lib/systemd/system/cctv-agent.service"] {
        assert!(!std::path::Path::new(path).exists(), "{path} is left after purge");
    }
}

#[test]
fn telemetry_reports_the_device_sensors_found_in_sysfs() {
    let sysfs = tempfile::tempdir().unwrap();
    cctv_agent::ops::sensors::write_fixture(sysfs.path()).unwrap();
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/telemetry");
    let config = agent_config(&broker, &camera("road", &road_clip().display().to_string(), ""))
        .replace("interval_seconds = 1", &format!("interval_seconds = 1\nsysfs_root = \"{}\"", sysfs.path().display()));
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(30), "telemetry", |m| !m.is_empty());
    assert!(agent.terminate().success());
    let system = &sub.all()[0].payload["system"];
    assert_matches_schema(&sub.all()[0].payload, "telemetry.json");
    assert_eq!(system["temperatures_c"]["thermal/cpu-thermal"].as_f64(), Some(48.25));
    assert_eq!(system["sensors"]["bme280"]["humidity_percent"].as_f64(), Some(41.2));
    let accel_z = system["sensors"]["lsm6dsl_accel"]["accel_z_m_s2"].as_f64().unwrap();
    assert!((accel_z - 16364.0 * 0.000598).abs() < 1e-9, "{accel_z}");
}

fn events(sub: &Subscriber, kind: &str, camera: &str) -> Vec<Value> {
    sub.events(kind).into_iter().filter(|e| e["camera"] == camera).collect()
}

fn predictions_from(sub: &Subscriber, camera: &str) -> usize {
    sub.on(&format!("/predictions/{camera}")).len()
}

#[test]
fn a_killed_rtsp_camera_is_reported_lost_then_back_while_the_other_camera_keeps_serving() {
    let server = RtspServer::serve(&road_clip());
    let port = server.port;
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let cameras = [
        camera("rtsp", &server.url(), "regions = \"full\""),
        camera("file", &road_clip().display().to_string(), "regions = \"full\"\nloop = true"),
    ]
    .concat();
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    sub.wait_until(Duration::from_secs(30), "predictions from the RTSP camera", |_| predictions_from(&sub, "rtsp") >= 5);

    drop(server); // SIGKILL
    sub.wait_until(Duration::from_secs(20), "camera_lost", |_| !events(&sub, "camera_lost", "rtsp").is_empty());
    let file_at_loss = predictions_from(&sub, "file");
    std::thread::sleep(Duration::from_secs(2));
    assert!(predictions_from(&sub, "file") > file_at_loss, "the file camera must keep serving while the RTSP camera is down");

    let _server = RtspServer::serve_on(port, &road_clip());
    let rtsp_before = predictions_from(&sub, "rtsp");
    sub.wait_until(Duration::from_secs(30), "camera_back and new predictions", |_| {
        !events(&sub, "camera_back", "rtsp").is_empty() && predictions_from(&sub, "rtsp") > rtsp_before
    });
    assert!(agent.terminate().success());
    assert_eq!(events(&sub, "camera_lost", "rtsp").len(), 1, "one event per outage, not one per retry");
    for event in sub.on("/events") {
        assert_matches_schema(&event.payload, "event.json");
    }
    assert!(events(&sub, "camera_lost", "file").is_empty());
}

#[test]
fn a_frozen_rtsp_camera_times_out_is_reported_lost_and_comes_back_when_it_thaws() {
    let server = RtspServer::serve(&road_clip());
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let mut agent = Agent::start(&agent_config(&broker, &camera("rtsp", &server.url(), "regions = \"full\"")));
    sub.wait_until(Duration::from_secs(30), "predictions", |_| predictions_from(&sub, "rtsp") >= 5);

    server.freeze(true);
    // Reads give up after the 5 s read timeout.
    sub.wait_until(Duration::from_secs(20), "camera_lost", |_| !events(&sub, "camera_lost", "rtsp").is_empty());
    let reason = events(&sub, "camera_lost", "rtsp")[0]["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("rtsp://127.0.0.1"), "{reason}");
    server.freeze(false);
    let before = predictions_from(&sub, "rtsp");
    sub.wait_until(Duration::from_secs(40), "camera_back and new predictions", |_| {
        !events(&sub, "camera_back", "rtsp").is_empty() && predictions_from(&sub, "rtsp") > before
    });
    let back = &events(&sub, "camera_back", "rtsp")[0];
    assert!(back["down_s"].as_f64().unwrap() > 0.0);
    assert!(agent.terminate().success(), "{}", agent.log());
}

#[test]
fn truncated_and_damaged_clips_are_decoded_as_far_as_possible_without_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let clip = std::fs::read(road_clip()).unwrap();
    // Cut at 60 %: the index is at the front (faststart), the tail is gone.
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &clip[..clip.len() * 6 / 10]).unwrap();
    // Garbage over 64 KiB in the middle of the frame data.
    let damaged = dir.path().join("damaged.mp4");
    let mut bytes = clip.clone();
    let middle = bytes.len() / 2;
    for (i, b) in bytes[middle..middle + 65536].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    std::fs::write(&damaged, &bytes).unwrap();

    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let cameras = [
        camera("truncated", &truncated.display().to_string(), "regions = \"full\"\nreplay = \"asap\""),
        camera("damaged", &damaged.display().to_string(), "regions = \"full\"\nreplay = \"asap\""),
        camera("good", &road_clip().display().to_string(), "regions = \"full\"\nreplay = \"asap\""),
    ]
    .concat();
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    let truncated_predictions = wait_for_file_to_finish(&sub, "truncated", Duration::from_secs(120));
    let damaged_predictions = wait_for_file_to_finish(&sub, "damaged", Duration::from_secs(120));
    let good_predictions = wait_for_file_to_finish(&sub, "good", Duration::from_secs(120));
    assert!(agent.terminate().success(), "{}", agent.log());

    let frames = |p: &[Value]| p.iter().map(|p| p["frame_index"].as_u64().unwrap()).collect::<Vec<_>>();
    let truncated_frames = frames(&truncated_predictions);
    assert!(truncated_frames.len() > 100 && truncated_frames.len() < 305, "truncated clip gave {} frames", truncated_frames.len());
    let damaged_frames = frames(&damaged_predictions);
    assert!(*damaged_frames.last().unwrap() > 250, "decoding went on past the damage: last frame {:?}", damaged_frames.last());
    assert_eq!(good_predictions.len(), 305, "the good camera is unaffected");
    let telemetry = sub.on("/telemetry").last().unwrap().payload.clone();
    let skipped = |id: &str| telemetry["cameras"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap()["decode_errors"].as_u64().unwrap();
    assert!(skipped("damaged") > 0, "skipped frames are counted");
    assert_eq!(skipped("good"), 0);
    println!("truncated: {} frames; damaged: {} frames, {} skipped", truncated_frames.len(), damaged_frames.len(), skipped("damaged"));
}

#[test]
fn a_second_signal_exits_at_once() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/predictions/+");
    let mut agent = Agent::start(&agent_config(&broker, &camera("road", &road_clip().display().to_string(), "loop = true")));
    sub.wait_until(Duration::from_secs(30), "a prediction", |m| !m.is_empty());
    // With the broker gone, a graceful stop waits up to 3 s for it; the second signal cuts that short.
    drop(broker);
    std::thread::sleep(Duration::from_millis(300));
    let status = agent.signal_twice();
    assert_eq!(status.code(), Some(130), "{}", agent.log());
    assert!(agent.log().contains("second signal"));
}

/// A config that talks mqtts:// to `broker` with `mqtt_extra` lines in [mqtt].
fn tls_config(broker: &Mosquitto, mqtt_extra: &str) -> String {
    agent_config(broker, &camera("road", &road_clip().display().to_string(), "regions = \"full\"\nreplay = \"asap\"\nloop = true"))
        .replace("url = \"mqtt://127.0.0.1:", "url = \"mqtts://localhost:")
        .replace("[model]", &format!("{mqtt_extra}\n[model]"))
}

fn wait_for_log(agent: &Agent, needle: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while !agent.log().contains(needle) {
        assert!(std::time::Instant::now() < deadline, "log never said {needle:?}:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tls_refuses_a_broker_certificate_from_another_ca() {
    let certs = TestCertificates::new();
    let (broker, plain_port) = Mosquitto::start_tls(&certs, false);
    let sub = Subscriber::start(plain_port, "cctv/test-pole/#");
    let mut agent = Agent::start(&tls_config(&broker, &format!("ca_file = \"{}\"", certs.other_ca.display())));
    wait_for_log(&agent, "check mqtt.ca_file", Duration::from_secs(20));
    assert!(sub.all().is_empty(), "nothing may be published to an unverified broker");
    assert!(agent.terminate().success());
}

#[test]
fn mutual_tls_works_with_a_client_certificate_and_fails_without() {
    let certs = TestCertificates::new();
    let (broker, plain_port) = Mosquitto::start_tls(&certs, true);
    let sub = Subscriber::start(plain_port, "cctv/test-pole/predictions/+");

    let mut without = Agent::start(&tls_config(&broker, &format!("ca_file = \"{}\"", certs.ca.display())));
    wait_for_log(&without, "cannot connect to the MQTT broker", Duration::from_secs(20));
    assert!(without.terminate().success());
    assert!(sub.all().is_empty());

    let mut with = Agent::start(&tls_config(
        &broker,
        &format!(
            "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\nrequire_tls = true",
            certs.ca.display(),
            certs.client_cert.display(),
            certs.client_key.display()
        ),
    ));
    sub.wait_until(Duration::from_secs(30), "predictions over mutual TLS", |m| !m.is_empty());
    assert!(with.terminate().success(), "{}", with.log());
}

#[test]
fn require_tls_refuses_a_plain_text_url() {
    let broker = Mosquitto::start();
    let config = agent_config(&broker, &camera("road", &road_clip().display().to_string(), "")).replace("[model]", "require_tls = true\n[model]");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.toml"), config).unwrap();
    let run = Command::new(BIN).arg("run").arg("--config").arg(dir.path().join("agent.toml")).output().unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("`mqtt.url`") && stderr.contains("require_tls") && stderr.contains("mqtts://"), "{stderr}");
}

#[test]
fn broker_credentials_are_used_and_never_logged() {
    let password = "s3cret-Pa55-word";
    let (broker, plain_port) = Mosquitto::start_with_password("pole", password);
    let sub = Subscriber::start(plain_port, "cctv/test-pole/predictions/+");
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let base = agent_config(&broker, &camera("road", &road_clip().display().to_string(), "regions = \"full\"\nreplay = \"asap\"\nloop = true"));

    let wrong = base.replace("[model]", "username = \"pole\"\n[model]");
    let mut refused = Agent::start_with_env(&wrong, &[("CCTV_MQTT_PASSWORD", "not-it".to_string()), ("CCTV_LOG", "debug".to_string())]);
    wait_for_log(&refused, "refused the credentials", Duration::from_secs(20));
    assert!(refused.terminate().success());
    assert!(sub.all().is_empty());

    let right = base.replace("[model]", &format!("username = \"pole\"\npassword_file = \"{}\"\n[model]", password_file.display()));
    let mut agent = Agent::start_with_env(&right, &[("CCTV_LOG", "debug".to_string())]);
    sub.wait_until(Duration::from_secs(30), "predictions with credentials", |m| !m.is_empty());
    assert!(agent.terminate().success());
    assert!(!agent.log().contains(password) && !refused.log().contains("not-it"), "a password reached the log");
}

/// ARCHITECTURE.md: a part that cannot recover makes the process exit
/// non-zero. A state_dir that cannot be written at start used to leave the
/// agent serving from a memory outbox (lost at the next stop) with ~10
/// warnings a second; now it is refused at once, naming the key.
#[test]
fn an_unwritable_state_dir_stops_the_agent_at_start_with_an_error_naming_it() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let dir = tempfile::tempdir().unwrap();
    // A file where the folder should be: no one can create it, not even root.
    std::fs::write(dir.path().join("blocked"), "not a folder").unwrap();
    let config = agent_config(&broker, &camera("road", &road_clip().display().to_string(), "regions = \"full\"\nloop = true"))
        .replace("state_dir = \"state\"", "state_dir = \"blocked/state\"");
    std::fs::write(dir.path().join("agent.toml"), config).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.path().join("agent.toml"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("the agent kept running with an unwritable state_dir");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("state_dir") && stderr.contains("blocked"), "{stderr}");
    assert!(!stderr.contains("in memory"), "{stderr}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(sub.all().iter().all(|m| !m.topic.contains("/predictions/")), "it served");
}

/// Found by attacking the hardened agent: a second agent on the same
/// state_dir (a manual run beside the service) ran on a memory outbox and
/// the two knocked each other off the broker (29 status flips in 10 s).
#[test]
fn a_second_agent_on_the_same_state_dir_exits_naming_it() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/predictions/+");
    let config = agent_config(&broker, &camera("road", &road_clip().display().to_string(), "loop = true"));
    let mut first = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions", |m| m.len() >= 5);
    let other = tempfile::tempdir().unwrap();
    let path = other.path().join("agent.toml");
    let state = first.state_dir();
    std::fs::write(&path, config.replace("state_dir = \"state\"", &format!("state_dir = {:?}", state.display().to_string()))).unwrap();
    let mut second = Command::new(BIN).arg("run").arg("--config").arg(&path).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("the second agent kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is in use by another cctv-agent"), "{stderr}");
    // The first one carries on, undisturbed.
    let before = sub.all().len();
    sub.wait_until(Duration::from_secs(10), "predictions after the second start", |m| m.len() > before + 5);
    assert!(first.terminate().success());
}
