//! A three-server cluster of real processes under continuous sends from
//! several clients, while its leader is SIGKILLed again and again, a
//! follower is frozen with SIGSTOP, a fourth server joins and one leaves.
//! At the end every acknowledged message is present exactly once, in the
//! same order, on every replica (in their answers and in their logs), and
//! the subscriber saw no gap and no duplicate.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_client::{Client, ClientConfig, Event};
use chat_proto as pb;
use common::ServerProcess;
use log_format::events::{self, Event as LogEvent};
use tokio::time::Instant;

const SECRET: &str = "chaos-test-cluster-secret-0123456789";

/// A free port on loopback (bound and released: fine for a test).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

struct Node {
    id: u64,
    addr: String,
    dir: PathBuf,
    args: Vec<String>,
    process: Option<ServerProcess>,
}

impl Node {
    fn start(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let p = ServerProcess::try_start_with(&self.dir, &args)
            .unwrap_or_else(|e| panic!("node {} did not start: {e}", self.id));
        assert_eq!(p.addr, self.addr);
        self.process = Some(p);
    }

    fn signal(&self, sig: &str) {
        let pid = self.process.as_ref().unwrap().child.id().to_string();
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }
}

async fn status(addr: &str) -> Option<pb::StatusResponse> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .ok()?;
    let mut c = pb::cluster_client::ClusterClient::new(ch);
    let s = tokio::time::timeout(Duration::from_secs(2), c.status(pb::StatusRequest {}));
    Some(s.await.ok()?.ok()?.into_inner())
}

