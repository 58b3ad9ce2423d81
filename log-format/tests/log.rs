//! The log through its public API: appends, reads, reopen, reshaping, and
//! recovery from the crash and corruption cases that LevelDB's and etcd's
//! own tests cover, plus the ones they miss.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log_format::format::{SEGMENT_HEADER_LEN, segment_file_name};
use log_format::{CorruptionKind, Error, Log, LogConfig, Record};
use proptest::prelude::*;

fn small() -> LogConfig {
    LogConfig { segment_size: 400 }
}

fn rec(index: u64, term: u64, payload: &[u8]) -> Record {
    Record {
        index,
        term,
        payload: payload.to_vec(),
    }
}

/// Records `from..to` with payloads that say which record they are.
fn records(from: u64, to: u64) -> Vec<Record> {
    (from..to)
        .map(|i| rec(i, 1 + i / 10, format!("record number {i:04}").as_bytes()))
        .collect()
}

fn open(dir: &Path) -> Log {
    Log::open(dir, small()).expect("open").0
}

fn all(log: &Log) -> Vec<Record> {
    log.read(log.first_index()..u64::MAX).expect("read")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn corruption(dir: &Path) -> log_format::Corruption {
    match Log::open(dir, small()) {
        Err(Error::Corrupt(c)) => *c,
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("expected corruption, log opened"),
    }
}

/// A log of 40 records over several segments, closed.
fn written_log() -> (tempfile::TempDir, Vec<Record>) {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(0, 40);
    let log = open(dir.path());
    for chunk in recs.chunks(7) {
        log.append(chunk).unwrap();
    }
    drop(log);
    assert!(segments(dir.path()).len() >= 3);
    (dir, recs)
}

#[test]
fn appends_read_back_across_segments_and_reopen() {
    let (dir, recs) = written_log();
    let log = open(dir.path());
    assert_eq!(log.next_index(), 40);
    assert_eq!(all(&log), recs);
    assert_eq!(log.read(13..17).unwrap(), recs[13..17]);
    assert_eq!(log.get(39).unwrap().as_ref(), Some(&recs[39]));
    assert_eq!(log.get(40).unwrap(), None);
    let iterated: Vec<Record> = log.iter_from(5).map(Result::unwrap).collect();
    assert_eq!(iterated, recs[5..]);
}

#[test]
fn appends_must_continue_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.append(&records(0, 3)).unwrap();
    let err = log.append(&records(4, 5)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotContiguous {
                expected: 3,
                got: 4
            }
        ),
        "{err}"
    );
    // A rejected batch leaves nothing behind.
    let err = log
        .append(&[rec(3, 1, b"ok"), rec(5, 1, b"gap")])
        .unwrap_err();
    assert!(matches!(err, Error::NotContiguous { .. }));
    assert_eq!(log.next_index(), 3);
}

#[test]
fn queued_records_are_readable_before_they_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let ticket = log.submit(&records(0, 5)).unwrap();
    assert_eq!(log.read(0..5).unwrap(), records(0, 5));
    log.wait(ticket).unwrap();
    drop(log);
    assert_eq!(all(&open(dir.path())), records(0, 5));
}

#[test]
fn concurrent_appenders_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig { segment_size: 4096 })
        .unwrap()
        .0;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for i in 0..50 {
                    let payload = format!("thread {t} item {i}");
                    let range = log.append_payloads(1, &[payload.as_bytes()]).unwrap();
                    got.push((range.start, payload));
                }
                got
            })
        })
        .collect();
    let mut expected: Vec<(u64, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    expected.sort();
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap().0;
    let stored: Vec<(u64, String)> = all(&log)
        .into_iter()
        .map(|r| (r.index, String::from_utf8(r.payload).unwrap()))
        .collect();
    assert_eq!(stored, expected);
}

