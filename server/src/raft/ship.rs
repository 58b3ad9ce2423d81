//! A snapshot as it travels to another replica: the index snapshot followed
//! by every archived message up to its point, so a replica that joins from
//! empty (or fell behind a purged log) serves the full history.
//!
//! The data is a file in `DIR/ship/`, written only when a replica asks for
//! it: openraft also asks for the current snapshot at start-up, only for its
//! metadata, and copying the whole archive there would make every restart
//! as slow as the archive is large. [`ShipData`] is openraft's snapshot data
//! type: it builds its file on the first read or seek.
//!
//! Layout: `chatship`, a u16 version, a u64 length and that many bytes of
//! the stored index snapshot; then per message a byte 1, a u64 id, a u32
//! length and the archive payload; then a byte 0 and the CRC-32 of every
//! byte before the CRC. All integers little-endian.

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use log_format::events::{ArchivedMessage, decode_archived, encode_archived};
use log_format::{Archive, ArchiveReader};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

const MAGIC: &[u8; 8] = b"chatship";
const VERSION: u16 = 1;
/// The directory, inside the data directory, of snapshot files to ship.
pub const SHIP_DIR: &str = "ship";
/// The file a snapshot from the leader is received into.
const INCOMING: &str = "incoming.ship";
/// Messages appended to the archive per batch while installing.
const INSTALL_BATCH: usize = 1024;

/// Removes the files of snapshots to ship (all but `keep`, if given):
/// they hold message bodies, so they go when the snapshot they were made
/// for is replaced, as erased bodies must. A file a replica is still being
/// sent stays readable through its open handle.
pub fn remove_files(dir: &Path, keep: Option<&Path>) -> io::Result<()> {
    let Ok(entries) = fs::read_dir(dir.join(SHIP_DIR)) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if Some(entry.path().as_path()) != keep {
            match fs::remove_file(entry.path()) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(())
}

/// What a ship file is built from.
pub struct ShipSource {
    pub dir: PathBuf,
    /// The snapshot's id, which names the file.
    pub snapshot_id: String,
    /// The stored index snapshot, read from disk when the file is built.
    pub index: Box<dyn FnOnce() -> io::Result<Vec<u8>> + Send>,
    /// Messages with ids up to this are shipped.
    pub up_to: u64,
    pub archive: ArchiveReader,
}

impl std::fmt::Debug for ShipSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipSource")
            .field("snapshot_id", &self.snapshot_id)
            .field("up_to", &self.up_to)
            .finish_non_exhaustive()
    }
}

/// openraft's snapshot data: a file, built on first use when it ships a
/// snapshot, or written by openraft when it receives one.
pub struct ShipData {
    state: State,
    /// A seek asked for before the file was built.
    seek: Option<SeekFrom>,
}

enum State {
    Pending(Option<ShipSource>),
    Building(JoinHandle<io::Result<File>>),
    Ready(tokio::fs::File),
}

impl std::fmt::Debug for ShipData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Pending(_) => "pending",
            State::Building(_) => "building",
            State::Ready(_) => "ready",
        };
        f.debug_struct("ShipData").field("state", &state).finish()
    }
}

impl ShipData {
    /// Data that is built from `source` when first read.
    pub fn lazy(source: ShipSource) -> ShipData {
        ShipData {
            state: State::Pending(Some(source)),
            seek: None,
        }
    }

    /// An empty file in `dir`'s ship directory to receive a snapshot into.
    pub fn receiving(dir: &Path) -> io::Result<ShipData> {
        let ship = dir.join(SHIP_DIR);
        fs::create_dir_all(&ship)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(ship.join(INCOMING))?;
        Ok(ShipData {
            state: State::Ready(tokio::fs::File::from_std(file)),
            seek: None,
        })
    }

    /// The file, once built or received.
    pub async fn into_file(mut self) -> io::Result<File> {
        std::future::poll_fn(|cx| self.poll_file(cx).map_ok(|_| ())).await?;
        match self.state {
            State::Ready(file) => Ok(file.into_std().await),
            _ => unreachable!("poll_file left it ready"),
        }
    }

    fn poll_file(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut tokio::fs::File>> {
        loop {
            let next = match &mut self.state {
                State::Pending(source) => {
                    let source = source.take().expect("taken once");
                    State::Building(tokio::task::spawn_blocking(move || build(source)))
                }
                State::Building(task) => {
                    let built = ready!(Pin::new(task).poll(cx)).map_err(io::Error::other)??;
                    State::Ready(tokio::fs::File::from_std(built))
                }
                State::Ready(_) => break,
            };
            self.state = next;
        }
        let State::Ready(file) = &mut self.state else {
            unreachable!("the loop ends when the file is ready")
        };
        if let Some(pos) = self.seek.take() {
            Pin::new(&mut *file).start_seek(pos)?;
        }
        Poll::Ready(Ok(file))
    }
}

impl AsyncRead for ShipData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let file = ready!(this.poll_file(cx))?;
        Pin::new(file).poll_read(cx, buf)
    }
}

impl AsyncSeek for ShipData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready(file) => Pin::new(file).start_seek(position),
            _ => {
                this.seek = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        let file = ready!(this.poll_file(cx))?;
        Pin::new(file).poll_complete(cx)
    }
}

