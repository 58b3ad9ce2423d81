//! Small durable state kept beside the log (the Raft vote, the committed and
//! last-purged ids, snapshots): one value per file, in the same CRC framing
//! as records, replaced atomically so a crash leaves the old or the new value
//! and never a mix.
//!
//! [`RaftMarks`] reads the committed and purged ids without openraft, so a
//! log that lost records the cluster had acknowledged is caught (by the
//! server at start-up and by `log-inspect verify`) with a message that says
//! which records and what to do.

use std::fs;
use std::io::{self, Write as _};
use std::ops::RangeInclusive;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::durable::{create_atomically, create_atomically_with};
use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::format::{
    COMMITTED_FILE, FORMAT_VERSION, FrameRead, PURGED_FILE, RECORD_HEADER_LEN, STATE_MAGIC,
    encode_frame_header, frame_crc_of_parts, frame_crc_start, read_frame_up_to,
};
use crate::scan::damage_of;

/// Bytes before the frame: magic, version, reserved.
pub const STATE_HEADER_LEN: usize = 12;

/// A file holding one value, replaced atomically on every store.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        StateFile {
            path: dir.join(name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `value`: temp file, fsync, rename over the old file, fsync of
    /// the directory. Returns once the new value is durable.
    pub fn store<T: Serialize>(&self, value: &T) -> Result<()> {
        let payload = postcard::to_stdvec(value).map_err(|source| Error::Decode {
            what: "cannot encode state",
            path: self.path.clone(),
            source,
        })?;
        self.store_bytes(&payload)
    }

    /// Writes raw bytes as the value (at most 4 GiB).
    pub fn store_bytes(&self, payload: &[u8]) -> Result<()> {
        store_framed(&self.path, STATE_MAGIC, 0, &[payload])
    }

    /// Writes the value `(head, bytes)`: what [`store`](Self::store) of a
    /// struct of `head`'s fields followed by a byte string would write
    /// (and [`load`](Self::load) reads back as such), but with `bytes`
    /// written from where they lie, not copied into an encoding first: a
    /// snapshot's hundreds of MB of encoded state are not held twice.
    pub fn store_with_bytes<T: Serialize>(&self, head: &T, bytes: &[u8]) -> Result<()> {
        let prefix = self.prefix_of(head, bytes.len())?;
        store_framed(&self.path, STATE_MAGIC, 0, &[&prefix, bytes])
    }

    /// What comes before `len` bytes in the value `(head, bytes)`: `head`,
    /// then the byte string's length (a varint like any length).
    fn prefix_of<T: Serialize>(&self, head: &T, len: usize) -> Result<Vec<u8>> {
        let encode_error = |source| Error::Decode {
            what: "cannot encode state",
            path: self.path.clone(),
            source,
        };
        let mut prefix = postcard::to_stdvec(head).map_err(encode_error)?;
        prefix.extend(postcard::to_stdvec(&len).map_err(encode_error)?);
        Ok(prefix)
    }

    /// [`store_with_bytes`](Self::store_with_bytes) of `len` bytes that
    /// `write` writes, straight into the file: a value of hundreds of MB
    /// (a snapshot, encoded as it is written) is never in memory whole.
    /// The bytes are checksummed as they pass; anything but exactly `len`
    /// of them is an error, and then the old value stays.
    pub fn store_with_written_bytes<T: Serialize>(
        &self,
        head: &T,
        len: usize,
        write: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    ) -> Result<()> {
        let prefix = self.prefix_of(head, len)?;
        let total = prefix.len() + len;
        let Ok(total32) = u32::try_from(total) else {
            return Err(Error::PayloadTooLarge {
                index: 0,
                len: total,
                max: u32::MAX,
            });
        };
        create_atomically_with(&self.path, |file, tmp| {
            let failed = |op| Error::io(op, tmp);
            // The frame's CRC is written once the bytes it covers are known.
            let mut header = state_header(STATE_MAGIC);
            encode_frame_header(&mut header, 0, 0, total32, 0);
            file.write_all(&header).map_err(failed("write"))?;
            let mut crc = frame_crc_start(0, 0, total32);
            crc.update(&prefix);
            file.write_all(&prefix).map_err(failed("write"))?;
            let mut counted = Checksummed {
                file: &mut *file,
                crc,
                written: 0,
            };
            {
                let mut out = io::BufWriter::with_capacity(1 << 20, &mut counted);
                write(&mut out).map_err(failed("write"))?;
                out.flush().map_err(failed("write"))?;
            }
            if counted.written != len {
                return Err(failed("write")(io::Error::other(format!(
                    "{} bytes written where {len} were announced",
                    counted.written
                ))));
            }
            let crc = counted.crc.finalize();
            file.write_all_at(&crc.to_le_bytes(), (STATE_HEADER_LEN + 4) as u64)
                .map_err(failed("write"))
        })
        .map(drop)
    }

    /// Reads the value, or `None` if the file does not exist.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        let Some(payload) = self.load_bytes()? else {
            return Ok(None);
        };
        postcard::from_bytes(&payload)
            .map(Some)
            .map_err(|source| Error::Decode {
                what: "cannot decode state",
                path: self.path.clone(),
                source,
            })
    }

    /// Reads the raw value bytes, or `None` if the file does not exist.
    pub fn load_bytes(&self) -> Result<Option<StateBytes>> {
        Ok(load_framed(&self.path, STATE_MAGIC, "state file")?.map(|(_, payload)| payload))
    }
}