#[test]
fn truncate_after_drops_the_tail_across_segments() {
    let (dir, recs) = written_log();
    let log = open(dir.path());
    log.truncate_after(11).unwrap();
    assert_eq!(log.next_index(), 12);
    assert_eq!(all(&log), recs[..12]);
    // The log continues with new content at the cut.
    let new: Vec<Record> = (12..20).map(|i| rec(i, 9, b"after the cut")).collect();
    log.append(&new).unwrap();
    drop(log);
    let log = open(dir.path());
    let mut expected = recs[..12].to_vec();
    expected.extend(new);
    assert_eq!(all(&log), expected);

    // Truncating everything leaves an empty log that continues at 0.
    log.truncate_after(u64::MAX).unwrap();
    assert_eq!(log.next_index(), 20);
    log.truncate_from(3).unwrap();
    assert_eq!(log.next_index(), 3);
    log.truncate_from(0).unwrap();
    assert_eq!(log.next_index(), 0);
    assert!(all(&log).is_empty());
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.next_index(), 0);
    log.append(&records(0, 2)).unwrap();
    assert_eq!(all(&log), records(0, 2));
}

#[test]
fn truncate_everything_then_append() {
    let (dir, _) = written_log();
    let log = open(dir.path());
    log.purge_before(0).unwrap();
    log.truncate_after(0).unwrap();
    assert_eq!(all(&log), records(0, 1));
    log.append(&[rec(1, 5, b"x")]).unwrap();
    drop(log);
    assert_eq!(
        all(&open(dir.path())),
        vec![records(0, 1)[0].clone(), rec(1, 5, b"x")]
    );
}

#[test]
fn truncate_waits_for_queued_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let ticket = log.submit(&records(0, 10)).unwrap();
    log.truncate_after(4).unwrap();
    // The waiter is released (its records were written, then cut).
    log.wait(ticket).unwrap();
    assert_eq!(all(&log), records(0, 5));
}

#[test]
fn purge_before_removes_exactly_the_records_before_it_from_disk() {
    let (dir, recs) = written_log();
    let log = open(dir.path());
    let before = segments(dir.path()).len();
    log.purge_before(20).unwrap();
    assert_eq!(log.first_index(), 20);
    assert!(segments(dir.path()).len() <= before);
    assert!(matches!(log.read(0..5), Err(Error::Purged { .. })));
    assert_eq!(all(&log), recs[20..]);
    // No purged payload is left in any file.
    for seg in segments(dir.path()) {
        let bytes = fs::read(&seg).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("record number 0019"), "{}", seg.display());
    }
    // Appends go on after the rewrite, and everything survives a reopen.
    log.append(&records(40, 45)).unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.first_index(), 20);
    assert_eq!(all(&log), records(20, 45));
    // Purging inside the last segment, up to its end, leaves an empty log.
    log.purge_before(45).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (45, 45));
    drop(log);
    let log = open(dir.path());
    assert_eq!((log.first_index(), log.next_index()), (45, 45));
    assert!(all(&log).is_empty());
}

/// A purge inside a long segment copies its kept records to a new one and
/// moves their sparse index with them: every kept record reads back on its
/// own, before and after a reopen (which rebuilds the index from the file),
/// and a truncation inside the rewritten segment still finds its place.
#[test]
fn a_purge_inside_a_long_segment_keeps_every_record_findable() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_size: 1 << 20,
    };
    let recs = records(0, 300);
    let log = Log::open(dir.path(), config.clone()).unwrap().0;
    log.append(&recs).unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
    log.purge_before(77).unwrap();
    let each = |log: &Log| {
        for r in &recs[77..] {
            assert_eq!(
                log.read(r.index..r.index + 1).unwrap(),
                std::slice::from_ref(r)
            );
        }
        assert_eq!(all(log), recs[77..]);
    };
    each(&log);
    log.truncate_after(250).unwrap();
    log.append(&records(251, 300)).unwrap();
    each(&log);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap().0;
    each(&log);
    let text = String::from_utf8_lossy(&fs::read(&segments(dir.path())[0]).unwrap()).into_owned();
    assert!(!text.contains("record number 0076"));
}

