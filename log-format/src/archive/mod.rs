//! The message archive: every stored chat message's body, keyed by message
//! id, in segment files of the log's own frames (`DIR/archive/*.arc`).
//!
//! Bodies live on disk and positions in memory: per segment, a sparse index
//! of one `(id, offset)` about every [`ArchiveConfig::sparse_every`] bytes,
//! so a read scans one small block. A sealed segment (every segment but the
//! last, active one) has a hint file holding that index, so opening scans
//! only the active segment.
//!
//! The archive is not fsynced per append: the Raft log is the durable copy
//! until a snapshot, before which the server calls [`Archive::sync`]; at
//! start it cuts what follows the snapshot ([`Archive::truncate_after`]) and
//! replays the log, so the archive is always a function of the log. For the
//! same reason a torn tail is cut without keeping its bytes (the log keeps
//! them as a `.broken` file; here they may hold a message that is later
//! erased, and erasure must leave nothing behind).
//!
//! One [`Archive`] writes; any number of [`ArchiveReader`]s read at the same
//! time from other threads. They share the list of segments; each segment's
//! index sits behind its own lock, taken only to find a block, never across
//! a disk read. Compaction replaces a segment by a new one (new file, new
//! index), so a reader holding the old one reads the old file consistently.

mod hint;
mod reader;
mod scan;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::durable::{create_atomically, sync_dir};
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::events::{ArchivedMessage, encode_archived};
use crate::format::{
    ARCHIVE_DIR, ARCHIVE_HEADER_LEN, ArchiveHeader, DEFAULT_ARCHIVE_SEGMENT_SIZE,
    DEFAULT_SPARSE_EVERY, FrameRead, MAX_PAYLOAD_LEN, archive_file_name, encode_frame, read_frame,
};

pub use self::reader::{ArchiveReader, ScanEnd};
pub use self::scan::{ArchiveScan, scan_archive};

/// How the archive is written.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// A new segment is started once the active one would grow past this.
    pub segment_size: u64,
    /// Spacing in bytes of the sparse index entries: about what a read
    /// scans.
    pub sparse_every: u32,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            segment_size: DEFAULT_ARCHIVE_SEGMENT_SIZE,
            sparse_every: DEFAULT_SPARSE_EVERY,
        }
    }
}

/// One segment as [`Archive::segments`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSegment {
    pub path: PathBuf,
    /// From the header (and file name): no record in it is below this.
    pub first_id: u64,
    pub last_id: Option<u64>,
    pub records: u64,
    /// Length of the segment in bytes, header included.
    pub bytes: u64,
}

/// What [`Archive::compact`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Segments rewritten without dropped records, or deleted because none
    /// was left.
    pub segments_rewritten: usize,
    pub records_dropped: u64,
    /// Bytes of all segments before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// The archive's writer: appends, syncs, truncates, compacts. There is one
/// per open archive; readers are [`ArchiveReader`]s.
#[derive(Debug)]
pub struct Archive {
    /// `DIR/archive`.
    dir: PathBuf,
    config: ArchiveConfig,
    shared: Arc<Shared>,
    /// Whether the last segment takes appends. When it does not (it was
    /// sealed, or there is none), the next append starts a segment.
    active: bool,
    /// Records were written to the active segment since the last sync.
    unsynced: bool,
    /// Set after an I/O failure left the files in an unknown state.
    failed: Option<String>,
}

/// What the writer shares with readers.
#[derive(Debug)]
struct Shared {
    /// Oldest first; every segment holds at least one record, except the
    /// active one for the moment between its creation and its first write.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Odd while a truncation or clear changes bytes in place, bumped again
    /// when it is done: a reader whose read failed retries when it moved.
    reshapes: AtomicU64,
}

/// A segment file and where its records are.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Open for `pread` (and, for the active segment, `pwrite`).
    file: File,
    /// From the header; every record's id is at least this.
    first_id: u64,
    /// Changes as the active segment grows or a truncation cuts it.
    index: RwLock<SegmentIndex>,
}

