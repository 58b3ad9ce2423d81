//! The dialogs drawn over the main screen: help (every key), the
//! confirmation before deleting a message, and account deletion (asks for
//! the password again and says it cannot be undone). While one is open it
//! gets every key.

use chat_client::{Account, AccountId, GroupEdit, Message, MessageId};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

pub use super::group_form::GroupForm;
use super::search::Search;
use super::switcher::{CommandLine, Switcher};
use super::{Component, centered};
use crate::action::Action;
use crate::editor::Editor;
use crate::state::{Conversation, State};
use crate::text;

/// Every key of the program, by where it works: the help dialog's text.
pub const KEYS: &[(&str, &[(&str, &str)])] = &[
    (
        "Anywhere",
        &[
            ("Tab / Shift+Tab", "next / previous pane"),
            ("? or F1", "this help (? only when not typing)"),
            ("q / Ctrl+C", "quit (q only when not typing)"),
            ("Esc", "close a dialog, clear the error or the filter"),
            ("L / D", "log out / delete the account (not typing)"),
            ("m", "show / hide the members of the open group"),
            ("Ctrl+K", "go to any conversation or account (fuzzy)"),
            ("Ctrl+F", "search the open conversation's whole history"),
            ("Alt+1..9", "open the first nine conversations"),
            (
                ":",
                "command: :dm NAME, :search TEXT, :group, :logout, :quit, :help",
            ),
        ],
    ),
    (
        "Users",
        &[
            (
                "↑↓ j k, g G",
                "move; first, last (the real last: pages load)",
            ),
            ("PgUp PgDn", "a page up / down"),
            ("/", "filter by name: * any run, ? one character"),
            ("r", "reload the list of accounts"),
            ("n", "new group: a title, then members by name"),
            ("z", "mute / unmute (a mention still notifies)"),
            ("Enter", "open the conversation and write"),
        ],
    ),
    (
        "Inbox",
        &[
            ("↑↓ j k, g G", "select a message; oldest, newest"),
            (
                "PgUp PgDn Home End",
                "scroll (mouse wheel too); older messages load",
            ),
            ("d", "delete the selected message"),
            ("r", "in a group: who read the selected message"),
        ],
    ),
    (
        "Members (m)",
        &[
            ("↑↓ j k", "select a member"),
            ("a / t", "add members / rename (owner, admins)"),
            ("d", "remove the selected member (owner, admins)"),
            ("A / o", "make admin or not / hand on ownership (owner)"),
            ("x", "leave the group"),
        ],
    ),
    (
        "Compose",
        &[
            ("Enter", "send"),
            ("Alt+Enter Shift+Enter", "new line (also Ctrl+J)"),
            ("Ctrl+E", "edit the draft in $EDITOR"),
            ("Ctrl+U / Ctrl+W", "delete to line start / the word before"),
        ],
    ),
];

/// An open dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialog {
    /// The list of keys.
    Help {
        /// Lines scrolled, for small terminals.
        scroll: u16,
    },
    /// Delete one message?
    ConfirmDelete {
        /// The message.
        id: MessageId,
        /// Its first line, to show which.
        preview: String,
        /// Who keeps their copy: the other party, or the group's others.
        peer: String,
    },
    /// Make a group, add members, rename.
    Group(GroupForm),
    /// Change the open group this way?
    Confirm {
        /// The dialog's title.
        heading: &'static str,
        /// The question.
        text: String,
        /// The change, if confirmed.
        edit: GroupEdit,
    },
    /// Jump to a conversation (Ctrl+K).
    Switcher(Switcher),
    /// A command after `:`.
    CommandLine(CommandLine),
    /// Search the open conversation on the server.
    Search(Search),
    /// Who read a message of a group.
    Readers {
        /// "Read by 2 of 3".
        heading: String,
        /// Those who read it, by name.
        read: Vec<String>,
        /// Those who have not yet.
        unread: Vec<String>,
    },
    /// Delete the account?
    DeleteAccount {
        /// The password, typed again.
        password: Editor,
        /// What the server said to the last attempt.
        error: Option<String>,
        /// The request is on its way.
        busy: bool,
    },
}

impl Dialog {
    /// The list of keys, from its top.
    pub fn help() -> Self {
        Self::Help { scroll: 0 }
    }

    /// Asks whether to delete `message` from `conversation`.
    pub fn confirm_delete(message: &Message, conversation: &Conversation) -> Self {
        Self::ConfirmDelete {
            id: message.id,
            preview: message.body.lines().next().unwrap_or_default().to_owned(),
            peer: if conversation.is_group() {
                "the other members keep theirs".to_owned()
            } else {
                format!("{} keeps their copy", conversation.name)
            },
        }
    }