/// A value read from a state file: the file's bytes, of which the value is
/// a part, so that a large value (a snapshot of hundreds of MB) is not
/// copied out of them.
#[derive(Debug)]
pub struct StateBytes {
    file: Vec<u8>,
    value: std::ops::Range<usize>,
}

impl std::ops::Deref for StateBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.file[self.value.clone()]
    }
}

/// A writer into `file` that checksums and counts what passes.
struct Checksummed<'a> {
    file: &'a mut fs::File,
    crc: crc32fast::Hasher,
    written: usize,
}

impl io::Write for Checksummed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The bytes a framed file starts with: `magic`, [`FORMAT_VERSION`], two
/// reserved bytes.
fn state_header(magic: [u8; 8]) -> Vec<u8> {
    let mut head = Vec::with_capacity(STATE_HEADER_LEN + RECORD_HEADER_LEN);
    head.extend_from_slice(&magic);
    head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&[0, 0]);
    head
}

/// Writes a file of `magic`, [`FORMAT_VERSION`], two reserved bytes and one
/// frame holding `index` and the payload made of `parts` (at most 4 GiB in
/// all), atomically. State files and the archive's hint files are such
/// files. The payload is written from its parts, not copied into one
/// buffer first.
pub(crate) fn store_framed(path: &Path, magic: [u8; 8], index: u64, parts: &[&[u8]]) -> Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let Ok(len32) = u32::try_from(len) else {
        return Err(Error::PayloadTooLarge {
            index,
            len,
            max: u32::MAX,
        });
    };
    let mut head = state_header(magic);
    encode_frame_header(
        &mut head,
        index,
        0,
        len32,
        frame_crc_of_parts(index, 0, parts),
    );
    let mut all = Vec::with_capacity(parts.len() + 1);
    all.push(&head[..]);
    all.extend_from_slice(parts);
    create_atomically(path, &all).map(drop)
}

/// Reads a file written by [`store_framed`] with `magic` (a `what`, for
/// messages): its frame's index and payload, or `None` if there is no file.
/// Any damage is a [`Corruption`] naming the file.
pub(crate) fn load_framed(
    path: &Path,
    magic: [u8; 8],
    what: &str,
) -> Result<Option<(u64, StateBytes)>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", path)(e)),
    };
    let corrupt = |offset: usize, kind| -> Error {
        Corruption {
            file: path.to_path_buf(),
            offset: offset as u64,
            index: None,
            kind,
        }
        .into()
    };
    if bytes.len() < STATE_HEADER_LEN || bytes[0..8] != magic {
        return Err(corrupt(
            0,
            CorruptionKind::BadHeader(format!("not a {what} (bad magic bytes)")),
        ));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(
            8,
            CorruptionKind::BadHeader(format!(
                "{what} version {version} is not supported (this build reads version {FORMAT_VERSION})"
            )),
        ));
    }
    match read_frame_up_to(&bytes[STATE_HEADER_LEN..], u32::MAX) {
        FrameRead::Frame(f) => {
            let start = f.payload.as_ptr().addr() - bytes.as_ptr().addr();
            let value = start..start + f.payload.len();
            let index = f.index;
            Ok(Some((index, StateBytes { file: bytes, value })))
        }
        damaged => Err(corrupt(
            STATE_HEADER_LEN,
            damage_of(&damaged).expect("not a frame"),
        )),
    }
}

/// A Raft log id as the server's state files hold it, with the same postcard
/// bytes as openraft 0.9's `LogId<u64>` (`{ leader_id: { term, node_id },
/// index }`, default features). Postcard writes a struct as its fields in
/// order with nothing around them, so these flat fields read the nested ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftLogId {
    /// The term of the leader that proposed the record.
    pub term: u64,
    /// The node id of that leader.
    pub node_id: u64,
    pub index: u64,
}

