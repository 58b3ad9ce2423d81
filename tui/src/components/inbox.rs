//! The inbox pane: the open conversation, newest at the bottom.
//!
//! Each message is a header (sender, local time, and on the user's own
//! messages how far it got: sent, delivered, read; in a group "read by N of
//! M") and its body wrapped to the pane's width. A "new" line sits above
//! the first message that was unread when the conversation was opened, a
//! date line above each day's first message, a group's changes (who was
//! added, who left, renames) in their place among the messages, and the
//! sends still waiting for the server come last, marked as such.
//!
//! Drawing walks from the newest message up and stops once the window (and
//! a page of look-ahead) is filled, so a conversation of any length draws
//! in the time of one screen. The scroll position is counted in lines from
//! the bottom, so loading older history above never moves what is shown.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use chat_client::{GroupChange, GroupChangeKind, Message, MessageId};
use chrono::{DateTime, FixedOffset, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::Component;
use crate::action::{Action, Move, Scroll};
use crate::app::is_name_char;
use crate::state::{Conversation, History, Pane, Pending, Receipt, State};
use crate::text;

/// Columns the message body is indented by, under its header.
const INDENT: usize = 2;

/// What the last frame found out about the pane, for the keys and for
/// loading older history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Viewport {
    /// The width the text was wrapped to.
    pub width: u16,
    /// The lines that fit.
    pub height: u16,
    /// The oldest loaded message is within a page of the window: time to
    /// load older ones, if there are any.
    pub near_top: bool,
}

/// The inbox pane's own state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbox {
    /// Lines between the bottom of the window and the newest line; 0 follows
    /// new messages. Clamped by the frame when it runs past the oldest.
    scroll: Cell<usize>,
    /// The selected message (what `d` deletes); shown while focused.
    selected: Option<MessageId>,
    /// Set when the selection moved: the next frame scrolls it into view.
    reveal: Cell<bool>,
    /// A message the next frame puts at the top of the window (the first
    /// unread, with its "new" line), if what follows fills it.
    anchor: Cell<Option<MessageId>>,
    /// Home was pressed: the window stays at the oldest line while older
    /// pages load, until the beginning or another scroll.
    to_top: Cell<bool>,
    /// What the last frame saw.
    viewport: Cell<Viewport>,
    /// Body heights by message id at one width, so a frame scrolled far up
    /// measures the messages below the window without wrapping them again.
    heights: RefCell<(usize, HashMap<MessageId, usize>)>,
}

impl Inbox {
    /// The selected message.
    pub fn selected(&self) -> Option<MessageId> {
        self.selected
    }

    /// Lines between the bottom of the window and the newest line (0 when
    /// following new messages).
    pub fn scroll(&self) -> usize {
        self.scroll.get()
    }

    /// The last frame showed the oldest loaded message: time to load older
    /// ones, if there are any.
    pub fn near_top(&self) -> bool {
        self.viewport.get().near_top
    }

    /// Back to the bottom with nothing selected (another conversation).
    pub fn reset(&mut self) {
        self.scroll.set(0);
        self.selected = None;
        self.reveal.set(false);
        self.anchor.set(None);
        self.to_top.set(false);
    }

    /// The next frame shows `id` (the first unread) at the top of the
    /// window, or the newest messages if they do not fill it.
    pub fn show_from(&mut self, id: MessageId) {
        self.anchor.set(Some(id));
        self.to_top.set(false);
    }

    /// Back to the newest message (the user just sent one).
    pub fn follow_newest(&mut self) {
        self.scroll_to(Scroll::Bottom);
    }

    /// Applies a scroll.
    fn scroll_to(&mut self, scroll: Scroll) {
        let page = usize::from(self.viewport.get().height.max(2)) - 1;
        let current = self.scroll.get();
        self.scroll.set(match scroll {
            Scroll::Up(n) => current.saturating_add(n),
            Scroll::Down(n) => current.saturating_sub(n),
            Scroll::PageUp => current.saturating_add(page),
            Scroll::PageDown => current.saturating_sub(page),
            // The frame clamps it to the oldest loaded line.
            Scroll::Top => usize::MAX / 2,
            Scroll::Bottom => 0,
        });
        self.reveal.set(false);
        self.anchor.set(None);
        self.to_top.set(scroll == Scroll::Top);
    }

