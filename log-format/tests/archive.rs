//! The message archive through its public API: appends and reads across
//! segments, reopening after crashes, truncation, erasure, and readers on
//! other threads.

use std::collections::BTreeMap;
use std::fs;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use log_format::events::{AccountId, ArchivedMessage, ConversationId};
use log_format::format::{ARCHIVE_DIR, ArchiveHeader, encode_frame};
use log_format::{Archive, ArchiveConfig, CorruptionKind, Error, ScanEnd, scan_archive};
use proptest::prelude::*;

fn small() -> ArchiveConfig {
    ArchiveConfig {
        segment_size: 4096,
        sparse_every: 256,
    }
}

/// A message whose body says which id it is and is 20 to ~200 bytes long.
fn message(id: u64) -> ArchivedMessage {
    ArchivedMessage {
        conversation: ConversationId(id % 7),
        from: AccountId(1000 + id % 3),
        at_ms: 1_700_000_000_000 + id,
        body: format!("message {id} {}", "x".repeat((id * 37 % 180) as usize)),
    }
}

/// A message carrying `marker` in its body, to look for on disk.
fn marked(id: u64, marker: &str) -> ArchivedMessage {
    ArchivedMessage {
        body: format!("{marker}-{id}"),
        ..message(id)
    }
}

/// Ids with gaps of 1 or 2: 5, 9, 11, 15, 17, ...
fn gapped_ids(n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| 5 + i * 3 + (i * i) % 4).collect()
}

fn append_all(archive: &mut Archive, ids: &[u64], batch: usize) {
    for chunk in ids.chunks(batch) {
        let messages: Vec<_> = chunk.iter().map(|&id| (id, message(id))).collect();
        let refs: Vec<_> = messages.iter().map(|(id, m)| (*id, m)).collect();
        archive.append_batch(&refs).unwrap();
    }
}

fn archive_dir(dir: &Path) -> PathBuf {
    dir.join(ARCHIVE_DIR)
}

fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(archive_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    v.sort();
    v
}

fn hint_of(segment: &Path) -> PathBuf {
    let mut name = segment.as_os_str().to_owned();
    name.push(".hint");
    PathBuf::from(name)
}

fn flip_byte(path: &Path, at: u64) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 0x20], at).unwrap();
}

/// Every record, through `range`, as a map.
fn contents(archive: &Archive) -> BTreeMap<u64, ArchivedMessage> {
    archive
        .reader()
        .range(0, u64::MAX)
        .map(Result::unwrap)
        .collect()
}

fn expected(ids: &[u64]) -> BTreeMap<u64, ArchivedMessage> {
    ids.iter().map(|&id| (id, message(id))).collect()
}

#[test]
fn records_round_trip_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    assert_eq!(archive.last_id(), None);
    let ids = gapped_ids(300);
    append_all(&mut archive, &ids, 7);
    assert!(archive.segments().len() >= 4, "{:?}", archive.segments());
    assert_eq!(archive.last_id(), ids.last().copied());

    let reader = archive.reader();
    for &id in &ids {
        assert_eq!(reader.get(id).unwrap(), Some(message(id)), "id {id}");
    }
    for missing in [0, 4, 6, 8, ids.last().unwrap() + 1, u64::MAX] {
        assert_eq!(reader.get(missing).unwrap(), None, "id {missing}");
    }

    // get_many answers in the asked order, missing ids included.
    let asked = [ids[250], 6, ids[3], ids[4], ids[3], 1_000_000, ids[0]];
    let got = reader.get_many(&asked).unwrap();
    let want: Vec<_> = asked
        .iter()
        .map(|id| ids.contains(id).then(|| message(*id)))
        .collect();
    assert_eq!(got, want);

    assert_eq!(contents(&archive), expected(&ids));
    let (after, up_to) = (ids[40], ids[200] + 1);
    let part: Vec<u64> = reader.range(after, up_to).map(|r| r.unwrap().0).collect();
    let want: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|&id| id > after && id <= up_to)
        .collect();
    assert_eq!(part, want);
    assert_eq!(reader.range(ids[10], ids[10]).count(), 0);

    // Segments are described, and each sealed one has a hint.
    let segments = archive.segments();
    assert_eq!(segments.iter().map(|s| s.records).sum::<u64>(), 300);
    for pair in segments.windows(2) {
        assert!(pair[0].last_id.unwrap() < pair[1].first_id);
    }
    for s in &segments[..segments.len() - 1] {
        assert!(s.bytes <= 4096 + 300);
        assert!(hint_of(&s.path).exists(), "{}", s.path.display());
    }
    assert!(!hint_of(&segments.last().unwrap().path).exists());
}

