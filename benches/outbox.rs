//! `make bench` (second part): what durability costs per message.
//!
//! The outbox's store → read → acknowledge cycle, at batch sizes 1 (one
//! prediction at a time: one fsync each) and 16 (a backlog), against the
//! cheapest durable write there is, measured in the same run on the same
//! disk: append a line to a plain file and `fdatasync` it. Rounds are
//! interleaved; medians are printed.

use cctv_agent::publish::outbox::{NewMessage, Outbox};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const ROUNDS: usize = 5;
const MESSAGES: usize = 400;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-outbox");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let body = prediction_body();
    println!("outbox: {MESSAGES} messages of {} bytes per round, {ROUNDS} interleaved rounds, in {}", body.len(), dir.display());
    let (mut baseline, mut single, mut batched) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        baseline.push(fsync_baseline(&dir.join(format!("plain-{round}")), &body));
        single.push(outbox_rate(&dir.join(format!("one-{round}.redb")), &body, 1));
        batched.push(outbox_rate(&dir.join(format!("sixteen-{round}.redb")), &body, 16));
        println!("round {}: plain file + fdatasync {:.0} msg/s | outbox, batches of 1 {:.0} msg/s | of 16 {:.0} msg/s", round + 1, baseline[round], single[round], batched[round]);
    }
    let (b, s, m) = (median(&mut baseline), median(&mut single), median(&mut batched));
    println!("median: plain file + fdatasync {b:.0} msg/s | outbox, batches of 1 {s:.0} msg/s | batches of 16 {m:.0} msg/s");
    println!("outbox (1) / plain fsync = {:.2}; outbox (16) / plain fsync = {:.2}", s / b, m / b);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A prediction like the agent's: one region, top-5.
fn prediction_body() -> Vec<u8> {
    let top_k: Vec<String> = (0..5).map(|i| format!(r#"{{"index":{},"label":"beach wagon, station wagon, wagon, estate car","score":0.{i}1}}"#, 430 + i)).collect();
    format!(
        r#"{{"device":"pole-17","camera":"north","frame_index":118,"captured_at":"2026-11-27T10:28:12.412Z","model":{{"name":"efficientnet_lite0","version":"1","sha256":"79cdeb8033223859e2c1a6e1eb6c74dfd9cb7ecb232b9044b4707391437cf816"}},"inference_ms":16.4,"regions":[{{"bbox":[412,180,210,112],"class":"car","score":0.83,"top_k":[{}]}}]}}"#,
        top_k.join(",")
    )
    .into_bytes()
}

fn fsync_baseline(path: &Path, body: &[u8]) -> f64 {
    let mut file = std::fs::File::create(path).unwrap();
    let started = Instant::now();
    for _ in 0..MESSAGES {
        file.write_all(body).unwrap();
        file.sync_data().unwrap();
    }
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}

/// Store, read back, acknowledge and delete, `batch` messages per transaction.
fn outbox_rate(path: &Path, body: &[u8], batch: usize) -> f64 {
    let mut outbox = Outbox::open(path, 64 << 20, 8 << 20);
    assert!(outbox.disk_error().is_none(), "{:?}", outbox.disk_error());
    let started = Instant::now();
    let mut handed_below = 0;
    for _ in 0..MESSAGES / batch {
        let messages = (0..batch).map(|_| NewMessage { topic: "cctv/pole-17/predictions/north".into(), body: body.to_vec() }).collect();
        outbox.append(messages, handed_below);
        for entry in outbox.read(handed_below, batch) {
            handed_below = entry.seq + 1;
            outbox.acknowledge(entry.seq);
        }
        outbox.flush_acknowledged(false).unwrap();
    }
    assert!(outbox.is_empty());
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}