#[test]
fn an_interrupted_segment_rewrite_is_finished_at_open() {
    let (dir, recs) = written_log();
    let segs = segments(dir.path());
    let saved: Vec<(PathBuf, Vec<u8>)> = segs
        .iter()
        .map(|p| (p.clone(), fs::read(p).unwrap()))
        .collect();
    let log = open(dir.path());
    log.purge_before(20).unwrap();
    drop(log);
    // Put the old segments back: a crash right after the rewritten one was
    // created, before the old ones were deleted.
    for (p, bytes) in &saved {
        if !p.exists() {
            fs::write(p, bytes).unwrap();
        }
    }
    let (log, report) = Log::open(dir.path(), small()).unwrap();
    assert!(!report.removed.is_empty());
    assert_eq!(log.first_index(), 20);
    assert_eq!(all(&log), recs[20..]);
}

#[test]
fn purge_past_the_end_restarts_the_log_there() {
    let (dir, _) = written_log();
    let log = open(dir.path());
    log.purge_before(100).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (100, 100));
    assert_eq!(
        segments(dir.path()),
        vec![dir.path().join(segment_file_name(100))]
    );
    log.append(&records(100, 103)).unwrap();
    drop(log);
    let log = open(dir.path());
    assert_eq!(all(&log), records(100, 103));
    assert!(matches!(
        log.truncate_after(50),
        Err(Error::TruncateBeforePurge { .. })
    ));
}

#[test]
fn an_interrupted_full_purge_is_finished_at_open() {
    let (dir, _) = written_log();
    // Keep a copy of an old segment, purge past the end, put the copy back:
    // that is the state of a crash after the new base segment was created.
    let old = segments(dir.path())[0].clone();
    let saved = fs::read(&old).unwrap();
    let log = open(dir.path());
    log.purge_before(100).unwrap();
    drop(log);
    fs::write(&old, saved).unwrap();
    let (log, report) = Log::open(dir.path(), small()).unwrap();
    assert_eq!(report.removed, vec![old.clone()]);
    assert!(!old.exists());
    assert_eq!((log.first_index(), log.next_index()), (100, 100));
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = open(dir.path());
    let err = Log::open(dir.path(), small()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another process"));
}

// ---- crash and corruption cases ----------------------------------------

fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().unwrap()
}

