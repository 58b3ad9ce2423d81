//! The saved session, so a restart does not ask for the password again:
//! `$XDG_STATE_HOME/chat-tui/session` (by default
//! `~/.local/state/chat-tui/session`), readable by its owner only (mode
//! 0600, in a 0700 directory). It holds the server list and the session
//! token of the last sign-in, never the password. It is written after a
//! login, used at the next start until the server says the session has
//! ended (idle, logged out, the account deleted), and deleted then, on
//! logging out, and by `--forget`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the saved session lives; `None` if the system has no place for it.
pub fn path() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|dir| dir.join("chat-tui").join("session"))
}

/// A session to resume.
#[derive(Clone, PartialEq, Eq)]
pub struct Saved {
    /// The servers it was opened on.
    pub servers: Vec<String>,
    /// Whose it is.
    pub username: String,
    /// Its token.
    pub token: String,
}

/// Never the token.
impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("servers", &self.servers)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Saved {
    /// The saved session at `path`; `None` if there is none or it cannot be
    /// read (a session is then simply not resumed).
    pub fn load(path: &Path) -> Option<Self> {
        let text = fs::read_to_string(path).ok()?;
        let mut servers = Vec::new();
        let mut username = String::new();
        let mut token = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("servers", value)) => {
                    servers = (value.split(','))
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                Some(("username", value)) => username = value.trim().to_owned(),
                Some(("token", value)) if !value.trim().is_empty() => {
                    token = Some(value.trim().to_owned());
                }
                _ => {}
            }
        }
        Some(Self {
            servers,
            username,
            token: token?,
        })
    }

    /// Writes it to `path`, readable by its owner only, replacing what was
    /// there at once (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        // tempfile creates its files with mode 0600.
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        writeln!(file, "servers={}", self.servers.join(","))?;
        writeln!(file, "username={}", self.username)?;
        writeln!(file, "token={}", self.token)?;
        file.as_file().sync_all()?;
        file.persist(path).map_err(|error| error.error)?;
        Ok(())
    }
}

/// Deletes the saved session at `path`, if there is one.
pub fn forget(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_for_its_owner_only_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("chat-tui").join("session");
        assert_eq!(Saved::load(&path), None);
        let saved = Saved {
            servers: vec!["a:1".to_owned(), "b:2".to_owned()],
            username: "alice".to_owned(),
            token: "0123abcd".to_owned(),
        };
        saved.save(&path).unwrap();
        assert_eq!(Saved::load(&path), Some(saved.clone()));
        assert!(!format!("{saved:?}").contains("0123abcd"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
            let dir_mode = (fs::metadata(path.parent().unwrap()).unwrap())
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700, "{dir_mode:o}");
        }
        forget(&path).unwrap();
        assert_eq!(Saved::load(&path), None);
        forget(&path).unwrap();
    }
}
