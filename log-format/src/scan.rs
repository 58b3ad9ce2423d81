//! Reading a whole log directory without changing it: every header, the
//! chain between segments, and every record's checksum.
//!
//! [`scan_dir`] is shared by recovery at open (which then repairs a torn tail)
//! and by `log-inspect` (which only reports). It tells a torn tail, the normal
//! result of a crash during a write, apart from corruption: a partial or bad
//! record at the very end of the last segment with no valid record after it
//! is a torn tail; any other damage is corruption and ends the scan.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::format::{
    Frame, FrameRead, HeaderProblem, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
    SegmentHeader, TEMP_EXTENSION, parse_segment_file_name, read_frame,
};

/// One sparse index entry is kept for every this many records of a segment.
pub const SPARSE_EVERY: u64 = 32;

/// What the scan learnt about one segment.
#[derive(Debug, Clone)]
pub struct ScannedSegment {
    pub path: PathBuf,
    pub header: SegmentHeader,
    /// Size of the file on disk.
    pub file_len: u64,
    /// End of the last valid record (where the next one goes).
    pub valid_len: u64,
    pub records: u64,
    /// One past the last record's index (`first_index` when empty).
    pub next_index: u64,
    /// CRC of the last record, or the header's `prev_last_crc` when empty;
    /// the next segment's header must carry it.
    pub last_crc: u32,
    /// `(index, byte offset)` of every [`SPARSE_EVERY`]th record.
    pub sparse: Vec<(u64, u64)>,
}

/// A partial or damaged record at the end of the log with nothing valid after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// Where the damaged bytes start; the segment is valid up to here.
    pub offset: u64,
    /// How many damaged bytes follow.
    pub len: u64,
    /// The index the damaged record would have had.
    pub index: u64,
    pub reason: String,
}

/// The result of a scan that found no corruption.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// The log's segments, oldest first.
    pub segments: Vec<ScannedSegment>,
    pub torn_tail: Option<TornTail>,
    /// Files of an atomic create that did not finish (`*.tmp`).
    pub stale_temp_files: Vec<PathBuf>,
    /// Segments older than the newest base segment: what an interrupted
    /// purge left behind.
    pub purge_leftovers: Vec<PathBuf>,
}

impl Scan {
    pub fn log_id(&self) -> Option<u64> {
        self.segments.first().map(|s| s.header.log_id)
    }

    pub fn first_index(&self) -> Option<u64> {
        self.segments.first().map(|s| s.header.first_index)
    }

    pub fn next_index(&self) -> Option<u64> {
        self.segments.last().map(|s| s.next_index)
    }

    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }
}