    /// Moves the selection through `conversation`'s messages (up is
    /// older). Returns true when it hit the oldest loaded message going up,
    /// so older history should be loaded.
    pub fn move_selection(&mut self, step: Move, conversation: &Conversation) -> bool {
        let ids: Vec<MessageId> = conversation.messages.keys().copied().collect();
        let Some(&newest) = ids.last() else {
            return false;
        };
        let page = usize::from(self.viewport.get().height / 3).max(1);
        let at = self
            .selected
            .and_then(|id| ids.binary_search(&id).ok())
            .unwrap_or(ids.len() - 1);
        let target = match (self.selected, step) {
            (None, _) => ids.len() - 1,
            (_, Move::Up) => at.saturating_sub(1),
            (_, Move::Down) => (at + 1).min(ids.len() - 1),
            (_, Move::PageUp) => at.saturating_sub(page),
            (_, Move::PageDown) => (at + page).min(ids.len() - 1),
            (_, Move::First) => 0,
            (_, Move::Last) => ids.len() - 1,
        };
        let hit_top = target == 0 && matches!(step, Move::Up | Move::PageUp | Move::First);
        self.selected = Some(ids.get(target).copied().unwrap_or(newest));
        self.reveal.set(true);
        self.anchor.set(None);
        self.to_top.set(false);
        hit_top
    }

    /// Selects message `id` and scrolls it into view on the next frame.
    pub fn select(&mut self, id: MessageId) {
        self.selected = Some(id);
        self.reveal.set(true);
        self.anchor.set(None);
        self.to_top.set(false);
    }

    /// Keeps the window on the same lines when `message`, not yet in
    /// `conversation`, is about to be added below while the user is
    /// scrolled up.
    pub fn keep_position(&mut self, message: &Message, conversation: &Conversation, state: &State) {
        let scroll = self.scroll.get();
        if scroll == 0 {
            return;
        }
        let older = conversation
            .messages
            .range(..message.id)
            .next_back()
            .map(|(_, m)| m);
        let width = usize::from(self.viewport.get().width);
        let lines = message_height(message, older, conversation, state, width);
        self.scroll.set(scroll + lines);
    }

    /// The pane got the focus: the newest message is selected when nothing
    /// is, and shown if the window follows the newest.
    pub fn focused(&mut self, conversation: Option<&Conversation>) {
        if self.selected.is_none()
            && let Some(conversation) = conversation
        {
            self.selected = conversation.messages.keys().next_back().copied();
        }
        self.reveal.set(self.scroll.get() == 0);
    }

    /// Messages were deleted from `conversation` (the open one): a deleted
    /// selection moves to the next newer message, else the next older.
    pub fn removed(&mut self, ids: &[MessageId], conversation: Option<&Conversation>) {
        let Some(selected) = self.selected.filter(|id| ids.contains(id)) else {
            return;
        };
        self.selected = conversation.and_then(|c| {
            c.messages
                .range(selected..)
                .next()
                .or_else(|| c.messages.range(..selected).next_back())
                .map(|(&id, _)| id)
        });
    }
}