/// How far the log was committed and purged, as saved beside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaftMarks {
    /// The last committed id the server saved; records up to it were
    /// acknowledged by the cluster.
    pub committed: Option<RaftLogId>,
    /// The last id purged from the log; records up to it are in a snapshot
    /// instead.
    pub purged: Option<RaftLogId>,
}

impl RaftMarks {
    /// Reads [`COMMITTED_FILE`] and [`PURGED_FILE`] in `dir`; a missing file
    /// is no mark.
    pub fn load(dir: &Path) -> Result<RaftMarks> {
        let load = |name| {
            StateFile::new(dir, name)
                .load::<Option<RaftLogId>>()
                .map(Option::flatten)
        };
        Ok(RaftMarks {
            committed: load(COMMITTED_FILE)?,
            purged: load(PURGED_FILE)?,
        })
    }

    /// The committed records that neither the log (whose records end before
    /// `next_index`) nor the snapshot holds, if any.
    pub fn missing(&self, next_index: u64) -> Option<RangeInclusive<u64>> {
        let committed = self.committed?.index;
        let held_until = self
            .purged
            .map_or(next_index, |p| next_index.max(p.index.saturating_add(1)));
        (committed >= held_until).then_some(held_until..=committed)
    }

    /// Fails with [`Error::CommittedMissing`] if committed records are
    /// missing from the log in `dir`, whose records end before `next_index`.
    pub fn check(&self, dir: &Path, next_index: u64) -> Result<()> {
        match self.missing(next_index) {
            None => Ok(()),
            Some(range) => Err(Error::CommittedMissing {
                dir: dir.to_path_buf(),
                first: *range.start(),
                last: *range.end(),
            }),
        }
    }
}

