//! The sign-in screen: servers, username, masked password and a switch
//! between logging in and creating an account. Mistakes that can be seen
//! here (an empty field, a malformed address, a short password) are shown
//! next to their field before anything is sent; the server's refusals come
//! back to the same places.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::{Component, centered};
use crate::action::Action;
use crate::editor::Editor;
use crate::message::{Field, SignInRequest};
use crate::state::State;

/// The shortest password the server accepts for a new account, in bytes.
const MIN_PASSWORD: usize = 8;
/// The longest password the server accepts, in bytes.
const MAX_PASSWORD: usize = 1024;
/// The longest username, in bytes.
const MAX_USERNAME: usize = 32;
/// Width of the field labels.
const LABEL: u16 = 11;

/// Log in to an existing account, or create one first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Log in.
    LogIn,
    /// Create the account, then log in.
    CreateAccount,
}

/// The focusable rows of the form, in Tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The server list.
    Servers,
    /// The username.
    Username,
    /// The password.
    Password,
    /// The password again, when creating the account.
    Confirm,
    /// The log in / create account switch.
    Mode,
}

impl Focus {
    /// The next row; the confirmation only when creating.
    fn next(self, create: bool) -> Self {
        match self {
            Self::Servers => Self::Username,
            Self::Username => Self::Password,
            Self::Password if create => Self::Confirm,
            Self::Password | Self::Confirm => Self::Mode,
            Self::Mode => Self::Servers,
        }
    }

    /// The previous row; the confirmation only when creating.
    fn prev(self, create: bool) -> Self {
        match self {
            Self::Servers => Self::Mode,
            Self::Username => Self::Servers,
            Self::Password => Self::Username,
            Self::Confirm => Self::Password,
            Self::Mode if create => Self::Confirm,
            Self::Mode => Self::Password,
        }
    }
}

/// The form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    /// Comma-separated `host:port` list.
    servers: Editor,
    /// The username.
    username: Editor,
    /// The password, drawn masked.
    password: Editor,
    /// The password again (creating an account), drawn masked.
    confirm: Editor,
    /// Log in or create.
    mode: Mode,
    /// The row keys go to.
    focus: Focus,
    /// The error shown under the servers field.
    servers_error: Option<String>,
    /// The error shown under the username field.
    username_error: Option<String>,
    /// The error shown under the password field.
    password_error: Option<String>,
    /// The error shown under the confirmation.
    confirm_error: Option<String>,
    /// An error that concerns no field in particular.
    form_error: Option<String>,
    /// Why the user is here again (a session that ended, a deleted account).
    notice: Option<String>,
    /// A sign-in is on its way: Enter does nothing until it answers.
    busy: bool,
    /// The sign-in on its way resumes a saved session.
    resuming: bool,
}

impl SignIn {
    /// The form, filled with what is remembered; the cursor starts at the
    /// first empty field.
    pub fn new(servers: &[String], username: Option<&str>) -> Self {
        let servers = Editor::with_text(&servers.join(","));
        let username = Editor::with_text(username.unwrap_or_default());
        let focus = if servers.is_empty() {
            Focus::Servers
        } else if username.is_empty() {
            Focus::Username
        } else {
            Focus::Password
        };
        Self {
            servers,
            username,
            password: Editor::default(),
            confirm: Editor::default(),
            mode: Mode::LogIn,
            focus,
            servers_error: None,
            username_error: None,
            password_error: None,
            confirm_error: None,
            form_error: None,
            notice: None,
            busy: false,
            resuming: false,
        }
    }

    /// The row keys go to.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// True while a sign-in is on its way.
    pub fn is_busy(&self) -> bool {
        self.busy
    }

    /// The username as typed.
    pub fn username(&self) -> &str {
        self.username.text()
    }

    /// The password as typed.
    pub fn password(&self) -> &str {
        self.password.text()
    }

    /// Why the user is here again, if they are.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// The error shown next to `field` (or, for `None`, under the form).
    pub fn error(&self, field: Option<Field>) -> Option<&str> {
        match field {
            Some(Field::Servers) => &self.servers_error,
            Some(Field::Username) => &self.username_error,
            Some(Field::Password) => &self.password_error,
            None => &self.form_error,
        }
        .as_deref()
    }

