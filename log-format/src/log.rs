//! The live log: recovery at open, group-committed appends, reads by index,
//! and the two operations Raft needs to reshape it (truncate and purge).
//!
//! [`Log`] is a cheap handle around shared state. Appends are made in two
//! steps so that a caller (Raft) can queue entries without waiting: [`Log::submit`]
//! checks and queues records and returns a [`Ticket`]; [`Log::wait`] returns
//! once they are on disk. Whichever waiting thread finds no write in progress
//! becomes the writer for everything queued so far: one `write` per segment
//! and one `fdatasync`, after which every waiter it covered is released. So
//! concurrent appenders share fsyncs, and nobody is told "done" before theirs.
//!
//! Records that are queued or being written are already readable (from
//! memory), because Raft may replicate an entry before it is flushed locally.

use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::durable::{
    create_atomically, create_atomically_with, cut_torn_tail, lock_dir, sync_dir,
};
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::format::{
    DEFAULT_SEGMENT_SIZE, FrameRead, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, Record,
    SEGMENT_HEADER_LEN, SegmentHeader, encode_frame, read_frame, segment_file_name,
};
use crate::scan::{SPARSE_EVERY, TornTail, scan_dir};

/// How the log is written.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A new segment is started once the current one would grow past this.
    pub segment_size: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// What [`Log::open`] found and did.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Records in the log after recovery.
    pub records: u64,
    pub first_index: u64,
    pub next_index: u64,
    pub segments: usize,
    /// The torn tail that was cut off, if the last run crashed mid-write.
    pub torn_tail: Option<TornTail>,
    /// Where the cut-off bytes were saved.
    pub broken_file: Option<PathBuf>,
    /// Leftovers of interrupted operations that were removed.
    pub removed: Vec<PathBuf>,
}

/// Says when a submitted batch is durable; pass it to [`Log::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "records are not durable until the ticket has been waited on"]
pub struct Ticket(u64);

/// A handle to an open log. Clones share the log.
#[derive(Debug, Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    config: LogConfig,
    log_id: u64,
    state: Mutex<State>,
    /// Signalled whenever a write, truncate or purge finishes.
    changed: Condvar,
    /// Held (locked) for as long as the log is open.
    _lock: File,
}

#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of valid data, header included; the next record goes here.
    len: u64,
    next_index: u64,
    last_crc: u32,
    /// `(index, offset)` of every `SPARSE_EVERY`th record.
    sparse: Vec<(u64, u64)>,
}

/// Encoded frames waiting to be written, contiguous by index.
#[derive(Debug, Default)]
struct Batch {
    bytes: Vec<u8>,
    frames: Vec<PendingFrame>,
}

#[derive(Debug, Clone, Copy)]
struct PendingFrame {
    index: u64,
    term: u64,
    start: usize,
    len: usize,
    crc: u32,
}

#[derive(Debug)]
struct State {
    segments: Vec<Segment>,
    /// Queued, not yet handed to a writer.
    pending: Batch,
    /// Being written right now (readable from memory until it is in a file).
    inflight: Option<Arc<Batch>>,
    /// The index the next submitted record must have.
    next_index: u64,
    /// Records below this index are in segment files.
    written_index: u64,
    /// Sequence number of the last submitted batch.
    submitted: u64,
    /// Every batch up to this sequence number is durable.
    durable: u64,
    /// A thread is writing; others wait on `changed`.
    writing: bool,
    /// Set after an I/O failure left the files in an unknown state.
    failed: Option<String>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn record(&self, index: u64) -> Option<Record> {
        let first = self.frames.first()?.index;
        let f = self.frames.get(index.checked_sub(first)? as usize)?;
        Some(Record {
            index: f.index,
            term: f.term,
            payload: self.bytes[f.start + RECORD_HEADER_LEN..f.start + f.len].to_vec(),
        })
    }
}

