//! Searching the open conversation (Ctrl+F or `:search TEXT`): the whole
//! history on the server, not only what is loaded. Case-insensitive
//! substring, results newest first; the server examines a bounded part of
//! the history per call, so the dialog asks again from where the last call
//! stopped until it has a screenful or reaches the beginning, and again
//! when the highlight reaches the last result. Enter jumps to the message
//! in its conversation.

use chat_client::{HistoryPage, Message, MessageId};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::inbox::local_time;
use super::{centered, draw_query_line};
use crate::action::Action;
use crate::editor::Editor;
use crate::state::{ChatId, State};
use crate::text;

/// The longest query the server takes, in bytes.
pub const MAX_QUERY: usize = 256;

/// Results gathered before the dialog stops asking on its own: a screenful
/// and a little more. Past that, moving down asks for more.
const FILL: usize = 30;

/// Where the search stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Nothing asked yet (or the query changed since).
    Idle,
    /// A call is on its way.
    Searching,
    /// Older messages remain to be searched, from this id down.
    More(MessageId),
    /// The whole conversation was searched.
    Done,
    /// The last call failed; Enter tries again.
    Failed(String),
}

/// The search dialog's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// The conversation searched.
    pub chat: ChatId,
    /// Its name, for the title.
    pub name: String,
    /// What is typed.
    pub query: Editor,
    /// The query the results are for.
    pub searched: String,
    /// The matches so far, newest first.
    pub results: Vec<Message>,
    /// The highlighted result.
    pub highlight: usize,
    /// Where the search stands.
    pub progress: Progress,
}

impl Search {
    /// A search of `chat`, starting with `query` (which may be empty).
    pub fn new(chat: ChatId, name: &str, query: &str) -> Self {
        let mut editor = Editor::default();
        editor.insert_str(query);
        Self {
            chat,
            name: name.to_owned(),
            query: editor,
            searched: String::new(),
            results: Vec::new(),
            highlight: 0,
            progress: Progress::Idle,
        }
    }

    /// Starts searching for what is typed: the action that asks the server,
    /// or an error to show when the query is not one the server takes.
    pub fn start(&mut self) -> Option<Action> {
        let query = self.query.text().trim().to_owned();
        if query.is_empty() {
            return None;
        }
        if query.len() > MAX_QUERY {
            self.progress = Progress::Failed(format!(
                "a search is at most {MAX_QUERY} bytes; this one is {}",
                query.len()
            ));
            return None;
        }
        self.searched = query.clone();
        self.results.clear();
        self.highlight = 0;
        self.progress = Progress::Searching;
        Some(Action::Search {
            chat: self.chat,
            query,
            before: None,
        })
    }

    /// Asks for older matches, if there are any and nothing is on its way.
    fn more(&mut self) -> Option<Action> {
        let Progress::More(before) = self.progress else {
            return None;
        };
        self.progress = Progress::Searching;
        Some(Action::Search {
            chat: self.chat,
            query: self.searched.clone(),
            before: Some(before),
        })
    }

    /// Takes the server's answer to a search of `query` in `chat`; returns
    /// the next call to make when the results do not yet fill the dialog.
    pub fn answer(
        &mut self,
        chat: ChatId,
        query: &str,
        page: Result<HistoryPage, String>,
    ) -> Option<Action> {
        if chat != self.chat || query != self.searched || self.progress != Progress::Searching {
            // An answer to a search the user has since replaced.
            return None;
        }
        match page {
            Err(error) => {
                self.progress = Progress::Failed(error);
                None
            }
            Ok(page) => {
                let known = self.results.last().map(|m| m.id);
                self.results.extend(
                    (page.messages.into_iter()).filter(|m| known.is_none_or(|last| m.id < last)),
                );
                self.progress = match page.next_before {
                    Some(before) => Progress::More(before),
                    None => Progress::Done,
                };
                if self.results.len() < FILL {
                    self.more()
                } else {
                    None
                }
            }
        }
    }

