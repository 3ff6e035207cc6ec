//! The journal on the real file system, in a fresh temporary directory.

// A test (or bench) reads clocks and files freely; the rule is for the core.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;

use sealbatch::journal::format::{FRAME_OVERHEAD_LEN, SEGMENT_HEADER_LEN};
use sealbatch::journal::{
    Corruption, Journal, JournalConfig, JournalError, JournalWriter, Lsn, ReadOnlyFsStorage,
    Storage, StorageFile, WriterEvent, segment_name,
};
use tempfile::TempDir;

/// Kind bytes, as the sequencer assigns them (the journal does not interpret
/// them; `spec/journal.md`).
const ENVELOPE: u8 = 1;
const CONFIG: u8 = 7;
const KINDS: [u8; 7] = [1, 2, 3, 4, 5, 6, 7];

/// A fresh directory with an unpredictable name, removed on drop.
fn temp_dir(test: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sealbatch-journal-{test}-"))
        .tempdir()
        .unwrap()
}

fn payload(i: usize) -> Vec<u8> {
    (0..100 + i % 50).map(|j| (i * 31 + j) as u8).collect()
}

fn config() -> JournalConfig {
    JournalConfig {
        segment_bytes_max: 4096,
    }
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn records_survive_reopen_across_segments() {
    let dir = temp_dir("reopen");
    let (mut journal, recovery) = Journal::open_dir(dir.path(), config()).unwrap();
    assert!(recovery.records.is_empty());
    for i in 0..300 {
        let kind = KINDS[i % 7];
        assert_eq!(journal.append(kind, &payload(i)).unwrap(), i as u64 + 1);
        if i % 10 == 9 {
            assert_eq!(journal.sync().unwrap(), i as u64 + 1);
        }
    }
    assert_eq!(journal.sync().unwrap(), 300);
    drop(journal);

    let names = segment_files(dir.path());
    assert!(names.len() > 5, "rotated: {names:?}");
    assert_eq!(names[0], segment_name(Lsn(1)));
    for name in &names {
        let len = fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len <= 4096, "{name} is {len} bytes");
    }

    let (mut journal, recovery) = Journal::open_dir(dir.path(), config()).unwrap();
    assert_eq!(recovery.records.len(), 300);
    assert_eq!(recovery.segments, names.len());
    assert!(recovery.truncation.is_none());
    for (i, record) in recovery.records.iter().enumerate() {
        assert_eq!(record.lsn, i as u64 + 1);
        assert_eq!(record.kind, KINDS[i % 7]);
        assert_eq!(record.payload, payload(i));
    }
    assert_eq!(journal.append(CONFIG, b"more").unwrap(), 301);
    assert_eq!(journal.sync().unwrap(), 301);
}

#[test]
fn a_torn_tail_is_cut_on_disk() {
    let dir = temp_dir("torn");
    let (mut journal, _) = Journal::open_dir(dir.path(), JournalConfig::default()).unwrap();
    for i in 0..5 {
        journal.append(ENVELOPE, &payload(i)).unwrap();
    }
    journal.sync().unwrap();
    drop(journal);
    let path = dir.path().join(segment_name(Lsn(1)));
    let good_len = fs::metadata(&path).unwrap().len();

    // Half a frame: a record whose write was interrupted.
    let mut frame = Vec::new();
    sealbatch::journal::format::encode_frame(&mut frame, Lsn(6), ENVELOPE, &payload(6));
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&frame[..frame.len() / 2]).unwrap();
    drop(file);

    let (journal, recovery) = Journal::open_dir(dir.path(), JournalConfig::default()).unwrap();
    assert_eq!(recovery.records.len(), 5);
    let truncation = recovery.truncation.unwrap();
    assert_eq!(truncation.offset, good_len);
    assert_eq!(truncation.bytes_cut as usize, frame.len() / 2);
    assert_eq!(truncation.path, path);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(journal.next_lsn(), 6);
}

