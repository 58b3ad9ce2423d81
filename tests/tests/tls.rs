//! TLS: a three-server cluster whose client API and Raft traffic both run
//! over TLS, used by chat-client with the cluster's CA; plain connections
//! are refused.

mod common;

use std::collections::BTreeMap;

use chat_client::{Client, ClientConfig};
use chat_server::Tls;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A CA and one certificate for 127.0.0.1 signed by it, as PEM.
fn certificates() -> Tls {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Tls {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
        ca_pem: ca.pem().into_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_runs_entirely_over_tls() {
    let tls = certificates();
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, l.local_addr().unwrap().to_string());
        listeners.push((id, l));
    }
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for (id, listener) in listeners {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.node_id = id;
        cfg.peers = peers.clone();
        cfg.cluster_secret = Some("tls-test-cluster-secret-0123".into());
        cfg.tls = Some(tls.clone());
        dirs.push(dir);
        servers.push(tokio::spawn(TestServer::start_on(cfg, listener)));
    }
    let mut running = Vec::new();
    for s in servers {
        running.push(s.await.unwrap());
    }

    // chat-client with the CA works against any server (writes on followers
    // are forwarded to the leader over TLS too).
    let addrs: Vec<String> = peers.values().cloned().collect();
    let client = Client::connect(ClientConfig {
        servers: addrs.clone(),
        tls_ca: Some(tls.ca_pem.clone()),
        ..ClientConfig::default()
    })
    .await
    .unwrap();
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    // The cluster elects its leader over TLS; the first writes may wait for it.
    while client.create_account("ann", "ann-password").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the TLS cluster never elected a leader"
        );
    }
    client.create_account("bob", "bob-password").await.unwrap();
    let ann = client.login("ann", "ann-password").await.unwrap();
    for addr in &addrs {
        let one = Client::connect(ClientConfig {
            servers: vec![addr.clone()],
            tls_ca: Some(tls.ca_pem.clone()),
            ..ClientConfig::default()
        })
        .await
        .unwrap();
        let s = one.login("ann", "ann-password").await.unwrap();
        one.send(&s.token, "bob", &format!("via {addr}"))
            .await
            .unwrap();
        sent += 1;
    }
    let bob = client.login("bob", "bob-password").await.unwrap();
    let page = client.history(&bob.token, "ann", None, 100).await.unwrap();
    assert_eq!(page.messages.len(), sent);
    assert!(ann.account_id > 0);

    // A plain-text client gets nowhere.
    let plain = Client::connect(ClientConfig {
        servers: vec![addrs[0].clone()],
        failover_attempts: 1,
        ..ClientConfig::default()
    })
    .await;
    if let Ok(c) = plain {
        assert!(c.list_accounts("*", None, 10).await.is_err());
    }
    drop(running);
}
