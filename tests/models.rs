//! Model releases end to end: the trainer's `cctv-agent release` pushes to a
//! real OCI registry (Debian's docker-registry); the agent pulls, verifies,
//! validates with real ONNX Runtime, and swaps while a clip plays.

mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use support::*;

struct Trainer {
    dir: tempfile::TempDir,
}

impl Trainer {
    /// `release publish` of the model in `model_dir` as version 9 under the tag `bad`, expected to be refused.
    fn try_publish_bad(&self, registry: &OciRegistry, model_dir: &tempfile::TempDir) -> std::process::Output {
        Command::new(BIN)
            .args(["release", "publish", "--registry", &registry.url(), "--tag", "bad", "--version", "9", "--key"])
            .arg(self.dir.path().join("trainer.key"))
            .arg("--model")
            .arg(model_dir.path().join("efficientnet_lite0.onnx"))
            .output()
            .unwrap()
    }

    fn new() -> Trainer {
        let dir = tempfile::tempdir().unwrap();
        for key in ["trainer", "stranger"] {
            let out = Command::new(BIN).args(["release", "keygen", "--key-id", key, "--dir"]).arg(dir.path()).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        Trainer { dir }
    }

    fn public_key(&self) -> PathBuf {
        self.dir.path().join("trainer.pub")
    }

    /// `cctv-agent release publish` with the bundled model unless `model` says otherwise.
    fn publish(&self, registry: &str, tag: &str, version: u64, extra: &[&str]) {
        let key = if extra.contains(&"--stranger") { "stranger" } else { "trainer" };
        let extra: Vec<&str> = extra.iter().copied().filter(|a| *a != "--stranger").collect();
        let mut command = Command::new(BIN);
        command.args(["release", "publish", "--registry", registry, "--tag", tag, "--version", &version.to_string(), "--key"]);
        command.arg(self.dir.path().join(format!("{key}.key")));
        if !extra.contains(&"--model") {
            command.arg("--model").arg(repo("models/efficientnet_lite0.onnx"));
        }
        let out = command.args(&extra).output().unwrap();
        assert!(out.status.success(), "release publish: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A broker, a registry, a trainer with its keys, and a subscriber to the test device.
fn start() -> (Mosquitto, OciRegistry, Trainer, Subscriber) {
    let broker = Mosquitto::start();
    let registry = OciRegistry::start();
    let trainer = Trainer::new();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    (broker, registry, trainer, sub)
}

fn config(broker: &Mosquitto, registry: &OciRegistry, trainer: &Trainer, cameras: &str, registry_extra: &str) -> String {
    let poll = if registry_extra.contains("poll_seconds") { "" } else { "poll_seconds = 1\n" };
    format!(
        "{}\n[registry]\nurl = \"{}\"\n{poll}public_keys = [\"{}\"]\nvalidation_runs = 5\n{registry_extra}\n",
        agent_config(broker, cameras),
        registry.url(),
        trainer.public_key().display()
    )
}

fn clip_camera(extra: &str) -> String {
    format!("[[cameras]]\nid = \"road\"\nurl = \"{}\"\n{extra}\n", road_clip().display())
}

fn predictions(sub: &Subscriber) -> Vec<Value> {
    sub.on("/predictions/road").into_iter().map(|m| m.payload).collect()
}

#[test]
fn a_new_release_is_swapped_in_between_two_frames_and_survives_a_restart() {
    let (broker, registry, trainer, sub) = start();
    let lanes = "replay = \"asap\"\nregions = [[0, 0, 320, 200], [320, 0, 320, 200], [0, 200, 320, 200], [320, 200, 320, 200]]";
    let config = config(&broker, &registry, &trainer, &clip_camera(lanes), "");
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions by the bundled model", |_| predictions(&sub).len() >= 20);

    let golden = repo("models/golden.json");
    trainer.publish(&registry.url(), "champion", 2, &["--golden", golden.to_str().unwrap()]);
    sub.wait_until(Duration::from_secs(60), "the swap", |_| !sub.events("model_activated").is_empty());
    assert!(agent.log().contains("golden set passed"), "{}", agent.log());
    let frames = road_clip_frames();
    sub.wait_until(Duration::from_secs(120), "every frame", |_| predictions(&sub).len() as u64 >= frames);

    let all = predictions(&sub);
    // No frame dropped, none twice, seq without a gap.
    let indexes: Vec<u64> = all.iter().map(|p| p["frame_index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (0..frames).collect::<Vec<_>>());
    sub.assert_seq_gapless();
    // The model changes exactly once, from the bundled 1 to 2.
    let versions: Vec<&str> = all.iter().map(|p| p["model"]["version"].as_str().unwrap()).collect();
    let changes = versions.windows(2).filter(|w| w[0] != w[1]).count();
    let swapped_at = versions.iter().position(|v| *v == "2").expect("predictions by version 2");
    println!("swapped after {swapped_at} of {frames} frames; versions change {changes} time(s)");
    assert_eq!(changes, 1, "{versions:?}");
    assert!(versions[..swapped_at].iter().all(|v| *v == "1"));
    for kind in ["model_downloading", "model_verified", "model_activated"] {
        let e = sub.events(kind);
        assert_eq!(e.len(), 1, "{kind}: {e:?}");
        assert_matches_schema(&e[0], "event.json");
    }
    assert_eq!(sub.events("model_activated")[0]["previous_version"], "1");
    // The same network: as confident as before, so it passes probation.
    sub.wait_until(Duration::from_secs(60), "probation passed", |_| !sub.events("model_probation_passed").is_empty());
    assert_matches_schema(&sub.events("model_probation_passed")[0], "event.json");
    assert!(sub.events("model_rolled_back").is_empty());
    let state = sub.on("/model").last().expect("retained model state").payload.clone();
    assert_matches_schema(&state, "model.json");
    assert_eq!(state["active"]["version"], "2");
    assert!(agent.terminate().success());

    // After a restart the installed release serves, without downloading it again.
    let before = predictions(&sub).len();
    let mut agent = Agent::start_in(agent.into_dir(), &config);
    sub.wait_until(Duration::from_secs(60), "predictions after the restart", |_| predictions(&sub).len() > before + 5);
    assert_eq!(predictions(&sub)[before]["model"]["version"], "2");
    // The release at the tag is the one serving: no refusal ("not newer").
    std::thread::sleep(Duration::from_secs(3));
    assert!(sub.events("model_rejected").is_empty(), "{:?}", sub.events("model_rejected"));
    assert!(agent.terminate().success());
    assert_eq!(sub.events("model_downloading").len(), 1);

    // An installed model altered on disk is not served: back to the configured one.
    let dir = agent.into_dir();
    let installed = dir.path().join("state/models/efficientnet_lite0-2/efficientnet_lite0.onnx");
    let mut bytes = std::fs::read(&installed).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&installed, bytes).unwrap();
    let before = predictions(&sub).len();
    let mut agent = Agent::start_in(dir, &config);
    sub.wait_until(Duration::from_secs(60), "predictions after tampering", |_| predictions(&sub).len() > before + 5);
    assert_eq!(predictions(&sub)[before]["model"]["version"], "1");
    assert!(agent.log().contains("was altered"), "{}", agent.log());
    assert!(agent.terminate().success());
}

/// Points `champion` at what `tag` points at, as a trainer promoting a release would.
fn promote(registry: &OciRegistry, tag: &str) {
    let client = cctv_agent::models::registry::Registry::new(&registry.url()).unwrap();
    let digest = client.tag_digest(tag).unwrap().unwrap();
    let (manifest, _) = client.manifest(&digest).unwrap();
    client.push_manifest("champion", &manifest).unwrap();
}

fn wait_for_rejection(sub: &Subscriber, count: usize, expect: &str) -> Value {
    sub.wait_until(Duration::from_secs(60), &format!("rejection {count} ({expect})"), |_| sub.events("model_rejected").len() >= count);
    let rejection = sub.events("model_rejected")[count - 1].clone();
    assert_matches_schema(&rejection, "event.json");
    assert!(rejection["reason"].as_str().unwrap().contains(expect), "expected {expect:?}: {rejection}");
    rejection
}

#[test]
fn bad_releases_are_rejected_with_the_reason_and_the_old_model_keeps_serving() {
    let (broker, registry, trainer, sub) = start();
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "");
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions", |_| predictions(&sub).len() >= 5);

    trainer.publish(&registry.url(), "champion", 2, &["--stranger"]);
    wait_for_rejection(&sub, 1, "not among the pinned keys");
    trainer.publish(&registry.url(), "champion", 3, &["--expires-at", "2020-01-01T00:00:00Z"]);
    wait_for_rejection(&sub, 2, "expired");
    trainer.publish(&registry.url(), "champion", 1, &[]);
    wait_for_rejection(&sub, 3, "not newer than the active version 1");

    // A blob altered in the registry's storage after it was signed.
    trainer.publish(&registry.url(), "candidate", 4, &[]);
    let client = cctv_agent::models::registry::Registry::new(&registry.url()).unwrap();
    let (manifest, _) = client.manifest(&client.tag_digest("candidate").unwrap().unwrap()).unwrap();
    let model_layer = manifest.layers.iter().find(|l| l.title() == Some("efficientnet_lite0.onnx")).unwrap();
    let stored = registry.blob_file(&model_layer.digest);
    let original = std::fs::read(&stored).unwrap();
    let mut bytes = original.clone();
    bytes[1000] ^= 0x55;
    std::fs::write(&stored, bytes).unwrap();
    promote(&registry, "candidate");
    wait_for_rejection(&sub, 4, "does not match its digest");
    std::fs::write(&stored, original).unwrap();

    // A spec that does not fit the network (a 160-pixel input for a 224 model).
    let broken = bundled_model_with("efficientnet_lite0.toml", |spec| spec.replace("width = 224", "width = 160").replace("height = 224", "height = 160"));
    let model = broken.path().join("efficientnet_lite0.onnx");
    trainer.publish(&registry.url(), "champion", 5, &["--model", model.to_str().unwrap()]);
    wait_for_rejection(&sub, 5, "does not load");

    // Labels mapped to the wrong road classes (car and truck swapped): it
    // loads and runs fast, but misses the golden set.
    let swapped = bundled_model_with("road_taxonomy.toml", |taxonomy| {
        taxonomy.replace("\ncar = ", "\nTMP = ").replace("\ntruck = ", "\ncar = ").replace("\nTMP = ", "\ntruck = ")
    });
    let model = swapped.path().join("efficientnet_lite0.onnx");
    let golden = repo("models/golden.json");
    trainer.publish(&registry.url(), "champion", 6, &["--model", model.to_str().unwrap(), "--golden", golden.to_str().unwrap()]);
    wait_for_rejection(&sub, 6, "golden-set accuracy 3/5");

    // Through all of it: the bundled model kept serving, without a gap.
    let before = predictions(&sub).len();
    sub.wait_until(Duration::from_secs(30), "more predictions", |_| predictions(&sub).len() > before + 10);
    assert!(predictions(&sub).iter().all(|p| p["model"]["version"] == "1"));
    sub.assert_seq_gapless();
    assert!(sub.events("model_activated").is_empty());
    let versions: Vec<Option<String>> = sub.events("model_rejected").iter().map(|e| e["version"].as_str().map(String::from)).collect();
    assert_eq!(versions, ["2", "3", "1", "4", "5", "6"].map(|v| Some(v.to_string())), "versions are strings in every model event");
    assert!(agent.terminate().success());
}

#[test]
fn a_release_too_slow_for_this_device_is_rejected() {
    let (broker, registry, trainer, sub) = start();
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "latency_budget_ms = 0.5");
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions", |_| predictions(&sub).len() >= 5);
    trainer.publish(&registry.url(), "champion", 2, &[]);
    let rejection = wait_for_rejection(&sub, 1, "too slow on this device");
    println!("{}", rejection["reason"]);
    let before = predictions(&sub).len();
    sub.wait_until(Duration::from_secs(30), "more predictions", |_| predictions(&sub).len() > before + 5);
    assert!(predictions(&sub).iter().all(|p| p["model"]["version"] == "1"));
    assert!(agent.terminate().success());
}

fn newest_version(sub: &Subscriber, after: usize) -> Option<String> {
    predictions(sub).get(after..).and_then(|p| p.last()).map(|p| p["model"]["version"].as_str().unwrap().to_string())
}

#[test]
fn an_announced_release_is_taken_at_once_and_an_operator_can_roll_back_and_pin() {
    let (broker, registry, trainer, sub) = start();
    // Polling once an hour: only the announcement can make this quick.
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "poll_seconds = 3600");
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions", |_| predictions(&sub).len() >= 5);

    let announced = std::time::Instant::now();
    trainer.publish(&registry.url(), "champion", 2, &["--mqtt", &broker.url()]);
    sub.wait_until(Duration::from_secs(30), "a prediction by version 2", |_| predictions(&sub).iter().any(|p| p["model"]["version"] == "2"));
    println!("announcement to first prediction by the new model: {:.2} s", announced.elapsed().as_secs_f64());

    let before = predictions(&sub).len();
    publish(broker.port, "cctv/test-pole/cmd/rollback", br#"{"id": "r1"}"#);
    sub.wait_until(Duration::from_secs(30), "the rollback", |_| !sub.replies("rollback").is_empty() && newest_version(&sub, before).as_deref() == Some("1"));
    let reply = &sub.replies("rollback")[0];
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!((reply["result"]["version"].as_u64(), reply["result"]["rolled_back_from"].as_u64()), (Some(1), Some(2)));
    assert_eq!(sub.events("model_activated").last().unwrap()["previous_version"], "2");

    // Rolled back stays rolled back: after a restart version 1 serves and the
    // release still at the tag is refused.
    assert!(agent.terminate().success());
    let before = predictions(&sub).len();
    let mut agent = Agent::start_in(agent.into_dir(), &config);
    sub.wait_until(Duration::from_secs(60), "predictions after the restart", |_| predictions(&sub).len() > before + 3);
    assert_eq!(predictions(&sub)[before]["model"]["version"], "1");
    wait_for_rejection(&sub, 1, "rolled back by an operator");
    // Reported once: the next restart judges it again, quietly.
    assert!(agent.terminate().success());
    let before = predictions(&sub).len();
    let mut agent = Agent::start_in(agent.into_dir(), &config);
    sub.wait_until(Duration::from_secs(60), "predictions after the second restart", |_| predictions(&sub).len() > before + 3);
    agent.wait_for_log("reported before", 1, Duration::from_secs(30));
    assert_eq!(sub.events("model_rejected").len(), 1, "{:?}", sub.events("model_rejected"));

    // Pinning chooses among verified models only.
    publish(broker.port, "cctv/test-pole/cmd/pin", br#"{"id": "p7", "version": 7}"#);
    publish(broker.port, "cctv/test-pole/cmd/pin", br#"{"id": "p2", "version": 2}"#);
    let before = predictions(&sub).len();
    sub.wait_until(Duration::from_secs(30), "the pin", |_| sub.replies("pin").len() == 2 && newest_version(&sub, before).as_deref() == Some("2"));
    let pins = sub.replies("pin");
    assert_eq!(pins[0]["ok"], false);
    assert!(pins[0]["error"].as_str().unwrap().contains("available: 1, 2"), "{}", pins[0]);
    assert_eq!(pins[1]["ok"], true, "{}", pins[1]);
    publish(broker.port, "cctv/test-pole/cmd/unpin", br#"{"id": "u"}"#);
    sub.wait_until(Duration::from_secs(10), "the unpin reply", |_| !sub.replies("unpin").is_empty());
    // ping names the model serving now, not the one loaded at start.
    publish(broker.port, "cctv/test-pole/cmd/ping", br#"{"id": "after-pin"}"#);
    sub.wait_until(Duration::from_secs(10), "the ping reply", |_| !sub.replies("ping").is_empty());
    assert_eq!(sub.replies("ping")[0]["result"]["model"]["version"], "2");
    for reply in sub.replies("pin").iter().chain(&sub.replies("unpin")) {
        assert_matches_schema(reply, "reply.json");
    }
    assert!(agent.terminate().success());
}

/// `release publish --mqtt-config` connects as the agent does: mqtts with
/// the config's CA and client certificate, to a broker that demands one.
#[test]
fn release_publish_announces_to_a_mutual_tls_broker_with_the_agents_mqtt_settings() {
    let certs = TestCertificates::new();
    let (broker, plain_port) = Mosquitto::start_tls(&certs, true);
    let registry = OciRegistry::start();
    let trainer = Trainer::new();
    let dir = tempfile::tempdir().unwrap();
    let write_config = |name: &str, mqtt_extra: &str| {
        let config = agent_config(&broker, &clip_camera(""))
            .replace("url = \"mqtt://127.0.0.1:", "url = \"mqtts://localhost:")
            .replace("[model]", &format!("ca_file = \"{}\"\n{mqtt_extra}\n[model]", certs.ca.display()));
        let path = dir.path().join(name);
        std::fs::write(&path, config).unwrap();
        path
    };
    let client_cert = format!("client_cert_file = \"{}\"\nclient_key_file = \"{}\"\nrequire_tls = true", certs.client_cert.display(), certs.client_key.display());
    let with_cert = write_config("agent.toml", &client_cert);
    trainer.publish(&registry.url(), "champion", 2, &["--mqtt-config", with_cert.to_str().unwrap()]);

    // Retained: a subscriber that comes later (on the plain listener) still gets it.
    let sub = Subscriber::start(plain_port, "cctv/fleet/models/#");
    sub.wait_until(Duration::from_secs(10), "the retained announcement", |m| !m.is_empty());
    let announcement = &sub.all()[0];
    assert_eq!(announcement.topic, "cctv/fleet/models/efficientnet_lite0");
    assert!(announcement.retain);
    let digest = cctv_agent::models::registry::Registry::new(&registry.url()).unwrap().tag_digest("champion").unwrap().unwrap();
    assert_eq!((announcement.payload["version"].as_u64(), announcement.payload["digest"].as_str()), (Some(2), Some(digest.as_str())));
    assert_eq!(announcement.payload["record"]["version"], 2);

    // Without the client certificate the broker refuses it, and publish says so.
    let without_cert = write_config("no-cert.toml", "");
    let out = Command::new(BIN)
        .args(["release", "publish", "--registry", &registry.url(), "--version", "3", "--key"])
        .arg(trainer.dir.path().join("trainer.key"))
        .arg("--model")
        .arg(repo("models/efficientnet_lite0.onnx"))
        .arg("--mqtt-config")
        .arg(&without_cert)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("announcing on cctv/fleet/models/efficientnet_lite0"), "{stderr}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(sub.all().iter().all(|m| m.payload["version"] == 2), "{:?}", sub.all().iter().map(|m| &m.payload["version"]).collect::<Vec<_>>());
}

/// `make bench` (third part): a swap's cost to the frame path. While a clip
/// plays as fast as inference allows, five releases are announced one after
/// another; for each, the longest gap between two consecutive predictions
/// around the swap is divided by the median interval of the same run, and
/// the time from announcement to the first prediction by the new model is
/// taken. Medians of the five are printed.
#[test]
#[ignore = "a benchmark: run it with `make bench`"]
fn bench_swap() {
    let (broker, registry, trainer, sub) = start();
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nreplay = \"asap\"\nregions = \"full\""), "poll_seconds = 3600");
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions", |_| predictions(&sub).len() >= 50);
    let (mut ratios, mut latencies) = (Vec::new(), Vec::new());
    for version in 2..=6u64 {
        let announced = std::time::Instant::now();
        trainer.publish(&registry.url(), "champion", version, &["--mqtt", &broker.url()]);
        let v = version.to_string();
        sub.wait_until(Duration::from_secs(60), "the new model", |_| predictions(&sub).iter().any(|p| p["model"]["version"] == v.as_str()));
        let all = sub.on("/predictions/road");
        let first_new = all.iter().position(|m| m.payload["model"]["version"] == v.as_str()).unwrap();
        latencies.push(all[first_new].at.duration_since(announced).as_secs_f64());
        std::thread::sleep(Duration::from_secs(2));
        let all = sub.on("/predictions/road");
        let gaps: Vec<f64> = all.windows(2).map(|w| w[1].at.duration_since(w[0].at).as_secs_f64()).collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let around = gaps[first_new.saturating_sub(3)..(first_new + 2).min(gaps.len())].iter().cloned().fold(0.0, f64::max);
        ratios.push(around / median);
        println!("version {version}: swap gap {:.1} ms / median interval {:.1} ms = {:.2}; announcement to first prediction {:.2} s", around * 1e3, median * 1e3, around / median, latencies.last().unwrap());
    }
    ratios.sort_by(f64::total_cmp);
    latencies.sort_by(f64::total_cmp);
    println!("median of 5 swaps: longest gap / normal interval = {:.2}; announcement to first prediction = {:.2} s", ratios[2], latencies[2]);
    assert!(agent.terminate().success());
}

#[test]
fn leftovers_of_a_crash_mid_download_or_mid_install_do_no_harm_and_the_download_resumes() {
    let (broker, registry, trainer, sub) = start();
    trainer.publish(&registry.url(), "champion", 2, &[]);
    let client = cctv_agent::models::registry::Registry::new(&registry.url()).unwrap();
    let digest = client.tag_digest("champion").unwrap().unwrap();

    // As a SIGKILL leaves them: half the model downloaded, a half-copied install.
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("state/models");
    let staging = models.join("staging").join(digest.trim_start_matches("sha256:"));
    std::fs::create_dir_all(&staging).unwrap();
    let model = std::fs::read(repo("models/efficientnet_lite0.onnx")).unwrap();
    std::fs::write(staging.join("efficientnet_lite0.onnx"), &model[..model.len() / 2]).unwrap();
    std::fs::create_dir_all(models.join("efficientnet_lite0-2.partial")).unwrap();
    std::fs::write(models.join("efficientnet_lite0-2.partial/efficientnet_lite0.onnx"), b"half a file").unwrap();

    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "");
    let mut agent = Agent::start_in(dir, &config);
    sub.wait_until(Duration::from_secs(60), "version 2 serving", |_| predictions(&sub).iter().any(|p| p["model"]["version"] == "2"));
    // It started on the configured model (the partial install was not taken for a model) ...
    assert_eq!(predictions(&sub)[0]["model"]["version"], "1");
    // ... and fetched only the rest of the model file.
    assert!(agent.log().contains("resuming an interrupted download"), "{}", agent.log());
    assert!(agent.terminate().success());
    let installed = std::fs::read(agent.state_dir().join("models/efficientnet_lite0-2/efficientnet_lite0.onnx")).unwrap();
    assert_eq!(installed, model);
}

#[test]
fn a_release_that_passes_validation_but_fails_probation_is_rolled_back_without_a_gap() {
    let (broker, registry, trainer, sub) = start();
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "probation_frames = 30");
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "a confidence baseline", |_| predictions(&sub).len() >= 40);

    // The right network shipped with the wrong input scaling: it loads, has
    // the right shapes and speed, and sees almost nothing on real frames.
    let broken = bundled_model_with("efficientnet_lite0.toml", |spec| spec.replace("std = [128.0, 128.0, 128.0]", "std = [4000.0, 4000.0, 4000.0]"));
    let model = broken.path().join("efficientnet_lite0.onnx");
    trainer.publish(&registry.url(), "champion", 2, &["--model", model.to_str().unwrap()]);

    sub.wait_until(Duration::from_secs(90), "the rollback", |_| !sub.events("model_rolled_back").is_empty());
    let rollback = sub.events("model_rolled_back")[0].clone();
    println!("{rollback}");
    assert_matches_schema(&rollback, "event.json");
    assert_eq!((rollback["version"].as_str(), rollback["to_version"].as_str()), (Some("2"), Some("1")));
    assert!(rollback["reason"].as_str().unwrap().contains("mean top-1 score"), "{rollback}");
    let before = predictions(&sub).len();
    sub.wait_until(Duration::from_secs(30), "predictions after the rollback", |_| predictions(&sub).len() > before + 5);
    let all = predictions(&sub);
    let versions: Vec<&str> = all.iter().map(|p| p["model"]["version"].as_str().unwrap()).collect();
    assert_eq!(versions.windows(2).filter(|w| w[0] != w[1]).count(), 2, "1 → 2 → 1 only");
    assert_eq!(versions.last(), Some(&"1"));
    sub.assert_seq_gapless();

    // After a restart: version 1, and the failed release is not installed again.
    assert!(agent.terminate().success());
    let before = predictions(&sub).len();
    let mut agent = Agent::start_in(agent.into_dir(), &config);
    sub.wait_until(Duration::from_secs(60), "predictions after the restart", |_| predictions(&sub).len() > before + 3);
    assert_eq!(predictions(&sub)[before]["model"]["version"], "1");
    wait_for_rejection(&sub, 1, "rolled back");
    assert!(agent.terminate().success());
}

#[test]
fn an_agent_killed_mid_download_serves_the_old_model_on_restart_and_resumes_the_download() {
    let (broker, registry, trainer, sub) = start();
    trainer.publish(&registry.url(), "champion", 2, &[]);
    let digest = cctv_agent::models::registry::Registry::new(&registry.url()).unwrap().tag_digest("champion").unwrap().unwrap();
    // 19 MB at 2 MB/s: about ten seconds of download to kill it in.
    let proxy = SlowProxy::start(registry.port, 2 << 20);
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "")
        .replace(&registry.url(), &format!("http://127.0.0.1:{}/roadside/vehicle-classifier", proxy.port));
    let mut agent = Agent::start(&config);
    let partial = agent.state_dir().join("models/staging").join(digest.trim_start_matches("sha256:")).join("efficientnet_lite0.onnx");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) < 2 << 20 {
        assert!(std::time::Instant::now() < deadline, "the download did not start: {}", agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.kill();
    let model = std::fs::read(repo("models/efficientnet_lite0.onnx")).unwrap();
    let had = std::fs::metadata(&partial).unwrap().len();
    assert!(had < model.len() as u64, "the download had finished");

    let before = predictions(&sub).len();
    let mut agent = Agent::start_in(agent.into_dir(), &config);
    sub.wait_until(Duration::from_secs(60), "predictions after the restart", |_| predictions(&sub).len() > before);
    assert_eq!(predictions(&sub)[before]["model"]["version"], "1", "the old model serves while the download resumes");
    sub.wait_until(Duration::from_secs(60), "version 2 serving", |_| predictions(&sub).iter().any(|p| p["model"]["version"] == "2"));
    println!("killed with {had} of {} bytes downloaded; resumed and activated", model.len());
    assert!(agent.log().contains("resuming an interrupted download"), "{}", agent.log());
    assert!(agent.terminate().success());
    assert_eq!(std::fs::read(agent.state_dir().join("models/efficientnet_lite0-2/efficientnet_lite0.onnx")).unwrap(), model);
}

/// The MLOps loop on one device, every step on MQTT: a model that fails on
/// this road → roadside feedback → precision alert → retrain request → the
/// trainer (this test) publishes a better release → the agent verifies and
/// swaps it → feedback agrees → the alert clears.
#[test]
fn closed_loop_feedback_alert_retrain_request_release_swap_and_clear() {
    let (broker, registry, trainer, sub) = start();
    let fleet = Subscriber::start(broker.port, "cctv/fleet/retrain/+");
    // Version 1 names every vehicle wrong: road classes swapped in pairs.
    let scrambled = bundled_model_with("road_taxonomy.toml", |taxonomy| {
        [("car", "truck"), ("van", "bus"), ("motorcycle", "bicycle")].iter().fold(taxonomy, |t, (a, b)| {
            t.replace(&format!("\n{a} = "), "\nTMP = ").replace(&format!("\n{b} = "), &format!("\n{a} = ")).replace("\nTMP = ", &format!("\n{b} = "))
        })
    });
    let cameras = clip_camera("regions = \"motion\"\nreplay = \"realtime\"\nloop = true");
    let config = format!("{}\n[monitor]\nfeedback_window = 120\nmin_labelled = 30\n[samples]\nenabled = false\n", config(&broker, &registry, &trainer, &cameras, ""))
        .replace(&repo("models/efficientnet_lite0.onnx").display().to_string(), &scrambled.path().join("efficientnet_lite0.onnx").display().to_string());
    let mut agent = Agent::start(&config);

    // The roadside sensor: the true class of each fully visible vehicle, by frame.
    let truth = road_truth();
    let mut vehicles: std::collections::BTreeMap<u64, Vec<([i64; 4], String)>> = Default::default();
    for object in truth["objects"].as_array().unwrap().iter().filter(|o| o["class"] != "none") {
        for frame in object["frames"].as_array().unwrap().iter().filter(|f| f["fully_visible"] == true) {
            vehicles.entry(frame["frame"].as_u64().unwrap()).or_default().push((bbox(&frame["bbox"]), object["class"].as_str().unwrap().to_string()));
        }
    }
    let mut labelled_seq = 0u64;
    let mut sent = 0usize;
    let mut label_new_predictions = || {
        let mut labels = Vec::new();
        let since = labelled_seq;
        for p in predictions(&sub).iter().filter(|p| p["seq"].as_u64().unwrap() > since) {
            labelled_seq = labelled_seq.max(p["seq"].as_u64().unwrap());
            let Some(present) = vehicles.get(&p["frame_index"].as_u64().unwrap()) else { continue };
            for (index, region) in p["regions"].as_array().unwrap().iter().enumerate() {
                if let Some((_, class)) = present.iter().find(|(b, _)| iou(b, &bbox(&region["bbox"])) >= 0.5) {
                    labels.push(serde_json::json!({"seq": p["seq"], "region": index, "class": class, "source": "loop-detector"}));
                }
            }
        }
        if !labels.is_empty() {
            sent += labels.len();
            publish(broker.port, "cctv/test-pole/feedback", &serde_json::to_vec(&labels).unwrap());
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let alerts = |state: &str| -> Vec<Value> { sub.events("alert").into_iter().filter(|e| e["state"] == state).collect() };

    // 1. The device finds out and asks for a better model.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while fleet.all().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no retrain request after {sent} labels; alerts {:?}\n{}", sub.events("alert"), agent.log());
        label_new_predictions();
    }
    let raised = alerts("raised");
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!((raised[0]["alert"].as_str(), raised[0]["model"]["version"].as_str()), (Some("precision"), Some("1")));
    let request = fleet.all()[0].clone();
    assert_eq!(request.topic, "cctv/fleet/retrain/efficientnet_lite0");
    assert_eq!(request.payload["model"]["version"], "1");
    assert!(request.payload["value"].as_f64().unwrap() < 0.4, "{}", request.payload);
    println!("retrain requested at precision {} over {} labels", request.payload["value"], request.payload["evidence"]["labelled"]);

    // 2. The trainer answers with a release through the model-lifecycle path.
    let golden = repo("models/golden.json");
    trainer.publish(&registry.url(), "champion", 2, &["--golden", golden.to_str().unwrap()]);

    // 3. The device verifies and swaps it; feedback agrees; the alert clears.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while alerts("cleared").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no clear after {sent} labels; telemetry {}\n{}", sub.on("/telemetry").last().unwrap().payload["monitor"], agent.log());
        label_new_predictions();
    }
    let cleared = &alerts("cleared")[0];
    assert_eq!(cleared["model"]["version"], "2");
    assert!(cleared["value"].as_f64().unwrap() >= 0.5, "{cleared}");
    let activated = sub.events("model_activated");
    assert_eq!(activated.len(), 1, "{activated:?}");
    assert_eq!(activated[0]["version"], "2");
    // In order, each visible on MQTT: alert → request → (download, verify) → swap → clear.
    let seq = |v: &Value| v["seq"].as_u64().unwrap();
    let (downloading, verified) = (sub.events("model_downloading"), sub.events("model_verified"));
    assert!(seq(&raised[0]) < seq(&request.payload) && seq(&request.payload) < seq(&downloading[0]));
    assert!(seq(&downloading[0]) < seq(&verified[0]) && seq(&verified[0]) < seq(&activated[0]) && seq(&activated[0]) < seq(cleared));
    assert_eq!((alerts("raised").len(), fleet.all().len()), (1, 1), "one alert, one request");
    sub.wait_until(Duration::from_secs(5), "telemetry for version 2", |_| {
        sub.on("/telemetry").last().is_some_and(|t| t.payload["monitor"]["feedback"]["model_version"] == "2")
    });
    let feedback = sub.on("/telemetry").last().unwrap().payload["monitor"]["feedback"].clone();
    println!("after the swap: {feedback}");
    assert!(feedback["precision"].as_f64().unwrap() >= 0.5);
    assert!(agent.terminate().success(), "{}", agent.log());
}

/// The record and manifest of the release at `from`, the record edited,
/// signed again with the trainer's own key (as a stolen key or a buggy
/// trainer tool would), pushed, and `champion` moved to it.
fn push_edited(registry: &OciRegistry, trainer: &Trainer, from: &str, edit: impl Fn(&mut Value)) {
    use cctv_agent::models::registry::{Registry, RECORD_TYPE, SIGNATURE_TYPE};
    let client = Registry::new(&registry.url()).unwrap();
    let (mut manifest, _) = client.manifest(&client.tag_digest(from).unwrap().unwrap()).unwrap();
    let mut record: Value = serde_json::from_slice(&client.blob(&manifest.config, 1 << 20).unwrap()).unwrap();
    edit(&mut record);
    let bytes = serde_json::to_vec_pretty(&record).unwrap();
    let key = cctv_agent::models::release::SecretKey::load(&trainer.dir.path().join("trainer.key")).unwrap();
    manifest.config = client.push_blob(RECORD_TYPE, &bytes, None).unwrap();
    let signature = manifest.layers.iter_mut().find(|l| l.media_type == SIGNATURE_TYPE).unwrap();
    *signature = client.push_blob(SIGNATURE_TYPE, &key.sign(&bytes), Some("release.sig")).unwrap();
    client.push_manifest("champion", &manifest).unwrap();
}

/// Every path under `dir` (files and folders), relative to it; none if it does not exist.
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else { continue };
        for entry in entries.flatten() {
            found.push(entry.path().strip_prefix(dir).unwrap().display().to_string());
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_signed_release_named_outside_the_models_folder_is_refused_and_nothing_outside_is_touched() {
    let (broker, registry, trainer, sub) = start();
    trainer.publish(&registry.url(), "base", 2, &[]);
    // Where `../../victim` (from <dir>/state/models) and an absolute name
    // would install, each holding what an unrelated folder holds.
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    for victim in [dir.path().join("victim-2"), elsewhere.path().join("victim-3")] {
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::write(victim.join("keep.txt"), b"not the agent's").unwrap();
    }
    let outside_before = tree(elsewhere.path());
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "");
    let mut agent = Agent::start_in(dir, &config);
    sub.wait_until(Duration::from_secs(60), "predictions", |_| predictions(&sub).len() >= 5);

    push_edited(&registry, &trainer, "base", |r| r["name"] = "../../victim".into());
    wait_for_rejection(&sub, 1, "model name \"../../victim\" is not a plain name");
    let absolute = elsewhere.path().join("victim").display().to_string();
    push_edited(&registry, &trainer, "base", |r| {
        r["name"] = absolute.clone().into();
        r["version"] = 3.into();
    });
    wait_for_rejection(&sub, 2, "is not a plain name");

    let before = predictions(&sub).len();
    sub.wait_until(Duration::from_secs(30), "more predictions", |_| predictions(&sub).len() > before + 5);
    assert!(predictions(&sub).iter().all(|p| p["model"]["version"] == "1"), "the bundled model kept serving");
    assert!(sub.events("model_downloading").is_empty() && sub.events("model_activated").is_empty());
    let versions: Vec<Value> = sub.events("model_rejected").iter().map(|e| e["version"].clone()).collect();
    assert_eq!(versions, ["2", "3"], "versions are strings in every model event");
    assert!(agent.terminate().success());
    // Nothing outside the models folder was created, removed or changed.
    let root = agent.into_dir();
    assert_eq!(std::fs::read(root.path().join("victim-2/keep.txt")).unwrap(), b"not the agent's");
    assert_eq!(tree(&root.path().join("victim-2")), ["keep.txt"]);
    assert_eq!(tree(elsewhere.path()), outside_before);
    let models = tree(&root.path().join("state/models"));
    assert!(models.iter().all(|p| !p.contains("victim")), "{models:?}");

    // The trainer's tool refuses such a name before pushing anything.
    let named = bundled_model_with("efficientnet_lite0.toml", |spec| spec.replace("name = \"efficientnet_lite0\"", "name = \"../../victim\""));
    let out = trainer.try_publish_bad(&registry, &named);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("not a plain name"), "{stderr}");
}

#[test]
fn a_release_whose_file_sizes_wrap_around_is_refused_before_any_download() {
    let (broker, registry, trainer, sub) = start();
    trainer.publish(&registry.url(), "base", 2, &[]);
    let proxy = FaultyProxy::start(registry.port);
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "").replace(&registry.url(), &proxy.url());
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions", |_| predictions(&sub).len() >= 5);
    // Two sizes whose u64 sum wraps to 100: under every limit if added unchecked.
    push_edited(&registry, &trainer, "base", |r| {
        let files = r["files"].as_array_mut().unwrap();
        let n = files.len() as u64;
        files[0]["size"] = (u64::MAX - 50).into();
        files[1]["size"] = (151 - (n - 2)).into();
        for f in &mut files[2..] {
            f["size"] = 1.into();
        }
    });
    wait_for_rejection(&sub, 1, "add up to more than 2^64 bytes");
    let blobs: Vec<String> = proxy.requests().into_iter().filter(|r| r.contains("/blobs/")).collect();
    assert_eq!(blobs.len(), 2, "only the record and its signature were fetched: {blobs:?}");
    assert!(sub.events("model_downloading").is_empty());
    let staging = agent.state_dir().join("models/staging");
    assert!(!staging.exists() || tree(&staging).is_empty(), "{:?}", tree(&staging));
    assert!(predictions(&sub).iter().all(|p| p["model"]["version"] == "1"));
    assert!(agent.terminate().success());
}

