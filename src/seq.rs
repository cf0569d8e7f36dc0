//! The per-device sequence number of prediction messages: +1 per message,
//! never reused, also across restarts and crashes.
//!
//! The state file holds the lowest number that may still be handed out. At
//! start the agent reserves a block past it and writes the block's end, so a
//! crash skips at most one block and never repeats a number; a clean shutdown
//! writes the exact next number, so a restart continues without a gap.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const BLOCK: u64 = 1000;
const FILE_NAME: &str = "seq";

#[derive(Debug, thiserror::Error)]
#[error("sequence state {path}: {message}")]
pub struct SeqError {
    path: PathBuf,
    message: String,
}

#[derive(Debug)]
pub struct SeqAllocator {
    path: PathBuf,
    next: u64,
    reserved_until: u64,
}

impl SeqAllocator {
    pub fn open(state_dir: &Path) -> Result<SeqAllocator, SeqError> {
        let path = state_dir.join(FILE_NAME);
        let error = |message: String| SeqError { path: path.clone(), message };
        fs::create_dir_all(state_dir)
            .map_err(|e| error(format!("cannot create the state folder: {e}; make `state_dir` writable for the agent")))?;
        let next = match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                error(format!("holds {:?}, not a number; restore it, or delete it only if subscribers may see numbers again", text.trim()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(error(format!("cannot read it: {e}"))),
        };
        let mut allocator = SeqAllocator { path, next, reserved_until: next };
        allocator.reserve()?;
        Ok(allocator)
    }

    /// The next number; writes a new reservation every `BLOCK` numbers.
    pub fn next(&mut self) -> Result<u64, SeqError> {
        if self.next >= self.reserved_until {
            self.reserve()?;
        }
        let seq = self.next;
        self.next += 1;
        Ok(seq)
    }

    /// Records the exact next number so a restart continues without a gap.
    pub fn close(&mut self) -> Result<(), SeqError> {
        write_atomically(&self.path, self.next)?;
        self.reserved_until = self.next;
        Ok(())
    }

    fn reserve(&mut self) -> Result<(), SeqError> {
        let until = self.next + BLOCK;
        write_atomically(&self.path, until)?;
        self.reserved_until = until;
        Ok(())
    }
}

/// Write to a temporary file, sync it, rename it over the old one, sync the folder.
fn write_atomically(path: &Path, value: u64) -> Result<(), SeqError> {
    let error = |e: std::io::Error| SeqError {
        path: path.to_path_buf(),
        message: format!("cannot write it: {e}; make `state_dir` writable for the agent"),
    };
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp).map_err(error)?;
    file.write_all(format!("{value}\n").as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&tmp, path).map_err(error)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cctv-seq-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_clean_restart_continues_without_a_gap() {
        let dir = temp_dir("clean");
        let mut a = SeqAllocator::open(&dir).unwrap();
        let first: Vec<u64> = (0..1500).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, (1..=1500).collect::<Vec<_>>());
        a.close().unwrap();
        let mut b = SeqAllocator::open(&dir).unwrap();
        assert_eq!(b.next().unwrap(), 1501);
    }

    #[test]
    fn a_crash_never_reuses_a_number() {
        let dir = temp_dir("crash");
        let mut a = SeqAllocator::open(&dir).unwrap();
        let last = (0..10).map(|_| a.next().unwrap()).last().unwrap();
        drop(a); // no close(): as after SIGKILL
        let mut b = SeqAllocator::open(&dir).unwrap();
        assert!(b.next().unwrap() > last);
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_reset() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(FILE_NAME), "garbage").unwrap();
        let err = SeqAllocator::open(&dir).unwrap_err().to_string();
        assert!(err.contains("not a number"), "{err}");
    }
}