/// The lines one message takes, as drawn.
pub fn message_lines(
    message: &Message,
    older: Option<&Message>,
    conversation: &Conversation,
    state: &State,
    width: usize,
    selected: bool,
) -> Vec<Line<'static>> {
    let theme = &state.theme;
    let mut lines = Vec::new();
    let local = local_time(message, state.time_zone);
    if older
        .is_none_or(|older| local_time(older, state.time_zone).date_naive() != local.date_naive())
    {
        lines.push(rule(
            &local.format("%a %-d %b %Y").to_string(),
            width,
            theme.dim(),
        ));
    }
    if conversation.new_marker == Some(message.id) {
        lines.push(rule("new", width, theme.unread()));
    }
    let body_start = lines.len();
    if continues(message, older, conversation, state) {
        push_body(&mut lines, &message.body, width, state);
        if selected {
            for line in &mut lines[body_start..] {
                *line = std::mem::take(line).patch_style(theme.selected());
            }
        }
        return lines;
    }
    let mine = message.from_account_id == state.my_id();
    let mut header = vec![
        Span::styled(
            text::sanitize(&message.from).into_owned(),
            if mine {
                theme.own_name()
            } else {
                theme.peer_name()
            },
        ),
        Span::styled(format!("  {}", local.format("%H:%M")), theme.dim()),
    ];
    if mine {
        header.push(match conversation.receipt(message) {
            Receipt::Sent => Span::styled("  ✓ sent", theme.dim()),
            Receipt::Delivered => Span::styled("  ✓✓ delivered", theme.dim()),
            Receipt::Read => Span::styled("  ✓✓ read", theme.good()),
            Receipt::ReadBy { read, of } => {
                Span::styled(format!("  ✓✓ read by {read} of {of}"), theme.dim())
            }
            Receipt::ReadByAll => Span::styled("  ✓✓ read by all", theme.good()),
        });
    }
    lines.push(Line::from(header));
    push_body(&mut lines, &message.body, width, state);
    if selected {
        for line in &mut lines[body_start..] {
            *line = std::mem::take(line).patch_style(theme.selected());
        }
    }
    lines
}

/// How close in time a message must follow the one before from the same
/// sender to go under its header.
const SAME_HEADER: Duration = Duration::from_secs(5 * 60);

/// Whether `message` goes under the header of `older`, the message before
/// it: the same sender, the same day, within a few minutes, no "new" line
/// between, and for the user's own, the same receipt.
fn continues(
    message: &Message,
    older: Option<&Message>,
    conversation: &Conversation,
    state: &State,
) -> bool {
    let Some(older) = older else {
        return false;
    };
    let soon = (message.sent_at.duration_since(older.sent_at)).is_ok_and(|gap| gap <= SAME_HEADER);
    let same_day = local_time(older, state.time_zone).date_naive()
        == local_time(message, state.time_zone).date_naive();
    let mine = message.from_account_id == state.my_id();
    older.from_account_id == message.from_account_id
        && soon
        && same_day
        && conversation.new_marker != Some(message.id)
        && (!mine || conversation.receipt(message) == conversation.receipt(older))
}

/// The lines a send waiting for the server takes.
fn pending_lines(pending: &Pending, state: &State, width: usize) -> Vec<Line<'static>> {
    let theme = &state.theme;
    let status = match &pending.retrying {
        None => Span::styled("  ⋯ sending", theme.dim()),
        Some(error) => Span::styled(format!("  ⟳ not sent yet: {error}"), theme.warning()),
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(
            text::sanitize(&pending.author).into_owned(),
            theme.own_name(),
        ),
        status,
    ])];
    push_body(&mut lines, &pending.body, width, state);
    lines
}

/// What a group change says, as the timeline shows it.
pub fn change_text(change: &GroupChange, state: &State) -> String {
    let me = state.my_id();
    let name = |id: u64, name: &str| {
        if id == me {
            "you".to_owned()
        } else if name.is_empty() {
            "a deleted account".to_owned()
        } else {
            text::sanitize(name).into_owned()
        }
    };
    let by = name(change.by_account_id, &change.by);
    let names: Vec<String> = (change.accounts.iter())
        .map(|(id, n)| name(*id, n))
        .collect();
    let first = names
        .first()
        .cloned()
        .unwrap_or_else(|| "someone".to_owned());
    let title = text::sanitize(&change.title);
    let mut said = match change.kind {
        GroupChangeKind::Created => format!("{by} made the group “{title}”"),
        GroupChangeKind::Added => format!("{by} added {}", names.join(", ")),
        GroupChangeKind::Removed => format!("{by} removed {first}"),
        GroupChangeKind::Left => format!("{by} left"),
        GroupChangeKind::Renamed => format!("{by} renamed the group to “{title}”"),
        GroupChangeKind::OwnerChanged => format!("{by} handed the group on to {first}"),
        GroupChangeKind::AdminAdded => format!("{by} made {first} an admin"),
        GroupChangeKind::AdminRemoved => format!("{by} made {first} a plain member"),
        GroupChangeKind::AccountDeleted => format!("{by} deleted their account"),
        GroupChangeKind::Unknown => format!("{by} changed the group"),
    };
    if let Some(owner) = change.new_owner {
        let owner = name(owner, state.name_of(owner).unwrap_or_default());
        said.push_str(&format!("; {owner} owns it now"));
    }
    said
}

