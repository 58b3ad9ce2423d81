//! Hint files: a sealed archive segment's sparse index saved beside it, so
//! that opening the archive reads a few hundred bytes per segment instead of
//! scanning it.
//!
//! A hint file is `<segment>.hint`, written with [`store_framed`]: the
//! [`HINT_MAGIC`] header, then one frame whose index is the segment's first
//! id and whose payload is
//!
//! ```text
//! records u64 | last_id u64 | len u64 | entries u32 | (id u64, offset u64) × entries
//! ```
//!
//! (little-endian), where `len` is the segment's length in bytes when the
//! hint was written. A hint whose `len` is not the segment's length on disk
//! is stale and rebuilt by scanning the segment.

use std::path::{Path, PathBuf};

use super::SegmentIndex;
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::format::{ARCHIVE_HEADER_LEN, HINT_MAGIC, hint_file_name};
use crate::state::{load_framed, store_framed};

/// Bytes of the payload before the entries.
const FIXED_LEN: usize = 28;
/// Bytes of one sparse entry.
const ENTRY_LEN: usize = 16;

/// The hint file of the segment at `segment`.
pub(crate) fn hint_path(segment: &Path) -> PathBuf {
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    segment.with_file_name(hint_file_name(&name))
}

pub(crate) fn encode(index: &SegmentIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(FIXED_LEN + ENTRY_LEN * index.sparse.len());
    out.extend_from_slice(&index.records.to_le_bytes());
    out.extend_from_slice(&index.last_id.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&index.len.to_le_bytes());
    out.extend_from_slice(&(index.sparse.len() as u32).to_le_bytes());
    for (id, offset) in &index.sparse {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
    }
    out
}

/// Decodes a hint payload of a segment starting at `first_id`, checking that
/// it could describe such a segment; the error says what is wrong.
pub(crate) fn decode(payload: &[u8], first_id: u64) -> Result<SegmentIndex, String> {
    if payload.len() < FIXED_LEN {
        return Err(format!("payload of {} bytes is too short", payload.len()));
    }
    let u64_at = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().expect("8 bytes"));
    let records = u64_at(0);
    let last_id = u64_at(8);
    let len = u64_at(16);
    let count = u32::from_le_bytes(payload[24..28].try_into().expect("4 bytes")) as usize;
    if payload.len() != FIXED_LEN + count * ENTRY_LEN {
        return Err(format!(
            "payload of {} bytes does not hold {count} entries",
            payload.len()
        ));
    }
    if records == 0 || count == 0 || count as u64 > records {
        return Err(format!("{records} records with {count} sparse entries"));
    }
    let mut sparse = Vec::with_capacity(count);
    for i in 0..count {
        let at = FIXED_LEN + i * ENTRY_LEN;
        let entry = (u64_at(at), u64_at(at + 8));
        let in_order = sparse
            .last()
            .is_none_or(|&(id, offset)| entry.0 > id && entry.1 > offset);
        if !in_order || entry.0 < first_id || entry.0 > last_id || entry.1 >= len {
            return Err(format!(
                "sparse entry {i} (id {}, offset {}) is out of place",
                entry.0, entry.1
            ));
        }
        sparse.push(entry);
    }
    if sparse[0].1 != ARCHIVE_HEADER_LEN as u64 {
        return Err("the first sparse entry is not the segment's first record".into());
    }
    Ok(SegmentIndex {
        sparse,
        len,
        records,
        last_id: Some(last_id),
    })
}

/// Writes the hint of the segment at `segment` atomically.
pub(crate) fn store(segment: &Path, first_id: u64, index: &SegmentIndex) -> Result<()> {
    store_framed(&hint_path(segment), HINT_MAGIC, first_id, &[&encode(index)])
}

/// Reads the hint of the segment at `segment`: `None` when there is none,
/// a [`Corruption`] naming the hint file when it is damaged or cannot
/// describe the segment.
pub(crate) fn load(segment: &Path, first_id: u64) -> Result<Option<SegmentIndex>> {
    let path = hint_path(segment);
    let Some((index, payload)) = load_framed(&path, HINT_MAGIC, "archive hint file")? else {
        return Ok(None);
    };
    let mismatch = |why: String| -> Error {
        Corruption {
            file: path.clone(),
            offset: 0,
            index: Some(first_id),
            kind: CorruptionKind::HintMismatch(why),
        }
        .into()
    };
    if index != first_id {
        return Err(mismatch(format!(
            "it is the hint of a segment starting at {index}"
        )));
    }
    decode(&payload, first_id).map(Some).map_err(mismatch)
}

/// Removes the hint of the segment at `segment`, if it has one. Returns
/// whether a file was removed (the directory then needs a sync).
pub(crate) fn remove(segment: &Path) -> Result<bool> {
    let path = hint_path(segment);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("remove hint file", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hint_payload_round_trips_and_rejects_nonsense() {
        let index = SegmentIndex {
            sparse: vec![(10, 24), (40, 4200), (95, 8300)],
            len: 9000,
            records: 60,
            last_id: Some(120),
        };
        let bytes = encode(&index);
        assert_eq!(decode(&bytes, 10), Ok(index.clone()));
        // An entry below the header's first id, a short payload, no entries.
        assert!(decode(&bytes, 11).is_err());
        assert!(decode(&bytes[..bytes.len() - 1], 10).is_err());
        let empty = SegmentIndex {
            sparse: Vec::new(),
            ..index.clone()
        };
        assert!(decode(&encode(&empty), 10).is_err());
        // Entries out of order.
        let swapped = SegmentIndex {
            sparse: vec![(10, 24), (95, 4200), (40, 8300)],
            ..index
        };
        assert!(decode(&encode(&swapped), 10).is_err());
    }
}
