//! The counts interval in progress, kept on disk so that a crash (SIGKILL,
//! power cut) does not lose it: after every counted vehicle and every
//! interval published, the tracked camera's open interval is handed to a
//! writer thread of its own (the frame path never touches the disk), which
//! writes the newest one per camera to `state_dir/counts/<camera>.json`.
//! At the next start an interval with vehicles in it is published again,
//! marked `recovered`, ending when it was last written.
//!
//! A crash between publishing an interval and writing its successor leaves
//! the published one in the journal: it is then published twice, with the
//! same camera and `from` (receivers keep the first; docs/mqtt.md). The same
//! holds for a crash soon after a start: the recovered interval stays in the
//! journal until the new run keeps its own, so it is sent again, not lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::util::fs::{create_private_dir_all, file_safe, read_regular_file, write_atomically, FileError};
use crate::wire::vehicles::CountsMessage;

/// Journal writes waiting for the writer; beyond this the newest is dropped
/// (the journal is then one vehicle behind until the next write).
const PENDING: usize = 64;
/// A journal file is one counts message.
const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot keep the counts journal: {0}; check that the agent can write to its state_dir")]
    File(#[source] FileError),
}

/// Hands intervals to the writer thread; cheap to call from the frame path.
/// Dropping it waits for the last write: after a clean stop the journal
/// holds no interval that was published (or it would be sent twice).
pub struct CountsJournal {
    sender: Option<mpsc::SyncSender<(String, Vec<u8>)>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for CountsJournal {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl CountsJournal {
    /// Creates `dir` and starts the writer thread, which ends when the journal is dropped.
    pub fn start(dir: &Path) -> Result<CountsJournal, JournalError> {
        create_private_dir_all(dir).map_err(JournalError::File)?;
        let (sender, receiver) = mpsc::sync_channel::<(String, Vec<u8>)>(PENDING);
        let dir = dir.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("counts-journal".into())
            .spawn(move || write_newest(&dir, receiver))
            .map_err(|e| JournalError::File(FileError::new("start a thread to write", Path::new("counts journal"), e)))?;
        Ok(CountsJournal { sender: Some(sender), writer: Some(writer) })
    }

    /// Keeps `interval` (the camera's open one, `to` = now) on disk soon.
    pub fn keep(&self, interval: &CountsMessage) {
        if let (Ok(body), Some(sender)) = (serde_json::to_vec(interval), &self.sender) {
            let _ = sender.try_send((interval.camera.clone(), body));
        }
    }
}

/// Writes, per camera, the newest interval received since the last write.
fn write_newest(dir: &Path, receiver: mpsc::Receiver<(String, Vec<u8>)>) {
    while let Ok(first) = receiver.recv() {
        let mut newest: HashMap<String, Vec<u8>> = HashMap::from([first]);
        newest.extend(receiver.try_iter());
        for (camera, body) in newest {
            if let Err(error) = write_atomically(&path_of(dir, &camera), &body) {
                tracing::warn!(%error, camera, "cannot keep the counts interval in progress: a crash now would lose it");
            }
        }
    }
}

fn path_of(dir: &Path, camera: &str) -> PathBuf {
    dir.join(format!("{}.json", file_safe(camera)))
}

/// The interval a camera's last run left with vehicles in it, if any. The
/// file stays until this run keeps its own interval over it (at its first
/// counted vehicle or interval, or at a clean stop), long after the
/// recovered message is in the outbox: a crash before that recovers it
/// again (the same `from`: receivers keep the first), never loses it.
pub fn recover(dir: &Path, camera: &str) -> Option<CountsMessage> {
    let path = path_of(dir, camera);
    let bytes = match read_regular_file(&path, MAX_FILE_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "a counts journal that cannot be read is ignored: the counts of the last run's interval in progress are lost");
            return None;
        }
    };
    match serde_json::from_slice::<CountsMessage>(&bytes) {
        Ok(interval) if interval.camera != camera => {
            tracing::warn!(path = %path.display(), found = %interval.camera, "a counts journal of another camera is ignored");
            None
        }
        Ok(interval) => (!interval.vehicles.is_empty()).then_some(interval),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "a counts journal that cannot be read is ignored: the counts of the last run's interval in progress are lost");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn interval(camera: &str, cars: u64) -> CountsMessage {
        CountsMessage {
            device: "pole-17".into(),
            camera: camera.into(),
            from: "2026-12-02T03:00:00.000Z".into(),
            to: "2026-12-02T03:00:31.000Z".into(),
            vehicles: if cars == 0 { BTreeMap::new() } else { BTreeMap::from([("car".into(), cars)]) },
            lines: BTreeMap::new(),
            lanes: BTreeMap::new(),
            recovered: false,
        }
    }

    #[test]
    fn the_newest_interval_with_vehicles_is_recovered_once() {
        let dir = tempfile::tempdir().unwrap();
        let journal = CountsJournal::start(dir.path()).unwrap();
        for cars in 1..=5 {
            journal.keep(&interval("north", cars));
        }
        journal.keep(&interval("south", 0));
        // Dropping waits for the writer to write what was queued.
        drop(journal);
        assert!(path_of(dir.path(), "south").exists());
        assert_eq!(recover(dir.path(), "north").map(|i| i.vehicles["car"]), Some(5));
        // Still there until this run keeps its own interval: a crash before then recovers it again.
        assert_eq!(recover(dir.path(), "north").map(|i| i.vehicles["car"]), Some(5));
        let journal = CountsJournal::start(dir.path()).unwrap();
        journal.keep(&interval("north", 0));
        drop(journal);
        assert!(recover(dir.path(), "north").is_none(), "kept over by the new run's interval");
        assert!(recover(dir.path(), "south").is_none(), "an empty interval is nothing to recover");
        std::fs::write(path_of(dir.path(), "east"), "garbage").unwrap();
        assert!(recover(dir.path(), "east").is_none());
    }
}