/// Checks that the log in `dir`, whose records end before `next_index`
/// ([`Log::next_index`](crate::Log::next_index) after open), still holds
/// every record its committed mark says the cluster acknowledged (those
/// purged into a snapshot count as held). A directory without a committed
/// mark passes; a log cut inside its uncommitted tail passes.
///
/// Fails with [`Error::CommittedMissing`], or with the error of a state file
/// that cannot be read.
pub fn check_committed(dir: &Path, next_index: u64) -> Result<()> {
    RaftMarks::load(dir)?.check(dir, next_index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u64) -> RaftLogId {
        RaftLogId {
            term: 2,
            node_id: 1,
            index,
        }
    }

    /// openraft's `Option<LogId<u64>>` in postcard: option tag, then term,
    /// node id and index as varints. A change here breaks reading the
    /// server's files.
    #[test]
    fn log_id_bytes_match_openraft() {
        let some = Some(RaftLogId {
            term: 3,
            node_id: 1,
            index: 204,
        });
        assert_eq!(
            postcard::to_stdvec(&some).unwrap(),
            [0x01, 0x03, 0x01, 0xcc, 0x01]
        );
        assert_eq!(postcard::to_stdvec(&None::<RaftLogId>).unwrap(), [0x00]);

        let dir = tempfile::tempdir().unwrap();
        StateFile::new(dir.path(), COMMITTED_FILE)
            .store_bytes(&[0x01, 0x03, 0x01, 0xcc, 0x01])
            .unwrap();
        StateFile::new(dir.path(), PURGED_FILE)
            .store_bytes(&[0x00])
            .unwrap();
        assert_eq!(
            RaftMarks::load(dir.path()).unwrap(),
            RaftMarks {
                committed: some,
                purged: None
            }
        );
    }

    #[test]
    fn missing_counts_the_log_and_the_snapshot_as_held() {
        #[track_caller]
        fn check(
            committed: Option<u64>,
            purged: Option<u64>,
            next_index: u64,
            expected: Option<RangeInclusive<u64>>,
        ) {
            let marks = RaftMarks {
                committed: committed.map(id),
                purged: purged.map(id),
            };
            assert_eq!(marks.missing(next_index), expected);
        }
        // No committed mark: nothing can be known missing.
        check(None, None, 0, None);
        check(None, Some(50), 10, None);
        // The log holds 0..=204, or a cut left only the uncommitted tail short.
        check(Some(204), None, 205, None);
        check(Some(204), None, 300, None);
        // A lost tail under the committed mark.
        check(Some(204), None, 204, Some(204..=204));
        check(Some(204), None, 201, Some(201..=204));
        check(Some(0), None, 0, Some(0..=0));
        // Everything up to the purged mark is in a snapshot.
        check(Some(204), Some(204), 0, None);
        check(Some(204), Some(300), 120, None);
        check(Some(204), Some(199), 150, Some(200..=204));
        check(Some(204), Some(100), 202, Some(202..=204));
    }

    #[test]
    fn check_names_the_directory_the_range_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_committed(dir.path(), 0).is_ok(), "no committed file");
        StateFile::new(dir.path(), COMMITTED_FILE)
            .store(&Some(id(204)))
            .unwrap();
        assert!(check_committed(dir.path(), 205).is_ok());
        let err = check_committed(dir.path(), 201).unwrap_err();
        assert!(matches!(
            err,
            Error::CommittedMissing {
                first: 201,
                last: 204,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "the log in {} ends before record 201, but its raft-committed file says records \
                 up to 204 were committed: acknowledged records 201..204 are missing. Restore the \
                 directory from a backup, or rebuild this replica from its cluster: remove it with \
                 `chat-server cluster remove`, move the directory aside, and start it again with \
                 `--join`",
                dir.path().display()
            )
        );
    }

    /// A snapshot of a large state is far bigger than any log record.
    #[test]
    fn values_larger_than_a_record_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), "snapshot");
        let big: Vec<u8> = (0..(crate::format::MAX_PAYLOAD_LEN as usize + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        f.store_bytes(&big).unwrap();
        assert_eq!(f.load_bytes().unwrap().as_deref(), Some(&big[..]));
    }

    /// A head and a byte string written from two places make the same
    /// file as the struct of both stored whole, and read back as it.
    #[test]
    fn a_value_stored_with_its_bytes_apart_is_the_value_stored_whole() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Head {
            id: String,
            at: u64,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Whole {
            head: Head,
            data: Vec<u8>,
        }
        let dir = tempfile::tempdir().unwrap();
        let (apart, written, whole) = (
            StateFile::new(dir.path(), "apart"),
            StateFile::new(dir.path(), "written"),
            StateFile::new(dir.path(), "whole"),
        );
        for len in [0, 1, 127, 128, 300_000, 3_000_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let head = Head {
                id: format!("snapshot-{len}"),
                at: len as u64 * 7,
            };
            apart.store_with_bytes(&head, &data).unwrap();
            // Written in uneven pieces, as an encoder writes.
            written
                .store_with_written_bytes(&head, len, |out| {
                    for piece in data.chunks(1 + len / 7) {
                        out.write_all(piece)?;
                    }
                    Ok(())
                })
                .unwrap();
            let value = Whole { head, data };
            whole.store(&value).unwrap();
            let expected = fs::read(whole.path()).unwrap();
            assert_eq!(fs::read(apart.path()).unwrap(), expected, "{len} bytes");
            assert_eq!(fs::read(written.path()).unwrap(), expected, "{len} bytes");
            assert_eq!(apart.load::<Whole>().unwrap(), Some(value));
        }
    }

    /// Bytes written that are not as many as announced, or a writer that
    /// fails, leave the stored value as it was.
    #[test]
    fn a_value_written_short_or_long_or_failing_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), "snapshot");
        f.store_with_bytes(&7u64, b"kept").unwrap();
        let before = fs::read(f.path()).unwrap();
        let short = f.store_with_written_bytes(&8u64, 5, |out| out.write_all(b"four"));
        let long = f.store_with_written_bytes(&8u64, 3, |out| out.write_all(b"four"));
        let failing = f.store_with_written_bytes(&8u64, 4, |out| {
            out.write_all(b"fo")?;
            Err(io::Error::other("the encoder failed"))
        });
        for result in [short, long, failing] {
            assert!(result.is_err());
        }
        assert_eq!(fs::read(f.path()).unwrap(), before);
    }

    #[test]
    fn stores_replaces_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), "vote");
        assert_eq!(f.load::<(u64, u64)>().unwrap(), None);
        f.store(&(3u64, 7u64)).unwrap();
        f.store(&(4u64, 9u64)).unwrap();
        assert_eq!(f.load::<(u64, u64)>().unwrap(), Some((4, 9)));
        assert!(!dir.path().join("vote.tmp").exists());

        let mut bytes = fs::read(f.path()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(f.path(), &bytes).unwrap();
        let err = f.load::<(u64, u64)>().unwrap_err();
        let c = err.corruption().expect("corruption");
        assert_eq!(c.offset, STATE_HEADER_LEN as u64);
        assert!(matches!(c.kind, CorruptionKind::BadChecksum { .. }));
    }
}
