//! The group dialogs: make a group (a title and its first members), add
//! members to the open group, rename it. Members are picked by name with
//! completion from the server's directory: what is typed asks the server
//! for the accounts starting with it, Tab or Enter takes the highlighted
//! one, and a picked member is kept by account id.

use chat_client::{Account, AccountId, ConversationId, GroupEdit};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::centered;
use crate::action::Action;
use crate::editor::Editor;
use crate::state::State;
use crate::text;

/// The longest group title, in characters (the server's limit).
pub const MAX_TITLE: usize = 64;

/// What the dialog is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Make a new group.
    New,
    /// Add members to this group.
    Add(ConversationId),
    /// Rename this group.
    Rename(ConversationId),
}

/// Which field has the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The title.
    Title,
    /// The name being typed to add a member.
    Members,
}

/// A group dialog's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupForm {
    /// What it is for.
    pub purpose: Purpose,
    /// The title (new group, rename).
    pub title: Editor,
    /// The members picked so far, by id, with their names.
    pub chosen: Vec<(AccountId, String)>,
    /// The name being typed.
    pub input: Editor,
    /// The accounts offered for `input`, once the server answered for it.
    pub suggestions: Option<Vec<Account>>,
    /// The highlighted suggestion.
    pub highlight: usize,
    /// Which field has the keys.
    pub field: Field,
    /// What is wrong, to show under the fields.
    pub error: Option<String>,
    /// The request is on its way (new group).
    pub busy: bool,
}

impl GroupForm {
    fn with(purpose: Purpose, title: &str, field: Field) -> Self {
        Self {
            purpose,
            title: Editor::with_text(title),
            chosen: Vec::new(),
            input: Editor::default(),
            suggestions: None,
            highlight: 0,
            field,
            error: None,
            busy: false,
        }
    }

    /// The dialog that makes a group.
    pub fn new_group() -> Self {
        Self::with(Purpose::New, "", Field::Title)
    }

    /// The dialog that adds members to `group`.
    pub fn add_members(group: ConversationId) -> Self {
        Self::with(Purpose::Add(group), "", Field::Members)
    }

    /// The dialog that renames `group`, now titled `title`.
    pub fn rename(group: ConversationId, title: &str) -> Self {
        Self::with(Purpose::Rename(group), title, Field::Title)
    }

    fn has_title(&self) -> bool {
        matches!(self.purpose, Purpose::New | Purpose::Rename(_))
    }

    fn has_members(&self) -> bool {
        matches!(self.purpose, Purpose::New | Purpose::Add(_))
    }

    /// The server's answer to a completion: kept if it is for what is typed
    /// now, without the user and those already picked.
    pub fn completions(&mut self, prefix: &str, accounts: Vec<Account>, me: AccountId) {
        if prefix != self.input.text() {
            return;
        }
        let offered = accounts
            .into_iter()
            .filter(|a| a.account_id != me)
            .filter(|a| self.chosen.iter().all(|(id, _)| *id != a.account_id))
            .collect();
        self.suggestions = Some(offered);
        self.highlight = 0;
    }

    /// Pastes into the field with the keys, on one line.
    pub fn paste(&mut self, pasted: &str) -> Option<Action> {
        let line = pasted.replace(['\r', '\n'], " ");
        match self.field {
            Field::Title => {
                self.title.insert_str(line.trim());
                None
            }
            Field::Members => {
                self.input.insert_str(line.trim());
                Some(self.typed())
            }
        }
    }

    /// Shows why the server refused.
    pub fn refused(&mut self, message: &str) {
        self.error = Some(message.to_owned());
        self.busy = false;
    }

    /// The name field changed: forget the old suggestions, ask for new ones.
    fn typed(&mut self) -> Action {
        self.suggestions = None;
        self.highlight = 0;
        self.error = None;
        Action::Complete(self.input.text().to_owned())
    }

    /// Takes the highlighted suggestion, or the one named exactly as typed;
    /// false (with an error) when there is none.
    fn accept(&mut self) -> bool {
        let typed = self.input.text().trim().to_owned();
        let offered = self.suggestions.as_deref().unwrap_or_default();
        let pick = offered
            .iter()
            .find(|a| a.username == typed)
            .or_else(|| offered.get(self.highlight));
        let Some(account) = pick.cloned() else {
            self.error = Some(if self.suggestions.is_none() {
                "looking the name up… try again in a moment".to_owned()
            } else {
                format!("no account starts with \"{typed}\"")
            });
            return false;
        };
        if self.chosen.iter().all(|(id, _)| *id != account.account_id) {
            self.chosen.push((account.account_id, account.username));
        }
        self.input.take();
        self.suggestions = None;
        self.highlight = 0;
        self.error = None;
        true
    }

