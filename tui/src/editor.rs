//! An editable piece of text with a cursor: the compose box, the sign-in
//! fields, the users filter and the password of the delete-account dialog.
//!
//! The cursor moves by grapheme cluster, so an emoji or an accented letter
//! is one step, and up/down keep the display column.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use unicode_segmentation::UnicodeSegmentation;

use crate::text;

/// Text and a cursor (a byte offset on a grapheme boundary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Editor {
    text: String,
    cursor: usize,
}

/// How the text sits in a box of a given width: its rows (broken anywhere,
/// or after spaces for the compose box) and where the cursor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditorLayout {
    /// The rows, each at most the box's width.
    pub rows: Vec<String>,
    /// The cursor's row and column (in cells).
    pub cursor: (usize, usize),
}

impl Editor {
    /// An editor holding `text`, the cursor at its end.
    pub fn with_text(text: &str) -> Self {
        let text = normalize_newlines(text);
        Self {
            cursor: text.len(),
            text,
        }
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor, as a byte offset into [`text`](Self::text).
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// True when there is no text at all.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Takes the text out, leaving the editor empty.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// Replaces the text; the cursor goes to its end.
    pub fn set_text(&mut self, text: &str) {
        *self = Self::with_text(text);
    }

    /// Inserts `s` at the cursor (pasted text: `\r\n` and `\r` become `\n`).
    pub fn insert_str(&mut self, s: &str) {
        let s = normalize_newlines(s);
        self.text.insert_str(self.cursor, &s);
        self.cursor += s.len();
    }

    /// Inserts one character at the cursor.
    pub fn insert_char(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// The start of the grapheme before the cursor.
    fn prev_boundary(&self) -> Option<usize> {
        self.text[..self.cursor]
            .grapheme_indices(true)
            .next_back()
            .map(|(i, _)| i)
    }

    /// The end of the grapheme after the cursor.
    fn next_boundary(&self) -> Option<usize> {
        self.text[self.cursor..]
            .graphemes(true)
            .next()
            .map(|g| self.cursor + g.len())
    }

    /// Deletes the grapheme before the cursor.
    pub fn backspace(&mut self) {
        if let Some(start) = self.prev_boundary() {
            self.text.replace_range(start..self.cursor, "");
            self.cursor = start;
        }
    }

    /// Deletes the grapheme after the cursor.
    pub fn delete(&mut self) {
        if let Some(end) = self.next_boundary() {
            self.text.replace_range(self.cursor..end, "");
        }
    }

    /// Moves one grapheme left.
    pub fn left(&mut self) {
        if let Some(start) = self.prev_boundary() {
            self.cursor = start;
        }
    }

    /// Moves one grapheme right.
    pub fn right(&mut self) {
        if let Some(end) = self.next_boundary() {
            self.cursor = end;
        }
    }

    /// The byte range of the line the cursor is on.
    fn line_bounds(&self) -> (usize, usize) {
        let start = self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1);
        let end = self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i);
        (start, end)
    }

    /// Moves to the start of the line.
    pub fn home(&mut self) {
        self.cursor = self.line_bounds().0;
    }

    /// Moves to the end of the line.
    pub fn end(&mut self) {
        self.cursor = self.line_bounds().1;
    }

    /// Moves to the line above, keeping the display column where it can.
    /// Returns false on the first line.
    pub fn up(&mut self) -> bool {
        let (start, _) = self.line_bounds();
        if start == 0 {
            return false;
        }
        let column = text::width(&self.text[start..self.cursor]);
        let prev_start = self.text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
        self.cursor = offset_at_column(&self.text, prev_start, start - 1, column);
        true
    }

    /// Moves to the line below, keeping the display column where it can.
    /// Returns false on the last line.
    pub fn down(&mut self) -> bool {
        let (start, end) = self.line_bounds();
        if end == self.text.len() {
            return false;
        }
        let column = text::width(&self.text[start..self.cursor]);
        let next_start = end + 1;
        let next_end = self.text[next_start..]
            .find('\n')
            .map_or(self.text.len(), |i| next_start + i);
        self.cursor = offset_at_column(&self.text, next_start, next_end, column);
        true
    }

