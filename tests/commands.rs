//! Operator commands under attack, against a real Mosquitto (and, for
//! rollback, a real registry): a retained command is refused, never run; a
//! flood of commands gets a reply or a counted drop for each.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

fn clip_camera() -> String {
    format!("[[cameras]]\nid = \"road\"\nurl = \"{}\"\nloop = true\nregions = \"full\"\n", road_clip().display())
}

/// A broker, a subscriber to the test device, and the agent on the clip, predicting.
fn serving() -> (Mosquitto, Subscriber, Agent) {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    let agent = Agent::start(&agent_config(&broker, &clip_camera()));
    sub.wait_until(Duration::from_secs(60), "predictions", |_| sub.on("/predictions/road").len() >= 5);
    (broker, sub, agent)
}

fn versions_after(sub: &Subscriber, after: usize) -> Vec<String> {
    sub.on("/predictions/road").get(after..).unwrap_or_default().iter().map(|p| p.payload["model"]["version"].as_str().unwrap().to_string()).collect()
}

/// The trainer's key pair and `release publish`, as in tests/models.rs.
struct Trainer {
    dir: tempfile::TempDir,
}

impl Trainer {
    fn new() -> Trainer {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(BIN).args(["release", "keygen", "--key-id", "trainer", "--dir"]).arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Trainer { dir }
    }

    fn public_key(&self) -> PathBuf {
        self.dir.path().join("trainer.pub")
    }

