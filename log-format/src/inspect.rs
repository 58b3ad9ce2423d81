//! The `log-inspect` command: an offline dumper, verifier and summary of a
//! log directory and the message archive beside it. It only reads; it never
//! changes, repairs or locks a file, so it is safe to run beside a live
//! server. Its exit statuses are the `EXIT_*` constants below.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use crate::archive::{ArchiveScan, scan_archive};
use crate::error::Error;
use crate::events::{
    self, AccountId, ArchivedMessage, EntryBody, Event, GroupChange, KINDS, LogEntry,
};
use crate::format::{
    ARCHIVE_DIR, COMMITTED_FILE, PURGED_FILE, RECORD_HEADER_LEN, SEGMENT_EXTENSION, SNAPSHOT_FILE,
};
use crate::scan::{Scan, scan_dir};
use crate::state::{RaftLogId, RaftMarks, StateFile};

/// The log (and the archive, when there is one) is clean.
pub const EXIT_CLEAN: u8 = 0;
/// The command itself failed (missing directory, unreadable file, bad arguments).
pub const EXIT_ERROR: u8 = 1;
/// The log or the archive ends in a torn tail (a crash mid-write) and is
/// otherwise clean.
pub const EXIT_TORN_TAIL: u8 = 3;
/// The log or the archive is corrupted (including an archive hint file that
/// does not match its segment).
pub const EXIT_CORRUPT: u8 = 4;
/// Every frame is intact but some payloads (log records or archived
/// messages) do not decode with this build.
pub const EXIT_UNDECODABLE: u8 = 5;
/// The log ends before its committed mark (the `raft-committed` file):
/// records the cluster acknowledged are missing, and chat-server will not
/// start on this directory. Takes precedence over a torn tail and over
/// undecodable payloads.
pub const EXIT_COMMITTED_MISSING: u8 = 6;

#[derive(Debug, Parser)]
#[command(
    name = "log-inspect",
    version,
    about = "Dump, verify and summarise a chat-server event log and message archive offline",
    long_about = "Dump, verify and summarise a chat-server event log and message archive offline.\n\n\
        DIR is the server's data directory (the one given to `chat-server --data`); \
        the message archive is DIR/archive. \
        log-inspect only reads: it never changes, repairs or locks a file, so it is \
        safe to run beside a live server."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every record: index, term, kind and the decoded event (secrets redacted);
    /// with --archive, every archived message instead
    Dump(DumpArgs),
    /// Check every segment header, the chain between segments, every record's CRC,
    /// and that the log still holds every record its raft-committed file says was committed;
    /// then the message archive in DIR/archive, when there is one: headers, CRCs, ids
    /// increasing within and across segments, and that each hint file matches its segment;
    /// then the snapshot file, when there is one: its frame and CRC
    #[command(
        after_help = "Exit status: 0 clean; 3 torn tail only (a crash mid-write, \
        which chat-server repairs at its next start); 4 corrupted (the log, the archive, \
        including an archive hint file that does not match its segment, or the snapshot \
        file); 5 intact but with \
        payloads this build cannot decode; 6 acknowledged records missing (the log \
        ends before the index in raft-committed; chat-server will not start on it); \
        1 the check could not run."
    )]
    Verify {
        /// The data directory
        dir: PathBuf,
    },
    /// Summarise: segments, index range, records and bytes per kind
    Stats {
        /// The data directory
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The data directory
    pub dir: PathBuf,
    /// Print one JSON object per line (for jq) instead of text
    #[arg(long)]
    pub json: bool,
    /// Print the message archive (DIR/archive) instead of the log: id, conversation,
    /// sender, time, body length and body of every archived message
    #[arg(long, conflicts_with_all = ["kind", "user"])]
    pub archive: bool,
    /// Only records with index (with --archive: message id) >= N
    #[arg(long, value_name = "N")]
    pub from: Option<u64>,
    /// Only records with index (with --archive: message id) <= N
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,
    /// Only records of this kind (repeatable)
    #[arg(long, value_name = "KIND", value_parser = clap::builder::PossibleValuesParser::new(KINDS))]
    pub kind: Vec<String>,
    /// Only records that concern the account(s) ever named USER (ignoring
    /// case), their groups' included while they are members
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

/// Runs a parsed command line and returns the exit status.
pub fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Dump(args) => dump(args),
        Command::Verify { dir } => verify(dir),
        Command::Stats { dir } => stats(dir),
    }
}

