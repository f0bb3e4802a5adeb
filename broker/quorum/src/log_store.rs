//! The Raft log and vote on disk: openraft's `RaftLogStorage` and
//! `RaftLogReader` over four files of `dir` (byte by byte in
//! `schemas/quorum-files.md`).
//!
//! - `log`: an 8-byte magic, then records (see `record.rs`). The first
//!   record is the purge marker, `P` + the JSON of the last purged log id
//!   (or null); every other record is `E` + the JSON of one entry, the
//!   first at or after the purge marker's next index, the others
//!   contiguous. An append writes its records at the end and fdatasyncs
//!   before the append is reported flushed. A truncate (a conflicting
//!   suffix) cuts the file at the first removed record and fdatasyncs. A purge rewrites the file (the new
//!   marker and the entries kept) to `log.tmp`, fsyncs it, renames it over
//!   `log` and fsyncs the directory; openraft purges once per snapshot (the
//!   purge batch is the snapshot interval), so the rewrite copies at most
//!   about two snapshot intervals of entries.
//! - `vote`: a magic and one record, the JSON of the vote; replaced
//!   atomically and durably (temp file, fsync, rename, directory fsync)
//!   before `save_vote` returns.
//! - `committed`: the same shape, the last committed log id; replaced
//!   atomically but not fsynced, and best effort (a failed write leaves the
//!   older one, which is as correct: losing it only means re-applying from
//!   the snapshot later); ignored on reading if it is unreadable or lies
//!   beyond the log.
//! - `lock`: empty, flocked for as long as the store is open, so that two
//!   quorums never share a directory (taken before anything is read).
//!
//! Recovery reads the log record by record: it stops at the first torn
//! record (the file ends inside it) or corrupt record (length above the
//! bound, CRC mismatch: a write the crash cut short), and truncates the
//! file there (fsynced), keeping every entry before it. A whole record
//! (its CRC matches) that is not a decodable entry, or whose index is out
//! of sequence, is not a torn write: the store refuses to open
//! (`QuorumError::Corrupt`) rather than cut entries it may have
//! acknowledged.
//!
//! Every entry of the log is also held in memory (the log is bounded by the
//! snapshot policy), so reads never touch the disk. All writes are
//! serialized by one mutex, never held across an await.

// openraft's storage traits return its StorageError by value; the helpers
// behind them return the same type so that it passes through unchanged.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader};
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader};

use crate::error::{storage_io, QuorumError};
use crate::file::{self, MAGIC_BYTES};
use crate::limits::{MAX_LOG_RECORD_BYTES, MAX_META_RECORD_BYTES};
use crate::record::{self, Read1, HEADER_BYTES};
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// The log file's name in `dir`.
pub(crate) const LOG_FILE: &str = "log";
/// The vote file's name in `dir`.
pub(crate) const VOTE_FILE: &str = "vote";
/// The lock file's name in `dir`: flocked while a quorum uses the directory.
pub(crate) const LOCK_FILE: &str = "lock";
/// The committed-log-id file's name in `dir`.
pub(crate) const COMMITTED_FILE: &str = "committed";

const LOG_MAGIC: [u8; MAGIC_BYTES] = *b"BQLOG\0\0\x01";
const VOTE_MAGIC: [u8; MAGIC_BYTES] = *b"BQVOTE\0\x01";
const COMMITTED_MAGIC: [u8; MAGIC_BYTES] = *b"BQCOMM\0\x01";
/// The first byte of the purge marker record's payload.
const TAG_PURGED: u8 = b'P';
/// The first byte of an entry record's payload.
const TAG_ENTRY: u8 = b'E';

/// The log store; clones share it (openraft's log readers are clones).
#[derive(Clone)]
pub(crate) struct LogStore {
    inner: Arc<Mutex<Log>>,
}

/// What recovery of the log file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// Entries recovered.
    pub(crate) entries: usize,
    /// Bytes cut from the end of the file.
    pub(crate) dropped_bytes: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) stopped: Option<String>,
}

struct Stored {
    /// Where the entry's record starts in the log file.
    offset: u64,
    entry: Entry,
}