#[test]
fn mid_file_corruption_stops_recovery_with_file_and_offset() {
    let dir = temp_dir("corrupt");
    let (mut journal, _) = Journal::open_dir(dir.path(), JournalConfig::default()).unwrap();
    for i in 0..4 {
        journal.append(ENVELOPE, &payload(0)).unwrap();
        journal.sync().unwrap();
        assert_eq!(journal.durable_lsn(), i + 1);
    }
    drop(journal);
    let path = dir.path().join(segment_name(Lsn(1)));
    let mut bytes = fs::read(&path).unwrap();
    let third = SEGMENT_HEADER_LEN + 2 * (FRAME_OVERHEAD_LEN + payload(0).len());
    bytes[third + 20] ^= 1;
    fs::write(&path, &bytes).unwrap();

    let error = Journal::open_dir(dir.path(), JournalConfig::default()).unwrap_err();
    match &error {
        JournalError::Corrupt {
            path: error_path,
            offset,
            problem:
                Corruption::Record {
                    expected_lsn: Lsn(3),
                    later: Some(_),
                    ..
                },
        } => {
            assert_eq!(error_path, &path);
            assert_eq!(*offset, third as u64);
        }
        other => panic!("expected mid-file corruption, got {other}"),
    }
    assert_eq!(fs::read(&path).unwrap(), bytes, "nothing was cut");
}

#[test]
fn bad_magic_is_reported() {
    let dir = temp_dir("magic");
    fs::create_dir_all(dir.path()).unwrap();
    fs::write(dir.path().join(segment_name(Lsn(1))), [b'x'; 64]).unwrap();
    let error = Journal::open_dir(dir.path(), JournalConfig::default()).unwrap_err();
    assert!(error.to_string().contains("bad segment header"), "{error}");
}

#[test]
fn writer_thread_on_disk() {
    let dir = temp_dir("writer");
    let (journal, _) = Journal::open_dir(dir.path(), JournalConfig::default()).unwrap();
    let mut writer = JournalWriter::spawn(journal, false).unwrap();
    for i in 0..2000 {
        writer.append(ENVELOPE, payload(i)).unwrap();
    }
    let mut durable = Lsn::NONE;
    while durable < 2000 {
        match writer.wait_event() {
            Some(WriterEvent::Durable { lsn, .. }) => durable = lsn,
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(writer.close().unwrap());
    let (_, recovery) = Journal::open_dir(dir.path(), JournalConfig::default()).unwrap();
    assert_eq!(recovery.records.len(), 2000);
    assert_eq!(recovery.records[1999].payload, payload(1999));
}

/// Every file of `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().into_string().unwrap(),
                fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_read_only_open_reads_up_to_a_torn_tail_and_changes_nothing() {
    let dir = temp_dir("read-only");
    let (mut journal, _) = Journal::open_dir(dir.path(), config()).unwrap();
    for i in 0..100 {
        journal.append(KINDS[i % 7], &payload(i)).unwrap();
    }
    journal.sync().unwrap();
    drop(journal);
    let names = segment_files(dir.path());
    assert!(names.len() > 3, "rotated: {names:?}");
    let last = dir.path().join(names.last().unwrap());
    let good_len = fs::metadata(&last).unwrap().len();
    let mut frame = Vec::new();
    sealbatch::journal::format::encode_frame(&mut frame, Lsn(101), ENVELOPE, &payload(101));
    let mut file = OpenOptions::new().append(true).open(&last).unwrap();
    file.write_all(&frame[..frame.len() / 2]).unwrap();
    drop(file);
    let before = files(dir.path());

    let recovery = Journal::open_dir_read_only(dir.path(), config()).unwrap();
    assert_eq!(recovery.segments, names.len());
    let truncation = recovery
        .truncation
        .clone()
        .expect("the torn tail is reported");
    assert_eq!(
        (
            truncation.path.as_path(),
            truncation.offset,
            truncation.bytes_cut as usize
        ),
        (last.as_path(), good_len, frame.len() / 2)
    );
    let records: Vec<_> = recovery.records.collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 100);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            (record.lsn, &record.payload),
            (Lsn(i as u64 + 1), &payload(i))
        );
    }
    assert_eq!(files(dir.path()), before, "byte for byte unchanged");

    // An open to append cuts what the read-only one left.
    let (journal, recovery) = Journal::open_dir(dir.path(), config()).unwrap();
    assert_eq!(recovery.truncation.map(|t| t.offset), Some(good_len));
    assert_eq!(fs::metadata(&last).unwrap().len(), good_len);
    assert_eq!(journal.next_lsn(), 101);
}

