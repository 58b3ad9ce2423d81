//! Damage at every byte: for a small log of several segments, cut each file
//! at every offset and flip every byte, then open the log. Each case must
//! either recover exactly the valid prefix (a torn tail) or report
//! corruption at the right file and offset, and never yield a record that
//! differs from what was written.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use log_format::format::SEGMENT_HEADER_LEN;
use log_format::{Error, Log, LogConfig, Record};

/// The layout of the intact log: per segment, its path and the byte range
/// and index of each record.
/// A segment's file name and the index and byte range of each record.
type SegmentLayout = (PathBuf, Vec<(u64, Range<u64>)>);

struct Layout {
    segments: Vec<SegmentLayout>,
    records: Vec<Record>,
}

fn config() -> LogConfig {
    LogConfig { segment_size: 160 }
}

/// Fast scratch space: fsync costs nothing on tmpfs, and the sweep opens
/// the log a few thousand times.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

fn build(dir: &Path) -> Layout {
    let records: Vec<Record> = (0..12u64)
        .map(|i| Record {
            index: i,
            term: 1 + i / 5,
            payload: vec![b'a' + i as u8; 10 + (i as usize * 7) % 23],
        })
        .collect();
    let log = Log::open(dir, config()).unwrap().0;
    for chunk in records.chunks(3) {
        log.append(chunk).unwrap();
    }
    drop(log);
    fs::remove_file(dir.join(log_format::LOCK_FILE_NAME)).unwrap();
    let mut segments: Vec<SegmentLayout> = Vec::new();
    log_format::scan_dir(dir, |path, offset, frame| {
        let name = PathBuf::from(path.file_name().unwrap());
        if segments.last().is_none_or(|(p, _)| *p != name) {
            segments.push((name.clone(), Vec::new()));
        }
        let end = offset + frame.len() as u64;
        segments
            .last_mut()
            .unwrap()
            .1
            .push((frame.index, offset..end));
    })
    .unwrap();
    assert!(segments.len() >= 3, "the sweep needs several segments");
    Layout { segments, records }
}

#[derive(Debug, PartialEq)]
enum Expect {
    /// Opens and holds exactly the first `n` records.
    Prefix(usize),
    /// Refuses to open, naming this file and byte offset.
    Corrupt(PathBuf, u64),
}

fn check(case: &str, dir: &Path, layout: &Layout, expect: &Expect) {
    match (Log::open(dir, config()), expect) {
        (Ok((log, _)), Expect::Prefix(n)) => {
            let got = log.read(0..u64::MAX).unwrap();
            assert_eq!(got, layout.records[..*n], "{case}");
        }
        (Err(Error::Corrupt(c)), Expect::Corrupt(file, offset)) => {
            assert_eq!(
                (c.file.file_name().unwrap(), c.offset),
                (file.as_os_str(), *offset),
                "{case}: {c}"
            );
        }
        (Ok((log, _)), expected) => {
            let got = log.read(0..u64::MAX).unwrap();
            // Whatever it returned must be a prefix of what was written.
            assert_eq!(got, layout.records[..got.len()], "{case}");
            panic!(
                "{case}: opened with {} records, expected {expected:?}",
                got.len()
            );
        }
        (Err(e), expected) => panic!("{case}: {e}, expected {expected:?}"),
    }
}

/// Copies the intact log into a fresh directory and damages one file.
fn damaged(intact: &Path, file: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> tempfile::TempDir {
    let dir = scratch();
    for entry in fs::read_dir(intact).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let path = dir.path().join(file);
    let mut bytes = fs::read(&path).unwrap();
    damage(&mut bytes);
    fs::write(&path, bytes).unwrap();
    dir
}

/// Records in segments before `seg`.
fn before(layout: &Layout, seg: usize) -> usize {
    layout.segments[..seg].iter().map(|(_, r)| r.len()).sum()
}

#[test]
fn truncation_at_every_offset() {
    let intact = scratch();
    let layout = build(intact.path());
    let last = layout.segments.len() - 1;
    for (s, (file, recs)) in layout.segments.iter().enumerate() {
        let len = fs::metadata(intact.path().join(file)).unwrap().len();
        for cut in 0..len {
            let expect = if cut < SEGMENT_HEADER_LEN as u64 {
                Expect::Corrupt(file.clone(), 0)
            } else if s == last {
                // Whatever lies wholly before the cut survives.
                let whole = recs.iter().filter(|(_, r)| r.end <= cut).count();
                Expect::Prefix(before(&layout, s) + whole)
            } else if let Some((_, r)) = recs.iter().find(|(_, r)| r.start < cut && cut < r.end) {
                Expect::Corrupt(file.clone(), r.start)
            } else {
                // Cut at a record boundary: the next segment's chain breaks.
                Expect::Corrupt(layout.segments[s + 1].0.clone(), 0)
            };
            let dir = damaged(intact.path(), file, |b| b.truncate(cut as usize));
            check(
                &format!("cut {} at {cut}", file.display()),
                dir.path(),
                &layout,
                &expect,
            );
        }
    }
}

#[test]
fn a_flip_at_every_byte() {
    let intact = scratch();
    let layout = build(intact.path());
    let last = layout.segments.len() - 1;
    for (s, (file, recs)) in layout.segments.iter().enumerate() {
        let len = fs::metadata(intact.path().join(file)).unwrap().len();
        for at in 0..len {
            for mask in [0x01u8, 0x80, 0xff] {
                let expect = if at < SEGMENT_HEADER_LEN as u64 {
                    Expect::Corrupt(file.clone(), 0)
                } else {
                    let (pos, (_, r)) = recs
                        .iter()
                        .enumerate()
                        .find(|(_, (_, r))| r.contains(&at))
                        .expect("every byte after the header is in a record");
                    if s == last && pos == recs.len() - 1 {
                        // Damage in the very last record looks like a torn write.
                        Expect::Prefix(before(&layout, s) + pos)
                    } else {
                        Expect::Corrupt(file.clone(), r.start)
                    }
                };
                let dir = damaged(intact.path(), file, |b| b[at as usize] ^= mask);
                check(
                    &format!("flip {mask:#x} at {} byte {at}", file.display()),
                    dir.path(),
                    &layout,
                    &expect,
                );
            }
        }
    }
}
