//! The bytes on disk: every constant of the format, the segment header and the
//! record frame, with encoders and checking decoders.
//!
//! A segment file is a [`SegmentHeader`] followed by record frames. A frame is
//!
//! ```text
//! length u32 | crc32 u32 | index u64 | term u64 | payload (length bytes)
//! ```
//!
//! where the CRC covers length, index, term and payload. All integers are
//! little-endian. Decoding checks the frame (length, then checksum) before it
//! hands out any payload byte.
//!
//! The message archive (`DIR/`[`ARCHIVE_DIR`]) uses the same frames, with the
//! message id in the index field and 0 as the term, after an
//! [`ArchiveHeader`]. A sealed archive segment has a hint file beside it: a
//! [`STATE_MAGIC`]-style header with [`HINT_MAGIC`], then one frame whose
//! index is the segment's first id (layout in `archive/hint.rs`).

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CHATSEG\0";
/// The first bytes of every state file.
pub const STATE_MAGIC: [u8; 8] = *b"CHATSTA\0";
/// The first bytes of every archive segment file.
pub const ARCHIVE_MAGIC: [u8; 8] = *b"CHATARC\0";
/// The first bytes of every archive hint file.
pub const HINT_MAGIC: [u8; 8] = *b"CHATHNT\0";
/// The version of the segment, archive and state file layouts written by
/// this code.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 48;
/// Size of a record frame's fixed part (length, crc, index, term).
pub const RECORD_HEADER_LEN: usize = 24;
/// Largest payload a record may carry. Anything larger in a length field is
/// damage, not a record.
pub const MAX_PAYLOAD_LEN: u32 = 64 << 20;
/// Default size at which the writer starts a new segment.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// File name extension of segments.
pub const SEGMENT_EXTENSION: &str = "log";
/// File name extension of files being written before an atomic rename.
pub const TEMP_EXTENSION: &str = "tmp";
/// File name extension of damaged bytes cut from a torn tail.
pub const BROKEN_EXTENSION: &str = "broken";

/// The archive's directory inside the data directory, beside the log.
pub const ARCHIVE_DIR: &str = "archive";
/// Size of the archive segment header in bytes.
pub const ARCHIVE_HEADER_LEN: usize = 24;
/// File name extension of archive segments.
pub const ARCHIVE_EXTENSION: &str = "arc";
/// Added to an archive segment's file name to name its hint file.
pub const HINT_EXTENSION: &str = "hint";
/// Default size at which the archive starts a new segment.
pub const DEFAULT_ARCHIVE_SEGMENT_SIZE: u64 = 16 << 20;
/// Default spacing, in bytes of segment, of the archive's sparse index
/// entries: a read scans about this much.
pub const DEFAULT_SPARSE_EVERY: u32 = 4096;

/// State file holding the Raft vote.
pub const VOTE_FILE: &str = "raft-vote";
/// State file holding the last committed Raft log id the server saved, as
/// `Option<`[`RaftLogId`](crate::RaftLogId)`>`.
pub const COMMITTED_FILE: &str = "raft-committed";
/// State file holding the last Raft log id purged from the log into a
/// snapshot, as `Option<`[`RaftLogId`](crate::RaftLogId)`>`.
pub const PURGED_FILE: &str = "raft-purged";
/// State file holding the server's latest snapshot of its indexes (the
/// value's layout is the server's; its framing and CRC are this crate's).
pub const SNAPSHOT_FILE: &str = "snapshot";

/// Header flag: this segment begins the log. Segments older than a segment
/// with this flag are left over from an interrupted purge.
pub const FLAG_BASE: u16 = 1;

/// The fixed-size header at the start of each segment.
///
/// The `prev_*` fields chain segments together: each names the last record of
/// the segment before it, so that a missing segment, a segment cut at a record
/// boundary, or a segment of another log are all detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub flags: u16,
    /// Random per log; every segment of one log carries the same id.
    pub log_id: u64,
    /// Index of the first record in this segment (or that it will hold).
    pub first_index: u64,
    /// Index of the last record of the previous segment (`first_index - 1`,
    /// wrapping).
    pub prev_last_index: u64,
    /// CRC of the last record of the previous segment, 0 for a base segment.
    pub prev_last_crc: u32,
}

