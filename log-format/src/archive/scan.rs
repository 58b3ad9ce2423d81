//! Reading archive segments whole: the one frame walk shared by opening (for
//! the active segment, or a sealed one whose hint is unusable), truncation,
//! compaction and the offline [`scan_archive`].
//!
//! Ids increase strictly within a segment and across segments but have gaps,
//! so what a frame's id can be checked against is the id before it, and the
//! first id its segment's header promises.

use std::fs;
use std::path::{Path, PathBuf};

use super::{ArchiveSegment, SegmentIndex, hint};
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::format::{
    ARCHIVE_DIR, ARCHIVE_HEADER_LEN, ArchiveHeader, DEFAULT_SPARSE_EVERY, FrameRead,
    HINT_EXTENSION, RECORD_HEADER_LEN, TEMP_EXTENSION, parse_archive_file_name, read_frame,
};
use crate::scan::{TornTail, damage_of, torn_reason, valid_frame_after};

/// What [`scan_archive`] found in an archive without corruption.
#[derive(Debug, Clone, Default)]
pub struct ArchiveScan {
    /// The segments, oldest first; `bytes` is the valid length (before a
    /// torn tail).
    pub segments: Vec<ArchiveSegment>,
    pub records: u64,
    pub first_id: Option<u64>,
    pub last_id: Option<u64>,
    /// Hint files that were checked against their segments.
    pub hints: usize,
    /// A partial or damaged record at the end of the last segment (a crash
    /// mid-append); `index` is the id its frame claims, or one past the last
    /// good id when the frame is too short to say.
    pub torn_tail: Option<TornTail>,
    /// Leftovers of an interrupted atomic write (`*.tmp`), removed at the
    /// next open.
    pub stale_temp_files: Vec<PathBuf>,
}

/// The files of an archive directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// `(first id from the name, path)`, by first id.
    pub segments: Vec<(u64, PathBuf)>,
    /// Hint files whose segment does not exist.
    pub orphan_hints: Vec<PathBuf>,
    pub temps: Vec<PathBuf>,
}

pub(crate) fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let mut hints = Vec::new();
    let entries = fs::read_dir(dir).map_err(Error::io("read directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("read directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_id) = parse_archive_file_name(name) {
            listing.segments.push((first_id, entry.path()));
        } else if let Some(segment) = name
            .strip_suffix(HINT_EXTENSION)
            .and_then(|s| s.strip_suffix('.'))
        {
            if parse_archive_file_name(segment).is_some() {
                hints.push((segment.to_string(), entry.path()));
            }
        } else if name.ends_with(&format!(".{TEMP_EXTENSION}")) {
            listing.temps.push(entry.path());
        }
    }
    listing.segments.sort_unstable();
    for (segment, path) in hints {
        if !dir.join(segment).exists() {
            listing.orphan_hints.push(path);
        }
    }
    Ok(listing)
}

/// Checks the header of the segment at `path`, named for `name_id`.
pub(crate) fn check_header(path: &Path, bytes: &[u8], name_id: u64) -> Result<ArchiveHeader> {
    let corrupt = |kind| -> Error {
        Corruption {
            file: path.to_path_buf(),
            offset: 0,
            index: Some(name_id),
            kind,
        }
        .into()
    };
    let header = ArchiveHeader::decode(bytes)
        .map_err(|problem| corrupt(CorruptionKind::BadHeader(problem.to_string())))?;
    if header.first_id != name_id {
        return Err(corrupt(CorruptionKind::NameMismatch {
            name_index: name_id,
            header_index: header.first_id,
        }));
    }
    Ok(header)
}

/// Walks the frames of one whole segment file (`bytes`, header included),
/// calling `visit(id, offset, payload)` for each, and returns its index. The
/// first id must be above `prev_last` (the last id of the segment before).
/// With `allow_torn`, damage with no valid frame after it is a torn tail,
/// returned instead of an error; the index then ends before it.
pub(crate) fn scan_segment(
    path: &Path,
    bytes: &[u8],
    header: &ArchiveHeader,
    prev_last: Option<u64>,
    sparse_every: u32,
    allow_torn: bool,
    mut visit: impl FnMut(u64, u64, &[u8]),
) -> Result<(SegmentIndex, Option<TornTail>)> {
    let mut index = SegmentIndex::empty();
    let mut offset = ARCHIVE_HEADER_LEN;
    let mut previous = prev_last;
    while offset < bytes.len() {
        let read = read_frame(&bytes[offset..]);
        let corrupt = |index: Option<u64>, kind| -> Error {
            Corruption {
                file: path.to_path_buf(),
                offset: offset as u64,
                index,
                kind,
            }
            .into()
        };
        if let FrameRead::Frame(frame) = read {
            if frame.index < header.first_id {
                return Err(corrupt(
                    Some(frame.index),
                    CorruptionKind::BelowFirstId {
                        first_id: header.first_id,
                        got: frame.index,
                    },
                ));
            }
            if let Some(previous) = previous
                && frame.index <= previous
            {
                return Err(corrupt(
                    Some(frame.index),
                    CorruptionKind::OutOfOrder {
                        previous,
                        got: frame.index,
                    },
                ));
            }
            visit(frame.index, offset as u64, frame.payload);
            index.push(frame.index, frame.len() as u64, sparse_every);
            previous = Some(frame.index);
            offset += frame.len();
            continue;
        }
        let damage = damage_of(&read).expect("not a frame");
        let claimed = claimed_id(&bytes[offset..]);
        let later = valid_frame_after(bytes, offset + 1, |id| previous.is_none_or(|p| id > p));
        if !allow_torn || later.is_some() {
            return Err(corrupt(claimed, damage));
        }
        let torn = TornTail {
            file: path.to_path_buf(),
            offset: offset as u64,
            len: (bytes.len() - offset) as u64,
            index: claimed.unwrap_or_else(|| previous.map_or(header.first_id, |p| p + 1)),
            reason: torn_reason(&damage),
        };
        return Ok((index, Some(torn)));
    }
    Ok((index, None))
}