/// Where a segment's records are: the sparse index and the length readers
/// may read up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// `(id, offset)` of the first record, then of the first record starting
    /// at least `sparse_every` bytes after the previous entry.
    sparse: Vec<(u64, u64)>,
    /// Bytes of whole records, header included; readers never read past it.
    len: u64,
    records: u64,
    last_id: Option<u64>,
}

impl SegmentIndex {
    fn empty() -> Self {
        SegmentIndex {
            sparse: Vec::new(),
            len: ARCHIVE_HEADER_LEN as u64,
            records: 0,
            last_id: None,
        }
    }

    /// Notes a record of `frame_len` bytes appended at the end.
    fn push(&mut self, id: u64, frame_len: u64, sparse_every: u32) {
        let offset = self.len;
        if self
            .sparse
            .last()
            .is_none_or(|&(_, at)| offset >= at + u64::from(sparse_every))
        {
            self.sparse.push((id, offset));
        }
        self.len += frame_len;
        self.records += 1;
        self.last_id = Some(id);
    }

    /// The byte span that holds `id` if the segment does: from the sparse
    /// entry at or before it to the next entry, or the end.
    fn block_of(&self, id: u64) -> Option<(u64, u64)> {
        self.block_bounds(id).map(|(start, end, _)| (start, end))
    }

    /// [`SegmentIndex::block_of`], and the id every id in the block is
    /// below (the next entry's, or one past the last id), so that a reader
    /// going up through ids looks the index up once per block.
    fn block_bounds(&self, id: u64) -> Option<(u64, u64, u64)> {
        let last = self.last_id.filter(|last| id <= *last)?;
        let pos = self.sparse.partition_point(|&(i, _)| i <= id);
        let start = self.sparse.get(pos.checked_sub(1)?)?.1;
        let (end, below) = self
            .sparse
            .get(pos)
            .map_or((self.len, last + 1), |&(i, offset)| (offset, i));
        Some((start, end, below))
    }
}

impl Segment {
    fn index(&self) -> RwLockReadGuard<'_, SegmentIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, SegmentIndex> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    fn describe(&self) -> ArchiveSegment {
        let index = self.index();
        ArchiveSegment {
            path: self.path.clone(),
            first_id: self.first_id,
            last_id: index.last_id,
            records: index.records,
            bytes: index.len,
        }
    }

    /// Reads `span`, or as much of it as the file still holds (a truncation
    /// may have cut it since the span was located).
    fn read(&self, start: u64, end: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_into(start, end, &mut buf)?;
        Ok(buf)
    }

    /// [`Segment::read`] into `buf`, whose allocation is reused.
    fn read_into(&self, start: u64, end: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize((end - start) as usize, 0);
        let mut got = 0;
        while got < buf.len() {
            match self.file.read_at(&mut buf[got..], start + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read archive segment", &self.path)(e)),
            }
        }
        buf.truncate(got);
        Ok(())
    }
}

impl Shared {
    fn segments(&self) -> RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read().unwrap_or_else(|e| e.into_inner())
    }

    fn segments_mut(&self) -> RwLockWriteGuard<'_, Vec<Arc<Segment>>> {
        self.segments.write().unwrap_or_else(|e| e.into_inner())
    }

    fn last_id(&self) -> Option<u64> {
        self.segments().iter().rev().find_map(|s| s.index().last_id)
    }

    /// Runs a read, again if it failed while a reshape changed the files
    /// under it.
    fn retrying<T>(&self, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
        loop {
            let before = self.reshapes.load(Ordering::Acquire);
            let result = attempt();
            if result.is_ok() {
                return result;
            }
            let after = self.reshapes.load(Ordering::Acquire);
            if before.is_multiple_of(2) && before == after {
                return result;
            }
            std::thread::yield_now();
        }
    }

    /// Marks a change of bytes in place until the guard is dropped.
    fn reshape(&self) -> Reshape<'_> {
        self.reshapes.fetch_add(1, Ordering::AcqRel);
        Reshape(&self.reshapes)
    }
}

