//! The bounded hand-off from camera threads to the inference thread.
//!
//! What happens when full is chosen per push:
//! - [`FrameQueue::push_latest`] (live cameras, realtime replay): at most one
//!   frame per camera waits; a newer frame replaces it and the replaced frame
//!   is counted as dropped. The camera never waits.
//! - [`FrameQueue::push_wait`] (files replayed `asap`): at most
//!   `ASAP_DEPTH` frames per camera wait; the camera thread blocks until
//!   inference takes one. Nothing is dropped.
//!
//! Frames leave in arrival order, so cameras are served fairly.

use opencv::core::{Mat, Rect};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::SystemTime;

/// Frames an `asap` camera may have waiting: enough to keep inference busy
/// while the camera decodes the next one.
pub const ASAP_DEPTH: usize = 2;

/// A decoded frame and the regions to classify in it.
pub struct FrameJob {
    /// Index of the camera in the config.
    pub camera: usize,
    /// Position of the frame in its source (0-based, counts every decoded frame).
    pub frame_index: u64,
    pub captured_at: SystemTime,
    /// The camera's clock in seconds: the file's own time (frame index over
    /// its frame rate) for files, time since the stream opened for live
    /// ones. Tracking measures speed on it.
    pub clock_s: f64,
    pub frame: Mat,
    pub regions: Vec<Rect>,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<FrameJob>,
    closed: bool,
    /// Frames inference is done with, handed back so decoding can reuse
    /// their buffers instead of allocating a new one per frame.
    spare: Vec<Mat>,
}

/// Spare frame buffers kept for reuse; beyond this they are freed.
const MAX_SPARE: usize = 4;

#[derive(Default)]
pub struct FrameQueue {
    state: Mutex<State>,
    /// Signalled when a job arrives or the queue closes.
    filled: Condvar,
    /// Signalled when a job leaves.
    drained: Condvar,
}

impl FrameQueue {
    pub fn new() -> FrameQueue {
        FrameQueue::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`, replacing a frame of the same camera that is still
    /// waiting. Returns how many frames were dropped (0 or 1).
    pub fn push_latest(&self, job: FrameJob) -> u64 {
        let mut state = self.lock();
        if state.closed {
            return 1;
        }
        let dropped = match state.jobs.iter_mut().find(|j| j.camera == job.camera) {
            Some(waiting) => {
                *waiting = job;
                1
            }
            None => {
                state.jobs.push_back(job);
                0
            }
        };
        self.filled.notify_one();
        dropped
    }

    /// Queues `job`, waiting while this camera already has `ASAP_DEPTH`
    /// frames waiting. Returns false if the queue closed first.
    pub fn push_wait(&self, job: FrameJob) -> bool {
        let mut state = self.lock();
        while !state.closed && state.jobs.iter().filter(|j| j.camera == job.camera).count() >= ASAP_DEPTH {
            state = self.drained.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.closed {
            return false;
        }
        state.jobs.push_back(job);
        self.filled.notify_one();
        true
    }

    /// The oldest waiting frame; blocks until one arrives. `None` once the
    /// queue is closed and empty.
    pub fn pop(&self) -> Option<FrameJob> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                self.drained.notify_all();
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self.filled.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`FrameQueue::pop`], but gives up at `deadline`: `Err(true)` when
    /// the queue is closed and empty, `Err(false)` at the deadline.
    pub fn pop_until(&self, deadline: std::time::Instant) -> Result<FrameJob, bool> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                self.drained.notify_all();
                return Ok(job);
            }
            if state.closed {
                return Err(true);
            }
            let Some(wait) = deadline.checked_duration_since(std::time::Instant::now()).filter(|w| !w.is_zero()) else {
                return Err(false);
            };
            state = self.filled.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// A used frame buffer for the next decode (or an empty one).
    pub fn take_spare(&self) -> Mat {
        self.lock().spare.pop().unwrap_or_default()
    }

    /// Hands a frame buffer inference no longer needs back for reuse.
    pub fn give_back(&self, frame: Mat) {
        let mut state = self.lock();
        if state.spare.len() < MAX_SPARE {
            state.spare.push(frame);
        }
    }

    /// No more frames will be accepted; the frames waiting are still handed out.
    pub fn close(&self) {
        self.lock().closed = true;
        self.filled.notify_all();
        self.drained.notify_all();
    }

    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn job(camera: usize, frame_index: u64) -> FrameJob {
        FrameJob { camera, frame_index, captured_at: SystemTime::now(), clock_s: frame_index as f64 / 25.0, frame: Mat::default(), regions: vec![] }
    }

    #[test]
    fn a_live_camera_keeps_only_its_newest_frame_and_counts_the_rest() {
        let q = FrameQueue::new();
        assert_eq!(q.push_latest(job(0, 1)), 0);
        assert_eq!(q.push_latest(job(1, 1)), 0);
        assert_eq!(q.push_latest(job(0, 2)), 1);
        assert_eq!(q.push_latest(job(0, 3)), 1);
        assert_eq!(q.len(), 2);
        let first = q.pop().unwrap();
        assert_eq!((first.camera, first.frame_index), (0, 3));
        assert_eq!(q.pop().unwrap().camera, 1);
    }

    #[test]
    fn an_asap_camera_waits_instead_of_dropping() {
        let q = Arc::new(FrameQueue::new());
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || (0..20).all(|i| q.push_wait(job(0, i))))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(q.len() <= ASAP_DEPTH);
        let received: Vec<u64> = (0..20).map(|_| q.pop().unwrap().frame_index).collect();
        assert!(producer.join().unwrap());
        assert_eq!(received, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn pop_until_waits_for_a_frame_or_the_deadline() {
        let q = Arc::new(FrameQueue::new());
        let soon = std::time::Instant::now() + Duration::from_millis(30);
        assert_eq!(q.pop_until(soon).err(), Some(false));
        assert!(std::time::Instant::now() >= soon);
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                q.push_latest(job(0, 5))
            })
        };
        let got = q.pop_until(std::time::Instant::now() + Duration::from_secs(5)).ok().map(|j| j.frame_index);
        producer.join().unwrap();
        assert_eq!(got, Some(5));
        q.close();
        assert_eq!(q.pop_until(std::time::Instant::now() + Duration::from_secs(5)).err(), Some(true));
    }

    #[test]
    fn close_hands_out_what_is_waiting_then_ends() {
        let q = FrameQueue::new();
        q.push_latest(job(0, 7));
        q.close();
        assert_eq!(q.pop().unwrap().frame_index, 7);
        assert!(q.pop().is_none());
        assert!(!q.push_wait(job(0, 8)));
    }
}