#[test]
fn a_read_only_open_leaves_a_torn_segment_header_and_an_empty_directory_alone() {
    let dir = temp_dir("read-only-header");
    let (mut journal, _) = Journal::open_dir(dir.path(), JournalConfig::default()).unwrap();
    for i in 0..3 {
        journal.append(ENVELOPE, &payload(i)).unwrap();
    }
    journal.sync().unwrap();
    drop(journal);
    // A segment whose creation was torn: part of a header.
    fs::write(dir.path().join(segment_name(Lsn(4))), [0x53, 0x42]).unwrap();
    let before = files(dir.path());
    let recovery = Journal::open_dir_read_only(dir.path(), JournalConfig::default()).unwrap();
    assert!(recovery.truncation.is_some());
    assert_eq!(recovery.records.count(), 3);
    assert_eq!(files(dir.path()), before);

    let empty = temp_dir("read-only-empty");
    let recovery = Journal::open_dir_read_only(empty.path(), JournalConfig::default()).unwrap();
    assert_eq!((recovery.segments, recovery.records.count()), (0, 0));
    assert!(files(empty.path()).is_empty(), "no first segment created");

    let missing = empty.path().join("missing");
    let error = Journal::open_dir_read_only(&missing, JournalConfig::default()).unwrap_err();
    assert!(matches!(error, JournalError::Io { .. }), "{error}");
    assert!(!missing.exists(), "not created");
}

#[test]
fn a_read_only_open_reports_damage_before_the_last_segment() {
    let dir = temp_dir("read-only-damage");
    let (mut journal, _) = Journal::open_dir(dir.path(), config()).unwrap();
    for i in 0..100 {
        journal.append(ENVELOPE, &payload(i)).unwrap();
    }
    journal.sync().unwrap();
    drop(journal);
    let first = dir.path().join(segment_name(Lsn(1)));
    let mut bytes = fs::read(&first).unwrap();
    bytes[SEGMENT_HEADER_LEN + 20] ^= 1;
    fs::write(&first, &bytes).unwrap();
    let before = files(dir.path());
    let mut records = Journal::open_dir_read_only(dir.path(), config())
        .unwrap()
        .records;
    let error = records
        .find_map(Result::err)
        .expect("the damage is reported");
    assert!(
        matches!(&error, JournalError::Corrupt { path, offset, .. }
            if *path == first && *offset == SEGMENT_HEADER_LEN as u64),
        "{error}"
    );
    assert_eq!(files(dir.path()), before);
}

#[test]
fn read_only_storage_refuses_every_write() {
    let dir = temp_dir("read-only-storage");
    let (journal, _) = Journal::open_dir(dir.path(), JournalConfig::default()).unwrap();
    drop(journal);
    let mut storage = ReadOnlyFsStorage::new(dir.path()).unwrap();
    let refused = |result: std::io::Result<()>| {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::PermissionDenied);
    };
    refused(storage.create("new").map(drop));
    refused(storage.remove(&segment_name(Lsn(1))));
    refused(storage.sync_dir());
    let mut file = storage.open(&segment_name(Lsn(1))).unwrap();
    assert_eq!(file.read_all().unwrap().len(), SEGMENT_HEADER_LEN);
    refused(file.append(b"x"));
    refused(file.sync_data());
    refused(file.truncate_sync(0));
    assert_eq!(segment_files(dir.path()), vec![segment_name(Lsn(1))]);
}
