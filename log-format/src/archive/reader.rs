//! Reading the archive from any thread while the writer appends, truncates
//! or compacts.
//!
//! A read takes the segment list's lock and one segment's index lock just
//! long enough to turn an id into a byte span (the sparse block that holds
//! it), then reads and scans that span without any lock, so a slow disk
//! never holds up the writer.

use std::collections::{BTreeMap, VecDeque};
use std::ops::{ControlFlow, Range};
use std::sync::Arc;

use super::{Segment, SegmentIndex, Shared};
use crate::error::{Corruption, Error, Result};
use crate::events::{ArchivedMessage, ArchivedMessageRef, decode_archived, decode_archived_ref};
use crate::format::{FrameRead, RECORD_HEADER_LEN, read_frame};
use crate::scan::damage_of;

/// Bytes a [`ArchiveReader::range`] reads at a time, at least.
const RANGE_CHUNK: u64 = 64 << 10;

/// The most bytes one read of [`ArchiveReader::scan_back`] covers (a block
/// larger than this is still read whole).
const SCAN_SPAN: u64 = 256 << 10;

/// Sparse blocks at most this far apart are read by
/// [`ArchiveReader::scan_back`] in one read, with the bytes between them:
/// a few kilobytes more from the page cache (copied and checked) cost
/// about what another system call does; much more costs more.
const SCAN_GAP: u64 = 4 << 10;

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

/// How an [`ArchiveReader::scan_back`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every id was looked at.
    Done,
    /// The visitor broke.
    Stopped,
    /// The read budget ran out: the ids from `next` down were not looked
    /// at, every one above it was.
    OutOfReads { next: u64 },
}

/// One read of [`ArchiveReader::scan_back`]: nearby sparse blocks of one
/// segment, and the ids wanted from them.
struct Span {
    segment: Arc<Segment>,
    start: u64,
    end: u64,
    /// Ascending.
    ids: Vec<u64>,
}