/// The leader that the running nodes agree on.
async fn leader(nodes: &[Node]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen = Vec::new();
        for n in nodes.iter().filter(|n| n.process.is_some()) {
            seen.push(status(&n.addr).await.map_or(0, |s| s.leader_id));
        }
        let l = seen[0];
        if l != 0
            && seen.iter().all(|s| *s == l)
            && nodes.iter().any(|n| n.id == l && n.process.is_some())
        {
            return l;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `message_sent` records of a log: (index, sender's key).
fn logged_sends(dir: &Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    log_format::scan_dir(dir, |_, _, frame| {
        let Ok(entry) = events::decode(frame.payload) else {
            return;
        };
        for (slot, event) in entry.events().iter().enumerate() {
            if let LogEvent::MessageSent { client_msg_id, .. } = event {
                out.push((events::position(frame.index, slot), client_msg_id.clone()));
            }
        }
    })
    .expect("the log verifies");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kills_freezes_and_membership_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let secret_file = tmp.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let secret = secret_file.to_str().unwrap().to_string();
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node {
            id: i as u64 + 1,
            addr: addrs[i].clone(),
            dir: tmp.path().join(format!("node{}", i + 1)),
            args: vec![
                "--id".into(),
                (i + 1).to_string(),
                "--listen".into(),
                addrs[i].clone(),
                "--peers".into(),
                peers.clone(),
                "--cluster-secret-file".into(),
                secret.clone(),
            ],
            process: None,
        })
        .collect();
    for n in &mut nodes {
        n.start();
    }
    leader(&nodes).await;

    let config = ClientConfig {
        servers: addrs.clone(),
        ..ClientConfig::default()
    };
    let admin = Client::connect(config.clone()).await.unwrap();
    for name in ["r", "s0", "s1", "s2", "s3"] {
        admin.create_account(name, "password-1").await.unwrap();
    }

    // The recipient's subscription, through its own client.
    let sub_client = Client::connect(config.clone()).await.unwrap();
    let r = sub_client.login("r", "password-1").await.unwrap();
    let mut subscription = sub_client.subscribe(&r.token, 0).await.unwrap();
    let seen: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    // The id of the last message the subscriber saw, to wait on.
    let (last_seen, mut last_seen_rx) = tokio::sync::watch::channel(0u64);
    let subscriber = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(event) = subscription.next().await {
                if let Event::Message { id, message } = event.expect("subscription") {
                    seen.lock().unwrap().push((id, message.body));
                    last_seen.send_replace(id);
                }
            }
        })
    };

    // Four senders, each retrying a message with the same key until it is
    // acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    // How many sends were acknowledged so far, to wait on.
    let (acked_count, _) = tokio::sync::watch::channel(0usize);
    let mut senders = Vec::new();
    for s in 0..4 {
        let client = Client::connect(config.clone()).await.unwrap();
        let session = client.login(&format!("s{s}"), "password-1").await.unwrap();
        let (stop, acked, acked_count) =
            (Arc::clone(&stop), Arc::clone(&acked), acked_count.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("s{s}-{i}");
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match client.send_with_id(&session.token, "r", &key, &key).await {
                        Ok(sent) => {
                            acked.lock().unwrap().insert(key.clone(), sent.id);
                            acked_count.send_modify(|n| *n += 1);
                            break;
                        }
                        Err(e) => {
                            assert!(Instant::now() < deadline, "{key} never went through: {e}");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                i += 1;
            }
        }));
    }
    let progress = |n: usize| {
        let mut count = acked_count.subscribe();
        async move {
            let target = *count.borrow() + n;
            let reached = count.wait_for(|c| *c >= target);
            tokio::time::timeout(Duration::from_secs(60), reached)
                .await
                .expect("no progress within 60 s")
                .expect("senders alive");
        }
    };

    // Five rounds: SIGKILL the leader under load, let the rest elect a new
    // one and go on, restart the killed one.
    for _ in 0..5 {
        progress(30).await;
        let l = leader(&nodes).await;
        let node = nodes.iter_mut().find(|n| n.id == l).unwrap();
        node.process.take().unwrap().kill();
        progress(30).await;
        nodes.iter_mut().find(|n| n.id == l).unwrap().start();
    }
    // Freeze a follower, keep going, thaw it.
    let l = leader(&nodes).await;
    let frozen = nodes.iter().position(|n| n.id != l).unwrap();
    nodes[frozen].signal("-STOP");
    progress(50).await;
    nodes[frozen].signal("-CONT");

    // A fourth server joins under load; then one of the first three leaves.
    let addr4 = free_addr();
    let mut node4 = Node {
        id: 4,
        addr: addr4.clone(),
        dir: tmp.path().join("node4"),
        args: vec![
            "--id".into(),
            "4".into(),
            "--listen".into(),
            addr4.clone(),
            "--join".into(),
            addrs[0].clone(),
            "--cluster-secret-file".into(),
            secret.clone(),
        ],
        process: None,
    };
    node4.start();
    nodes.push(node4);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = leader(&nodes).await;
        let addr = &nodes.iter().find(|n| n.id == l).unwrap().addr;
        if status(addr)
            .await
            .is_some_and(|s| s.members.iter().any(|m| m.node_id == 4 && m.voter))
        {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 never became a voter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress(30).await;
    let l = leader(&nodes).await;
    let leaving = nodes.iter().find(|n| n.id != l && n.id != 4).unwrap().id;
    let out = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args([
            "cluster",
            "remove",
            "--server",
            &nodes.iter().find(|n| n.id == l).unwrap().addr,
        ])
        .args([
            "--id",
            &leaving.to_string(),
            "--cluster-secret-file",
            &secret,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = nodes.iter().position(|n| n.id == leaving).unwrap();
    nodes[gone].process.take().unwrap().kill();
    nodes.remove(gone);
    progress(30).await;

    // Stop the load.
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    // Every acknowledged message, once, in the same order, on every replica.
    let mut orders = Vec::new();
    for n in &nodes {
        let c = Client::connect(ClientConfig {
            servers: vec![n.addr.clone()],
            ..config.clone()
        })
        .await
        .unwrap();
        // Logging in makes a write whose index is past every acknowledged
        // send, so the reads below wait until this replica has applied them.
        c.login("r", "password-1").await.unwrap();
        let mut all: Vec<(u64, String)> = Vec::new();
        for s in 0..4 {
            let mut before = None;
            loop {
                let page = c
                    .history(&r.token, &format!("s{s}"), before, 1000)
                    .await
                    .unwrap();
                all.extend(page.messages.iter().map(|m| (m.id, m.body.clone())));
                match page.next_before {
                    Some(b) => before = Some(b),
                    None => break,
                }
            }
        }
        all.sort();
        let keys: HashSet<&String> = all.iter().map(|(_, b)| b).collect();
        assert_eq!(
            keys.len(),
            all.len(),
            "node {}: a message is stored twice",
            n.id
        );
        for (key, id) in &acked {
            assert!(
                all.contains(&(*id, key.clone())),
                "node {}: acknowledged {key} ({id}) is missing",
                n.id
            );
        }
        orders.push((n.id, all));
    }
    for (id, order) in &orders[1..] {
        assert_eq!(
            order, &orders[0].1,
            "node {id} differs from node {}",
            orders[0].0
        );
    }

    // The subscriber saw every message once, in order, without gaps.
    let newest = orders[0].1.last().unwrap().0;
    tokio::time::timeout(
        Duration::from_secs(30),
        last_seen_rx.wait_for(|l| *l >= newest),
    )
    .await
    .expect("the subscriber fell behind")
    .expect("the subscriber is alive");
    subscriber.abort();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen, orders[0].1,
        "the subscription matches the history exactly"
    );

    // The logs agree record for record (as log-inspect reads them).
    let mut stopped = Vec::new();
    for n in &mut nodes {
        n.signal("-TERM");
        let mut p = n.process.take().unwrap();
        assert!(p.child.wait().unwrap().success());
        stopped.push((n.id, logged_sends(&n.dir)));
    }
    let shortest = stopped.iter().map(|(_, l)| l.len()).min().unwrap();
    for (id, log) in &stopped[1..] {
        assert_eq!(
            &log[..shortest],
            &stopped[0].1[..shortest],
            "node {id}'s log differs"
        );
    }
    for (key, id) in &acked {
        assert!(
            stopped[0].1.iter().any(|(i, k)| i == id && k == key),
            "{key} is in the log at {id}"
        );
    }
}