    /// The field editor that has focus, if a text field has it.
    fn focused_editor(&mut self) -> Option<&mut Editor> {
        match self.focus {
            Focus::Servers => Some(&mut self.servers),
            Focus::Username => Some(&mut self.username),
            Focus::Password => Some(&mut self.password),
            Focus::Confirm => Some(&mut self.confirm),
            Focus::Mode => None,
        }
    }

    fn creating(&self) -> bool {
        self.mode == Mode::CreateAccount
    }

    /// The server refused the sign-in: the form is open again, with the
    /// error next to `field` (or for the whole form) and the cursor there.
    pub fn refused(&mut self, field: Option<Field>, message: String) {
        self.busy = false;
        // "Resuming your session…" is over; another notice stays.
        if self.resuming {
            self.resuming = false;
            self.notice = None;
        }
        match field {
            Some(Field::Servers) => {
                self.servers_error = Some(message);
                self.focus = Focus::Servers;
            }
            Some(Field::Username) => {
                self.username_error = Some(message);
                self.focus = Focus::Username;
            }
            Some(Field::Password) => {
                self.password_error = Some(message);
                self.focus = Focus::Password;
            }
            None => self.form_error = Some(message),
        }
    }

    /// The session is open: the password is not kept, and the username is
    /// as the server spells it, for the next sign-in.
    pub fn signed_in(&mut self, username: &str) {
        self.busy = false;
        self.resuming = false;
        self.password.take();
        self.confirm.take();
        self.notice = None;
        self.username.set_text(username);
    }

    /// The user is back on the form for the reason in `notice`; the
    /// username is kept, so only the password is asked.
    pub fn back(&mut self, notice: String) {
        self.busy = false;
        self.notice = Some(notice);
        self.password.take();
        self.confirm.take();
        self.focus = Focus::Password;
    }

    /// A saved session is being resumed on `servers`: the form waits, and
    /// says so.
    pub fn resuming(&mut self, servers: &[String]) {
        self.servers.set_text(&servers.join(","));
        self.busy = true;
        self.resuming = true;
        self.notice = Some("Resuming your session…".to_owned());
    }

    /// The account is gone: its name is no use any more.
    pub fn forget_username(&mut self) {
        self.username.take();
        self.focus = Focus::Username;
    }

    fn clear_errors(&mut self) {
        self.servers_error = None;
        self.username_error = None;
        self.password_error = None;
        self.confirm_error = None;
        self.form_error = None;
    }