/// Why a segment header was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    TooShort {
        len: usize,
        need: usize,
    },
    /// The file does not start with the magic bytes of `what` it should be.
    BadMagic {
        what: &'static str,
    },
    BadChecksum {
        expected: u32,
        got: u32,
    },
    UnknownVersion {
        version: u16,
    },
}

impl SegmentHeader {
    /// A header for a segment that starts the log at `first_index`.
    pub fn base(log_id: u64, first_index: u64) -> Self {
        SegmentHeader {
            version: FORMAT_VERSION,
            flags: FLAG_BASE,
            log_id,
            first_index,
            prev_last_index: first_index.wrapping_sub(1),
            prev_last_crc: 0,
        }
    }

    /// A header for a segment that follows a segment whose last record had
    /// `prev_last_crc` and index `first_index - 1`.
    pub fn chained(log_id: u64, first_index: u64, prev_last_crc: u32) -> Self {
        SegmentHeader {
            flags: 0,
            prev_last_crc,
            ..SegmentHeader::base(log_id, first_index)
        }
    }

    pub fn is_base(&self) -> bool {
        self.flags & FLAG_BASE != 0
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.log_id.to_le_bytes());
        b[20..28].copy_from_slice(&self.first_index.to_le_bytes());
        b[28..36].copy_from_slice(&self.prev_last_index.to_le_bytes());
        b[36..40].copy_from_slice(&self.prev_last_crc.to_le_bytes());
        // 40..44 reserved, zero.
        let crc = crc32fast::hash(&b[0..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderProblem> {
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderProblem::TooShort {
                len: bytes.len(),
                need: SEGMENT_HEADER_LEN,
            });
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err(HeaderProblem::BadMagic {
                what: "chat log segment",
            });
        }
        let expected = u32_at(bytes, 44);
        let got = crc32fast::hash(&bytes[0..44]);
        if expected != got {
            return Err(HeaderProblem::BadChecksum { expected, got });
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(HeaderProblem::UnknownVersion { version });
        }
        Ok(SegmentHeader {
            version,
            flags: u16::from_le_bytes([bytes[10], bytes[11]]),
            log_id: u64_at(bytes, 12),
            first_index: u64_at(bytes, 20),
            prev_last_index: u64_at(bytes, 28),
            prev_last_crc: u32_at(bytes, 36),
        })
    }
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::TooShort { len, need } => {
                write!(f, "segment header is incomplete ({len} of {need} bytes)")
            }
            HeaderProblem::BadMagic { what } => write!(f, "not a {what} (bad magic bytes)"),
            HeaderProblem::BadChecksum { expected, got } => write!(
                f,
                "segment header checksum mismatch (expected {expected:#010x}, got {got:#010x})"
            ),
            HeaderProblem::UnknownVersion { version } => write!(
                f,
                "segment format version {version} is not supported (this build reads version {FORMAT_VERSION}); use a newer build"
            ),
        }
    }
}

/// The fixed-size header at the start of each archive segment.
///
/// Every record in the segment has an id of at least `first_id`, and every
/// record of the segments before it a smaller one. It is the id of the
/// segment's first record when the segment is created; compaction keeps the
/// header (and so the file name) when it drops that record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveHeader {
    pub version: u16,
    pub first_id: u64,
}

impl ArchiveHeader {
    pub fn new(first_id: u64) -> Self {
        ArchiveHeader {
            version: FORMAT_VERSION,
            first_id,
        }
    }