impl Log {
    /// Opens the log in `dir`, creating it if it does not exist, and recovers
    /// from a crash: a torn tail is saved to a `.broken` file and cut off.
    /// Any other damage fails with [`Error::Corrupt`].
    pub fn open(dir: &Path, config: LogConfig) -> Result<(Log, OpenReport)> {
        fs::create_dir_all(dir).map_err(Error::io("create log directory", dir))?;
        let lock = lock_dir(dir)?;
        let scan = scan_dir(dir, |_, _, _| {})?;
        let mut report = OpenReport::default();

        let mut removed_any = false;
        for path in scan.stale_temp_files.iter().chain(&scan.purge_leftovers) {
            fs::remove_file(path).map_err(Error::io("remove leftover file", path))?;
            report.removed.push(path.clone());
            removed_any = true;
        }
        if let Some(torn) = &scan.torn_tail {
            report.broken_file = Some(cut_torn_tail(torn)?);
            report.torn_tail = Some(torn.clone());
            removed_any = true;
        }
        if removed_any {
            sync_dir(dir)?;
        }

        let (log_id, segments) = if scan.segments.is_empty() {
            let log_id = new_log_id();
            let seg = create_segment(dir, SegmentHeader::base(log_id, 0))?;
            (log_id, vec![seg])
        } else {
            let log_id = scan.log_id().expect("segments exist");
            let mut segments = Vec::with_capacity(scan.segments.len());
            for s in scan.segments {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&s.path)
                    .map_err(Error::io("open segment", &s.path))?;
                segments.push(Segment {
                    first_index: s.header.first_index,
                    path: s.path,
                    file: Arc::new(file),
                    len: s.valid_len,
                    next_index: s.next_index,
                    last_crc: s.last_crc,
                    sparse: s.sparse,
                });
            }
            (log_id, segments)
        };

