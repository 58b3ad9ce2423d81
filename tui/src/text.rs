//! Text as the terminal shows it: making untrusted text safe to draw, and
//! measuring and wrapping it by display width.
//!
//! Widths are those ratatui itself draws with ([`CellWidth`] over grapheme
//! clusters), so a wide character or an emoji takes the two cells it will
//! occupy, and a line wrapped here never overflows when drawn.

use std::borrow::Cow;

use ratatui::buffer::CellWidth;
use unicode_segmentation::UnicodeSegmentation;

/// How many spaces a tab becomes.
const TAB: &str = "    ";

/// Replaces what a terminal would interpret (escape sequences, carriage
/// returns, other control characters) with visible stand-ins, so a message
/// can never move the cursor, change colours or retitle the window. A tab
/// becomes spaces; a newline stays (it separates paragraphs).
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && c.is_control()) {
        return Cow::Borrowed(text);
    }
    let mut clean = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => clean.push('\n'),
            '\t' => clean.push_str(TAB),
            c if c.is_control() => clean.push('\u{FFFD}'),
            c => clean.push(c),
        }
    }
    Cow::Owned(clean)
}

/// The display width of one grapheme cluster, in terminal cells.
pub fn grapheme_width(grapheme: &str) -> usize {
    if grapheme.contains(char::is_control) {
        // Never drawn by ratatui; `sanitize` keeps them out of text anyway.
        return 0;
    }
    usize::from(grapheme.cell_width())
}

/// The display width of a single-line string, in terminal cells.
pub fn width(text: &str) -> usize {
    text.graphemes(true).map(grapheme_width).sum()
}

/// Cuts `text` to at most `max` cells, ending with `…` when something was
/// cut.
pub fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if width(text) <= max {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut used = 0;
    for grapheme in text.graphemes(true) {
        let w = grapheme_width(grapheme);
        if used + w + 1 > max {
            break;
        }
        used += w;
        out.push_str(grapheme);
    }
    if max > 0 {
        out.push('…');
    }
    Cow::Owned(out)
}

/// Wraps `text` into lines of at most `width` cells: at spaces where it can,
/// inside a word only when the word alone is longer than a line. Newlines
/// start new lines; an empty paragraph is an empty line. A grapheme wider
/// than `width` gets a line of its own.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        wrap_paragraph(paragraph, width.max(1), &mut lines);
    }
    lines
}

/// Wraps one paragraph (no newline in it) onto `lines`.
fn wrap_paragraph(paragraph: &str, width: usize, lines: &mut Vec<String>) {
    let mut line = String::new();
    let mut line_width = 0;
    // Where the current line may be broken: the byte offset just after its
    // last space.
    let mut last_space: Option<usize> = None;
    for grapheme in paragraph.graphemes(true) {
        let w = grapheme_width(grapheme);
        if line_width + w > width && !line.is_empty() {
            if grapheme == " " {
                // A space at the end of a line is where the break goes.
                line.truncate(line.trim_end_matches(' ').len());
                lines.push(std::mem::take(&mut line));
                line_width = 0;
                last_space = None;
                continue;
            }
            match last_space {
                Some(cut) if cut < line.len() => {
                    let rest = line.split_off(cut);
                    line.truncate(line.trim_end_matches(' ').len());
                    lines.push(std::mem::replace(&mut line, rest));
                    line_width = self::width(&line);
                }
                _ => {
                    line.truncate(line.trim_end_matches(' ').len());
                    lines.push(std::mem::take(&mut line));
                    line_width = 0;
                }
            }
            last_space = None;
        }
        line.push_str(grapheme);
        line_width += w;
        if grapheme == " " {
            last_space = Some(line.len());
        }
    }
    lines.push(line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, width: usize, expected: &[&str]) {
        let lines = wrap(text, width);
        assert_eq!(lines, expected, "{text:?} at {width}");
        for line in &lines {
            let w = self::width(line);
            assert!(
                w <= width || line.graphemes(true).count() == 1,
                "{line:?} is {w} wide"
            );
        }
    }

    #[test]
    fn wraps_at_spaces() {
        check("hello world", 20, &["hello world"]);
        check("hello world", 5, &["hello", "world"]);
        check("hello world", 8, &["hello", "world"]);
        check("a b c d e f", 3, &["a b", "c d", "e f"]);
        check("one two  three", 8, &["one two", "three"]);
    }

    #[test]
    fn breaks_words_longer_than_a_line() {
        check("abcdefghij", 4, &["abcd", "efgh", "ij"]);
        check("hi abcdefghij", 4, &["hi", "abcd", "efgh", "ij"]);
    }

    #[test]
    fn keeps_newlines_and_empty_lines() {
        check("a\n\nb", 10, &["a", "", "b"]);
        check("", 10, &[""]);
        check("line\n", 10, &["line", ""]);
    }

    #[test]
    fn measures_wide_characters_and_emoji() {
        assert_eq!(width("日本語"), 6);
        assert_eq!(width("👍"), 2);
        assert_eq!(width("👨‍👩‍👧‍👦"), 2);
        assert_eq!(width("e\u{301}"), 1);
        check("日本語のテキスト", 6, &["日本語", "のテキ", "スト"]);
        check("日本語のテキスト", 5, &["日本", "語の", "テキ", "スト"]);
        check("ok 👍👍👍", 4, &["ok", "👍👍", "👍"]);
        // Wider than the line: alone on its line, never an endless loop.
        check("日日", 1, &["日", "日"]);
    }

    #[test]
    fn sanitize_defuses_terminal_controls() {
        assert_eq!(sanitize("plain\ntext"), "plain\ntext");
        assert!(matches!(sanitize("plain"), Cow::Borrowed(_)));
        assert_eq!(sanitize("a\x1b[2Jb"), "a\u{FFFD}[2Jb");
        assert_eq!(sanitize("a\rb\x07"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(sanitize("a\tb"), "a    b");
        assert_eq!(sanitize("\u{9b}31m"), "\u{FFFD}31m");
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("hello", 10), "hello");
        assert_eq!(truncate("hello world", 6), "hello…");
        assert_eq!(truncate("日本語", 4), "日…");
    }
}
