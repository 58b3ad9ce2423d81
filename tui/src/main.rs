//! `chat-tui`: parses the command line and runs the terminal client.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = chat_tui::cli::Cli::parse();
    match chat_tui::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat-tui: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