/// The ids `scan_back` hands over for `asked` (descending), stopping after
/// `stop_after` of them, with each body checked against what was stored.
fn scanned_back(archive: &Archive, asked: &[u64], stop_after: usize) -> (Vec<u64>, bool) {
    let (seen, end) = scanned_back_within(archive, asked, stop_after, u64::MAX);
    assert!(!matches!(end, ScanEnd::OutOfReads { .. }), "{end:?}");
    (seen, end == ScanEnd::Stopped)
}

/// [`scanned_back`] with a read budget: the ids and how the scan ended.
fn scanned_back_within(
    archive: &Archive,
    asked: &[u64],
    stop_after: usize,
    mut budget: u64,
) -> (Vec<u64>, ScanEnd) {
    let mut seen = Vec::new();
    let end = archive
        .reader()
        .scan_back(asked, &mut budget, |id, m| {
            let want = message(id);
            assert_eq!(
                (m.conversation, m.from, m.at_ms, m.body),
                (want.conversation, want.from, want.at_ms, want.body.as_str()),
                "id {id}"
            );
            seen.push(id);
            if seen.len() == stop_after {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    (seen, end)
}

#[test]
fn scan_back_hands_over_the_asked_records_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    let ids = gapped_ids(300);
    append_all(&mut archive, &ids, 7);
    assert!(archive.segments().len() >= 4);

    // Every record, a sparse choice across segments, and ids never stored
    // (skipped) among them.
    let all: Vec<u64> = ids.iter().rev().copied().collect();
    assert_eq!(scanned_back(&archive, &all, 0), (all.clone(), false));
    let mut some: Vec<u64> = all.iter().copied().step_by(13).collect();
    some.extend([1_000_000, 6, 4, 1]);
    some.sort_unstable_by(|a, b| b.cmp(a));
    let stored: Vec<u64> = some.iter().copied().filter(|id| ids.contains(id)).collect();
    assert_eq!(scanned_back(&archive, &some, 0), (stored.clone(), false));

    // A visitor that breaks stops the scan there.
    assert_eq!(
        scanned_back(&archive, &some, 5),
        (stored[..5].to_vec(), true)
    );
    assert_eq!(scanned_back(&archive, &[], 0), (vec![], false));
}

/// With the default layout, a long run is read in several spans, and a
/// sparse pick (a conversation among many) in spans that skip the gaps.
#[test]
fn scan_back_reads_long_runs_in_spans() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), ArchiveConfig::default()).unwrap();
    let ids: Vec<u64> = (1..=20_000).map(|i| i * 1000).collect();
    append_all(&mut archive, &ids, 500);
    let all: Vec<u64> = ids.iter().rev().copied().collect();
    assert_eq!(scanned_back(&archive, &all, 0), (all.clone(), false));
    let every_97th: Vec<u64> = all.iter().copied().step_by(97).collect();
    assert_eq!(
        scanned_back(&archive, &every_97th, 0),
        (every_97th.clone(), false)
    );
    assert_eq!(
        scanned_back(&archive, &all, 12_345).0,
        all[..12_345].to_vec()
    );

    // A read budget stops between spans: everything above `next` was
    // handed over, nothing from it down; going on from there ends the
    // scan with nothing twice and nothing left out.
    let (mut seen, mut end) = scanned_back_within(&archive, &all, 0, 300 << 10);
    let mut scans = 1;
    while let ScanEnd::OutOfReads { next } = end {
        let at = all.iter().position(|id| *id == next).unwrap();
        assert_eq!(seen, all[..at], "scan {scans}");
        let (more, then) = scanned_back_within(&archive, &all[at..], 0, 300 << 10);
        seen.extend(more);
        end = then;
        scans += 1;
    }
    assert_eq!(end, ScanEnd::Done);
    assert_eq!(seen, all);
    // ~3 MB of records in spans of up to 256 KiB; a scan reads spans until
    // its 300 KiB are spent, so 300 to 556 KiB.
    assert!((5..=10).contains(&scans), "{scans} scans");
    // A budget of a byte reads one span; of nothing, none.
    let (seen, end) = scanned_back_within(&archive, &all, 0, 1);
    assert!(!seen.is_empty());
    assert_eq!(
        end,
        ScanEnd::OutOfReads {
            next: all[seen.len()]
        }
    );
    let (seen, end) = scanned_back_within(&archive, &all, 0, 0);
    assert_eq!((seen, end), (vec![], ScanEnd::OutOfReads { next: all[0] }));
}