/// Fails with a clear message unless `dir` is a directory with segments.
fn check_log_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} is not a directory; pass the server's data directory",
            dir.display()
        );
    }
    let has_segments = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_str()
                .and_then(crate::format::parse_segment_file_name)
                .is_some()
        });
    if !has_segments {
        bail!(
            "{} holds no log segments (*.{SEGMENT_EXTENSION}); is it a chat-server data directory?",
            dir.display()
        );
    }
    Ok(())
}

/// Output that stops quietly when the reader goes away (`| head`).
struct Out {
    w: io::BufWriter<io::StdoutLock<'static>>,
    closed: bool,
    error: Option<io::Error>,
}

impl Out {
    fn new() -> Self {
        Out {
            w: io::BufWriter::new(io::stdout().lock()),
            closed: false,
            error: None,
        }
    }

    fn line(&mut self, line: std::fmt::Arguments<'_>) {
        if self.closed {
            return;
        }
        if let Err(e) = self
            .w
            .write_fmt(line)
            .and_then(|()| self.w.write_all(b"\n"))
        {
            self.closed = true;
            if e.kind() != io::ErrorKind::BrokenPipe {
                self.error = Some(e);
            }
        }
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if !self.closed
            && let Err(e) = self.w.flush()
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            return Err(e).context("cannot write to standard output");
        }
        match self.error {
            Some(e) => Err(e).context("cannot write to standard output"),
            None => Ok(()),
        }
    }
}