/// An in-place change in progress; see [`Shared::reshapes`].
struct Reshape<'a>(&'a AtomicU64);

impl Drop for Reshape<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

impl Archive {
    /// Opens (creating if needed) `dir/archive`, `dir` being the data
    /// directory. Sealed segments are loaded from their hint files (a
    /// missing, damaged or stale hint is rebuilt by scanning its segment);
    /// the active segment is scanned, and a torn tail cut from it. Any other
    /// damage is an [`Error::Corrupt`].
    pub fn open(dir: &Path, config: ArchiveConfig) -> Result<Archive> {
        let adir = dir.join(ARCHIVE_DIR);
        if !adir.is_dir() {
            fs::create_dir_all(&adir).map_err(Error::io("create archive directory", &adir))?;
            sync_dir(dir)?;
        }
        let listing = scan::list(&adir)?;
        let mut dir_changed = false;
        for path in listing.temps.iter().chain(&listing.orphan_hints) {
            fs::remove_file(path).map_err(Error::io("remove leftover file", path))?;
            dir_changed = true;
        }

        let mut segments = Vec::with_capacity(listing.segments.len());
        let mut active = false;
        let mut prev_last = None;
        let count = listing.segments.len();
        for (pos, (name_id, path)) in listing.segments.iter().enumerate() {
            let is_last = pos + 1 == count;
            let opened = open_segment(path, *name_id, prev_last, &config, is_last)?;
            dir_changed |= opened.dir_changed;
            let Some(segment) = opened.segment else {
                continue;
            };
            prev_last = segment.index().last_id;
            active = is_last && !opened.sealed;
            segments.push(Arc::new(segment));
        }
        if dir_changed {
            sync_dir(&adir)?;
        }
        Ok(Archive {
            dir: adir,
            config,
            shared: Arc::new(Shared {
                segments: RwLock::new(segments),
                reshapes: AtomicU64::new(0),
            }),
            active,
            unsynced: false,
            failed: None,
        })
    }

    /// `DIR/archive`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The highest id stored.
    pub fn last_id(&self) -> Option<u64> {
        self.shared.last_id()
    }

    /// A handle that reads concurrently with this writer.
    pub fn reader(&self) -> ArchiveReader {
        ArchiveReader::new(Arc::clone(&self.shared))
    }

    pub fn segments(&self) -> Vec<ArchiveSegment> {
        self.shared
            .segments()
            .iter()
            .map(|s| s.describe())
            .collect()
    }

    pub fn append(&mut self, id: u64, message: &ArchivedMessage) -> Result<()> {
        self.append_batch(&[(id, message)])
    }

    /// Appends records in id order, each above [`Archive::last_id`] (else
    /// [`Error::IdNotIncreasing`], and nothing is written). Every record is
    /// readable by every [`ArchiveReader`] when this returns, but not
    /// durable until [`Archive::sync`].
    pub fn append_batch(&mut self, records: &[(u64, &ArchivedMessage)]) -> Result<()> {
        self.check_failed()?;
        let mut last = self.last_id();
        let mut bytes = Vec::new();
        // (id, frame length)
        let mut frames = Vec::with_capacity(records.len());
        for &(id, message) in records {
            if let Some(last) = last
                && id <= last
            {
                return Err(Error::IdNotIncreasing { last, got: id });
            }
            let payload = encode_archived(message);
            if payload.len() > MAX_PAYLOAD_LEN as usize {
                return Err(Error::PayloadTooLarge {
                    index: id,
                    len: payload.len(),
                    max: MAX_PAYLOAD_LEN,
                });
            }
            let start = bytes.len();
            encode_frame(&mut bytes, id, 0, &payload);
            frames.push((id, (bytes.len() - start) as u64));
            last = Some(id);
        }
        let result = self.write_frames(&bytes, &frames);
        self.fail_on_io(result)
    }

