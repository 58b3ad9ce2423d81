//! Colours and emphasis in one place, so `NO_COLOR` turns every colour off
//! at once and the panes stay consistent. Without colour, meaning is carried
//! by bold, reverse video and the border of the focused pane.
//!
//! The colours come from a palette: `dark` (the default, for dark
//! terminals), `light` (no yellow or cyan text, which white backgrounds
//! wash out) or `mono` (no colour), chosen with `theme = "…"` in the config
//! file, each role overridable with `color.ROLE = "…"` (see
//! [`Palette::set`]).

use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::BorderType;

/// The colour of each role the panes draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    /// The signed-in user's name on their messages.
    pub own: Color,
    /// Other people's names.
    pub peer: Color,
    /// The focused pane's border and keys in hints.
    pub accent: Color,
    /// Unread badges, the "new" line, mentions.
    pub unread: Color,
    /// Something being retried or waiting.
    pub warning: Color,
    /// Errors.
    pub error: Color,
    /// A healthy connection, a read receipt.
    pub good: Color,
    /// Times, hints, unfocused borders.
    pub dim: Color,
}

/// The roles [`Palette::set`] knows, for the config file's comment.
pub const ROLES: &[&str] = &[
    "own", "peer", "accent", "unread", "warning", "error", "good", "dim",
];

impl Palette {
    /// For dark backgrounds.
    pub const DARK: Self = Self {
        own: Color::Green,
        peer: Color::Magenta,
        accent: Color::Cyan,
        unread: Color::Yellow,
        warning: Color::Yellow,
        error: Color::Red,
        good: Color::Green,
        dim: Color::DarkGray,
    };

    /// For light backgrounds: the dark shades of the ANSI colours, no
    /// yellow or cyan text.
    pub const LIGHT: Self = Self {
        own: Color::Green,
        peer: Color::Magenta,
        accent: Color::Blue,
        unread: Color::Blue,
        warning: Color::Magenta,
        error: Color::Red,
        good: Color::Green,
        dim: Color::DarkGray,
    };

    /// Sets `role` (one of [`ROLES`]) to `color`: a name (`red`,
    /// `lightblue`, `darkgray`…), `#rrggbb` or an index 0-255. Returns what
    /// is wrong otherwise.
    pub fn set(&mut self, role: &str, color: &str) -> Result<(), String> {
        let color = Color::from_str(color.trim())
            .map_err(|_| format!("{color:?} is not a colour (a name, #rrggbb or 0-255)"))?;
        let slot = match role {
            "own" => &mut self.own,
            "peer" => &mut self.peer,
            "accent" => &mut self.accent,
            "unread" => &mut self.unread,
            "warning" => &mut self.warning,
            "error" => &mut self.error,
            "good" => &mut self.good,
            "dim" => &mut self.dim,
            other => return Err(format!("no colour role {other:?}; there are {ROLES:?}")),
        };
        *slot = color;
        Ok(())
    }
}

/// The styles the panes draw with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// False when `NO_COLOR` is set or the theme is `mono`: only modifiers
    /// are used.
    pub color: bool,
    /// The colours, when `color`.
    pub palette: Palette,
}

impl Default for Theme {
    fn default() -> Self {
        Self {
            color: true,
            palette: Palette::DARK,
        }
    }
}

impl Theme {
    /// The theme the environment asks for: no colour when `NO_COLOR` is set
    /// to anything non-empty (<https://no-color.org>).
    pub fn from_env() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Self {
            color: !no_color,
            ..Self::default()
        }
    }

    /// The theme the config file names (`dark`, `light` or `mono`; anything
    /// else is dark), with its colour overrides, under what the
    /// environment allows. Overrides that are not valid are skipped.
    pub fn configured(name: Option<&str>, colors: &[(String, String)]) -> Self {
        let env = Self::from_env();
        let mut palette = match name {
            Some("light") => Palette::LIGHT,
            _ => Palette::DARK,
        };
        for (role, color) in colors {
            let _ = palette.set(role, color);
        }
        Self {
            color: env.color && name != Some("mono"),
            palette,
        }
    }

    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    /// Plain text.
    pub fn text(&self) -> Style {
        Style::new()
    }

    /// Less important text: times, hints, placeholders.
    pub fn dim(&self) -> Style {
        if self.color {
            Style::new().fg(self.palette.dim)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }

    /// The border of a pane; `focused` makes it stand out.
    pub fn border(&self, focused: bool) -> Style {
        if focused {
            self.fg(self.palette.accent).add_modifier(Modifier::BOLD)
        } else {
            self.dim()
        }
    }

    /// The border shape of a pane: thick when focused, so focus shows even
    /// without colour.
    pub fn border_type(&self, focused: bool) -> BorderType {
        if focused {
            BorderType::Thick
        } else {
            BorderType::Rounded
        }
    }

    /// The selected row of a list, or the selected message.
    pub fn selected(&self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    /// The signed-in user's name on their own messages.
    pub fn own_name(&self) -> Style {
        self.fg(self.palette.own).add_modifier(Modifier::BOLD)
    }

    /// The other party's name on their messages: magenta, readable on
    /// dark and light backgrounds alike (dark blue is not, on black).
    pub fn peer_name(&self) -> Style {
        self.fg(self.palette.peer).add_modifier(Modifier::BOLD)
    }

    /// Unread badges and the "new" marker.
    pub fn unread(&self) -> Style {
        self.fg(self.palette.unread).add_modifier(Modifier::BOLD)
    }

    /// Errors and failed states.
    pub fn error(&self) -> Style {
        self.fg(self.palette.error).add_modifier(Modifier::BOLD)
    }

    /// A healthy connection, a read receipt.
    pub fn good(&self) -> Style {
        self.fg(self.palette.good)
    }

    /// Something is being retried.
    pub fn warning(&self) -> Style {
        self.fg(self.palette.warning)
    }

    /// Headings and titles.
    pub fn title(&self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// A text field: underlined, so its extent shows even when empty.
    pub fn input(&self) -> Style {
        Style::new().add_modifier(Modifier::UNDERLINED)
    }

    /// Keys in help texts.
    pub fn key(&self) -> Style {
        self.fg(self.palette.accent).add_modifier(Modifier::BOLD)
    }
}