    /// The title as typed, or why it cannot be one.
    fn valid_title(&mut self) -> Option<String> {
        let title = self.title.text().trim().to_owned();
        let problem = if title.is_empty() {
            Some("give the group a title".to_owned())
        } else if title.chars().count() > MAX_TITLE {
            Some(format!("a title is at most {MAX_TITLE} characters"))
        } else if title.chars().any(char::is_control) {
            Some("a title is one line of printable text".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            self.error = Some(problem);
            self.field = Field::Title;
            return None;
        }
        Some(title)
    }

    /// What Enter on an empty name field (or on the title, renaming) does.
    fn submit(&mut self) -> Option<Action> {
        let ids: Vec<AccountId> = self.chosen.iter().map(|(id, _)| *id).collect();
        match self.purpose {
            Purpose::New => {
                let title = self.valid_title()?;
                self.busy = true;
                Some(Action::CreateGroup {
                    title,
                    members: ids,
                })
            }
            Purpose::Add(_) if self.chosen.is_empty() => {
                self.error = Some("type a name, then Tab to pick it".to_owned());
                None
            }
            Purpose::Add(_) => Some(Action::ChangeGroup(GroupEdit::Add(ids))),
            Purpose::Rename(_) => {
                let title = self.valid_title()?;
                Some(Action::ChangeGroup(GroupEdit::Rename(title)))
            }
        }
    }

    /// What a key does in the dialog.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.code == KeyCode::Esc {
            return Some(Action::CloseDialog);
        }
        if self.busy || key.modifiers.contains(KeyModifiers::ALT) {
            return None;
        }
        match (self.field, key.code) {
            (Field::Title, KeyCode::Enter) if self.purpose == Purpose::New => {
                self.valid_title()?;
                self.error = None;
                self.field = Field::Members;
                None
            }
            (Field::Title, KeyCode::Enter) => self.submit(),
            (Field::Title, KeyCode::Tab | KeyCode::Down) if self.has_members() => {
                self.field = Field::Members;
                None
            }
            (Field::Title, _) => {
                if self.title.handle_key(&key, false) {
                    self.error = None;
                }
                None
            }
            (Field::Members, KeyCode::BackTab) if self.has_title() => {
                self.field = Field::Title;
                None
            }
            (Field::Members, KeyCode::Up) => {
                if self.highlight == 0 && self.has_title() {
                    self.field = Field::Title;
                }
                self.highlight = self.highlight.saturating_sub(1);
                None
            }
            (Field::Members, KeyCode::Down) => {
                let offered = self.suggestions.as_ref().map_or(0, Vec::len);
                self.highlight = (self.highlight + 1).min(offered.saturating_sub(1));
                None
            }
            (Field::Members, KeyCode::Tab) => {
                if !self.input.is_empty() {
                    self.accept();
                }
                None
            }
            (Field::Members, KeyCode::Enter) if self.input.text().trim().is_empty() => {
                self.submit()
            }
            (Field::Members, KeyCode::Enter) => {
                self.accept();
                None
            }
            (Field::Members, KeyCode::Backspace) if self.input.is_empty() => {
                self.chosen.pop();
                None
            }
            (Field::Members, _) => {
                let before = self.input.text().to_owned();
                if self.input.handle_key(&key, false) && self.input.text() != before {
                    Some(self.typed())
                } else {
                    None
                }
            }
        }
    }

    /// Draws the dialog.
    pub fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let key = |k: &'static str| Span::styled(k, theme.key());
        let hint = |h: &'static str| Span::styled(h, theme.dim());
        let (heading, height) = match self.purpose {
            Purpose::New => (" New group ", 16),
            Purpose::Add(_) => (" Add members ", 14),
            Purpose::Rename(_) => (" Rename group ", 7),
        };
        let rect = centered(area, 64, height);
        let block = Block::bordered()
            .border_type(theme.border_type(true))
            .border_style(theme.border(true))
            .title(Span::styled(heading, theme.title()));
        let inner = block.inner(rect);
        frame.render_widget(Clear, rect);
        frame.render_widget(block, rect);
        let label_width: u16 = 9;
        let field_x = inner.x + label_width;
        let field_width = inner.right().saturating_sub(field_x);
        let mut y = inner.y;
        let mut cursor = None;
        let row = |y: u16| Rect {
            y,
            height: 1,
            ..inner
        };
        let field_line = |label: &'static str, editor: &Editor, active: bool| {
            let layout = editor.layout(usize::from(field_width.saturating_sub(1)), None);
            let shown = layout
                .rows
                .get(layout.cursor.0)
                .cloned()
                .unwrap_or_default();
            let line = Line::from(vec![
                Span::styled(
                    format!("{label:<w$}", w = usize::from(label_width)),
                    if active { theme.title() } else { theme.dim() },
                ),
                Span::styled(
                    format!("{shown:<w$}", w = usize::from(field_width)),
                    theme.input(),
                ),
            ]);
            (line, u16::try_from(layout.cursor.1).unwrap_or(0))
        };
        if self.has_title() && y < inner.bottom() {
            let active = self.field == Field::Title;
            let (line, at) = field_line("Title", &self.title, active);
            frame.render_widget(line, row(y));
            if active {
                cursor = Some(Position::new(field_x + at, y));
            }
            y += 2;
        }
        if self.has_members() && y + 1 < inner.bottom() {
            let picked = if self.chosen.is_empty() {
                Span::styled("nobody yet (you are in it)", theme.dim())
            } else {
                let names: Vec<String> = (self.chosen.iter())
                    .map(|(_, name)| text::sanitize(name).into_owned())
                    .collect();
                Span::raw(names.join(", "))
            };
            let label = if self.purpose == Purpose::New {
                "With"
            } else {
                "Adding"
            };
            frame.render_widget(
                Paragraph::new(Line::from(vec![
                    Span::styled(
                        format!("{label:<w$}", w = usize::from(label_width)),
                        theme.dim(),
                    ),
                    picked,
                ]))
                .wrap(Wrap { trim: true }),
                Rect {
                    y,
                    height: 2,
                    ..inner
                },
            );
            y += 2;
            let active = self.field == Field::Members;
            let (line, at) = field_line("Name", &self.input, active);
            frame.render_widget(line, row(y));
            if active {
                cursor = Some(Position::new(field_x + at, y));
            }
            y += 1;
            let offered: Vec<Line> = match &self.suggestions {
                None if self.input.is_empty() => Vec::new(),
                None => vec![Line::styled("…", theme.dim())],
                Some(list) if list.is_empty() => vec![Line::styled(
                    "no account starts with that (you and those picked are left out)",
                    theme.dim(),
                )],
                Some(list) => (list.iter().enumerate())
                    .map(|(i, account)| {
                        let name = text::sanitize(&account.username).into_owned();
                        if i == self.highlight && active {
                            Line::styled(format!("› {name}"), theme.selected())
                        } else {
                            Line::raw(format!("  {name}"))
                        }
                    })
                    .collect(),
            };
            for line in offered {
                if y + 2 >= inner.bottom() {
                    break;
                }
                frame.render_widget(
                    line,
                    Rect {
                        x: field_x,
                        y,
                        width: field_width,
                        height: 1,
                    },
                );
                y += 1;
            }
        }
        if inner.height >= 2 {
            let status = if self.busy {
                Line::styled("Making the group…", theme.warning())
            } else if let Some(error) = &self.error {
                Line::styled(text::sanitize(error).into_owned(), theme.error())
            } else {
                Line::default()
            };
            frame.render_widget(status, row(inner.bottom() - 2));
            let keys = match (self.purpose, self.field) {
                (Purpose::Rename(_), _) => {
                    vec![
                        key("Enter"),
                        hint(" rename   "),
                        key("Esc"),
                        hint(" cancel"),
                    ]
                }
                (Purpose::New, Field::Title) => {
                    vec![key("Enter"), hint(" next   "), key("Esc"), hint(" cancel")]
                }
                (_, Field::Members) | (Purpose::Add(_), _) => vec![
                    key("Tab"),
                    hint(" pick   "),
                    key("↑↓"),
                    hint(" choose   "),
                    key("Enter"),
                    hint(if self.purpose == Purpose::New {
                        " on an empty name: create   "
                    } else {
                        " on an empty name: add   "
                    }),
                    key("Esc"),
                ],
            };
            frame.render_widget(Line::from(keys), row(inner.bottom() - 1));
        }
        if let Some(at) = cursor
            && !self.busy
        {
            frame.set_cursor_position(Position::new(at.x.min(inner.right() - 1), at.y));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn account(id: AccountId, name: &str) -> Account {
        Account {
            username: name.to_owned(),
            account_id: id,
            created_at: UNIX_EPOCH,
            online: false,
        }
    }

    fn type_text(form: &mut GroupForm, text: &str) -> Option<Action> {
        let mut last = None;
        for c in text.chars() {
            last = form.handle_key(key(KeyCode::Char(c)));
        }
        last
    }

    #[test]
    fn a_new_group_takes_a_title_and_picked_members_by_id() {
        let mut form = GroupForm::new_group();
        // No title: it says so and stays on the title.
        assert_eq!(form.handle_key(key(KeyCode::Enter)), None);
        assert!(form.error.is_some());
        type_text(&mut form, "team");
        assert_eq!(form.handle_key(key(KeyCode::Enter)), None);
        assert_eq!(form.field, Field::Members);
        // Typing asks for completions; only the answer for what is typed
        // now counts, without the user.
        assert_eq!(
            type_text(&mut form, "ca"),
            Some(Action::Complete("ca".into()))
        );
        form.completions("c", vec![account(9, "cy")], 1);
        assert_eq!(form.suggestions, None);
        form.completions("ca", vec![account(1, "carl"), account(3, "carol")], 1);
        assert_eq!(form.suggestions.as_ref().map(Vec::len), Some(1));
        form.handle_key(key(KeyCode::Tab));
        assert_eq!(form.chosen, vec![(3, "carol".to_owned())]);
        // A name nobody has is refused, not sent.
        type_text(&mut form, "zz");
        form.completions("zz", Vec::new(), 1);
        assert_eq!(form.handle_key(key(KeyCode::Enter)), None);
        assert!(form.error.as_deref().is_some_and(|e| e.contains("zz")));
        // Backspace empties the name, then takes back the last pick.
        form.handle_key(key(KeyCode::Backspace));
        form.handle_key(key(KeyCode::Backspace));
        type_text(&mut form, "b");
        form.completions("b", vec![account(2, "bob"), account(4, "bea")], 1);
        form.handle_key(key(KeyCode::Down));
        form.handle_key(key(KeyCode::Enter));
        assert_eq!(form.chosen.len(), 2);
        assert_eq!(form.chosen[1], (4, "bea".to_owned()));
        assert_eq!(
            form.handle_key(key(KeyCode::Enter)),
            Some(Action::CreateGroup {
                title: "team".into(),
                members: vec![3, 4]
            })
        );
        assert!(form.busy);
        form.refused("the title is taken");
        assert!(!form.busy);
    }

    #[test]
    fn adding_needs_someone_and_renaming_a_title() {
        let mut add = GroupForm::add_members(7);
        assert_eq!(add.handle_key(key(KeyCode::Enter)), None);
        assert!(add.error.is_some());
        type_text(&mut add, "dee");
        add.completions("dee", vec![account(5, "dee")], 1);
        add.handle_key(key(KeyCode::Enter));
        assert_eq!(
            add.handle_key(key(KeyCode::Enter)),
            Some(Action::ChangeGroup(GroupEdit::Add(vec![5])))
        );
        let mut rename = GroupForm::rename(7, "team");
        for _ in 0..4 {
            rename.handle_key(key(KeyCode::Backspace));
        }
        assert_eq!(rename.handle_key(key(KeyCode::Enter)), None);
        type_text(&mut rename, &"x".repeat(MAX_TITLE + 1));
        assert_eq!(rename.handle_key(key(KeyCode::Enter)), None);
        assert!(rename.error.as_deref().is_some_and(|e| e.contains("64")));
        rename.title.set_text("crew");
        assert_eq!(
            rename.handle_key(key(KeyCode::Enter)),
            Some(Action::ChangeGroup(GroupEdit::Rename("crew".into())))
        );
    }
}
