//! openraft's own storage test suite run against the replica's Raft log
//! ([`LogStore`]) and state machine ([`StateMachine`]), each on a fresh
//! directory; and the log's own durability across reopening.
#![allow(clippy::disallowed_methods)]

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, StorageError, Vote};
use sealbatch::replica::{LogStore, Proposal, ReplicaId, Replication, StateMachine};
use sealbatch::sequencer::{JournalWrite, RecordKind};
use sealbatch::types::Lsn;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<Replication, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<ReplicaId>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = LogStore::open(&dir.path().join("raft")).expect("the log opens");
        let machine = StateMachine::open(&dir.path().join("journal"), &dir.path().join("raft"))
            .expect("the state machine opens");
        Ok((dir, log, machine))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}

fn proposal(first: u64, count: u64) -> Proposal {
    let writes: Vec<JournalWrite> = (first..first + count)
        .map(|lsn| JournalWrite {
            lsn: Lsn(lsn),
            kind: RecordKind::Config,
            payload: lsn.to_le_bytes().to_vec(),
        })
        .collect();
    Proposal::new(&writes).expect("a proposal")
}

fn entry(term: u64, index: u64) -> Entry<Replication> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(proposal(index * 10 + 1, 10)),
    }
}

#[tokio::test]
async fn the_log_survives_reopening_with_truncation_purge_and_vote() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    {
        let mut log = LogStore::open(dir.path()).expect("opens");
        let entries: Vec<_> = (1..=20).map(|i| entry(1, i)).collect();
        log.blocking_append(entries).await.expect("appended");
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 15))
            .await
            .expect("truncated");
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 4))
            .await
            .expect("purged");
        log.blocking_append(vec![entry(2, 15)])
            .await
            .expect("appended");
        log.save_vote(&Vote::new_committed(2, 3))
            .await
            .expect("vote saved");
    }
    let mut log = LogStore::open(dir.path()).expect("reopens");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(4));
    assert_eq!(
        state.last_log_id,
        Some(LogId::new(CommittedLeaderId::new(2, 1), 15))
    );
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(2, 3))
    );
    let entries = openraft::RaftLogReader::try_get_log_entries(&mut log, 0..100)
        .await
        .expect("entries");
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (5..=15).collect::<Vec<_>>());
    assert_eq!(entries.last().map(|e| e.log_id.leader_id.term), Some(2));
}

#[tokio::test]
async fn a_torn_last_frame_is_cut_and_damage_before_the_end_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    {
        let mut log = LogStore::open(dir.path()).expect("opens");
        log.blocking_append((1..=3).map(|i| entry(1, i)).collect::<Vec<_>>())
            .await
            .expect("appended");
    }
    let path = dir.path().join("log");
    let bytes = std::fs::read(&path).expect("read");
    // A torn last frame: cut, the first two entries kept.
    std::fs::write(&path, &bytes[..bytes.len() - 7]).expect("written");
    {
        let mut log = LogStore::open(dir.path()).expect("reopens past a torn tail");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id.map(|id| id.index), Some(2));
    }
    // A flipped byte in the first frame, with frames after it: refused.
    let mut damaged = std::fs::read(&path).expect("read");
    damaged[20] ^= 0x40;
    std::fs::write(&path, &damaged).expect("written");
    let error = LogStore::open(dir.path()).expect_err("damage is not a torn tail");
    assert!(error.to_string().contains("damaged"), "{error}");
}