/// The id in a frame's header, when enough of it is there to read.
fn claimed_id(frame: &[u8]) -> Option<u64> {
    let id = frame.get(8..16)?;
    (frame.len() >= RECORD_HEADER_LEN).then(|| u64::from_le_bytes(id.try_into().expect("8 bytes")))
}

/// Scans every segment of `dir/archive` without changing anything: headers,
/// file names, checksums, strictly increasing ids within and across
/// segments, and that each hint file present matches its segment. Calls
/// `visit(segment, id, payload)` for every record in id order. An archive
/// directory that does not exist is an empty archive.
pub fn scan_archive(dir: &Path, mut visit: impl FnMut(&Path, u64, &[u8])) -> Result<ArchiveScan> {
    let dir = dir.join(ARCHIVE_DIR);
    let mut scan = ArchiveScan::default();
    if !dir.is_dir() {
        return Ok(scan);
    }
    let listing = list(&dir)?;
    scan.stale_temp_files = listing.temps;
    let count = listing.segments.len();
    for (pos, (name_id, path)) in listing.segments.iter().enumerate() {
        let bytes = fs::read(path).map_err(Error::io("read archive segment", path))?;
        let header = check_header(path, &bytes, *name_id)?;
        if let Some(previous) = scan.last_id
            && header.first_id <= previous
        {
            return Err(Corruption {
                file: path.clone(),
                offset: 0,
                index: Some(header.first_id),
                kind: CorruptionKind::OutOfOrder {
                    previous,
                    got: header.first_id,
                },
            }
            .into());
        }
        let (index, torn) = scan_segment(
            path,
            &bytes,
            &header,
            scan.last_id,
            DEFAULT_SPARSE_EVERY,
            pos + 1 == count,
            |id, _, payload| visit(path, id, payload),
        )?;
        if let Some(stored) = hint::load(path, header.first_id)? {
            check_hint(path, &bytes, &index, &stored)?;
            scan.hints += 1;
        }
        scan.records += index.records;
        if scan.first_id.is_none() {
            scan.first_id = index.sparse.first().map(|e| e.0);
        }
        scan.last_id = index.last_id.or(scan.last_id);
        scan.torn_tail = torn;
        scan.segments.push(ArchiveSegment {
            path: path.clone(),
            first_id: header.first_id,
            last_id: index.last_id,
            records: index.records,
            bytes: index.len,
        });
    }
    Ok(scan)
}

/// Checks a hint against the segment it describes: its counts and length,
/// and that each sparse entry is the start of a frame carrying its id.
fn check_hint(
    path: &Path,
    bytes: &[u8],
    scanned: &SegmentIndex,
    stored: &SegmentIndex,
) -> Result<()> {
    let mismatch = |why: String| -> Error {
        Corruption {
            file: hint::hint_path(path),
            offset: 0,
            index: stored.sparse.first().map(|e| e.0),
            kind: CorruptionKind::HintMismatch(why),
        }
        .into()
    };
    if stored.len != bytes.len() as u64 {
        return Err(mismatch(format!(
            "it says the segment is {} bytes long, but it is {}",
            stored.len,
            bytes.len()
        )));
    }
    if (stored.records, stored.last_id) != (scanned.records, scanned.last_id) {
        return Err(mismatch(format!(
            "it says {} records up to id {:?}, the segment holds {} up to {:?}",
            stored.records, stored.last_id, scanned.records, scanned.last_id
        )));
    }
    for &(id, offset) in &stored.sparse {
        let at_frame = bytes
            .get(offset as usize..)
            .map(read_frame)
            .is_some_and(|read| matches!(read, FrameRead::Frame(f) if f.index == id));
        if !at_frame {
            return Err(mismatch(format!(
                "its entry for id {id} points at byte {offset}, where that record does not start"
            )));
        }
    }
    Ok(())
}