        let next_index = segments.last().expect("a segment").next_index;
        report.first_index = segments[0].first_index;
        report.next_index = next_index;
        report.records = next_index - report.first_index;
        report.segments = segments.len();
        let state = State {
            segments,
            pending: Batch::default(),
            inflight: None,
            next_index,
            written_index: next_index,
            submitted: 0,
            durable: 0,
            writing: false,
            failed: None,
        };
        let log = Log {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                config,
                log_id,
                state: Mutex::new(state),
                changed: Condvar::new(),
                _lock: lock,
            }),
        };
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Index of the oldest record still in the log.
    pub fn first_index(&self) -> u64 {
        self.lock().segments[0].first_index
    }

    /// Index the next appended record must have (one past the last record).
    pub fn next_index(&self) -> u64 {
        self.lock().next_index
    }

    /// One past the last record that is on disk: written and synced.
    pub fn durable_next_index(&self) -> u64 {
        self.lock().written_index
    }

    /// Appends `records` and returns once they are durable.
    pub fn append(&self, records: &[Record]) -> Result<()> {
        let ticket = self.submit(records)?;
        self.wait(ticket)
    }

    /// Appends one record per payload at the next free indexes and returns
    /// the indexes used, once they are durable.
    pub fn append_payloads<P: AsRef<[u8]>>(&self, term: u64, payloads: &[P]) -> Result<Range<u64>> {
        let (range, ticket) = {
            let mut st = self.lock();
            let start = st.next_index;
            let ticket = self.enqueue(
                &mut st,
                payloads
                    .iter()
                    .zip(start..)
                    .map(|(p, index)| (index, term, p.as_ref())),
            )?;
            (start..st.next_index, ticket)
        };
        self.wait(ticket)?;
        Ok(range)
    }

    /// Checks and queues `records` (which must continue the log) without
    /// waiting for the disk. They are readable at once.
    pub fn submit(&self, records: &[Record]) -> Result<Ticket> {
        let mut st = self.lock();
        self.enqueue(
            &mut st,
            records
                .iter()
                .map(|r| (r.index, r.term, r.payload.as_slice())),
        )
    }

    fn enqueue<'a>(
        &self,
        st: &mut State,
        records: impl Iterator<Item = (u64, u64, &'a [u8])> + Clone,
    ) -> Result<Ticket> {
        if let Some(reason) = &st.failed {
            return Err(Error::Failed {
                reason: reason.clone(),
            });
        }
        // Check the whole batch before queueing any of it.
        let mut expected = st.next_index;
        for (index, _, payload) in records.clone() {
            if index != expected || index == u64::MAX {
                return Err(Error::NotContiguous {
                    expected,
                    got: index,
                });
            }
            if payload.len() > MAX_PAYLOAD_LEN as usize {
                return Err(Error::PayloadTooLarge {
                    index,
                    len: payload.len(),
                    max: MAX_PAYLOAD_LEN,
                });
            }
            expected += 1;
        }
        if expected == st.next_index {
            return Ok(Ticket(st.durable.max(st.submitted)));
        }
        for (index, term, payload) in records {
            let start = st.pending.bytes.len();
            let crc = encode_frame(&mut st.pending.bytes, index, term, payload);
            st.pending.frames.push(PendingFrame {
                index,
                term,
                start,
                len: st.pending.bytes.len() - start,
                crc,
            });
        }
        st.next_index = expected;
        st.submitted += 1;
        Ok(Ticket(st.submitted))
    }

    /// Blocks until the batch of `ticket` (and every batch before it) is on
    /// disk. The first waiter to find the disk idle writes for everyone.
    pub fn wait(&self, ticket: Ticket) -> Result<()> {
        let mut st = self.lock();
        loop {
            if st.durable >= ticket.0 {
                return Ok(());
            }
            if let Some(reason) = &st.failed {
                return Err(Error::Failed {
                    reason: reason.clone(),
                });
            }
            if !st.writing && !st.pending.is_empty() {
                st = self.write_pending(st);
            } else {
                st = self
                    .shared
                    .changed
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// Blocks until everything submitted so far is durable.
    pub fn flush(&self) -> Result<()> {
        let ticket = Ticket(self.lock().submitted);
        self.wait(ticket)
    }

    /// Writes everything pending as the one writer, releasing the lock while
    /// the disk works.
    fn write_pending<'g>(&'g self, mut st: MutexGuard<'g, State>) -> MutexGuard<'g, State> {
        let batch = Arc::new(std::mem::take(&mut st.pending));
        st.inflight = Some(Arc::clone(&batch));
        st.writing = true;
        let covers = st.submitted;
        let active = {
            let seg = st.segments.last().expect("a segment");
            ActiveTail {
                file: Arc::clone(&seg.file),
                path: seg.path.clone(),
                len: seg.len,
                has_records: seg.next_index > seg.first_index,
                last_crc: seg.last_crc,
            }
        };
        drop(st);

        let result = self.write_batch(&batch, active);

        let mut st = self.lock();
        st.inflight = None;
        st.writing = false;
        match result {
            Ok(spans) => {
                for span in spans {
                    if let Some(seg) = span.new_segment {
                        st.segments.push(seg);
                    }
                    let seg = st.segments.last_mut().expect("a segment");
                    let mut offset = seg.len;
                    for f in &batch.frames[span.frames] {
                        if (f.index - seg.first_index).is_multiple_of(SPARSE_EVERY) {
                            seg.sparse.push((f.index, offset));
                        }
                        offset += f.len as u64;
                        seg.next_index = f.index + 1;
                        seg.last_crc = f.crc;
                    }
                    seg.len = offset;
                }
                st.written_index = batch
                    .frames
                    .last()
                    .map_or(st.written_index, |f| f.index + 1);
                st.durable = covers;
            }
            Err(e) => {
                st.failed = Some(e.to_string());
            }
        }
        self.shared.changed.notify_all();
        st
    }

    /// Writes `batch` after the active segment's tail, rotating to new
    /// segments as they fill, and syncs each segment it touched.
    fn write_batch(&self, batch: &Batch, mut tail: ActiveTail) -> Result<Vec<Span>> {
        let limit = self.shared.config.segment_size;
        let mut spans = Vec::new();
        let mut i = 0;
        let mut new_segment = None;
        while i < batch.frames.len() {
            // Take as many frames as fit in this segment (at least one, so a
            // record larger than the limit still gets written).
            let start = i;
            let mut len = tail.len;
            while i < batch.frames.len() {
                let f = &batch.frames[i];
                if (tail.has_records || i > start) && len + f.len as u64 > limit {
                    break;
                }
                len += f.len as u64;
                i += 1;
            }
            if i > start {
                let bytes_from = batch.frames[start].start;
                let bytes_to = batch.frames[i - 1].start + batch.frames[i - 1].len;
                tail.file
                    .write_all_at(&batch.bytes[bytes_from..bytes_to], tail.len)
                    .map_err(Error::io("write segment", &tail.path))?;
                tail.file
                    .sync_data()
                    .map_err(Error::io("sync segment", &tail.path))?;
                tail.last_crc = batch.frames[i - 1].crc;
                spans.push(Span {
                    new_segment: new_segment.take(),
                    frames: start..i,
                });
            }
            if i < batch.frames.len() {
                // The current segment is full: chain a new one to it.
                let header = SegmentHeader::chained(
                    self.shared.log_id,
                    batch.frames[i].index,
                    tail.last_crc,
                );
                let seg = create_segment(&self.shared.dir, header)?;
                tail = ActiveTail {
                    file: Arc::clone(&seg.file),
                    path: seg.path.clone(),
                    len: seg.len,
                    has_records: false,
                    last_crc: tail.last_crc,
                };
                new_segment = Some(seg);
            }
        }
        Ok(spans)
    }

    /// Reads the records with indexes in `range` (clamped to the end of the
    /// log), including records that are queued but not yet durable.
    pub fn read(&self, range: Range<u64>) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut file_reads = Vec::new();
        {
            let st = self.lock();
            let first = st.segments[0].first_index;
            if range.start < first {
                return Err(Error::Purged {
                    index: range.start,
                    first,
                });
            }
            let end = range.end.min(st.next_index);
            if range.start >= end {
                return Ok(out);
            }
            // The part in files: one read per segment.
            let file_end = end.min(st.written_index);
            let mut from = range.start;
            while from < file_end {
                let pos = st
                    .segments
                    .partition_point(|s| s.first_index <= from)
                    .saturating_sub(1);
                let seg = &st.segments[pos];
                let to = file_end.min(seg.next_index);
                let start_off = sparse_floor(&seg.sparse, from)
                    .map_or(SEGMENT_HEADER_LEN as u64, |(_, off)| off);
                let end_off = seg
                    .sparse
                    .iter()
                    .find(|(i, _)| *i >= to)
                    .map_or(seg.len, |(_, off)| *off);
                file_reads.push(FileRead {
                    file: Arc::clone(&seg.file),
                    path: seg.path.clone(),
                    span: start_off..end_off,
                    indexes: from..to,
                });
                from = to;
            }
            // The part still in memory.
            for index in range.start.max(st.written_index)..end {
                let rec = st
                    .inflight
                    .as_ref()
                    .and_then(|b| b.record(index))
                    .or_else(|| st.pending.record(index));
                out.push(rec.expect("unwritten records are in memory"));
            }
        }
        let mut from_files = Vec::new();
        for read in file_reads {
            read.run(&mut from_files)?;
        }
        from_files.append(&mut out);
        Ok(from_files)
    }

    /// Reads one record.
    pub fn get(&self, index: u64) -> Result<Option<Record>> {
        Ok(self.read(index..index.saturating_add(1))?.pop())
    }

    /// Iterates over the records from `start` to the end of the log, reading
    /// a chunk at a time.
    pub fn iter_from(&self, start: u64) -> LogIter {
        LogIter {
            log: self.clone(),
            next: start,
            chunk: Vec::new().into_iter(),
        }
    }

    /// Removes every record after `index` (Raft drops a conflicting tail).
    /// Queued records are written first, so no waiter is left hanging.
    pub fn truncate_after(&self, index: u64) -> Result<()> {
        match index.checked_add(1) {
            Some(from) => self.truncate_from(from),
            None => Ok(()),
        }
    }

    /// Removes record `index` and every record after it.
    pub fn truncate_from(&self, index: u64) -> Result<()> {
        let mut st = self.exclusive()?;
        let result = self.truncate_locked(&mut st, index);
        self.finish_exclusive(st, result)
    }

    fn truncate_locked(&self, st: &mut State, keep_next: u64) -> Result<()> {
        if keep_next >= st.next_index {
            return Ok(());
        }
        let first = st.segments[0].first_index;
        if keep_next < first {
            return Err(Error::TruncateBeforePurge {
                index: keep_next,
                purged: first.wrapping_sub(1),
            });
        }
        // Newest first, so that a crash part-way leaves an intact chain.
        let keep = st
            .segments
            .iter()
            .rposition(|s| s.first_index <= keep_next)
            .expect("the first segment starts at or before keep_next");
        let dropped: Vec<Segment> = st.segments.drain(keep + 1..).collect();
        for seg in dropped.iter().rev() {
            fs::remove_file(&seg.path).map_err(Error::io("remove segment", &seg.path))?;
        }
        if !dropped.is_empty() {
            sync_dir(&self.shared.dir)?;
        }
        let seg = st.segments.last_mut().expect("kept segment");
        if keep_next < seg.next_index {
            let (offset, last_crc) = locate(seg, keep_next)?;
            seg.file
                .set_len(offset)
                .map_err(Error::io("truncate segment", &seg.path))?;
            seg.file
                .sync_all()
                .map_err(Error::io("sync segment", &seg.path))?;
            seg.len = offset;
            seg.next_index = keep_next;
            seg.last_crc = last_crc;
            seg.sparse.retain(|(i, _)| *i < keep_next);
        }
        st.next_index = keep_next;
        st.written_index = keep_next;
        Ok(())
    }

    /// Removes every record before `index` from the disk: whole segments are
    /// deleted, and the segment that holds both purged and kept records is
    /// rewritten without the purged ones (atomically: a new base segment
    /// replaces it). When `index` is past the end of the log (Raft installed
    /// a snapshot that is ahead of it), the log becomes empty and continues
    /// at `index`.
    pub fn purge_before(&self, index: u64) -> Result<()> {
        let mut st = self.exclusive()?;
        let result = self.purge_locked(&mut st, index);
        self.finish_exclusive(st, result)
    }

    fn purge_locked(&self, st: &mut State, index: u64) -> Result<()> {
        if index <= st.segments[0].first_index {
            return Ok(());
        }
        if index > st.next_index {
            // A new base segment first; what is older is then a leftover that
            // open would also remove.
            let seg = create_segment(
                &self.shared.dir,
                SegmentHeader::base(self.shared.log_id, index),
            )?;
            let old = std::mem::replace(&mut st.segments, vec![seg]);
            for s in &old {
                fs::remove_file(&s.path).map_err(Error::io("remove segment", &s.path))?;
            }
            sync_dir(&self.shared.dir)?;
            st.next_index = index;
            st.written_index = index;
            return Ok(());
        }
        let mut removed = false;
        // Oldest first, so that a crash part-way leaves a contiguous suffix.
        while st.segments.len() > 1 && st.segments[1].first_index <= index {
            let seg = st.segments.remove(0);
            fs::remove_file(&seg.path).map_err(Error::io("remove segment", &seg.path))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.shared.dir)?;
        }
        if st.segments[0].first_index < index {
            // Purged records share a segment with kept ones: rewrite that
            // segment without them, so purged content leaves the disk. The
            // kept records are copied file to file (by the kernel where it
            // can), not through a buffer: a segment is 64 MiB, and that
            // buffer was freed just after a snapshot build, into memory the
            // allocator kept.
            let seg = &st.segments[0];
            let (offset, prev_crc) = locate(seg, index)?;
            let header = SegmentHeader {
                prev_last_crc: prev_crc,
                ..SegmentHeader::base(self.shared.log_id, index)
            };
            let mut new =
                create_segment_from(&self.shared.dir, header, &seg.path, offset..seg.len)?;
            new.next_index = seg.next_index;
            new.last_crc = seg.last_crc;
            // The kept records keep their sparse entries, moved with them;
            // the first record starts the new segment.
            let moved = |at: u64| at - offset + SEGMENT_HEADER_LEN as u64;
            new.sparse = std::iter::once((index, SEGMENT_HEADER_LEN as u64))
                .chain(
                    seg.sparse
                        .iter()
                        .filter(|(i, _)| *i > index)
                        .map(|&(i, at)| (i, moved(at))),
                )
                .collect();
            let old = std::mem::replace(&mut st.segments[0], new);
            fs::remove_file(&old.path).map_err(Error::io("remove segment", &old.path))?;
            sync_dir(&self.shared.dir)?;
        }
        Ok(())
    }

    /// Takes the log for a reshaping operation: writes whatever is queued and
    /// waits out any writer. The returned guard keeps everyone else out.
    fn exclusive(&self) -> Result<MutexGuard<'_, State>> {
        let mut st = self.lock();
        loop {
            if let Some(reason) = &st.failed {
                return Err(Error::Failed {
                    reason: reason.clone(),
                });
            }
            if st.writing {
                st = self
                    .shared
                    .changed
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
            } else if !st.pending.is_empty() {
                st = self.write_pending(st);
            } else {
                return Ok(st);
            }
        }
    }

    fn finish_exclusive(&self, mut st: MutexGuard<'_, State>, result: Result<()>) -> Result<()> {
        if let Err(e) = &result {
            // A failed reshape may have changed some files and not others.
            if matches!(e, Error::Io { .. }) {
                st.failed = Some(e.to_string());
            }
        }
        self.shared.changed.notify_all();
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The segment being appended to, as the writer sees it outside the lock.
struct ActiveTail {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    has_records: bool,
    /// CRC of the last record in the segment, for the next segment's chain.
    last_crc: u32,
}

/// Frames of a batch that went into one segment; `new_segment` is set when
/// the writer created that segment.
struct Span {
    new_segment: Option<Segment>,
    frames: Range<usize>,
}

/// A planned read of some records from one segment file.
struct FileRead {
    file: Arc<File>,
    path: PathBuf,
    span: Range<u64>,
    indexes: Range<u64>,
}

impl FileRead {
    fn run(self, out: &mut Vec<Record>) -> Result<()> {
        let mut buf = vec![0u8; (self.span.end - self.span.start) as usize];
        self.file
            .read_exact_at(&mut buf, self.span.start)
            .map_err(Error::io("read segment", &self.path))?;
        let mut pos = 0;
        let mut expected = None;
        while pos < buf.len() {
            let offset = self.span.start + pos as u64;
            let corrupt = |kind| -> Error {
                Corruption {
                    file: self.path.clone(),
                    offset,
                    index: expected,
                    kind,
                }
                .into()
            };
            let frame = match read_frame(&buf[pos..]) {
                FrameRead::Frame(f) => f,
                FrameRead::Incomplete { .. } => return Err(corrupt(CorruptionKind::Truncated)),
                FrameRead::BadLength { len } => {
                    return Err(corrupt(CorruptionKind::BadLength { len }));
                }
                FrameRead::BadChecksum { expected, got } => {
                    return Err(corrupt(CorruptionKind::BadChecksum { expected, got }));
                }
            };
            if let Some(e) = expected
                && frame.index != e
            {
                return Err(corrupt(CorruptionKind::NotContiguous {
                    expected: e,
                    got: frame.index,
                }));
            }
            if frame.index >= self.indexes.end {
                break;
            }
            if frame.index >= self.indexes.start {
                out.push(frame.to_record());
            }
            expected = Some(frame.index + 1);
            pos += frame.len();
        }
        if expected != Some(self.indexes.end) {
            return Err(Corruption {
                file: self.path.clone(),
                offset: self.span.end,
                index: Some(self.indexes.end.saturating_sub(1)),
                kind: CorruptionKind::Truncated,
            }
            .into());
        }
        Ok(())
    }
}

/// Iterator over records, reading the log a chunk at a time.
#[derive(Debug)]
pub struct LogIter {
    log: Log,
    next: u64,
    chunk: std::vec::IntoIter<Record>,
}

/// Records read per chunk by [`LogIter`].
const ITER_CHUNK: u64 = 4096;

impl Iterator for LogIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(rec) = self.chunk.next() {
            self.next = rec.index + 1;
            return Some(Ok(rec));
        }
        match self
            .log
            .read(self.next..self.next.saturating_add(ITER_CHUNK))
        {
            Ok(chunk) if chunk.is_empty() => None,
            Ok(chunk) => {
                self.chunk = chunk.into_iter();
                self.next()
            }
            Err(e) => {
                // Stop after reporting the error once.
                self.next = u64::MAX;
                Some(Err(e))
            }
        }
    }
}