    /// `magic | version u16 | reserved u16 | first_id u64 | crc32 u32`, the
    /// CRC covering everything before it.
    pub fn encode(&self) -> [u8; ARCHIVE_HEADER_LEN] {
        let mut b = [0u8; ARCHIVE_HEADER_LEN];
        b[0..8].copy_from_slice(&ARCHIVE_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        // 10..12 reserved, zero.
        b[12..20].copy_from_slice(&self.first_id.to_le_bytes());
        let crc = crc32fast::hash(&b[0..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, HeaderProblem> {
        if bytes.len() < ARCHIVE_HEADER_LEN {
            return Err(HeaderProblem::TooShort {
                len: bytes.len(),
                need: ARCHIVE_HEADER_LEN,
            });
        }
        if bytes[0..8] != ARCHIVE_MAGIC {
            return Err(HeaderProblem::BadMagic {
                what: "chat archive segment",
            });
        }
        let expected = u32_at(bytes, 20);
        let got = crc32fast::hash(&bytes[0..20]);
        if expected != got {
            return Err(HeaderProblem::BadChecksum { expected, got });
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(HeaderProblem::UnknownVersion { version });
        }
        Ok(ArchiveHeader {
            version,
            first_id: u64_at(bytes, 12),
        })
    }
}

/// A record as stored: its position in the log, the Raft term that wrote it,
/// and the encoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub index: u64,
    pub term: u64,
    pub payload: Vec<u8>,
}

/// The CRC a frame carries for these fields.
pub fn frame_crc(index: u64, term: u64, payload: &[u8]) -> u32 {
    frame_crc_of_parts(index, term, &[payload])
}

/// [`frame_crc`] of the payload made of `parts`, one after the other.
pub fn frame_crc_of_parts(index: u64, term: u64, parts: &[&[u8]]) -> u32 {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut h = frame_crc_start(index, term, len as u32);
    for part in parts {
        h.update(part);
    }
    h.finalize()
}

/// The CRC of a frame of these fields, before its payload: what
/// [`frame_crc`] computes once fed the payload, for a payload that is
/// written as it is made.
pub fn frame_crc_start(index: u64, term: u64, len: u32) -> crc32fast::Hasher {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&index.to_le_bytes());
    h.update(&term.to_le_bytes());
    h
}

/// Appends a frame's header, for a payload of `len` bytes with this `crc`,
/// that the caller writes after it.
pub fn encode_frame_header(out: &mut Vec<u8>, index: u64, term: u64, len: u32, crc: u32) {
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
}

/// Appends the frame of one record to `out` and returns its CRC.
///
/// The caller has checked the payload's length: at most [`MAX_PAYLOAD_LEN`]
/// for a record, at most `u32::MAX` for a state file.
pub fn encode_frame(out: &mut Vec<u8>, index: u64, term: u64, payload: &[u8]) -> u32 {
    debug_assert!(u32::try_from(payload.len()).is_ok());
    let crc = frame_crc(index, term, payload);
    out.reserve(RECORD_HEADER_LEN + payload.len());
    encode_frame_header(out, index, term, payload.len() as u32, crc);
    out.extend_from_slice(payload);
    crc
}

/// A frame that passed its checks, borrowing the payload from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub index: u64,
    pub term: u64,
    pub crc: u32,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the frame occupies on disk.
    pub fn len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn to_record(&self) -> Record {
        Record {
            index: self.index,
            term: self.term,
            payload: self.payload.to_vec(),
        }
    }
}

/// The outcome of reading one frame from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRead<'a> {
    /// A whole frame whose checksum matches.
    Frame(Frame<'a>),
    /// The buffer ends inside the frame: more bytes are needed, or, at the end
    /// of a file, the frame was torn.
    Incomplete { needed: usize },
    /// The length field is larger than any record may be.
    BadLength { len: u32 },
    /// The bytes are all there but do not match their checksum.
    BadChecksum { expected: u32, got: u32 },
}

/// Reads the frame at the front of `buf`: length first, then checksum, and
/// only then the fields.
pub fn read_frame(buf: &[u8]) -> FrameRead<'_> {
    read_frame_up_to(buf, MAX_PAYLOAD_LEN)
}

/// [`read_frame`] with another bound on the payload length (state files,
/// which hold snapshots, may be far larger than any record).
pub fn read_frame_up_to(buf: &[u8], max_len: u32) -> FrameRead<'_> {
    if buf.len() < RECORD_HEADER_LEN {
        return FrameRead::Incomplete {
            needed: RECORD_HEADER_LEN,
        };
    }
    let len = u32_at(buf, 0);
    if len > max_len {
        return FrameRead::BadLength { len };
    }
    let total = RECORD_HEADER_LEN + len as usize;
    if buf.len() < total {
        return FrameRead::Incomplete { needed: total };
    }
    let expected = u32_at(buf, 4);
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[0..4]);
    h.update(&buf[8..total]);
    let got = h.finalize();
    if expected != got {
        return FrameRead::BadChecksum { expected, got };
    }
    FrameRead::Frame(Frame {
        index: u64_at(buf, 8),
        term: u64_at(buf, 16),
        crc: expected,
        payload: &buf[RECORD_HEADER_LEN..total],
    })
}

