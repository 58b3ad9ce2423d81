//! The few file-system moves every writer in this crate makes the same way,
//! so that a crash at any instant leaves either the old or the new state:
//! atomic creation (temp file, fsync, rename, fsync of the directory), the
//! directory sync itself, the lock that keeps a second process out, and
//! cutting a torn tail off a segment after saving it to a `.broken` file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{BROKEN_EXTENSION, TEMP_EXTENSION};
use crate::scan::TornTail;

/// Name of the lock file that keeps two processes from writing one log.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// `path` with `.tmp` added: where a file is written before it is renamed
/// into place.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{TEMP_EXTENSION}"));
    PathBuf::from(tmp)
}

/// Writes `parts` one after another to a new file at `path`, atomically:
/// temp file, fsync, rename over whatever `path` was, fsync of the directory.
/// Returns the new file, open for reading and writing.
pub(crate) fn create_atomically(path: &Path, parts: &[&[u8]]) -> Result<File> {
    create_atomically_with(path, |file, tmp| {
        for part in parts {
            file.write_all(part).map_err(Error::io("write", tmp))?;
        }
        Ok(())
    })
}

/// [`create_atomically`] of what `write` writes to the temp file (given
/// with its path, for errors). Nothing replaces `path` if `write` fails.
pub(crate) fn create_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut File, &Path) -> Result<()>,
) -> Result<File> {
    let tmp = temp_path(path);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(Error::io("create", &tmp))?;
    if let Err(e) = write(&mut file, &tmp) {
        drop(file);
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    file.sync_all().map_err(Error::io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(Error::io("rename", &tmp))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(file)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync directory", dir))
}

/// Takes the [`LOCK_FILE_NAME`] lock of `dir` for as long as the returned
/// file stays open.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("lock", &path)(e)),
    }
}

/// Saves the damaged bytes of a torn tail next to the segment (as
/// `<segment>.<offset>.broken`) and cuts the segment back to its last valid
/// record, durably. Returns the `.broken` file.
pub(crate) fn cut_torn_tail(torn: &TornTail) -> Result<PathBuf> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&torn.file)
        .map_err(Error::io("open segment", &torn.file))?;
    let mut damaged = vec![0u8; torn.len as usize];
    file.read_exact_at(&mut damaged, torn.offset)
        .map_err(Error::io("read torn tail", &torn.file))?;
    let mut broken = torn.file.clone().into_os_string();
    broken.push(format!(".{}.{BROKEN_EXTENSION}", torn.offset));
    let broken = PathBuf::from(broken);
    let mut out = File::create(&broken).map_err(Error::io("create", &broken))?;
    out.write_all(&damaged)
        .map_err(Error::io("write", &broken))?;
    out.sync_all().map_err(Error::io("sync", &broken))?;
    file.set_len(torn.offset)
        .map_err(Error::io("truncate segment", &torn.file))?;
    file.sync_all()
        .map_err(Error::io("sync segment", &torn.file))?;
    Ok(broken)
}