/// The lines a group change takes: centred, wrapped.
fn change_lines(change: &GroupChange, state: &State, width: usize) -> Vec<Line<'static>> {
    let said = format!("· {} ·", change_text(change, state));
    text::wrap(&said, width)
        .into_iter()
        .map(|row| Line::styled(row, state.theme.dim()).centered())
        .collect()
}

/// Appends `body`, sanitised, wrapped and indented.
fn push_body(lines: &mut Vec<Line<'static>>, body: &str, width: usize, state: &State) {
    let indent = " ".repeat(INDENT);
    let me = state.me.as_ref().map_or("", |me| me.username.as_str());
    for row in text::wrap(&text::sanitize(body), width.saturating_sub(INDENT)) {
        let mut spans = vec![Span::raw(indent.clone())];
        spans.extend(mention_spans(&row, me, state));
        lines.push(Line::from(spans));
    }
}

/// `row` with each `@name` in it highlighted, the user's own name most.
fn mention_spans(row: &str, me: &str, state: &State) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    let mut plain = 0;
    let mut chars = row.char_indices().peekable();
    let mut previous: Option<char> = None;
    while let Some((at, c)) = chars.next() {
        let starts = c == '@' && previous.is_none_or(|p| !is_name_char(p));
        previous = Some(c);
        if !starts {
            continue;
        }
        let mut end = at + 1;
        while let Some(&(i, n)) = chars.peek() {
            if !is_name_char(n) {
                break;
            }
            end = i + n.len_utf8();
            previous = Some(n);
            chars.next();
        }
        // A full stop after a name ends the sentence, not the name.
        while end > at + 1 && row[..end].ends_with('.') {
            end -= 1;
        }
        if end == at + 1 {
            continue;
        }
        spans.push(Span::raw(row[plain..at].to_owned()));
        let name = &row[at + 1..end];
        let style = if name.eq_ignore_ascii_case(me) {
            state.theme.unread().add_modifier(Modifier::REVERSED)
        } else {
            state.theme.key()
        };
        spans.push(Span::styled(row[at..end].to_owned(), style));
        plain = end;
    }
    spans.push(Span::raw(row[plain..].to_owned()));
    spans
}

/// A centred label in a horizontal rule: `──── new ────`.
fn rule(label: &str, width: usize, style: Style) -> Line<'static> {
    let label = format!(" {label} ");
    let side = width.saturating_sub(text::width(&label)) / 2;
    let right = width.saturating_sub(side + text::width(&label));
    Line::styled(
        format!("{}{label}{}", "─".repeat(side), "─".repeat(right)),
        style,
    )
}

/// A message's time in the user's zone.
pub(crate) fn local_time(message: &Message, zone: FixedOffset) -> DateTime<FixedOffset> {
    DateTime::<Utc>::from(message.sent_at).with_timezone(&zone)
}