    fn publish(&self, registry: &OciRegistry, broker: &Mosquitto, version: u64) {
        let out = Command::new(BIN)
            .args(["release", "publish", "--registry", &registry.url(), "--tag", "champion", "--version", &version.to_string(), "--key"])
            .arg(self.dir.path().join("trainer.key"))
            .arg("--model")
            .arg(repo("models/efficientnet_lite0.onnx"))
            .args(["--mqtt", &broker.url()])
            .output()
            .unwrap();
        assert!(out.status.success(), "release publish: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Issue 12, bug 3: a retained `cmd/rollback` rolled the device back at one
/// start and again at the next (and on any reconnect), refusing both versions.
#[test]
fn a_retained_rollback_is_refused_at_start_and_after_a_broker_restart_and_the_reply_says_why() {
    let mut broker = Mosquitto::start_persistent();
    let registry = OciRegistry::start();
    let trainer = Trainer::new();
    let sub = Subscriber::start_persistent(broker.port, "cctv/test-pole/#", "operator-retained");
    let config = |client_id: &str| {
        format!(
            "{}\n[registry]\nurl = \"{}\"\npoll_seconds = 3600\npublic_keys = [\"{}\"]\nvalidation_runs = 5\n",
            agent_config(&broker, &clip_camera()).replace("[mqtt]\n", &format!("[mqtt]\nclient_id = \"{client_id}\"\n")),
            registry.url(),
            trainer.public_key().display()
        )
    };
    // First run (its own MQTT session): version 2 arrives and serves.
    let agent = Agent::start(&config("first-run"));
    sub.wait_until(Duration::from_secs(60), "predictions", |_| sub.on("/predictions/road").len() >= 5);
    trainer.publish(&registry, &broker, 2);
    sub.wait_until(Duration::from_secs(60), "a prediction by version 2", |_| versions_after(&sub, 0).iter().any(|v| v == "2"));
    let dir = agent.into_dir();

    // A careless operator retains a rollback while the agent is stopped.
    publish_retained(broker.port, "cctv/test-pole/cmd/rollback", br#"{"id": "oops"}"#);
    let before = sub.on("/predictions/road").len();
    let mut agent = Agent::start_in(dir, &config("second-run"));
    sub.wait_until(Duration::from_secs(60), "the refusal and predictions", |_| {
        !sub.replies("rollback").is_empty() && versions_after(&sub, before).len() >= 10
    });
    let reply = sub.replies("rollback")[0].clone();
    assert_matches_schema(&reply, "reply.json");
    assert_eq!((reply["ok"].as_bool(), reply["id"].as_str()), (Some(false), Some("oops")), "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("publish it without retain"), "{reply}");
    assert!(versions_after(&sub, before).iter().all(|v| v == "2"), "rolled back at start: {:?}", versions_after(&sub, before));

    // A broker restart: the agent reconnects, subscribes again, the broker re-sends it.
    broker.restart();
    agent.wait_for_log("connected to MQTT broker", 2, Duration::from_secs(60));
    let before = sub.on("/predictions/road").len();
    sub.wait_until(Duration::from_secs(60), "the second refusal and predictions", |_| {
        sub.replies("rollback").len() >= 2 && versions_after(&sub, before).len() >= 10
    });
    assert!(sub.replies("rollback").iter().all(|r| r["ok"] == false), "{:?}", sub.replies("rollback"));
    assert!(versions_after(&sub, before).iter().all(|v| v == "2"), "rolled back after a reconnect: {:?}", versions_after(&sub, before));
    assert!(sub.events("model_activated").iter().all(|e| e["version"] == "2"), "{:?}", sub.events("model_activated"));
    // Published without retain, the same command runs.
    publish(broker.port, "cctv/test-pole/cmd/rollback", br#"{"id": "meant"}"#);
    sub.wait_until(Duration::from_secs(30), "the rollback", |_| sub.replies("rollback").iter().any(|r| r["id"] == "meant"));
    let done = sub.replies("rollback").into_iter().find(|r| r["id"] == "meant").unwrap();
    assert_eq!(done["ok"], true, "{done}");
    assert!(agent.terminate().success());
}

/// Issue 12, risk: 20k pings once left 6.5k without a reply (and nothing
/// said so) and ~26k WARN lines in 3 s.
#[test]
fn a_flood_of_pings_gets_a_reply_or_a_counted_drop_for_each_and_few_log_lines() {
    let (broker, sub, mut agent) = serving();

    const PINGS: usize = 20_000;
    let flood_started = Instant::now();
    publish_many(broker.port, "cctv/test-pole/cmd/ping", (0..PINGS).map(|n| format!(r#"{{"id": {n}}}"#).into_bytes()).collect());
    println!("{PINGS} pings published in {:.1} s", flood_started.elapsed().as_secs_f64());
    let dropped = |sub: &Subscriber| -> u64 {
        let last = sub.on("/telemetry").last().map(|t| t.payload["mqtt"].clone()).unwrap_or_default();
        last["inbound_dropped"].as_u64().unwrap_or(0) + last["replies_dropped"].as_u64().unwrap_or(0)
    };
    let accounted = |sub: &Subscriber| sub.replies("ping").len() as u64 + dropped(sub);
    sub.wait_until(Duration::from_secs(60), "a reply or a counted drop for every ping", |_| accounted(&sub) >= PINGS as u64);
    std::thread::sleep(Duration::from_secs(2)); // nothing more should come
    let replies = sub.replies("ping");
    let ids: std::collections::BTreeSet<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    let last = sub.on("/telemetry").last().unwrap().payload.clone();
    println!("{} replies ({} distinct), dropped: {} unread, {} replies; {:.1} s", replies.len(), ids.len(), last["mqtt"]["inbound_dropped"], last["mqtt"]["replies_dropped"], flood_started.elapsed().as_secs_f64());
    assert_matches_schema(&last, "telemetry.json");
    assert_eq!(ids.len(), replies.len(), "a ping was answered twice");
    assert_eq!(accounted(&sub), PINGS as u64, "replies + counted drops");
    assert!(replies.iter().all(|r| r["ok"] == true));
    // The agent stayed connected and serving, and the journal was not flooded.
    assert_eq!(last["mqtt"]["connects"], 1);
    let before = sub.on("/predictions/road").len();
    sub.wait_until(Duration::from_secs(10), "predictions after the flood", |_| sub.on("/predictions/road").len() > before + 5);
    let warnings = agent.log().lines().filter(|l| l.contains("WARN")).count();
    assert!(warnings <= 20, "{warnings} WARN lines:\n{}", agent.log().lines().filter(|l| l.contains("WARN")).take(20).collect::<Vec<_>>().join("\n"));
    assert!(agent.terminate().success());
}

/// Found by attacking the hardened agent: 20 messages of 1000 labels for an
/// unknown `seq` gave 20,000 WARN lines in a second, and retained feedback
/// was counted again at every connect.
#[test]
fn bad_feedback_floods_log_a_few_lines_and_retained_feedback_is_refused() {
    let broker = Mosquitto::start();
    let sub = Subscriber::start(broker.port, "cctv/test-pole/#");
    const FEEDBACK: &str = "cctv/test-pole/feedback";
    let labels: Vec<serde_json::Value> = (0..1000).map(|i| serde_json::json!({"seq": 999_999_999u64 + i, "region": 0, "class": "car"})).collect();
    let bad = serde_json::to_vec(&labels).unwrap();
    // Retained before the agent starts: the broker hands it over on subscribe.
    publish_retained(broker.port, FEEDBACK, br#"[{"seq": 1, "region": 0, "class": "car"}]"#);
    let mut agent = Agent::start(&agent_config(&broker, &clip_camera()));
    sub.wait_until(Duration::from_secs(60), "the retained feedback refused", |_| {
        sub.events("feedback_rejected").iter().any(|e| e["reason"].as_str().unwrap_or("").contains("retained feedback is not counted"))
    });
    publish_many(broker.port, FEEDBACK, vec![bad; 20]);
    let rejected = |sub: &Subscriber| sub.on("/telemetry").last().and_then(|t| t.payload["monitor"]["feedback_rejected"].as_u64()).unwrap_or(0);
    sub.wait_until(Duration::from_secs(30), "20,001 labels rejected", |_| rejected(&sub) >= 20_001);
    let monitor = sub.on("/telemetry").last().unwrap().payload["monitor"].clone();
    assert_eq!(monitor["feedback"]["labelled"], 0, "nothing retained or unknown was counted: {monitor}");
    let warnings = agent.log().lines().filter(|l| l.contains("feedback ignored")).count();
    assert!(warnings <= 5, "{warnings} lines for 20,001 rejected labels");
    assert!(agent.terminate().success());
}

/// A command name as long as the broker's packet limit made a reply the
/// broker refused, re-sent at every reconnect: a reconnect storm from one message.
#[test]
fn a_command_with_an_over_long_name_gets_no_reply_and_the_agent_stays_connected() {
    let (broker, sub, mut agent) = serving();
    let long = format!("cctv/test-pole/cmd/{}", "x".repeat(60_000));
    publish(broker.port, &long, br#"{"id": 1}"#);
    publish(broker.port, "cctv/test-pole/cmd/ping", br#"{"id": 2}"#);
    sub.wait_until(Duration::from_secs(10), "the ping's reply", |_| !sub.replies("ping").is_empty());
    assert!(!sub.all().iter().any(|m| m.topic.len() > 1000 && m.topic.ends_with("/reply")), "no reply on the long topic");
    let seen = sub.on("/telemetry").len();
    sub.wait_until(Duration::from_secs(15), "telemetry after the long command", |_| sub.on("/telemetry").len() > seen);
    let connects = sub.on("/telemetry").last().map(|t| t.payload["mqtt"]["connects"].clone());
    assert_eq!(connects, Some(serde_json::json!(1)));
    assert!(agent.terminate().success());
}
