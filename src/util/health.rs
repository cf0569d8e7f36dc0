//! Is the pipeline making progress? Each long-lived thread (camera,
//! inference) holds a [`Heartbeat`]: it beats as it works, and marks the
//! times it legitimately waits on someone else (backoff, a full queue, an
//! empty queue, the publisher). A thread that neither beats nor waits for
//! longer than the stall limit is stuck — inside OpenCV or ONNX Runtime —
//! and the systemd watchdog is no longer fed, so systemd restarts the agent.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Heartbeat {
    name: String,
    started: Instant,
    /// Milliseconds after `started` of the last beat.
    last_ms: AtomicU64,
    /// How many waits are in progress (waits may nest).
    waiting: AtomicU32,
    finished: AtomicBool,
}

impl Heartbeat {
    pub fn beat(&self) {
        self.last_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Runs a call that waits on another part (not a sign of being stuck).
    pub fn waiting<T>(&self, f: impl FnOnce() -> T) -> T {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let result = f();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.beat();
        result
    }

    /// The thread ended on purpose (a file that finished, shutdown).
    pub fn finish(&self) {
        self.finished.store(true, Ordering::SeqCst);
    }

    fn silent_for(&self) -> Option<Duration> {
        if self.finished.load(Ordering::SeqCst) || self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let now = self.started.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed))))
    }
}

#[derive(Default)]
pub struct Health {
    beats: Mutex<Vec<Arc<Heartbeat>>>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    pub fn register(&self, name: impl Into<String>) -> Arc<Heartbeat> {
        let beat = Arc::new(Heartbeat {
            name: name.into(),
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            waiting: AtomicU32::new(0),
            finished: AtomicBool::new(false),
        });
        self.beats.lock().unwrap_or_else(|e| e.into_inner()).push(beat.clone());
        beat
    }

    /// Parts silent for longer than `limit`, with how long.
    pub fn stalled(&self, limit: Duration) -> Vec<(String, Duration)> {
        self.beats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|b| b.silent_for().filter(|d| *d > limit).map(|d| (b.name.clone(), d)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_a_stall_but_waiting_and_finishing_are_not() {
        let health = Health::new();
        let busy = health.register("busy");
        let stuck = health.register("stuck");
        let done = health.register("done");
        done.finish();
        std::thread::sleep(Duration::from_millis(60));
        busy.beat();
        let stalled = health.stalled(Duration::from_millis(30));
        assert_eq!(stalled.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["stuck"]);
        stuck.waiting(|| {
            std::thread::sleep(Duration::from_millis(60));
            assert!(health.stalled(Duration::from_millis(30)).iter().all(|s| s.0 != "stuck"));
        });
        // Leaving the wait counts as a beat.
        assert!(health.stalled(Duration::from_millis(30)).iter().all(|s| s.0 != "stuck"));
    }
}
