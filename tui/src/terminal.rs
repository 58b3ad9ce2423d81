//! The terminal: raw mode, the alternate screen, bracketed paste, mouse
//! reporting and (where the terminal supports it) unambiguous key reports,
//! so Shift+Enter can be told from Enter.
//!
//! Whatever happens, the terminal is given back as it was: [`Tui`] restores
//! it when dropped (every return path, including errors), and a panic hook
//! restores it before the panic message is printed.

use std::io::{self, Stdout, Write};
use std::sync::Once;

use crossterm::event::{
    DisableBracketedPaste, DisableFocusChange, DisableMouseCapture, EnableBracketedPaste,
    EnableFocusChange, EnableMouseCapture, KeyboardEnhancementFlags, PopKeyboardEnhancementFlags,
    PushKeyboardEnhancementFlags,
};
use crossterm::execute;
use crossterm::terminal::{
    Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// The terminal in the program's modes; dropping it restores the terminal.
#[derive(Debug)]
pub struct Tui {
    /// The ratatui terminal drawing to stdout.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Tui {
    /// Switches the terminal to the program's modes.
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        enter_modes()?;
        match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(terminal) => Ok(Self { terminal }),
            Err(error) => {
                restore();
                Err(error)
            }
        }
    }

    /// Gives the terminal back for a while (to run `$EDITOR`).
    pub fn suspend(&mut self) {
        restore();
    }

    /// Takes the terminal again after [`suspend`](Self::suspend); the next
    /// frame is drawn in full.
    pub fn resume(&mut self) -> io::Result<()> {
        enter_modes()?;
        // `Terminal::clear` would ask the terminal where its cursor is;
        // clearing by hand and drawing one empty frame makes the next frame
        // draw every cell without that round trip.
        execute!(io::stdout(), Clear(ClearType::All))?;
        self.terminal.draw(|_| {})?;
        Ok(())
    }

    /// Rings the bell.
    pub fn bell(&mut self) -> io::Result<()> {
        let out = self.terminal.backend_mut();
        out.write_all(b"\x07")?;
        out.flush()
    }

    /// Asks the terminal for a desktop notification, in both forms that
    /// terminals understand (OSC 777: rxvt, foot, wezterm, kitty; OSC 9:
    /// iTerm2, kitty, wezterm); a terminal that knows neither ignores them.
    pub fn notify(&mut self, title: &str, body: &str) -> io::Result<()> {
        let out = self.terminal.backend_mut();
        out.write_all(notification(title, body).as_bytes())?;
        out.flush()
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        restore();
    }
}

fn enter_modes() -> io::Result<()> {
    enable_raw_mode()?;
    let mut stdout = io::stdout();
    let entered = execute!(
        stdout,
        EnterAlternateScreen,
        EnableBracketedPaste,
        EnableMouseCapture,
        // Focus events decide what counts as read; terminals that do not
        // report them are taken as focused.
        EnableFocusChange,
        // Terminals without the kitty keyboard protocol ignore this.
        PushKeyboardEnhancementFlags(KeyboardEnhancementFlags::DISAMBIGUATE_ESCAPE_CODES)
    );
    if let Err(error) = entered {
        restore();
        return Err(error);
    }
    Ok(())
}

/// Puts the terminal back as it was: every mode off, the main screen, the
/// cursor visible. Safe to call more than once, and from a panic.
pub fn restore() {
    let mut stdout = io::stdout();
    let _ = execute!(
        stdout,
        PopKeyboardEnhancementFlags,
        DisableFocusChange,
        DisableMouseCapture,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
}

/// Restores the terminal before the default panic message is printed, so
/// the message is readable and the shell usable.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// The escape sequences of a desktop notification: the text cleaned of
/// anything that could end or break the sequence, and cut short.
pub fn notification(title: &str, body: &str) -> String {
    let clean = |text: &str, max: usize| -> String {
        let flat: String = (text.chars())
            .map(|c| if c.is_control() || c == ';' { ' ' } else { c })
            .collect();
        crate::text::truncate(flat.trim(), max).into_owned()
    };
    let (title, body) = (clean(title, 60), clean(body, 200));
    format!("\x1b]777;notify;{title};{body}\x07\x1b]9;{title}: {body}\x07")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_cannot_break_out_of_its_sequence() {
        let sequence = notification("bob", "hi\x07\x1b]0;evil\x07; there");
        assert_eq!(
            sequence,
            "\x1b]777;notify;bob;hi  ]0 evil   there\x07\x1b]9;bob: hi  ]0 evil   there\x07"
        );
        assert_eq!(sequence.matches('\x07').count(), 2);
    }
}
