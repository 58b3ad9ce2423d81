//! The chat system's event log on disk, readable by any tool offline.
//!
//! A log is a directory of segment files ([`format`](mod@format)) holding CRC-checked
//! records with contiguous indexes. [`Log`] appends with group commit, reads
//! by index, recovers from a crash at open and refuses corrupted data;
//! [`scan_dir`] reads a log without changing it; [`StateFile`] keeps small
//! durable values beside it, and [`check_committed`] checks the log against
//! the Raft committed mark kept there; [`events`] says what the payloads mean.
//! Beside the log, the message [`Archive`] keeps every stored message's body
//! by id, in the same framing, readable from any thread.
//!
//! This crate knows nothing of tokio, tonic, prost or openraft.

pub mod archive;
mod durable;
pub mod error;
pub mod events;
pub mod format;
mod log;
mod scan;
mod state;

#[cfg(feature = "cli")]
pub mod inspect;

pub use crate::archive::{
    Archive, ArchiveConfig, ArchiveReader, ArchiveScan, ArchiveSegment, CompactReport, ScanEnd,
    scan_archive,
};
pub use crate::durable::LOCK_FILE_NAME;
pub use crate::error::{Corruption, CorruptionKind, Error, Result};
pub use crate::format::{COMMITTED_FILE, PURGED_FILE, Record, SNAPSHOT_FILE, VOTE_FILE};
pub use crate::log::{Log, LogConfig, LogIter, OpenReport, Ticket};
pub use crate::scan::{SPARSE_EVERY, Scan, ScannedSegment, TornTail, scan_dir};
pub use crate::state::{
    RaftLogId, RaftMarks, STATE_HEADER_LEN, StateBytes, StateFile, check_committed,
};