#[test]
fn reopen_uses_hints_and_rebuilds_missing_or_damaged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ids = gapped_ids(200);
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    append_all(&mut archive, &ids, 10);
    archive.sync().unwrap();
    let segments = archive.segments();
    drop(archive);

    // A missing hint and a damaged hint are rebuilt, not errors.
    let deleted = hint_of(&segments[0].path);
    let damaged = hint_of(&segments[1].path);
    let good = fs::read(&damaged).unwrap();
    fs::remove_file(&deleted).unwrap();
    flip_byte(&damaged, 40);
    let archive = Archive::open(dir.path(), small()).unwrap();
    assert_eq!(contents(&archive), expected(&ids));
    assert_eq!(archive.segments(), segments);
    assert!(deleted.exists());
    assert_eq!(fs::read(&damaged).unwrap(), good);
    drop(archive);

    // With its hint intact, a sealed segment is not scanned at open: damage
    // in it shows when a read reaches it.
    let victim = &segments[2];
    flip_byte(&victim.path, victim.bytes - 3);
    let archive = Archive::open(dir.path(), small()).unwrap();
    let last_in_victim = victim.last_id.unwrap();
    let err = archive.reader().get(last_in_victim).unwrap_err();
    let corruption = err.corruption().expect("a corruption");
    assert_eq!(corruption.file, victim.path);
    assert!(err.to_string().contains("corrupt archive"), "{err}");
    drop(archive);

    // Without its hint, the same damage is found at open.
    fs::remove_file(hint_of(&victim.path)).unwrap();
    let err = Archive::open(dir.path(), small()).unwrap_err();
    let corruption = err.corruption().expect("a corruption");
    assert_eq!(corruption.file, victim.path);
    assert!(matches!(
        corruption.kind,
        CorruptionKind::BadChecksum { .. }
    ));
    assert_eq!(corruption.index, Some(last_in_victim));
}

#[test]
fn open_cuts_a_torn_tail_of_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let ids = gapped_ids(120);
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    append_all(&mut archive, &ids, 5);
    let active = archive.segments().last().unwrap().clone();
    drop(archive);

    // Half a frame of the next record, as a crash mid-write leaves it.
    let next = ids.last().unwrap() + 10;
    let mut frame = Vec::new();
    encode_frame(
        &mut frame,
        next,
        0,
        &log_format::events::encode_archived(&message(next)),
    );
    let file = fs::OpenOptions::new()
        .append(true)
        .open(&active.path)
        .unwrap();
    file.write_all_at(&frame[..frame.len() / 2], active.bytes)
        .unwrap();
    drop(file);
    let scan = scan_archive(dir.path(), |_, _, _| {}).unwrap();
    assert_eq!(scan.torn_tail.as_ref().unwrap().index, next);

    let mut archive = Archive::open(dir.path(), small()).unwrap();
    assert_eq!(archive.last_id(), ids.last().copied());
    assert_eq!(fs::metadata(&active.path).unwrap().len(), active.bytes);
    archive.append(next, &message(next)).unwrap();
    drop(archive);

    // Garbage at the end is cut the same way.
    let end = fs::metadata(&active.path).unwrap().len();
    fs::OpenOptions::new()
        .append(true)
        .open(&active.path)
        .unwrap()
        .write_all_at(&[0xee; 37], end)
        .unwrap();
    let archive = Archive::open(dir.path(), small()).unwrap();
    let mut all = ids.clone();
    all.push(next);
    assert_eq!(contents(&archive), expected(&all));
    assert!(
        scan_archive(dir.path(), |_, _, _| {})
            .unwrap()
            .torn_tail
            .is_none()
    );
}

#[test]
fn damage_before_the_end_of_the_active_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), ArchiveConfig::default()).unwrap();
    append_all(&mut archive, &gapped_ids(50), 50);
    let active = archive.segments().last().unwrap().clone();
    drop(archive);
    flip_byte(&active.path, 100);
    let err = Archive::open(dir.path(), ArchiveConfig::default()).unwrap_err();
    assert_eq!(err.corruption().unwrap().file, active.path);
}

