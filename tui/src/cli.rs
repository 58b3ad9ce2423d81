//! The command line.

use clap::Parser;

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
    /// Do not ring the terminal bell for new messages.
    #[arg(long)]
    pub no_bell: bool,
    /// Connect over TLS, checking the servers against this authority's
    /// certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
}