struct Log {
    dir: PathBuf,
    /// Holds the directory's flock until the store is dropped.
    _lock: File,
    file: File,
    /// The log file's valid length: where the next append writes.
    end: u64,
    entries: BTreeMap<u64, Stored>,
    purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl LogStore {
    /// Opens (creating if needed) the log, vote and committed files of `dir`
    /// and recovers them.
    pub(crate) fn open(dir: &Path) -> Result<(LogStore, Recovery), QuorumError> {
        if !dir.exists() {
            let create = |op, source| QuorumError::Io {
                op,
                path: dir.to_path_buf(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(|e| create("create", e))?;
            // The directory's own entry must survive a crash too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                file::sync_dir(parent).map_err(|e| create("fsync the parent of", e))?;
            }
        }
        // Before anything is read or cut: one quorum per directory.
        let lock = lock_dir(dir)?;
        let vote_path = dir.join(VOTE_FILE);
        let vote =
            match file::read_records_file(&vote_path, &VOTE_MAGIC, 1, &[MAX_META_RECORD_BYTES])? {
                Some(p) => Some(decode_json::<Vote>(&vote_path, &p[0])?),
                None => None,
            };
        let committed_path = dir.join(COMMITTED_FILE);
        let committed = match file::read_records_file(&committed_path, &COMMITTED_MAGIC, 1, &[MAX_META_RECORD_BYTES]) {
            Ok(Some(p)) => serde_json::from_slice::<Option<LogId>>(&p[0]).unwrap_or_else(|e| {
                tracing::warn!(path = %committed_path.display(), error = %e, "ignoring an undecodable committed file");
                None
            }),
            Ok(None) => None,
            Err(QuorumError::Corrupt { reason, .. }) => {
                tracing::warn!(path = %committed_path.display(), %reason, "ignoring a corrupt committed file");
                None
            }
            Err(e) => return Err(e),
        };
        let log_path = dir.join(LOG_FILE);
        let io_err = |op, source| QuorumError::Io {
            op,
            path: log_path.clone(),
            source,
        };
        if !log_path.exists() {
            let fresh =
                log_file_bytes(None, std::iter::empty()).map_err(|e| io_err("encode", e))?;
            file::replace(dir, LOG_FILE, &fresh.0, true).map_err(|e| io_err("create", e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(|e| io_err("open", e))?;
        let file_len = file.metadata().map_err(|e| io_err("stat", e))?.len();
        let scan = scan_log(&log_path, &file)?;
        if scan.end < file_len {
            tracing::warn!(
                path = %log_path.display(),
                kept_entries = scan.entries.len(),
                dropped_bytes = file_len - scan.end,
                reason = scan.stopped.as_deref().unwrap_or(""),
                "truncating the log's tail"
            );
            file.set_len(scan.end).map_err(|e| io_err("truncate", e))?;
            file.sync_all().map_err(|e| io_err("fsync", e))?;
        }
        let recovery = Recovery {
            entries: scan.entries.len(),
            dropped_bytes: file_len - scan.end,
            stopped: scan.stopped,
        };
        let log = Log {
            dir: dir.to_path_buf(),
            _lock: lock,
            file,
            end: scan.end,
            entries: scan.entries,
            purged: scan.purged,
            vote,
            committed,
        };
        Ok((
            LogStore {
                inner: Arc::new(Mutex::new(log)),
            },
            recovery,
        ))
    }

    /// True if nothing was ever written: no vote, no entry, no purge. Only
    /// such a node may initialize the cluster.
    pub(crate) fn is_pristine(&self) -> bool {
        let log = self.lock();
        log.vote.is_none() && log.entries.is_empty() && log.purged.is_none()
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.inner
            .lock()
            .expect("the log store's lock is poisoned: a write panicked half-way")
    }

    /// Appends `entries` (contiguous after the last) and fdatasyncs them.
    pub(crate) fn write_entries(
        &self,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Result<(), StorageError> {
        let mut log = self.lock();
        let mut buf = Vec::new();
        let mut stored = Vec::new();
        let mut entries = entries.into_iter().peekable();
        // An empty log takes its first entry at or after the purge point
        // (openraft's storage suite starts logs at 1); after that, no hole.
        let first = match (log.entries.is_empty(), entries.peek()) {
            (true, Some(e)) if e.log_id.index >= log.next_index() => e.log_id.index,
            _ => log.next_index(),
        };
        for (next, entry) in (first..).zip(entries) {
            if entry.log_id.index != next {
                let e = io::Error::other(format!(
                    "append of index {} where {next} is next: a hole",
                    entry.log_id.index
                ));
                return Err(storage_io(ErrorSubject::Logs, ErrorVerb::Write, &e));
            }
            let offset = log.end + buf.len() as u64;
            encode_entry(&entry, &mut buf)
                .map_err(|e| storage_io(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
            stored.push(Stored { offset, entry });
        }
        if stored.is_empty() {
            return Ok(());
        }
        let end = log.end;
        log.file
            .write_all_at(&buf, end)
            .and_then(|()| log.file.sync_data())
            .map_err(|e| storage_io(ErrorSubject::Logs, ErrorVerb::Write, &e))?;
        log.end += buf.len() as u64;
        for s in stored {
            debug_assert!(log
                .entries
                .keys()
                .next_back()
                .is_none_or(|last| last + 1 == s.entry.log_id.index));
            log.entries.insert(s.entry.log_id.index, s);
        }
        Ok(())
    }

    /// Removes the entries at `index` and after (a suffix that conflicts with
    /// the leader's log), durably.
    pub(crate) fn truncate_from(&self, index: u64) -> Result<(), StorageError> {
        let mut log = self.lock();
        let Some(offset) = log.entries.range(index..).next().map(|(_, s)| s.offset) else {
            return Ok(());
        };
        log.file
            .set_len(offset)
            .and_then(|()| log.file.sync_data())
            .map_err(|e| storage_io(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        log.end = offset;
        log.entries.split_off(&index);
        Ok(())
    }

    /// Removes the entries up to and including `upto` (covered by a
    /// snapshot) and records `upto` as purged, durably. `upto` may lie
    /// beyond the last entry (a snapshot installed from the leader).
    pub(crate) fn purge_upto(&self, upto: LogId) -> Result<(), StorageError> {
        let mut log = self.lock();
        if log.purged.is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        let kept = log.entries.range(upto.index + 1..).map(|(_, s)| &s.entry);
        let (bytes, offsets) = log_file_bytes(Some(upto), kept)
            .map_err(|e| storage_io(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        let dir = log.dir.clone();
        let path = dir.join(LOG_FILE);
        let file = file::replace(&dir, LOG_FILE, &bytes, true)
            .and_then(|()| OpenOptions::new().read(true).write(true).open(&path))
            .map_err(|e| storage_io(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        let mut kept = log.entries.split_off(&(upto.index + 1));
        for (stored, offset) in kept.values_mut().zip(offsets) {
            stored.offset = offset;
        }
        log.entries = kept;
        log.file = file;
        log.end = bytes.len() as u64;
        log.purged = Some(upto);
        Ok(())
    }

    /// Saves the vote durably.
    pub(crate) fn write_vote(&self, vote: &Vote) -> Result<(), StorageError> {
        let mut log = self.lock();
        let json = serde_json::to_vec(vote)
            .map_err(|e| storage_io(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        let bytes = file::records_file(&VOTE_MAGIC, &[&json]);
        file::replace(&log.dir, VOTE_FILE, &bytes, true)
            .map_err(|e| storage_io(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        log.vote = Some(*vote);
        Ok(())
    }

    /// The log ids of the entries held, in order (for tests and checks).
    #[cfg(test)]
    pub(crate) fn indexes(&self) -> Vec<u64> {
        self.lock().entries.keys().copied().collect()
    }
}

impl Log {
    fn next_index(&self) -> u64 {
        match self.entries.keys().next_back() {
            Some(last) => last + 1,
            None => self.purged.map_or(0, |p| p.index + 1),
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|s| s.entry.log_id)
            .or(self.purged)
    }
}

/// Takes `dir/lock` (flock, exclusive, non-blocking). flock is per open
/// file: a second open in the same process is refused too. The kernel
/// releases it when the file is closed, however the process ends.
fn lock_dir(dir: &Path) -> Result<File, QuorumError> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| QuorumError::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor this File owns, for as long as it does.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(QuorumError::InUse {
                path: dir.to_path_buf(),
            });
        }
        return Err(QuorumError::Io {
            op: "flock",
            path,
            source: e,
        });
    }
    Ok(file)
}

/// `E` + the entry's JSON, as one record appended to `out`.
fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> io::Result<()> {
    let mut payload = vec![TAG_ENTRY];
    serde_json::to_writer(&mut payload, entry).map_err(io::Error::other)?;
    if payload.len() > MAX_LOG_RECORD_BYTES {
        return Err(io::Error::other(format!(
            "entry {} encodes to {} bytes, above the record bound {MAX_LOG_RECORD_BYTES}",
            entry.log_id,
            payload.len()
        )));
    }
    record::encode(&payload, out);
    Ok(())
}

/// A whole log file: the magic, the purge marker, the entries; and each
/// entry's record offset.
fn log_file_bytes<'a>(
    purged: Option<LogId>,
    entries: impl Iterator<Item = &'a Entry>,
) -> io::Result<(Vec<u8>, Vec<u64>)> {
    let mut marker = vec![TAG_PURGED];
    serde_json::to_writer(&mut marker, &purged).map_err(io::Error::other)?;
    let mut out = file::records_file(&LOG_MAGIC, &[&marker]);
    let mut offsets = Vec::new();
    for entry in entries {
        offsets.push(out.len() as u64);
        encode_entry(entry, &mut out)?;
    }
    Ok((out, offsets))
}

struct Scan {
    entries: BTreeMap<u64, Stored>,
    purged: Option<LogId>,
    end: u64,
    stopped: Option<String>,
}

/// Reads the log file up to its first bad record.
fn scan_log(path: &Path, file: &File) -> Result<Scan, QuorumError> {
    let corrupt = |reason: String| QuorumError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let io_err = |source| QuorumError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    };
    let mut input = BufReader::new(file);
    let mut magic = [0u8; MAGIC_BYTES];
    if record::read_full(&mut input, &mut magic).map_err(io_err)? < MAGIC_BYTES
        || magic != LOG_MAGIC
    {
        return Err(corrupt(format!("magic {magic:?}, expected {LOG_MAGIC:?}")));
    }
    // The purge marker is written only by whole-file replacements, so it is
    // never torn: an unreadable one is not a tail to cut but a lost log.
    let (purged, marker_len) =
        match record::read_record(&mut input, MAX_META_RECORD_BYTES).map_err(io_err)? {
            Read1::Record(p) if p.first() == Some(&TAG_PURGED) => {
                let purged = serde_json::from_slice::<Option<LogId>>(&p[1..])
                    .map_err(|e| corrupt(format!("purge marker: {e}")))?;
                (purged, p.len())
            }
            other => {
                return Err(corrupt(format!(
                    "no purge marker at the head of the log: {other:?}"
                )))
            }
        };
    let mut end = (MAGIC_BYTES + HEADER_BYTES + marker_len) as u64;
    let mut entries = BTreeMap::new();
    let mut next = purged.map_or(0, |p| p.index + 1);
    let stopped = loop {
        let payload = match record::read_record(&mut input, MAX_LOG_RECORD_BYTES).map_err(io_err)? {
            Read1::Record(p) => p,
            Read1::End => break None,
            Read1::Torn => break Some(format!("a torn record at byte {end}")),
            Read1::Corrupt(reason) => {
                break Some(format!("a corrupt record at byte {end}: {reason}"))
            }
        };
        // A record whose CRC matches was written whole, so what follows is
        // not a torn tail: cutting there would drop entries this node may
        // have acknowledged to a leader (and voted with). Refuse to open.
        let entry = match payload.split_first() {
            Some((&TAG_ENTRY, json)) => match serde_json::from_slice::<Entry>(json) {
                Ok(entry) => entry,
                Err(e) => {
                    return Err(corrupt(format!(
                        "a whole record at byte {end} is not a decodable entry ({e}): \
                         written by another version, or damaged in place; not cutting the log"
                    )))
                }
            },
            _ => {
                return Err(corrupt(format!(
                    "a whole record at byte {end} is not an entry; not cutting the log"
                )))
            }
        };
        // As on append: the first entry at or after the purge point, then
        // contiguous.
        let in_sequence = if entries.is_empty() {
            entry.log_id.index >= next
        } else {
            entry.log_id.index == next
        };
        if !in_sequence {
            return Err(corrupt(format!(
                "entry index {} at byte {end} where {next} was next; not cutting the log",
                entry.log_id.index
            )));
        }
        next = entry.log_id.index + 1;
        entries.insert(entry.log_id.index, Stored { offset: end, entry });
        end += (HEADER_BYTES + payload.len()) as u64;
    };
    Ok(Scan {
        entries,
        purged,
        end,
        stopped,
    })
}

fn decode_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<T, QuorumError> {
    serde_json::from_slice(bytes).map_err(|e| QuorumError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, s)| s.entry.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.lock();
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: log.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_vote(vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut log = self.lock();
        let json = serde_json::to_vec(&committed)
            .map_err(|e| storage_io(ErrorSubject::Store, ErrorVerb::Write, &e))?;
        let bytes = file::records_file(&COMMITTED_MAGIC, &[&json]);
        // Best effort: the file only spares re-applying after a restart, and
        // one left behind (older, never ahead of the log) is as correct. A
        // full disk must stop the node on the log, not here.
        match file::replace(&log.dir, COMMITTED_FILE, &bytes, false) {
            Ok(()) => log.committed = committed,
            Err(e) => {
                tracing::warn!(error = %e, "the committed log id not saved; the previous one stands")
            }
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let log = self.lock();
        // Entries are durable before they count toward a commit, so a
        // committed id past the log means the log lost durable entries (a
        // corrupt record cut by recovery): do not claim them applied.
        if log.committed > log.last_log_id() {
            tracing::warn!(committed = ?log.committed, last = ?log.last_log_id(), "ignoring a committed log id beyond the log");
            return Ok(None);
        }
        Ok(log.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // openraft 0.9 awaits this callback before it goes on, so flushing
        // here, before calling it, costs no pipelining.
        match self.write_entries(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.truncate_from(log_id.index)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.purge_upto(log_id)
    }
}

#[cfg(test)]
mod tests;
