//! Small durable state kept beside the log (the Raft vote, the committed and
//! last-purged ids, snapshots): one value per file, in the same CRC framing
//! as records, replaced atomically so a crash leaves the old or the new value
//! and never a mix.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Corruption, CorruptionKind, Error, Result};
use crate::format::{
    FORMAT_VERSION, FrameRead, STATE_MAGIC, TEMP_EXTENSION, encode_frame, read_frame_up_to,
};
use crate::log::sync_dir;

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
        if u32::try_from(payload.len()).is_err() {
            return Err(Error::PayloadTooLarge {
                index: 0,
                len: payload.len(),
                max: u32::MAX,
            });
        }
        let mut bytes = Vec::with_capacity(STATE_HEADER_LEN + 24 + payload.len());
        bytes.extend_from_slice(&STATE_MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&[0, 0]);
        encode_frame(&mut bytes, 0, 0, payload);

        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".{TEMP_EXTENSION}"));
        let tmp = PathBuf::from(tmp);
        let mut file = File::create(&tmp).map_err(Error::io("create state file", &tmp))?;
        file.write_all(&bytes)
            .map_err(Error::io("write state file", &tmp))?;
        file.sync_all()
            .map_err(Error::io("sync state file", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(Error::io("rename state file", &tmp))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        sync_dir(dir)
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
    pub fn load_bytes(&self) -> Result<Option<Vec<u8>>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read state file", &self.path)(e)),
        };
        let corrupt = |offset: usize, kind| -> Error {
            Corruption {
                file: self.path.clone(),
                offset: offset as u64,
                index: None,
                kind,
            }
            .into()
        };
        if bytes.len() < STATE_HEADER_LEN || bytes[0..8] != STATE_MAGIC {
            return Err(corrupt(
                0,
                CorruptionKind::BadHeader("not a state file (bad magic bytes)".into()),
            ));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(corrupt(
                8,
                CorruptionKind::BadHeader(format!(
                    "state file version {version} is not supported (this build reads version {FORMAT_VERSION})"
                )),
            ));
        }
        match read_frame_up_to(&bytes[STATE_HEADER_LEN..], u32::MAX) {
            FrameRead::Frame(f) => Ok(Some(f.payload.to_vec())),
            FrameRead::Incomplete { .. } => {
                Err(corrupt(STATE_HEADER_LEN, CorruptionKind::Truncated))
            }
            FrameRead::BadLength { len } => {
                Err(corrupt(STATE_HEADER_LEN, CorruptionKind::BadLength { len }))
            }
            FrameRead::BadChecksum { expected, got } => Err(corrupt(
                STATE_HEADER_LEN,
                CorruptionKind::BadChecksum { expected, got },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