#[test]
fn a_transient_503_and_a_broken_off_download_are_retried_with_backoff_and_the_release_installs() {
    let (broker, registry, trainer, sub) = start();
    trainer.publish(&registry.url(), "champion", 2, &[]);
    let client = cctv_agent::models::registry::Registry::new(&registry.url()).unwrap();
    let (manifest, _) = client.manifest(&client.tag_digest("champion").unwrap().unwrap()).unwrap();
    let model = manifest.layers.iter().find(|l| l.title() == Some("efficientnet_lite0.onnx")).unwrap();
    let proxy = FaultyProxy::start(registry.port);
    proxy.inject(&format!("blobs/{}", manifest.config.digest), Fault::Status(503), 1);
    proxy.inject(&format!("blobs/{}", model.digest), Fault::BreakAfter(3 << 20), 1);
    // Polling once an hour: only the retry's backoff can bring it in.
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "poll_seconds = 3600").replace(&registry.url(), &proxy.url());
    let mut agent = Agent::start(&config);

    sub.wait_until(Duration::from_secs(90), "version 2 serving", |_| predictions(&sub).iter().any(|p| p["model"]["version"] == "2"));
    assert!(sub.events("model_rejected").is_empty(), "{:?}", sub.events("model_rejected"));
    let record_gets = proxy.requests().iter().filter(|r| r.contains(&manifest.config.digest)).count();
    assert!(record_gets >= 2, "the record was fetched again after the 503: {:?}", proxy.requests());
    assert!(agent.log().contains("will retry") && agent.log().contains("resuming an interrupted download"), "{}", agent.log());
    // One model_downloading for the release, not one per attempt; versions as strings.
    let downloading = sub.events("model_downloading");
    assert_eq!(downloading.len(), 1, "{downloading:?}");
    assert_eq!(downloading[0]["version"], "2");
    assert_matches_schema(&downloading[0], "event.json");
    assert!(agent.terminate().success());
    let installed = agent.state_dir().join("models/efficientnet_lite0-2/efficientnet_lite0.onnx");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(repo("models/efficientnet_lite0.onnx")).unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&installed), mode(installed.parent().unwrap())), (0o600, 0o700));
}

