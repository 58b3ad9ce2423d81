//! The users pane: the conversations, direct and group (unread first, then
//! most recent; a group is marked `#`), and every other account of the
//! server, paged in as the selection nears the end, with a wildcard filter
//! typed after `/`. Moving the cursor only looks: Enter opens the
//! conversation (so nothing is marked read by passing over it), and the
//! rows keep their order while the cursor moves. `n` makes a group.

use std::cell::Cell;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use super::Component;
use crate::action::{Action, Move};
use crate::editor::Editor;
use crate::state::{Pane, State};
use crate::text;

/// The users pane's own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// The filter being typed, while the user types it.
    filter: Option<Editor>,
    /// The first row shown, kept between frames so the list scrolls only
    /// when the selection leaves the window.
    offset: Cell<usize>,
    /// Rows that fit in the pane at the last frame: the size of a page.
    page: Cell<usize>,
}

impl Users {
    /// True while keys go into the filter.
    pub fn is_typing(&self) -> bool {
        self.filter.is_some()
    }

    /// Rows in a page, as the last frame had them (at least one).
    pub fn page(&self) -> usize {
        self.page.get().max(1)
    }

    /// Pastes into the filter being typed, on one line; `None` when no
    /// filter is being typed, so the text belongs elsewhere.
    pub fn paste(&mut self, text: &str) -> Option<Action> {
        let filter = self.filter.as_mut()?;
        filter.insert_str(&text.replace(['\r', '\n'], ""));
        Some(Action::SetFilter(filter.text().to_owned()))
    }
}

