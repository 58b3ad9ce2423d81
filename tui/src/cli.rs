//! The command line.

use clap::Parser;

use crate::state::Notify;

/// `--notify`'s value.
fn parse_notify(text: &str) -> Result<Notify, String> {
    Notify::parse(text).ok_or_else(|| format!("{text:?}: use off, bell or desktop"))
}

/// The terminal client of the chat system.
///
/// Signs in to a chat server (or a cluster of them) and shows your
/// conversations in three panes: users, the open conversation, and the
/// message you are writing. Press ? inside for every key.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "chat-tui", version)]
pub struct Cli {
    /// The servers to use, comma-separated (host:port,...); tried in order,
    /// and the next one is used when one fails. Default: the last ones used,
    /// else 127.0.0.1:50051.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// The username to fill in. Default: the last one used.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// Do not ring the terminal bell for new messages (the same as
    /// `--notify off`).
    #[arg(long)]
    pub no_bell: bool,
    /// How a message not on screen notifies: off, bell, or desktop (a
    /// notification through the terminal, OSC 777 and OSC 9). Default: the
    /// config file's `notify`, else bell.
    #[arg(long, value_name = "HOW", value_parser = parse_notify)]
    pub notify: Option<Notify>,
    /// Delete the saved session (the next start asks for the password) and
    /// do not save one this time.
    #[arg(long)]
    pub forget: bool,
    /// Connect over TLS, checking the servers against this authority's
    /// certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
}