    /// The servers as a list.
    pub fn server_list(&self) -> Vec<String> {
        self.servers
            .text()
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Checks the form and, if it is good, the request to send. Problems are
    /// shown next to their fields.
    fn submit(&mut self) -> Option<SignInRequest> {
        self.clear_errors();
        let servers = self.server_list();
        if servers.is_empty() {
            self.servers_error = Some("enter at least one server, as host:port".to_owned());
        }
        for server in &servers {
            if let Err(reason) = chat_client::endpoint_uri(server, server.starts_with("https:")) {
                self.servers_error = Some(format!("{server}: {reason}"));
                break;
            }
        }
        let username = self.username.text().trim().to_owned();
        if let Err(problem) = check_username(&username) {
            self.username_error = Some(problem);
        }
        let password = self.password.text().to_owned();
        if password.is_empty() {
            self.password_error = Some("enter your password".to_owned());
        } else if self.mode == Mode::CreateAccount && password.len() < MIN_PASSWORD {
            self.password_error = Some(format!(
                "a new password needs at least {MIN_PASSWORD} bytes"
            ));
        } else if password.len() > MAX_PASSWORD {
            self.password_error = Some(format!("a password is at most {MAX_PASSWORD} bytes"));
        } else if self.creating() && self.confirm.text() != password {
            self.confirm_error = Some(if self.confirm.is_empty() {
                "type the password again".to_owned()
            } else {
                "the two passwords differ: type it again".to_owned()
            });
            self.confirm.take();
        }
        if let Some(focus) = [
            (self.servers_error.is_some(), Focus::Servers),
            (self.username_error.is_some(), Focus::Username),
            (self.password_error.is_some(), Focus::Password),
            (self.confirm_error.is_some(), Focus::Confirm),
        ]
        .into_iter()
        .find_map(|(bad, focus)| bad.then_some(focus))
        {
            self.focus = focus;
            return None;
        }
        Some(SignInRequest {
            servers,
            username,
            password,
            create: self.mode == Mode::CreateAccount,
        })
    }

    fn toggle_mode(&mut self) {
        self.mode = match self.mode {
            Mode::LogIn => Mode::CreateAccount,
            Mode::CreateAccount => Mode::LogIn,
        };
        self.form_error = None;
        self.confirm_error = None;
        if self.focus == Focus::Confirm {
            self.focus = Focus::Password;
        }
    }

    /// Pastes into the focused field (line breaks become spaces).
    pub fn paste(&mut self, text: &str) {
        let flat = text.replace(['\r', '\n'], " ");
        if let Some(editor) = self.focused_editor() {
            editor.insert_str(&flat);
        }
    }
}

/// What is wrong with a username, as the server would say it.
fn check_username(username: &str) -> Result<(), String> {
    if username.is_empty() {
        return Err("enter a username".to_owned());
    }
    if username.len() > MAX_USERNAME
        || !username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(format!(
            "1 to {MAX_USERNAME} letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

impl Component for SignIn {
    fn handle_key_event(&mut self, key: KeyEvent, _state: &State) -> Option<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Enter => {
                if self.busy {
                    return None;
                }
                // Creating: Enter after the password asks for it again.
                if self.creating() && self.focus == Focus::Password && self.confirm.is_empty() {
                    let length = self.password.text().len();
                    if length < MIN_PASSWORD {
                        self.password_error = Some(format!(
                            "a new password needs at least {MIN_PASSWORD} bytes"
                        ));
                    } else if length <= MAX_PASSWORD {
                        self.focus = Focus::Confirm;
                    }
                    if length < MIN_PASSWORD || length <= MAX_PASSWORD {
                        return None;
                    }
                }
                return self.submit().map(Action::SignIn);
            }
            KeyCode::Tab | KeyCode::Down => self.focus = self.focus.next(self.creating()),
            KeyCode::BackTab | KeyCode::Up => self.focus = self.focus.prev(self.creating()),
            KeyCode::Char('t') if ctrl => self.toggle_mode(),
            KeyCode::Left | KeyCode::Right | KeyCode::Char(' ') if self.focus == Focus::Mode => {
                self.toggle_mode();
            }
            _ => {
                let focus = self.focus;
                let editor = self.focused_editor()?;
                if editor.handle_key(&key, false) {
                    match focus {
                        Focus::Servers => self.servers_error = None,
                        Focus::Username => self.username_error = None,
                        Focus::Password => self.password_error = None,
                        Focus::Confirm => self.confirm_error = None,
                        Focus::Mode => {}
                    }
                }
            }
        }
        None
    }

    fn update(&mut self, action: &Action, _state: &State) {
        if let Action::SignIn(_) = action {
            self.busy = true;
            self.notice = None;
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let notice_lines = self.notice.as_ref().map_or(0, |_| 3);
        let confirm_lines = if self.creating() { 2 } else { 0 };
        let box_area = centered(area, 72, 15 + notice_lines + confirm_lines);
        frame.render_widget(Clear, box_area);
        let block = Block::bordered()
            .border_type(theme.border_type(true))
            .border_style(theme.border(true))
            .title(Span::styled(" chat · sign in ", theme.title()));
        let inner = block.inner(box_area);
        frame.render_widget(block, box_area);
        if inner.width < LABEL + 4 || inner.height < 3 {
            return;
        }
        let mut y = inner.y + 1;
        let left = inner.x + 1;
        let field_width = inner.width.saturating_sub(LABEL + 2);
        if let Some(notice) = &self.notice {
            let rect = Rect::new(left, y, inner.width.saturating_sub(2), 2);
            frame.render_widget(
                Paragraph::new(notice.as_str())
                    .style(theme.warning())
                    .wrap(Wrap { trim: true }),
                rect,
            );
            y += 3;
        }
        let mut fields = vec![
            (
                Focus::Servers,
                "Servers",
                &self.servers,
                None,
                &self.servers_error,
            ),
            (
                Focus::Username,
                "Username",
                &self.username,
                None,
                &self.username_error,
            ),
            (
                Focus::Password,
                "Password",
                &self.password,
                Some('•'),
                &self.password_error,
            ),
        ];
        if self.creating() {
            fields.push((
                Focus::Confirm,
                "Again",
                &self.confirm,
                Some('•'),
                &self.confirm_error,
            ));
        }
        let bottom = inner.y + inner.height;
        for (focus, label, editor, mask, error) in fields {
            if y + 1 >= bottom {
                return;
            }
            let focused = self.focus == focus;
            let label_style = if focused { theme.key() } else { theme.text() };
            let marker = if focused { "› " } else { "  " };
            frame.render_widget(
                Line::from(vec![
                    Span::styled(marker, label_style),
                    Span::styled(label, label_style),
                ]),
                Rect::new(left - 1, y, LABEL + 1, 1),
            );
            let layout = editor.layout(usize::from(field_width.saturating_sub(1)), mask);
            // One row: the end of a long value stays in view.
            let (row, column) = layout.cursor;
            let shown = layout.rows.get(row).cloned().unwrap_or_default();
            let field = Rect::new(left + LABEL, y, field_width, 1);
            frame.render_widget(Paragraph::new(shown).style(theme.input()), field);
            if focused && !self.busy {
                let x = field.x + u16::try_from(column).unwrap_or(0).min(field_width - 1);
                frame.set_cursor_position(Position::new(x, y));
            }
            if let Some(error) = error {
                frame.render_widget(
                    Paragraph::new(
                        crate::text::truncate(error, usize::from(field_width)).into_owned(),
                    )
                    .style(theme.error()),
                    Rect::new(left + LABEL, y + 1, field_width, 1),
                );
            }
            y += 2;
        }
        if y >= bottom {
            return;
        }
        let focused = self.focus == Focus::Mode;
        let label_style = if focused { theme.key() } else { theme.text() };
        let choice = |on: bool, text: &'static str| {
            let style = if on { theme.title() } else { theme.dim() };
            Span::styled(format!("{} {text}", if on { "(•)" } else { "( )" }), style)
        };
        frame.render_widget(
            Line::from(vec![
                Span::styled(if focused { "› " } else { "  " }, label_style),
                Span::styled(
                    format!("{:<w$}", "Mode", w = usize::from(LABEL - 1)),
                    label_style,
                ),
                choice(self.mode == Mode::LogIn, "Log in"),
                Span::raw("   "),
                choice(self.mode == Mode::CreateAccount, "Create account"),
            ]),
            Rect::new(left - 1, y, inner.width.saturating_sub(1), 1),
        );
        y += 2;
        if y >= bottom {
            return;
        }
        let status = if self.busy {
            Line::styled(
                match self.mode {
                    Mode::LogIn => "Signing in…",
                    Mode::CreateAccount => "Creating the account…",
                },
                theme.warning(),
            )
        } else if let Some(error) = &self.form_error {
            Line::styled(error.as_str(), theme.error())
        } else {
            Line::default()
        };
        frame.render_widget(
            Paragraph::new(status).wrap(Wrap { trim: true }),
            Rect::new(left, y, inner.width.saturating_sub(2), 2.min(bottom - y)),
        );
        y += 2;
        if y >= bottom {
            return;
        }
        let key = |k: &'static str| Span::styled(k, theme.key());
        let hint = |h: &'static str| Span::styled(h, theme.dim());
        let action = match self.mode {
            Mode::LogIn => " log in  ",
            Mode::CreateAccount => " create  ",
        };
        frame.render_widget(
            Paragraph::new(Line::from(vec![
                key("Enter"),
                hint(action),
                key("Tab"),
                hint(" next  "),
                key("Ctrl+T"),
                hint(" log in/create  "),
                key("Ctrl+C"),
                hint(" quit"),
            ]))
            .wrap(Wrap { trim: true }),
            Rect::new(left, y, inner.width.saturating_sub(2), (bottom - y).min(2)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn type_text(form: &mut SignIn, text: &str) {
        for c in text.chars() {
            form.handle_key_event(key(KeyCode::Char(c)), &State::default());
        }
    }

    #[test]
    fn starts_at_the_first_empty_field() {
        assert_eq!(SignIn::new(&[], None).focus, Focus::Servers);
        let servers = ["127.0.0.1:1".to_owned()];
        assert_eq!(SignIn::new(&servers, None).focus, Focus::Username);
        assert_eq!(SignIn::new(&servers, Some("al")).focus, Focus::Password);
    }

    #[test]
    fn problems_are_shown_next_to_their_field_before_anything_is_sent() {
        let mut form = SignIn::new(&["nowhere".to_owned()], Some("bad name"));
        assert_eq!(
            form.handle_key_event(key(KeyCode::Enter), &State::default()),
            None
        );
        assert!(form.servers_error.as_deref().unwrap().contains("port"));
        assert!(form.username_error.is_some());
        assert_eq!(form.password_error.as_deref(), Some("enter your password"));
        assert_eq!(form.focus, Focus::Servers);
        // Editing a field clears its error.
        type_text(&mut form, ":1");
        assert_eq!(form.servers_error, None);
    }

    #[test]
    fn a_new_account_needs_a_long_enough_password() {
        let mut form = SignIn::new(&["127.0.0.1:1".to_owned()], Some("alice"));
        form.handle_key_event(
            KeyEvent::new(KeyCode::Char('t'), KeyModifiers::CONTROL),
            &State::default(),
        );
        assert_eq!(form.mode, Mode::CreateAccount);
        type_text(&mut form, "short");
        assert_eq!(
            form.handle_key_event(key(KeyCode::Enter), &State::default()),
            None
        );
        assert!(
            form.password_error
                .as_deref()
                .unwrap()
                .contains("at least 8")
        );
        type_text(&mut form, "-but-ok");
        // Enter asks for it again; a different one is refused.
        assert_eq!(
            form.handle_key_event(key(KeyCode::Enter), &State::default()),
            None
        );
        assert_eq!(form.focus, Focus::Confirm);
        type_text(&mut form, "short-but-OK");
        assert_eq!(
            form.handle_key_event(key(KeyCode::Enter), &State::default()),
            None
        );
        assert!(
            (form.confirm_error.as_deref()).is_some_and(|e| e.contains("differ")),
            "{:?}",
            form.confirm_error
        );
        assert_eq!(form.focus, Focus::Confirm);
        type_text(&mut form, "short-but-ok");
        let action = form.handle_key_event(key(KeyCode::Enter), &State::default());
        assert_eq!(
            action,
            Some(Action::SignIn(SignInRequest {
                servers: vec!["127.0.0.1:1".to_owned()],
                username: "alice".to_owned(),
                password: "short-but-ok".to_owned(),
                create: true,
            }))
        );
    }

    #[test]
    fn server_lists_split_on_commas_and_spaces() {
        let form = SignIn::new(&["a:1, b:2 ,c:3".to_owned()], None);
        assert_eq!(form.server_list(), ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn the_mode_switch_toggles_with_space_and_arrows() {
        let mut form = SignIn::new(&[], None);
        form.focus = Focus::Mode;
        form.handle_key_event(key(KeyCode::Char(' ')), &State::default());
        assert_eq!(form.mode, Mode::CreateAccount);
        form.handle_key_event(key(KeyCode::Left), &State::default());
        assert_eq!(form.mode, Mode::LogIn);
    }

    #[test]
    fn pasting_into_a_field_flattens_lines() {
        let mut form = SignIn::new(&[], None);
        form.paste("a:1\nb:2");
        assert_eq!(form.servers.text(), "a:1 b:2");
        assert_eq!(form.server_list(), ["a:1", "b:2"]);
    }
}