impl Component for Users {
    fn handle_key_event(&mut self, key: KeyEvent, _state: &State) -> Option<Action> {
        if let Some(filter) = self.filter.as_mut() {
            return match key.code {
                KeyCode::Enter => Some(Action::EndFilter),
                KeyCode::Esc => Some(Action::ClearFilter),
                KeyCode::Up => Some(Action::MoveSelection(Move::Up)),
                KeyCode::Down => Some(Action::MoveSelection(Move::Down)),
                _ => {
                    let before = filter.text().to_owned();
                    if filter.handle_key(&key, false) && filter.text() != before {
                        Some(Action::SetFilter(filter.text().to_owned()))
                    } else {
                        None
                    }
                }
            };
        }
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return None;
        }
        let step = match key.code {
            KeyCode::Up | KeyCode::Char('k') => Move::Up,
            KeyCode::Down | KeyCode::Char('j') => Move::Down,
            KeyCode::PageUp => Move::PageUp,
            KeyCode::PageDown => Move::PageDown,
            KeyCode::Home | KeyCode::Char('g') => Move::First,
            KeyCode::End | KeyCode::Char('G') => Move::Last,
            KeyCode::Char('/') => return Some(Action::StartFilter),
            KeyCode::Char('r') => return Some(Action::RefreshDirectory),
            KeyCode::Char('n') => return Some(Action::AskNewGroup),
            KeyCode::Char('z') => return Some(Action::ToggleMute),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
                return Some(Action::WriteToSelected);
            }
            KeyCode::Esc => return Some(Action::ClearFilter),
            _ => return None,
        };
        Some(Action::MoveSelection(step))
    }

    fn update(&mut self, action: &Action, _state: &State) {
        match action {
            // `/` starts a new filter; the old one goes (see `App::update`).
            Action::StartFilter => self.filter = Some(Editor::default()),
            Action::EndFilter | Action::ClearFilter => self.filter = None,
            _ => {}
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let focused = state.focus == Pane::Users;
        let unread = state.total_unread();
        let mut title = vec![Span::styled(" Users ", theme.title())];
        // Said in words, where it fits (the status bar has it too).
        let count = format!("· {unread} unread ");
        if unread > 0 && text::width(&count) + 9 <= usize::from(area.width) {
            title.push(Span::styled(count, theme.unread()));
        }
        let block = Block::bordered()
            .border_type(theme.border_type(focused))
            .border_style(theme.border(focused))
            .title(Line::from(title));
        let mut inner = block.inner(area);
        frame.render_widget(block, area);
        if inner.height == 0 || inner.width == 0 {
            return;
        }
        // The filter line, while typing it or while one is set.
        let pattern = &state.directory.pattern;
        if self.filter.is_some() || !pattern.is_empty() {
            let shown = self.filter.as_ref().map_or(pattern.as_str(), Editor::text);
            let line = Line::from(vec![
                Span::styled("/", theme.key()),
                Span::raw(text::sanitize(shown).into_owned()),
            ]);
            frame.render_widget(Paragraph::new(line), Rect { height: 1, ..inner });
            if let Some(filter) = &self.filter
                && focused
            {
                let layout = filter.layout(usize::from(inner.width.saturating_sub(1)), None);
                let x = inner.x + 1 + u16::try_from(layout.cursor.1).unwrap_or(0);
                frame.set_cursor_position(Position::new(x.min(inner.right() - 1), inner.y));
            }
            inner.y += 1;
            inner.height -= 1;
        }
        let rows = state.user_rows();
        let height = usize::from(inner.height);
        self.page.set(height.max(1));
        if rows.is_empty() {
            let message = if state.directory.loading {
                "Loading…"
            } else if pattern.is_empty() {
                "No one else is here yet. Accounts appear as they are created."
            } else {
                "No account matches. Esc clears the filter."
            };
            frame.render_widget(
                Paragraph::new(message)
                    .style(theme.dim())
                    .wrap(ratatui::widgets::Wrap { trim: true }),
                inner,
            );
            return;
        }
        // The cursor (where Enter opens), and the open conversation.
        let selected = (state.highlight.or(state.selected))
            .and_then(|id| rows.iter().position(|r| r.chat == id));
        let more = state.directory.next_page.is_some();
        let list_height = if more {
            height.saturating_sub(1)
        } else {
            height
        }
        .max(1);
        let mut offset = self.offset.get().min(rows.len().saturating_sub(1));
        if let Some(selected) = selected {
            if selected < offset {
                offset = selected;
            } else if selected >= offset + list_height {
                offset = selected + 1 - list_height;
            }
        }
        self.offset.set(offset);
        let width = usize::from(inner.width);
        let lines: Vec<Line> = rows
            .iter()
            .enumerate()
            .skip(offset)
            .take(list_height)
            .map(|(i, row)| {
                let dot = match (row.members, row.online) {
                    (Some(_), _) => Span::styled("# ", theme.key()),
                    (None, Some(true)) => Span::styled("● ", theme.good()),
                    (None, _) => Span::raw("  "),
                };
                // `@` when an unread message names the user; `~` muted.
                let mark = match (row.mentioned, row.muted) {
                    (true, _) => "@",
                    (false, true) => "~",
                    (false, false) => "",
                };
                let badge = if row.unread > 0 {
                    format!(" {mark}{} ", row.unread.min(999))
                } else if row.muted {
                    " ~ ".to_owned()
                } else {
                    String::new()
                };
                let badge_style = if row.muted && !row.mentioned {
                    theme.dim()
                } else {
                    theme
                        .unread()
                        .add_modifier(ratatui::style::Modifier::REVERSED)
                };
                let name_width = width.saturating_sub(2 + text::width(&badge));
                let shown = if row.deleted {
                    format!("{} (deleted)", row.name)
                } else {
                    row.name.clone()
                };
                let name = text::truncate(&shown, name_width);
                let pad = name_width.saturating_sub(text::width(&name));
                let name_style = if row.unread > 0 {
                    theme.title()
                } else {
                    theme.text()
                };
                let mut line = Line::from(vec![
                    dot,
                    Span::styled(format!("{name}{}", " ".repeat(pad)), name_style),
                    Span::styled(badge, badge_style),
                ]);
                if Some(i) == selected && focused {
                    line = line.patch_style(theme.selected());
                } else if Some(row.chat) == state.selected {
                    line = line.patch_style(
                        theme
                            .title()
                            .add_modifier(ratatui::style::Modifier::UNDERLINED),
                    );
                }
                line
            })
            .collect();
        frame.render_widget(Paragraph::new(lines), inner);
        if more && height > 1 {
            let hint = if state.directory.loading {
                "loading more…"
            } else {
                "more below ↓"
            };
            frame.render_widget(
                Paragraph::new(Span::styled(hint, theme.dim())),
                Rect {
                    y: inner.bottom() - 1,
                    height: 1,
                    ..inner
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn list_keys_move_the_selection() {
        let mut users = Users::default();
        let state = State::default();
        let check = |users: &mut Users, code, expected| {
            assert_eq!(
                users.handle_key_event(key(code), &state),
                expected,
                "{code:?}"
            );
        };
        check(
            &mut users,
            KeyCode::Char('j'),
            Some(Action::MoveSelection(Move::Down)),
        );
        check(
            &mut users,
            KeyCode::Down,
            Some(Action::MoveSelection(Move::Down)),
        );
        check(
            &mut users,
            KeyCode::Char('k'),
            Some(Action::MoveSelection(Move::Up)),
        );
        check(
            &mut users,
            KeyCode::Char('g'),
            Some(Action::MoveSelection(Move::First)),
        );
        check(
            &mut users,
            KeyCode::Char('G'),
            Some(Action::MoveSelection(Move::Last)),
        );
        check(
            &mut users,
            KeyCode::PageDown,
            Some(Action::MoveSelection(Move::PageDown)),
        );
        check(&mut users, KeyCode::Enter, Some(Action::WriteToSelected));
        check(&mut users, KeyCode::Char('/'), Some(Action::StartFilter));
        check(&mut users, KeyCode::Char('n'), Some(Action::AskNewGroup));
        check(&mut users, KeyCode::Char('x'), None);
    }

    #[test]
    fn typing_a_filter_reports_each_change() {
        let mut users = Users::default();
        let state = State::default();
        users.update(&Action::StartFilter, &state);
        assert!(users.is_typing());
        assert_eq!(
            users.handle_key_event(key(KeyCode::Char('b')), &state),
            Some(Action::SetFilter("b".to_owned()))
        );
        // j is a letter while typing, not a move.
        assert_eq!(
            users.handle_key_event(key(KeyCode::Char('j')), &state),
            Some(Action::SetFilter("bj".to_owned()))
        );
        assert_eq!(users.handle_key_event(key(KeyCode::Left), &state), None);
        assert_eq!(
            users.handle_key_event(key(KeyCode::Enter), &state),
            Some(Action::EndFilter)
        );
        users.update(&Action::EndFilter, &state);
        assert!(!users.is_typing());
    }
}