    /// Asks to confirm a change to the open group.
    pub fn confirm(heading: &'static str, text: String, edit: GroupEdit) -> Self {
        Self::Confirm {
            heading,
            text,
            edit,
        }
    }

    /// Hands the server's completions to a dialog that asked for them.
    pub fn completions(&mut self, prefix: &str, accounts: Vec<Account>, me: AccountId) {
        match self {
            Self::Group(form) => form.completions(prefix, accounts, me),
            Self::Switcher(switcher) => switcher.completions(prefix, accounts),
            _ => {}
        }
    }

    /// Asks for the password before deleting the account.
    pub fn delete_account() -> Self {
        Self::DeleteAccount {
            password: Editor::default(),
            error: None,
            busy: false,
        }
    }

    /// True when keys type into the dialog.
    pub fn is_typing(&self) -> bool {
        matches!(
            self,
            Self::DeleteAccount { .. }
                | Self::Group(_)
                | Self::Switcher(_)
                | Self::CommandLine(_)
                | Self::Search(_)
        )
    }

    /// Pastes into the password field, if the dialog has one; a line break
    /// at the end (copied with the password) is not part of it.
    pub fn paste(&mut self, text: &str) -> Option<Action> {
        match self {
            Self::DeleteAccount { password, .. } => {
                password.insert_str(text.trim_end_matches(['\r', '\n']));
                None
            }
            Self::Group(form) => form.paste(text),
            Self::Switcher(switcher) => {
                switcher.query.insert_str(&text.replace(['\r', '\n'], " "));
                None
            }
            Self::CommandLine(command) => {
                command.line.insert_str(&text.replace(['\r', '\n'], " "));
                None
            }
            Self::Search(search) => {
                search.query.insert_str(&text.replace(['\r', '\n'], " "));
                None
            }
            _ => None,
        }
    }

    /// Shows why deleting the account failed, so the user can try again;
    /// false when this is not the dialog that asked.
    pub fn show_refusal(&mut self, message: &str) -> bool {
        match self {
            Self::DeleteAccount { error, busy, .. } => {
                *error = Some(message.to_owned());
                *busy = false;
                true
            }
            Self::Group(form) if form.busy => {
                form.refused(message);
                true
            }
            _ => false,
        }
    }
}

impl Component for Dialog {
    fn handle_key_event(&mut self, key: KeyEvent, state: &State) -> Option<Action> {
        match self {
            Self::Switcher(switcher) => switcher.handle_key(key, state),
            Self::CommandLine(command) => command.handle_key(key),
            Self::Search(search) => search.handle_key(key),
            Self::Help { scroll } => match key.code {
                KeyCode::Up | KeyCode::Char('k') => {
                    *scroll = scroll.saturating_sub(1);
                    None
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    *scroll = scroll.saturating_add(1);
                    None
                }
                _ => Some(Action::CloseDialog),
            },
            Self::ConfirmDelete { id, .. } => match key.code {
                KeyCode::Char('y' | 'Y') | KeyCode::Enter => Some(Action::DeleteMessage(*id)),
                KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => Some(Action::CloseDialog),
                _ => None,
            },
            Self::Confirm { edit, .. } => match key.code {
                KeyCode::Char('y' | 'Y') | KeyCode::Enter => {
                    Some(Action::ChangeGroup(edit.clone()))
                }
                KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => Some(Action::CloseDialog),
                _ => None,
            },
            Self::Readers { .. } => Some(Action::CloseDialog),
            Self::Group(form) => form.handle_key(key),
            Self::DeleteAccount {
                password,
                error,
                busy,
            } => match key.code {
                KeyCode::Esc => Some(Action::CloseDialog),
                KeyCode::Enter if *busy => None,
                KeyCode::Enter if password.is_empty() => {
                    *error = Some("enter your password to confirm".to_owned());
                    None
                }
                KeyCode::Enter => Some(Action::DeleteAccount(password.text().to_owned())),
                _ if key.modifiers.contains(KeyModifiers::ALT) => None,
                _ => {
                    if password.handle_key(&key, false) {
                        *error = None;
                    }
                    None
                }
            },
        }
    }

