//! Records rollbacks in the model store on a thread of its own, so that the
//! inference thread, which decides them between two frames, never waits for
//! the disk.

use std::path::Path;
use std::sync::mpsc;

use super::store::{InstalledModel, ModelStore};

/// A release that failed probation, and what serves from the next start on
/// (None: the configured model).
pub struct Rollback {
    pub version: u64,
    pub fallback: Option<InstalledModel>,
}

enum Job {
    Record(Rollback),
    /// Answer once everything before it is written.
    Flush(mpsc::SyncSender<()>),
}

/// Rollbacks waiting to be written (at most one per release, so this never fills in practice).
const QUEUE: usize = 8;

/// The inference thread's side: never waits.
#[derive(Clone)]
pub struct RollbackRecorder {
    tx: mpsc::SyncSender<Job>,
}

/// The thread's side: ends when every recorder is gone.
pub struct RecorderThread {
    store: ModelStore,
    rx: mpsc::Receiver<Job>,
}

impl RollbackRecorder {
    pub fn new(models_dir: &Path) -> (RollbackRecorder, RecorderThread) {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        (RollbackRecorder { tx }, RecorderThread { store: ModelStore::new(models_dir), rx })
    }

    pub fn record(&self, rollback: Rollback) {
        if let Err(error) = self.tx.try_send(Job::Record(rollback)) {
            let why = match error {
                mpsc::TrySendError::Full(_) => "has too many rollbacks to write",
                mpsc::TrySendError::Disconnected(_) => "has stopped",
            };
            tracing::error!(why, "the model store's thread cannot take the rollback; the failed model may serve again after a restart");
        }
    }

    /// Waits (up to `timeout`) until every rollback recorded so far is on disk: at shutdown.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let (done, wait) = mpsc::sync_channel(1);
        self.tx.try_send(Job::Flush(done)).is_ok() && wait.recv_timeout(timeout).is_ok()
    }
}

impl RecorderThread {
    pub fn run(self) {
        for job in self.rx {
            let rollback = match job {
                Job::Record(rollback) => rollback,
                Job::Flush(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let written = self.store.refuse(rollback.version).and_then(|()| self.store.set_active(rollback.fallback.as_ref()));
            match written {
                Ok(()) => tracing::info!(version = rollback.version, "rollback recorded: this version is refused from now on"),
                Err(error) => tracing::error!(%error, "cannot record the rollback on disk; the failed model may serve again after a restart"),
            }
        }
    }
}