#[test]
fn a_release_refused_as_not_newer_is_taken_once_a_rollback_makes_it_newer() {
    let (broker, registry, trainer, sub) = start();
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "probation_frames = 0");
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions", |_| predictions(&sub).len() >= 5);
    for version in [2, 4] {
        trainer.publish(&registry.url(), "champion", version, &[]);
        let v = version.to_string();
        sub.wait_until(Duration::from_secs(60), "the new version serving", |_| newest_version(&sub, 0).as_deref() == Some(v.as_str()));
    }
    trainer.publish(&registry.url(), "candidate", 3, &[]);
    promote(&registry, "candidate");
    wait_for_rejection(&sub, 1, "not newer than the active version 4");

    // The operator rolls 4 back to 2: now 3, still at the tag, is newer.
    publish(broker.port, "cctv/test-pole/cmd/rollback", br#"{"id": "r1"}"#);
    sub.wait_until(Duration::from_secs(30), "the rollback reply", |_| !sub.replies("rollback").is_empty());
    assert_eq!(sub.replies("rollback")[0]["result"]["version"], 2, "{}", sub.replies("rollback")[0]);
    let before = predictions(&sub).len();
    sub.wait_until(Duration::from_secs(60), "version 3 serving", |_| newest_version(&sub, before).as_deref() == Some("3"));
    assert_eq!(sub.events("model_rejected").len(), 1);
    assert!(agent.terminate().success());
}

