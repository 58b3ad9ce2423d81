//! The members pane, beside the inbox when a group is open and `m` shows
//! it: the owner first, then the admins, then everyone else by name, with
//! who is online. From here the owner and admins add, remove and rename,
//! the owner names admins and hands the group on, and anyone leaves.

use std::cell::Cell;

use chat_client::{AccountId, ConversationMember};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::Component;
use crate::action::{Action, Move};
use crate::state::{Conversation, Pane, State};
use crate::text;

/// The members pane's own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// The selected member.
    selected: Option<AccountId>,
    /// The first row shown.
    offset: Cell<usize>,
    /// Rows that fit, at the last frame.
    page: Cell<usize>,
}

/// The members in the pane's order: owner, admins, the rest, by name.
pub fn ordered(conversation: &Conversation) -> Vec<&ConversationMember> {
    let Some(members) = conversation.group.as_ref().and_then(|g| g.members.as_ref()) else {
        return Vec::new();
    };
    let mut list: Vec<&ConversationMember> = members.iter().collect();
    list.sort_by(|a, b| {
        (b.owner, b.admin)
            .cmp(&(a.owner, a.admin))
            .then_with(|| a.username.cmp(&b.username))
            .then(a.account_id.cmp(&b.account_id))
    });
    list
}

impl Members {
    /// Nothing selected (another conversation was opened).
    pub fn reset(&mut self) {
        self.selected = None;
        self.offset.set(0);
    }

    /// The selected member, if it is still in the open group.
    pub fn selected(&self, state: &State) -> Option<AccountId> {
        let conversation = state.open_conversation()?;
        let list = ordered(conversation);
        let id = self
            .selected
            .or_else(|| list.first().map(|m| m.account_id))?;
        list.iter().any(|m| m.account_id == id).then_some(id)
    }

    /// After the members changed: a selection that left moves to the first.
    pub fn clamp(&mut self, conversation: Option<&Conversation>) {
        let list = conversation.map(ordered).unwrap_or_default();
        if let Some(id) = self.selected
            && list.iter().all(|m| m.account_id != id)
        {
            self.selected = list.first().map(|m| m.account_id);
        }
    }

    fn step(&mut self, step: Move, state: &State) {
        let Some(conversation) = state.open_conversation() else {
            return;
        };
        let list = ordered(conversation);
        if list.is_empty() {
            return;
        }
        let last = list.len() - 1;
        let page = self.page.get().max(1);
        let at = self
            .selected(state)
            .and_then(|id| list.iter().position(|m| m.account_id == id))
            .unwrap_or(0);
        let target = match step {
            Move::Up => at.saturating_sub(1),
            Move::Down => (at + 1).min(last),
            Move::PageUp => at.saturating_sub(page),
            Move::PageDown => (at + page).min(last),
            Move::First => 0,
            Move::Last => last,
        };
        self.selected = Some(list[target].account_id);
    }
}

impl Component for Members {
    fn handle_key_event(&mut self, key: KeyEvent, state: &State) -> Option<Action> {
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return None;
        }
        let selected = self.selected(state);
        Some(match key.code {
            KeyCode::Up | KeyCode::Char('k') => Action::MoveMember(Move::Up),
            KeyCode::Down | KeyCode::Char('j') => Action::MoveMember(Move::Down),
            KeyCode::PageUp => Action::MoveMember(Move::PageUp),
            KeyCode::PageDown => Action::MoveMember(Move::PageDown),
            KeyCode::Home | KeyCode::Char('g') => Action::MoveMember(Move::First),
            KeyCode::End | KeyCode::Char('G') => Action::MoveMember(Move::Last),
            KeyCode::Char('a') => Action::AskAddMembers,
            KeyCode::Char('t') => Action::AskRename,
            KeyCode::Char('x') => Action::AskLeave,
            KeyCode::Char('d') | KeyCode::Delete => Action::AskRemoveMember(selected?),
            KeyCode::Char('o') => Action::AskNewOwner(selected?),
            KeyCode::Char('A') => Action::ToggleAdmin(selected?),
            KeyCode::Esc => Action::Focus(Pane::Inbox),
            _ => return None,
        })
    }

    fn update(&mut self, action: &Action, state: &State) {
        if let Action::MoveMember(step) = action {
            self.step(*step, state);
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let focused = state.focus == Pane::Members;
        let conversation = state.open_conversation();
        let group = conversation.and_then(|c| c.group.as_ref());
        let count = group.map_or(0, |g| g.member_count);
        let block = Block::bordered()
            .border_type(theme.border_type(focused))
            .border_style(theme.border(focused))
            .title(Span::styled(format!(" Members ({count}) "), theme.title()));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let (Some(conversation), Some(group)) = (conversation, group) else {
            return;
        };
        if group.members.is_none() {
            frame.render_widget(Line::styled("Loading…", theme.dim()), inner);
            return;
        }
        let me = state.my_id();
        let hints: Vec<(&str, &str)> = if group.may_manage(me) {
            vec![
                ("a", "add"),
                ("d", "remove"),
                ("t", "rename"),
                ("x", "leave"),
            ]
        } else {
            vec![("x", "leave")]
        };
        let hint_line = Line::from(
            hints
                .iter()
                .flat_map(|(k, what)| {
                    [
                        Span::styled(*k, theme.key()),
                        Span::styled(format!(" {what} "), theme.dim()),
                    ]
                })
                .collect::<Vec<_>>(),
        );
        let hint_rows = match (focused, inner.height, inner.width) {
            (false, _, _) | (_, 0..=4, _) => 0,
            (true, _, 0..=35) => 2,
            (true, _, _) => 1,
        };
        let list_area = Rect {
            height: inner.height - hint_rows,
            ..inner
        };
        let list = ordered(conversation);
        let height = usize::from(list_area.height).max(1);
        self.page.set(height);
        let selected = self
            .selected(state)
            .and_then(|id| list.iter().position(|m| m.account_id == id));
        let mut offset = self.offset.get().min(list.len().saturating_sub(1));
        if let Some(at) = selected {
            if at < offset {
                offset = at;
            } else if at >= offset + height {
                offset = at + 1 - height;
            }
        }
        self.offset.set(offset);
        let width = usize::from(inner.width);
        let lines: Vec<Line> = (list.iter().enumerate().skip(offset).take(height))
            .map(|(i, member)| {
                let role = if member.owner {
                    " owner"
                } else if member.admin {
                    " admin"
                } else {
                    ""
                };
                let dot = if state.is_online(member.account_id) {
                    Span::styled("● ", theme.good())
                } else {
                    Span::raw("  ")
                };
                let name_width = width.saturating_sub(2 + text::width(role));
                let name =
                    text::truncate(&text::sanitize(&member.username), name_width).into_owned();
                let pad = " ".repeat(name_width.saturating_sub(text::width(&name)));
                let name_style = if member.account_id == me {
                    theme.own_name()
                } else {
                    theme.text()
                };
                let mut line = Line::from(vec![
                    dot,
                    Span::styled(format!("{name}{pad}"), name_style),
                    Span::styled(role, theme.dim()),
                ]);
                if Some(i) == selected && focused {
                    line = line.patch_style(theme.selected());
                }
                line
            })
            .collect();
        frame.render_widget(Paragraph::new(lines), list_area);
        if hint_rows > 0 {
            frame.render_widget(
                Paragraph::new(hint_line).wrap(Wrap { trim: true }),
                Rect {
                    y: inner.bottom() - hint_rows,
                    height: hint_rows,
                    ..inner
                },
            );
        }
    }
}
