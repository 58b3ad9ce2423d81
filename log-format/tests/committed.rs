//! The log against its Raft committed mark: a lost segment tail under the
//! mark is named with its range and the way out; a cut in the uncommitted
//! tail, and records that live in a snapshot, are fine.

use std::fs;
use std::path::{Path, PathBuf};

use log_format::{
    COMMITTED_FILE, Error, Log, LogConfig, PURGED_FILE, RaftLogId, Record, StateFile,
    check_committed, scan_dir,
};

fn id(index: u64) -> RaftLogId {
    RaftLogId {
        term: 1,
        node_id: 1,
        index,
    }
}

fn mark(dir: &Path, file: &str, index: u64) {
    StateFile::new(dir, file).store(&Some(id(index))).unwrap();
}

/// Records `0..n`, in segments of a few records each.
fn write_log(dir: &Path, n: u64) {
    let (log, _) = Log::open(dir, LogConfig { segment_size: 400 }).unwrap();
    let records: Vec<Record> = (0..n)
        .map(|index| Record {
            index,
            term: 1,
            payload: format!("record number {index:04}").into_bytes(),
        })
        .collect();
    log.append(&records).unwrap();
}

/// Cuts the log at the start of record `index`, on a record boundary, and
/// deletes every later segment: what a lost tail leaves, with nothing torn
/// for recovery to notice.
fn lose_tail_from(dir: &Path, index: u64) {
    let mut at: Option<(PathBuf, u64)> = None;
    let mut later = Vec::new();
    scan_dir(dir, |path, offset, frame| {
        if frame.index == index {
            at = Some((path.to_path_buf(), offset));
        } else if frame.index > index && at.as_ref().is_some_and(|(p, _)| p != path) {
            later.push(path.to_path_buf());
        }
    })
    .unwrap();
    let (path, offset) = at.expect("record to cut at");
    later.dedup();
    for p in later {
        fs::remove_file(p).unwrap();
    }
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(offset)
        .unwrap();
}

/// The next index of the log in `dir` after the server's recovery at open.
fn reopened_next_index(dir: &Path) -> u64 {
    Log::open(dir, LogConfig::default()).unwrap().0.next_index()
}

#[test]
fn a_lost_tail_under_the_committed_mark_names_the_missing_records() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40);
    mark(dir.path(), COMMITTED_FILE, 35);
    assert!(check_committed(dir.path(), reopened_next_index(dir.path())).is_ok());

    lose_tail_from(dir.path(), 21);
    let next = reopened_next_index(dir.path());
    assert_eq!(next, 21, "the cut is clean: open sees a shorter log");
    let err = check_committed(dir.path(), next).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CommittedMissing {
                first: 21,
                last: 35,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    for part in [
        &format!("the log in {} ", dir.path().display()),
        "raft-committed file",
        "acknowledged records 21..35 are missing",
        "Restore the directory from a backup",
        "`chat-server cluster remove`",
        "move the directory aside",
        "`--join`",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
}

#[test]
fn a_cut_inside_the_uncommitted_tail_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 40);
    mark(dir.path(), COMMITTED_FILE, 20);
    lose_tail_from(dir.path(), 21);
    assert!(check_committed(dir.path(), reopened_next_index(dir.path())).is_ok());
    // One record further and the committed record itself is gone.
    lose_tail_from(dir.path(), 20);
    let err = check_committed(dir.path(), reopened_next_index(dir.path())).unwrap_err();
    assert!(
        err.to_string()
            .contains("acknowledged records 20..20 are missing"),
        "{err}"
    );
}

#[test]
fn records_purged_into_a_snapshot_count_as_held() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 20);
    // A snapshot from the leader, ahead of the log: the purged mark is
    // written first, so a crash here leaves the log unpurged and short.
    mark(dir.path(), PURGED_FILE, 30);
    mark(dir.path(), COMMITTED_FILE, 30);
    assert!(check_committed(dir.path(), reopened_next_index(dir.path())).is_ok());

    let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
    log.purge_before(31).unwrap();
    assert_eq!(log.next_index(), 31);
    drop(log);
    assert!(check_committed(dir.path(), reopened_next_index(dir.path())).is_ok());

    // Committed past the snapshot and the (empty) log.
    mark(dir.path(), COMMITTED_FILE, 33);
    let err = check_committed(dir.path(), reopened_next_index(dir.path())).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CommittedMissing {
                first: 31,
                last: 33,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_damaged_committed_file_is_reported_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 5);
    mark(dir.path(), COMMITTED_FILE, 4);
    let path = dir.path().join(COMMITTED_FILE);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let err = check_committed(dir.path(), 5).unwrap_err();
    assert_eq!(err.corruption().map(|c| &c.file), Some(&path), "{err}");
}
