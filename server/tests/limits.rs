//! Connections a client can open but not abuse, against the real binary:
//! silent connections are closed, a flood of them cannot take the
//! descriptors the log needs, and a server whose replication stops exits
//! for its supervisor instead of lingering unable to write.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chat_proto as pb;
use common::ServerProcess;

/// These tests hold hundreds of sockets each, some at once: lift this
/// process's soft descriptor limit to its hard one (often 1024 -> more).
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Waits until `done` holds, polling every 20 ms, or fails after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the server has closed `stream` (a read ends or fails at once).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // The server's HTTP/2 settings frame; read on.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

async fn account(c: &mut pb::chat_client::ChatClient<tonic::transport::Channel>) -> String {
    c.create_account(pb::CreateAccountRequest {
        username: "ann".into(),
        password: "ann-password".into(),
    })
    .await
    .unwrap();
    c.create_account(pb::CreateAccountRequest {
        username: "bob".into(),
        password: "bob-password".into(),
    })
    .await
    .unwrap();
    c.login(pb::LoginRequest {
        username: "ann".into(),
        password: "ann-password".into(),
        min_applied: 0,
    })
    .await
    .unwrap()
    .into_inner()
    .token
}

fn send(token: &str, n: usize) -> pb::SendRequest {
    pb::SendRequest {
        token: token.into(),
        to: "bob".into(),
        body: format!("message {n}"),
        client_msg_id: format!("k{n}"),
        min_applied: 0,
        ..Default::default()
    }
}

#[test]
fn connections_that_send_nothing_are_closed() {
    raise_descriptor_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::try_start_with(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--handshake-timeout", "300ms"],
    )
    .unwrap();
    let mut silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    wait_until(
        Duration::from_secs(20),
        "every silent connection closed",
        || {
            silent.retain_mut(|s| !closed_by_server(s));
            silent.is_empty()
        },
    );
}

/// The defect: under `ulimit -n 1024`, 1,100 silent connections took the
/// descriptors the state files needed, a write failed with EMFILE, Raft's
/// core quit and every later write was UNAVAILABLE until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_cannot_take_the_descriptors_writes_need() {
    raise_descriptor_limit();
    let dir = tempfile::tempdir().unwrap();
    let server =
        ServerProcess::try_start_limited(dir.path(), 512, &["--listen", "127.0.0.1:0"]).unwrap();
    let mut c = server.client().await;
    let token = account(&mut c).await;
    c.send(send(&token, 0)).await.unwrap();

    let flood: Vec<TcpStream> = (0..700)
        .map(|_| TcpStream::connect(&server.addr).unwrap())
        .collect();
    // The connected client keeps writing through the flood: every write
    // needs descriptors for the log and the state files.
    for n in 1..=20 {
        c.send(send(&token, n)).await.unwrap();
    }
    drop(flood);
    c.send(send(&token, 21)).await.unwrap();
}

/// A storage failure Raft cannot go past (here: the data directory was
/// moved away, so no state file can be written) ends the process with a
/// non-zero status and a message that says what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_replication_stops_exits_for_its_supervisor() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mut server = ServerProcess::try_start_with(&data, &["--listen", "127.0.0.1:0"]).unwrap();
    let mut c = server.client().await;
    let token = account(&mut c).await;
    std::fs::rename(&data, root.path().join("moved")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        n += 1;
        let _ = tokio::time::timeout(Duration::from_millis(500), c.send(send(&token, n))).await;
    };
    assert!(!status.success(), "{status:?}");
    let stderr = server.stderr_after_exit();
    assert!(stderr.contains("replication stopped"), "{stderr}");
    assert!(stderr.contains("supervisor restarts it"), "{stderr}");
}