impl ArchiveReader {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        ArchiveReader { shared }
    }

    /// The highest id stored.
    pub fn last_id(&self) -> Option<u64> {
        self.shared.last_id()
    }

    /// An id at or below the lowest one stored: the first id of the oldest
    /// segment (its first records may have been erased since).
    pub fn first_id(&self) -> Option<u64> {
        self.shared.segments().first().map(|s| s.first_id)
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

    /// Hands `visit` the records with `ids` (strictly descending), newest
    /// first and decoded in place, until it breaks or the reads have taken
    /// `read_budget` bytes (counted down); ids not stored are skipped.
    ///
    /// For scans over many records: the sparse blocks that hold the ids
    /// are read in spans of up to 256 KiB, blocks up to 4 KiB apart
    /// together, newest span first, so a run of a conversation's messages
    /// costs a few large reads rather than one per block, and a scan that
    /// stops early reads little past where it stopped. The budget is
    /// checked before each span, so a scan reads at most one span past it.
    /// Every frame read is checked, wanted or not.
    pub fn scan_back(
        &self,
        ids: &[u64],
        read_budget: &mut u64,
        mut visit: impl FnMut(u64, ArchivedMessageRef<'_>) -> ControlFlow<()>,
    ) -> Result<ScanEnd> {
        debug_assert!(ids.windows(2).all(|w| w[0] > w[1]), "ids descending");
        let spans = self.shared.retrying(|| Ok(self.spans(ids)))?;
        let mut bytes = Vec::new();
        let mut found: Vec<(u64, Range<usize>)> = Vec::new();
        for span in spans.iter().rev() {
            if *read_budget == 0 {
                let newest = *span.ids.last().expect("a span holds an id");
                return Ok(ScanEnd::OutOfReads { next: newest });
            }
            *read_budget = read_budget.saturating_sub(span.end - span.start);
            self.shared
                .retrying(|| read_span(span, &mut bytes, &mut found))?;
            for (id, at) in found.iter().rev() {
                let message = decode_archived_ref(&bytes[at.clone()]).map_err(|source| {
                    Error::ArchiveDecode {
                        id: *id,
                        path: span.segment.path.clone(),
                        source,
                    }
                })?;
                if visit(*id, message).is_break() {
                    return Ok(ScanEnd::Stopped);
                }
            }
        }
        Ok(ScanEnd::Done)
    }

    /// The spans [`ArchiveReader::scan_back`] reads for `ids` (descending),
    /// oldest first.
    fn spans(&self, ids: &[u64]) -> Vec<Span> {
        let segments = self.shared.segments();
        let mut spans: Vec<(usize, Span)> = Vec::new();
        // The block of the last id: (segment, start, end, ids below this).
        let mut block = None;
        for &id in ids.iter().rev() {
            let (s, start, end) = match block {
                Some((s, start, end, below)) if id < below => (s, start, end),
                _ => {
                    let Some(s) = segments
                        .partition_point(|s| s.first_id <= id)
                        .checked_sub(1)
                    else {
                        continue;
                    };
                    let Some((start, end, below)) = segments[s].index().block_bounds(id) else {
                        continue;
                    };
                    block = Some((s, start, end, below));
                    (s, start, end)
                }
            };
            // Ids ascend, so a block is either one the last span holds
            // already or one after it.
            let joins = |at: usize, span: &Span| {
                at == s
                    && (start < span.end
                        || (start <= span.end + SCAN_GAP && end - span.start <= SCAN_SPAN))
            };
            match spans.last_mut() {
                Some((at, span)) if joins(*at, span) => {
                    span.end = span.end.max(end);
                    span.ids.push(id);
                }
                _ => spans.push((
                    s,
                    Span {
                        segment: Arc::clone(&segments[s]),
                        start,
                        end,
                        ids: vec![id],
                    },
                )),
            }
        }
        spans.into_iter().map(|(_, span)| span).collect()
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

/// Reads `span` into `bytes` and puts in `found` where each of its wanted
/// records' payloads is, in id order.
fn read_span(span: &Span, bytes: &mut Vec<u8>, found: &mut Vec<(u64, Range<usize>)>) -> Result<()> {
    span.segment.read_into(span.start, span.end, bytes)?;
    found.clear();
    let wanted = &span.ids;
    let mut next = 0;
    let mut pos = 0;
    walk(&span.segment, span.start, bytes, |id, payload| {
        // Where this frame's payload sits in `bytes`: it ends the frame,
        // which starts at `pos`.
        let frame_end = pos + RECORD_HEADER_LEN + payload.len();
        while next < wanted.len() && wanted[next] < id {
            next += 1;
        }
        if next < wanted.len() && wanted[next] == id {
            found.push((id, frame_end - payload.len()..frame_end));
            next += 1;
        }
        pos = frame_end;
        next < wanted.len()
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Archive, ArchiveConfig};
    use crate::events::{AccountId, ConversationId};

    /// Appends `n` messages of about 130 bytes on disk, ids 1000 apart.
    fn archive_of(dir: &std::path::Path, n: u64) -> Archive {
        let mut archive = Archive::open(dir, ArchiveConfig::default()).unwrap();
        let messages: Vec<(u64, ArchivedMessage)> = (1..=n)
            .map(|i| {
                let m = ArchivedMessage {
                    conversation: ConversationId(i % 5),
                    from: AccountId(7),
                    at_ms: i,
                    body: format!("{i:08} {}", "y".repeat(91)),
                };
                (i * 1000, m)
            })
            .collect();
        let refs: Vec<_> = messages.iter().map(|(id, m)| (*id, m)).collect();
        archive.append_batch(&refs).unwrap();
        archive
    }

    #[test]
    fn spans_join_nearby_blocks_up_to_the_span_size() {
        let dir = tempfile::tempdir().unwrap();
        let archive = archive_of(dir.path(), 20_000);
        let bytes: u64 = archive.segments().iter().map(|s| s.bytes).sum();
        let reader = archive.reader();
        let all: Vec<u64> = (1..=20_000).rev().map(|i| i * 1000).collect();
        let spans = reader.spans(&all);
        assert!(
            spans.len() as u64 <= bytes.div_ceil(SCAN_SPAN - 8192) + 1,
            "{} spans over {bytes} bytes",
            spans.len()
        );
        assert_eq!(archive.segments().len(), 1);
        assert!(spans.windows(2).all(|w| w[0].end <= w[1].start));
        assert!(spans.iter().all(|s| s.end - s.start <= SCAN_SPAN));
        assert_eq!(spans.iter().map(|s| s.ids.len()).sum::<usize>(), 20_000);

        // A conversation among five: its blocks are near enough to be read
        // through; one among a thousand: far apart, read one by one.
        let one_in_five: Vec<u64> = all.iter().copied().step_by(5).collect();
        assert_eq!(reader.spans(&one_in_five).len(), spans.len());
        let one_in_1000: Vec<u64> = all.iter().copied().step_by(1000).collect();
        let sparse = reader.spans(&one_in_1000);
        assert_eq!(sparse.len(), 20);
        assert!(sparse.iter().all(|s| s.end - s.start <= 8192));
    }
}