#[test]
fn truncate_after_at_a_boundary_and_mid_segment_then_append_again() {
    let dir = tempfile::tempdir().unwrap();
    let ids = gapped_ids(300);
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    append_all(&mut archive, &ids, 9);
    let segments = archive.segments();
    let reader = archive.reader();

    // At a boundary: the last id of the third segment.
    let cut = segments[2].last_id.unwrap();
    archive.truncate_after(cut).unwrap();
    let kept: Vec<u64> = ids.iter().copied().filter(|&id| id <= cut).collect();
    assert_eq!(archive.last_id(), Some(cut));
    assert_eq!(archive.segments(), segments[..3].to_vec());
    assert_eq!(files(dir.path(), "arc").len(), 3);
    // Nothing was cut from the last kept segment: it stays sealed.
    assert_eq!(files(dir.path(), "hint").len(), 3);
    assert_eq!(reader.get(ids[299]).unwrap(), None);
    assert_eq!(contents(&archive), expected(&kept));

    // Mid-segment, at an id that is not stored.
    let cut = kept[kept.len() - 10] + 1;
    archive.truncate_after(cut).unwrap();
    // The segment holding the cut takes appends again, so it has no hint.
    assert_eq!(files(dir.path(), "hint").len(), 2);
    let kept: Vec<u64> = kept.into_iter().filter(|&id| id <= cut).collect();
    assert_eq!(archive.last_id(), kept.last().copied());
    assert_eq!(contents(&archive), expected(&kept));
    // Replaying appends the same ids again.
    let again: Vec<u64> = ids.iter().copied().filter(|&id| id > cut).collect();
    append_all(&mut archive, &again, 13);
    assert_eq!(contents(&archive), expected(&ids));
    drop(archive);
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    assert_eq!(contents(&archive), expected(&ids));
    assert!(scan_archive(dir.path(), |_, _, _| {}).is_ok());

    // Before everything, and clear.
    archive.truncate_after(ids[0] - 1).unwrap();
    assert_eq!(archive.last_id(), None);
    assert!(files(dir.path(), "arc").is_empty());
    append_all(&mut archive, &ids[..40], 40);
    archive.clear().unwrap();
    assert_eq!(archive.last_id(), None);
    assert_eq!(archive.reader().get(ids[0]).unwrap(), None);
    assert!(
        fs::read_dir(archive_dir(dir.path()))
            .unwrap()
            .next()
            .is_none()
    );
    archive.append(3, &message(3)).unwrap();
    drop(archive);
    let archive = Archive::open(dir.path(), small()).unwrap();
    assert_eq!(contents(&archive), expected(&[3]));
}

/// Every byte of every file under `DIR/archive`.
fn archive_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in fs::read_dir(archive_dir(dir)).unwrap() {
        all.extend(fs::read(entry.unwrap().path()).unwrap());
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn compaction_erases_dropped_records_from_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    let ids = gapped_ids(400);
    // Every 7th record is secret; one segment (ids of the 2nd) is all
    // secret, and so is the last record, in the active segment.
    let secret = |id: u64| id.is_multiple_of(7) || (400..500).contains(&id) || id == ids[399];
    let messages: Vec<_> = ids
        .iter()
        .map(|&id| {
            let m = if secret(id) {
                marked(id, "SECRET-BODY")
            } else {
                message(id)
            };
            (id, m)
        })
        .collect();
    for chunk in messages.chunks(11) {
        let refs: Vec<_> = chunk.iter().map(|(id, m)| (*id, m)).collect();
        archive.append_batch(&refs).unwrap();
    }
    let reader_before = archive.reader();
    let before = archive.segments();
    assert!(contains(&archive_bytes(dir.path()), "SECRET-BODY"));

    let report = archive.compact(|id| !secret(id)).unwrap();
    let dropped = ids.iter().filter(|&&id| secret(id)).count() as u64;
    assert_eq!(report.records_dropped, dropped);
    assert!(report.bytes_after < report.bytes_before);
    assert!(report.segments_rewritten >= before.len() - 1, "{report:?}");
    assert!(!contains(&archive_bytes(dir.path()), "SECRET-BODY"));

    let kept: BTreeMap<u64, ArchivedMessage> = messages
        .iter()
        .filter(|(id, _)| !secret(*id))
        .cloned()
        .collect();
    assert_eq!(contents(&archive), kept);
    for (id, m) in &messages {
        let want = (!secret(*id)).then(|| m.clone());
        assert_eq!(reader_before.get(*id).unwrap(), want, "id {id}");
    }
    // The active segment was sealed: the next append starts a new one.
    let next = (ids[399] + 1..).find(|&id| !secret(id)).unwrap();
    archive.append(next, &message(next)).unwrap();
    let after = archive.segments();
    assert_eq!(after.last().unwrap().first_id, next);
    for s in &after[..after.len() - 1] {
        assert!(hint_of(&s.path).exists());
    }
    // Nothing left to drop: nothing rewritten.
    let again = archive.compact(|id| !secret(id)).unwrap();
    assert_eq!((again.segments_rewritten, again.records_dropped), (0, 0));
    drop(archive);

    let archive = Archive::open(dir.path(), small()).unwrap();
    let mut kept = kept;
    kept.insert(next, message(next));
    assert_eq!(contents(&archive), kept);
    let scan = scan_archive(dir.path(), |_, _, _| {}).unwrap();
    assert_eq!(scan.records, kept.len() as u64);
    assert_eq!(scan.hints, after.len() - 1);
}

