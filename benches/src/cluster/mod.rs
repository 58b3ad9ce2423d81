//! A cluster of real `chat-server` processes on loopback, started the way
//! the README starts one: a static membership (`--peers`), a data directory
//! and a port per server, one shared secret. Members are SIGKILLed and
//! started again over their own directory with the same flags; every
//! process is killed when the [`Cluster`] drops, whatever happened.
//!
//! [`load`] holds the workloads that only a cluster needs: senders that
//! move to the next server when one fails, and the watch that times a
//! failover.

pub mod load;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_proto::cluster_client::ClusterClient;
use chat_proto::{Role, StatusRequest, StatusResponse};
use tonic::transport::{Channel, Endpoint};

use crate::server::process::ServerProcess;

/// The file, in the cluster's directory, that holds the shared secret.
pub const SECRET_FILE: &str = "cluster.secret";

/// The secret every member is given (any 16 characters or more will do).
const SECRET: &str = "chat-benches-cluster-secret-0123456789";

/// How long one `Cluster.Status` call may take before the member counts
/// as not answering.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Between two rounds of `Cluster.Status` calls while waiting for a state.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// One member: what it is started with, and its process while it runs.
#[derive(Debug)]
pub struct Member {
    pub id: u64,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// `None` while it is down (killed and not restarted yet).
    process: Option<ServerProcess>,
    /// What its earlier, killed processes wrote to standard error.
    earlier_stderr: Vec<String>,
    /// Connected lazily, so it outlives the process's restarts and never
    /// fails to build while the member is down.
    status_client: ClusterClient<Channel>,
}

impl Member {
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// From spawning its current process to its `listening on` line.
    pub fn ready_after(&self) -> Option<Duration> {
        self.process.as_ref().map(|p| p.ready_after)
    }

    /// Its `Cluster.Status`, or `None` if it does not answer in time.
    pub async fn status(&self) -> Option<StatusResponse> {
        let mut client = self.status_client.clone();
        let call = client.status(StatusRequest {});
        match tokio::time::timeout(STATUS_TIMEOUT, call).await {
            Ok(Ok(reply)) => Some(reply.into_inner()),
            Ok(Err(_)) | Err(_) => None,
        }
    }
}

