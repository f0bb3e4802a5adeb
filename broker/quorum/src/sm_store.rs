//! The application's state machine behind openraft's `RaftStateMachine` and
//! `RaftSnapshotBuilder`, and its snapshot file.
//!
//! The state machine lives in memory, shared with the `Quorum` handles for
//! reads. Its durability is the log plus the snapshot: `snapshot` in `dir`
//! is an 8-byte magic, a record holding the JSON of the snapshot's metadata
//! (last applied log id, membership, id) and a record holding the state
//! machine's own bytes (`StateMachine::snapshot`). It is replaced atomically
//! and durably (temp file, fsync, rename, directory fsync) when a snapshot is
//! built or installed; on start it is read back and handed to
//! `StateMachine::restore`, and openraft re-applies the committed entries
//! after it from the log.
//!
//! Every entry applied yields exactly one response, blank and membership
//! entries included (`null`): openraft 0.9 pairs entries with responses by
//! position and panics on a short list.

// openraft's storage traits return its StorageError by value; the helpers
// behind them return the same type so that it passes through unchanged.
#![allow(clippy::result_large_err)]

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot};
use tokio::sync::watch;

use crate::error::{storage_io, QuorumError};
use crate::file::{self, MAGIC_BYTES};
use crate::limits::{MAX_META_RECORD_BYTES, MAX_SNAPSHOT_BYTES};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::StateMachine;

/// The snapshot file's name in `dir`.
pub(crate) const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_MAGIC: [u8; MAGIC_BYTES] = *b"BQSNAP\0\x01";

/// The applied state: the state machine and how far it has applied.
pub(crate) struct Applied<SM> {
    pub(crate) sm: SM,
    pub(crate) last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The applied state, shared by the store and the handles.
pub(crate) type Shared<SM> = Arc<Mutex<Applied<SM>>>;

/// Locks the applied state.
pub(crate) fn lock<SM>(shared: &Shared<SM>) -> MutexGuard<'_, Applied<SM>> {
    shared
        .lock()
        .expect("the state machine's lock is poisoned: an apply panicked")
}

#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// openraft's state machine store.
pub(crate) struct SmStore<SM: StateMachine> {
    dir: PathBuf,
    shared: Shared<SM>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
    applied_tx: watch::Sender<Option<u64>>,
}

/// openraft's snapshot builder: a view of the same state.
pub(crate) struct SnapshotBuilder<SM: StateMachine> {
    dir: PathBuf,
    shared: Shared<SM>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl<SM: StateMachine> SmStore<SM> {
    /// Opens the store over `sm`, restoring the snapshot of `dir` if there is
    /// one. Returns the store and a receiver of the last applied index.
    pub(crate) fn open(
        dir: &Path,
        mut sm: SM,
    ) -> Result<(SmStore<SM>, watch::Receiver<Option<u64>>), QuorumError> {
        let path = dir.join(SNAPSHOT_FILE);
        let current = match file::read_records_file(
            &path,
            &SNAPSHOT_MAGIC,
            2,
            &[MAX_META_RECORD_BYTES, MAX_SNAPSHOT_BYTES],
        )? {
            None => None,
            Some(mut records) => {
                let data = records.pop().unwrap_or_default();
                let meta: SnapshotMeta =
                    serde_json::from_slice(&records[0]).map_err(|e| QuorumError::Corrupt {
                        path: path.clone(),
                        reason: format!("snapshot meta: {e}"),
                    })?;
                sm.restore(&data).map_err(|reason| QuorumError::Restore {
                    path: path.clone(),
                    reason,
                })?;
                Some(StoredSnapshot { meta, data })
            }
        };
        let (last_applied, membership) = match &current {
            Some(s) => (s.meta.last_log_id, s.meta.last_membership.clone()),
            None => (None, StoredMembership::default()),
        };
        let (applied_tx, applied_rx) = watch::channel(last_applied.map(|l| l.index));
        let store = SmStore {
            dir: dir.to_path_buf(),
            shared: Arc::new(Mutex::new(Applied {
                sm,
                last_applied,
                membership,
            })),
            current: Arc::new(Mutex::new(current)),
            applied_tx,
        };
        Ok((store, applied_rx))
    }

    /// The applied state, for the handles' reads.
    pub(crate) fn shared(&self) -> Shared<SM> {
        Arc::clone(&self.shared)
    }

    /// True if a snapshot was restored or installed.
    pub(crate) fn has_snapshot(&self) -> bool {
        lock_current(&self.current).is_some()
    }
}

fn lock_current(current: &Mutex<Option<StoredSnapshot>>) -> MutexGuard<'_, Option<StoredSnapshot>> {
    current
        .lock()
        .expect("the snapshot slot's lock is poisoned")
}

