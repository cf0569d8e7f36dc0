//! The durable outbox. Every prediction and event gets the device's next
//! `seq` and is written here (one fsync'd redb transaction per batch) before
//! it is handed to MQTT; it leaves when the broker acknowledged it.
//!
//! Invariants:
//! - `seq` is assigned in the same transaction that stores the message, so
//!   numbers are gapless across crashes: a gap a subscriber sees is a message
//!   the outbox dropped, and every drop is counted and reported.
//! - The outbox holds at most `capacity` bytes of messages. When full, the
//!   oldest messages not yet handed to MQTT go first (`handed_below` marks
//!   where the publisher is); order among the rest is unchanged. The drop
//!   count is stored with the drops, so a crash cannot hide them; the
//!   report of drops is stored without evicting anything (else each report
//!   would cause the next).
//! - When the store cannot be written (folder unwritable, disk full or
//!   nearly), new messages are kept in memory within `memory_bytes` while
//!   what is already on disk stays there and is still delivered; the disk is
//!   retried every 30 s and gets the memory's messages back. `seq` then
//!   jumps to the Unix time in milliseconds, so numbers handed out from
//!   memory are not handed out again after a restart (if the clock is right).

use redb::{Database, Durability, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::util::fs::FileError;

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
const DROPPED_TOTAL: &str = "dropped_total";
/// Drops not yet reported: count, lowest and highest seq.
const UNREPORTED: [&str; 3] = ["unreported_count", "unreported_first", "unreported_last"];
/// The sequence file of agents before the outbox; read once, then removed.
const LEGACY_SEQ_FILE: &str = "seq";
const CACHE_BYTES: usize = 4 << 20;
/// How often a store that failed is tried again.
const RETRY_DISK: Duration = Duration::from_secs(30);
/// Below this much free space the outbox stops writing to the disk, before
/// a write fails half-way (redb grows its file in steps).
const MIN_FREE_BYTES: u64 = 2 << 20;

/// One stored message: QoS 1, not retained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A message on its way in: `body` is a JSON object without `seq`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub topic: String,
    pub body: Vec<u8>,
}

/// Messages the outbox had to drop since the last report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

pub use crate::wire::telemetry::Mode;

/// Why the outbox cannot write its file (it keeps messages in memory
/// meanwhile); the text goes into the `outbox_unavailable` event.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The folder of the file cannot be created (or the file made owner-only).
    #[error(transparent)]
    Folder(FileError),
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, #[source] source: redb::DatabaseError },
    /// Stopped before a write could fail half-way.
    #[error("only {free} bytes free on the file system of {}; the outbox stops writing below {MIN_FREE_BYTES}", folder.display())]
    DiskAlmostFull { folder: PathBuf, free: u64 },
    /// Closed after an earlier error; reopened on the next retry.
    #[error("the outbox file is not open")]
    NotOpen,
    #[error(transparent)]
    Store(#[from] redb::Error),
}

/// For `map_err`: any redb error as the one redb error type (same text).
fn store(error: impl Into<redb::Error>) -> OutboxError {
    OutboxError::Store(error.into())
}

pub struct Outbox {
    path: PathBuf,
    /// None when the file cannot be opened (or broke on an I/O error).
    disk: Option<Database>,
    /// False while new messages go to memory.
    writable: bool,
    /// Messages not on disk, when not writable.
    memory: BTreeMap<u64, Entry>,
    memory_used: u64,
    /// seq → stored size, for every message not yet acknowledged (disk and memory).
    index: BTreeMap<u64, u64>,
    bytes: u64,
    disk_capacity: u64,
    memory_capacity: u64,
    next_seq: u64,
    /// Acknowledged, not yet deleted from the disk.
    acknowledged: Vec<u64>,
    dropped_total: u64,
    dropped: Option<Dropped>,
    /// Why the disk is not written, while it is not.
    disk_error: Option<OutboxError>,
    last_disk_attempt: Instant,
}

