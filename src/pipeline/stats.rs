//! Per-camera counters shared between the camera thread, the inference
//! thread and telemetry. Plain atomics: writers never wait on readers.

pub use crate::wire::telemetry::{CameraSnapshot, CameraState, DetectorSnapshot};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

/// How many recent inference latencies the percentiles are taken over.
const LATENCY_WINDOW: usize = 512;

impl CameraState {
    fn from_u8(v: u8) -> CameraState {
        match v {
            1 => CameraState::Running,
            2 => CameraState::Retrying,
            3 => CameraState::Finished,
            4 => CameraState::Stopped,
            _ => CameraState::Starting,
        }
    }
}

#[derive(Debug)]
pub struct CameraStats {
    pub id: String,
    /// Frames decoded.
    pub frames_in: AtomicU64,
    /// Frames classified and handed to the publisher.
    pub frames_processed: AtomicU64,
    /// Frames with nothing to classify (no motion).
    pub frames_without_regions: AtomicU64,
    /// Frames replaced by a newer one before inference reached them.
    pub frames_dropped: AtomicU64,
    /// Times the source was opened again after a failure.
    pub reconnects: AtomicU64,
    pub inference_errors: AtomicU64,
    /// Frames of a file skipped because they could not be decoded.
    pub decode_errors: AtomicU64,
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    latencies_ms: LatencyWindow,
    /// A detector camera's detector counters.
    pub detector: Option<DetectorStats>,
}

#[derive(Debug, Default)]
pub struct DetectorStats {
    pub frames_detected: AtomicU64,
    pub frames_gated: AtomicU64,
    pub frames_tracked_only: AtomicU64,
    pub errors: AtomicU64,
    latencies_ms: LatencyWindow,
}

impl DetectorStats {
    pub fn record_latency(&self, ms: f32) {
        self.latencies_ms.push(ms);
    }
}

/// The last `LATENCY_WINDOW` latencies.
#[derive(Debug, Default)]
struct LatencyWindow(Mutex<VecDeque<f32>>);

impl LatencyWindow {
    fn push(&self, ms: f32) {
        let mut window = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(ms);
    }

    fn sorted(&self) -> Vec<f32> {
        let mut latencies: Vec<f32> = self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        latencies.sort_by(f32::total_cmp);
        latencies
    }
}

impl CameraStats {
    pub fn new(id: &str) -> CameraStats {
        CameraStats {
            id: id.to_string(),
            frames_in: AtomicU64::new(0),
            frames_processed: AtomicU64::new(0),
            frames_without_regions: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            inference_errors: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            state: AtomicU8::new(0),
            last_error: Mutex::new(None),
            latencies_ms: LatencyWindow::default(),
            detector: None,
        }
    }

    /// A camera whose regions come from the detector.
    pub fn with_detector(mut self) -> CameraStats {
        self.detector = Some(DetectorStats::default());
        self
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn state(&self) -> CameraState {
        CameraState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, state: CameraState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    pub fn record_latency(&self, ms: f32) {
        self.latencies_ms.push(ms);
    }

    pub fn snapshot(&self) -> CameraSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let latencies = self.latencies_ms.sorted();
        CameraSnapshot {
            id: self.id.clone(),
            state: self.state(),
            frames_in: load(&self.frames_in),
            frames_processed: load(&self.frames_processed),
            frames_without_regions: load(&self.frames_without_regions),
            frames_dropped: load(&self.frames_dropped),
            reconnects: load(&self.reconnects),
            inference_errors: load(&self.inference_errors),
            decode_errors: load(&self.decode_errors),
            latency_ms_p50: percentile(&latencies, 0.50),
            latency_ms_p95: percentile(&latencies, 0.95),
            last_error: self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            detector: self.detector.as_ref().map(|d| {
                let latencies = d.latencies_ms.sorted();
                DetectorSnapshot {
                    frames_detected: load(&d.frames_detected),
                    frames_gated: load(&d.frames_gated),
                    frames_tracked_only: load(&d.frames_tracked_only),
                    errors: load(&d.errors),
                    latency_ms_p50: percentile(&latencies, 0.50),
                    latency_ms_p95: percentile(&latencies, 0.95),
                }
            }),
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f32], q: f64) -> Option<f32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<f32> = (1..=100).map(|v| v as f32).collect();
        assert_eq!(percentile(&values, 0.5), Some(50.0));
        assert_eq!(percentile(&values, 0.95), Some(95.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_latency_window_keeps_only_recent_values() {
        let stats = CameraStats::new("c");
        for _ in 0..LATENCY_WINDOW {
            stats.record_latency(1000.0);
        }
        for _ in 0..LATENCY_WINDOW {
            stats.record_latency(1.0);
        }
        assert_eq!(stats.snapshot().latency_ms_p95, Some(1.0));
    }
}
