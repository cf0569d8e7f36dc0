//! `cctv-agent watch`: a console subscriber that prints predictions,
//! status changes and events (alerts among them) as they arrive, one line each.

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