    /// Writes encoded frames after the active segment, one `pwrite` per
    /// segment, rolling to a new segment as one fills.
    fn write_frames(&mut self, bytes: &[u8], frames: &[(u64, u64)]) -> Result<()> {
        let limit = self.config.segment_size;
        let mut i = 0;
        let mut at = 0usize;
        while i < frames.len() {
            let segment = self.active_for(frames[i])?;
            let (start_i, start_at) = (i, at);
            let (base, has_records) = {
                let index = segment.index();
                (index.len, index.records > 0)
            };
            let mut len = base;
            // At least one frame, so a record larger than the limit still
            // goes somewhere.
            while i < frames.len() && ((!has_records && i == start_i) || len + frames[i].1 <= limit)
            {
                len += frames[i].1;
                at += frames[i].1 as usize;
                i += 1;
            }
            segment
                .file
                .write_all_at(&bytes[start_at..at], base)
                .map_err(Error::io("write archive segment", &segment.path))?;
            let mut index = segment.index_mut();
            for &(id, frame_len) in &frames[start_i..i] {
                index.push(id, frame_len, self.config.sparse_every);
            }
            self.unsynced = true;
        }
        Ok(())
    }

    /// The segment the frame `(id, len)` goes into: the active one, or a new
    /// one when there is none or the active one is full (it is sealed).
    fn active_for(&mut self, (id, frame_len): (u64, u64)) -> Result<Arc<Segment>> {
        if self.active {
            let last = Arc::clone(self.shared.segments().last().expect("an active segment"));
            let full = {
                let index = last.index();
                index.records > 0 && index.len + frame_len > self.config.segment_size
            };
            if !full {
                return Ok(last);
            }
            self.seal(&last)?;
        }
        let path = self.dir.join(archive_file_name(id));
        let file = create_atomically(&path, &[&ArchiveHeader::new(id).encode()])?;
        let segment = Arc::new(Segment {
            path,
            file,
            first_id: id,
            index: RwLock::new(SegmentIndex::empty()),
        });
        self.shared.segments_mut().push(Arc::clone(&segment));
        self.active = true;
        Ok(segment)
    }

