//! The panes and dialogs. Each turns keys into [`Action`]s
//! (`handle_key_event`), owns its own view state (a cursor, a scroll
//! position, a draft), and draws itself from the shared [`State`] into the
//! area it is given. Only the component changes its state: the app hands it
//! every action (`update`) and tells it what happened through its typed
//! methods (a refused sign-in, a message arriving above the window). None
//! of them does I/O.

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Position, Rect};
use ratatui::text::{Line, Span};

use crate::action::Action;
use crate::editor::Editor;
use crate::state::State;
use crate::theme::Theme;

pub mod compose;
pub mod dialog;
pub mod group_form;
pub mod inbox;
pub mod members;
pub mod search;
pub mod sign_in;
pub mod status_bar;
pub mod switcher;
pub mod users;

/// A pane or dialog.
pub trait Component {
    /// What a key means here; `None` when it means nothing (or only changed
    /// the component's own state, such as typing into a field).
    fn handle_key_event(&mut self, key: KeyEvent, state: &State) -> Option<Action>;

    /// Reacts to an action that concerns this component's own state.
    fn update(&mut self, _action: &Action, _state: &State) {}

    /// Draws the component into `area`.
    fn draw(&self, frame: &mut Frame, area: Rect, state: &State);
}

/// A rectangle of at most `width` x `height` centred in `area`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

/// Draws `editor` as a one-line field behind `prompt` (two cells) on the
/// first row of `area`, the row with the cursor showing, and puts the
/// terminal's cursor there: the query line of the switcher and the search.
pub fn draw_query_line(
    frame: &mut Frame,
    area: Rect,
    prompt: &'static str,
    editor: &Editor,
    theme: &Theme,
) {
    let width = usize::from(area.width.saturating_sub(3));
    let layout = editor.layout(width, None);
    let shown = layout
        .rows
        .get(layout.cursor.0)
        .cloned()
        .unwrap_or_default();
    frame.render_widget(
        Line::from(vec![
            Span::styled(prompt, theme.key()),
            Span::styled(format!("{shown:<width$}"), theme.input()),
        ]),
        Rect { height: 1, ..area },
    );
    let x = area.x + 2 + u16::try_from(layout.cursor.1).unwrap_or(0);
    frame.set_cursor_position(Position::new(x.min(area.right() - 1), area.y));
}
