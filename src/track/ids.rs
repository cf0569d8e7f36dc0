//! Track ids unique on a device across restarts: a counter kept in the
//! state folder, reserved a block at a time so that a vehicle costs no
//! disk write. A crash skips the rest of a block, never reuses an id.

use std::path::{Path, PathBuf};

use crate::util::fs::{write_atomically, FileError};

/// Ids reserved per write of the counter file.
const BLOCK: u64 = 1000;
/// The counter file is one decimal number.
const MAX_FILE_BYTES: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum TrackIdError {
    #[error("cannot keep the track id counter: {0}; check that the agent can write to its state_dir")]
    File(#[source] FileError),
    #[error("track id counter {} holds {found:?}, not a number: delete it (ids then start again from 1)", path.display())]
    Garbled { path: PathBuf, found: String },
}

pub struct TrackIds {
    path: PathBuf,
    next: u64,
    /// Ids below this are reserved on disk.
    reserved_to: u64,
}

impl TrackIds {
    /// Opens (or starts) the counter at `path` and reserves the first block.
    pub fn open(path: &Path) -> Result<TrackIds, TrackIdError> {
        let next = match crate::util::fs::read_regular_file(path, MAX_FILE_BYTES) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).trim().to_string();
                text.parse::<u64>().map_err(|_| TrackIdError::Garbled { path: path.to_path_buf(), found: text.chars().take(32).collect() })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(TrackIdError::File(FileError::new("read", path, e))),
        };
        let mut ids = TrackIds { path: path.to_path_buf(), next: next.max(1), reserved_to: next.max(1) };
        ids.reserve()?;
        Ok(ids)
    }

    fn reserve(&mut self) -> Result<(), TrackIdError> {
        let to = self.next.saturating_add(BLOCK);
        write_atomically(&self.path, format!("{to}\n").as_bytes()).map_err(TrackIdError::File)?;
        self.reserved_to = to;
        Ok(())
    }

    /// The next id. When the reservation cannot be written, the id is
    /// still unique within this run; the error says why the next run may
    /// repeat it.
    pub fn next(&mut self) -> (u64, Option<TrackIdError>) {
        let error = if self.next >= self.reserved_to { self.reserve().err() } else { None };
        let id = self.next;
        self.next = self.next.saturating_add(1);
        if error.is_some() {
            // Try again on the next id rather than for every one.
            self.reserved_to = self.next;
        }
        (id, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_rise_within_a_run_and_never_repeat_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("track_ids");
        let mut first = TrackIds::open(&path).unwrap();
        let a: Vec<u64> = (0..1500).map(|_| first.next().0).collect();
        assert!(a.windows(2).all(|w| w[1] == w[0] + 1) && a[0] == 1);
        drop(first);
        // A restart (or a crash mid-block) starts above everything handed out.
        let mut second = TrackIds::open(&path).unwrap();
        let b = second.next().0;
        assert!(b > *a.last().unwrap(), "{b} after {}", a.last().unwrap());
    }

    #[test]
    fn a_garbled_counter_is_named_not_reset_to_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("track_ids");
        std::fs::write(&path, "twelve").unwrap();
        assert!(matches!(TrackIds::open(&path), Err(TrackIdError::Garbled { .. })));
    }
}
