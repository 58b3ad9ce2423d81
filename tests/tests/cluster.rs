//! Three servers in one Raft cluster, in this process, over real sockets:
//! forwarding, failover, joining and leaving, partitions, and the secret.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chat_proto as pb;
use chat_server::Faults;
use common::*;
use tonic::Code;
use tonic::transport::Channel;

const SECRET: &str = "test-cluster-secret-0123456789";

struct Cluster {
    nodes: BTreeMap<u64, Option<TestServer>>,
    peers: BTreeMap<u64, String>,
    faults: BTreeMap<u64, Arc<Faults>>,
    dirs: BTreeMap<u64, tempfile::TempDir>,
}

fn node_config(
    dir: &std::path::Path,
    id: u64,
    peers: &BTreeMap<u64, String>,
    faults: &Arc<Faults>,
) -> chat_server::Config {
    let mut c = config(dir);
    c.node_id = id;
    c.peers = peers.clone();
    c.cluster_secret = Some(SECRET.into());
    c.faults = Arc::clone(faults);
    c
}

impl Cluster {
    async fn start(n: u64) -> Cluster {
        Cluster::start_tuned(n, |_| {}).await
    }

    /// A cluster whose node configs `tune` adjusts.
    async fn start_tuned(n: u64, tune: impl Fn(&mut chat_server::Config)) -> Cluster {
        let mut listeners = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=n {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            peers.insert(id, l.local_addr().unwrap().to_string());
            listeners.insert(id, l);
        }
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            peers: peers.clone(),
            faults: BTreeMap::new(),
            dirs: BTreeMap::new(),
        };
        let mut starting = Vec::new();
        for (id, listener) in listeners {
            let dir = tempfile::tempdir().unwrap();
            let faults = Arc::new(Faults::default());
            let mut cfg = node_config(dir.path(), id, &peers, &faults);
            tune(&mut cfg);
            cluster.dirs.insert(id, dir);
            cluster.faults.insert(id, faults);
            starting.push(tokio::spawn(async move {
                (id, TestServer::start_on(cfg, listener).await)
            }));
        }
        for s in starting {
            let (id, server) = s.await.unwrap();
            cluster.nodes.insert(id, Some(server));
        }
        cluster.leader().await;
        cluster
    }

    async fn status(addr: &str) -> Option<pb::StatusResponse> {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .ok()?
            .connect()
            .await
            .ok()?;
        let mut c = pb::cluster_client::ClusterClient::new(ch);
        Some(c.status(pb::StatusRequest {}).await.ok()?.into_inner())
    }

    /// The leader every running node agrees on (waits for one).
    async fn leader(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = Vec::new();
            for (id, node) in &self.nodes {
                if node.is_some() {
                    seen.push(Self::status(&self.peers[id]).await.map(|s| s.leader_id));
                }
            }
            if let Some(Some(l)) = seen.first()
                && *l != 0
                && seen.iter().all(|s| *s == Some(*l))
                && self.nodes.get(l).is_some_and(|n| n.is_some())
            {
                return *l;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn client(&self, id: u64) -> Client {
        self.nodes[&id].as_ref().expect("running").client().await
    }

    fn followers(&self, leader: u64) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(id, n)| **id != leader && n.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    async fn stop(&mut self, id: u64) {
        let server = self.nodes.get_mut(&id).unwrap().take().unwrap();
        server.stop().await;
    }

    async fn restart(&mut self, id: u64) {
        let listener = tokio::net::TcpListener::bind(&self.peers[&id])
            .await
            .unwrap();
        let cfg = node_config(self.dirs[&id].path(), id, &self.peers, &self.faults[&id]);
        self.nodes
            .insert(id, Some(TestServer::start_on(cfg, listener).await));
    }
}

/// Every message body in bob's conversation with ann, as `node` answers.
async fn bodies(c: &mut Client, token: &str, min_applied: u64) -> Vec<String> {
    let h = c
        .history(pb::HistoryRequest {
            token: token.into(),
            peer: "ann".into(),
            before: 0,
            limit: 1000,
            min_applied,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut v: Vec<String> = h.messages.into_iter().map(|m| m.body).collect();
    v.reverse();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_server_takes_writes_and_reads_see_them() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let followers = cluster.followers(leader);
    let (f1, f2) = (followers[0], followers[1]);

    // Everything through a follower: forwarded to the leader.
    let mut c1 = cluster.client(f1).await;
    let ann = account(&mut c1, "ann").await;
    let created = c1
        .create_account(pb::CreateAccountRequest {
            username: "bob".into(),
            password: "bob-password".into(),
        })
        .await
        .unwrap();
    // A follower names the leader, so clients can write there directly.
    let named = created.metadata().get(chat_proto::LEADER_METADATA_KEY);
    assert_eq!(
        named.and_then(|v| v.to_str().ok()),
        Some(cluster.peers[&leader].as_str())
    );
    let created = created.into_inner();
    // The other follower knows bob once it has applied the cursor.
    let mut c2 = cluster.client(f2).await;
    let bob = c2
        .login(pb::LoginRequest {
            username: "bob".into(),
            password: "bob-password".into(),
            min_applied: created.log_position,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(bob.log_position > created.log_position);
    let mut stream = c2
        .subscribe(pb::SubscribeRequest {
            token: bob.token.clone(),
            after: 0,
            min_applied: bob.log_position,
        })
        .await
        .unwrap()
        .into_inner();
    backlog(&mut stream).await;

    let mut last = 0;
    for i in 0..10 {
        let r = c1
            .send(pb::SendRequest {
                token: ann.clone(),
                to: "bob".into(),
                body: format!("m{i}"),
                client_msg_id: format!("k{i}"),
                min_applied: 0,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        last = r.log_position;
    }
    // Live on the other follower, in order.
    for i in 0..10 {
        loop {
            let e = next_event(&mut stream).await.unwrap();
            if let Some(pb::event::Kind::Message(m)) = e.kind {
                assert_eq!(m.body, format!("m{i}"));
                break;
            }
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for id in [leader, f1, f2] {
        let mut c = cluster.client(id).await;
        assert_eq!(
            bodies(&mut c, &bob.token, last).await,
            expected,
            "node {id}"
        );
    }
}

/// Concurrent writes at a follower reach the leader in shared `Forward`
/// calls; each still gets its own answer: the id of its own message, and
/// for a repeated idempotency key the id of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_a_follower_each_get_their_own_answer() {
    const SENDERS: usize = 8;
    const EACH: usize = 25;
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let f = cluster.followers(leader)[0];
    let mut c = cluster.client(f).await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;

    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let (mut c, ann) = (c.clone(), ann.clone());
        senders.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..EACH {
                // Every sender also sends the key "shared" once, at the
                // same moment as the others: one message, one id for all.
                let (body, key) = match i {
                    10 => ("shared".to_string(), "shared".to_string()),
                    _ => (format!("s{s}-{i}"), format!("s{s}-{i}")),
                };
                let r = send_keyed(&mut c, &ann, "bob", &body, &key).await;
                acked.push((r.message_id, body));
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(done) = senders.join_next().await {
        let mine = done.unwrap();
        // Its own messages are written in the order it sent them (the
        // shared one has the id of whoever sent it first).
        let ids: Vec<u64> = (mine.iter())
            .filter(|(_, body)| body != "shared")
            .map(|(id, _)| *id)
            .collect();
        assert!(ids.is_sorted(), "one sender's ids go up: {ids:?}");
        acked.extend(mine);
    }
    let shared: Vec<u64> = (acked.iter())
        .filter(|(_, body)| body == "shared")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(shared.len(), SENDERS);
    assert!(shared.iter().all(|id| *id == shared[0]), "{shared:?}");
    acked.sort();
    acked.dedup();
    assert_eq!(acked.len(), SENDERS * (EACH - 1) + 1);
    let last = acked.last().unwrap().0;

    // Every server holds exactly the acknowledged messages, each under the
    // id its sender was given.
    for id in [leader, f, cluster.followers(leader)[1]] {
        let mut c = cluster.client(id).await;
        let stored = c
            .history(pb::HistoryRequest {
                token: bob.clone(),
                peer: "ann".into(),
                limit: 1000,
                min_applied: last,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .messages;
        let mut stored: Vec<(u64, String)> = stored.into_iter().map(|m| (m.id, m.body)).collect();
        stored.sort();
        assert_eq!(stored, acked, "node {id}");
    }
}

/// A server that does not lead refuses writes forwarded to it, one answer
/// per event, and does not send them on: forwards cannot loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_refuses_forwarded_writes_without_passing_them_on() {
    use chat_server::testing::{ForwardAnswer, Refusal, decode, encode, with_secret};
    use log_format::events::{Event, PasswordHash};

    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let f = cluster.followers(leader)[0];
    let ch = Channel::from_shared(format!("http://{}", cluster.peers[&f]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let events: Vec<Event> = (0..3)
        .map(|i| Event::AccountCreated {
            username: format!("forwarded{i}"),
            password_hash: PasswordHash("$argon2id$x".into()),
            at_ms: 1,
        })
        .collect();
    let request = with_secret(
        pb::ForwardRequest {
            payload: encode(&events).unwrap(),
        },
        SECRET,
    );
    let reply = pb::raft_client::RaftClient::new(ch)
        .forward(request)
        .await
        .unwrap()
        .into_inner();
    let answers: Vec<ForwardAnswer> = decode(&reply.payload).unwrap();
    assert_eq!(answers.len(), 3);
    for answer in answers {
        match answer {
            Err(Refusal::NotLeader { leader: Some(at) }) => {
                assert_eq!(at, cluster.peers[&leader]);
            }
            other => panic!("expected 'not the leader, it is at ...', got {other:?}"),
        }
    }
    // Nothing was written anywhere.
    let mut c = cluster.client(leader).await;
    let listed = c
        .list_accounts(pb::ListAccountsRequest {
            pattern: "forwarded*".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.accounts.is_empty(), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_survives_its_leader_and_loses_nothing() {
    let mut cluster = Cluster::start(3).await;
    let first = cluster.leader().await;
    let f = cluster.followers(first)[0];
    let mut c = cluster.client(f).await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let mut acked = Vec::new();
    for i in 0..5 {
        send(&mut c, &ann, "bob", &format!("before {i}")).await;
        acked.push(format!("before {i}"));
    }
    cluster.stop(first).await;
    let second = cluster.leader().await;
    assert_ne!(first, second);
    let mut c = cluster.client(second).await;
    for i in 0..5 {
        let r = c
            .send(pb::SendRequest {
                token: ann.clone(),
                to: "bob".into(),
                body: format!("after {i}"),
                client_msg_id: format!("after {i}"),
                min_applied: 0,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(r.into_inner().message_id > 0);
        acked.push(format!("after {i}"));
    }
    // The old leader comes back and catches up.
    cluster.restart(first).await;
    let last = c
        .history(pb::HistoryRequest {
            token: bob.clone(),
            peer: "ann".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages[0]
        .id;
    for id in [1, 2, 3] {
        let mut c = cluster.client(id).await;
        assert_eq!(bodies(&mut c, &bob, last).await, acked, "node {id}");
    }
}

/// Group messages and membership changes through a follower, then through
/// a new leader after the first is stopped: every acknowledged post is on
/// every replica exactly once, a retried post included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_traffic_survives_its_leader_and_loses_nothing() {
    let mut cluster = Cluster::start(3).await;
    let first = cluster.leader().await;
    let f = cluster.followers(first)[0];
    let mut c = cluster.client(f).await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let cy = account(&mut c, "cy").await;
    let group = c
        .create_group(pb::CreateGroupRequest {
            token: ann.clone(),
            title: "team".into(),
            member_names: vec!["bob".into()],
            client_request_id: "team".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .conversation_id;
    let post = |token: &str, body: String| pb::SendRequest {
        token: token.into(),
        conversation_id: group,
        client_msg_id: body.clone(),
        body,
        ..Default::default()
    };
    let mut acked = Vec::new();
    for i in 0..3 {
        c.send(post(&bob, format!("before {i}"))).await.unwrap();
        acked.push(format!("before {i}"));
    }
    let cy_id = c
        .list_accounts(pb::ListAccountsRequest {
            pattern: "cy".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .accounts[0]
        .account_id;
    c.change_group(pb::ChangeGroupRequest {
        token: ann.clone(),
        conversation_id: group,
        change: Some(pb::change_group_request::Change::Add(pb::AccountIds {
            ids: vec![cy_id],
        })),
        ..Default::default()
    })
    .await
    .unwrap();
    cluster.stop(first).await;
    let second = cluster.leader().await;
    let mut c = cluster.client(second).await;
    for i in 0..3 {
        let sent = c
            .send(post(&cy, format!("after {i}")))
            .await
            .unwrap()
            .into_inner();
        // A retry after a failover: the same message, not a second one.
        let again = c
            .send(post(&cy, format!("after {i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.message_id, sent.message_id);
        acked.push(format!("after {i}"));
    }
    cluster.restart(first).await;
    let last = c
        .history(pb::HistoryRequest {
            token: ann.clone(),
            conversation_id: group,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .messages[0]
        .id;
    for id in [1, 2, 3] {
        let mut c = cluster.client(id).await;
        let h = c
            .history(pb::HistoryRequest {
                token: bob.clone(),
                conversation_id: group,
                limit: 1000,
                min_applied: last,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut bodies: Vec<String> = h.messages.into_iter().map(|m| m.body).collect();
        bodies.reverse();
        assert_eq!(bodies, acked, "node {id}");
        let members = c
            .members(pb::MembersRequest {
                token: cy.clone(),
                conversation_id: group,
                min_applied: last,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(members.members.len(), 3, "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_never_commits_and_nothing_is_lost_after_healing() {
    let cluster = Cluster::start(3).await;
    let old = cluster.leader().await;
    let mut c = cluster.client(old).await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    send(&mut c, &ann, "bob", "before").await;

    // Cut the leader off from both followers, both ways.
    let others = cluster.followers(old);
    cluster.faults[&old].block(others.clone());
    for o in &others {
        cluster.faults[o].block([old]);
    }
    // The isolated leader cannot commit: the write fails, it does not hang.
    let started = tokio::time::Instant::now();
    let r = c
        .send(pb::SendRequest {
            token: ann.clone(),
            to: "bob".into(),
            body: "lost in the minority".into(),
            client_msg_id: "minority".into(),
            min_applied: 0,
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(15));

    // The majority elects a leader and commits.
    let mut m = cluster.client(others[0]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let majority = loop {
        let r = m
            .send(pb::SendRequest {
                token: ann.clone(),
                to: "bob".into(),
                body: "in the majority".into(),
                client_msg_id: "majority".into(),
                min_applied: 0,
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => break r.into_inner(),
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the majority never committed"
                );
            }
        }
    };

    // Heal: everyone agrees, the acknowledged writes are there, the
    // minority's unacknowledged write never took effect.
    cluster.faults[&old].heal();
    for o in &others {
        cluster.faults[o].heal();
    }
    for id in [1, 2, 3] {
        let mut c = cluster.client(id).await;
        let got = bodies(&mut c, &bob, majority.log_position).await;
        assert_eq!(got, ["before", "in the majority"], "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_traffic_and_membership_changes_need_the_secret() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let ch = Channel::from_shared(format!("http://{}", cluster.peers[&leader]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raft = pb::raft_client::RaftClient::new(ch.clone());
    let denied = raft
        .vote(pb::VoteRequest {
            payload: vec![1, 2, 3],
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let mut wrong = tonic::Request::new(pb::AppendEntriesRequest { payload: vec![] });
    wrong.metadata_mut().insert(
        chat_proto::CLUSTER_SECRET_METADATA_KEY,
        "guess".parse().unwrap(),
    );
    assert_eq!(
        raft.append_entries(wrong).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let fwd = raft
        .forward(pb::ForwardRequest { payload: vec![] })
        .await
        .unwrap_err();
    assert_eq!(fwd.code(), Code::PermissionDenied);
    // Nor can a client keep sessions alive by claiming activity.
    let touch = raft
        .touch(pb::TouchRequest { payload: vec![] })
        .await
        .unwrap_err();
    assert_eq!(touch.code(), Code::PermissionDenied);
    let mut admin = pb::cluster_client::ClusterClient::new(ch);
    let add = admin
        .add_member(pb::AddMemberRequest {
            node_id: 9,
            address: "127.0.0.1:1".into(),
            cluster_secret: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(add.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_joins_a_live_cluster_and_one_leaves() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let mut expected = Vec::new();
    for i in 0..20 {
        send(&mut c, &ann, "bob", &format!("m{i}")).await;
        expected.push(format!("m{i}"));
    }

    // Node 4 starts empty with --join pointing at a follower.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.node_id = 4;
    cfg.cluster_secret = Some(SECRET.into());
    cfg.join = Some(cluster.peers[&cluster.followers(leader)[0]].clone());
    let joined = TestServer::start_on(cfg, listener).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = Cluster::status(&cluster.peers[&leader]).await.unwrap();
        if s.members
            .iter()
            .any(|m| m.node_id == 4 && m.voter && m.address == addr)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 4 never became a voter: {:?}",
            s.members
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = send(&mut c, &ann, "bob", "after join").await.log_position;
    expected.push("after join".into());
    let mut c4 = joined.client().await;
    assert_eq!(bodies(&mut c4, &bob, last).await, expected);

    // Remove a follower that is not the one node 4 used.
    let gone = *cluster.followers(leader).last().unwrap();
    let ch = Channel::from_shared(format!("http://{}", cluster.peers[&leader]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let members = pb::cluster_client::ClusterClient::new(ch)
        .remove_member(pb::RemoveMemberRequest {
            node_id: gone,
            cluster_secret: SECRET.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(members.iter().all(|m| m.node_id != gone), "{members:?}");
    cluster.stop(gone).await;
    // Still a majority of the new membership: writes go on.
    send(&mut c, &ann, "bob", "after removal").await;
}

fn small_snapshots(c: &mut chat_server::Config) {
    c.snapshot_every = 20;
    c.snapshot_keep = 5;
    c.segment_size = 2048;
}

/// The first index still in the log of the server whose data is in `dir`.
fn first_index(dir: &std::path::Path) -> u64 {
    log_format::scan_dir(dir, |_, _, _| {})
        .unwrap()
        .first_index()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_bring_new_servers_up_to_date() {
    let mut cluster = Cluster::start_tuned(3, small_snapshots).await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let mut expected = Vec::new();
    for i in 0..120 {
        send(&mut c, &ann, "bob", &format!("m{i}")).await;
        expected.push(format!("m{i}"));
    }
    // Snapshots were taken and the log behind them purged, on every server.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for id in [1, 2, 3] {
        let dir = cluster.dirs[&id].path().to_path_buf();
        while first_index(&dir) == 0 || !dir.join("snapshot").exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} never purged its log"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A new server can no longer get the history from the log: it gets a
    // snapshot, then the rest of the log.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    small_snapshots(&mut cfg);
    cfg.node_id = 4;
    cfg.cluster_secret = Some(SECRET.into());
    cfg.join = Some(cluster.peers[&leader].clone());
    let joined = TestServer::start_on(cfg, listener).await;
    let last = send(&mut c, &ann, "bob", "after join").await.log_position;
    expected.push("after join".into());
    let mut c4 = joined.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let h = c4
            .history(pb::HistoryRequest {
                token: bob.clone(),
                peer: "ann".into(),
                before: 0,
                limit: 1000,
                min_applied: 0,
                ..Default::default()
            })
            .await;
        if let Ok(h) = h
            && h.into_inner().messages.len() == expected.len()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 4 never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bodies(&mut c4, &bob, last).await, expected);
    assert!(dir.path().join("snapshot").exists());
    assert!(
        first_index(dir.path()) > 0,
        "node 4's log starts after the snapshot"
    );

    // A restarted server comes back from its snapshot plus its log.
    let follower = cluster.followers(leader)[0];
    cluster.stop(follower).await;
    cluster.restart(follower).await;
    let mut cf = cluster.client(follower).await;
    assert_eq!(bodies(&mut cf, &bob, last).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_replica_refuses_to_serve_and_is_rebuilt_from_the_cluster() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    let mut expected = Vec::new();
    for i in 0..10 {
        send(&mut c, &ann, "bob", &format!("m{i}")).await;
        expected.push(format!("m{i}"));
    }
    let bad = cluster.followers(leader)[0];
    cluster.stop(bad).await;
    // Flip a byte in the middle of its log.
    let seg = cluster.dirs[&bad].path().join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[100] ^= 0x55;
    std::fs::write(&seg, bytes).unwrap();

    // It refuses to start (so it never votes or serves) and says why.
    let listener = tokio::net::TcpListener::bind(&cluster.peers[&bad])
        .await
        .unwrap();
    let cfg = node_config(
        cluster.dirs[&bad].path(),
        bad,
        &cluster.peers,
        &cluster.faults[&bad],
    );
    let err = chat_server::Server::start(cfg, listener).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("00000000000000000000.log at byte"), "{msg}");
    assert!(
        msg.contains("rebuild this replica from its cluster"),
        "{msg}"
    );

    // The documented rebuild: remove it from the membership, empty its data
    // directory, start it again with --join.
    let ch = Channel::from_shared(format!("http://{}", cluster.peers[&leader]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    pb::cluster_client::ClusterClient::new(ch)
        .remove_member(pb::RemoveMemberRequest {
            node_id: bad,
            cluster_secret: SECRET.into(),
        })
        .await
        .unwrap();
    let dir = cluster.dirs[&bad].path().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    let listener = tokio::net::TcpListener::bind(&cluster.peers[&bad])
        .await
        .unwrap();
    let mut cfg = config(&dir);
    cfg.node_id = bad;
    cfg.cluster_secret = Some(SECRET.into());
    cfg.join = Some(cluster.peers[&leader].clone());
    let rebuilt = TestServer::start_on(cfg, listener).await;
    let last = send(&mut c, &ann, "bob", "after rebuild")
        .await
        .log_position;
    expected.push("after rebuild".into());
    let mut cr = rebuilt.client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = Cluster::status(&cluster.peers[&leader]).await.unwrap();
        if s.members.iter().any(|m| m.node_id == bad && m.voter) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuilt replica never became a voter"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bodies(&mut cr, &bob, last).await, expected);
}

/// Whether any file under `dir`, at any depth (the log, the state files,
/// the message archive and its hints, snapshots to ship), contains `needle`.
fn disk_contains(dir: &std::path::Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            return disk_contains(&path, needle);
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_content_leaves_every_disk_once_a_snapshot_covers_it() {
    let cluster = Cluster::start_tuned(3, small_snapshots).await;
    let leader = cluster.leader().await;
    let mut c = cluster.client(leader).await;
    let ann = account(&mut c, "ann").await;
    let bob = account(&mut c, "bob").await;
    send(&mut c, &ann, "bob", "TOP-SECRET-1234").await;
    let gone = send(&mut c, &bob, "ann", "ALSO-SECRET-5678").await;
    let dan = account(&mut c, "dan").await;
    let both = send(&mut c, &dan, "bob", "BOTH-DELETED-9012").await;
    send(&mut c, &dan, "bob", "KEPT-3456").await;
    // In the log and in the message archive.
    for secret in ["TOP-SECRET-1234", "BOTH-DELETED-9012"] {
        assert!(disk_contains(cluster.dirs[&leader].path(), secret));
        assert!(disk_contains(
            &cluster.dirs[&leader].path().join("archive"),
            secret
        ));
    }
    // A message deleted by every member goes as well; by one, it stays.
    for token in [&dan, &bob] {
        c.delete_messages(pb::DeleteMessagesRequest {
            token: token.clone(),
            ids: vec![both.message_id],
            min_applied: 0,
        })
        .await
        .unwrap();
    }

    // Ann deletes her account: both messages leave every answer...
    c.delete_account(pb::DeleteAccountRequest {
        token: ann.clone(),
        password: "ann-password".into(),
        min_applied: 0,
    })
    .await
    .unwrap();
    // ...and, once later snapshots cover the deletion and the log behind
    // them is purged, every disk.
    let carl = account(&mut c, "carl").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        let clean = [1, 2, 3].iter().all(|id| {
            let dir = cluster.dirs[id].path();
            ["TOP-SECRET-1234", "ALSO-SECRET-5678", "BOTH-DELETED-9012"]
                .iter()
                .all(|secret| !disk_contains(dir, secret))
        });
        if clean {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deleted content is still on disk"
        );
        send(&mut c, &carl, "bob", &format!("filler {i}")).await;
        i += 1;
    }
    assert!(gone.message_id > 0);
    // What one member still sees is still there, from the archive.
    let h = c
        .history(pb::HistoryRequest {
            token: dan.clone(),
            peer: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let bodies: Vec<_> = h.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["KEPT-3456"]);
    for id in [1, 2, 3] {
        assert!(disk_contains(cluster.dirs[&id].path(), "KEPT-3456"));
    }
}

/// Only the leader ends idle sessions, so activity that reaches a follower
/// must reach it too: a session used only through a follower stays alive
/// for many idle timeouts, and still ends once nobody uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_on_a_follower_keeps_a_session_alive() {
    let idle = Duration::from_secs(1);
    let cluster = Cluster::start_tuned(3, |c| c.session_idle = idle).await;
    let leader = cluster.leader().await;
    let follower = cluster.followers(leader)[0];
    let mut c = cluster.client(follower).await;
    let token = account(&mut c, "busy").await;

    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let until = tokio::time::Instant::now() + 3 * idle;
    while tokio::time::Instant::now() < until {
        pace.tick().await;
        c.conversations(pb::ConversationsRequest {
            token: token.clone(),
            min_applied: 0,
        })
        .await
        .expect("a session in use through a follower stays logged in");
    }

    // And it still ends once nobody uses it.
    wait_logged_out(&mut c, &token, idle, Duration::from_secs(15)).await;
}

/// A client whose only server is cut off from the rest says "writes wait"
/// (its server answers, but has no leader), keeps reading, and says
/// connected again once the cluster commits, without a write of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_with_a_minority_says_writes_wait_until_the_cluster_commits() {
    use chat_client::{ClientConfig, ConnectionState};

    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let lonely = cluster.followers(leader)[0];
    let mut c = cluster.client(leader).await;
    let ann = account(&mut c, "ann").await;
    account(&mut c, "bob").await;
    let before = send(&mut c, &ann, "bob", "before").await;

    let client = chat_client::Client::connect(ClientConfig {
        servers: vec![cluster.peers[&lonely].clone()],
        failover_attempts: 1,
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let state = || client.connection_state().borrow().clone();
    // The cut-off server has applied the write before the cut (this new
    // client has no read cursor to make it wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page = client
            .history(&ann, "bob", None, 10)
            .await
            .expect("history before the cut");
        if page.messages.iter().any(|m| m.id == before.message_id) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower never applied the send"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let others: Vec<u64> = cluster
        .peers
        .keys()
        .copied()
        .filter(|id| *id != lonely)
        .collect();
    cluster.faults[&lonely].block(others.clone());
    for o in &others {
        cluster.faults[o].block([lonely]);
    }
    // Once the cut-off server has given up on its leader, writes are
    // refused by a server that answers: not "no server reachable".
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = Cluster::status(&cluster.peers[&lonely]).await.unwrap();
        if status.leader_id == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still follows {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = client.send(&ann, "bob", "waits").await;
    assert!(refused.is_err(), "{refused:?}");
    let writes_wait = ConnectionState::NoMajority {
        server: cluster.peers[&lonely].clone(),
    };
    assert_eq!(state(), writes_wait);
    client
        .history(&ann, "bob", None, 10)
        .await
        .expect("reads go on without a majority");
    assert_eq!(state(), writes_wait, "a read is no sign of a majority");
    assert!(!client.probe_writes().await.unwrap());

    cluster.faults[&lonely].heal();
    for o in &others {
        cluster.faults[o].heal();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !client.probe_writes().await.unwrap_or(false) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes still wait after healing: {:?}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        state(),
        ConnectionState::Connected {
            server: cluster.peers[&lonely].clone()
        }
    );
    client
        .send(&ann, "bob", "after")
        .await
        .expect("writes flow again");
}

/// Online means a stream open on any server: a contact on another server
/// hears of it, and of its end; a server that stops takes the presence of
/// its streams with it once its reports stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_servers_and_leaves_with_a_stopped_server() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let (there, here) = {
        let f = cluster.followers(leader);
        (f[0], f[1])
    };
    let mut c = cluster.client(here).await;
    let alice_token = account(&mut c, "alice").await;
    let bob_token = account(&mut c, "bob").await;
    let sent = send(&mut c, &bob_token, "alice", "hi").await;
    let alice = id_of(&mut c, "alice").await;

    let mut bob = Watch::open(&mut c, &bob_token).await;
    assert!(bob.online.is_empty());
    // Alice streams on the other follower: bob hears of it here.
    let mut a = cluster.client(there).await;
    // (On a server that has applied her session and the message.)
    let alice_stream = Watch::open_applied(&mut a, &alice_token, sent.log_position).await;
    bob.until(|w| w.online.contains(&alice)).await;
    drop(alice_stream);
    bob.until(|w| !w.online.contains(&alice)).await;

    // Again, and then her server stops without a word to the others.
    let _alice_stream = Watch::open_applied(&mut a, &alice_token, sent.log_position).await;
    bob.until(|w| w.online.contains(&alice)).await;
    cluster.stop(there).await;
    bob.until(|w| !w.online.contains(&alice)).await;
}
