//! Track ids unique on a device across restarts: a counter kept in the
//! state folder, reserved a block at a time. The first block is reserved
//! when the agent starts; the next is written by a short-lived thread of its
//! own while half the current one is left, so the frame path never touches
//! the disk. A crash skips the rest of a block, never reuses an id.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::util::fs::{write_atomically, FileError};

/// Ids reserved per write of the counter file.
const BLOCK: u64 = 10_000;
/// The counter file is one decimal number.
const MAX_FILE_BYTES: u64 = 64;
/// Ids stay exact in a JSON number, whatever reads them.
const MAX_ID: u64 = (1 << 53) - 1;

/// Milliseconds since the epoch: where ids go on when the counter is lost.
fn time_floor() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64).min(MAX_ID - BLOCK)
}

#[derive(Debug, thiserror::Error)]
pub enum TrackIdError {
    #[error("cannot keep the track id counter: {0}; check that the agent can write to its state_dir")]
    File(#[source] FileError),
    #[error("track id counter {} holds {found:?}, not a number below 2^53; it is rewritten (nothing to do)", path.display())]
    Garbled { path: PathBuf, found: String },
}

pub struct TrackIds {
    path: PathBuf,
    next: u64,
    /// Ids below this are reserved on disk; raised by the writer thread.
    reserved_to: Arc<AtomicU64>,
    /// The next reservation, being written.
    writer: Option<std::thread::JoinHandle<Result<(), TrackIdError>>>,
}

impl TrackIds {
    /// Opens (or starts) the counter at `path` and reserves the first block
    /// (on the caller's thread: the agent's start-up). A counter that is not
    /// a number (a damaged disk, a hand edit) is not a reason to stop
    /// counting vehicles: ids go on from the time in milliseconds, far above
    /// any count a device reaches, and the problem is logged.
    pub fn open(path: &Path) -> Result<TrackIds, TrackIdError> {
        let next = match crate::util::fs::read_regular_file(path, MAX_FILE_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).trim().to_string();
                match text.parse::<u64>().ok().filter(|n| *n <= MAX_ID) {
                    Some(n) => n,
                    None => {
                        let error = TrackIdError::Garbled { path: path.to_path_buf(), found: text.chars().take(32).collect() };
                        tracing::warn!(%error, "track ids go on from the clock");
                        time_floor()
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(TrackIdError::File(FileError::new("read", path, e))),
        }
        .max(1);
        let to = next.saturating_add(BLOCK);
        reserve(path, to)?;
        Ok(TrackIds { path: path.to_path_buf(), next, reserved_to: Arc::new(AtomicU64::new(to)), writer: None })
    }

    /// The next id, and the error of a reservation that could not be
    /// written (the id is still unique within this run; after a restart
    /// ids from the last reserved block on could repeat).
    pub fn next_id(&mut self) -> (u64, Option<TrackIdError>) {
        let mut error = None;
        if self.writer.as_ref().is_some_and(|w| w.is_finished()) {
            if let Some(Ok(Err(e))) = self.writer.take().map(std::thread::JoinHandle::join) {
                error = Some(e);
            }
        }
        let reserved_to = self.reserved_to.load(Ordering::Acquire);
        if self.writer.is_none() && self.next.saturating_add(BLOCK / 2) >= reserved_to {
            let (path, shared) = (self.path.clone(), self.reserved_to.clone());
            let to = reserved_to.max(self.next).saturating_add(BLOCK);
            let spawned = std::thread::Builder::new().name("track-ids".into()).spawn(move || {
                reserve(&path, to)?;
                shared.fetch_max(to, Ordering::AcqRel);
                Ok(())
            });
            match spawned {
                Ok(handle) => self.writer = Some(handle),
                Err(e) => error = Some(TrackIdError::File(FileError::new("start a thread to write", &self.path, e))),
            }
        }
        if self.next >= self.reserved_to.load(Ordering::Acquire) {
            // Ids outran the writer (thousands in one write's time: never on a
            // road): wait for it rather than hand out an id not on disk.
            self.settle();
            if self.next >= self.reserved_to.load(Ordering::Acquire) {
                let to = self.next.saturating_add(BLOCK);
                match reserve(&self.path, to) {
                    Ok(()) => self.reserved_to.store(to, Ordering::Release),
                    Err(e) => error = Some(e),
                }
            }
        }
        let id = self.next;
        self.next = self.next.saturating_add(1);
        (id, error)
    }

    /// Waits for a reservation being written (tests; shutdown need not).
    pub fn settle(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn reserve(path: &Path, to: u64) -> Result<(), TrackIdError> {
    write_atomically(path, format!("{to}\n").as_bytes()).map_err(TrackIdError::File)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_rise_within_a_run_and_never_repeat_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("track_ids");
        let mut first = TrackIds::open(&path).unwrap();
        // Past two blocks: the later reservations are written off this thread.
        let a: Vec<u64> = (0..25_000).map(|_| first.next_id().0).collect();
        assert!(a.windows(2).all(|w| w[1] == w[0] + 1) && a[0] == 1);
        first.settle();
        drop(first);
        // A restart (or a crash mid-block) starts above everything handed out.
        let mut second = TrackIds::open(&path).unwrap();
        let b = second.next_id().0;
        assert!(b > *a.last().unwrap(), "{b} after {}", a.last().unwrap());
    }

    #[test]
    fn a_garbled_or_huge_counter_goes_on_from_the_clock_not_from_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("track_ids");
        for garbage in ["twelve", "18446744073709551615", ""] {
            std::fs::write(&path, garbage).unwrap();
            let mut ids = TrackIds::open(&path).unwrap();
            let id = ids.next_id().0;
            assert!(id > 1_700_000_000_000 && id < 1 << 53, "{garbage:?} → {id}");
            ids.settle();
            // And the counter is a number again.
            let again: u64 = std::fs::read_to_string(&path).unwrap().trim().parse().unwrap();
            assert!(again > id);
        }
    }
}