/// The file name of the segment whose first record is `first_index`.
pub fn segment_file_name(first_index: u64) -> String {
    numbered_file_name(first_index, SEGMENT_EXTENSION)
}

/// The first index encoded in a segment file name, if `name` is one.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_numbered_file_name(name, SEGMENT_EXTENSION)
}

/// The file name of the archive segment whose header says `first_id`.
pub fn archive_file_name(first_id: u64) -> String {
    numbered_file_name(first_id, ARCHIVE_EXTENSION)
}

/// The first id encoded in an archive segment file name, if `name` is one.
pub fn parse_archive_file_name(name: &str) -> Option<u64> {
    parse_numbered_file_name(name, ARCHIVE_EXTENSION)
}

/// The name of the hint file of the archive segment named `segment`.
pub fn hint_file_name(segment: &str) -> String {
    format!("{segment}.{HINT_EXTENSION}")
}

fn numbered_file_name(number: u64, extension: &str) -> String {
    format!("{number:020}.{extension}")
}

fn parse_numbered_file_name(name: &str, extension: &str) -> Option<u64> {
    let stem = name.strip_suffix(extension)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader::chained(7, 100, 0xdead_beef);
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        assert_eq!(h.prev_last_index, 99);
        assert!(!h.is_base());
        assert!(SegmentHeader::base(7, 0).is_base());

        let mut bad = bytes;
        bad[21] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bad),
            Err(HeaderProblem::BadChecksum { .. })
        ));
        assert_eq!(
            SegmentHeader::decode(&bytes[..10]),
            Err(HeaderProblem::TooShort { len: 10, need: 48 })
        );
        let mut other = bytes;
        other[0] = b'X';
        assert!(matches!(
            SegmentHeader::decode(&other),
            Err(HeaderProblem::BadMagic { .. })
        ));
        // An archive header is not a log segment header, nor the reverse.
        assert!(matches!(
            SegmentHeader::decode(&[ArchiveHeader::new(7).encode(); 2].concat()),
            Err(HeaderProblem::BadMagic { .. })
        ));
        assert!(matches!(
            ArchiveHeader::decode(&bytes),
            Err(HeaderProblem::BadMagic { .. })
        ));
    }

    #[test]
    fn archive_header_round_trips_and_rejects_damage() {
        let h = ArchiveHeader::new(4_217_003);
        let bytes = h.encode();
        assert_eq!(ArchiveHeader::decode(&bytes), Ok(h));
        for i in 0..ARCHIVE_HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x10;
            assert!(ArchiveHeader::decode(&bad).is_err(), "byte {i}");
        }
        assert_eq!(
            ArchiveHeader::decode(&bytes[..23]),
            Err(HeaderProblem::TooShort { len: 23, need: 24 })
        );
    }

    #[test]
    fn frame_round_trips_and_checks_before_parsing() {
        let mut buf = Vec::new();
        let crc = encode_frame(&mut buf, 5, 2, b"hello");
        match read_frame(&buf) {
            FrameRead::Frame(f) => {
                assert_eq!(
                    (f.index, f.term, f.crc, f.payload),
                    (5, 2, crc, &b"hello"[..])
                );
                assert_eq!(f.len(), buf.len());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            read_frame(&buf[..buf.len() - 1]),
            FrameRead::Incomplete { needed: buf.len() }
        );
        let mut flipped = buf.clone();
        flipped[RECORD_HEADER_LEN] ^= 0x40;
        assert!(matches!(
            read_frame(&flipped),
            FrameRead::BadChecksum { .. }
        ));
        let mut huge = buf.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_frame(&huge), FrameRead::BadLength { .. }));
        // A zeroed frame never passes its checksum.
        assert!(matches!(
            read_frame(&[0u8; 64]),
            FrameRead::BadChecksum { .. }
        ));
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log.tmp"),
            None
        );
        assert_eq!(archive_file_name(42), "00000000000000000042.arc");
        assert_eq!(
            parse_archive_file_name("00000000000000000042.arc"),
            Some(42)
        );
        assert_eq!(parse_archive_file_name("00000000000000000042.log"), None);
        assert_eq!(
            hint_file_name("00000000000000000042.arc"),
            "00000000000000000042.arc.hint"
        );
    }
}
