//! The checks behind the fuzz targets, as plain functions.
//!
//! The libFuzzer targets in `fuzz_targets/` (nightly, `cargo fuzz run`) and the
//! deterministic sweep in this crate's tests (stable, `cargo test`) call the
//! same functions, so every invariant here is exercised on both toolchains.
//! A check that fails panics; a panic inside `log-format` is a failure too.

#![forbid(unsafe_code)]

use std::fs;
use std::path::Path;

use log_format::events::{self, LogEntry};
use log_format::format::{
    self, FrameRead, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader,
};
use log_format::{CorruptionKind, Error, SPARSE_EVERY, scan_dir};

#[cfg(test)]
mod tests;

/// Mode bit: put a valid base segment header in front of the body, so that
/// the fuzzer spends its time on record frames rather than on the header's
/// checksum.
pub const MODE_HEADER: u8 = 1;
/// Mode bit (with [`MODE_HEADER`]): take the header's first index from the
/// next 8 body bytes and name the file after it, so that indexes far from 0
/// (up to `u64::MAX`) are reached without a name mismatch.
pub const MODE_ANY_FIRST_INDEX: u8 = 2;
/// Mode bit: rewrite the CRC of every whole frame after the header, so that
/// the fuzzer reaches index, contiguity and torn-tail logic without having to
/// solve CRC-32.
pub const MODE_SEAL: u8 = 4;

/// The log id of the headers the harness writes.
pub const FUZZ_LOG_ID: u64 = 0x00f0_22ed;

/// A segment file to scan: its name in the log directory and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl SegmentFile {
    /// Shapes a fuzz input into a segment file.
    ///
    /// The first byte is a set of `MODE_*` bits; the rest is the body. Without
    /// [`MODE_HEADER`] the body is the whole file, named
    /// `00000000000000000000.log`.
    pub fn from_fuzz_input(data: &[u8]) -> Self {
        let (mode, mut body) = match data.split_first() {
            Some((&mode, body)) => (mode, body),
            None => (0, data),
        };
        let mut first_index = 0;
        let mut bytes = Vec::with_capacity(SEGMENT_HEADER_LEN + body.len());
        if mode & MODE_HEADER != 0 {
            if mode & MODE_ANY_FIRST_INDEX != 0
                && let Some((index, rest)) = body.split_first_chunk::<8>()
            {
                first_index = u64::from_le_bytes(*index);
                body = rest;
            }
            bytes.extend_from_slice(&SegmentHeader::base(FUZZ_LOG_ID, first_index).encode());
        }
        bytes.extend_from_slice(body);
        if mode & MODE_SEAL != 0 && bytes.len() > SEGMENT_HEADER_LEN {
            seal_frames(&mut bytes[SEGMENT_HEADER_LEN..]);
        }
        SegmentFile {
            name: format::segment_file_name(first_index),
            bytes,
        }
    }
}

