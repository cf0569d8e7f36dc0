//! Cameras that would hurt the agent: a source that blocks in open and one
//! whose frames are too large. The real agent, real Mosquitto, real OpenCV.

mod support;

use std::time::{Duration, Instant};
use support::*;

fn camera(id: &str, url: &str, extra: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\n{extra}\n")
}

fn camera_telemetry(sub: &Subscriber, id: &str) -> serde_json::Value {
    let telemetry = sub.on("/telemetry").last().expect("telemetry").payload.clone();
    telemetry["cameras"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap().clone()
}

/// Waits until the good camera has made 20 predictions and telemetry shows
/// an error for `bad`; returns `bad`'s telemetry.
fn wait_for_good_predictions_and_an_error_for(sub: &Subscriber, bad: &str) -> serde_json::Value {
    sub.wait_until(Duration::from_secs(40), &format!("predictions from the good camera and an error for {bad}"), |messages| {
        let good = messages.iter().filter(|m| m.topic.ends_with("/predictions/good")).count();
        let bad_error = messages.iter().rev().find(|m| m.topic.ends_with("/telemetry")).is_some_and(|t| {
            t.payload["cameras"].as_array().unwrap().iter().any(|c| c["id"] == bad && c["last_error"].is_string())
        });
        good >= 20 && bad_error
    });
    camera_telemetry(sub, bad)
}

/// A FIFO waits in open for a writer, and OpenCV's FFmpeg backend holds a
/// process-wide lock while it opens: before the fix the other camera never
/// opened and SIGTERM could not end the agent.
#[test]
fn a_fifo_camera_is_refused_the_other_camera_serves_and_sigterm_exits_in_time() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("camera.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // The FIFO camera first, so that it would take the lock before the good one opens.
    let cameras = [
        camera("fifo", &fifo.display().to_string(), ""),
        camera("good", &road_clip().display().to_string(), "loop = true"),
    ]
    .concat();
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    let fifo_state = wait_for_good_predictions_and_an_error_for(&sub, "fifo");
    assert!(fifo_state["last_error"].as_str().unwrap().contains("is a FIFO, not a video file"), "{fifo_state}");
    assert_eq!(fifo_state["state"], "retrying");
    let lost = sub.events("camera_lost");
    assert!(lost.iter().any(|e| e["camera"] == "fifo" && e["reason"].as_str().unwrap().contains("FIFO")), "{lost:?}");

    let asked = Instant::now();
    assert!(agent.terminate().success(), "{}", agent.log());
    let took = asked.elapsed();
    // The shutdown bound is 8 s; a clean stop with a reachable broker takes well under it.
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}; log:\n{}", agent.log());
    assert!(!agent.log().contains("shutdown took too long"), "{}", agent.log());
}

/// An 8000×8000 stream cost 843 MB before it was refused; the limit is
/// checked on what the container declares, before the first decode.
#[test]
fn a_camera_over_max_frame_pixels_is_refused_before_decoding_and_the_other_serves() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    // The bundled clip is far above 64×64: with that limit it stands in for a huge stream.
    let cameras = [
        camera("huge", &road_clip().display().to_string(), "loop = true\nmax_frame_pixels = 4096"),
        camera("good", &road_clip().display().to_string(), "loop = true"),
    ]
    .concat();
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    let huge = wait_for_good_predictions_and_an_error_for(&sub, "huge");
    let error = huge["last_error"].as_str().unwrap();
    assert!(error.contains("`max_frame_pixels` (4096)"), "{huge}");
    assert_eq!(huge["frames_in"], 0, "no frame of the huge camera was decoded and counted: {huge}");
    assert!(sub.on("/predictions/huge").is_empty());
    assert!(agent.terminate().success());
}

#[test]
fn check_config_refuses_a_frame_limit_out_of_bounds() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    for (value, expect_ok) in [("100", false), ("4096", true), ("99999999999", false)] {
        let config = agent_config(&broker, &camera("road", &road_clip().display().to_string(), &format!("max_frame_pixels = {value}")));
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, config).unwrap();
        let check = std::process::Command::new(BIN).arg("check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.success(), expect_ok, "max_frame_pixels = {value}: {stderr}");
        if !expect_ok {
            assert!(stderr.contains("cameras[0].max_frame_pixels"), "{stderr}");
        }
    }
}