    fn update(&mut self, action: &Action, _state: &State) {
        if let (Self::DeleteAccount { busy, .. }, Action::DeleteAccount(_)) = (self, action) {
            *busy = true;
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let key = |k: &'static str| Span::styled(k, theme.key());
        let hint = |h: &'static str| Span::styled(h, theme.dim());
        match self {
            Self::Help { scroll } => {
                let mut lines = Vec::new();
                for (section, keys) in KEYS {
                    lines.push(Line::styled(*section, theme.title()));
                    for (keys, what) in *keys {
                        lines.push(Line::from(vec![
                            Span::styled(format!("  {keys:<22}"), theme.key()),
                            Span::raw(*what),
                        ]));
                    }
                }
                let height = u16::try_from(lines.len()).unwrap_or(u16::MAX) + 2;
                let rect = centered(area, 78, height);
                let block = Block::bordered()
                    .border_type(theme.border_type(true))
                    .border_style(theme.border(true))
                    .title(Span::styled(" Keys ", theme.title()))
                    .title_bottom(Line::from(vec![key(" Esc"), hint(" close ")]).right_aligned());
                let max_scroll = height.saturating_sub(rect.height);
                frame.render_widget(Clear, rect);
                frame.render_widget(
                    Paragraph::new(lines)
                        .block(block)
                        .scroll(((*scroll).min(max_scroll), 0)),
                    rect,
                );
            }
            Self::ConfirmDelete { preview, peer, .. } => {
                let rect = centered(area, 60, 8);
                let block = Block::bordered()
                    .border_type(theme.border_type(true))
                    .border_style(theme.error())
                    .title(Span::styled(" Delete message ", theme.title()));
                let lines = vec![
                    Line::raw(format!(
                        "“{}”",
                        text::truncate(
                            &text::sanitize(preview),
                            usize::from(rect.width.saturating_sub(6))
                        )
                    )),
                    Line::default(),
                    Line::raw(format!(
                        "It goes from your view only; {}.",
                        text::sanitize(peer)
                    )),
                    Line::default(),
                    Line::from(vec![key("y"), hint(" delete   "), key("n"), hint(" keep")]),
                ];
                draw_box(frame, rect, block, lines);
            }
            Self::Group(form) => form.draw(frame, area, state),
            Self::Switcher(switcher) => switcher.draw(frame, area, state),
            Self::CommandLine(command) => command.draw(frame, area, state),
            Self::Search(search) => search.draw(frame, area, state),
            Self::Confirm { heading, text, .. } => {
                let rect = centered(area, 60, 8);
                let block = Block::bordered()
                    .border_type(theme.border_type(true))
                    .border_style(theme.warning())
                    .title(Span::styled(format!(" {heading} "), theme.title()));
                let lines = vec![
                    Line::raw(text::sanitize(text).into_owned()),
                    Line::default(),
                    Line::from(vec![key("y"), hint(" yes   "), key("n"), hint(" no")]),
                ];
                draw_box(frame, rect, block, lines);
            }
            Self::Readers {
                heading,
                read,
                unread,
            } => {
                let list = |names: &[String]| {
                    if names.is_empty() {
                        "nobody".to_owned()
                    } else {
                        (names.iter())
                            .map(|n| text::sanitize(n).into_owned())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                };
                let lines = vec![
                    Line::from(vec![
                        Span::styled("Read: ", theme.good()),
                        Span::raw(list(read)),
                    ]),
                    Line::default(),
                    Line::from(vec![
                        Span::styled("Not yet: ", theme.dim()),
                        Span::raw(list(unread)),
                    ]),
                ];
                let rect = centered(area, 60, 9);
                let block = Block::bordered()
                    .border_type(theme.border_type(true))
                    .border_style(theme.border(true))
                    .title(Span::styled(format!(" {heading} "), theme.title()))
                    .title_bottom(
                        Line::from(vec![key(" any key"), hint(" close ")]).right_aligned(),
                    );
                frame.render_widget(Clear, rect);
                frame.render_widget(
                    Paragraph::new(lines).block(block).wrap(Wrap { trim: true }),
                    rect,
                );
            }
            Self::DeleteAccount {
                password,
                error,
                busy,
            } => {
                let rect = centered(area, 64, 12);
                let block = Block::bordered()
                    .border_type(theme.border_type(true))
                    .border_style(theme.error())
                    .title(Span::styled(" Delete account ", theme.title()));
                let inner = block.inner(rect);
                let name = state.me.as_ref().map_or("", |me| me.username.as_str());
                let lines = vec![
                    Line::styled(
                        format!("Delete the account {name}? This cannot be undone."),
                        theme.error(),
                    ),
                    Line::raw(
                        "You are signed out everywhere, every message you sent or received is erased for both sides, and the name becomes free.",
                    ),
                ];
                frame.render_widget(Clear, rect);
                frame.render_widget(block, rect);
                let text_area = Rect {
                    height: inner.height.saturating_sub(4),
                    ..inner
                };
                frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), text_area);
                if inner.height < 4 {
                    return;
                }
                let y = inner.bottom() - 4;
                let label = "Password ";
                let field_x = inner.x + u16::try_from(label.len()).unwrap_or(0);
                let field_width = inner.right().saturating_sub(field_x);
                let layout = password.layout(usize::from(field_width.saturating_sub(1)), Some('•'));
                frame.render_widget(
                    Line::from(vec![
                        Span::styled(label, theme.title()),
                        Span::styled(
                            format!(
                                "{:<w$}",
                                layout
                                    .rows
                                    .get(layout.cursor.0)
                                    .cloned()
                                    .unwrap_or_default(),
                                w = usize::from(field_width)
                            ),
                            theme.input(),
                        ),
                    ]),
                    Rect {
                        y,
                        height: 1,
                        ..inner
                    },
                );
                if !busy {
                    let x = field_x + u16::try_from(layout.cursor.1).unwrap_or(0);
                    frame.set_cursor_position(Position::new(x.min(inner.right() - 1), y));
                }
                let status = if *busy {
                    Line::styled("Deleting…", theme.warning())
                } else if let Some(error) = error {
                    Line::styled(error.clone(), theme.error())
                } else {
                    Line::default()
                };
                frame.render_widget(
                    status,
                    Rect {
                        y: y + 1,
                        height: 1,
                        ..inner
                    },
                );
                frame.render_widget(
                    Line::from(vec![
                        key("Enter"),
                        hint(" delete for ever   "),
                        key("Esc"),
                        hint(" cancel"),
                    ]),
                    Rect {
                        y: y + 3,
                        height: 1,
                        ..inner
                    },
                );
            }
        }
    }
}