    /// Deletes from the start of the line to the cursor.
    pub fn delete_to_line_start(&mut self) {
        let (start, _) = self.line_bounds();
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes the word before the cursor (and the spaces after it).
    pub fn delete_word_before(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches([' ', '\t']);
        let start = trimmed.rfind(|c: char| c.is_whitespace()).map_or(0, |i| {
            i + trimmed[i..].chars().next().map_or(1, char::len_utf8)
        });
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Applies an editing key: characters, Backspace, Delete, arrows,
    /// Home/End, Ctrl+U, Ctrl+W (and, with `multiline`, up/down between
    /// lines). Returns false for a key that is not an edit, so the caller
    /// can give it another meaning. Enter is never handled here.
    pub fn handle_key(&mut self, key: &KeyEvent, multiline: bool) -> bool {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        match key.code {
            KeyCode::Char('u') if ctrl => self.delete_to_line_start(),
            KeyCode::Char('w') if ctrl => self.delete_word_before(),
            KeyCode::Char('a') if ctrl => self.home(),
            KeyCode::Char(c) if !ctrl && !alt => self.insert_char(c),
            KeyCode::Backspace if alt || ctrl => self.delete_word_before(),
            KeyCode::Backspace => self.backspace(),
            KeyCode::Delete => self.delete(),
            KeyCode::Left => self.left(),
            KeyCode::Right => self.right(),
            KeyCode::Home => self.home(),
            KeyCode::End => self.end(),
            KeyCode::Up if multiline => return self.up(),
            KeyCode::Down if multiline => return self.down(),
            _ => return false,
        }
        true
    }

    /// Lays the text out in a box `width` cells wide, breaking rows
    /// anywhere. With `mask`, every grapheme is drawn as that character (a
    /// password).
    pub fn layout(&self, width: usize, mask: Option<char>) -> EditorLayout {
        self.lay_out(width, mask, false)
    }

    /// Lays the text out in a box `width` cells wide, breaking rows after
    /// a space where one is (a word longer than the row still breaks
    /// inside): what the compose box shows.
    pub fn layout_words(&self, width: usize) -> EditorLayout {
        self.lay_out(width, None, true)
    }

    fn lay_out(&self, width: usize, mask: Option<char>, words: bool) -> EditorLayout {
        let width = width.max(1);
        let mut rows = vec![String::new()];
        let mut column = 0;
        let mut cursor = None;
        // Where the current row may break: the byte length of the row and
        // its width just after its last space.
        let mut after_space: Option<(usize, usize)> = None;
        for (offset, grapheme) in self.text.grapheme_indices(true) {
            if offset == self.cursor {
                cursor = Some(cursor_cell(rows.len() - 1, column, width));
            }
            if grapheme == "\n" {
                rows.push(String::new());
                column = 0;
                after_space = None;
                continue;
            }
            let shown = match mask {
                Some(mask) => Shown::Mask(mask),
                None => Shown::Text(grapheme),
            };
            let w = match shown {
                Shown::Mask(_) => 1,
                Shown::Text(g) => text::grapheme_width(g),
            };
            if column + w > width && column > 0 {
                let row = rows.len() - 1;
                match after_space.filter(|_| grapheme != " ") {
                    Some((at, at_column)) if words && at < rows[row].len() => {
                        // Carry the word begun on this row to the next.
                        let carried = rows[row].split_off(at);
                        rows.push(carried);
                        column -= at_column;
                        if let Some((r, c)) = cursor.as_mut()
                            && *r == row
                            && *c >= at_column
                        {
                            (*r, *c) = (row + 1, *c - at_column);
                        }
                    }
                    _ => {
                        rows.push(String::new());
                        column = 0;
                    }
                }
                after_space = None;
            }
            let row = rows.last_mut().expect("rows is never empty");
            match shown {
                Shown::Mask(mask) => row.push(mask),
                Shown::Text(g) => row.push_str(&text::sanitize(g)),
            }
            column += w;
            if grapheme == " " {
                after_space = Some((row.len(), column));
            }
        }
        let cursor = cursor.unwrap_or_else(|| cursor_cell(rows.len() - 1, column, width));
        if cursor.0 >= rows.len() {
            rows.push(String::new());
        }
        EditorLayout { rows, cursor }
    }
}

/// What a grapheme is drawn as.
#[derive(Clone, Copy)]
enum Shown<'a> {
    Text(&'a str),
    Mask(char),
}

/// Where the cursor is drawn when it stands at `column` of `row`: a full
/// row puts it at the start of the next one.
fn cursor_cell(row: usize, column: usize, width: usize) -> (usize, usize) {
    if column >= width {
        (row + 1, 0)
    } else {
        (row, column)
    }
}

/// The byte offset in `text[start..end]` closest to display column `column`.
fn offset_at_column(text: &str, start: usize, end: usize, column: usize) -> usize {
    let mut used = 0;
    for (i, grapheme) in text[start..end].grapheme_indices(true) {
        let w = text::grapheme_width(grapheme);
        if used + w > column {
            return start + i;
        }
        used += w;
    }
    end
}

/// Pasted text from some terminals carries `\r\n` or bare `\r` line ends.
fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn typing_and_deleting_by_grapheme() {
        let mut editor = Editor::default();
        for c in "hé👍".chars() {
            editor.insert_char(c);
        }
        assert_eq!(editor.text(), "hé👍");
        editor.backspace();
        assert_eq!(editor.text(), "hé");
        editor.left();
        editor.insert_char('x');
        assert_eq!(editor.text(), "hxé");
        editor.delete();
        assert_eq!(editor.text(), "hx");
        assert!(editor.handle_key(&key(KeyCode::Home), false));
        editor.delete();
        assert_eq!(editor.text(), "x");
    }

    #[test]
    fn pasted_line_ends_become_newlines() {
        let mut editor = Editor::default();
        editor.insert_str("one\r\ntwo\rthree");
        assert_eq!(editor.text(), "one\ntwo\nthree");
        assert_eq!(editor.cursor(), editor.text().len());
    }

    #[test]
    fn up_and_down_keep_the_column() {
        let mut editor = Editor::with_text("abcdef\nxy\n日本語");
        assert!(editor.up());
        assert_eq!(editor.cursor(), "abcdef\nxy".len());
        editor.home();
        editor.right();
        assert!(editor.down());
        // Column 1 falls inside 日 (columns 0-1): the cursor stays before it.
        assert_eq!(editor.cursor(), "abcdef\nxy\n".len());
        assert!(!editor.down());
        assert!(editor.up());
        assert!(editor.up());
        assert!(!editor.up());
    }

    #[test]
    fn word_and_line_deletion() {
        let mut editor = Editor::with_text("hello big world");
        editor.delete_word_before();
        assert_eq!(editor.text(), "hello big ");
        editor.delete_word_before();
        assert_eq!(editor.text(), "hello ");
        editor.delete_to_line_start();
        assert_eq!(editor.text(), "");
        let mut multi = Editor::with_text("keep\ndrop this");
        multi.delete_to_line_start();
        assert_eq!(multi.text(), "keep\n");
    }

    #[test]
    fn layout_wraps_hard_and_places_the_cursor() {
        let editor = Editor::with_text("abcdef\ngh");
        let layout = editor.layout(4, None);
        assert_eq!(layout.rows, ["abcd", "ef", "gh"]);
        assert_eq!(layout.cursor, (2, 2));
        let full = Editor::with_text("abcd");
        assert_eq!(full.layout(4, None).cursor, (1, 0));
        assert_eq!(full.layout(4, None).rows, ["abcd", ""]);
        let wide = Editor::with_text("日本語");
        assert_eq!(wide.layout(5, None).rows, ["日本", "語"]);
        let secret = Editor::with_text("pässword");
        assert_eq!(secret.layout(20, Some('•')).rows, ["••••••••"]);
        assert_eq!(secret.layout(20, Some('•')).cursor, (0, 8));
    }

    #[test]
    fn compose_wraps_at_word_boundaries_and_the_cursor_follows() {
        let editor = Editor::with_text("hello big world");
        let layout = editor.layout_words(10);
        assert_eq!(layout.rows, ["hello big ", "world"]);
        assert_eq!(layout.cursor, (1, 5));
        // A word longer than a row still breaks inside.
        let long = Editor::with_text("a abcdefghijkl");
        assert_eq!(long.layout_words(5).rows, ["a ", "abcde", "fghij", "kl"]);
        // The cursor inside the carried word moves with it.
        let mut editor = Editor::with_text("one two three");
        editor.cursor = "one two th".len();
        let layout = editor.layout_words(9);
        assert_eq!(layout.rows, ["one two ", "three"]);
        assert_eq!(layout.cursor, (1, 2));
        // Spaces at a row's end stay there; hard breaks still break.
        let spaces = Editor::with_text("abcd  ef\ngh");
        assert_eq!(spaces.layout_words(4).rows, ["abcd", "  ef", "gh"]);
    }

    #[test]
    fn keys_that_are_not_edits_are_left_to_the_caller() {
        let mut editor = Editor::default();
        assert!(!editor.handle_key(&key(KeyCode::Enter), true));
        assert!(!editor.handle_key(&key(KeyCode::Tab), true));
        assert!(!editor.handle_key(&key(KeyCode::Up), false));
        assert!(!editor.handle_key(
            &KeyEvent::new(KeyCode::Char('e'), KeyModifiers::CONTROL),
            true
        ));
        assert!(editor.is_empty());
    }
}
