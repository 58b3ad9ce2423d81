//! The compose pane: a multi-line draft per conversation. Enter sends;
//! Alt+Enter, Shift+Enter (where the terminal reports it) and Ctrl+J insert
//! a line break; a pasted text goes in whole; Ctrl+E hands the draft to
//! `$EDITOR`. A counter appears as the draft nears the 16 KiB limit, and a
//! draft over it is refused with a message rather than sent.

use std::collections::HashMap;

use crate::state::ChatId;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::Component;
use crate::action::{Action, Scroll};
use crate::editor::Editor;
use crate::state::{MAX_BODY, Pane, State};

/// The counter shows once a draft is this close to the limit, in bytes.
const COUNTER_FROM: usize = MAX_BODY - 4 * 1024;

/// The compose pane's own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compose {
    /// The draft of the open conversation.
    editor: Editor,
    /// The drafts of the other conversations, kept while the user looks
    /// elsewhere.
    drafts: HashMap<ChatId, Editor>,
    /// Whose draft is in `editor`.
    current: Option<ChatId>,
}

impl Compose {
    /// The draft of the open conversation.
    pub fn draft(&self) -> &str {
        self.editor.text()
    }

    /// Pastes into the draft, whole: line breaks stay line breaks.
    pub fn paste(&mut self, text: &str) {
        self.editor.insert_str(text);
    }

    /// Empties the draft: it was sent.
    pub fn clear_draft(&mut self) {
        self.editor.take();
    }

    /// Puts the current draft away and takes out the one for `peer`.
    pub fn switch_to(&mut self, peer: Option<ChatId>) {
        if peer == self.current {
            return;
        }
        let draft = std::mem::take(&mut self.editor);
        // Text typed before any conversation was open goes with the first
        // one opened, so it is never lost.
        let mut carried = None;
        if !draft.is_empty() {
            match self.current {
                Some(current) => {
                    self.drafts.insert(current, draft);
                }
                None => carried = Some(draft),
            }
        }
        self.editor = peer
            .and_then(|peer| self.drafts.remove(&peer))
            .unwrap_or_default();
        if let Some(carried) = carried {
            if self.editor.is_empty() {
                self.editor = carried;
            } else {
                let joined = format!("{}\n{}", self.editor.text(), carried.text());
                self.editor.set_text(&joined);
            }
        }
        self.current = peer;
    }

    /// Puts a text that could not be sent back into `peer`'s draft, in front
    /// of whatever is there, so it is never lost.
    pub fn restore(&mut self, peer: ChatId, body: &str) {
        let editor = if self.current == Some(peer) {
            &mut self.editor
        } else {
            self.drafts.entry(peer).or_default()
        };
        let rest = editor.take();
        let joined = if rest.is_empty() {
            body.to_owned()
        } else {
            format!("{body}\n{rest}")
        };
        editor.set_text(&joined);
    }

    /// Forgets every draft (another user signed in).
    pub fn forget_all(&mut self) {
        *self = Self::default();
    }

    /// The rows the draft takes at `width`, for the layout.
    pub fn rows(&self, width: u16) -> usize {
        self.editor
            .layout_words(usize::from(width.max(1)))
            .rows
            .len()
    }
}

/// Why a draft cannot be sent as it is; `None` when it can.
pub fn body_problem(body: &str) -> Option<String> {
    (body.len() > MAX_BODY).then(|| {
        format!(
            "the message is {} bytes; the limit is {MAX_BODY}: shorten it by {}",
            body.len(),
            body.len() - MAX_BODY
        )
    })
}