    /// Makes the active segment durable and writes its hint; appends then go
    /// to a new segment.
    fn seal(&mut self, segment: &Segment) -> Result<()> {
        segment
            .file
            .sync_all()
            .map_err(Error::io("sync archive segment", &segment.path))?;
        let index = segment.index().clone();
        hint::store(&segment.path, segment.first_id, &index)?;
        self.active = false;
        self.unsynced = false;
        Ok(())
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<()> {
        self.check_failed()?;
        if !(self.active && self.unsynced) {
            return Ok(());
        }
        let last = Arc::clone(self.shared.segments().last().expect("an active segment"));
        let result = last
            .file
            .sync_data()
            .map_err(Error::io("sync archive segment", &last.path));
        self.fail_on_io(result)?;
        self.unsynced = false;
        Ok(())
    }

    /// Removes every record with an id above `id`, durably: later segments
    /// are deleted, the one holding the cut is truncated and becomes the
    /// active segment.
    pub fn truncate_after(&mut self, id: u64) -> Result<()> {
        self.check_failed()?;
        let result = self.truncate_inner(id);
        self.fail_on_io(result)
    }

    fn truncate_inner(&mut self, id: u64) -> Result<()> {
        let segments = self.shared.segments().clone();
        let keep = segments.partition_point(|s| s.first_id <= id);
        let mut to_remove: Vec<Arc<Segment>> = segments[keep..].to_vec();
        let mut cut = None;
        if let Some(last) = segments[..keep].last()
            && last.index().last_id.is_some_and(|l| l > id)
        {
            match cut_offset(last, id)? {
                Some(offset) => cut = Some((Arc::clone(last), offset)),
                None => to_remove.push(Arc::clone(last)),
            }
        }
        if to_remove.is_empty() && cut.is_none() {
            return Ok(());
        }
        let _reshape = self.shared.reshape();
        {
            let mut list = self.shared.segments_mut();
            list.retain(|s| !to_remove.iter().any(|r| Arc::ptr_eq(r, s)));
        }
        // Newest first, so that a crash part-way leaves a prefix.
        to_remove.sort_by_key(|s| std::cmp::Reverse(s.first_id));
        for segment in &to_remove {
            remove_segment(segment)?;
        }
        if let Some((segment, offset)) = &cut {
            let offset = *offset;
            // The hint goes first, durably: a crash then leaves a segment
            // that is scanned at open, whatever its length.
            if hint::remove(&segment.path)? {
                sync_dir(&self.dir)?;
            }
            let bytes = segment.read(0, offset)?;
            let header = ArchiveHeader::new(segment.first_id);
            let (index, _) = scan::scan_segment(
                &segment.path,
                &bytes,
                &header,
                None,
                self.config.sparse_every,
                false,
                |_, _, _| {},
            )?;
            *segment.index_mut() = index;
            segment
                .file
                .set_len(offset)
                .map_err(Error::io("truncate archive segment", &segment.path))?;
            segment
                .file
                .sync_all()
                .map_err(Error::io("sync archive segment", &segment.path))?;
        }
        // Without a cut, what is left ends with a sealed segment (or
        // nothing): only the last segment is ever active, and it was removed.
        self.active = cut.is_some();
        self.unsynced = false;
        sync_dir(&self.dir)
    }

    /// Removes every record, durably.
    pub fn clear(&mut self) -> Result<()> {
        self.check_failed()?;
        let result = self.clear_inner();
        self.fail_on_io(result)
    }

    fn clear_inner(&mut self) -> Result<()> {
        let _reshape = self.shared.reshape();
        let segments = std::mem::take(&mut *self.shared.segments_mut());
        for segment in segments.iter().rev() {
            remove_segment(segment)?;
        }
        self.active = false;
        self.unsynced = false;
        sync_dir(&self.dir)
    }

    /// Erases every record for which `keep(id)` is false: each segment
    /// holding one is rewritten without it (temporary file, fsync, rename
    /// over, fsync of the directory, new hint), or deleted when nothing is
    /// left. The active segment is sealed first if it holds one. Readers keep
    /// working throughout, on the old file or the new one.
    ///
    /// Every segment is read, since only its frames say which ids it holds.
    pub fn compact(&mut self, mut keep: impl FnMut(u64) -> bool) -> Result<CompactReport> {
        self.check_failed()?;
        let result = self.compact_inner(&mut keep, &|_| true);
        self.fail_on_io(result)
    }

    /// Erases the records with these ids, as [`Archive::compact`] does, but
    /// reads only the segments whose id range could hold one of them: the
    /// cost follows what was erased, not the archive's size. Ids not stored
    /// are ignored.
    pub fn erase(&mut self, ids: &[u64]) -> Result<CompactReport> {
        self.check_failed()?;
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let segments = self.shared.segments().clone();
        // Segment `i` holds ids from its first id up to the next one's.
        let candidate = |pos: usize| {
            let from = segments[pos].first_id;
            let below = segments.get(pos + 1).map_or(u64::MAX, |s| s.first_id);
            let at = sorted.partition_point(|&id| id < from);
            sorted.get(at).is_some_and(|&id| id < below)
        };
        let wanted: Vec<bool> = (0..segments.len()).map(candidate).collect();
        let mut keep = |id: u64| sorted.binary_search(&id).is_err();
        let result = self.compact_inner(&mut keep, &|pos| wanted[pos]);
        self.fail_on_io(result)
    }

    fn compact_inner(
        &mut self,
        keep: &mut dyn FnMut(u64) -> bool,
        read: &dyn Fn(usize) -> bool,
    ) -> Result<CompactReport> {
        let segments = self.shared.segments().clone();
        let mut report = CompactReport {
            bytes_before: segments.iter().map(|s| s.index().len).sum(),
            ..CompactReport::default()
        };
        for (pos, segment) in segments.iter().enumerate() {
            if !read(pos) {
                continue;
            }
            let is_active = self.active && pos + 1 == segments.len();
            let len = segment.index().len;
            let bytes = segment.read(0, len)?;
            let mut kept = Vec::with_capacity(bytes.len());
            kept.extend_from_slice(&ArchiveHeader::new(segment.first_id).encode());
            let mut index = SegmentIndex::empty();
            let mut dropped = 0u64;
            let header = ArchiveHeader::new(segment.first_id);
            let (_, torn) = scan::scan_segment(
                &segment.path,
                &bytes,
                &header,
                None,
                self.config.sparse_every,
                false,
                |id, offset, payload| {
                    if keep(id) {
                        let frame_len = (crate::format::RECORD_HEADER_LEN + payload.len()) as u64;
                        kept.extend_from_slice(
                            &bytes[offset as usize..(offset + frame_len) as usize],
                        );
                        index.push(id, frame_len, self.config.sparse_every);
                    } else {
                        dropped += 1;
                    }
                },
            )?;
            debug_assert!(torn.is_none());
            if dropped == 0 {
                continue;
            }
            if is_active {
                // Appends go to a new segment from here on; this one is
                // rewritten like any sealed segment.
                self.active = false;
                self.unsynced = false;
            }
            report.segments_rewritten += 1;
            report.records_dropped += dropped;
            if index.records == 0 {
                self.shared
                    .segments_mut()
                    .retain(|s| !Arc::ptr_eq(s, segment));
                remove_segment(segment)?;
                sync_dir(&self.dir)?;
                continue;
            }
            // The old hint goes first, durably: a crash before the new one
            // is written leaves a segment without a hint (rebuilt at open),
            // never a hint that describes another file.
            if hint::remove(&segment.path)? {
                sync_dir(&self.dir)?;
            }
            let file = create_atomically(&segment.path, &[&kept])?;
            hint::store(&segment.path, segment.first_id, &index)?;
            let replacement = Arc::new(Segment {
                path: segment.path.clone(),
                file,
                first_id: segment.first_id,
                index: RwLock::new(index),
            });
            let mut list = self.shared.segments_mut();
            if let Some(slot) = list.iter_mut().find(|s| Arc::ptr_eq(s, segment)) {
                *slot = replacement;
            }
        }
        report.bytes_after = self.shared.segments().iter().map(|s| s.index().len).sum();
        Ok(report)
    }

    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(reason) => Err(Error::ArchiveFailed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// An I/O failure part-way through a change leaves the files in an
    /// unknown state: refuse further changes until a restart reopens them.
    fn fail_on_io<T>(&mut self, result: Result<T>) -> Result<T> {
        if let Err(e @ Error::Io { .. }) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }
}

/// A segment found at open, and what opening it did.
struct OpenedSegment {
    /// `None` when the segment held no record and was removed.
    segment: Option<Segment>,
    /// Loaded from a valid hint: it takes no appends.
    sealed: bool,
    dir_changed: bool,
}

/// Opens the segment at `path`: from its hint when it has a valid one,
/// otherwise by scanning it (then a sealed segment's hint is rewritten, and
/// the last segment's torn tail cut and any stale hint removed, since it is
/// the active one).
fn open_segment(
    path: &Path,
    name_id: u64,
    prev_last: Option<u64>,
    config: &ArchiveConfig,
    is_last: bool,
) -> Result<OpenedSegment> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(Error::io("open archive segment", path))?;
    let file_len = file
        .metadata()
        .map_err(Error::io("stat archive segment", path))?
        .len();
    let mut head = [0u8; ARCHIVE_HEADER_LEN];
    let got = file.read_at(&mut head, 0).unwrap_or(0);
    let header = scan::check_header(path, &head[..got], name_id)?;
    if let Some(previous) = prev_last
        && header.first_id <= previous
    {
        return Err(Corruption {
            file: path.to_path_buf(),
            offset: 0,
            index: Some(header.first_id),
            kind: CorruptionKind::OutOfOrder {
                previous,
                got: header.first_id,
            },
        }
        .into());
    }
    let hinted = match hint::load(path, header.first_id) {
        Ok(Some(index)) if index.len == file_len => Some(index),
        Ok(_) | Err(Error::Corrupt(_)) => None,
        Err(e) => return Err(e),
    };
    let mut dir_changed = false;
    let (index, sealed) = match hinted {
        Some(index) => (index, true),
        None => {
            let bytes = fs::read(path).map_err(Error::io("read archive segment", path))?;
            let (index, torn) = scan::scan_segment(
                path,
                &bytes,
                &header,
                prev_last,
                config.sparse_every,
                is_last,
                |_, _, _| {},
            )?;
            if let Some(torn) = torn {
                file.set_len(torn.offset)
                    .map_err(Error::io("cut torn tail of", path))?;
                file.sync_all()
                    .map_err(Error::io("sync archive segment", path))?;
            }
            if is_last {
                dir_changed |= hint::remove(path)?;
            } else if index.records > 0 {
                hint::store(path, header.first_id, &index)?;
            }
            (index, !is_last)
        }
    };
    if index.records == 0 {
        hint::remove(path)?;
        fs::remove_file(path).map_err(Error::io("remove empty archive segment", path))?;
        return Ok(OpenedSegment {
            segment: None,
            sealed,
            dir_changed: true,
        });
    }
    Ok(OpenedSegment {
        segment: Some(Segment {
            path: path.to_path_buf(),
            file,
            first_id: header.first_id,
            index: RwLock::new(index),
        }),
        sealed,
        dir_changed,
    })
}

/// Where the first record above `id` starts in `segment` (which holds one),
/// or `None` when that is its first record.
fn cut_offset(segment: &Segment, id: u64) -> Result<Option<u64>> {
    let (start, end) = {
        let index = segment.index();
        let pos = index.sparse.partition_point(|&(i, _)| i <= id);
        let start = pos
            .checked_sub(1)
            .map_or(ARCHIVE_HEADER_LEN as u64, |p| index.sparse[p].1);
        (start, index.len)
    };
    let bytes = segment.read(start, end)?;
    let mut pos = 0;
    while pos < bytes.len() {
        match read_frame(&bytes[pos..]) {
            FrameRead::Frame(f) if f.index > id => break,
            FrameRead::Frame(f) => pos += f.len(),
            damaged => {
                return Err(Corruption {
                    file: segment.path.clone(),
                    offset: start + pos as u64,
                    index: None,
                    kind: crate::scan::damage_of(&damaged).expect("not a frame"),
                }
                .into());
            }
        }
    }
    let offset = start + pos as u64;
    Ok((offset > ARCHIVE_HEADER_LEN as u64).then_some(offset))
}

/// Deletes a segment and its hint. The hint goes first: a crash between the
/// two leaves a segment without a hint, which open rebuilds, never a hint
/// without its segment.
fn remove_segment(segment: &Segment) -> Result<()> {
    hint::remove(&segment.path)?;
    fs::remove_file(&segment.path).map_err(Error::io("remove archive segment", &segment.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_entries_start_the_segment_then_every_so_many_bytes() {
        let mut index = SegmentIndex::empty();
        for id in [3, 5, 9, 20, 21, 22] {
            index.push(id, 100, 250);
        }
        // Offsets 24, 124, 224, 324, 424, 524: entries at 24 and the first
        // at or past 274 (324), then past 574 (none).
        assert_eq!(index.sparse, vec![(3, 24), (20, 324)]);
        assert_eq!(index.len, 624);
        assert_eq!(index.block_of(3), Some((24, 324)));
        assert_eq!(index.block_of(9), Some((24, 324)));
        assert_eq!(index.block_of(21), Some((324, 624)));
        assert_eq!(index.block_of(2), None);
        assert_eq!(index.block_of(23), None);
        assert_eq!(index.block_bounds(9), Some((24, 324, 20)));
        assert_eq!(index.block_bounds(20), Some((324, 624, 23)));
    }
}