/// Scans every segment in `dir`, calling `visit` with each valid record in
/// log order, and returns what it found, or the first corruption.
pub fn scan_dir(dir: &Path, mut visit: impl FnMut(&Path, u64, &Frame<'_>)) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut names = list_segments(dir, &mut scan.stale_temp_files)?;
    names.sort_unstable();

    // An interrupted purge of the whole log leaves older segments in front of
    // a new base segment; they are no longer part of the log.
    let mut start = 0;
    for (i, (_, path)) in names.iter().enumerate().rev() {
        if let Ok(header) = read_header(path)
            && header.is_base()
        {
            start = i;
            break;
        }
    }
    scan.purge_leftovers = names[..start].iter().map(|(_, p)| p.clone()).collect();

    let live = &names[start..];
    for (pos, (name_index, path)) in live.iter().enumerate() {
        let is_last = pos + 1 == live.len();
        let bytes = fs::read(path).map_err(Error::io("read segment", path))?;
        let header = SegmentHeader::decode(&bytes).map_err(|problem| Corruption {
            file: path.clone(),
            offset: 0,
            index: Some(*name_index),
            kind: CorruptionKind::BadHeader(problem.to_string()),
        })?;
        if header.first_index != *name_index {
            return Err(Corruption {
                file: path.clone(),
                offset: 0,
                index: Some(*name_index),
                kind: CorruptionKind::NameMismatch {
                    name_index: *name_index,
                    header_index: header.first_index,
                },
            }
            .into());
        }
        if let Some(prev) = scan.segments.last() {
            check_chain(prev, &header, path)?;
        }
        let (segment, torn) = scan_segment(path, header, &bytes, is_last, &mut visit)?;
        scan.torn_tail = torn;
        scan.segments.push(segment);
    }
    Ok(scan)
}

fn check_chain(prev: &ScannedSegment, header: &SegmentHeader, path: &Path) -> Result<()> {
    let corrupt = |kind| -> Error {
        Corruption {
            file: path.to_path_buf(),
            offset: 0,
            index: Some(header.first_index),
            kind,
        }
        .into()
    };
    if header.log_id != prev.header.log_id {
        return Err(corrupt(CorruptionKind::ForeignSegment {
            log_id: header.log_id,
            expected: prev.header.log_id,
        }));
    }
    let prev_last = prev.next_index.wrapping_sub(1);
    if header.first_index != prev.next_index
        || header.prev_last_index != prev_last
        || header.prev_last_crc != prev.last_crc
    {
        return Err(corrupt(CorruptionKind::BrokenChain {
            expected_index: header.prev_last_index,
            expected_crc: header.prev_last_crc,
            got_index: prev_last,
            got_crc: prev.last_crc,
        }));
    }
    Ok(())
}

fn scan_segment(
    path: &Path,
    header: SegmentHeader,
    bytes: &[u8],
    is_last: bool,
    visit: &mut impl FnMut(&Path, u64, &Frame<'_>),
) -> Result<(ScannedSegment, Option<TornTail>)> {
    let mut seg = ScannedSegment {
        path: path.to_path_buf(),
        header,
        file_len: bytes.len() as u64,
        valid_len: SEGMENT_HEADER_LEN as u64,
        records: 0,
        next_index: header.first_index,
        last_crc: header.prev_last_crc,
        sparse: Vec::new(),
    };
    let mut offset = SEGMENT_HEADER_LEN;
    while offset < bytes.len() {
        let expected = seg.next_index;
        let read = read_frame(&bytes[offset..]);
        if let FrameRead::Frame(frame) = read {
            // u64::MAX is never a record's index: the log could not
            // continue after it.
            if frame.index != expected || frame.index == u64::MAX {
                return Err(Corruption {
                    file: path.to_path_buf(),
                    offset: offset as u64,
                    index: Some(expected),
                    kind: CorruptionKind::NotContiguous {
                        expected,
                        got: frame.index,
                    },
                }
                .into());
            }
            if seg.records.is_multiple_of(SPARSE_EVERY) {
                seg.sparse.push((frame.index, offset as u64));
            }
            visit(path, offset as u64, &frame);
            seg.records += 1;
            seg.next_index = frame.index + 1;
            seg.last_crc = frame.crc;
            offset += frame.len();
            seg.valid_len = offset as u64;
            continue;
        }
        let damage = damage_of(&read).expect("not a frame");
        // Records are contiguous, so a genuine later record's index is
        // bounded by how many frames could fit in between.
        let max_index =
            expected.saturating_add(((bytes.len() - offset) / RECORD_HEADER_LEN) as u64);
        let later = valid_frame_after(bytes, offset + 1, |index| {
            (expected..=max_index).contains(&index)
        });
        if !is_last || later.is_some() {
            return Err(Corruption {
                file: path.to_path_buf(),
                offset: offset as u64,
                index: Some(expected),
                kind: damage,
            }
            .into());
        }
        let torn = TornTail {
            file: path.to_path_buf(),
            offset: offset as u64,
            len: (bytes.len() - offset) as u64,
            index: expected,
            reason: torn_reason(&damage),
        };
        return Ok((seg, Some(torn)));
    }
    Ok((seg, None))
}

/// What is wrong with a frame that did not read as one, or `None` for a
/// frame that did.
pub(crate) fn damage_of(read: &FrameRead<'_>) -> Option<CorruptionKind> {
    match *read {
        FrameRead::Frame(_) => None,
        FrameRead::Incomplete { .. } => Some(CorruptionKind::Truncated),
        FrameRead::BadLength { len } => Some(CorruptionKind::BadLength { len }),
        FrameRead::BadChecksum { expected, got } => {
            Some(CorruptionKind::BadChecksum { expected, got })
        }
    }
}

/// How a torn tail's damage is described: as what it is, without the "valid
/// records after it" that makes the same damage corruption.
pub(crate) fn torn_reason(damage: &CorruptionKind) -> String {
    match damage {
        CorruptionKind::Truncated => "record cut short".to_string(),
        CorruptionKind::BadLength { len } => format!("impossible record length {len}"),
        CorruptionKind::BadChecksum { expected, got } => {
            format!("checksum mismatch (expected {expected:#010x}, got {got:#010x})")
        }
        other => other.to_string(),
    }
}

/// The first place at or after `from` where a whole, checksummed frame
/// starts whose index `plausible` accepts. Finding one after a damaged
/// record means the damage is not a torn tail.
pub(crate) fn valid_frame_after(
    bytes: &[u8],
    from: usize,
    plausible: impl Fn(u64) -> bool,
) -> Option<usize> {
    let last_start = bytes.len().checked_sub(RECORD_HEADER_LEN)?;
    (from..=last_start).find(|&p| {
        let len = u32::from_le_bytes(bytes[p..p + 4].try_into().expect("4 bytes"));
        if len > MAX_PAYLOAD_LEN || p + RECORD_HEADER_LEN + len as usize > bytes.len() {
            return false;
        }
        let index = u64::from_le_bytes(bytes[p + 8..p + 16].try_into().expect("8 bytes"));
        plausible(index) && matches!(read_frame(&bytes[p..]), FrameRead::Frame(_))
    })
}

/// Reads and checks one segment's header.
pub fn read_header(path: &Path) -> std::result::Result<SegmentHeader, HeaderProblem> {
    use std::io::Read;
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    let too_short = |len| HeaderProblem::TooShort {
        len,
        need: SEGMENT_HEADER_LEN,
    };
    let mut file = fs::File::open(path).map_err(|_| too_short(0))?;
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(_) => return Err(too_short(got)),
        }
    }
    SegmentHeader::decode(&buf[..got])
}

/// The segment files in `dir` as `(first index, path)`, unsorted; notes
/// leftover temp files in `temps`.
fn list_segments(dir: &Path, temps: &mut Vec<PathBuf>) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(Error::io("read directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("read directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(index) = parse_segment_file_name(name) {
            out.push((index, entry.path()));
        } else if name
            .strip_suffix(TEMP_EXTENSION)
            .and_then(|s| s.strip_suffix('.'))
            .and_then(parse_segment_file_name)
            .is_some()
        {
            temps.push(entry.path());
        }
    }
    Ok(out)
}