impl Component for Inbox {
    fn handle_key_event(&mut self, key: KeyEvent, _state: &State) -> Option<Action> {
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return None;
        }
        Some(match key.code {
            KeyCode::Up | KeyCode::Char('k') => Action::MoveMessage(Move::Up),
            KeyCode::Down | KeyCode::Char('j') => Action::MoveMessage(Move::Down),
            KeyCode::Char('g') => Action::MoveMessage(Move::First),
            KeyCode::Char('G') => Action::MoveMessage(Move::Last),
            KeyCode::PageUp => Action::Scroll(Scroll::PageUp),
            KeyCode::PageDown => Action::Scroll(Scroll::PageDown),
            KeyCode::Home => Action::Scroll(Scroll::Top),
            KeyCode::End => Action::Scroll(Scroll::Bottom),
            KeyCode::Char('d') | KeyCode::Delete => Action::AskDeleteMessage,
            KeyCode::Char('r') => Action::ShowReaders,
            KeyCode::Enter | KeyCode::Char('i') => Action::Focus(Pane::Compose),
            _ => return None,
        })
    }

    fn update(&mut self, action: &Action, _state: &State) {
        if let Action::Scroll(scroll) = action {
            self.scroll_to(*scroll);
        }
    }

    fn draw(&self, frame: &mut Frame, area: Rect, state: &State) {
        let theme = &state.theme;
        let focused = state.focus == Pane::Inbox;
        let conversation = state.open_conversation();
        let mut title = vec![Span::styled(" Inbox ", theme.title())];
        if let Some(conversation) = conversation {
            let mark = if conversation.is_group() { "# " } else { "" };
            title = vec![Span::styled(
                format!(" {mark}{} ", text::sanitize(&conversation.name)),
                theme.title(),
            )];
            if conversation.deleted {
                title.push(Span::styled("(deleted) ", theme.dim()));
            }
            if let Some(group) = &conversation.group {
                let hint = if state.members_shown() {
                    ""
                } else {
                    " · m: members"
                };
                title.push(Span::styled(
                    format!("{} members{hint} ", group.member_count),
                    theme.dim(),
                ));
            }
            if conversation.peer_id().is_some_and(|id| state.is_online(id)) {
                title.push(Span::styled("● online ", theme.good()));
            }
        }
        let mut block = Block::bordered()
            .border_type(theme.border_type(focused))
            .border_style(theme.border(focused))
            .title(Line::from(title));
        if self.scroll.get() > 0 && conversation.is_some() {
            block =
                block.title_bottom(Line::styled(" End: newest ↓ ", theme.key()).right_aligned());
        }
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let Some(conversation) = conversation else {
            self.viewport.set(Viewport {
                width: inner.width,
                height: inner.height,
                near_top: false,
            });
            frame.render_widget(
                Paragraph::new("Pick someone in Users (Tab, then ↑↓) to open a conversation.")
                    .style(theme.dim())
                    .wrap(Wrap { trim: true }),
                inner,
            );
            return;
        };
        let lines = self.window(conversation, state, inner.width, inner.height, focused);
        let shown = u16::try_from(lines.len())
            .unwrap_or(inner.height)
            .min(inner.height);
        let area = Rect {
            y: inner.y + inner.height - shown,
            height: shown,
            ..inner
        };
        frame.render_widget(Paragraph::new(lines), area);
    }
}