/// Rewrites the CRC of each whole frame from the front of `frames`, stopping
/// at the first frame whose length is impossible or runs past the end.
pub fn seal_frames(frames: &mut [u8]) {
    let mut at = 0;
    while frames.len() - at >= RECORD_HEADER_LEN {
        let len = u32_at(frames, at);
        if len > MAX_PAYLOAD_LEN {
            return;
        }
        let end = at + RECORD_HEADER_LEN + len as usize;
        if end > frames.len() {
            return;
        }
        let crc = format::frame_crc(
            u64_at(frames, at + 8),
            u64_at(frames, at + 16),
            &frames[at + RECORD_HEADER_LEN..end],
        );
        frames[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

/// How a scan of one segment ended; the sweep counts these to show that it
/// reached each outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Every byte after the header is a valid record.
    Clean { records: u64 },
    /// Valid records, then a torn tail.
    Torn { records: u64 },
    /// Corruption, after `records` valid records were visited.
    Corrupt { records: u64, kind: CorruptionKind },
}

/// The `segment_reader` target: shapes `data` with
/// [`SegmentFile::from_fuzz_input`], checks [`check_segment_file`] on it, and
/// checks [`check_read_frame`] on the raw input and on the record area.
pub fn check_segment(data: &[u8]) -> ScanOutcome {
    check_read_frame(data);
    let file = SegmentFile::from_fuzz_input(data);
    if let Some(records) = file.bytes.get(SEGMENT_HEADER_LEN..) {
        check_read_frame(records);
    }
    check_segment_file(&file)
}

/// A record the scan handed to its visitor.
struct Visited {
    offset: u64,
    index: u64,
    crc: u32,
    len: u64,
}

/// Writes `file` alone into a fresh directory, scans it with [`scan_dir`]
/// and checks what the scan reports against the bytes.
pub fn check_segment_file(file: &SegmentFile) -> ScanOutcome {
    let dir = scratch_dir();
    let path = dir.path().join(&file.name);
    fs::write(&path, &file.bytes).expect("write the segment file");
    let bytes = &file.bytes[..];
    let file_len = bytes.len() as u64;
    let header = SegmentHeader::decode(bytes).ok();

    let mut visited: Vec<Visited> = Vec::new();
    let result = scan_dir(dir.path(), |seen, offset, frame| {
        assert_eq!(seen, path, "record from a file that was not written");
        let header = header.expect("a record visited in a segment whose header does not decode");
        let crc = format::frame_crc(frame.index, frame.term, frame.payload);
        assert_eq!(crc, frame.crc, "record {} has a bad CRC", frame.index);
        let expected = match visited.last() {
            Some(prev) => {
                assert_eq!(
                    offset,
                    prev.offset + prev.len,
                    "records are not back to back"
                );
                // Indexes go up by one and never wrap: no record follows u64::MAX.
                prev.index
                    .checked_add(1)
                    .expect("a record was accepted after index u64::MAX")
            }
            None => {
                assert_eq!(
                    offset, SEGMENT_HEADER_LEN as u64,
                    "first record not after header"
                );
                header.first_index
            }
        };
        assert_eq!(frame.index, expected, "indexes are not contiguous");
        // The frame is the one on disk at that offset.
        let at = usize::try_from(offset).expect("offset fits usize");
        assert!(at <= bytes.len(), "record offset {offset} past the end");
        assert_eq!(
            read_frame_at(bytes, at),
            Some(*frame),
            "record differs from the file"
        );
        visited.push(Visited {
            offset,
            index: frame.index,
            crc: frame.crc,
            len: frame.len() as u64,
        });
    });
    let records = visited.len() as u64;
    let valid_end = visited
        .last()
        .map_or(SEGMENT_HEADER_LEN as u64, |v| v.offset + v.len);

    match result {
        Ok(scan) => {
            let header = header.expect("a scan succeeded on a header that does not decode");
            assert_eq!(scan.segments.len(), 1, "one file, one segment");
            let seg = &scan.segments[0];
            assert_eq!(seg.path, path);
            assert_eq!(seg.header, header);
            assert_eq!(seg.file_len, file_len);
            assert!(
                seg.valid_len <= seg.file_len,
                "valid_len past the end of the file"
            );
            assert_eq!(
                seg.valid_len, valid_end,
                "valid_len is not the end of the last record"
            );
            assert_eq!(seg.records, records);
            let next_index = header
                .first_index
                .checked_add(records)
                .expect("a clean scan whose next index does not fit in u64");
            assert_eq!(seg.next_index, next_index);
            assert_eq!(
                seg.last_crc,
                visited.last().map_or(header.prev_last_crc, |v| v.crc)
            );
            let sparse: Vec<(u64, u64)> = visited
                .iter()
                .step_by(SPARSE_EVERY as usize)
                .map(|v| (v.index, v.offset))
                .collect();
            assert_eq!(
                seg.sparse, sparse,
                "sparse index is not every {SPARSE_EVERY}th record"
            );
            assert!(scan.stale_temp_files.is_empty());
            assert!(scan.purge_leftovers.is_empty());
            match &scan.torn_tail {
                None => {
                    assert_eq!(
                        seg.valid_len, file_len,
                        "bytes left over without a torn tail"
                    );
                    ScanOutcome::Clean { records }
                }
                Some(torn) => {
                    assert_eq!(torn.file, path);
                    assert_eq!(
                        torn.offset, seg.valid_len,
                        "torn tail does not start at valid_len"
                    );
                    assert!(torn.len > 0, "empty torn tail");
                    assert_eq!(
                        torn.offset + torn.len,
                        file_len,
                        "torn tail does not reach the end"
                    );
                    assert_eq!(torn.index, seg.next_index);
                    ScanOutcome::Torn { records }
                }
            }
        }
        Err(Error::Corrupt(c)) => {
            assert_eq!(c.file, path, "corruption names another file");
            assert!(
                c.offset < file_len.max(1),
                "corruption at byte {} of a {file_len}-byte file",
                c.offset
            );
            match &c.kind {
                CorruptionKind::BadHeader(_) | CorruptionKind::NameMismatch { .. } => {
                    assert_eq!(c.offset, 0, "header damage not at byte 0");
                    assert_eq!(records, 0, "records visited in a segment with a bad header");
                }
                CorruptionKind::BadChecksum { .. }
                | CorruptionKind::BadLength { .. }
                | CorruptionKind::Truncated
                | CorruptionKind::NotContiguous { .. } => {
                    let header =
                        header.expect("record damage behind a header that does not decode");
                    assert_eq!(
                        c.offset, valid_end,
                        "damage not right after the last valid record"
                    );
                    assert_eq!(c.index, header.first_index.checked_add(records));
                }
                CorruptionKind::ForeignSegment { .. } | CorruptionKind::BrokenChain { .. } => {
                    panic!("chain corruption in a log of one segment: {c}")
                }
            }
            ScanOutcome::Corrupt {
                records,
                kind: c.kind.clone(),
            }
        }
        Err(other) => panic!("scan failed with something other than corruption: {other}"),
    }
}

/// Checks [`format::read_frame`] on the front of `buf` against the bytes.
pub fn check_read_frame(buf: &[u8]) {
    match format::read_frame(buf) {
        FrameRead::Frame(frame) => {
            assert!(frame.len() <= buf.len());
            let len = u32_at(buf, 0) as usize;
            assert_eq!(
                frame.payload,
                &buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len]
            );
            assert_eq!(frame.crc, u32_at(buf, 4));
            assert_eq!(frame.index, u64_at(buf, 8));
            assert_eq!(frame.term, u64_at(buf, 16));
            assert_eq!(
                format::frame_crc(frame.index, frame.term, frame.payload),
                frame.crc,
                "a frame with a bad CRC was accepted"
            );
        }
        FrameRead::Incomplete { needed } => {
            assert!(
                needed > buf.len(),
                "incomplete, yet {needed} of {} bytes are there",
                buf.len()
            );
        }
        FrameRead::BadLength { len } => {
            assert!(len > MAX_PAYLOAD_LEN);
            assert_eq!(len, u32_at(buf, 0));
        }
        FrameRead::BadChecksum { expected, got } => {
            assert_ne!(expected, got);
            assert_eq!(expected, u32_at(buf, 4));
            let len = u32_at(buf, 0) as usize;
            let payload = &buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
            assert_eq!(
                got,
                format::frame_crc(u64_at(buf, 8), u64_at(buf, 16), payload)
            );
        }
    }
}

/// The `events_decode` target: decoding any bytes never panics, and a decoded
/// entry encodes to bytes that decode to the same entry. Returns the entry.
pub fn check_events_decode(data: &[u8]) -> Option<LogEntry> {
    let entry = events::decode(data).ok()?;
    let bytes = events::encode(&entry);
    match events::decode(&bytes) {
        Ok(again) => assert_eq!(again, entry, "encode then decode changed the entry"),
        Err(e) => panic!("a decoded entry does not decode after encoding: {e}"),
    }
    Some(entry)
}

fn read_frame_at(bytes: &[u8], at: usize) -> Option<format::Frame<'_>> {
    match format::read_frame(&bytes[at..]) {
        FrameRead::Frame(frame) => Some(frame),
        _ => None,
    }
}

/// A fresh directory, on tmpfs where there is one: the fuzzer writes a file
/// for every input.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("create a temporary directory")
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
