//! `log-inspect`: dump, verify and summarise a chat-server log offline.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = log_format::inspect::Cli::parse();
    match log_format::inspect::run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("log-inspect: {e:#}");
            ExitCode::from(log_format::inspect::EXIT_ERROR)
        }
    }
}
