//! The real `chat-server` binary as a process: killed with SIGKILL in the
//! middle of a stream of sends, it restarts with every acknowledged send
//! exactly once. Also its clear refusals of unusable data directories.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};

use chat_proto as pb;
use chat_proto::chat_client::ChatClient;
use common::ServerProcess;
use tonic::transport::Channel;

async fn login(c: &mut ChatClient<Channel>, name: &str) -> String {
    c.login(pb::LoginRequest {
        username: name.into(),
        password: "password-1".into(),
        min_applied: 0,
    })
    .await
    .expect("login")
    .into_inner()
    .token
}

/// Bob's whole conversation with ann as (body, id), all pages.
async fn history(c: &mut ChatClient<Channel>, bob: &str) -> Vec<(String, u64)> {
    let mut stored = Vec::new();
    let mut before = 0;
    loop {
        let page = c
            .history(pb::HistoryRequest {
                token: bob.to_string(),
                peer: "ann".into(),
                before,
                limit: 1000,
                min_applied: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stored.extend(page.messages.into_iter().map(|m| (m.body, m.id)));
        if page.next_before == 0 {
            return stored;
        }
        before = page.next_before;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sends_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut c = server.client().await;
    for name in ["ann", "bob"] {
        c.create_account(pb::CreateAccountRequest {
            username: name.into(),
            password: "password-1".into(),
        })
        .await
        .unwrap();
    }
    let ann = login(&mut c, "ann").await;

    // Eight senders, each sending numbered messages until the server dies.
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let attempted: Arc<Mutex<Vec<String>>> = Arc::default();
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut senders = Vec::new();
    for t in 0..8 {
        let mut c = c.clone();
        let (ann, acked, attempted, enough) = (
            ann.clone(),
            acked.clone(),
            attempted.clone(),
            enough.clone(),
        );
        senders.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("t{t}-{i}");
                attempted.lock().unwrap().push(key.clone());
                let r = c
                    .send(pb::SendRequest {
                        token: ann.clone(),
                        to: "bob".into(),
                        body: key.clone(),
                        client_msg_id: key.clone(),
                        min_applied: 0,
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(resp) => {
                        let mut a = acked.lock().unwrap();
                        a.push((key, resp.into_inner().message_id));
                        if a.len() == 400 {
                            enough.notify_one();
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    enough.notified().await;
    server.kill();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 400);

    // Restart on the same directory: every acknowledged send is there once.
    let server = ServerProcess::start(dir.path());
    let mut c = server.client().await;
    let bob = login(&mut c, "bob").await;
    let stored = history(&mut c, &bob).await;
    let mut bodies: Vec<&String> = stored.iter().map(|(b, _)| b).collect();
    bodies.sort();
    let n = bodies.len();
    bodies.dedup();
    assert_eq!(bodies.len(), n, "no message is stored twice");
    for (key, id) in &acked {
        assert!(
            stored.contains(&(key.clone(), *id)),
            "acknowledged {key} (id {id}) survived"
        );
    }

    // Retrying every attempted send (as a client would after the crash)
    // creates nothing new for those that made it, and nothing twice.
    let ann = login(&mut c, "ann").await;
    let attempted = attempted.lock().unwrap().clone();
    for key in &attempted {
        let resp = c
            .send(pb::SendRequest {
                token: ann.clone(),
                to: "bob".into(),
                body: key.clone(),
                client_msg_id: key.clone(),
                min_applied: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if let Some((_, id)) = acked.iter().find(|(k, _)| k == key) {
            assert_eq!(resp.message_id, *id, "{key} keeps its id");
        }
    }
    let total = history(&mut c, &bob).await.len();
    assert_eq!(
        total,
        attempted.len(),
        "each attempted send exists exactly once"
    );
}

#[test]
fn a_second_server_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ServerProcess::start(dir.path());
    let err = ServerProcess::try_start(dir.path())
        .err()
        .expect("second server refused");
    assert!(err.contains("in use by another process"), "{err}");
}

#[test]
fn a_corrupted_log_is_refused_with_the_place_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    drop(ServerProcess::start(dir.path()));
    // Damage the first record's payload.
    let seg = dir.path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[48 + 30] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let err = ServerProcess::try_start(dir.path()).err().expect("refused");
    assert!(err.contains("00000000000000000000.log at byte 48"), "{err}");
    assert!(err.contains("log-inspect verify"), "{err}");
}

/// A log that lost acknowledged records at its end (cut cleanly behind the
/// committed point) refuses to start, naming the directory, the records
/// missing and what to do; a cut inside the uncommitted tail would start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cut_behind_its_committed_point_is_refused_with_the_records_missing() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let mut c = server.client().await;
    // The committed hint is saved at most every 200 ms, when something
    // commits: write until it covers a few records, then crash.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(20));
    let mut n = 0;
    let committed = loop {
        let marks = log_format::RaftMarks::load(dir.path()).unwrap();
        if let Some(c) = marks.committed.filter(|c| c.index >= 5) {
            break c.index;
        }
        assert!(std::time::Instant::now() < deadline, "no committed hint");
        pace.tick().await;
        c.create_account(pb::CreateAccountRequest {
            username: format!("user{n}"),
            password: "password-1".into(),
        })
        .await
        .unwrap();
        n += 1;
    };
    server.kill();

    // Lose the last two acknowledged records, cleanly at a record boundary.
    let cut = committed - 1;
    {
        let (log, _) = log_format::Log::open(dir.path(), log_format::LogConfig::default()).unwrap();
        log.truncate_from(cut).unwrap();
    }
    let err = ServerProcess::try_start(dir.path()).err().expect("refused");
    let dir_name = dir.path().display().to_string();
    assert!(err.contains(&dir_name), "{err}");
    assert!(err.contains("raft-committed"), "{err}");
    assert!(
        err.contains(&format!("acknowledged records {cut}..")),
        "{err}"
    );
    assert!(err.contains("--join"), "{err}");
    assert!(!err.contains("Failed to get log entries"), "{err}");
}

#[test]
fn an_unwritable_data_directory_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let err = ServerProcess::try_start(&file.join("data"))
        .err()
        .expect("refused");
    assert!(err.contains("cannot open the log in"), "{err}");
    assert!(err.contains("not-a-directory"), "{err}");
}

/// SIGTERM ends the streams, takes a snapshot of what changed, flushes and
/// exits 0; the next start replays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path());
    let mut c = server.client().await;
    c.create_account(pb::CreateAccountRequest {
        username: "ann".into(),
        password: "password-1".into(),
    })
    .await
    .unwrap();
    let token = login(&mut c, "ann").await;
    let mut stream = c
        .subscribe(pb::SubscribeRequest {
            token,
            after: 0,
            min_applied: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // The backlog ends with the caught-up marker.
    while !matches!(
        stream.message().await.unwrap().and_then(|e| e.kind),
        Some(pb::event::Kind::CaughtUp(_))
    ) {}
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        // Presence and directory news may come first.
        while stream.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    })
    .await
    .expect("the stream ends promptly");
    assert_eq!(end.unwrap_err().code(), tonic::Code::Unavailable);
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    // The data is intact: the server starts again and knows the account,
    // from the snapshot taken as it stopped: it replays no record.
    let mut server = ServerProcess::try_start_logging(
        dir.path(),
        "warn,chat_server=info",
        &["--listen", "127.0.0.1:0"],
    )
    .unwrap();
    // Read its log to the end (a closed pipe would fail its writes), and
    // pass on the replay line.
    let stderr = server.child.stderr.take().unwrap();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("replayed the log") {
                let _ = line_tx.send(line);
            }
        }
    });
    let replay_line = line_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the server logs its replay");
    let plain = strip_ansi(&replay_line);
    assert!(plain.contains(" replayed=0 "), "{plain}");
    let mut c = server.client().await;
    login(&mut c, "ann").await;
}

/// SIGKILL the moment a snapshot starts being built, ten times over one
/// data directory (a snapshot every 300 events, little log kept behind):
/// after every restart each acknowledged message is there exactly once,
/// byte for byte, and the log and the message archive verify. Each round
/// also erases a message (deleted by both sides), so the archive is being
/// compacted as snapshots are built and killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_a_snapshot_is_built_loses_nothing() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--snapshot-every",
        "300",
        "--snapshot-keep",
        "20",
    ];
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut snapshots_interrupted = 0;
    for round in 0..10 {
        let mut server =
            ServerProcess::try_start_logging(dir.path(), "warn,chat_server=info", &args).unwrap();
        // Reads the server's log; says when a snapshot build starts.
        let (started_tx, started) = std::sync::mpsc::channel();
        let stderr = server.child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                if line.contains("building a snapshot") && started_tx.send(()).is_err() {
                    return;
                }
            }
        });
        let mut c = server.client().await;
        if round == 0 {
            for name in ["ann", "bob"] {
                c.create_account(pb::CreateAccountRequest {
                    username: name.into(),
                    password: "password-1".into(),
                })
                .await
                .unwrap();
            }
        }
        let ann = login(&mut c, "ann").await;
        let bob = login(&mut c, "bob").await;
        let doomed = c
            .send(pb::SendRequest {
                token: ann.clone(),
                to: "bob".into(),
                body: format!("doomed-{round}"),
                client_msg_id: format!("doomed-{round}"),
                min_applied: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .message_id;
        for token in [&ann, &bob] {
            c.delete_messages(pb::DeleteMessagesRequest {
                token: token.clone(),
                ids: vec![doomed],
                min_applied: 0,
            })
            .await
            .unwrap();
        }

        let round_acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let mut senders = Vec::new();
        for t in 0..4 {
            let (mut c, ann, round_acked) = (c.clone(), ann.clone(), round_acked.clone());
            senders.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("r{round}-t{t}-{i}");
                    let r = c
                        .send(pb::SendRequest {
                            token: ann.clone(),
                            to: "bob".into(),
                            body: format!("{key} {}", "x".repeat(200)),
                            client_msg_id: key.clone(),
                            min_applied: 0,
                            ..Default::default()
                        })
                        .await;
                    match r {
                        Ok(resp) => round_acked
                            .lock()
                            .unwrap()
                            .push((key, resp.into_inner().message_id)),
                        Err(_) => return,
                    }
                }
            }));
        }
        // Kill as a build starts, once this round has written enough (a
        // restart may begin with a snapshot of what it replayed).
        let counted = round_acked.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                started
                    .recv_timeout(std::time::Duration::from_secs(60))
                    .expect("a snapshot was started within a minute");
                if counted.lock().unwrap().len() >= 100 {
                    return;
                }
            }
        })
        .await
        .unwrap();
        server.kill();
        for s in senders {
            s.await.unwrap();
        }
        snapshots_interrupted += 1;
        acked.extend(round_acked.lock().unwrap().drain(..));

        // Restart: every acknowledged message so far is there, once.
        let server = ServerProcess::start(dir.path());
        let mut c = server.client().await;
        let bob = login(&mut c, "bob").await;
        let stored = history(&mut c, &bob).await;
        let mut keys: Vec<&str> = stored
            .iter()
            .map(|(b, _)| b.split(' ').next().unwrap())
            .collect();
        keys.sort_unstable();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "round {round}: a message is stored twice");
        assert!(
            !stored.iter().any(|(b, _)| b.starts_with("doomed-")),
            "round {round}: a message deleted by both sides is back"
        );
        for (body, _) in &stored {
            let key = body.split(' ').next().unwrap();
            assert_eq!(*body, format!("{key} {}", "x".repeat(200)), "round {round}");
        }
        let ids: std::collections::HashMap<&str, u64> = stored
            .iter()
            .map(|(b, id)| (b.split(' ').next().unwrap(), *id))
            .collect();
        for (key, id) in &acked {
            assert_eq!(
                ids.get(key.as_str()),
                Some(id),
                "round {round}: acknowledged {key} survived with its id"
            );
        }
        server.kill();
        if let Err(e) = log_format::scan_dir(dir.path(), |_, _, _| {}) {
            panic!("round {round}: the log does not verify: {e}");
        }
        match log_format::scan_archive(dir.path(), |_, _, _| {}) {
            Ok(scan) => assert!(scan.records > 0, "round {round}: an empty archive"),
            Err(e) => panic!("round {round}: the archive does not verify: {e}"),
        }
    }
    assert_eq!(snapshots_interrupted, 10);
    assert!(acked.len() >= 1000, "{} acknowledged", acked.len());
}

/// `line` without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// A server whose standard error is closed (a log pipe that died) goes on
/// serving and stops cleanly: a failed log write is not a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stderr_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // `info`: the server logs again when it stops (a louder filter would
    // fill the unread pipe before the server says where it listens).
    let mut server =
        ServerProcess::try_start_logging(dir.path(), "info", &["--listen", "127.0.0.1:0"]).unwrap();
    drop(server.child.stderr.take());
    let serve = async {
        let mut c = server.client().await;
        c.create_account(pb::CreateAccountRequest {
            username: "ann".into(),
            password: "password-1".into(),
        })
        .await
        .unwrap();
        login(&mut c, "ann").await;
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), serve)
        .await
        .expect("the server answers within 30 s");
    let status = server.terminate(std::time::Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}
