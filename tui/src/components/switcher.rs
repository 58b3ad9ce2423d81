//! Jumping anywhere: the switcher (Ctrl+K), a fuzzy search over the
//! conversations and the directory, with the server's accounts that start
//! with what is typed; and the command line (`:`), for `:dm NAME`,
//! `:logout`, `:quit`, `:help` and the group commands.

use chat_client::{Account, AccountId};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{centered, draw_query_line};
use crate::action::Action;
use crate::editor::Editor;
use crate::state::{ChatId, State};
use crate::text;

/// How many matches the switcher lists.
const SHOWN: usize = 10;

/// How well `query` matches `name`, higher is better; `None` when its
/// characters are not all in `name`, in order (ignoring case). Matches at
/// the start and runs of consecutive characters count most; shorter names
/// win ties.
pub fn fuzzy_score(query: &str, name: &str) -> Option<i64> {
    let query: Vec<char> = query.chars().flat_map(char::to_lowercase).collect();
    let name: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    let mut score = 0i64;
    let mut at = 0;
    let mut previous: Option<usize> = None;
    for q in &query {
        let found = (at..name.len()).find(|&i| name[i] == *q)?;
        score += 10;
        if found == 0 || name[found - 1].is_ascii_punctuation() || name[found - 1] == ' ' {
            score += 20;
        }
        if previous.is_some_and(|p| p + 1 == found) {
            score += 15;
        }
        previous = Some(found);
        at = found + 1;
    }
    Some(score - i64::try_from(name.len()).unwrap_or(i64::MAX) / 4)
}

/// One thing the switcher can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The conversation.
    pub chat: ChatId,
    /// Its name.
    pub name: String,
    /// A group.
    pub group: bool,
}

/// The switcher's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Switcher {
    /// What is typed.
    pub query: Editor,
    /// Accounts from the server that start with the query.
    pub accounts: Vec<Account>,
    /// The highlighted match.
    pub highlight: usize,
}

impl Switcher {
    /// The matches for the query, best first: conversations and the
    /// directory, then the server's accounts.
    pub fn matches(&self, state: &State) -> Vec<Choice> {
        let me = state.my_id();
        let mut all: Vec<Choice> = (state.user_rows().into_iter())
            .map(|row| Choice {
                chat: row.chat,
                name: row.name,
                group: row.members.is_some(),
            })
            .collect();
        for account in &self.accounts {
            let chat = ChatId::Direct(account.account_id);
            if account.account_id != me && all.iter().all(|c| c.chat != chat) {
                all.push(Choice {
                    chat,
                    name: account.username.clone(),
                    group: false,
                });
            }
        }
        let query = self.query.text().trim();
        let mut scored: Vec<(i64, usize, Choice)> = (all.into_iter().enumerate())
            .filter_map(|(i, c)| Some((fuzzy_score(query, &c.name)?, i, c)))
            .collect();
        // Best score first; among equals, the list's own order (recent first).
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.into_iter().map(|(_, _, c)| c).take(SHOWN).collect()
    }

    /// The server's accounts for `prefix`, if it is still what is typed.
    pub fn completions(&mut self, prefix: &str, accounts: Vec<Account>) {
        if prefix == self.query.text().trim() {
            self.accounts = accounts;
        }
    }

    /// What a key does.
    pub fn handle_key(&mut self, key: KeyEvent, state: &State) -> Option<Action> {
        match key.code {
            KeyCode::Esc => Some(Action::CloseDialog),
            KeyCode::Enter => {
                let choice = self.matches(state).into_iter().nth(self.highlight)?;
                Some(Action::OpenChat(choice.chat, choice.name))
            }
            KeyCode::Up => {
                self.highlight = self.highlight.saturating_sub(1);
                None
            }
            KeyCode::Down | KeyCode::Tab => {
                let shown = self.matches(state).len();
                self.highlight = (self.highlight + 1).min(shown.saturating_sub(1));
                None
            }
            _ if key.modifiers.contains(KeyModifiers::ALT) => None,
            _ => {
                let before = self.query.text().to_owned();
                if self.query.handle_key(&key, false) && self.query.text() != before {
                    self.highlight = 0;
                    let prefix = self.query.text().trim().to_owned();
                    return (!prefix.is_empty()).then_some(Action::Complete(prefix));
                }
                None
            }
        }
    }

    /// Draws the switcher.
    pub fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let rect = centered(area, 56, 14);
        let block = Block::bordered()
            .border_type(theme.border_type(true))
            .border_style(theme.border(true))
            .title(Span::styled(" Go to ", theme.title()))
            .title_bottom(
                Line::from(vec![
                    Span::styled(" ↑↓", theme.key()),
                    Span::styled(" choose  ", theme.dim()),
                    Span::styled("Enter", theme.key()),
                    Span::styled(" open  ", theme.dim()),
                    Span::styled("Esc", theme.key()),
                    Span::styled(" close ", theme.dim()),
                ])
                .right_aligned(),
            );
        let inner = block.inner(rect);
        frame.render_widget(Clear, rect);
        frame.render_widget(block, rect);
        if inner.height < 2 {
            return;
        }
        draw_query_line(frame, inner, "› ", &self.query, theme);
        let width = usize::from(inner.width.saturating_sub(3));
        let matches = self.matches(state);
        let lines: Vec<Line> = if matches.is_empty() {
            vec![Line::styled("nothing matches", theme.dim())]
        } else {
            (matches.iter().enumerate())
                .map(|(i, c)| {
                    let mark = if c.group { "# " } else { "  " };
                    let name = text::truncate(&text::sanitize(&c.name), width).into_owned();
                    let line = Line::raw(format!("{mark}{name}"));
                    if i == self.highlight {
                        line.patch_style(theme.selected())
                    } else {
                        line
                    }
                })
                .collect()
        };
        frame.render_widget(
            Paragraph::new(lines),
            Rect {
                y: inner.y + 2,
                height: inner.height.saturating_sub(2),
                ..inner
            },
        );
    }
}

