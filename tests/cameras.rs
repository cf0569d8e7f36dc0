//! Cameras that would hurt the agent: a source that blocks in open and one
//! whose frames are too large. The real agent, real Mosquitto, real OpenCV.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
/// process-wide lock while it opens: before the fix a FIFO nobody wrote to
/// kept the other camera from ever opening and SIGTERM could not end the
/// agent. Now it is opened only once data waits in it.
#[test]
fn a_fifo_camera_waits_for_its_writer_without_holding_up_the_other_camera_or_sigterm() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("camera.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // The FIFO camera first, so that it would take the lock before the good one opens.
    let cameras = [
        camera("fifo", &fifo.display().to_string(), "loop = true"),
        camera("good", &road_clip().display().to_string(), "loop = true"),
    ]
    .concat();
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    let fifo_state = wait_for_good_predictions_and_an_error_for(&sub, "fifo");
    assert!(fifo_state["last_error"].as_str().unwrap().contains("nothing has written to the FIFO"), "{fifo_state}");
    assert_eq!(fifo_state["state"], "retrying");
    let lost = sub.events("camera_lost");
    assert!(lost.iter().any(|e| e["camera"] == "fifo" && e["reason"].as_str().unwrap().contains("start the process that feeds it")), "{lost:?}");

    // A writer starts: the FIFO camera is classified too.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, fifo, clip) = (stop.clone(), fifo.clone(), std::fs::read(road_clip()).unwrap());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(&fifo) {
                    let _ = std::io::Write::write_all(&mut f, &clip);
                }
            }
        })
    };
    sub.wait_until(Duration::from_secs(60), "predictions from the FIFO camera", |m| m.iter().filter(|m| m.topic.ends_with("/predictions/fifo")).count() >= 10);
    assert!(sub.events("camera_back").iter().any(|e| e["camera"] == "fifo"));

    let asked = Instant::now();
    assert!(agent.terminate().success(), "{}", agent.log());
    let took = asked.elapsed();
    // The shutdown bound is 8 s; a clean stop with a reachable broker takes well under it.
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}; log:\n{}", agent.log());
    assert!(!agent.log().contains("shutdown took too long"), "{}", agent.log());
    // The writer may be blocked opening the FIFO for a reader that is gone; it ends with the test process.
    stop.store(true, Ordering::SeqCst);
    drop(writer);
}

#[test]
fn a_socket_or_folder_as_a_camera_is_refused_with_what_to_point_it_at() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let dir = tempfile::tempdir().unwrap();
    let cameras = [
        camera("folder", &dir.path().display().to_string(), ""),
        camera("good", &road_clip().display().to_string(), "loop = true"),
    ]
    .concat();
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    let folder = wait_for_good_predictions_and_an_error_for(&sub, "folder");
    assert!(folder["last_error"].as_str().unwrap().contains("is a folder, not a video file"), "{folder}");
    assert!(agent.terminate().success());
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

/// Cameras take credentials in the URL; before, the password was in every
/// retry warning, every `camera_lost` event and every telemetry message.
#[test]
fn camera_credentials_never_reach_the_log_events_or_telemetry() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let dead_port = free_port();
    let cameras = [
        camera("door", &format!("rtsp://admin:S3cretPw@127.0.0.1:{dead_port}/stream"), ""),
        camera("good", &road_clip().display().to_string(), "loop = true"),
    ]
    .concat();
    let mut agent = Agent::start(&agent_config(&broker, &cameras));
    let door = wait_for_good_predictions_and_an_error_for(&sub, "door");
    assert!(door["last_error"].as_str().unwrap().contains("rtsp://***@127.0.0.1"), "{door}");
    sub.wait_until(Duration::from_secs(10), "camera_lost for the door", |_| sub.events("camera_lost").iter().any(|e| e["camera"] == "door"));
    assert!(agent.terminate().success());
    let leaked: Vec<String> = sub.all().iter().map(|m| m.payload.to_string()).filter(|p| p.contains("S3cretPw")).collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    assert!(!agent.log().contains("S3cretPw"), "{}", agent.log());
}
