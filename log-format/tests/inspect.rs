//! `log-inspect` run as a binary on real logs, clean and damaged.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use log_format::events::{
    self, AccountId, EntryBody, Event, LogEntry, MessageId, PasswordHash, TokenHash,
};
use log_format::inspect::{
    EXIT_CLEAN, EXIT_COMMITTED_MISSING, EXIT_CORRUPT, EXIT_TORN_TAIL, EXIT_UNDECODABLE,
};
use log_format::{
    Archive, ArchiveConfig, COMMITTED_FILE, Log, LogConfig, RaftLogId, Record, SNAPSHOT_FILE,
    StateFile,
};

fn inspect(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_log-inspect"))
        .args(args)
        .output()
        .expect("run log-inspect")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// The `index` of each JSON line `dump --json` printed.
fn indexes(o: &Output) -> Vec<u64> {
    stdout(o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["index"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

fn event(e: Event) -> LogEntry {
    LogEntry {
        leader_node: 1,
        body: EntryBody::Event(e),
    }
}

/// alice (1000) and bob (2000) exchange messages; bob's name is later reused
/// by a new account (7000), created in one batch record with a message to it.
fn chat_log(dir: &Path) {
    let entries = [
        LogEntry {
            leader_node: 0,
            body: EntryBody::Blank,
        },
        event(Event::AccountCreated {
            username: "alice".into(),
            password_hash: PasswordHash(
                "$argon2id$v=19$m=19456,t=2,p=1$SECRETSALT$SECRETHASH".into(),
            ),
            at_ms: 1_700_000_000_000,
        }),
        event(Event::AccountCreated {
            username: "Bob".into(),
            password_hash: PasswordHash("$argon2id$SECRET2".into()),
            at_ms: 1_700_000_000_001,
        }),
        event(Event::SessionOpened {
            account: AccountId(1000),
            token_hash: TokenHash([0xab; 32]),
            at_ms: 1_700_000_000_002,
        }),
        event(Event::MessageSent {
            from: AccountId(1000),
            to: AccountId(2000),
            client_msg_id: "c1".into(),
            body: "hello bob".into(),
            at_ms: 1_700_000_000_003,
        }),
        event(Event::DeliveredUpTo {
            account: AccountId(2000),
            up_to: MessageId(4000),
            at_ms: 1_700_000_000_004,
        }),
        event(Event::AccountDeleted {
            account: AccountId(2000),
            at_ms: 1_700_000_000_005,
        }),
        LogEntry {
            leader_node: 1,
            body: EntryBody::Events(vec![
                Event::AccountCreated {
                    username: "bob".into(),
                    password_hash: PasswordHash("$argon2id$SECRET3".into()),
                    at_ms: 1_700_000_000_006,
                },
                Event::MessageSent {
                    from: AccountId(1000),
                    to: AccountId(7000),
                    client_msg_id: "c2".into(),
                    body: "hi again".into(),
                    at_ms: 1_700_000_000_007,
                },
            ]),
        },
    ];
    let (log, _) = Log::open(dir, LogConfig { segment_size: 300 }).unwrap();
    let records: Vec<Record> = entries
        .iter()
        .zip(0..)
        .map(|(e, index)| Record {
            index,
            term: 1,
            payload: events::encode(e),
        })
        .collect();
    log.append(&records).unwrap();
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

#[test]
fn dump_prints_every_record_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    chat_log(dir.path());
    let out = inspect(&["dump", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 9, "{text}");
    assert!(text.contains("message_sent"));
    assert!(text.contains("body=\"hello bob\""));
    assert!(text.contains("at=2023-11-14T22:13:20.003Z"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
    assert!(!text.to_lowercase().contains("abab"), "{text}");
}

#[test]
fn dump_json_lines_parse_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    chat_log(dir.path());
    let d = dir.path().to_str().unwrap();
    let out = inspect(&["dump", d, "--json", "--kind", "message_sent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["index"], 4);
    assert_eq!(lines[0]["kind"], "message_sent");
    assert_eq!(lines[0]["from"], 1000);
    assert_eq!(lines[0]["id"], 4000);
    assert_eq!(lines[1]["body"], "hi again");
    assert_eq!(lines[1]["index"], 7);
    assert_eq!(lines[1]["id"], 7001);

    let out = inspect(&["dump", d, "--json", "--from", "2", "--to", "3"]);
    let idx: Vec<u64> = indexes(&out);
    assert_eq!(idx, vec![2, 3]);
    assert!(!stdout(&out).contains("SECRET"));
}

#[test]
fn dump_user_follows_every_account_that_had_the_name() {
    let dir = tempfile::tempdir().unwrap();
    chat_log(dir.path());
    let out = inspect(&[
        "dump",
        dir.path().to_str().unwrap(),
        "--json",
        "--user",
        "BOB",
    ]);
    assert!(out.status.success());
    let idx: Vec<u64> = indexes(&out);
    // Both bobs: created at 2 and 7, the messages to them, the receipt and
    // the deletion; record 7 holds two events, each on its own line.
    assert_eq!(idx, vec![2, 4, 5, 6, 7, 7]);
}

/// alice (1000), bob (2000) and carol (3000); bob makes a group with carol
/// (4000), carol posts, bob adds alice (6000), carol posts again (7000) and
/// alice reads (8000), alice leaves (9000), carol posts (10000).
#[test]
fn dump_user_follows_the_groups_the_user_is_in_while_in_them() {
    let dir = tempfile::tempdir().unwrap();
    let created = |name: &str| {
        event(Event::AccountCreated {
            username: name.into(),
            password_hash: PasswordHash("$argon2id$x".into()),
            at_ms: 0,
        })
    };
    let post = |body: &str| {
        event(Event::Posted {
            from: AccountId(3000),
            conversation: events::ConversationId(4000),
            client_msg_id: body.into(),
            body: body.into(),
            at_ms: 0,
        })
    };
    let changed = |by: u64, change: events::GroupChange| {
        event(Event::GroupChanged {
            by: AccountId(by),
            group: events::ConversationId(4000),
            change,
            at_ms: 0,
        })
    };
    let entries = [
        LogEntry {
            leader_node: 0,
            body: EntryBody::Blank,
        },
        created("alice"),
        created("bob"),
        created("carol"),
        event(Event::GroupCreated {
            owner: AccountId(2000),
            title: "team".into(),
            members: vec![AccountId(3000)],
            client_request_id: "g".into(),
            at_ms: 0,
        }),
        post("before alice"),
        changed(2000, events::GroupChange::Added(vec![AccountId(1000)])),
        post("with alice"),
        event(Event::ConversationRead {
            account: AccountId(1000),
            conversation: events::ConversationId(4000),
            up_to: MessageId(7000),
            at_ms: 0,
        }),
        changed(1000, events::GroupChange::Left),
        post("after alice"),
    ];
    let (log, _) = Log::open(dir.path(), LogConfig::default()).unwrap();
    let records: Vec<Record> = (entries.iter().enumerate())
        .map(|(i, e)| Record {
            index: i as u64,
            term: 1,
            payload: events::encode(e),
        })
        .collect();
    log.append(&records).unwrap();
    drop(log);
    let out = inspect(&[
        "dump",
        dir.path().to_str().unwrap(),
        "--json",
        "--user",
        "alice",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let idx: Vec<u64> = indexes(&out);
    assert_eq!(idx, vec![1, 6, 7, 8, 9]);
}

#[test]
fn unknown_kind_is_a_usage_error_listing_the_kinds() {
    let dir = tempfile::tempdir().unwrap();
    chat_log(dir.path());
    let out = inspect(&["dump", dir.path().to_str().unwrap(), "--kind", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("message_sent"), "{}", stderr(&out));
}

#[test]
fn verify_reports_clean_torn_and_corrupt_with_distinct_codes() {
    let dir = tempfile::tempdir().unwrap();
    chat_log(dir.path());
    let d = dir.path().to_str().unwrap();
    let out = inspect(&["verify", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("clean: 8 records"));
    assert!(stdout(&out).contains("ok"));

    // A torn tail: cut the last segment mid-record.
    let segs = segments(dir.path());
    let last = segs.last().unwrap();
    let len = fs::metadata(last).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let out = inspect(&["verify", d]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("torn tail"));
    assert!(stderr(&out).contains("record 7"), "{}", stderr(&out));
    // verify changed nothing.
    assert_eq!(fs::metadata(last).unwrap().len(), len - 3);
    // dump still prints the valid prefix and succeeds.
    let out = inspect(&["dump", d]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out).lines().count(), 7);

    // Corruption: flip a byte in the first segment's first record.
    let mut bytes = fs::read(&segs[0]).unwrap();
    bytes[60] ^= 0x01;
    fs::write(&segs[0], bytes).unwrap();
    let out = inspect(&["verify", d]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&segs[0].display().to_string()), "{err}");
    assert!(err.contains("at byte 48"), "{err}");
    assert!(err.contains("(record 0)"), "{err}");
    let out = inspect(&["dump", d]);
    assert_eq!(out.status.code(), Some(4));
    let out = inspect(&["stats", d]);
    assert_eq!(out.status.code(), Some(4));
}

/// verify checks the snapshot file's frame and CRC beside the log: listed
/// when intact, corruption (exit 4) naming the file when a byte flipped.
#[test]
fn verify_checks_the_snapshot_file() {
    let dir = tempfile::tempdir().unwrap();
    chat_log(dir.path());
    let d = dir.path().to_str().unwrap();
    let snapshot = StateFile::new(dir.path(), SNAPSHOT_FILE);
    snapshot.store_bytes(&[7u8; 1000]).unwrap();
    let out = inspect(&["verify", d]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("snapshot  1000 bytes, checksum ok"),
        "{}",
        stdout(&out)
    );

    let mut bytes = fs::read(snapshot.path()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(snapshot.path(), bytes).unwrap();
    let out = inspect(&["verify", d]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&snapshot.path().display().to_string()),
        "{err}"
    );
}

/// A log of blank records `0..total` in one segment, then cut at the start
/// of record `keep` as a lost tail leaves it (no torn record to see).
/// Returns the segment.
fn log_cut_at(dir: &Path, keep: u64, total: u64) -> std::path::PathBuf {
    let (log, _) = Log::open(dir, LogConfig::default()).unwrap();
    let blank = events::encode(&LogEntry {
        leader_node: 1,
        body: EntryBody::Blank,
    });
    let records = |range: std::ops::Range<u64>| -> Vec<Record> {
        range
            .map(|index| Record {
                index,
                term: 2,
                payload: blank.clone(),
            })
            .collect()
    };
    log.append(&records(0..keep)).unwrap();
    log.append(&records(keep..total)).unwrap();
    drop(log);
    let seg = segments(dir).pop().unwrap();
    let record_len = (fs::metadata(&seg).unwrap().len() - 48) / total;
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(48 + keep * record_len)
        .unwrap();
    seg
}

fn commit(dir: &Path, index: u64) {
    let id = RaftLogId {
        term: 2,
        node_id: 1,
        index,
    };
    StateFile::new(dir, COMMITTED_FILE)
        .store(&Some(id))
        .unwrap();
}

#[test]
fn verify_reports_committed_records_missing_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    log_cut_at(dir.path(), 8, 12);
    commit(dir.path(), 10);
    let out = inspect(&["verify", d]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_COMMITTED_MISSING.into()),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains(&format!("the log in {d} ")), "{err}");
    assert!(err.contains("raft-committed"), "{err}");
    assert!(
        err.contains("acknowledged records 8..10 are missing"),
        "{err}"
    );
    assert!(err.contains("`chat-server cluster remove`"), "{err}");
    assert!(err.contains("`--join`"), "{err}");
    assert!(!err.contains("clean"), "{err}");
    assert!(
        stdout(&out).contains("raft-committed  up to record 10 (term 2, leader node 1)"),
        "{}",
        stdout(&out)
    );

    // The same cut under a committed mark it still holds is clean.
    for committed in [7, 3] {
        commit(dir.path(), committed);
        let out = inspect(&["verify", d]);
        assert_eq!(
            out.status.code(),
            Some(EXIT_CLEAN.into()),
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("clean: 8 records"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn a_torn_tail_is_missing_records_only_when_they_were_committed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let seg = log_cut_at(dir.path(), 6, 6);
    // Tear the last record (5).
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    commit(dir.path(), 4);
    let out = inspect(&["verify", d]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_TORN_TAIL.into()),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("acknowledged"), "{}", stderr(&out));

    commit(dir.path(), 5);
    let out = inspect(&["verify", d]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_COMMITTED_MISSING.into()),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("torn tail"), "{err}");
    assert!(
        err.contains("acknowledged records 5..5 are missing"),
        "{err}"
    );
}

#[test]
fn stats_counts_kinds() {
    let dir = tempfile::tempdir().unwrap();
    chat_log(dir.path());
    let out = inspect(&["stats", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("indexes   0..=7"), "{text}");
    assert!(text.contains("records   8"), "{text}");
    assert!(text.contains("events    8"), "{text}");
    let records_of = |kind: &str| {
        let line = text.lines().find(|l| l.starts_with(kind)).unwrap();
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(records_of("account_created"), "2");
    assert_eq!(records_of("batch"), "1");
}

#[test]
fn missing_and_foreign_directories_get_clear_errors() {
    let out = inspect(&["verify", "/definitely/not/here"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read /definitely/not/here"),
        "{}",
        stderr(&out)
    );

    let empty = tempfile::tempdir().unwrap();
    fs::write(empty.path().join("notes.txt"), "hello").unwrap();
    let out = inspect(&["dump", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("holds no log segments"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["dump", "--help"],
        &["verify", "--help"],
        &["stats", "--help"],
    ] {
        let out = inspect(args);
        assert!(out.status.success(), "{args:?}");
        assert!(stdout(&out).contains("Usage:"), "{args:?}");
    }
    let help = stdout(&inspect(&["verify", "--help"]));
    assert!(help.contains("Exit status"), "{help}");
    assert!(help.contains("6 acknowledged records missing"), "{help}");
}

/// An archive of `n` messages, ids 10, 20, ..., in segments of about 1 KiB.
fn chat_archive(dir: &Path, n: u64) -> Vec<log_format::ArchiveSegment> {
    let config = ArchiveConfig {
        segment_size: 1024,
        sparse_every: 256,
    };
    let mut archive = Archive::open(dir, config).unwrap();
    for i in 1..=n {
        let message = events::ArchivedMessage {
            conversation: events::ConversationId(7000),
            from: AccountId(1000),
            at_ms: 1_700_000_000_000 + i,
            body: format!("archived body {i} {}", "y".repeat(40)),
        };
        archive.append(i * 10, &message).unwrap();
    }
    archive.sync().unwrap();
    archive.segments()
}

#[test]
fn verify_checks_the_archive_with_the_same_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    chat_log(dir.path());
    let d = dir.path().to_str().unwrap();
    let segments = chat_archive(dir.path(), 100);
    assert!(segments.len() > 3);
    let out = inspect(&["verify", d]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CLEAN.into()),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("archive/00000000000000000010.arc  ids 10..="));
    assert!(
        stderr(&out).contains(&format!(
            "clean archive: {} segments, 100 archived messages",
            segments.len()
        )),
        "{}",
        stderr(&out)
    );

    // A torn tail of the active segment.
    let active = &segments.last().unwrap().path;
    let file = fs::OpenOptions::new().append(true).open(active).unwrap();
    std::io::Write::write_all(&mut &file, &[1, 2, 3, 4, 5]).unwrap();
    let out = inspect(&["verify", d]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_TORN_TAIL.into()),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("torn tail in the archive"));
    file.set_len(segments.last().unwrap().bytes).unwrap();

    // A bit flip in a sealed segment.
    let sealed = &segments[1].path;
    let mut bytes = fs::read(sealed).unwrap();
    bytes[200] ^= 0x08;
    fs::write(sealed, &bytes).unwrap();
    let out = inspect(&["verify", d]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CORRUPT.into()),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("corrupt archive"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&sealed.display().to_string()),
        "{}",
        stderr(&out)
    );
    bytes[200] ^= 0x08;
    fs::write(sealed, &bytes).unwrap();

    // A stale hint.
    let hint = format!("{}.hint", sealed.display());
    let other = format!("{}.hint", segments[0].path.display());
    fs::copy(&other, &hint).unwrap();
    let out = inspect(&["verify", d]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CORRUPT.into()),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("rebuilds it"), "{}", stderr(&out));

    // An intact frame whose payload this build cannot read.
    fs::remove_file(&hint).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    chat_log(dir2.path());
    let segs = chat_archive(dir2.path(), 3);
    let path = &segs[0].path;
    let mut bytes = fs::read(path).unwrap();
    bytes.truncate(24);
    log_format::format::encode_frame(&mut bytes, 10, 0, &[9, 9, 9]);
    fs::write(path, &bytes).unwrap();
    let out = inspect(&["verify", dir2.path().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(EXIT_UNDECODABLE.into()),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("archived message 10: payload does not decode"));
}

#[test]
fn dump_archive_prints_each_message() {
    let dir = tempfile::tempdir().unwrap();
    chat_log(dir.path());
    chat_archive(dir.path(), 30);
    let d = dir.path().to_str().unwrap();
    let out = inspect(&["dump", d, "--archive"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 30, "{text}");
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        "        10 archived_message  conversation=7000 from=1000 at=2023-11-14T22:13:20.001Z \
         body_len=56 body=\"archived body 1 yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\""
    );

    let out = inspect(&[
        "dump",
        d,
        "--archive",
        "--json",
        "--from",
        "95",
        "--to",
        "120",
    ]);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["id"], 100);
    assert_eq!(lines[0]["conversation"], 7000);
    assert_eq!(lines[0]["from"], 1000);
    assert_eq!(
        lines[0]["body"],
        format!("archived body 10 {}", "y".repeat(40))
    );
    assert_eq!(lines[2]["id"], 120);

    // --archive is about message ids, not log kinds or users.
    let out = inspect(&["dump", d, "--archive", "--kind", "message_sent"]);
    assert_eq!(out.status.code(), Some(2));
    let bare = tempfile::tempdir().unwrap();
    let out = inspect(&["dump", bare.path().to_str().unwrap(), "--archive"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no message archive"),
        "{}",
        stderr(&out)
    );
}