#[test]
fn a_reader_sees_each_batch_as_soon_as_append_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    let reader = archive.reader();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u64>>();
    let checker = std::thread::spawn(move || {
        let mut seen = 0;
        for batch in rx {
            let got = reader.get_many(&batch).unwrap();
            for (id, m) in batch.iter().zip(got) {
                assert_eq!(m, Some(message(*id)), "id {id}");
                seen += 1;
            }
            assert!(reader.last_id() >= batch.last().copied());
        }
        seen
    });
    let ids = gapped_ids(2000);
    for chunk in ids.chunks(3) {
        let messages: Vec<_> = chunk.iter().map(|&id| (id, message(id))).collect();
        let refs: Vec<_> = messages.iter().map(|(id, m)| (*id, m)).collect();
        archive.append_batch(&refs).unwrap();
        tx.send(chunk.to_vec()).unwrap();
    }
    drop(tx);
    assert_eq!(checker.join().unwrap(), 2000);
}

#[test]
fn readers_stay_correct_while_the_writer_truncates_and_compacts() {
    fn assert_shareable<T: Send + Sync + Clone + 'static>(_: &T) {}
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    let ids = gapped_ids(600);
    append_all(&mut archive, &ids, 25);
    // Ids up to `stable` are never truncated, and only multiples of 5 are
    // ever erased.
    let stable = ids[300];
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let reader = archive.reader();
            assert_shareable(&reader);
            let (done, ids) = (Arc::clone(&done), ids.clone());
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !done.load(Ordering::Relaxed) || rounds == 0 {
                    let got = reader.get_many(&ids).unwrap();
                    for (&id, m) in ids.iter().zip(got) {
                        match m {
                            Some(m) => assert_eq!(m, message(id), "id {id}"),
                            None => assert!(id > stable || id % 5 == 0, "id {id} missing"),
                        }
                    }
                    let from_range = reader.range(ids[r * 100], stable).count();
                    assert!(from_range > 0);
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    for round in 0..8u64 {
        // Cut after a point and replay what was cut, as a restart does.
        let cut = ids[310 + (round as usize * 37) % 250];
        archive.truncate_after(cut).unwrap();
        let replay: Vec<u64> = ids.iter().copied().filter(|&id| id > cut).collect();
        append_all(&mut archive, &replay, 40);
        if round % 3 == 0 {
            archive
                .compact(|id| !(id.is_multiple_of(5) && id < ids[100] * (round + 1)))
                .unwrap();
        }
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

#[test]
fn an_id_not_above_the_last_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    append_all(&mut archive, &[10, 20, 30], 3);
    let segments = archive.segments();
    let bytes = archive_bytes(dir.path());
    for bad in [vec![31, 40, 40], vec![30], vec![5, 50], vec![50, 45]] {
        let messages: Vec<_> = bad.iter().map(|&id| (id, message(id))).collect();
        let refs: Vec<_> = messages.iter().map(|(id, m)| (*id, m)).collect();
        let err = archive.append_batch(&refs).unwrap_err();
        assert!(matches!(err, Error::IdNotIncreasing { .. }), "{err}");
    }
    assert!(matches!(
        archive.append(30, &message(30)).unwrap_err(),
        Error::IdNotIncreasing { last: 30, got: 30 }
    ));
    assert_eq!(archive.segments(), segments);
    assert_eq!(archive_bytes(dir.path()), bytes);
    assert_eq!(archive.last_id(), Some(30));
    archive.append(31, &message(31)).unwrap();
}

/// Writes a segment file by hand: a header and frames with these ids.
fn handmade_segment(dir: &Path, first_id: u64, ids: &[u64]) -> PathBuf {
    let mut bytes = ArchiveHeader::new(first_id).encode().to_vec();
    for &id in ids {
        encode_frame(
            &mut bytes,
            id,
            0,
            &log_format::events::encode_archived(&message(id)),
        );
    }
    let path = archive_dir(dir).join(log_format::format::archive_file_name(first_id));
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn scan_archive_finds_ids_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(archive_dir(dir.path())).unwrap();
    let path = handmade_segment(dir.path(), 10, &[10, 12, 11]);
    let err = scan_archive(dir.path(), |_, _, _| {}).unwrap_err();
    let c = err.corruption().unwrap();
    assert_eq!(c.file, path);
    assert_eq!(c.index, Some(11));
    assert_eq!(
        c.kind,
        CorruptionKind::OutOfOrder {
            previous: 12,
            got: 11
        }
    );
    assert!(Archive::open(dir.path(), small()).is_err());

    // Across segments: the second starts at or below the first's last id.
    fs::remove_file(&path).unwrap();
    handmade_segment(dir.path(), 10, &[10, 20]);
    let second = handmade_segment(dir.path(), 15, &[15, 30]);
    let c = scan_archive(dir.path(), |_, _, _| {})
        .unwrap_err()
        .corruption()
        .unwrap()
        .clone();
    assert_eq!(c.file, second);
    assert_eq!(
        c.kind,
        CorruptionKind::OutOfOrder {
            previous: 20,
            got: 15
        }
    );
    // A record below its segment's first id.
    fs::remove_file(&second).unwrap();
    let third = handmade_segment(dir.path(), 25, &[24]);
    let c = scan_archive(dir.path(), |_, _, _| {})
        .unwrap_err()
        .corruption()
        .unwrap()
        .clone();
    assert_eq!(c.file, third);
    assert!(matches!(c.kind, CorruptionKind::BelowFirstId { .. }));
}

#[test]
fn scan_archive_checks_hints_and_open_repairs_them() {
    let dir = tempfile::tempdir().unwrap();
    let ids = gapped_ids(200);
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    append_all(&mut archive, &ids, 20);
    let mut seen = Vec::new();
    let scan = scan_archive(dir.path(), |_, id, _| seen.push(id)).unwrap();
    assert_eq!(seen, ids);
    assert_eq!(scan.records, 200);
    assert_eq!(scan.first_id, Some(ids[0]));
    assert_eq!(scan.last_id, ids.last().copied());
    assert_eq!(scan.hints, scan.segments.len() - 1);

    // A stale hint: the one a segment had before compaction rewrote it.
    let victim = archive.segments()[1].clone();
    let old_hint = fs::read(hint_of(&victim.path)).unwrap();
    let dropped = victim.last_id.unwrap();
    archive.compact(|id| id != dropped).unwrap();
    drop(archive);
    fs::write(hint_of(&victim.path), &old_hint).unwrap();
    let err = scan_archive(dir.path(), |_, _, _| {}).unwrap_err();
    let c = err.corruption().unwrap();
    assert_eq!(c.file, hint_of(&victim.path));
    assert!(matches!(c.kind, CorruptionKind::HintMismatch(_)), "{c}");
    assert!(c.in_archive());

    // Open does not trust it: it rebuilds it from the segment.
    let archive = Archive::open(dir.path(), small()).unwrap();
    assert_eq!(archive.reader().get(dropped).unwrap(), None);
    assert_eq!(contents(&archive).len(), 199);
    assert!(scan_archive(dir.path(), |_, _, _| {}).is_ok());
}

#[derive(Debug, Clone)]
enum Op {
    /// Gaps between the new ids.
    Append(Vec<u64>),
    /// Cut after the model's id at this fraction (in 1/256) of its keys.
    TruncateAfter(u8),
    /// Drop ids divisible by this.
    Compact(u64),
    Reopen,
    Sync,
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(1u64..40, 1..30).prop_map(Op::Append),
        2 => any::<u8>().prop_map(Op::TruncateAfter),
        2 => (2u64..9).prop_map(Op::Compact),
        2 => Just(Op::Reopen),
        1 => Just(Op::Sync),
        1 => Just(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn archive_matches_a_map(ops in prop::collection::vec(op(), 1..20)) {
        let dir = tempfile::tempdir().unwrap();
        let config = ArchiveConfig { segment_size: 2048, sparse_every: 128 };
        let mut archive = Archive::open(dir.path(), config.clone()).unwrap();
        let mut model: BTreeMap<u64, ArchivedMessage> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Append(gaps) => {
                    let mut id = model.keys().next_back().copied().unwrap_or(0);
                    let messages: Vec<_> = gaps.iter().map(|g| { id += g; (id, message(id)) }).collect();
                    let refs: Vec<_> = messages.iter().map(|(id, m)| (*id, m)).collect();
                    archive.append_batch(&refs).unwrap();
                    model.extend(messages);
                }
                Op::TruncateAfter(at) => {
                    let keys: Vec<u64> = model.keys().copied().collect();
                    let cut = keys.get(keys.len() * at as usize / 256).copied().unwrap_or(0);
                    archive.truncate_after(cut).unwrap();
                    model.retain(|&id, _| id <= cut);
                }
                Op::Compact(m) => {
                    let report = archive.compact(|id| !id.is_multiple_of(m)).unwrap();
                    let before = model.len();
                    model.retain(|&id, _| !id.is_multiple_of(m));
                    prop_assert_eq!(report.records_dropped, (before - model.len()) as u64);
                }
                Op::Reopen => {
                    drop(archive);
                    archive = Archive::open(dir.path(), config.clone()).unwrap();
                }
                Op::Sync => archive.sync().unwrap(),
                Op::Clear => {
                    archive.clear().unwrap();
                    model.clear();
                }
            }
            prop_assert_eq!(archive.last_id(), model.keys().next_back().copied());
            prop_assert_eq!(&contents(&archive), &model);
            let probe: Vec<u64> = (0..model.keys().next_back().map_or(5, |l| l + 2)).step_by(3).collect();
            let got = archive.reader().get_many(&probe).unwrap();
            let want: Vec<_> = probe.iter().map(|id| model.get(id).cloned()).collect();
            prop_assert_eq!(got, want);
        }
        drop(archive);
        let scan = scan_archive(dir.path(), |_, _, _| {}).unwrap();
        prop_assert_eq!(scan.records, model.len() as u64);
        prop_assert!(scan.torn_tail.is_none());
    }
}

/// Erasing by id rewrites only the segments that can hold those ids, and
/// leaves none of their bytes in any file.
#[test]
fn erase_rewrites_only_the_segments_holding_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let mut archive = Archive::open(dir.path(), small()).unwrap();
    let ids = gapped_ids(400);
    let gone = [ids[3], ids[250], ids[399]];
    let messages: Vec<_> = ids
        .iter()
        .map(|&id| {
            let m = if gone.contains(&id) {
                marked(id, "ERASE-ME")
            } else {
                message(id)
            };
            (id, m)
        })
        .collect();
    for chunk in messages.chunks(13) {
        let refs: Vec<_> = chunk.iter().map(|(id, m)| (*id, m)).collect();
        archive.append_batch(&refs).unwrap();
    }
    let segments = archive.segments().len();
    assert!(segments > 3, "the test needs several segments");
    // An id never stored changes nothing.
    let none = archive.erase(&[ids[10] + 1]).unwrap();
    assert_eq!(none.records_dropped, 0);

    let report = archive
        .erase(&[gone[2], gone[0], gone[1], gone[0]])
        .unwrap();
    assert_eq!(report.records_dropped, 3);
    assert_eq!(report.segments_rewritten, 3, "{report:?}");
    assert!(!contains(&archive_bytes(dir.path()), "ERASE-ME"));
    let kept: BTreeMap<u64, ArchivedMessage> = messages
        .into_iter()
        .filter(|(id, _)| !gone.contains(id))
        .collect();
    assert_eq!(contents(&archive), kept);
    drop(archive);
    let archive = Archive::open(dir.path(), small()).unwrap();
    assert_eq!(contents(&archive), kept);
}