impl AsyncWrite for ShipData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let file = ready!(this.poll_file(cx))?;
        Pin::new(file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let file = ready!(this.poll_file(cx))?;
        Pin::new(file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let file = ready!(this.poll_file(cx))?;
        Pin::new(file).poll_shutdown(cx)
    }
}

/// The file name of the snapshot `id` (ids hold `-` and digits; anything
/// else is replaced).
fn file_name(snapshot_id: &str) -> String {
    let safe: String = (snapshot_id.chars())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.ship")
}

/// Writes (or reuses) the ship file of `source`, and opens it.
fn build(source: ShipSource) -> io::Result<File> {
    let ship = source.dir.join(SHIP_DIR);
    fs::create_dir_all(&ship)?;
    let path = ship.join(file_name(&source.snapshot_id));
    if let Ok(file) = File::open(&path) {
        return Ok(file);
    }
    let started = std::time::Instant::now();
    let tmp = path.with_extension("ship.tmp");
    let mut out = Hashing::new(BufWriter::new(File::create(&tmp)?));
    out.write_all(MAGIC)?;
    out.write_all(&VERSION.to_le_bytes())?;
    let index = (source.index)()?;
    out.write_all(&(index.len() as u64).to_le_bytes())?;
    out.write_all(&index)?;
    drop(index);
    let mut messages = 0u64;
    for record in source.archive.range(0, source.up_to) {
        let (id, message) = record.map_err(io::Error::other)?;
        let payload = encode_archived(&message);
        out.write_all(&[1])?;
        out.write_all(&id.to_le_bytes())?;
        out.write_all(&(payload.len() as u32).to_le_bytes())?;
        out.write_all(&payload)?;
        messages += 1;
    }
    out.write_all(&[0])?;
    let crc = out.hasher.clone().finalize();
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes())?;
    inner.into_inner().map_err(|e| e.into_error())?;
    fs::rename(&tmp, &path)?;
    tracing::info!(
        file = %path.display(),
        messages,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "wrote a snapshot to send to a replica"
    );
    File::open(&path)
}

/// A ship file, checked and split: the stored index snapshot, with the
/// messages still to be read by [`Received::install_messages`].
pub struct Received {
    pub index: Vec<u8>,
    reader: BufReader<File>,
}

/// Reads a received ship file's header and index after checking its CRC.
pub fn receive(mut file: File) -> io::Result<Received> {
    let bad =
        |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("snapshot file {why}"));
    file.seek(SeekFrom::Start(0))?;
    let len = file.metadata()?.len();
    if len < 8 + 2 + 8 + 1 + 4 {
        return Err(bad("is too short"));
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut left = len - 4;
    let mut reader = BufReader::with_capacity(1 << 20, &mut file);
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = reader.read(&mut buf[..left.min(1 << 16) as usize])?;
        if n == 0 {
            return Err(bad("ended early"));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut crc = [0u8; 4];
    reader.read_exact(&mut crc)?;
    if hasher.finalize() != u32::from_le_bytes(crc) {
        return Err(bad("fails its CRC check"));
    }
    drop(reader);
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut head = [0u8; 18];
    reader.read_exact(&mut head)?;
    if &head[..8] != MAGIC {
        return Err(bad("does not start with chatship"));
    }
    let version = u16::from_le_bytes([head[8], head[9]]);
    if version != VERSION {
        return Err(bad(&format!(
            "has version {version}; this build reads {VERSION}"
        )));
    }
    let index_len = u64::from_le_bytes(head[10..18].try_into().expect("8 bytes"));
    if index_len > len {
        return Err(bad("has an index longer than itself"));
    }
    let mut index = vec![0u8; index_len as usize];
    reader.read_exact(&mut index)?;
    Ok(Received { index, reader })
}

impl Received {
    /// Appends every message of the file to `archive` (which the caller
    /// cleared), then syncs it. Returns how many.
    pub fn install_messages(mut self, archive: &mut Archive) -> anyhow::Result<u64> {
        let mut batch: Vec<(u64, ArchivedMessage)> = Vec::with_capacity(INSTALL_BATCH);
        let mut total = 0u64;
        loop {
            let mut tag = [0u8; 1];
            self.reader.read_exact(&mut tag)?;
            let more = match tag[0] {
                0 => false,
                1 => true,
                other => anyhow::bail!("snapshot file has a record tagged {other}"),
            };
            if more {
                let mut id = [0u8; 8];
                self.reader.read_exact(&mut id)?;
                let id = u64::from_le_bytes(id);
                let mut len = [0u8; 4];
                self.reader.read_exact(&mut len)?;
                let mut payload = vec![0u8; u32::from_le_bytes(len) as usize];
                self.reader.read_exact(&mut payload)?;
                batch.push((id, decode_archived(&payload)?));
            }
            if batch.len() == INSTALL_BATCH || (!more && !batch.is_empty()) {
                let refs: Vec<_> = batch.iter().map(|(id, m)| (*id, m)).collect();
                archive.append_batch(&refs)?;
                total += batch.len() as u64;
                batch.clear();
            }
            if !more {
                break;
            }
        }
        archive.sync()?;
        Ok(total)
    }
}

/// A writer that keeps the CRC-32 of what went through it.
struct Hashing<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