/// `{"seq":N,` + the rest of `body` (a JSON object): the number goes first
/// so a reader can see it without parsing the rest.
pub fn stamp(seq: u64, body: &[u8]) -> Vec<u8> {
    let rest = match body.first() {
        Some(b'{') => &body[1..],
        _ => b"}".as_slice(),
    };
    let separator = if rest.first() == Some(&b'}') { "" } else { "," };
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(format!("{{\"seq\":{seq}{separator}").as_bytes());
    out.extend_from_slice(rest);
    out
}

fn encode(entry: &Entry) -> Vec<u8> {
    let topic = entry.topic.as_bytes();
    let mut out = Vec::with_capacity(4 + topic.len() + entry.payload.len());
    out.extend_from_slice(&(topic.len() as u32).to_le_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(&entry.payload);
    out
}

fn decode(seq: u64, bytes: &[u8]) -> Option<Entry> {
    let length = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(bytes.get(4..4 + length)?).ok()?.to_string();
    Some(Entry { seq, topic, payload: bytes[4 + length..].to_vec() })
}

fn stored_size(entry: &Entry) -> u64 {
    (4 + entry.topic.len() + entry.payload.len()) as u64
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Outbox {
    /// Opens (or creates) the store at `path`. If it cannot be used, the
    /// outbox starts in memory and `disk_error()` says why.
    pub fn open(path: &Path, disk_capacity: u64, memory_capacity: u64) -> Outbox {
        let mut outbox = Outbox {
            path: path.to_path_buf(),
            disk: None,
            writable: false,
            memory: BTreeMap::new(),
            memory_used: 0,
            index: BTreeMap::new(),
            bytes: 0,
            disk_capacity,
            memory_capacity,
            next_seq: 1,
            acknowledged: Vec::new(),
            dropped_total: 0,
            dropped: None,
            disk_error: None,
            last_disk_attempt: Instant::now(),
        };
        match outbox.open_disk().and_then(|()| outbox.check_space()) {
            Ok(()) => outbox.writable = true,
            Err(error) => {
                outbox.next_seq = outbox.next_seq.max(unix_millis());
                outbox.disk_error = Some(error);
            }
        }
        outbox
    }

    fn folder(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Opens the file and adds what it holds to the index.
    fn open_disk(&mut self) -> Result<(), OutboxError> {
        let folder = self.folder().to_path_buf();
        crate::util::fs::create_private_dir_all(&folder).map_err(OutboxError::Folder)?;
        let legacy = folder.join(LEGACY_SEQ_FILE);
        // redb caches up to 1 GiB by default; the outbox is written once and read once.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&self.path)
            .map_err(|source| OutboxError::Open { path: self.path.clone(), source })?;
        // redb creates the file with the umask's mode; the messages are ours alone.
        crate::util::fs::make_private(&self.path).map_err(OutboxError::Folder)?;
        let txn = db.begin_write().map_err(store)?;
        {
            let mut meta = txn.open_table(META).map_err(store)?;
            let entries = txn.open_table(ENTRIES).map_err(store)?;
            for item in entries.iter().map_err(store)? {
                let (seq, bytes) = item.map_err(store)?;
                if !self.acknowledged.contains(&seq.value()) && self.index.insert(seq.value(), bytes.value().len() as u64).is_none() {
                    self.bytes += bytes.value().len() as u64;
                }
            }
            let stored = meta.get(NEXT_SEQ).map_err(store)?.map(|v| v.value());
            let after_entries = self.index.keys().next_back().map_or(1, |last| last + 1);
            let legacy_next = std::fs::read_to_string(&legacy).ok().and_then(|t| t.trim().parse::<u64>().ok());
            self.next_seq = stored.unwrap_or(1).max(after_entries).max(legacy_next.unwrap_or(1)).max(self.next_seq);
            meta.insert(NEXT_SEQ, self.next_seq).map_err(store)?;
            let get = |key: &str| meta.get(key).map(|v| v.map(|v| v.value())).map_err(store);
            self.dropped_total = self.dropped_total.max(get(DROPPED_TOTAL)?.unwrap_or(0));
            if let [Some(count), Some(first_seq), Some(last_seq)] = [get(UNREPORTED[0])?, get(UNREPORTED[1])?, get(UNREPORTED[2])?] {
                if count > 0 && self.dropped.is_none() {
                    self.dropped = Some(Dropped { count, first_seq, last_seq });
                }
            }
        }
        txn.commit().map_err(store)?;
        let _ = std::fs::remove_file(&legacy);
        self.disk = Some(db);
        Ok(())
    }

    fn check_space(&self) -> Result<(), OutboxError> {
        match crate::util::fs::free_bytes(self.folder()) {
            Some(free) if free < MIN_FREE_BYTES => Err(OutboxError::DiskAlmostFull { folder: self.folder().to_path_buf(), free }),
            _ => Ok(()),
        }
    }

    pub fn mode(&self) -> Mode {
        if self.writable { Mode::Disk } else { Mode::Memory }
    }

    /// Why the store on disk is not written (None while it is).
    pub fn disk_error(&self) -> Option<&OutboxError> {
        self.disk_error.as_ref()
    }

    pub fn capacity(&self) -> u64 {
        if self.writable { self.disk_capacity } else { self.memory_capacity.min(self.disk_capacity) }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// The number the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The oldest message not yet acknowledged.
    pub fn first_seq(&self) -> Option<u64> {
        self.index.keys().next().copied()
    }

    /// What was dropped since the last call.
    pub fn take_dropped(&mut self) -> Option<Dropped> {
        self.dropped.take()
    }

    /// Numbers and stores `messages`, dropping the oldest messages at or
    /// above `handed_below` while over capacity. Returns the new numbers of
    /// the messages kept. A store error switches to memory (see `disk_error`).
    pub fn append(&mut self, messages: Vec<NewMessage>, handed_below: u64) -> Vec<u64> {
        self.append_with(messages, Some(handed_below)).1
    }

    /// Like [`Outbox::append`], and returns the first message's `seq`: the
    /// batch is numbered consecutively from it (whether or not all of it was kept).
    pub fn append_numbered(&mut self, messages: Vec<NewMessage>, handed_below: u64) -> u64 {
        self.append_with(messages, Some(handed_below)).0
    }

    /// Stores the report of what [`Outbox::take_dropped`] returned, in the
    /// same transaction that records it as reported, without evicting.
    pub fn append_report(&mut self, report: NewMessage) -> u64 {
        self.append_with(vec![report], None).1[0]
    }

    /// Returns the first `seq` given and the numbers kept.
    fn append_with(&mut self, messages: Vec<NewMessage>, evict_from: Option<u64>) -> (u64, Vec<u64>) {
        if self.writable {
            if let Err(error) = self.check_space() {
                self.stop_writing(error);
            }
        }
        let first_seq = self.next_seq;
        let new: Vec<Entry> = messages
            .into_iter()
            .map(|message| {
                let seq = self.next_seq;
                self.next_seq += 1;
                Entry { seq, topic: message.topic, payload: stamp(seq, &message.body) }
            })
            .collect();
        for entry in &new {
            self.index.insert(entry.seq, stored_size(entry));
            self.bytes += stored_size(entry);
        }
        if !self.writable {
            return (first_seq, self.keep_in_memory(new, evict_from));
        }
        let evicted = evict_from.map(|from| self.evict(from)).unwrap_or_default();
        let new: Vec<Entry> = new.into_iter().filter(|e| self.index.contains_key(&e.seq)).collect();
        let kept: Vec<u64> = new.iter().map(|e| e.seq).collect();
        if let Err(error) = self.write(&new, &evicted) {
            // The file may still hold what was evicted: delete it later.
            self.acknowledged.extend(&evicted);
            self.stop_writing(error);
            return (first_seq, self.keep_in_memory(new, evict_from));
        }
        (first_seq, kept)
    }

    /// Returns the numbers of `new` that were kept.
    fn keep_in_memory(&mut self, new: Vec<Entry>, evict_from: Option<u64>) -> Vec<u64> {
        let seqs: Vec<u64> = new.iter().map(|e| e.seq).collect();
        for entry in new {
            self.memory_used += stored_size(&entry);
            self.memory.insert(entry.seq, entry);
        }
        if let Some(from) = evict_from {
            while self.memory_used > self.capacity() {
                let Some(seq) = self.memory.range(from..).next().map(|(&seq, _)| seq) else { break };
                let entry = self.memory.remove(&seq).unwrap();
                self.memory_used -= stored_size(&entry);
                self.index.remove(&seq);
                self.bytes -= stored_size(&entry);
                self.count_drop(seq);
            }
        }
        seqs.into_iter().filter(|seq| self.index.contains_key(seq)).collect()
    }

    /// New messages go to memory from now on; what is on disk stays there.
    fn stop_writing(&mut self, error: OutboxError) {
        self.writable = false;
        self.next_seq = self.next_seq.max(unix_millis());
        self.disk_error = Some(error);
        self.last_disk_attempt = Instant::now();
        // After an I/O error redb refuses every transaction: close it, and
        // reopen it later (what it committed is intact in the file).
        let readable = self.disk.as_ref().is_some_and(|db| db.begin_read().and_then(|t| Ok(t.open_table(ENTRIES).is_ok())).unwrap_or(false));
        if !readable {
            self.disk = None;
        }
    }

    fn count_drop(&mut self, seq: u64) {
        self.dropped_total += 1;
        let report = self.dropped.get_or_insert(Dropped { count: 0, first_seq: seq, last_seq: seq });
        report.count += 1;
        report.last_seq = report.last_seq.max(seq);
        report.first_seq = report.first_seq.min(seq);
    }

    /// Drops the oldest messages at or above `handed_below` until the outbox
    /// fits; returns their numbers.
    fn evict(&mut self, handed_below: u64) -> Vec<u64> {
        let mut evicted = Vec::new();
        let capacity = self.capacity();
        while self.bytes > capacity {
            let Some((&seq, &size)) = self.index.range(handed_below..).next() else { break };
            self.index.remove(&seq);
            self.bytes -= size;
            evicted.push(seq);
            self.count_drop(seq);
        }
        evicted
    }

    /// One durable transaction: new entries, evictions, pending deletions,
    /// the next number and the drop counts.
    fn write(&mut self, new: &[Entry], evicted: &[u64]) -> Result<(), OutboxError> {
        let Some(db) = &self.disk else { return Err(OutboxError::NotOpen) };
        let txn = db.begin_write().map_err(store)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(store)?;
            for entry in new {
                table.insert(entry.seq, encode(entry).as_slice()).map_err(store)?;
            }
            for seq in evicted.iter().chain(&self.acknowledged) {
                table.remove(seq).map_err(store)?;
            }
            let mut meta = txn.open_table(META).map_err(store)?;
            meta.insert(NEXT_SEQ, self.next_seq).map_err(store)?;
            meta.insert(DROPPED_TOTAL, self.dropped_total).map_err(store)?;
            let unreported = self.dropped.map_or([0; 3], |d| [d.count, d.first_seq, d.last_seq]);
            for (key, value) in UNREPORTED.iter().zip(unreported) {
                meta.insert(*key, value).map_err(store)?;
            }
        }
        txn.commit().map_err(store)?;
        self.acknowledged.clear();
        Ok(())
    }

    /// While not writing: every `RETRY_DISK`, move the memory's messages to
    /// the disk. Returns true when that happened; older messages the disk
    /// kept may then be readable again (read from the first unacknowledged).
    pub fn retry_disk(&mut self) -> bool {
        if self.writable || self.last_disk_attempt.elapsed() < RETRY_DISK {
            return false;
        }
        self.last_disk_attempt = Instant::now();
        let result = self.check_space().and_then(|()| {
            if self.disk.is_none() {
                self.open_disk()?;
            }
            let memory: Vec<Entry> = self.memory.values().cloned().collect();
            self.write(&memory, &[])
        });
        match result {
            Ok(()) => {
                self.writable = true;
                self.memory.clear();
                self.memory_used = 0;
                self.disk_error = None;
                true
            }
            Err(error) => {
                self.disk_error = Some(error);
                if self.disk.as_ref().is_some_and(|db| db.begin_read().is_err()) {
                    self.disk = None;
                }
                false
            }
        }
    }

    /// `seq` cannot be sent (over the size cap): it leaves the outbox like
    /// an acknowledged message, counted and reported as a drop.
    pub fn give_up(&mut self, seq: u64) {
        if self.index.contains_key(&seq) {
            self.acknowledge(seq);
            self.count_drop(seq);
        }
    }

    /// The broker has `seq`; it leaves the outbox with the next write.
    pub fn acknowledge(&mut self, seq: u64) {
        if let Some(size) = self.index.remove(&seq) {
            self.bytes -= size;
            match self.memory.remove(&seq) {
                Some(entry) => self.memory_used -= stored_size(&entry),
                None => self.acknowledged.push(seq),
            }
        }
    }

    /// Deletes acknowledged messages; without `durable`, with no fsync: a
    /// crash before the next durable write only means they are sent again.
    pub fn flush_acknowledged(&mut self, durable: bool) -> Result<(), OutboxError> {
        let Some(db) = &self.disk else { return Ok(()) };
        if self.acknowledged.is_empty() && !(durable && self.writable) {
            return Ok(());
        }
        let mut txn = db.begin_write().map_err(store)?;
        if !durable {
            txn.set_durability(Durability::None);
        }
        {
            let mut table = txn.open_table(ENTRIES).map_err(store)?;
            for seq in &self.acknowledged {
                table.remove(seq).map_err(store)?;
            }
        }
        txn.commit().map_err(store)?;
        self.acknowledged.clear();
        Ok(())
    }

    /// Up to `max` messages numbered `from` or later, in order.
    pub fn read(&self, from: u64, max: usize) -> Vec<Entry> {
        let mut out = self.read_disk(from, max);
        out.extend(self.memory.range(from..).take(max).map(|(_, e)| e.clone()));
        out.sort_by_key(|e| e.seq);
        out.truncate(max);
        out
    }

    fn read_disk(&self, from: u64, max: usize) -> Vec<Entry> {
        let Some(db) = &self.disk else { return Vec::new() };
        let read = || -> Result<Vec<Entry>, redb::Error> {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let mut out = Vec::new();
            for item in table.range(from..)? {
                if out.len() >= max {
                    break;
                }
                let (seq, bytes) = item?;
                // Skip messages acknowledged (or evicted) but not yet deleted.
                if !self.index.contains_key(&seq.value()) || self.memory.contains_key(&seq.value()) {
                    continue;
                }
                match decode(seq.value(), bytes.value()) {
                    Some(entry) => out.push(entry),
                    None => tracing::error!(seq = seq.value(), "outbox entry is unreadable; skipped"),
                }
            }
            Ok(out)
        };
        read().unwrap_or_else(|error| {
            tracing::error!(%error, path = %self.path.display(), "cannot read the outbox");
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(n: usize) -> NewMessage {
        NewMessage { topic: "cctv/t/predictions/cam".into(), body: format!("{{\"n\":{n}}}").into_bytes() }
    }

    fn seq_of(entry: &Entry) -> u64 {
        let value: serde_json::Value = serde_json::from_slice(&entry.payload).unwrap();
        value["seq"].as_u64().unwrap()
    }

    #[test]
    fn stamping_puts_seq_first_and_keeps_valid_json() {
        assert_eq!(stamp(7, br#"{"a":1}"#), br#"{"seq":7,"a":1}"#);
        assert_eq!(stamp(7, b"{}"), br#"{"seq":7}"#);
    }

    #[test]
    fn numbers_are_gapless_across_a_crash_and_unacknowledged_messages_survive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        {
            let mut outbox = Outbox::open(&path, 1 << 20, 1 << 20);
            assert_eq!(outbox.append((0..5).map(message).collect(), 1), vec![1, 2, 3, 4, 5]);
            outbox.acknowledge(1);
            outbox.acknowledge(2);
            outbox.flush_acknowledged(true).unwrap();
            outbox.acknowledge(3); // not flushed: may come back
        } // dropped without a clean close, as after SIGKILL
        let mut outbox = Outbox::open(&path, 1 << 20, 1 << 20);
        let left: Vec<u64> = outbox.read(0, 100).iter().map(seq_of).collect();
        assert_eq!(left, vec![3, 4, 5]);
        assert_eq!(outbox.append(vec![message(9)], 0), vec![6]);
    }

    #[test]
    fn when_full_the_oldest_not_yet_handed_messages_go_first_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let one = stored_size(&Entry { seq: 10, topic: "cctv/t/predictions/cam".into(), payload: stamp(10, b"{\"n\":1}") });
        let mut outbox = Outbox::open(&dir.path().join("o.redb"), one * 4, 1 << 20);
        outbox.append((0..4).map(message).collect(), 1);
        // 1 and 2 are with MQTT already (handed_below = 3): 3 and 4 go.
        let kept = outbox.append((4..6).map(message).collect(), 3);
        assert_eq!(kept, vec![5, 6]);
        let left: Vec<u64> = outbox.read(0, 100).iter().map(seq_of).collect();
        assert_eq!(left, vec![1, 2, 5, 6]);
        assert!(outbox.bytes() <= one * 4);
        drop(outbox); // a crash before reporting: the drops are still known
        let mut outbox = Outbox::open(&dir.path().join("o.redb"), one * 4, 1 << 20);
        assert_eq!(outbox.dropped_total(), 2);
        assert_eq!(outbox.take_dropped(), Some(Dropped { count: 2, first_seq: 3, last_seq: 4 }));
        assert_eq!(outbox.take_dropped(), None);
        // The report goes in over the cap rather than push out another message.
        let report = outbox.append_report(message(99));
        assert_eq!(report, 7);
        assert_eq!(outbox.len(), 5);
        drop(outbox);
        let mut outbox = Outbox::open(&dir.path().join("o.redb"), one * 4, 1 << 20);
        assert_eq!(outbox.take_dropped(), None, "a stored report is not reported again");
    }

    #[test]
    fn an_unusable_folder_falls_back_to_memory_with_numbers_that_do_not_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-folder");
        std::fs::write(&blocker, "x").unwrap();
        let mut outbox = Outbox::open(&blocker.join("outbox.redb"), 1 << 20, 1 << 20);
        assert_eq!(outbox.mode(), Mode::Memory);
        assert!(matches!(outbox.disk_error(), Some(OutboxError::Folder(_))), "{:?}", outbox.disk_error());
        assert!(outbox.disk_error().unwrap().to_string().contains("not-a-folder"), "{:?}", outbox.disk_error());
        let seqs = outbox.append((0..3).map(message).collect(), 0);
        assert!(seqs[0] > 1_600_000_000_000, "{seqs:?}");
        assert_eq!(outbox.read(0, 10).len(), 3);
        outbox.acknowledge(seqs[0]);
        assert_eq!(outbox.read(0, 10).len(), 2);
    }

    #[test]
    fn the_legacy_sequence_file_is_continued() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seq"), "5000\n").unwrap();
        let mut outbox = Outbox::open(&dir.path().join("outbox.redb"), 1 << 20, 1 << 20);
        assert_eq!(outbox.append(vec![message(0)], 0), vec![5000]);
        assert!(!dir.path().join("seq").exists());
    }
}