/// Writes the snapshot file durably.
fn write_snapshot(dir: &Path, snapshot: &StoredSnapshot) -> Result<(), StorageError> {
    let subject = ErrorSubject::Snapshot(Some(snapshot.meta.signature()));
    let meta = serde_json::to_vec(&snapshot.meta)
        .map_err(|e| storage_io(subject.clone(), ErrorVerb::Write, &e))?;
    let bytes = file::records_file(&SNAPSHOT_MAGIC, &[&meta, &snapshot.data]);
    file::replace(dir, SNAPSHOT_FILE, &bytes, true)
        .map_err(|e| storage_io(subject, ErrorVerb::Write, &e))
}

fn too_large(bytes: usize) -> io::Error {
    io::Error::other(format!(
        "snapshot of {bytes} bytes, above the bound {MAX_SNAPSHOT_BYTES}"
    ))
}

impl<SM: StateMachine> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<SM> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (data, last_log_id, last_membership) = {
            let applied = lock(&self.shared);
            (
                applied.sm.snapshot(),
                applied.last_applied,
                applied.membership.clone(),
            )
        };
        if data.len() > MAX_SNAPSHOT_BYTES {
            return Err(storage_io(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Write,
                &too_large(data.len()),
            ));
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let snapshot_id = format!(
            "{}-{nanos}",
            last_log_id.map_or_else(|| "none".to_string(), |l| l.to_string())
        );
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id,
            },
            data,
        };
        write_snapshot(&self.dir, &stored)?;
        let snapshot = Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        };
        *lock_current(&self.current) = Some(stored);
        Ok(snapshot)
    }
}

impl<SM: StateMachine> RaftStateMachine<TypeConfig> for SmStore<SM> {
    type SnapshotBuilder = SnapshotBuilder<SM>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = lock(&self.shared);
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<String>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let last = {
            let mut applied = lock(&self.shared);
            for entry in entries {
                let log_id = entry.log_id;
                let response = match entry.payload {
                    EntryPayload::Blank => String::new(),
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(log_id), m);
                        String::new()
                    }
                    EntryPayload::Normal(text) => {
                        // A committed command this node cannot decode (a
                        // version skew) must stop it, not be skipped: skipping
                        // would fork its state from the others'.
                        let command: SM::Command = serde_json::from_str(&text).map_err(|e| {
                            storage_io(ErrorSubject::Apply(log_id), ErrorVerb::Read, &e)
                        })?;
                        let response = applied.sm.apply(&command);
                        serde_json::to_string(&response).map_err(|e| {
                            storage_io(ErrorSubject::Apply(log_id), ErrorVerb::Write, &e)
                        })?
                    }
                };
                applied.last_applied = Some(log_id);
                responses.push(response);
            }
            applied.last_applied
        };
        self.applied_tx.send_replace(last.map(|l| l.index));
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            shared: Arc::clone(&self.shared),
            current: Arc::clone(&self.current),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        if data.len() > MAX_SNAPSHOT_BYTES {
            return Err(storage_io(
                subject,
                ErrorVerb::Write,
                &too_large(data.len()),
            ));
        }
        {
            let mut applied = lock(&self.shared);
            applied.sm.restore(&data).map_err(|reason| {
                storage_io(subject.clone(), ErrorVerb::Write, &io::Error::other(reason))
            })?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
        }
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        write_snapshot(&self.dir, &stored)?;
        *lock_current(&self.current) = Some(stored);
        self.applied_tx
            .send_replace(meta.last_log_id.map(|l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(lock_current(&self.current).as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}
