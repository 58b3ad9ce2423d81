//! Where benchmarks write, and what the disk did meanwhile.
//!
//! An fsync on tmpfs costs nothing, so a log benchmark there measures memcpy.
//! [`BenchRoot::choose`] refuses memory-backed filesystems, and
//! [`FlushCounter`] reads the block device's count of completed cache
//! flushes from `/proc/diskstats`: the log exposes no count of its group
//! commits, but each `fdatasync` that reaches the disk ends in a flush.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Filesystems held in memory, where `fdatasync` returns at once.
pub const MEMORY_FILESYSTEMS: &[&str] = &["tmpfs", "ramfs"];

/// The directory that benchmark logs are created in, on a real disk.
#[derive(Debug, Clone)]
pub struct BenchRoot {
    pub path: PathBuf,
    /// As `/proc/self/mounts` names it, e.g. `ext4`.
    pub fs_type: String,
}

impl BenchRoot {
    /// `requested` if given (it must not be memory-backed), else the first
    /// of `candidates` that is on a real disk. Directories are created.
    pub fn choose(requested: Option<&Path>, candidates: &[PathBuf]) -> io::Result<BenchRoot> {
        if let Some(path) = requested {
            let root = BenchRoot::at(path)?;
            if root.in_memory() {
                return Err(io::Error::other(format!(
                    "{} is on {}, where fsync is free; choose a directory on a real disk",
                    path.display(),
                    root.fs_type
                )));
            }
            return Ok(root);
        }
        let mut seen = Vec::new();
        for path in candidates {
            let root = BenchRoot::at(path)?;
            if !root.in_memory() {
                return Ok(root);
            }
            seen.push(format!("{} ({})", path.display(), root.fs_type));
        }
        Err(io::Error::other(format!(
            "every candidate directory is memory-backed: {}",
            seen.join(", ")
        )))
    }

    fn at(path: &Path) -> io::Result<BenchRoot> {
        fs::create_dir_all(path)?;
        let path = path.canonicalize()?;
        let mounts = fs::read_to_string("/proc/self/mounts")?;
        let fs_type = fs_type_in(&mounts, &path).unwrap_or_else(|| "unknown".to_owned());
        Ok(BenchRoot { path, fs_type })
    }

    pub fn in_memory(&self) -> bool {
        MEMORY_FILESYSTEMS.contains(&self.fs_type.as_str())
    }
}

/// The type of the filesystem mounted nearest above `path` in a
/// `/proc/self/mounts` listing (the last such mount wins, as in the kernel).
fn fs_type_in(mounts: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_source), Some(mount_point), Some(fs_type)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mount_point = unescape_mount_point(mount_point);
        if path.starts_with(&mount_point) {
            let depth = Path::new(&mount_point).components().count();
            if best.is_none_or(|(d, _)| depth >= d) {
                best = Some((depth, fs_type));
            }
        }
    }
    best.map(|(_, t)| t.to_owned())
}

/// `/proc/self/mounts` writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the disk alone costs: one thread appending `record_len` bytes to a
/// file with `pwrite` and `fdatasync`, as the log does for one record.
#[derive(Debug, Clone)]
pub struct SyncBaseline {
    pub syncs: u64,
    pub elapsed: Duration,
    /// Median and 99th percentile of one write + fdatasync.
    pub p50: Duration,
    pub p99: Duration,
}

impl SyncBaseline {
    /// Appends to a new file in `dir` for `duration`, then removes it.
    pub fn measure(dir: &Path, record_len: usize, duration: Duration) -> io::Result<SyncBaseline> {
        let path = dir.join("fdatasync-baseline");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let bytes = vec![0x5a; record_len];
        let mut times = Vec::new();
        let mut offset = 0;
        let started = Instant::now();
        while started.elapsed() < duration {
            let t = Instant::now();
            file.write_all_at(&bytes, offset)?;
            file.sync_data()?;
            times.push(t.elapsed());
            offset += record_len as u64;
        }
        let elapsed = started.elapsed();
        drop(file);
        fs::remove_file(&path)?;
        times.sort_unstable();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        Ok(SyncBaseline {
            syncs: times.len() as u64,
            elapsed,
            p50: at(0.5),
            p99: at(0.99),
        })
    }

    pub fn syncs_per_sec(&self) -> f64 {
        self.syncs as f64 / self.elapsed.as_secs_f64()
    }
}