/// One block of the inbox, newest first, with its height; its lines are
/// only made if it shows.
enum Item<'a> {
    /// A send waiting for the server.
    Pending(&'a Pending),
    /// A message, and the one before it (for the date line).
    Message(&'a Message, Option<&'a Message>),
    /// A change to the group.
    Change(&'a GroupChange),
    /// The line at the top of what is loaded.
    Banner(&'static str),
}

impl Inbox {
    /// The height of a message's block at `width`, from the cache when
    /// the body was measured before.
    fn height(
        &self,
        message: &Message,
        older: Option<&Message>,
        conversation: &Conversation,
        state: &State,
        width: usize,
    ) -> usize {
        let mut cache = self.heights.borrow_mut();
        if cache.0 != width {
            *cache = (width, HashMap::new());
        }
        let body = *cache
            .1
            .entry(message.id)
            .or_insert_with(|| body_lines(&message.body, width));
        body + extra_lines(message, older, conversation, state)
    }

    /// The lines of the window, top to bottom; clamps the scroll and records
    /// the viewport.
    fn window(
        &self,
        conversation: &Conversation,
        state: &State,
        width: u16,
        height: u16,
        focused: bool,
    ) -> Vec<Line<'static>> {
        let theme = &state.theme;
        let w = usize::from(width);
        let h = usize::from(height);
        let selected = if focused { self.selected } else { None };
        let reveal = self.reveal.get() && selected.is_some();
        let anchor = self.anchor.get();
        let mut scroll = if self.to_top.get() {
            usize::MAX / 2
        } else {
            self.scroll.get()
        };
        // Lines below the anchor's block and the block's own.
        let mut anchored: Option<(usize, usize)> = None;
        // Blocks newest first with their heights, and where the selection
        // is (lines below it, lines of it).
        let mut items: Vec<(Item, usize)> = Vec::new();
        let mut total = 0;
        let mut selection: Option<(usize, usize)> = None;
        let pending: Vec<&Pending> = state.pending_for(conversation.id).collect();
        for pending in pending.iter().rev() {
            let lines = pending_lines(pending, state, w).len();
            total += lines;
            items.push((Item::Pending(pending), lines));
        }
        let mut messages = conversation.messages.values().rev().peekable();
        let mut changes = (conversation.group.iter())
            .flat_map(|g| g.changes.values().rev())
            .peekable();
        let mut reached_top = true;
        loop {
            let change_first = match (messages.peek(), changes.peek()) {
                (Some(m), Some(c)) => c.id > m.id,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            let enough = total >= scroll.saturating_add(2 * h);
            let looking =
                (reveal && selection.is_none()) || (anchor.is_some() && anchored.is_none());
            if enough && !looking {
                reached_top = messages.peek().is_none() && changes.peek().is_none();
                break;
            }
            if change_first && let Some(change) = changes.next() {
                let lines = change_lines(change, state, w).len();
                total += lines;
                items.push((Item::Change(change), lines));
                continue;
            }
            let Some(message) = messages.next() else {
                break;
            };
            let older = messages.peek().copied();
            let lines = self.height(message, older, conversation, state, w);
            if selected == Some(message.id) {
                selection = Some((total, lines));
            }
            if anchor == Some(message.id) {
                anchored = Some((total, lines));
            }
            total += lines;
            items.push((Item::Message(message, older), lines));
        }
        if reached_top {
            let banner = match conversation.history {
                History::Complete if conversation.messages.is_empty() => {
                    "No messages yet. Say hello!"
                }
                History::Complete => "beginning of the conversation",
                History::Loading | History::NotLoaded => "loading older messages…",
                History::More(_) => "PgUp for older messages",
            };
            items.push((Item::Banner(banner), 1));
            total += 1;
            scroll = scroll.min(total.saturating_sub(h));
        }
        if anchor.is_some() {
            if let Some((below, len)) = anchored {
                // The anchor's top line at the window's top.
                scroll = (below + len).saturating_sub(h);
            }
            self.anchor.set(None);
        }
        if let Some((below, len)) = selection
            && reveal
        {
            if below < scroll {
                scroll = below;
            } else if below + len > scroll + h {
                scroll = (below + len).saturating_sub(h).min(below);
            }
            self.reveal.set(false);
        }
        self.scroll.set(scroll);
        self.viewport.set(Viewport {
            width,
            height,
            near_top: reached_top,
        });
        // From the bottom: skip `scroll` lines, take `h`; only the blocks
        // that show are drawn.
        let mut window = Vec::with_capacity(h);
        let mut below = 0;
        for (item, lines) in &items {
            if below + lines <= scroll {
                below += lines;
                continue;
            }
            let drawn = match item {
                Item::Pending(pending) => pending_lines(pending, state, w),
                Item::Message(message, older) => message_lines(
                    message,
                    *older,
                    conversation,
                    state,
                    w,
                    selected == Some(message.id),
                ),
                Item::Change(change) => change_lines(change, state, w),
                Item::Banner(text) => {
                    vec![Line::styled(*text, theme.dim()).centered()]
                }
            };
            let skip = scroll.saturating_sub(below);
            for line in drawn.into_iter().rev().skip(skip) {
                window.push(line);
                if window.len() == h {
                    break;
                }
            }
            below += lines;
            if window.len() == h {
                break;
            }
        }
        window.reverse();
        window
    }
}

/// The lines a body takes at `width`.
fn body_lines(body: &str, width: usize) -> usize {
    text::wrap(&text::sanitize(body), width.saturating_sub(INDENT)).len()
}

/// The lines of a message's block besides its body: the header (unless it
/// goes under the one before), and the date and "new" lines above it when
/// it has them.
fn extra_lines(
    message: &Message,
    older: Option<&Message>,
    conversation: &Conversation,
    state: &State,
) -> usize {
    let new_day = older.is_none_or(|older| {
        local_time(older, state.time_zone).date_naive()
            != local_time(message, state.time_zone).date_naive()
    });
    let header = !continues(message, older, conversation, state);
    usize::from(header)
        + usize::from(new_day)
        + usize::from(conversation.new_marker == Some(message.id))
}

/// The lines a message takes, as [`message_lines`] draws it.
fn message_height(
    message: &Message,
    older: Option<&Message>,
    conversation: &Conversation,
    state: &State,
    width: usize,
) -> usize {
    body_lines(&message.body, width) + extra_lines(message, older, conversation, state)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn message(id: MessageId, body: &str) -> Message {
        Message {
            id,
            from: "bob".to_owned(),
            from_account_id: 2,
            to: "alice".to_owned(),
            to_account_id: 1,
            body: body.to_owned(),
            sent_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + id * 3600),
            delivered: false,
            read: false,
            conversation_id: 0,
            in_group: false,
            read_by: 0,
            readers: 1,
        }
    }

    #[test]
    fn the_height_is_the_number_of_lines_drawn() {
        let state = State::default();
        let mut conversation = Conversation::new(crate::state::ChatId::Direct(2), "bob");
        conversation.new_marker = Some(3);
        let older = message(1, "x");
        // A minute after `older`, from the same sender: under its header.
        let mut soon = message(4, "under the same header");
        soon.sent_at = older.sent_at + Duration::from_secs(60);
        assert_eq!(
            message_lines(&soon, Some(&older), &conversation, &state, 40, false).len(),
            1,
            "no header of its own"
        );
        for (id, body) in [
            (2, "short"),
            (3, "a body long enough to wrap twice or more"),
            (30, "a\n\nb"),
            (4, "under the same header"),
        ] {
            let mut m = message(id, body);
            if id == 4 {
                m.sent_at = soon.sent_at;
            }
            for width in [8, 20, 60] {
                assert_eq!(
                    message_height(&m, Some(&older), &conversation, &state, width),
                    message_lines(&m, Some(&older), &conversation, &state, width, false).len(),
                    "{id} at {width}"
                );
            }
        }
    }

    #[test]
    fn selection_moves_by_message_and_reports_the_top() {
        let mut conversation = Conversation::new(crate::state::ChatId::Direct(2), "bob");
        for id in [5, 6, 7] {
            conversation.messages.insert(id, message(id, "m"));
        }
        let mut inbox = Inbox::default();
        assert!(!inbox.move_selection(Move::Up, &conversation));
        assert_eq!(inbox.selected, Some(7), "the first move selects the newest");
        assert!(!inbox.move_selection(Move::Up, &conversation));
        assert!(inbox.move_selection(Move::Up, &conversation));
        assert_eq!(inbox.selected, Some(5));
        inbox.move_selection(Move::Last, &conversation);
        assert_eq!(inbox.selected, Some(7));
        inbox.move_selection(Move::Down, &conversation);
        assert_eq!(inbox.selected, Some(7));
    }
}
