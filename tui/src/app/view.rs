//! The frame: the sign-in form or the three panes, the status bar and the
//! open dialog, laid out for the terminal's size; and what a frame showed
//! that asks for more (older history).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use super::App;
use crate::components::Component;
use crate::state::Screen;
use crate::text;

/// The smallest terminal the panes are drawn in.
const MIN_SIZE: (u16, u16) = (40, 10);

/// The most lines the last error takes above the status bar.
const MAX_ERROR_LINES: usize = 3;

/// Where the panes were drawn, for the mouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaneAreas {
    /// The users pane.
    pub users: Rect,
    /// The inbox pane.
    pub inbox: Rect,
    /// The members pane (empty when hidden).
    pub members: Rect,
    /// The compose pane.
    pub compose: Rect,
}

impl App {
    /// Draws the whole screen.
    pub fn draw(&self, frame: &mut Frame) {
        let area = frame.area();
        if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
            frame.render_widget(
                Paragraph::new(format!(
                    "Make the terminal at least {}×{}",
                    MIN_SIZE.0, MIN_SIZE.1
                ))
                .wrap(ratatui::widgets::Wrap { trim: true }),
                area,
            );
            return;
        }
        // The last error, whole: wrapped over up to three lines above the
        // status bar.
        let error: Vec<String> = (self.state.last_error.as_deref())
            .map(|e| text::wrap(&format!("⚠ {}", text::sanitize(e)), usize::from(area.width)))
            .unwrap_or_default();
        let error_height = u16::try_from(error.len().min(MAX_ERROR_LINES)).unwrap_or(0);
        let [body, error_area, status] = Layout::vertical([
            Constraint::Min(1),
            Constraint::Length(error_height),
            Constraint::Length(1),
        ])
        .areas(area);
        match self.state.screen {
            Screen::SignIn => self.sign_in.draw(frame, body, &self.state),
            Screen::Main => self.draw_main(frame, body),
        }
        if error_height > 0 {
            let lines: Vec<Line> = (error.into_iter().take(MAX_ERROR_LINES))
                .map(|row| Line::styled(row, self.state.theme.error()))
                .collect();
            frame.render_widget(Paragraph::new(lines), error_area);
        }
        self.status_bar.draw(frame, status, &self.state);
        if let Some(dialog) = &self.dialog {
            dialog.draw(frame, area, &self.state);
        }
    }

    fn draw_main(&self, frame: &mut Frame, area: Rect) {
        let users_width = (area.width / 4).clamp(18, 32);
        let [users, right] =
            Layout::horizontal([Constraint::Length(users_width), Constraint::Min(1)]).areas(area);
        let most = (right.height / 3).max(3);
        let wanted = u16::try_from(self.compose.rows(right.width.saturating_sub(2)))
            .unwrap_or(u16::MAX)
            .saturating_add(2);
        let compose_height = wanted.clamp(3, most);
        let [mut inbox, compose] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(compose_height)]).areas(right);
        let mut members = Rect::default();
        if self.state.members_shown() {
            let width = (inbox.width / 3).clamp(16, 28);
            [inbox, members] =
                Layout::horizontal([Constraint::Min(1), Constraint::Length(width)]).areas(inbox);
        }
        self.areas.set(PaneAreas {
            users,
            inbox,
            members,
            compose,
        });
        self.users.draw(frame, users, &self.state);
        self.inbox.draw(frame, inbox, &self.state);
        if members.width > 0 {
            self.members.draw(frame, members, &self.state);
        }
        self.compose.draw(frame, compose, &self.state);
    }

    /// Called after each frame: if the frame reached the oldest loaded
    /// message, older history is fetched.
    pub fn after_draw(&mut self) {
        if self.state.screen == Screen::Main && self.inbox.near_top() {
            self.load_older();
        }
    }
}