fn dump(args: &DumpArgs) -> anyhow::Result<ExitCode> {
    if args.archive {
        return dump_archive(args);
    }
    check_log_dir(&args.dir)?;
    let mut out = Out::new();
    let mut user_ids = BTreeSet::new();
    // The groups the user is in as the scan goes: their posts, receipts and
    // changes concern it too.
    let mut user_groups = BTreeSet::new();
    let wanted_user = args.user.as_deref().map(str::to_lowercase);
    let result = scan_dir(&args.dir, |_, _, frame| {
        let decoded = events::decode(frame.payload);
        // Learn account ids before filtering, so --user sees every account
        // that ever had the name.
        if let (Some(user), Ok(entry)) = (&wanted_user, &decoded) {
            for (slot, event) in entry.events().iter().enumerate() {
                let id = events::position(frame.index, slot);
                let is_user = |a: &AccountId| user_ids.contains(&a.0);
                match event {
                    Event::AccountCreated { username, .. } if username.to_lowercase() == *user => {
                        user_ids.insert(id);
                    }
                    Event::GroupCreated { owner, members, .. }
                        if is_user(owner) || members.iter().any(is_user) =>
                    {
                        user_groups.insert(id);
                    }
                    Event::GroupChanged {
                        by, group, change, ..
                    } => match change {
                        GroupChange::Added(added) if added.iter().any(is_user) => {
                            user_groups.insert(group.0);
                        }
                        GroupChange::Removed(a) if is_user(a) => {
                            user_groups.remove(&group.0);
                        }
                        GroupChange::Left if is_user(by) => {
                            user_groups.remove(&group.0);
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        if args.from.is_some_and(|f| frame.index < f) || args.to.is_some_and(|t| frame.index > t) {
            return;
        }
        let wanted_kind = |kind: &str| args.kind.is_empty() || args.kind.iter().any(|k| k == kind);
        let entry = match &decoded {
            Ok(entry) if !entry.events().is_empty() => entry,
            // A blank, membership or undecodable record: one line, and
            // never about a user.
            _ => {
                let kind = decoded.as_ref().map_or("undecodable", LogEntry::kind);
                if wanted_kind(kind) && wanted_user.is_none() {
                    out.line(format_args!(
                        "{}",
                        Line::record(frame.index, frame.term, &decoded).show(args.json)
                    ));
                }
                return;
            }
        };
        for (slot, event) in entry.events().iter().enumerate() {
            let id = events::position(frame.index, slot);
            let in_group = match event {
                Event::Posted { conversation, .. }
                | Event::ConversationRead { conversation, .. }
                | Event::GroupChanged {
                    group: conversation,
                    ..
                } => user_groups.contains(&conversation.0),
                _ => false,
            };
            let concerns_user = || {
                in_group
                    || user_ids.contains(&id)
                    || event.accounts().iter().any(|a| user_ids.contains(&a.0))
            };
            if wanted_kind(event.kind()) && (wanted_user.is_none() || concerns_user()) {
                let line = Line::event(frame.index, frame.term, entry.leader_node, id, event);
                out.line(format_args!("{}", line.show(args.json)));
            }
        }
    });
    out.finish()?;
    report_outcome(result, false)
}

/// Explains a scan's outcome on stderr and picks the exit status. With
/// `strict`, a torn tail is reported with its own status.
fn report_outcome(result: crate::Result<Scan>, strict: bool) -> anyhow::Result<ExitCode> {
    match result {
        Ok(scan) => {
            if let Some(torn) = &scan.torn_tail {
                eprintln!(
                    "torn tail: {} at byte {} (record {}): {}, {} damaged bytes; \
                     chat-server saves them to a .broken file and cuts them off at its next start",
                    torn.file.display(),
                    torn.offset,
                    torn.index,
                    torn.reason,
                    torn.len
                );
                if strict {
                    return Ok(ExitCode::from(EXIT_TORN_TAIL));
                }
            }
            Ok(ExitCode::from(EXIT_CLEAN))
        }
        Err(Error::Corrupt(c)) => {
            eprintln!("{c}");
            eprintln!(
                "the log cannot be trusted from this point; chat-server refuses to start on it. \
                 Restore the directory from a backup, or rebuild this replica from its cluster."
            );
            Ok(ExitCode::from(EXIT_CORRUPT))
        }
        Err(e) => Err(e.into()),
    }
}

fn verify(dir: &Path) -> anyhow::Result<ExitCode> {
    check_log_dir(dir)?;
    let mut records = 0u64;
    let mut undecodable = Vec::new();
    let result = scan_dir(dir, |_, _, frame| {
        records += 1;
        if let Err(e) = events::decode(frame.payload) {
            undecodable.push((frame.index, e.to_string()));
        }
    });
    // The Raft marks only mean something beside a log that scanned.
    let marks = result.as_ref().ok().map(|_| RaftMarks::load(dir));
    let mut out = Out::new();
    if let Ok(scan) = &result {
        for path in &scan.stale_temp_files {
            out.line(format_args!(
                "leftover {} (an unfinished segment creation; removed at the next start)",
                path.display()
            ));
        }
        for path in &scan.purge_leftovers {
            out.line(format_args!(
                "leftover {} (an interrupted purge; removed at the next start)",
                path.display()
            ));
        }
        for seg in &scan.segments {
            let name = seg.path.file_name().unwrap_or_default().to_string_lossy();
            if seg.records == 0 {
                out.line(format_args!(
                    "{name}  empty, continues at {}  ok",
                    seg.next_index
                ));
            } else {
                out.line(format_args!(
                    "{name}  records {}..={} ({} records, {} bytes)  ok",
                    seg.header.first_index,
                    seg.next_index - 1,
                    seg.records,
                    seg.valid_len
                ));
            }
        }
    }
    if let Some(Ok(marks)) = &marks {
        let show = |id: &RaftLogId| {
            format!(
                "up to record {} (term {}, leader node {})",
                id.index, id.term, id.node_id
            )
        };
        if let Some(id) = &marks.committed {
            out.line(format_args!("{COMMITTED_FILE}  {}", show(id)));
        }
        if let Some(id) = &marks.purged {
            out.line(format_args!("{PURGED_FILE}  {}", show(id)));
        }
    }
    for (index, why) in undecodable.iter().take(20) {
        out.line(format_args!(
            "record {index}: payload does not decode: {why}"
        ));
    }
    let archive = verify_archive(dir, &mut out);
    let snapshot = verify_snapshot(dir, &mut out);
    out.finish()?;
    let next_index = result.as_ref().ok().and_then(Scan::next_index);
    let status = report_outcome(result, true)?;
    let archive_status = match &archive {
        Some(archive) => report_archive_outcome(&archive.result, true)?,
        None => ExitCode::from(EXIT_CLEAN),
    };
    if let (Some(marks), Some(next_index)) = (marks, next_index)
        && let Some(code) = report_marks(dir, marks, next_index)?
    {
        return Ok(code);
    }
    match snapshot {
        Ok(()) => {}
        Err(e @ Error::Corrupt(_)) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(EXIT_CORRUPT));
        }
        Err(e) => return Err(e.into()),
    }
    // Corruption anywhere outweighs a torn tail anywhere.
    for code in [EXIT_CORRUPT, EXIT_TORN_TAIL] {
        if status == ExitCode::from(code) || archive_status == ExitCode::from(code) {
            return Ok(ExitCode::from(code));
        }
    }
    let archive_undecodable = archive.as_ref().map_or(0, |a| a.undecodable);
    if !undecodable.is_empty() || archive_undecodable > 0 {
        if !undecodable.is_empty() {
            eprintln!(
                "{} of {records} records are intact but do not decode with this build",
                undecodable.len()
            );
        }
        if archive_undecodable > 0 {
            eprintln!(
                "{archive_undecodable} archived messages are intact but do not decode with this build"
            );
        }
        return Ok(ExitCode::from(EXIT_UNDECODABLE));
    }
    eprintln!("clean: {records} records, every header, chain link and checksum verified");
    if let Some(VerifiedArchive {
        result: Ok(scan), ..
    }) = &archive
    {
        eprintln!(
            "clean archive: {} segments, {} archived messages, {} hint files, every header, \
             checksum and id order verified",
            scan.segments.len(),
            scan.records,
            scan.hints
        );
    }
    Ok(ExitCode::from(EXIT_CLEAN))
}

/// Checks the frame and CRC of the snapshot file, when there is one, and
/// writes a line for it to `out`. (What it holds is the server's layout:
/// the server decodes it at start-up.)
fn verify_snapshot(dir: &Path, out: &mut Out) -> crate::Result<()> {
    if let Some(value) = StateFile::new(dir, SNAPSHOT_FILE).load_bytes()? {
        out.line(format_args!(
            "{SNAPSHOT_FILE}  {} bytes, checksum ok",
            value.len()
        ));
    }
    Ok(())
}

/// What `verify` found in the archive.
struct VerifiedArchive {
    result: crate::Result<ArchiveScan>,
    /// Intact records whose payload does not decode.
    undecodable: usize,
}

/// Scans `dir`/archive, when there is one, writing a line per segment (and
/// per undecodable message, up to 20) to `out`.
fn verify_archive(dir: &Path, out: &mut Out) -> Option<VerifiedArchive> {
    if !dir.join(ARCHIVE_DIR).is_dir() {
        return None;
    }
    let mut undecodable = Vec::new();
    let result = scan_archive(dir, |_, id, payload| {
        if let Err(e) = events::decode_archived(payload) {
            undecodable.push((id, e.to_string()));
        }
    });
    if let Ok(scan) = &result {
        for path in &scan.stale_temp_files {
            out.line(format_args!(
                "leftover {} (an unfinished archive write; removed at the next start)",
                path.display()
            ));
        }
        for seg in &scan.segments {
            let name = seg.path.file_name().unwrap_or_default().to_string_lossy();
            let ids = match seg.last_id {
                Some(last) => format!(
                    "ids {}..={last} ({} messages, {} bytes)",
                    seg.first_id, seg.records, seg.bytes
                ),
                None => format!("empty, from id {}", seg.first_id),
            };
            out.line(format_args!("{ARCHIVE_DIR}/{name}  {ids}  ok"));
        }
    }
    for (id, why) in undecodable.iter().take(20) {
        out.line(format_args!(
            "archived message {id}: payload does not decode: {why}"
        ));
    }
    Some(VerifiedArchive {
        result,
        undecodable: undecodable.len(),
    })
}

/// Explains an archive scan's outcome on stderr and picks the exit status.
/// With `strict`, a torn tail is reported with its own status.
fn report_archive_outcome(
    result: &crate::Result<ArchiveScan>,
    strict: bool,
) -> anyhow::Result<ExitCode> {
    match result {
        Ok(scan) => {
            if let Some(torn) = &scan.torn_tail {
                eprintln!(
                    "torn tail in the archive: {} at byte {} (id {}): {}, {} damaged bytes; \
                     chat-server cuts them off at its next start",
                    torn.file.display(),
                    torn.offset,
                    torn.index,
                    torn.reason,
                    torn.len
                );
                if strict {
                    return Ok(ExitCode::from(EXIT_TORN_TAIL));
                }
            }
            Ok(ExitCode::from(EXIT_CLEAN))
        }
        Err(Error::Corrupt(c)) => {
            eprintln!("{c}");
            if c.file
                .extension()
                .is_some_and(|e| e == crate::format::HINT_EXTENSION)
            {
                eprintln!(
                    "the hint file does not describe its segment; chat-server does not trust it \
                     and rebuilds it from the segment at its next start"
                );
            } else {
                eprintln!(
                    "the archive cannot be trusted from this point; chat-server refuses to \
                     open it when it meets this damage. Restore the directory from a backup, \
                     or rebuild this replica from its cluster."
                );
            }
            Ok(ExitCode::from(EXIT_CORRUPT))
        }
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

fn dump_archive(args: &DumpArgs) -> anyhow::Result<ExitCode> {
    let adir = args.dir.join(ARCHIVE_DIR);
    if !adir.is_dir() {
        bail!(
            "{} holds no message archive ({ARCHIVE_DIR}/); is it a chat-server data directory?",
            args.dir.display()
        );
    }
    let mut out = Out::new();
    let result = scan_archive(&args.dir, |_, id, payload| {
        if args.from.is_some_and(|f| id < f) || args.to.is_some_and(|t| id > t) {
            return;
        }
        let line = archive_line(id, &events::decode_archived(payload));
        out.line(format_args!("{}", line.show_archived(args.json)));
    });
    out.finish()?;
    report_archive_outcome(&result, false)
}

/// One archived message as a `dump --archive` line.
fn archive_line(id: u64, decoded: &Result<ArchivedMessage, events::DecodeError>) -> Line {
    let mut fields = Map::new();
    fields.insert("id".into(), json!(id));
    match decoded {
        Ok(m) => {
            fields.insert("kind".into(), json!("archived_message"));
            fields.insert("conversation".into(), json!(m.conversation.0));
            fields.insert("from".into(), json!(m.from.0));
            fields.insert("at_ms".into(), json!(m.at_ms));
            fields.insert("body_len".into(), json!(m.body.len()));
            fields.insert("body".into(), json!(m.body));
        }
        Err(e) => {
            fields.insert("kind".into(), json!("undecodable"));
            fields.insert("error".into(), json!(e.to_string()));
        }
    }
    Line { fields }
}

/// Explains on stderr a log that lost committed records, or a state file
/// that cannot be read, and picks the exit status; `None` when all is well.
fn report_marks(
    dir: &Path,
    marks: crate::Result<RaftMarks>,
    next_index: u64,
) -> anyhow::Result<Option<ExitCode>> {
    let Err(err) = marks.and_then(|m| m.check(dir, next_index)) else {
        return Ok(None);
    };
    let code = match &err {
        Error::CommittedMissing { .. } => EXIT_COMMITTED_MISSING,
        Error::Corrupt(_) => EXIT_CORRUPT,
        Error::Decode { .. } => EXIT_UNDECODABLE,
        _ => return Err(err.into()),
    };
    eprintln!("{err}");
    Ok(Some(ExitCode::from(code)))
}

fn stats(dir: &Path) -> anyhow::Result<ExitCode> {
    check_log_dir(dir)?;
    // kind -> (records, bytes on disk)
    let mut per_kind: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut terms = BTreeSet::new();
    let mut chat_events = 0u64;
    let result = scan_dir(dir, |_, _, frame| {
        let decoded = events::decode(frame.payload);
        chat_events += decoded.as_ref().map_or(0, |e| e.events().len() as u64);
        let kind = decoded.as_ref().map_or("undecodable", LogEntry::kind);
        let e = per_kind.entry(kind).or_default();
        e.0 += 1;
        e.1 += (RECORD_HEADER_LEN + frame.payload.len()) as u64;
        terms.insert(frame.term);
    });
    let mut out = Out::new();
    if let Ok(scan) = &result {
        let bytes: u64 = scan.segments.iter().map(|s| s.file_len).sum();
        out.line(format_args!("segments  {}", scan.segments.len()));
        match (scan.first_index(), scan.next_index()) {
            (Some(first), Some(next)) if next > first => {
                out.line(format_args!("indexes   {first}..={}", next - 1));
            }
            (_, Some(next)) => out.line(format_args!("indexes   none (continues at {next})")),
            _ => {}
        }
        out.line(format_args!("records   {}", scan.records()));
        out.line(format_args!("bytes     {bytes}"));
        out.line(format_args!("events    {chat_events}"));
        if let (Some(lo), Some(hi)) = (terms.first(), terms.last()) {
            out.line(format_args!("terms     {lo}..={hi}"));
        }
        out.line(format_args!(
            "{:<18}{:>12}{:>14}",
            "kind", "records", "bytes"
        ));
        for (kind, (n, b)) in &per_kind {
            out.line(format_args!("{kind:<18}{n:>12}{b:>14}"));
        }
    }
    out.finish()?;
    report_outcome(result, true)
}

/// One line of `dump`: a record, or one event of a record.
struct Line {
    fields: Map<String, Value>,
}

impl Line {
    /// A record that holds no chat event (blank, membership, undecodable).
    fn record(index: u64, term: u64, decoded: &Result<LogEntry, events::DecodeError>) -> Line {
        let mut fields = Map::new();
        fields.insert("index".into(), json!(index));
        fields.insert("term".into(), json!(term));
        match decoded {
            Ok(entry) => {
                fields.insert("kind".into(), json!(entry.kind()));
                fields.insert("leader_node".into(), json!(entry.leader_node));
                if let EntryBody::Membership(m) = &entry.body {
                    fields.extend(flatten(serde_json::to_value(m)));
                }
            }
            Err(e) => {
                fields.insert("kind".into(), json!("undecodable"));
                fields.insert("error".into(), json!(e.to_string()));
            }
        }
        Line { fields }
    }

    /// The event at position `id` of the record at `index`.
    fn event(index: u64, term: u64, leader_node: u64, id: u64, event: &Event) -> Line {
        let mut fields = Map::new();
        fields.insert("index".into(), json!(index));
        fields.insert("term".into(), json!(term));
        fields.insert("kind".into(), json!(event.kind()));
        fields.insert("leader_node".into(), json!(leader_node));
        fields.insert("id".into(), json!(id));
        // Externally tagged: {"Variant": {fields}}; secrets are redacted by
        // the types' human-readable serialization.
        if let Ok(Value::Object(mut o)) = serde_json::to_value(event) {
            fields.extend(flatten(Ok(o
                .values_mut()
                .next()
                .map_or(Value::Null, Value::take))));
        }
        Line { fields }
    }

    /// The line as JSON or as aligned text.
    fn show(self, json: bool) -> String {
        if json {
            return Value::Object(self.fields).to_string();
        }
        let mut fields = self.fields;
        let mut take = |key| fields.shift_remove(key).unwrap_or_default();
        let (index, term, kind) = (take("index"), take("term"), take("kind"));
        take("leader_node");
        let line = format!(
            "{:>10} {:>5} {:<17}",
            index.as_u64().unwrap_or_default(),
            term.as_u64().unwrap_or_default(),
            kind.as_str().unwrap_or_default()
        );
        Line::show_fields(line, fields)
    }

    /// An archived message's line as JSON or as aligned text: the id, then
    /// the fields as the log dump shows them.
    fn show_archived(self, json: bool) -> String {
        if json {
            return Value::Object(self.fields).to_string();
        }
        let mut fields = self.fields;
        let mut take = |key| fields.shift_remove(key).unwrap_or_default();
        let (id, kind) = (take("id"), take("kind"));
        let line = format!(
            "{:>10} {:<17}",
            id.as_u64().unwrap_or_default(),
            kind.as_str().unwrap_or_default()
        );
        Line::show_fields(line, fields)
    }

    /// `line` followed by `key=value` for each field.
    fn show_fields(mut line: String, fields: Map<String, Value>) -> String {
        for (key, value) in fields {
            line.push(' ');
            if key == "at_ms"
                && let Some(ms) = value.as_u64()
            {
                let at = UNIX_EPOCH + Duration::from_millis(ms);
                line.push_str(&format!("at={}", humantime::format_rfc3339_millis(at)));
                continue;
            }
            match value {
                Value::String(s) if key == "error" => line.push_str(&format!("{key}={s:?}")),
                value => line.push_str(&format!("{key}={value}")),
            }
        }
        line
    }
}

/// The fields of a serialized struct, or nothing.
fn flatten(value: Result<Value, serde_json::Error>) -> Map<String, Value> {
    match value {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{AccountId, PasswordHash};

    #[test]
    fn text_lines_are_flat_and_redacted() {
        let created = Event::AccountCreated {
            username: "alice".into(),
            password_hash: PasswordHash("$argon2id$v=19$secret".into()),
            at_ms: 0,
        };
        let line = Line::event(7, 2, 1, 7003, &created).show(false);
        assert_eq!(
            line,
            "         7     2 account_created   id=7003 username=\"alice\" password_hash=\"<redacted>\" at=1970-01-01T00:00:00.000Z"
        );
        let obj: Value =
            serde_json::from_str(&Line::event(7, 2, 1, 7003, &created).show(true)).unwrap();
        assert_eq!(obj["kind"], "account_created");
        assert_eq!(obj["id"], 7003);
        assert_eq!(obj["index"], 7);
        assert_eq!(obj["password_hash"], "<redacted>");
        assert_eq!(obj["username"], "alice");

        let delivered = Event::DeliveredUpTo {
            account: AccountId(3),
            up_to: events::MessageId(9),
            at_ms: 1,
        };
        let obj: Value =
            serde_json::from_str(&Line::event(10, 2, 1, 10000, &delivered).show(true)).unwrap();
        assert_eq!(obj["up_to"], 9);
    }

    #[test]
    fn records_without_events_are_one_line() {
        let blank = Ok(LogEntry {
            leader_node: 1,
            body: EntryBody::Blank,
        });
        assert_eq!(
            Line::record(3, 1, &blank).show(false),
            "         3     1 blank            "
        );
        let bad = Err(events::DecodeError::Empty);
        assert_eq!(
            Line::record(4, 1, &bad).show(false),
            "         4     1 undecodable       error=\"empty payload\""
        );
    }
}
