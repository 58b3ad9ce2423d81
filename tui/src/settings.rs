//! What chat-tui remembers between runs, in
//! `$XDG_CONFIG_HOME/chat-tui/config.toml` (by default
//! `~/.config/chat-tui/config.toml`): the last server list and username,
//! how messages notify (`notify = "off" | "bell" | "desktop"`), the muted
//! conversations, and the colours (`theme = "dark" | "light" | "mono"`,
//! `color.ROLE = "…"` for one role). Never the password.
//!
//! The file is `key = "value"` lines, a subset of TOML, read and written
//! here without a TOML library. A missing or unreadable file means
//! nothing is remembered; it never stops the program from starting.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::state::{ChatId, Notify};

/// The remembered values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The servers of the last successful sign-in.
    pub servers: Vec<String>,
    /// The username of the last successful sign-in.
    pub username: Option<String>,
    /// How messages not on screen notify; `None` when the file says not.
    pub notify: Option<Notify>,
    /// The conversations that do not notify.
    pub muted: Vec<ChatId>,
    /// The palette: `dark`, `light` or `mono`.
    pub theme: Option<String>,
    /// Colours for single roles (`color.unread = "blue"`), in file order.
    pub colors: Vec<(String, String)>,
}

/// Where the settings live: `chat-tui/config.toml` in the XDG config
/// directory, or `None` if the system has none.
pub fn path() -> Option<PathBuf> {
    dirs::config_dir().map(|dir| dir.join("chat-tui").join("config.toml"))
}

impl Settings {
    /// Reads the settings from `path`; anything missing or malformed is
    /// left at its default.
    pub fn load(path: &Path) -> Self {
        fs::read_to_string(path)
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Self {
        let mut settings = Self::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let Some(value) = unquote(value.trim()) else {
                continue;
            };
            match key.trim() {
                "servers" => {
                    settings.servers = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "username" if !value.is_empty() => settings.username = Some(value),
                "notify" => settings.notify = Notify::parse(&value),
                "muted" => {
                    settings.muted = value.split(',').filter_map(ChatId::from_key).collect();
                }
                "theme" if !value.is_empty() => settings.theme = Some(value),
                key => {
                    if let Some(role) = key.strip_prefix("color.") {
                        settings.colors.push((role.trim().to_owned(), value));
                    }
                }
            }
        }
        settings
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut text = String::from("# Written by chat-tui: the last server list and username.\n");
        text.push_str(&format!("servers = {}\n", quote(&self.servers.join(","))));
        if let Some(username) = &self.username {
            text.push_str(&format!("username = {}\n", quote(username)));
        }
        text.push_str("# How messages not on screen notify: \"off\", \"bell\" or \"desktop\".\n");
        text.push_str(&format!(
            "notify = {}\n",
            quote(self.notify.unwrap_or_default().as_str())
        ));
        if !self.muted.is_empty() {
            let keys: Vec<String> = self.muted.iter().map(|c| c.key()).collect();
            text.push_str(&format!("muted = {}\n", quote(&keys.join(","))));
        }
        text.push_str(
            "# Colours: theme = \"dark\" (default), \"light\" or \"mono\"; one role with\n\
             # color.ROLE = \"red\" | \"lightblue\" | \"#rrggbb\" | \"0\"-\"255\", ROLE one of\n",
        );
        text.push_str(&format!("# {}.\n", crate::theme::ROLES.join(", ")));
        if let Some(theme) = &self.theme {
            text.push_str(&format!("theme = {}\n", quote(theme)));
        }
        for (role, color) in &self.colors {
            text.push_str(&format!("color.{role} = {}\n", quote(color)));
        }
        text
    }

    /// Writes the settings to `path` (through a temporary file and a
    /// rename, so a crash never leaves half a file).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        fs::create_dir_all(dir)?;
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(self.render().as_bytes())?;
        file.persist(path).map_err(|error| error.error)?;
        Ok(())
    }
}

/// A TOML basic string.
fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The value of a TOML basic string, or `None` if it is not one.
fn unquote(value: &str) -> Option<String> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'u' => {
                let code: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&code, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat-tui").join("config.toml");
        assert_eq!(Settings::load(&path), Settings::default());
        let settings = Settings {
            servers: vec!["127.0.0.1:1".to_owned(), "[::1]:2".to_owned()],
            username: Some("al\"ice\\".to_owned()),
            notify: Some(Notify::Desktop),
            muted: vec![ChatId::Direct(7), ChatId::Group(12)],
            theme: Some("light".to_owned()),
            colors: vec![
                ("unread".to_owned(), "#aa5500".to_owned()),
                ("peer".to_owned(), "blue".to_owned()),
            ],
        };
        settings.save(&path).unwrap();
        assert_eq!(Settings::load(&path), settings);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("servers = \"127.0.0.1:1,[::1]:2\""), "{text}");
    }

    #[test]
    fn the_theme_and_colours_shape_the_styles() {
        use ratatui::style::Color;

        use crate::theme::{Palette, Theme};

        let settings = Settings::parse(
            "theme = \"light\"\ncolor.unread = \"#aa5500\"\ncolor.nonsense = \"red\"\n\
             color.peer = \"not a colour\"\n",
        );
        let theme = Theme::configured(settings.theme.as_deref(), &settings.colors);
        if theme.color {
            // (NO_COLOR, when the test runs under it, turns colour off.)
            assert_eq!(theme.palette.unread, Color::Rgb(0xaa, 0x55, 0));
            assert_eq!(theme.palette.accent, Palette::LIGHT.accent);
            assert_eq!(
                theme.palette.peer,
                Palette::LIGHT.peer,
                "bad colours are skipped"
            );
            assert_eq!(theme.unread().fg, Some(Color::Rgb(0xaa, 0x55, 0)));
        }
        assert!(!Theme::configured(Some("mono"), &[]).color);
        let mut palette = Palette::DARK;
        assert!(palette.set("dim", "245").is_ok());
        assert_eq!(palette.dim, Color::Indexed(245));
        assert!(
            palette
                .set("dim", "ultraviolet")
                .unwrap_err()
                .contains("not a colour")
        );
        assert!(
            palette
                .set("fancy", "red")
                .unwrap_err()
                .contains("no colour role")
        );
    }

    #[test]
    fn malformed_lines_are_ignored() {
        let settings = Settings::parse("servers = a:1\nusername = \"bob\"\n[x]\nusername\n");
        assert_eq!(
            settings,
            Settings {
                servers: vec![],
                username: Some("bob".to_owned()),
                ..Settings::default()
            }
        );
    }
}