#[test]
fn a_flood_of_announcements_costs_a_few_registry_requests_and_log_lines() {
    let (broker, registry, trainer, sub) = start();
    let proxy = FaultyProxy::start(registry.port);
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "poll_seconds = 3600").replace(&registry.url(), &proxy.url());
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions", |_| predictions(&sub).len() >= 5);
    let heads = || proxy.requests().iter().filter(|r| r.starts_with("HEAD")).count();
    let before = heads();
    let started = std::time::Instant::now();
    publish_many(broker.port, "cctv/fleet/models/efficientnet_lite0", vec![br#"{"name": "efficientnet_lite0"}"#.to_vec(); 20_000]);
    std::thread::sleep(Duration::from_secs(4));
    let seconds = started.elapsed().as_secs_f64();
    let asked = heads() - before;
    println!("20000 announcements in {seconds:.1} s: {asked} registry HEADs");
    assert!(asked >= 1 && (asked as f64) <= seconds / 2.0 + 2.0, "{asked} HEADs in {seconds:.1} s");
    let lines = agent.log().matches("model release announced").count();
    assert!(lines <= 3, "{lines} log lines");
    assert!(agent.terminate().success());
}

#[test]
fn release_keygen_refuses_a_key_id_that_leaves_its_dir_and_writes_keys_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("keys");
    for key_id in ["../evil", "/tmp/evil", "a/b", ".hidden"] {
        let out = Command::new(BIN).args(["release", "keygen", "--key-id", key_id, "--dir"]).arg(&dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("not a plain name"), "{key_id}: {stderr}");
    }
    assert_eq!(tree(root.path()), Vec::<String>::new(), "nothing written anywhere");
    assert!(!std::path::Path::new("/tmp/evil.key").exists());
    let out = Command::new(BIN).args(["release", "keygen", "--key-id", "trainer-2", "--dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dir), mode(&dir.join("trainer-2.key")), mode(&dir.join("trainer-2.pub"))), (0o700, 0o600, 0o600));
}

/// The release at `from` with its spec edited, the record's entry for the
/// spec and its version changed to match, signed again with the trainer's
/// key (a stolen key), and `champion` moved to it.
fn push_with_spec(registry: &OciRegistry, trainer: &Trainer, from: &str, version: u64, edit: impl Fn(String) -> String) {
    use cctv_agent::models::registry::{Registry, FILE_TYPE};
    let client = Registry::new(&registry.url()).unwrap();
    let (mut manifest, _) = client.manifest(&client.tag_digest(from).unwrap().unwrap()).unwrap();
    let layer = manifest.layers.iter_mut().find(|l| l.title() == Some("efficientnet_lite0.toml")).unwrap();
    let spec = String::from_utf8(client.blob(layer, 1 << 20).unwrap()).unwrap();
    *layer = client.push_blob(FILE_TYPE, edit(spec).as_bytes(), Some("efficientnet_lite0.toml")).unwrap();
    let (sha256, size) = (layer.digest.trim_start_matches("sha256:").to_string(), layer.size);
    client.push_manifest("spec-edited", &manifest).unwrap();
    push_edited(registry, trainer, "spec-edited", |r| {
        r["version"] = version.into();
        let entry = r["files"].as_array_mut().unwrap().iter_mut().find(|f| f["name"] == "efficientnet_lite0.toml").unwrap();
        entry["sha256"] = sha256.clone().into();
        entry["size"] = size.into();
    });
}

#[test]
fn a_signed_release_whose_spec_names_a_file_outside_it_is_refused_and_the_old_model_keeps_serving() {
    let (broker, registry, trainer, sub) = start();
    trainer.publish(&registry.url(), "base", 2, &[]);
    // What an attacker would have the device read at every start: labels of its own.
    let outside = tempfile::tempdir().unwrap();
    let labels = outside.path().join("labels.txt");
    std::fs::write(&labels, "PWNED\n".repeat(1000)).unwrap();
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "");
    let mut agent = Agent::start(&config);
    sub.wait_until(Duration::from_secs(60), "predictions", |_| predictions(&sub).len() >= 5);

    let outside_labels = format!("labels = {:?}", labels.display().to_string());
    push_with_spec(&registry, &trainer, "base", 2, |spec| spec.replace("labels = \"imagenet_labels.txt\"", &outside_labels));
    let rejection = wait_for_rejection(&sub, 1, "the spec's labels = ");
    assert!(rejection["reason"].as_str().unwrap().contains("not a plain file name"), "{rejection}");
    // A plain name, but not one of the release's files (so never verified).
    push_with_spec(&registry, &trainer, "base", 3, |spec| spec.replace("taxonomy = \"road_taxonomy.toml\"", "taxonomy = \"other.toml\""));
    wait_for_rejection(&sub, 2, "the spec's taxonomy = \"other.toml\" is not one of the release's files");

    let before = predictions(&sub).len();
    sub.wait_until(Duration::from_secs(30), "more predictions", |_| predictions(&sub).len() > before + 5);
    assert!(predictions(&sub).iter().all(|p| p["model"]["version"] == "1"), "the bundled model kept serving");
    assert!(!sub.all().iter().any(|m| m.payload.to_string().contains("PWNED")), "no attacker label reached a prediction");
    assert!(sub.events("model_activated").is_empty());
    assert!(agent.terminate().success());
    assert!(!agent.state_dir().join("models/efficientnet_lite0-2").exists());

    // The trainer's tool refuses such a spec before pushing anything.
    let named = bundled_model_with("efficientnet_lite0.toml", |spec| spec.replace("labels = \"imagenet_labels.txt\"", &outside_labels));
    let out = trainer.try_publish_bad(&registry, &named);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the spec's labels = ") && stderr.contains("not a plain file name"), "{stderr}");
    let client = cctv_agent::models::registry::Registry::new(&registry.url()).unwrap();
    assert_eq!(client.tag_digest("bad").unwrap(), None, "nothing pushed under the tag");
}

#[test]
fn one_garbled_download_is_downloaded_again_and_the_release_installs() {
    let (broker, registry, trainer, sub) = start();
    trainer.publish(&registry.url(), "champion", 2, &[]);
    let client = cctv_agent::models::registry::Registry::new(&registry.url()).unwrap();
    let (manifest, _) = client.manifest(&client.tag_digest("champion").unwrap().unwrap()).unwrap();
    let model = manifest.layers.iter().find(|l| l.title() == Some("efficientnet_lite0.onnx")).unwrap();
    let proxy = FaultyProxy::start(registry.port);
    // A 200 of the right length with one byte damaged, as a bad link or proxy would.
    proxy.inject(&format!("blobs/{}", model.digest), Fault::Garble, 1);
    // Polling once an hour: only the retry's backoff can bring it in.
    let config = config(&broker, &registry, &trainer, &clip_camera("loop = true\nregions = \"full\""), "poll_seconds = 3600").replace(&registry.url(), &proxy.url());
    let mut agent = Agent::start(&config);

    sub.wait_until(Duration::from_secs(90), "version 2 serving", |_| predictions(&sub).iter().any(|p| p["model"]["version"] == "2"));
    assert!(sub.events("model_rejected").is_empty(), "{:?}", sub.events("model_rejected"));
    let model_gets = proxy.requests().iter().filter(|r| r.starts_with("GET") && r.contains(&model.digest)).count();
    assert_eq!(model_gets, 2, "downloaded again after the garbled answer: {:?}", proxy.requests());
    assert!(agent.log().contains("does not match its digest") && agent.log().contains("will retry"), "{}", agent.log());
    assert_eq!(sub.events("model_downloading").len(), 1);
    assert!(agent.terminate().success());
    let installed = agent.state_dir().join("models/efficientnet_lite0-2/efficientnet_lite0.onnx");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(repo("models/efficientnet_lite0.onnx")).unwrap());
}