/// The offset of the sparse entry at or before `index`.
fn sparse_floor(sparse: &[(u64, u64)], index: u64) -> Option<(u64, u64)> {
    let pos = sparse.partition_point(|(i, _)| *i <= index);
    pos.checked_sub(1).map(|p| sparse[p])
}

/// The byte offset of record `index` in `seg` and the CRC of the record
/// before it (the header's chain CRC when `index` is the segment's first).
fn locate(seg: &Segment, index: u64) -> Result<(u64, u32)> {
    if index == seg.first_index {
        return Ok((SEGMENT_HEADER_LEN as u64, header_prev_crc(seg)?));
    }
    let mut records = Vec::new();
    let (from, start) = sparse_floor(&seg.sparse, index - 1)
        .unwrap_or((seg.first_index, SEGMENT_HEADER_LEN as u64));
    let read = FileRead {
        file: Arc::clone(&seg.file),
        path: seg.path.clone(),
        span: start..seg.len,
        indexes: from..index,
    };
    read.run(&mut records)?;
    let mut offset = start;
    for r in &records {
        offset += (RECORD_HEADER_LEN + r.payload.len()) as u64;
    }
    let last = records.last().expect("index > first_index");
    Ok((
        offset,
        crate::format::frame_crc(last.index, last.term, &last.payload),
    ))
}