/// Prints what one fdatasync of a message-sized record (log-format's
/// 24-byte header + ~125 bytes) costs in `dir` now: the machine is shared,
/// and other processes' writes make it vary by an order of magnitude.
pub fn print_sync_baseline(dir: &Path, when: &str) {
    const RECORD_LEN: usize = 150;
    match SyncBaseline::measure(dir, RECORD_LEN, Duration::from_secs(1)) {
        Ok(b) => println!(
            "disk baseline {when}, one thread, pwrite of {RECORD_LEN} bytes + fdatasync: \
             {} per s, p50 {} ms, p99 {} ms",
            crate::grouped(b.syncs_per_sec()),
            crate::millis(b.p50),
            crate::millis(b.p99)
        ),
        Err(e) => println!("disk baseline {when}: cannot measure: {e}"),
    }
    println!();
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Reads how many cache flushes the block device under a path has completed.
#[derive(Debug, Clone)]
pub struct FlushCounter {
    /// The whole disk's name in `/proc/diskstats` (a partition's parent).
    pub device: String,
}

impl FlushCounter {
    /// The counter for the disk that holds `path`, if it is a block device
    /// whose statistics the kernel reports (not, say, btrfs or overlayfs).
    pub fn for_path(path: &Path) -> Option<FlushCounter> {
        let dev = fs::metadata(path).ok()?.dev();
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        let sys = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        let disk = if sys.join("partition").exists() {
            sys.parent()?.to_path_buf()
        } else {
            sys
        };
        let counter = FlushCounter {
            device: disk.file_name()?.to_str()?.to_owned(),
        };
        counter.read().map(|_| counter)
    }

    /// Flushes completed so far, or `None` if the kernel does not say.
    pub fn read(&self) -> Option<u64> {
        let stats = fs::read_to_string("/proc/diskstats").ok()?;
        flushes_in(&stats, &self.device)
    }
}

/// Field 16 of the device's line ("flush requests completed", Linux 5.5+).
fn flushes_in(diskstats: &str, device: &str) -> Option<u64> {
    diskstats.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) == Some(&device) {
            fields.get(2 + 16)?.parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid 0 0
/dev/vdb /tmp/disk ext4 rw 0 0
tmpfs /mnt/with\\040space tmpfs rw 0 0
";

    fn check_fs(path: &str, expected: &str) {
        assert_eq!(
            fs_type_in(MOUNTS, Path::new(path)).as_deref(),
            Some(expected),
            "{path}"
        );
    }

    #[test]
    fn the_nearest_mount_above_a_path_gives_its_filesystem() {
        check_fs("/work/main/target", "ext4");
        check_fs("/tmp", "tmpfs");
        check_fs("/tmp/x/y", "tmpfs");
        check_fs("/tmp/disk/logs", "ext4");
        check_fs("/tmp/diskette", "tmpfs");
        check_fs("/mnt/with space/a", "tmpfs");
        check_fs("/mnt/with", "ext4");
    }

    #[test]
    fn a_later_mount_on_the_same_point_hides_the_earlier() {
        let mounts =
            "/dev/vda / ext4 rw 0 0\n/dev/vdb /data ext4 rw 0 0\ntmpfs /data tmpfs rw 0 0\n";
        assert_eq!(
            fs_type_in(mounts, Path::new("/data/x")).as_deref(),
            Some("tmpfs")
        );
    }

    #[test]
    fn the_baseline_times_every_sync_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let b = SyncBaseline::measure(dir.path(), 124, Duration::from_millis(30)).unwrap();
        assert!(b.syncs > 0);
        assert!(b.p50 <= b.p99 && b.p99 <= b.elapsed);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn flushes_are_field_sixteen_of_the_devices_line() {
        let stats = "\
 254       0 vda 24462 4401 3041466 19646 25193 26699 5647928 44055 0 7436 66612 8282 54 1014672 2023 6163 886
 254       1 vda1 10 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   7       0 loop0 1 2 3 4 5 6 7 8 9 10 11
";
        assert_eq!(flushes_in(stats, "vda"), Some(6163));
        assert_eq!(flushes_in(stats, "vda1"), Some(0));
        // Kernels before 5.5 print no flush fields.
        assert_eq!(flushes_in(stats, "loop0"), None);
        assert_eq!(flushes_in(stats, "sda"), None);
    }
}
