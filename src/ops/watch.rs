//! `cctv-agent watch`: a console subscriber that prints predictions,
//! vehicles, status changes and events (alerts among them) as they arrive,
//! one line each, and each counts interval as a small table.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

pub struct WatchOptions {
    pub options: MqttOptions,
    pub topic_root: String,
    /// A device id, or `+` for all.
    pub device: String,
    /// Print each payload as it came, instead of a summary line.
    pub json: bool,
}

/// Why `watch` stopped; an unreachable broker is retried, not an error.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Subscribe(#[from] rumqttc::ClientError),
}

pub async fn run(watch: WatchOptions) -> Result<(), WatchError> {
    let (client, mut eventloop) = AsyncClient::new(watch.options, 64);
    let filters = [
        format!("{}/{}/predictions/+", watch.topic_root, watch.device),
        format!("{}/{}/vehicles/+", watch.topic_root, watch.device),
        format!("{}/{}/counts/+", watch.topic_root, watch.device),
        format!("{}/{}/status", watch.topic_root, watch.device),
        format!("{}/{}/events", watch.topic_root, watch.device),
    ];
    let mut stdout = std::io::stdout();
    let mut reported_down = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                reported_down = false;
                for filter in &filters {
                    client.subscribe(filter, QoS::AtLeastOnce).await?;
                }
                eprintln!("watching {}", filters.join(" and "));
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let line = if watch.json {
                    String::from_utf8_lossy(&publish.payload).into_owned()
                } else {
                    summarise(&publish.topic, &publish.payload)
                };
                if writeln!(stdout, "{line}").is_err() {
                    return Ok(()); // stdout closed (e.g. piped into `head`)
                }
            }
            Ok(_) => {}
            Err(error) => {
                if !reported_down {
                    eprintln!("cannot reach the broker ({error}); retrying");
                    reported_down = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// `demo/road #42 frame 118 | truck 0.71 [412,180,150,96] (pickup 0.52)`
pub fn summarise(topic: &str, payload: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return format!("{topic}: {}", String::from_utf8_lossy(payload));
    };
    if topic.ends_with("/status") {
        return format!("{} is {}", v["device"].as_str().unwrap_or("?"), v["state"].as_str().unwrap_or("?"));
    }
    if topic.ends_with("/events") {
        return summarise_event(&v);
    }
    if topic.contains("/vehicles/") {
        return summarise_vehicle(&v);
    }
    if topic.contains("/counts/") {
        return summarise_counts(&v);
    }
    let regions: Vec<String> = v["regions"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let b = &r["bbox"];
                    format!(
                        "{} {:.2} [{},{},{},{}] ({} {:.2})",
                        r["class"].as_str().unwrap_or("?"),
                        r["score"].as_f64().unwrap_or(0.0),
                        b[0], b[1], b[2], b[3],
                        r["top_k"][0]["label"].as_str().unwrap_or("?").split(',').next().unwrap_or("?"),
                        r["top_k"][0]["score"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{}/{} #{} frame {} | {}",
        v["device"].as_str().unwrap_or("?"),
        v["camera"].as_str().unwrap_or("?"),
        v["seq"],
        v["frame_index"],
        regions.join(" | ")
    )
}

/// `03:01:43 demo/road  east   car         0.71  middle forward   17.2 km/h  (road-1, 92 frames)`
fn summarise_vehicle(v: &Value) -> String {
    let time = v["last_seen"].as_str().and_then(|t| t.get(11..19)).unwrap_or("?");
    let crossings: Vec<String> = v["crossings"]
        .as_array()
        .map(|cs| cs.iter().map(|c| format!("{} {}", c["line"].as_str().unwrap_or("?"), c["direction"].as_str().unwrap_or("?"))).collect())
        .unwrap_or_default();
    let speed = v["speed_kmh"].as_f64().map(|s| format!("{s:.1} km/h")).unwrap_or_else(|| "-".into());
    format!(
        "{time} {}/{}  {:<8} {:<11} {:.2}  {:<18} {:>10}  ({}, {} frames)",
        v["device"].as_str().unwrap_or("?"),
        v["camera"].as_str().unwrap_or("?"),
        v["lane"].as_str().unwrap_or("-"),
        v["class"].as_str().unwrap_or("?"),
        v["score"].as_f64().unwrap_or(0.0),
        if crossings.is_empty() { "-".to_string() } else { crossings.join(", ") },
        speed,
        v["track"].as_str().unwrap_or("?"),
        v["frames"],
    )
}

/// One line for the interval, then one per line and lane:
/// `counts demo/road 03:01:00–03:02:00: 3 vehicles (car 2, van 1)`
fn summarise_counts(v: &Value) -> String {
    let classes = |m: &Value| -> (u64, String) {
        let Some(m) = m.as_object() else { return (0, String::new()) };
        let total = m.values().filter_map(Value::as_u64).sum();
        (total, m.iter().map(|(class, n)| format!("{class} {n}")).collect::<Vec<_>>().join(", "))
    };
    let time = |k: &str| v[k].as_str().and_then(|t| t.get(11..19)).unwrap_or("?").to_string();
    let (total, mix) = classes(&v["vehicles"]);
    let mut out = format!(
        "counts {}/{} {}–{}: {total} vehicle{}{}",
        v["device"].as_str().unwrap_or("?"),
        v["camera"].as_str().unwrap_or("?"),
        time("from"),
        time("to"),
        if total == 1 { "" } else { "s" },
        if mix.is_empty() { String::new() } else { format!(" ({mix})") },
    );
    for (line, counts) in v["lines"].as_object().into_iter().flatten() {
        let (f, forward) = classes(&counts["forward"]);
        let (b, backward) = classes(&counts["backward"]);
        out.push_str(&format!("\n  line {line:<10} forward {f:>3} {forward:<30} backward {b:>3} {backward}"));
    }
    for (lane, counts) in v["lanes"].as_object().into_iter().flatten() {
        let (n, mix) = classes(counts);
        out.push_str(&format!("\n  lane {lane:<10} {n:>3} {mix}"));
    }
    out
}

fn summarise_event(v: &Value) -> String {
    let device = v["device"].as_str().unwrap_or("?");
    let kind = v["kind"].as_str().unwrap_or("?");
    if kind == "alert" {
        let camera = v["camera"].as_str().map(|c| format!(" on {c}")).unwrap_or_default();
        return format!(
            "{device} #{} ALERT {} {}{camera}: {:.3} (alert {} {}, clears at {}; model {}) — {}",
            v["seq"],
            v["alert"].as_str().unwrap_or("?"),
            v["state"].as_str().unwrap_or("?"),
            v["value"].as_f64().unwrap_or(f64::NAN),
            v["bad"].as_str().unwrap_or("?"),
            v["threshold"],
            v["clear_at"],
            v["model"]["version"].as_str().unwrap_or("?"),
            v["advice"].as_str().unwrap_or(""),
        );
    }
    let detail = ["reason", "camera", "version", "error"].iter().find_map(|k| v[*k].as_str().map(|s| format!(": {s}"))).unwrap_or_default();
    format!("{device} #{} event {kind}{detail}", v["seq"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vehicle_is_one_line_and_counts_a_table() {
        let vehicle = br#"{"seq":3,"device":"demo","camera":"road","track":"road-7","class":"car","score":0.71,"votes":{"car":20},"first_seen":"2026-12-02T03:01:42.000Z","last_seen":"2026-12-02T03:01:43.453Z","frames":92,"classified_frames":20,"lane":"east","crossings":[{"line":"middle","direction":"forward","at":"2026-12-02T03:01:43.199Z","frame":68}],"speed_kmh":17.2,"bbox":[1,2,3,4],"best_frame":51,"model":{}}"#;
        assert_eq!(
            summarise("cctv/demo/vehicles/road", vehicle),
            "03:01:43 demo/road  east     car         0.71  middle forward      17.2 km/h  (road-7, 92 frames)"
        );
        let counts = br#"{"seq":9,"device":"demo","camera":"road","from":"2026-12-02T03:01:00.000Z","to":"2026-12-02T03:02:00.000Z","vehicles":{"car":2,"van":1},"lines":{"middle":{"forward":{"car":2},"backward":{"van":1}}},"lanes":{"east":{"car":2},"west":{}}}"#;
        let table = summarise("cctv/demo/counts/road", counts);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "counts demo/road 03:01:00–03:02:00: 3 vehicles (car 2, van 1)");
        assert!(lines[1].starts_with("  line middle") && lines[1].contains("forward   2 car 2") && lines[1].ends_with("backward   1 van 1"), "{table}");
        assert_eq!(lines[2].trim_end(), "  lane east         2 car 2");
        assert_eq!(lines[3].trim_end(), "  lane west         0");
    }

    #[test]
    fn an_alert_reads_as_one_line_with_what_to_do() {
        let alert = br#"{"seq":41,"device":"pole-17","kind":"alert","alert":"brightness","state":"raised","camera":"north","value":2.5,"bad":"below","threshold":40.0,"clear_at":55.0,"model":{"version":"3"},"advice":"check camera north"}"#;
        assert_eq!(
            summarise("cctv/pole-17/events", alert),
            "pole-17 #41 ALERT brightness raised on north: 2.500 (alert below 40.0, clears at 55.0; model 3) — check camera north"
        );
        let lost = br#"{"seq":7,"device":"pole-17","kind":"camera_lost","camera":"north","reason":"no frames"}"#;
        assert_eq!(summarise("cctv/pole-17/events", lost), "pole-17 #7 event camera_lost: no frames");
    }
}