fn header_prev_crc(seg: &Segment) -> Result<u32> {
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    seg.file
        .read_exact_at(&mut buf, 0)
        .map_err(Error::io("read segment", &seg.path))?;
    SegmentHeader::decode(&buf)
        .map(|h| h.prev_last_crc)
        .map_err(|p| {
            Corruption {
                file: seg.path.clone(),
                offset: 0,
                index: Some(seg.first_index),
                kind: CorruptionKind::BadHeader(p.to_string()),
            }
            .into()
        })
}

/// Creates a segment atomically: temp file, header, fsync, rename, fsync of
/// the directory.
fn create_segment(dir: &Path, header: SegmentHeader) -> Result<Segment> {
    let path = dir.join(segment_file_name(header.first_index));
    let file = create_atomically(&path, &[&header.encode()])?;
    Ok(new_segment(path, file, &header, 0))
}

/// A just-created segment file `path` holding `frames` bytes of frames
/// after `header`.
fn new_segment(path: PathBuf, file: File, header: &SegmentHeader, frames: u64) -> Segment {
    Segment {
        first_index: header.first_index,
        path,
        file: Arc::new(file),
        len: SEGMENT_HEADER_LEN as u64 + frames,
        next_index: header.first_index,
        last_crc: header.prev_last_crc,
        sparse: Vec::new(),
    }
}

/// Creates a segment holding the frames at `span` of the segment file
/// `from` after its header, atomically.
fn create_segment_from(
    dir: &Path,
    header: SegmentHeader,
    from: &Path,
    span: Range<u64>,
) -> Result<Segment> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let path = dir.join(segment_file_name(header.first_index));
    let len = span.end - span.start;
    let file = create_atomically_with(&path, |file, tmp| {
        file.write_all(&header.encode())
            .map_err(Error::io("write", tmp))?;
        let mut source = File::open(from).map_err(Error::io("open segment", from))?;
        source
            .seek(SeekFrom::Start(span.start))
            .map_err(Error::io("read segment", from))?;
        let copied = std::io::copy(&mut source.take(len), file).map_err(Error::io("write", tmp))?;
        if copied != len {
            let short = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{copied} of {len} bytes copied"),
            );
            return Err(Error::io("read segment", from)(short));
        }
        Ok(())
    })?;
    Ok(new_segment(path, file, &header, len))
}

/// A random id shared by the segments of one log, to detect a segment that
/// was copied in from another log.
fn new_log_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}
