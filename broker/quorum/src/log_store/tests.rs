//! The log store's own tests: round trips across reopen, truncate, purge,
//! vote, and recovery from a torn or corrupt tail.

use std::fs::OpenOptions;

use openraft::{CommittedLeaderId, EntryPayload};
use serde_json::json;

use super::*;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(json!({ "put": index, "pad": "x".repeat(40) })),
    }
}

fn entries(term: u64, range: std::ops::Range<u64>) -> Vec<Entry> {
    range.map(|i| entry(term, i)).collect()
}

fn open(dir: &Path) -> (LogStore, Recovery) {
    LogStore::open(dir).expect("open")
}

fn read_all(store: &LogStore) -> Vec<Entry> {
    store
        .lock()
        .entries
        .values()
        .map(|s| s.entry.clone())
        .collect()
}

fn log_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(LOG_FILE)).expect("stat").len()
}

#[test]
fn a_fresh_store_is_pristine_and_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, recovery) = open(dir.path());
    assert!(store.is_pristine());
    assert_eq!(
        recovery,
        Recovery {
            entries: 0,
            dropped_bytes: 0,
            stopped: None
        }
    );
    assert!(store.indexes().is_empty());
}

#[test]
fn appended_entries_and_the_vote_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = open(dir.path());
        store.write_entries(entries(1, 0..10)).expect("append");
        store.write_vote(&Vote::new_committed(2, 3)).expect("vote");
        assert!(!store.is_pristine());
    }
    let (store, recovery) = open(dir.path());
    assert_eq!(recovery.entries, 10);
    assert_eq!(recovery.dropped_bytes, 0);
    assert_eq!(read_all(&store), entries(1, 0..10));
    assert_eq!(store.lock().vote, Some(Vote::new_committed(2, 3)));
}

#[test]
fn an_append_with_a_hole_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    store.write_entries(entries(1, 0..3)).expect("append");
    assert!(store.write_entries(entries(1, 4..5)).is_err());
    assert_eq!(store.indexes(), vec![0, 1, 2]);
}

#[test]
fn truncate_removes_the_suffix_durably_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = open(dir.path());
        store.write_entries(entries(1, 0..10)).expect("append");
        store.truncate_from(6).expect("truncate");
        assert_eq!(store.indexes(), (0..6).collect::<Vec<_>>());
        store
            .write_entries(entries(2, 6..8))
            .expect("append after truncate");
    }
    let (store, recovery) = open(dir.path());
    assert_eq!(recovery.dropped_bytes, 0);
    let mut expected = entries(1, 0..6);
    expected.extend(entries(2, 6..8));
    assert_eq!(read_all(&store), expected);
}

#[test]
fn purge_drops_the_prefix_durably_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = open(dir.path());
        store.write_entries(entries(1, 0..10)).expect("append");
        let before = log_len(dir.path());
        store.purge_upto(log_id(1, 5)).expect("purge");
        assert!(
            log_len(dir.path()) < before,
            "the file is rewritten smaller"
        );
        assert_eq!(store.indexes(), (6..10).collect::<Vec<_>>());
        store
            .write_entries(entries(1, 10..12))
            .expect("append after purge");
        // A purge at or below the last one changes nothing.
        store.purge_upto(log_id(1, 3)).expect("purge below");
    }
    let (mut store, _) = open(dir.path());
    assert_eq!(read_all(&store), entries(1, 6..12));
    let state = futures_lite::future::block_on(store.get_log_state()).expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 5)));
    assert_eq!(state.last_log_id, Some(log_id(1, 11)));
}

#[test]
fn purge_beyond_the_last_entry_leaves_an_empty_log_that_continues_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = open(dir.path());
        store.write_entries(entries(1, 0..3)).expect("append");
        // A snapshot installed from the leader reaches past this log.
        store.purge_upto(log_id(4, 20)).expect("purge");
        assert!(store.indexes().is_empty());
        assert!(
            store.write_entries(entries(4, 3..4)).is_err(),
            "the next index is 21"
        );
        store
            .write_entries(entries(4, 21..23))
            .expect("append after the purge point");
    }
    let (mut store, _) = open(dir.path());
    assert_eq!(read_all(&store), entries(4, 21..23));
    let state = futures_lite::future::block_on(store.get_log_state()).expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(4, 20)));
}

#[test]
fn recovery_truncates_a_torn_tail_and_keeps_earlier_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (store, _) = open(dir.path());
        store.write_entries(entries(1, 0..5)).expect("append");
    }
    let full = log_len(dir.path());
    // Cut the last record in the middle.
    let file = OpenOptions::new()
        .write(true)
        .open(dir.path().join(LOG_FILE))
        .expect("open");
    file.set_len(full - 20).expect("cut");
    drop(file);
    {
        let (store, recovery) = open(dir.path());
        assert_eq!(recovery.entries, 4);
        assert!(recovery.dropped_bytes > 0);
        assert!(
            recovery
                .stopped
                .as_deref()
                .is_some_and(|s| s.contains("torn")),
            "{recovery:?}"
        );
        assert_eq!(read_all(&store), entries(1, 0..4));
        // The cut tail is gone from the file: the next append follows entry 3.
        store
            .write_entries(entries(2, 4..6))
            .expect("append after recovery");
    }
    let (store, recovery) = open(dir.path());
    assert_eq!(recovery.dropped_bytes, 0);
    let mut expected = entries(1, 0..4);
    expected.extend(entries(2, 4..6));
    assert_eq!(read_all(&store), expected);
}

#[test]
fn recovery_truncates_at_a_flipped_byte_and_keeps_the_entries_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let offset_of_3 = {
        let (store, _) = open(dir.path());
        store.write_entries(entries(1, 0..6)).expect("append");
        let log = store.lock();
        log.entries[&3].offset
    };
    let path = dir.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    // A byte inside entry 3's payload.
    let at = offset_of_3 as usize + HEADER_BYTES + 10;
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let (store, recovery) = open(dir.path());
    assert_eq!(recovery.entries, 3);
    assert!(
        recovery
            .stopped
            .as_deref()
            .is_some_and(|s| s.contains("CRC")),
        "{recovery:?}"
    );
    assert_eq!(read_all(&store), entries(1, 0..3));
    assert_eq!(log_len(dir.path()), offset_of_3);
}

#[test]
fn a_committed_id_beyond_the_log_is_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut store, _) = open(dir.path());
        store.write_entries(entries(1, 0..5)).expect("append");
        futures_lite::future::block_on(store.save_committed(Some(log_id(1, 4))))
            .expect("committed");
    }
    {
        let (mut store, _) = open(dir.path());
        assert_eq!(
            futures_lite::future::block_on(store.read_committed()).expect("read"),
            Some(log_id(1, 4))
        );
    }
    let file = OpenOptions::new()
        .write(true)
        .open(dir.path().join(LOG_FILE))
        .expect("open");
    file.set_len(log_len(dir.path()) - 5).expect("cut");
    drop(file);
    let (mut store, _) = open(dir.path());
    assert_eq!(
        futures_lite::future::block_on(store.read_committed()).expect("read"),
        None
    );
}

#[test]
fn a_log_file_of_another_kind_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(LOG_FILE), b"not a quorum log at all").expect("write");
    assert!(matches!(
        LogStore::open(dir.path()),
        Err(QuorumError::Corrupt { .. })
    ));
}