/// A command typed after `:`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `:dm NAME`: open the direct conversation with NAME.
    Dm(String),
    /// `:group [TITLE]`: make a group.
    Group(String),
    /// `:members`: show or hide the open group's members.
    Members,
    /// `:add`: add members to the open group.
    Add,
    /// `:rename TITLE`: rename the open group.
    Rename(String),
    /// `:leave`: leave the open group.
    Leave,
    /// `:mute`: mute or unmute the open conversation.
    Mute,
    /// `:logout`.
    Logout,
    /// `:quit`.
    Quit,
    /// `:help`.
    Help,
    /// `:search [TEXT]`: search the open conversation on the server.
    Search(String),
}

/// The commands, for `:help` and errors.
pub const COMMANDS: &str = ":dm NAME  :search TEXT  :group [TITLE]  :members  :add  :rename TITLE  \
     :leave  :mute  :logout  :quit  :help";

/// Parses a command line (without its `:`).
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim().to_owned();
    let needs = |what: &str| Err(format!(":{word} needs {what}"));
    Ok(match word {
        "dm" | "msg" | "query" if rest.is_empty() => return needs("a name: :dm NAME"),
        "dm" | "msg" | "query" => Command::Dm(rest.trim_start_matches('@').to_owned()),
        "group" | "new" => Command::Group(rest),
        "members" => Command::Members,
        "add" | "invite" => Command::Add,
        "rename" | "title" if rest.is_empty() => return needs("a title: :rename TITLE"),
        "rename" | "title" => Command::Rename(rest),
        "leave" | "part" => Command::Leave,
        "mute" | "unmute" => Command::Mute,
        "logout" => Command::Logout,
        "quit" | "q" => Command::Quit,
        "help" | "h" => Command::Help,
        "search" | "find" => Command::Search(rest),
        "" => return Err(format!("type a command: {COMMANDS}")),
        other => return Err(format!("no command :{other}; there are {COMMANDS}")),
    })
}

/// The command line's state: what is typed after `:`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// The text after `:`.
    pub line: Editor,
}

impl CommandLine {
    /// What a key does.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Esc => Some(Action::CloseDialog),
            KeyCode::Backspace if self.line.is_empty() => Some(Action::CloseDialog),
            KeyCode::Enter => Some(Action::RunCommand(self.line.text().to_owned())),
            _ if key.modifiers.contains(KeyModifiers::ALT) => None,
            _ => {
                self.line.handle_key(&key, false);
                None
            }
        }
    }

    /// Draws the line at the bottom of `area`, over the status bar.
    pub fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let row = Rect {
            y: area.bottom().saturating_sub(1),
            height: 1,
            ..area
        };
        let width = usize::from(row.width.saturating_sub(2));
        let layout = self.line.layout(width, None);
        let shown = layout
            .rows
            .get(layout.cursor.0)
            .cloned()
            .unwrap_or_default();
        frame.render_widget(Clear, row);
        frame.render_widget(
            Line::from(vec![
                Span::styled(":", theme.key()),
                Span::raw(format!("{shown:<width$}")),
            ]),
            row,
        );
        let x = row.x + 1 + u16::try_from(layout.cursor.1).unwrap_or(0);
        frame.set_cursor_position(Position::new(x.min(row.right() - 1), row.y));
    }
}

/// The account named exactly `name` (ignoring ASCII case) among those the
/// client knows, for `:dm`.
pub fn known_account(state: &State, name: &str) -> Option<(AccountId, String)> {
    let me = state.my_id();
    (state.directory.accounts.iter())
        .find(|a| a.account_id != me && a.username.eq_ignore_ascii_case(name))
        .map(|a| (a.account_id, a.username.clone()))
        .or_else(|| {
            (state.conversations.values())
                .filter(|c| c.name.eq_ignore_ascii_case(name))
                .find_map(|c| Some((c.peer_id()?, c.name.clone())))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzzy_matches_in_order_and_prefers_starts_and_runs() {
        assert!(fuzzy_score("crw", "launch crew").is_some());
        assert!(fuzzy_score("wrc", "launch crew").is_none());
        assert!(fuzzy_score("", "anything").is_some());
        let bob = fuzzy_score("bo", "bob").unwrap();
        let abbot = fuzzy_score("bo", "abbot").unwrap();
        assert!(bob > abbot, "{bob} {abbot}");
        assert!(fuzzy_score("BOB", "bob").is_some(), "ignores case");
    }

    #[test]
    fn commands_parse_with_clear_errors() {
        assert_eq!(parse("dm @carol"), Ok(Command::Dm("carol".into())));
        assert_eq!(parse(" quit "), Ok(Command::Quit));
        assert_eq!(
            parse("rename Launch crew"),
            Ok(Command::Rename("Launch crew".into()))
        );
        assert_eq!(parse("group"), Ok(Command::Group(String::new())));
        assert_eq!(
            parse("search launch  day"),
            Ok(Command::Search("launch  day".into()))
        );
        assert!(parse("dm").unwrap_err().contains(":dm NAME"));
        assert!(parse("frobnicate").unwrap_err().contains(":dm NAME"));
    }
}
