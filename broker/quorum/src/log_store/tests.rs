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
        payload: EntryPayload::Normal(json!({ "put": index, "pad": "x".repeat(40) }).to_string()),
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

/// Appends one whole record (its CRC right) holding `payload` to the log
/// file in `dir`.
fn append_whole_record(dir: &Path, payload: &[u8]) {
    let mut record = Vec::new();
    record::encode(payload, &mut record);
    let mut bytes = std::fs::read(dir.join(LOG_FILE)).expect("read");
    bytes.extend_from_slice(&record);
    std::fs::write(dir.join(LOG_FILE), &bytes).expect("write");
}

#[test]
fn a_whole_record_that_is_no_entry_or_out_of_sequence_refuses_to_open_and_cuts_nothing() {
    let mut out_of_sequence = vec![TAG_ENTRY];
    out_of_sequence.extend(serde_json::to_vec(&entry(1, 9)).expect("encode"));
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "not a decodable entry",
            [&[TAG_ENTRY][..], b"{\"nope\":1}"].concat(),
        ),
        ("is not an entry", vec![0xEE, 1, 2, 3]),
        ("where 5 was next", out_of_sequence),
    ];
    for (reason, payload) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, _) = open(dir.path());
            store.write_entries(entries(1, 0..5)).expect("append");
        }
        append_whole_record(dir.path(), &payload);
        let len = log_len(dir.path());
        match LogStore::open(dir.path()) {
            Err(QuorumError::Corrupt { reason: got, .. }) => {
                assert!(got.contains(reason), "{reason:?} in {got:?}")
            }
            Err(e) => panic!("{reason}: {e}"),
            Ok(_) => panic!("{reason}: opened"),
        }
        assert_eq!(log_len(dir.path()), len, "{reason}: the file was cut");
    }
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

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    Append(u64),
    Truncate(u64),
    Purge(u64),
    Reopen,
    /// Cut this many bytes off the end of the file, then reopen: a torn
    /// append.
    Cut(u64),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (1..6u64).prop_map(Op::Append),
        1 => (0..6u64).prop_map(Op::Truncate),
        1 => (0..10u64).prop_map(Op::Purge),
        1 => Just(Op::Reopen),
        1 => (1..120u64).prop_map(Op::Cut),
    ]
}

/// The log as a plain map, and what the store should say of it.
#[derive(Default)]
struct Model {
    entries: BTreeMap<u64, Entry>,
    purged: Option<LogId>,
    term: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.entries
            .keys()
            .next_back()
            .map_or(self.purged.map_or(0, |p| p.index + 1), |i| i + 1)
    }
}

fn check(store: &LogStore, model: &Model) {
    let log = store.lock();
    let got: Vec<&Entry> = log.entries.values().map(|s| &s.entry).collect();
    let want: Vec<&Entry> = model.entries.values().collect();
    assert_eq!(got, want);
    assert_eq!(log.purged, model.purged);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Appends, truncates, purges, reopens and torn tails, against a map:
    /// after every step the store holds exactly the model's entries, and a
    /// torn tail loses only the entries whose records it cut.
    #[test]
    fn the_log_store_matches_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, _) = open(dir.path());
        let mut model = Model { term: 1, ..Model::default() };
        for op in ops {
            match op {
                Op::Append(n) => {
                    let next = model.next();
                    let batch = entries(model.term, next..next + n);
                    store.write_entries(batch.clone()).expect("append");
                    model.entries.extend(batch.into_iter().map(|e| (e.log_id.index, e)));
                }
                Op::Truncate(back) => {
                    if let Some(last) = model.entries.keys().next_back().copied() {
                        let at = last.saturating_sub(back).max(*model.entries.keys().next().expect("non-empty"));
                        store.truncate_from(at).expect("truncate");
                        model.entries.split_off(&at);
                        // A new leader's entries follow a truncation.
                        model.term += 1;
                    }
                }
                Op::Purge(ahead) => {
                    let first = model.entries.keys().next().copied().unwrap_or(model.next());
                    let upto_index = first + ahead;
                    let upto = model.entries.get(&upto_index).map_or(log_id(model.term, upto_index), |e| e.log_id);
                    if model.purged.is_none_or(|p| p.index < upto_index) {
                        model.entries = model.entries.split_off(&(upto_index + 1));
                        model.purged = Some(upto);
                    }
                    store.purge_upto(upto).expect("purge");
                }
                Op::Reopen => {
                    drop(store);
                    store = open(dir.path()).0;
                }
                Op::Cut(bytes) => {
                    let (end, first_offset, records) = {
                        let log = store.lock();
                        let offsets: Vec<(u64, u64)> = log.entries.iter().map(|(i, s)| (*i, s.offset)).collect();
                        (log.end, offsets.first().map(|(_, o)| *o), offsets)
                    };
                    // Only entries are ever torn: the head is replaced whole.
                    let Some(first_offset) = first_offset else { continue };
                    let new_len = end - bytes.min(end - first_offset);
                    drop(store);
                    let file = OpenOptions::new().write(true).open(dir.path().join(LOG_FILE)).expect("open");
                    file.set_len(new_len).expect("cut");
                    drop(file);
                    // An entry survives if its whole record is below the cut.
                    let ends: Vec<u64> = records.iter().skip(1).map(|(_, o)| *o).chain([end]).collect();
                    for ((index, _), record_end) in records.iter().zip(ends) {
                        if record_end > new_len {
                            model.entries.remove(index);
                        }
                    }
                    let recovery;
                    (store, recovery) = open(dir.path());
                    proptest::prop_assert_eq!(recovery.entries, model.entries.len());
                }
            }
            check(&store, &model);
        }
        drop(store);
        let (store, recovery) = open(dir.path());
        proptest::prop_assert_eq!(recovery.dropped_bytes, 0);
        check(&store, &model);
    }
}

#[test]
fn a_second_store_over_the_same_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    store.write_entries(entries(1, 0..2)).expect("append");
    assert!(matches!(
        LogStore::open(dir.path()),
        Err(QuorumError::InUse { .. })
    ));
    drop(store);
    let (store, _) = open(dir.path());
    assert_eq!(store.indexes(), vec![0, 1]);
}