fn truncate_file(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

#[test]
fn truncation_inside_the_last_record_is_a_torn_tail() {
    let (dir, recs) = written_log();
    let last = last_segment(dir.path());
    let len = fs::metadata(&last).unwrap().len();
    let original = fs::read(&last).unwrap();
    truncate_file(&last, len - 5);
    let (log, report) = Log::open(dir.path(), small()).unwrap();
    let torn = report.torn_tail.expect("torn tail");
    assert_eq!(torn.index, 39);
    assert_eq!(all(&log), recs[..39]);
    assert_eq!(fs::metadata(&last).unwrap().len(), torn.offset);
    // The damaged bytes were kept.
    let broken = fs::read(report.broken_file.unwrap()).unwrap();
    assert_eq!(broken, original[torn.offset as usize..(len - 5) as usize]);
    // Repair, then append, then reopen.
    log.append(&records(39, 45)).unwrap();
    drop(log);
    let (log, report) = Log::open(dir.path(), small()).unwrap();
    assert!(report.torn_tail.is_none());
    assert_eq!(all(&log), records(0, 45));
}

#[test]
fn a_zeroed_sector_at_the_tail_is_a_torn_tail() {
    let (dir, recs) = written_log();
    let last = last_segment(dir.path());
    let mut bytes = fs::read(&last).unwrap();
    let n = bytes.len();
    let zero_from = n.saturating_sub(40).max(SEGMENT_HEADER_LEN);
    bytes[zero_from..].fill(0);
    bytes.extend([0u8; 512]);
    fs::write(&last, &bytes).unwrap();
    let (log, report) = Log::open(dir.path(), small()).unwrap();
    let torn = report.torn_tail.expect("torn tail");
    let kept = all(&log);
    assert_eq!(kept, recs[..kept.len()]);
    assert_eq!(torn.index, kept.len() as u64);
    assert!(kept.len() >= 37);
}

#[test]
fn truncation_inside_a_header_is_corruption() {
    let (dir, _) = written_log();
    let last = last_segment(dir.path());
    truncate_file(&last, 20);
    let c = corruption(dir.path());
    assert_eq!((c.file.as_path(), c.offset), (last.as_path(), 0));
    assert!(matches!(c.kind, CorruptionKind::BadHeader(_)), "{c}");
}

#[test]
fn a_non_last_segment_cut_at_a_record_boundary_breaks_the_chain() {
    let (dir, _) = written_log();
    let segs = segments(dir.path());
    // Find the start of the last record of the first segment by scanning.
    let scan = log_format::scan_dir(dir.path(), |_, _, _| {}).unwrap();
    let first = &scan.segments[0];
    let mut last_start = 0;
    log_format::scan_dir(dir.path(), |path, offset, _| {
        if path == first.path {
            last_start = offset;
        }
    })
    .unwrap();
    truncate_file(&segs[0], last_start);
    let c = corruption(dir.path());
    assert_eq!(c.file, segs[1]);
    assert!(matches!(c.kind, CorruptionKind::BrokenChain { .. }), "{c}");
}

#[test]
fn a_flipped_byte_in_the_middle_is_corruption_at_its_record() {
    let (dir, _) = written_log();
    let mut target = None;
    log_format::scan_dir(dir.path(), |path, offset, frame| {
        if frame.index == 17 {
            target = Some((path.to_path_buf(), offset));
        }
    })
    .unwrap();
    let (path, offset) = target.unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes[offset as usize + 30] ^= 0x10;
    fs::write(&path, bytes).unwrap();
    let c = corruption(dir.path());
    assert_eq!(
        (c.file.clone(), c.offset, c.index),
        (path, offset, Some(17))
    );
    assert!(matches!(c.kind, CorruptionKind::BadChecksum { .. }));
    assert!(c.to_string().contains("record 17"));
}

#[test]
fn a_flipped_byte_in_the_last_segment_before_its_tail_is_corruption() {
    let (dir, _) = written_log();
    let last = last_segment(dir.path());
    let mut bytes = fs::read(&last).unwrap();
    bytes[SEGMENT_HEADER_LEN + 2] ^= 0x01; // the first record's length field
    fs::write(&last, bytes).unwrap();
    let c = corruption(dir.path());
    assert_eq!((c.file, c.offset), (last, SEGMENT_HEADER_LEN as u64));
}

#[test]
fn a_deleted_middle_segment_breaks_the_chain() {
    let (dir, _) = written_log();
    let segs = segments(dir.path());
    fs::remove_file(&segs[1]).unwrap();
    let c = corruption(dir.path());
    assert_eq!(c.file, segs[2]);
    assert!(matches!(c.kind, CorruptionKind::BrokenChain { .. }), "{c}");
}

#[test]
fn a_segment_from_another_log_is_refused() {
    let (dir, _) = written_log();
    let (other, _) = written_log();
    let segs = segments(dir.path());
    fs::copy(&segments(other.path())[1], &segs[1]).unwrap();
    let c = corruption(dir.path());
    assert_eq!(c.file, segs[1]);
    assert!(
        matches!(c.kind, CorruptionKind::ForeignSegment { .. }),
        "{c}"
    );
}

#[test]
fn an_unknown_format_version_is_named() {
    let (dir, _) = written_log();
    let segs = segments(dir.path());
    let mut bytes = fs::read(&segs[0]).unwrap();
    bytes[8] = 7;
    // Recompute the header checksum so only the version is wrong.
    let crc = crc32fast::hash(&bytes[0..44]);
    bytes[44..48].copy_from_slice(&crc.to_le_bytes());
    fs::write(&segs[0], bytes).unwrap();
    let c = corruption(dir.path());
    assert!(c.to_string().contains("version 7 is not supported"), "{c}");
}

#[test]
fn a_renamed_segment_is_refused() {
    let (dir, _) = written_log();
    let segs = segments(dir.path());
    let renamed = dir.path().join(segment_file_name(1000));
    fs::rename(segs.last().unwrap(), &renamed).unwrap();
    let c = corruption(dir.path());
    assert!(matches!(c.kind, CorruptionKind::NameMismatch { .. }), "{c}");
}

#[test]
fn leftover_temp_files_are_removed() {
    let (dir, recs) = written_log();
    let tmp = dir.path().join(format!("{}.tmp", segment_file_name(40)));
    fs::write(&tmp, b"half a header").unwrap();
    let (log, report) = Log::open(dir.path(), small()).unwrap();
    assert_eq!(report.removed, vec![tmp.clone()]);
    assert!(!tmp.exists());
    assert_eq!(all(&log), recs);
}

// ---- properties ----------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Append(Vec<Vec<u8>>),
    Reopen,
    Truncate(u64),
    Purge(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..12)
            .prop_map(Step::Append),
        2 => Just(Step::Reopen),
        1 => (0u64..100).prop_map(Step::Truncate),
        1 => (0u64..100).prop_map(Step::Purge),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever is written, in whatever batches, reads back identically
    /// after any number of reopens, and the log keeps accepting appends.
    #[test]
    fn batches_survive_reopen(steps in proptest::collection::vec(step(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Some(Log::open(dir.path(), LogConfig { segment_size: 700 }).unwrap().0);
        // The model: what the log must hold (index -> record).
        let mut model: Vec<Record> = Vec::new();
        let mut first = 0u64;
        let mut next = 0u64;
        for step in steps {
            let l = log.as_ref().unwrap();
            match step {
                Step::Append(payloads) => {
                    let batch: Vec<Record> = payloads.iter().zip(next..).map(|(p, i)| rec(i, 3, p)).collect();
                    l.append(&batch).unwrap();
                    next += batch.len() as u64;
                    model.extend(batch);
                }
                Step::Reopen => {
                    drop(log.take());
                    log = Some(Log::open(dir.path(), LogConfig { segment_size: 700 }).unwrap().0);
                }
                Step::Truncate(at) => {
                    if at + 1 >= first {
                        l.truncate_after(at).unwrap();
                        next = next.min(at + 1);
                        model.retain(|r| r.index <= at);
                    }
                }
                Step::Purge(at) => {
                    l.purge_before(at).unwrap();
                    if at > next {
                        next = at;
                        model.clear();
                    }
                    first = l.first_index();
                    prop_assert!(first <= at.max(first));
                }
            }
            let l = log.as_ref().unwrap();
            prop_assert_eq!(l.next_index(), next);
            let expected: Vec<Record> = model.iter().filter(|r| r.index >= l.first_index()).cloned().collect();
            prop_assert_eq!(l.read(l.first_index()..u64::MAX).unwrap(), expected);
        }
    }
}

#[test]
fn readers_and_writers_run_together() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open(dir.path(), LogConfig { segment_size: 2048 })
            .unwrap()
            .0,
    );
    let writer = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for chunk in records(0, 500).chunks(5) {
                log.append(chunk).unwrap();
            }
        })
    };
    let expected = records(0, 500);
    while !writer.is_finished() {
        let got = log.read(0..u64::MAX).unwrap();
        assert_eq!(got, expected[..got.len()]);
    }
    writer.join().unwrap();
    assert_eq!(all(&log), expected);
}
