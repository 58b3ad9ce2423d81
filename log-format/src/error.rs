//! The crate's error type. Damage found on disk is a [`Corruption`] that names
//! the file, the byte offset and the record index (the message id, in the
//! archive), so an operator can look at exactly that place with
//! `log-inspect verify`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is in use by another process (its LOCK file is held); stop that process or use another directory",
        dir.display()
    )]
    Locked { dir: PathBuf },
    #[error("{0}")]
    Corrupt(Box<Corruption>),
    #[error("record {got} cannot be appended: the log expects record {expected} next")]
    NotContiguous { expected: u64, got: u64 },
    #[error("record {index} has a {len}-byte payload; the largest allowed is {max} bytes")]
    PayloadTooLarge { index: u64, len: usize, max: u32 },
    #[error("records before {first} have been purged; record {index} is no longer in the log")]
    Purged { index: u64, first: u64 },
    #[error("cannot truncate from {index}: records up to {purged} are already purged")]
    TruncateBeforePurge { index: u64, purged: u64 },
    #[error(
        "the log stopped accepting writes after an I/O failure ({reason}); restart to recover from disk"
    )]
    Failed { reason: String },
    /// The log ends before the committed mark saved beside it: records the
    /// cluster acknowledged are gone from this replica (a lost or cut
    /// segment tail), so it cannot rejoin Raft as it is.
    #[error(
        "the log in {} ends before record {first}, but its {} file says records up to {last} were committed: \
         acknowledged records {first}..{last} are missing. Restore the directory from a backup, \
         or rebuild this replica from its cluster: remove it with `chat-server cluster remove`, \
         move the directory aside, and start it again with `--join`",
        dir.display(),
        crate::format::COMMITTED_FILE
    )]
    CommittedMissing {
        dir: PathBuf,
        /// The first missing record: where the log (and its snapshot) ends.
        first: u64,
        /// The last missing record: the saved committed index.
        last: u64,
    },
    /// An archive append out of order: ids must increase.
    #[error(
        "message {got} cannot be archived: the archive already holds message {last}, and ids must increase"
    )]
    IdNotIncreasing { last: u64, got: u64 },
    #[error(
        "the archive stopped accepting writes after an I/O failure ({reason}); restart to recover from disk"
    )]
    ArchiveFailed { reason: String },
    /// An archive record whose frame is intact but whose payload this build
    /// cannot decode.
    #[error("archived message {id} in {} does not decode: {source}", path.display())]
    ArchiveDecode {
        id: u64,
        path: PathBuf,
        #[source]
        source: crate::events::DecodeError,
    },
    #[error("{what} in {}: {source}", path.display())]
    Decode {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: postcard::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error + use<> {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    }

    /// The corruption report, when this error is one.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            Error::Corrupt(c) => Some(c),
            _ => None,
        }
    }
}

impl From<Corruption> for Error {
    fn from(c: Corruption) -> Self {
        Error::Corrupt(Box::new(c))
    }
}

/// Damage that is not a torn tail: the log cannot be trusted past this point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The segment (or state) file where the damage is.
    pub file: PathBuf,
    /// Byte offset of the damaged frame or header in that file.
    pub offset: u64,
    /// The record index (in the archive: the message id) expected at that
    /// offset, when one is known.
    pub index: Option<u64>,
    pub kind: CorruptionKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorruptionKind {
    /// A frame whose bytes do not match their checksum, with valid data after it.
    BadChecksum { expected: u32, got: u32 },
    /// A frame whose length field is impossible, with valid data after it.
    BadLength { len: u32 },
    /// A frame that is cut short, in a segment that is not the last one, or
    /// with valid data after it.
    Truncated,
    /// A valid frame carrying the wrong index.
    NotContiguous { expected: u64, got: u64 },
    /// An archive record whose id is not above the one before it (in its
    /// segment or, for a segment's first id, in the segment before).
    OutOfOrder { previous: u64, got: u64 },
    /// An archive record whose id is below the first id its segment's
    /// header (and file name) promise.
    BelowFirstId { first_id: u64, got: u64 },
    /// An archive hint file that does not describe its segment.
    HintMismatch(String),
    /// The segment header is unreadable.
    BadHeader(String),
    /// The header's first index does not match the file name.
    NameMismatch { name_index: u64, header_index: u64 },
    /// The segment belongs to another log.
    ForeignSegment { log_id: u64, expected: u64 },
    /// The segment does not continue where the previous one ended: a segment
    /// is missing or a segment was cut short at a record boundary.
    BrokenChain {
        expected_index: u64,
        expected_crc: u32,
        got_index: u64,
        got_crc: u32,
    },
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::BadChecksum { expected, got } => write!(
                f,
                "checksum mismatch (expected {expected:#010x}, got {got:#010x}) with valid records after it"
            ),
            CorruptionKind::BadLength { len } => {
                write!(
                    f,
                    "impossible record length {len} with valid records after it"
                )
            }
            CorruptionKind::Truncated => write!(f, "record cut short before the end of the log"),
            CorruptionKind::NotContiguous { expected, got } => {
                write!(f, "record index {got} where {expected} was expected")
            }
            CorruptionKind::OutOfOrder { previous, got } => {
                write!(f, "id {got} is not above the id before it, {previous}")
            }
            CorruptionKind::BelowFirstId { first_id, got } => write!(
                f,
                "id {got} is below {first_id}, the first id of its segment (from the header)"
            ),
            CorruptionKind::HintMismatch(why) => {
                write!(f, "hint file does not match its segment: {why}")
            }
            CorruptionKind::BadHeader(why) => write!(f, "{why}"),
            CorruptionKind::NameMismatch {
                name_index,
                header_index,
            } => write!(
                f,
                "file name says the segment starts at {name_index} but its header says {header_index}"
            ),
            CorruptionKind::ForeignSegment { log_id, expected } => write!(
                f,
                "segment belongs to another log (log id {log_id:#018x}, this log is {expected:#018x})"
            ),
            CorruptionKind::BrokenChain {
                expected_index,
                expected_crc,
                got_index,
                got_crc,
            } => write!(
                f,
                "broken chain: the previous segment ends at record {got_index} (crc {got_crc:#010x}) but this segment follows record {expected_index} (crc {expected_crc:#010x}); a segment is missing or was cut short"
            ),
        }
    }
}

impl Corruption {
    /// Whether the damage is in the message archive (a segment or hint
    /// file of it) rather than the log.
    pub fn in_archive(&self) -> bool {
        use crate::format::{ARCHIVE_EXTENSION, HINT_EXTENSION};
        self.file
            .extension()
            .is_some_and(|e| e == ARCHIVE_EXTENSION || e == HINT_EXTENSION)
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, key) = if self.in_archive() {
            ("archive", "id")
        } else {
            ("log", "record")
        };
        write!(
            f,
            "corrupt {what}: {} at byte {}",
            self.file.display(),
            self.offset
        )?;
        if let Some(index) = self.index {
            write!(f, " ({key} {index})")?;
        }
        write!(f, ": {}", self.kind)
    }
}
