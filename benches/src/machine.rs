//! Where a bench of `chat-server` processes runs: the directory for their
//! data, the binary, and the disk's flush counter.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

use crate::disk::{BenchRoot, FlushCounter, load_average, print_sync_baseline};
use crate::server::process;

/// The options that say where a bench runs.
#[derive(Debug, clap::Args)]
pub struct MachineArgs {
    /// Where to create the data directories (must not be tmpfs). Default:
    /// the system temporary directory, else target/bench-tmp.
    #[arg(long, env = "BENCH_DIR")]
    pub dir: Option<PathBuf>,
    /// The server binary. Default: `chat-server` beside the bench's own
    /// target directory (target/release/chat-server).
    #[arg(long, env = "BENCH_SERVER_BIN")]
    pub server_bin: Option<PathBuf>,
}

/// What a bench knows of where it runs.
#[derive(Debug)]
pub struct Machine {
    pub root: BenchRoot,
    pub binary: PathBuf,
    pub flushes: Option<FlushCounter>,
}

impl Machine {
    /// Chooses the directory for the servers' data and the server binary
    /// as `args` say.
    pub fn find(args: &MachineArgs) -> anyhow::Result<Machine> {
        let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp");
        let root = BenchRoot::choose(args.dir.as_deref(), &[std::env::temp_dir(), fallback])
            .context("choose a directory for the servers' data")?;
        let binary = match &args.server_bin {
            Some(path) => path.clone(),
            None => process::default_binary()?,
        };
        Ok(Machine {
            flushes: FlushCounter::for_path(&root.path),
            root,
            binary,
        })
    }

    /// Prints the cores, the kernel, the server binary (and how old it
    /// is) and where the data goes.
    pub fn print(&self) {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let built = fs::metadata(&self.binary)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map_or("missing".to_owned(), |age| {
                format!("built {} min ago", age.as_secs() / 60)
            });
        println!("cpus (available parallelism): {cpus}");
        println!("kernel: {}", kernel.trim());
        println!("server: {} ({built})", self.binary.display());
        println!(
            "data dirs in: {} on {} (device: {})",
            self.root.path.display(),
            self.root.fs_type,
            self.flushes
                .as_ref()
                .map_or("unknown, no flush counts", |f| f.device.as_str())
        );
    }

    /// Runs `bench` on a multi-threaded runtime, between two measurements
    /// of the disk's fdatasync rate, and prints the load average after.
    pub fn run(&self, bench: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
        print_sync_baseline(&self.root.path, "at start");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?;
        runtime.block_on(bench)?;
        print_sync_baseline(&self.root.path, "at end");
        println!("load average at end: {}", load_average());
        Ok(())
    }
}
