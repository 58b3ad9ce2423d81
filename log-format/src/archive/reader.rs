//! Reading the archive from any thread while the writer appends, truncates
//! or compacts.
//!
//! A read takes the segment list's lock and one segment's index lock just
//! long enough to turn an id into a byte span (the sparse block that holds
//! it), then reads and scans that span without any lock, so a slow disk
//! never holds up the writer.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::{Segment, SegmentIndex, Shared};
use crate::error::{Corruption, Error, Result};
use crate::events::{ArchivedMessage, decode_archived};
use crate::format::{FrameRead, read_frame};
use crate::scan::damage_of;

/// Bytes a [`ArchiveReader::range`] reads at a time, at least.
const RANGE_CHUNK: u64 = 64 << 10;

/// A cheap, clonable handle that reads the archive concurrently with its
/// writer.
#[derive(Debug, Clone)]
pub struct ArchiveReader {
    shared: Arc<Shared>,
}

/// One sparse block to read for [`ArchiveReader::get_many`].
struct Block {
    segment: Arc<Segment>,
    end: u64,
    /// `(id, position in the answer)`.
    wanted: Vec<(u64, usize)>,
}

impl ArchiveReader {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        ArchiveReader { shared }
    }

    /// The highest id stored.
    pub fn last_id(&self) -> Option<u64> {
        self.shared.last_id()
    }

    /// The record with `id`, or `None` when there is none (never stored,
    /// erased or truncated).
    pub fn get(&self, id: u64) -> Result<Option<ArchivedMessage>> {
        Ok(self.get_many(&[id])?.pop().flatten())
    }

    /// The records with `ids` (in any order), answered in the same order.
    /// Each sparse block is read once, however many of the ids it holds.
    pub fn get_many(&self, ids: &[u64]) -> Result<Vec<Option<ArchivedMessage>>> {
        self.shared.retrying(|| self.try_get_many(ids))
    }

    fn try_get_many(&self, ids: &[u64]) -> Result<Vec<Option<ArchivedMessage>>> {
        let mut out = vec![None; ids.len()];
        // (segment position, block start) -> block
        let mut blocks: BTreeMap<(usize, u64), Block> = BTreeMap::new();
        {
            let segments = self.shared.segments();
            for (pos, &id) in ids.iter().enumerate() {
                let Some(s) = segments
                    .partition_point(|s| s.first_id <= id)
                    .checked_sub(1)
                else {
                    continue;
                };
                let Some((start, end)) = segments[s].index().block_of(id) else {
                    continue;
                };
                blocks
                    .entry((s, start))
                    .or_insert_with(|| Block {
                        segment: Arc::clone(&segments[s]),
                        end,
                        wanted: Vec::new(),
                    })
                    .wanted
                    .push((id, pos));
            }
        }
        for ((_, start), mut block) in blocks {
            block.wanted.sort_unstable();
            let bytes = block.segment.read(start, block.end)?;
            let wanted = &block.wanted;
            let mut next = 0;
            let mut failure = None;
            walk(&block.segment, start, &bytes, |id, payload| {
                while next < wanted.len() && wanted[next].0 < id {
                    next += 1;
                }
                if next < wanted.len() && wanted[next].0 == id {
                    match decode(&block.segment, id, payload) {
                        Ok(message) => {
                            while next < wanted.len() && wanted[next].0 == id {
                                out[wanted[next].1] = Some(message.clone());
                                next += 1;
                            }
                        }
                        Err(e) => {
                            failure = Some(e);
                            return false;
                        }
                    }
                }
                next < wanted.len()
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
        Ok(out)
    }

    /// Every record with `after < id <= up_to`, in id order, read a chunk at
    /// a time as the iterator is consumed. It stops after the first error.
    pub fn range(
        &self,
        after: u64,
        up_to: u64,
    ) -> impl Iterator<Item = Result<(u64, ArchivedMessage)>> + Send + 'static {
        ArchiveRange {
            reader: self.clone(),
            after,
            up_to,
            buffered: VecDeque::new(),
            finished: after >= up_to,
        }
    }

    /// The next records after `after` (at most up to `up_to`): those of the
    /// first chunk that holds any, and whether nothing is left after them.
    fn chunk_after(
        &self,
        after: u64,
        up_to: u64,
    ) -> Result<(VecDeque<(u64, ArchivedMessage)>, bool)> {
        let mut out = VecDeque::new();
        let Some(target) = after.checked_add(1) else {
            return Ok((out, true));
        };
        let mut s = {
            let segments = self.shared.segments();
            segments
                .partition_point(|s| s.first_id <= target)
                .saturating_sub(1)
        };
        loop {
            // Held across the chunks of one segment, so that their offsets
            // stay those of one file even if compaction replaces it.
            let segment = {
                let segments = self.shared.segments();
                match segments.get(s) {
                    Some(segment) if segment.first_id <= up_to => Arc::clone(segment),
                    _ => return Ok((out, true)),
                }
            };
            let mut from = None;
            loop {
                let chunk = {
                    let index = segment.index();
                    chunk_of(&index, target, from).map(|(start, end)| (start, end, index.len))
                };
                let Some((start, end, len)) = chunk else {
                    break;
                };
                let bytes = segment.read(start, end)?;
                let mut finished = false;
                let mut failure = None;
                walk(&segment, start, &bytes, |id, payload| {
                    if id > up_to {
                        finished = true;
                        return false;
                    }
                    if id > after {
                        match decode(&segment, id, payload) {
                            Ok(message) => out.push_back((id, message)),
                            Err(e) => {
                                failure = Some(e);
                                return false;
                            }
                        }
                    }
                    true
                })?;
                if let Some(e) = failure {
                    return Err(e);
                }
                if finished || !out.is_empty() {
                    return Ok((out, finished));
                }
                if end >= len {
                    break;
                }
                from = Some(end);
            }
            s += 1;
        }
    }
}

/// The span to read next in a segment for records from `target` on: from
/// `from` (where the previous chunk ended) or the sparse entry at or before
/// `target`, to the first sparse entry at least [`RANGE_CHUNK`] further.
fn chunk_of(index: &SegmentIndex, target: u64, from: Option<u64>) -> Option<(u64, u64)> {
    let start = match from {
        Some(offset) => offset,
        None => {
            let pos = index.sparse.partition_point(|&(i, _)| i <= target);
            index.sparse.get(pos.saturating_sub(1))?.1
        }
    };
    if start >= index.len {
        return None;
    }
    let end = index
        .sparse
        .iter()
        .map(|e| e.1)
        .find(|&offset| offset >= start + RANGE_CHUNK)
        .unwrap_or(index.len);
    Some((start, end))
}

/// Calls `f(id, payload)` for each frame of `bytes` (read from `segment` at
/// `start`) until it returns false. Damage is a [`Corruption`], which the
/// caller's retry turns into a second attempt if a truncation moved the
/// bytes.
fn walk(
    segment: &Segment,
    start: u64,
    bytes: &[u8],
    mut f: impl FnMut(u64, &[u8]) -> bool,
) -> Result<()> {
    let mut pos = 0;
    while pos < bytes.len() {
        match read_frame(&bytes[pos..]) {
            FrameRead::Frame(frame) => {
                if !f(frame.index, frame.payload) {
                    return Ok(());
                }
                pos += frame.len();
            }
            damaged => {
                return Err(Corruption {
                    file: segment.path.clone(),
                    offset: start + pos as u64,
                    index: None,
                    kind: damage_of(&damaged).expect("not a frame"),
                }
                .into());
            }
        }
    }
    Ok(())
}

fn decode(segment: &Segment, id: u64, payload: &[u8]) -> Result<ArchivedMessage> {
    decode_archived(payload).map_err(|source| Error::ArchiveDecode {
        id,
        path: segment.path.clone(),
        source,
    })
}

/// The iterator of [`ArchiveReader::range`].
struct ArchiveRange {
    reader: ArchiveReader,
    /// The last id handed out (or the range's lower bound).
    after: u64,
    up_to: u64,
    buffered: VecDeque<(u64, ArchivedMessage)>,
    finished: bool,
}

impl Iterator for ArchiveRange {
    type Item = Result<(u64, ArchivedMessage)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((id, message)) = self.buffered.pop_front() {
                self.after = id;
                return Some(Ok((id, message)));
            }
            if self.finished {
                return None;
            }
            let (reader, after, up_to) = (&self.reader, self.after, self.up_to);
            match reader.shared.retrying(|| reader.chunk_after(after, up_to)) {
                Ok((chunk, finished)) => {
                    self.finished = finished || chunk.is_empty();
                    self.buffered = chunk;
                }
                Err(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