/// Draws `lines` in `block` over whatever is at `rect`, wrapped.
fn draw_box(frame: &mut Frame, rect: Rect, block: Block, lines: Vec<Line>) {
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn confirming_a_delete_names_the_message() {
        let mut dialog = Dialog::ConfirmDelete {
            id: 7,
            preview: "hi".to_owned(),
            peer: "bob".to_owned(),
        };
        let state = State::default();
        assert_eq!(
            dialog.handle_key_event(key(KeyCode::Char('x')), &state),
            None
        );
        assert_eq!(
            dialog.handle_key_event(key(KeyCode::Char('y')), &state),
            Some(Action::DeleteMessage(7))
        );
        assert_eq!(
            dialog.handle_key_event(key(KeyCode::Esc), &state),
            Some(Action::CloseDialog)
        );
    }

    #[test]
    fn deleting_the_account_needs_the_password() {
        let mut dialog = Dialog::DeleteAccount {
            password: Editor::default(),
            error: None,
            busy: false,
        };
        let state = State::default();
        assert_eq!(dialog.handle_key_event(key(KeyCode::Enter), &state), None);
        assert!(matches!(
            &dialog,
            Dialog::DeleteAccount { error: Some(_), .. }
        ));
        for c in "secret".chars() {
            dialog.handle_key_event(key(KeyCode::Char(c)), &state);
        }
        assert!(matches!(&dialog, Dialog::DeleteAccount { error: None, .. }));
        assert_eq!(
            dialog.handle_key_event(key(KeyCode::Enter), &state),
            Some(Action::DeleteAccount("secret".to_owned()))
        );
    }

    #[test]
    fn help_lists_every_key_and_closes_on_any_other() {
        let all: Vec<&str> = KEYS
            .iter()
            .flat_map(|(_, keys)| keys.iter().map(|(k, _)| *k))
            .collect();
        for needed in ["Tab / Shift+Tab", "/", "d", "Ctrl+E", "Enter", "q / Ctrl+C"] {
            assert!(all.contains(&needed), "{needed}");
        }
        let mut dialog = Dialog::Help { scroll: 0 };
        let state = State::default();
        assert_eq!(dialog.handle_key_event(key(KeyCode::Down), &state), None);
        assert_eq!(dialog, Dialog::Help { scroll: 1 });
        assert_eq!(
            dialog.handle_key_event(key(KeyCode::Esc), &state),
            Some(Action::CloseDialog)
        );
    }
}