impl Component for Compose {
    fn handle_key_event(&mut self, key: KeyEvent, _state: &State) -> Option<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let newline = key
            .modifiers
            .intersects(KeyModifiers::ALT | KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Enter if newline => self.editor.insert_char('\n'),
            KeyCode::Char('j') if ctrl => self.editor.insert_char('\n'),
            KeyCode::Enter => {
                let body = self.editor.text();
                if body.trim().is_empty() {
                    return None;
                }
                if let Some(problem) = body_problem(body) {
                    return Some(Action::Error(problem));
                }
                return Some(Action::Send(body.to_owned()));
            }
            KeyCode::Char('e') if ctrl => return Some(Action::EditDraft),
            KeyCode::PageUp => return Some(Action::Scroll(Scroll::PageUp)),
            KeyCode::PageDown => return Some(Action::Scroll(Scroll::PageDown)),
            KeyCode::Esc => return Some(Action::DismissError),
            _ => {
                self.editor.handle_key(&key, true);
            }
        }
        None
    }

    fn update(&mut self, action: &Action, _state: &State) {
        if let Action::DraftEdited(text) = action {
            self.editor.set_text(text);
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let focused = state.focus == Pane::Compose;
        let title = match state.open_conversation() {
            Some(conversation) if conversation.is_group() => {
                format!(
                    " Message to # {} ",
                    crate::text::sanitize(&conversation.name)
                )
            }
            Some(conversation) if conversation.deleted => format!(
                " {} deleted their account: nothing can be sent ",
                crate::text::sanitize(&conversation.name)
            ),
            Some(conversation) => {
                format!(" Message to {} ", crate::text::sanitize(&conversation.name))
            }
            None => " Message ".to_owned(),
        };
        let mut block = Block::bordered()
            .border_type(theme.border_type(focused))
            .border_style(theme.border(focused))
            .title(Span::styled(title, theme.title()));
        let bytes = self.editor.text().len();
        if bytes >= COUNTER_FROM {
            let (label, style) = if bytes > MAX_BODY {
                (
                    format!(" {} bytes too long ", bytes - MAX_BODY),
                    theme.error(),
                )
            } else {
                (
                    format!(" {} bytes left ", MAX_BODY - bytes),
                    theme.warning(),
                )
            };
            block = block.title_top(Line::styled(label, style).right_aligned());
        }
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if inner.width == 0 || inner.height == 0 {
            return;
        }
        if self.editor.is_empty() {
            let hint = if state.selected.is_none() {
                "Pick someone in Users first."
            } else {
                "Enter sends · Alt+Enter new line · Ctrl+E $EDITOR"
            };
            frame.render_widget(
                Paragraph::new(hint)
                    .style(theme.dim())
                    .wrap(Wrap { trim: true }),
                inner,
            );
            if focused {
                frame.set_cursor_position(Position::new(inner.x, inner.y));
            }
            return;
        }
        let layout = self.editor.layout_words(usize::from(inner.width));
        let height = usize::from(inner.height);
        let (row, column) = layout.cursor;
        let first = (row + 1).saturating_sub(height);
        let lines: Vec<Line> = layout
            .rows
            .into_iter()
            .skip(first)
            .take(height)
            .map(Line::raw)
            .collect();
        frame.render_widget(Paragraph::new(lines), inner);
        if focused {
            let y = inner.y + u16::try_from(row - first).unwrap_or(0);
            let x = inner.x + u16::try_from(column).unwrap_or(0).min(inner.width - 1);
            frame.set_cursor_position(Position::new(x, y));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn enter_sends_and_modified_enter_breaks_the_line() {
        let mut compose = Compose::default();
        let state = State::default();
        for c in "hi".chars() {
            compose.handle_key_event(key(KeyCode::Char(c), KeyModifiers::NONE), &state);
        }
        for modifiers in [KeyModifiers::ALT, KeyModifiers::SHIFT] {
            assert_eq!(
                compose.handle_key_event(key(KeyCode::Enter, modifiers), &state),
                None
            );
        }
        compose.handle_key_event(key(KeyCode::Char('j'), KeyModifiers::CONTROL), &state);
        compose.handle_key_event(key(KeyCode::Char('x'), KeyModifiers::NONE), &state);
        assert_eq!(
            compose.handle_key_event(key(KeyCode::Enter, KeyModifiers::NONE), &state),
            Some(Action::Send("hi\n\n\nx".to_owned()))
        );
    }

    #[test]
    fn blank_drafts_are_not_sent_and_long_ones_are_refused() {
        let mut compose = Compose::default();
        let state = State::default();
        compose.editor.set_text("  \n ");
        assert_eq!(
            compose.handle_key_event(key(KeyCode::Enter, KeyModifiers::NONE), &state),
            None
        );
        compose.editor.set_text(&"x".repeat(MAX_BODY + 1));
        assert!(matches!(
            compose.handle_key_event(key(KeyCode::Enter, KeyModifiers::NONE), &state),
            Some(Action::Error(message)) if message.contains("shorten it by 1")
        ));
        compose.editor.set_text(&"é".repeat(MAX_BODY / 2));
        assert!(matches!(
            compose.handle_key_event(key(KeyCode::Enter, KeyModifiers::NONE), &state),
            Some(Action::Send(_))
        ));
    }

    #[test]
    fn text_typed_before_a_conversation_is_open_goes_with_the_first_one() {
        let mut c = Compose::default();
        c.editor.set_text("typed too early");
        c.switch_to(Some(ChatId::Direct(7)));
        assert_eq!(c.editor.text(), "typed too early");
    }

    #[test]
    fn drafts_are_kept_per_conversation() {
        let mut compose = Compose::default();
        compose.switch_to(Some(ChatId::Direct(1)));
        compose.editor.set_text("to one");
        compose.switch_to(Some(ChatId::Direct(2)));
        assert!(compose.editor.is_empty());
        compose.editor.set_text("to two");
        compose.switch_to(Some(ChatId::Direct(1)));
        assert_eq!(compose.editor.text(), "to one");
        compose.restore(ChatId::Direct(2), "failed");
        compose.switch_to(Some(ChatId::Direct(2)));
        assert_eq!(compose.editor.text(), "failed\nto two");
    }

    #[test]
    fn ctrl_e_asks_for_the_editor() {
        let mut compose = Compose::default();
        assert_eq!(
            compose.handle_key_event(
                key(KeyCode::Char('e'), KeyModifiers::CONTROL),
                &State::default()
            ),
            Some(Action::EditDraft)
        );
    }
}