#[tokio::test]
async fn the_log_is_rewritten_without_purged_entries_while_appends_go_on() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("log");
    let mut written = 0;
    let mut shrunk = 0;
    {
        let mut log = LogStore::open_rewriting_at(dir.path(), 32 << 10).expect("opens");
        let mut last_size = 0;
        for index in 1..=2_000u64 {
            if index > 50 && index % 10 == 0 {
                // Keep the newest 50 entries; the rest goes, and with it
                // most of the file: rewrites start while appends go on.
                // (A purge is not synced by itself: the append after it
                // syncs it.)
                log.purge(LogId::new(CommittedLeaderId::new(1, 1), index - 50))
                    .await
                    .expect("purged");
            }
            log.blocking_append(vec![entry(1, index)])
                .await
                .expect("appended");
            written += 1;
            let size = std::fs::metadata(&path).expect("the log file").len();
            if size < last_size {
                shrunk += 1;
            }
            last_size = size;
        }
    }
    assert!(shrunk >= 3, "the file was rewritten {shrunk} times");
    // Every entry appended (and not purged) is in the file that took the
    // old one's place, whenever it was appended.
    let mut log = LogStore::open(dir.path()).expect("reopens");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id.map(|id| id.index), Some(1_950));
    let entries = openraft::RaftLogReader::try_get_log_entries(&mut log, 0..u64::MAX)
        .await
        .expect("entries");
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (1_951..=written).collect::<Vec<_>>());
    for e in &entries {
        assert_eq!(e, &entry(1, e.log_id.index));
    }
}

fn large_entry(index: u64) -> Entry<Replication> {
    let writes: Vec<JournalWrite> = (0..10)
        .map(|i| JournalWrite {
            lsn: Lsn(index * 10 + 1 + i),
            kind: RecordKind::Config,
            payload: vec![(index + i) as u8; 16 << 10],
        })
        .collect();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal::new(&writes).expect("a proposal")),
    }
}

#[tokio::test]
async fn entries_appended_while_the_log_is_rewritten_are_in_the_new_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("log");
    {
        let mut log = LogStore::open_rewriting_at(dir.path(), 1 << 20).expect("opens");
        for index in 1..=100 {
            log.blocking_append(vec![large_entry(index)])
                .await
                .expect("appended");
        }
        let before = std::fs::metadata(&path).expect("the log file").len();
        // 16 MB written, 6.4 MB of it left: the purge starts a rewrite, and
        // the appends right after it land while the new file is written.
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 60))
            .await
            .expect("purged");
        for index in 101..=120 {
            log.blocking_append(vec![large_entry(index)])
                .await
                .expect("appended");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&path).expect("the log file").len() >= before
            || dir.path().join("log.tmp").exists()
        {
            assert!(std::time::Instant::now() < deadline, "no rewrite");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let mut log = LogStore::open(dir.path()).expect("reopens");
    let entries = openraft::RaftLogReader::try_get_log_entries(&mut log, 0..u64::MAX)
        .await
        .expect("entries");
    let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (61..=120).collect::<Vec<_>>());
    for e in &entries {
        assert_eq!(e, &large_entry(e.log_id.index));
    }
}

/// A record whose LSN the journal already held when it was opened is
/// skipped (an entry applied again after a restart); one at an LSN given
/// since — two records at one LSN — is refused.
#[tokio::test]
async fn only_records_held_before_the_journal_opened_are_skipped() {
    use openraft::storage::RaftStateMachine;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let open = || {
        StateMachine::open(&dir.path().join("journal"), &dir.path().join("raft"))
            .expect("the state machine opens")
    };
    let normal = |index: u64, first: u64, count: u64| Entry::<Replication> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(proposal(first, count)),
    };
    let mut machine = open();
    machine
        .apply([normal(1, 1, 3), normal(2, 4, 2)])
        .await
        .expect("applied");
    assert_eq!(machine.next_lsn(), 6);
    let twice = machine.apply([normal(3, 5, 3)]).await;
    assert!(twice.is_err(), "LSN 5 given twice in one run");
    drop(machine);

    // After a restart the same entries are applied again: skipped.
    let mut machine = open();
    assert_eq!(machine.next_lsn(), 6);
    machine
        .apply([normal(1, 1, 3), normal(2, 4, 2), normal(3, 6, 2)])
        .await
        .expect("applied again, then the next entry");
    assert_eq!(machine.next_lsn(), 8);
    assert!(machine.apply([normal(4, 7, 2)]).await.is_err());
    assert!(machine.apply([normal(4, 9, 1)]).await.is_err(), "a gap");
}