    /// What a key does.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        match key.code {
            KeyCode::Esc => Some(Action::CloseDialog),
            KeyCode::Enter => {
                let typed = self.query.text().trim();
                let fresh = typed != self.searched || matches!(self.progress, Progress::Idle);
                if fresh || matches!(self.progress, Progress::Failed(_)) {
                    return self.start();
                }
                let message = self.results.get(self.highlight)?;
                Some(Action::JumpTo(self.chat, message.id))
            }
            KeyCode::Up => {
                self.highlight = self.highlight.saturating_sub(1);
                None
            }
            KeyCode::Down | KeyCode::Tab => {
                self.highlight = (self.highlight + 1).min(self.results.len().saturating_sub(1));
                if self.highlight + 1 >= self.results.len() {
                    return self.more();
                }
                None
            }
            KeyCode::PageDown => {
                self.highlight = (self.highlight + 10).min(self.results.len().saturating_sub(1));
                if self.highlight + 1 >= self.results.len() {
                    return self.more();
                }
                None
            }
            KeyCode::PageUp => {
                self.highlight = self.highlight.saturating_sub(10);
                None
            }
            _ if key.modifiers.contains(KeyModifiers::ALT) => None,
            _ => {
                self.query.handle_key(&key, false);
                None
            }
        }
    }

    /// The line under the query: what the search found so far.
    fn summary(&self) -> String {
        let found = match self.results.len() {
            1 => "1 message".to_owned(),
            n => format!("{n} messages"),
        };
        match &self.progress {
            Progress::Idle if self.query.text().trim().is_empty() => {
                "type what to look for, Enter searches the whole conversation".to_owned()
            }
            Progress::Idle => "Enter searches the whole conversation".to_owned(),
            Progress::Searching => format!("searching… {found} so far"),
            Progress::More(_) => format!("{found} so far; ↓ at the end searches further back"),
            Progress::Done if self.results.is_empty() => "nothing found".to_owned(),
            Progress::Done => format!("{found}; the whole conversation was searched"),
            Progress::Failed(error) => format!("could not search: {error}"),
        }
    }

    /// Draws the dialog.
    pub fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let rect = centered(area, 76, 20);
        let title = format!(" Search {} ", text::sanitize(&self.name));
        let block = Block::bordered()
            .border_type(theme.border_type(true))
            .border_style(theme.border(true))
            .title(Span::styled(
                text::truncate(&title, usize::from(rect.width.saturating_sub(4))).into_owned(),
                theme.title(),
            ))
            .title_bottom(
                Line::from(vec![
                    Span::styled(" Enter", theme.key()),
                    Span::styled(" search / go to  ", theme.dim()),
                    Span::styled("↑↓", theme.key()),
                    Span::styled(" choose  ", theme.dim()),
                    Span::styled("Esc", theme.key()),
                    Span::styled(" close ", theme.dim()),
                ])
                .right_aligned(),
            );
        let inner = block.inner(rect);
        frame.render_widget(Clear, rect);
        frame.render_widget(block, rect);
        if inner.height < 3 {
            return;
        }
        draw_query_line(frame, inner, "/ ", &self.query, theme);
        let style = match self.progress {
            Progress::Failed(_) => theme.error(),
            _ => theme.dim(),
        };
        frame.render_widget(
            Line::styled(
                text::truncate(&self.summary(), usize::from(inner.width)).into_owned(),
                style,
            ),
            Rect {
                y: inner.y + 1,
                height: 1,
                ..inner
            },
        );
        let rows = usize::from(inner.height.saturating_sub(3));
        if rows == 0 {
            return;
        }
        // Keep the highlight in view.
        let first = self.highlight.saturating_sub(rows - 1);
        let lines: Vec<Line> = (self.results.iter().enumerate())
            .skip(first)
            .take(rows)
            .map(|(i, m)| {
                let line = result_line(m, &self.searched, usize::from(inner.width), state);
                if i == self.highlight {
                    line.patch_style(theme.selected())
                } else {
                    line
                }
            })
            .collect();
        frame.render_widget(
            Paragraph::new(lines),
            Rect {
                y: inner.y + 3,
                height: inner.height.saturating_sub(3),
                ..inner
            },
        );
    }
}

/// One result: when, who, and the body on one line around its first match,
/// the match in bold.
fn result_line(m: &Message, query: &str, width: usize, state: &State) -> Line<'static> {
    let theme = &state.theme;
    let when = local_time(m, state.time_zone)
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let from = text::sanitize(&m.from).into_owned();
    let head = format!("{when} {from}: ");
    let room = width.saturating_sub(text::width(&head));
    let body = text::sanitize(&m.body).replace(['\n', '\r', '\t'], " ");
    let (before, found, after) = split_at_match(&body, query);
    // Keep a little of what comes before the match, so the match shows.
    let lead: String = {
        let chars: Vec<char> = before.chars().collect();
        let keep = room.saturating_sub(text::width(found)).min(20);
        if chars.len() > keep {
            let tail: String = chars[chars.len() - keep.saturating_sub(1)..]
                .iter()
                .collect();
            format!("…{tail}")
        } else {
            before.to_owned()
        }
    };
    let mut spans = vec![
        Span::styled(when, theme.dim()),
        Span::raw(" "),
        Span::styled(format!("{from}: "), theme.text()),
    ];
    let mut left = room;
    for (part, bold) in [(lead.as_str(), false), (found, true), (after, false)] {
        if left == 0 {
            break;
        }
        let shown = text::truncate(part, left).into_owned();
        left = left.saturating_sub(text::width(&shown));
        spans.push(if bold {
            Span::styled(shown, theme.text().add_modifier(Modifier::BOLD))
        } else {
            Span::raw(shown)
        });
    }
    Line::from(spans)
}

/// `body` split around the first place `query` occurs in it, ignoring case
/// as the server does (lowercasing a character at a time); all of it
/// "before" when it does not.
pub fn split_at_match<'a>(body: &'a str, query: &str) -> (&'a str, &'a str, &'a str) {
    let wanted: Vec<char> = query.chars().flat_map(char::to_lowercase).collect();
    if wanted.is_empty() {
        return (body, "", "");
    }
    for (start, _) in body.char_indices() {
        let mut lowered = body[start..].chars().flat_map(char::to_lowercase);
        let mut taken = 0;
        let mut ok = true;
        for w in &wanted {
            if lowered.next() != Some(*w) {
                ok = false;
                break;
            }
            taken += 1;
        }
        if !ok || taken != wanted.len() {
            continue;
        }
        // Find the end: the fewest characters whose lowercase covers the
        // query.
        let mut covered = 0;
        let mut end = body.len();
        for (k, c) in body[start..].char_indices() {
            covered += c.to_lowercase().count();
            if covered >= wanted.len() {
                end = start + k + c.len_utf8();
                break;
            }
        }
        return (&body[..start], &body[start..end], &body[end..]);
    }
    (body, "", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_match_is_found_ignoring_case() {
        assert_eq!(
            split_at_match("Hello World", "world"),
            ("Hello ", "World", "")
        );
        assert_eq!(
            split_at_match("so much ÄRGER here", "ärger"),
            ("so much ", "ÄRGER", " here")
        );
        assert_eq!(split_at_match("nothing", "x"), ("nothing", "", ""));
    }
}
