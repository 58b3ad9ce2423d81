//! The status bar: who is signed in and where, the state of the connection
//! (connected, reconnecting and when, switched to another server, the
//! stream being resumed), the total unread count, and a mark while an error
//! shows above it.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::Component;
use crate::action::Action;
use crate::state::{Link, Screen, State};
use crate::text;

/// The status bar; it has no state of its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusBar;

/// The connection, in words, with the style to show it in.
fn link_span(state: &State) -> Span<'static> {
    let theme = &state.theme;
    match &state.link {
        Link::Offline => Span::styled("○ not connected", theme.dim()),
        Link::Connected { .. } if state.stream_error.is_some() => Span::styled(
            format!(
                "◌ resuming the stream ({})",
                state.stream_error.as_deref().unwrap_or_default()
            ),
            theme.warning(),
        ),
        Link::Connected {
            switched_from: Some(from),
            ..
        } => Span::styled(format!("● connected (switched from {from})"), theme.good()),
        Link::Connected { .. } => Span::styled("● connected", theme.good()),
        Link::Reconnecting { server, next_in } => Span::styled(
            format!(
                "◌ reconnecting to {server} in {:.1}s",
                next_in.as_secs_f32()
            ),
            theme.warning(),
        ),
        Link::NoMajority { .. } => {
            Span::styled("◐ connected, but writes wait: no majority", theme.warning())
        }
        Link::Failed => Span::styled("✗ no server reachable; retrying", theme.error()),
    }
}

impl Component for StatusBar {
    fn handle_key_event(&mut self, _key: KeyEvent, _state: &State) -> Option<Action> {
        None
    }

    fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let separator = || Span::styled(" │ ", theme.dim());
        let who = match (&state.me, state.screen) {
            (Some(me), Screen::Main) => format!(" {}", me.username),
            _ => " not signed in".to_owned(),
        };
        let server = match &state.link {
            Link::Connected { server, .. } | Link::NoMajority { server } => Some(server.clone()),
            _ => state.servers.first().cloned(),
        };
        let mut spans = vec![Span::styled(who, theme.title())];
        if let Some(server) = server {
            spans.push(Span::styled(format!(" @ {server}"), theme.text()));
        }
        spans.push(separator());
        spans.push(link_span(state));
        if state.screen == Screen::Main {
            spans.push(separator());
            let unread = state.total_unread();
            spans.push(if unread > 0 {
                Span::styled(format!("{unread} unread"), theme.unread())
            } else {
                Span::styled("no unread", theme.dim())
            });
        }
        let help = Span::styled(" ? help ", theme.key());
        if state.last_error.is_some() {
            // The error itself is on the lines above, whole.
            spans.push(separator());
            spans.push(Span::styled("⚠ Esc", theme.error()));
        }
        let used: usize = spans.iter().map(|s| text::width(&s.content)).sum();
        let pad = usize::from(area.width).saturating_sub(used + text::width(&help.content));
        spans.push(Span::raw(" ".repeat(pad)));
        spans.push(help);
        frame.render_widget(
            Paragraph::new(Line::from(spans)).style(theme.selected().patch(theme.text())),
            area,
        );
    }
}