/// A running cluster of `chat-server` processes.
#[derive(Debug)]
pub struct Cluster {
    binary: PathBuf,
    /// `1=ADDR,2=ADDR,...`, the same on every member.
    peers: String,
    secret_file: PathBuf,
    /// `RUST_LOG` of every member.
    log_filter: String,
    start_timeout: Duration,
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts `size` members of `binary` with their data in `dir/node<ID>`,
    /// each on a free loopback port and with `RUST_LOG=log_filter`, and
    /// waits for them to agree on a leader. Blocks while each member starts.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        size: usize,
        log_filter: &str,
        start_timeout: Duration,
    ) -> anyhow::Result<Cluster> {
        let secret_file = dir.join(SECRET_FILE);
        std::fs::write(&secret_file, SECRET).context("cannot write the cluster secret")?;
        let addrs = free_addrs(size)?;
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(size);
        for (i, addr) in addrs.into_iter().enumerate() {
            let channel = Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(STATUS_TIMEOUT)
                .tcp_nodelay(true)
                .connect_lazy();
            members.push(Member {
                id: i as u64 + 1,
                addr,
                dir: dir.join(format!("node{}", i + 1)),
                process: None,
                earlier_stderr: Vec::new(),
                status_client: ClusterClient::new(channel),
            });
        }
        let mut cluster = Cluster {
            binary: binary.to_owned(),
            peers,
            secret_file,
            log_filter: log_filter.to_owned(),
            start_timeout,
            members,
        };
        for id in cluster.ids() {
            cluster.start_member(id)?;
        }
        cluster.leader(start_timeout).await?;
        Ok(cluster)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.addr).collect()
    }

    pub fn member(&self, id: u64) -> anyhow::Result<&Member> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .with_context(|| format!("there is no member {id}"))
    }

    fn member_mut(&mut self, id: u64) -> anyhow::Result<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .with_context(|| format!("there is no member {id}"))
    }

    /// The flags member `id` runs with, the same at every start.
    fn args(&self, member: &Member) -> Vec<String> {
        vec![
            "--id".to_owned(),
            member.id.to_string(),
            "--listen".to_owned(),
            member.addr.to_string(),
            "--peers".to_owned(),
            self.peers.clone(),
            "--cluster-secret-file".to_owned(),
            self.secret_file.display().to_string(),
        ]
    }

    /// Starts member `id` (again) over its data directory. Blocks until it
    /// listens: call it from `tokio::task::block_in_place` inside a runtime.
    pub fn start_member(&mut self, id: u64) -> anyhow::Result<Duration> {
        let member = self.member(id)?;
        if member.is_running() {
            bail!("member {id} is already running");
        }
        let args = self.args(member);
        let dir = member.dir.clone();
        let process = ServerProcess::start_with(
            &self.binary,
            &dir,
            &args,
            &self.log_filter,
            self.start_timeout,
        )
        .with_context(|| format!("member {id} did not start"))?;
        let member = self.member_mut(id)?;
        if process.addr != member.addr {
            bail!(
                "member {id} listens on {}, not on {} as its peers expect",
                process.addr,
                member.addr
            );
        }
        let ready = process.ready_after;
        member.process = Some(process);
        Ok(ready)
    }

    /// SIGKILLs member `id`; returns the instant the signal was sent.
    pub fn kill(&mut self, id: u64) -> anyhow::Result<Instant> {
        let member = self.member_mut(id)?;
        let mut process = member
            .process
            .take()
            .with_context(|| format!("member {id} is not running"))?;
        let killed_at = process.kill()?;
        member.earlier_stderr.extend(process.stderr_lines());
        Ok(killed_at)
    }

    /// Writes what every member's processes wrote to standard error so far
    /// to `dir/node<ID>.stderr`, one file per member, processes in order (a
    /// killed process's last lines may be missing: its pipe is read while
    /// it dies).
    pub fn save_stderr(&self, dir: &Path) -> anyhow::Result<()> {
        for member in &self.members {
            let mut lines = member.earlier_stderr.clone();
            if let Some(process) = &member.process {
                lines.extend(process.stderr_lines());
            }
            let path = dir.join(format!("node{}.stderr", member.id));
            std::fs::write(&path, lines.join("\n") + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// The leader that every running member names, once that leader also
    /// says it leads. Waits up to `timeout`.
    pub async fn leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for member in self.members.iter().filter(|m| m.is_running()) {
                seen.push((member.id, member.status().await));
            }
            let named: Vec<u64> = seen
                .iter()
                .map(|(_, s)| s.as_ref().map_or(0, |s| s.leader_id))
                .collect();
            let leader = named.first().copied().unwrap_or(0);
            let leads = seen.iter().any(|(id, s)| {
                *id == leader && s.as_ref().is_some_and(|s| s.role == Role::Leader as i32)
            });
            if leader != 0 && named.iter().all(|l| *l == leader) && leads {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the running members did not agree on a leader within {timeout:?} \
                     (each names: {seen_leaders:?})",
                    seen_leaders = seen
                        .iter()
                        .zip(&named)
                        .map(|((id, _), l)| (*id, *l))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until member `id` knows the leader, the leader counts it as a
    /// voter, and it has applied everything the leader had committed when
    /// this was called. Returns that commit index.
    pub async fn wait_caught_up(&self, id: u64, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        let leader = self.leader(timeout).await?;
        let target = self
            .member(leader)?
            .status()
            .await
            .context("the leader does not answer Cluster.Status")?
            .committed_index;
        let member = self.member(id)?;
        loop {
            let leader_status = self.member(leader)?.status().await;
            let voter = leader_status
                .as_ref()
                .is_some_and(|s| s.members.iter().any(|m| m.node_id == id && m.voter));
            let applied = member.status().await.map(|s| s.applied_index);
            if voter && applied.is_some_and(|a| a >= target) {
                return Ok(target);
            }
            if Instant::now() >= deadline {
                bail!(
                    "member {id} did not catch up within {timeout:?}: applied {applied:?} of \
                     {target}, a voter for the leader: {voter}"
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until every running member has applied what the leader had
    /// committed when this was called, so that a session opened through
    /// one member is known on all.
    pub async fn wait_all_applied(&self, timeout: Duration) -> anyhow::Result<()> {
        let running: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.id)
            .collect();
        for id in running {
            self.wait_caught_up(id, timeout).await?;
        }
        Ok(())
    }

    /// Stops every running member with SIGTERM; returns how long each took.
    /// Blocks: call it from `tokio::task::block_in_place` inside a runtime.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<Vec<(u64, Duration)>> {
        let mut took = Vec::new();
        let mut failed = Vec::new();
        for member in &mut self.members {
            if let Some(process) = member.process.take() {
                match process.stop(timeout) {
                    Ok(t) => took.push((member.id, t)),
                    Err(e) => failed.push(format!("member {}: {e:#}", member.id)),
                }
            }
        }
        if !failed.is_empty() {
            bail!("not every member stopped cleanly:\n{}", failed.join("\n"));
        }
        Ok(took)
    }
}

/// `n` distinct free ports on loopback: all bound at once, then released,
/// so that the members' addresses can be listed before they start.
fn free_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find free ports on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| l.local_addr().context("cannot read a port"))
        .collect()
}
