//! `chat-server`: parses the command line, sets up logging and runs the
//! server until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// The chat server: keeps all state in an append-only, CRC-checked event log.
#[derive(Debug, Parser)]
#[command(name = "chat-server", version)]
struct Cli {
    /// Directory of the event log and state files (created if missing)
    #[arg(long, value_name = "DIR", default_value = "./chat-data")]
    data: PathBuf,
    /// Address to listen on for clients
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50051")]
    listen: String,
    /// End a session after this long without a request or an open stream
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = humantime::parse_duration)]
    session_idle: Duration,
    /// This server's node id in the cluster
    #[arg(long, value_name = "N", default_value_t = 1)]
    id: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match serve(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let mut config = chat_server::Config::new(&cli.data);
    config.session_idle = cli.session_idle;
    config.node_id = cli.id;
    let server = chat_server::Server::start(config, listener).await?;
    // Scripts and tests wait for this line (and read the port of
    // `--listen 127.0.0.1:0` from it): the server answers from here on.
    println!("listening on {}", server.local_addr()?);
    server.serve(shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
