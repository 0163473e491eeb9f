//! A real Redis Cluster for tests: three masters (`redis-server
//! --cluster-enabled yes`) on free loopback ports, joined with
//! `redis-cli --cluster create`.
//!
//! Every node runs under [`crate::process::spawn_guarded`], so none outlives
//! the test process (not even the shared cluster a static owns), and each
//! node's scratch directory is deleted when it stops. Tests share one cluster
//! per test process ([`shared_cluster_nodes`]) and keep apart by key prefix
//! ([`crate::redis::unique_prefix`]).

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::process::{Guarded, spawn_guarded};
use crate::redis::answers_ping;

/// Masters in a test cluster.
pub const MASTERS: usize = 3;
/// A node's cluster bus listens on its port plus this.
const BUS_PORT_OFFSET: u16 = 10_000;
/// How long a node may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `redis-cli --cluster create` plus agreement on the slots may take.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped node may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

fn redis_cli_bin() -> String {
    std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// One node: its port, scratch directory (holds `nodes-<port>.conf` and
/// `redis.log`) and process.
struct Node {
    port: u16,
    dir: PathBuf,
    process: Option<Guarded>,
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop(STOP_GRACE, false);
        }
    }
}

/// A running three-master Redis Cluster on 127.0.0.1; stopped on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Start a cluster on free ports and wait until it serves every slot.
    pub fn start() -> Self {
        let mut last_error = String::new();
        // A port picked by binding port 0 can be taken by someone else before
        // redis binds it; try a few times.
        for _ in 0..3 {
            match Self::try_start_on(&free_cluster_ports(MASTERS)) {
                Ok(cluster) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start a redis cluster: {last_error}");
    }

    /// Start a cluster on these ports (e.g. ones a client was pointed at
    /// before); their ports plus 10000 must be free too (the cluster bus).
    pub fn start_on(ports: &[u16]) -> Self {
        Self::try_start_on(ports).unwrap_or_else(|e| panic!("could not start a redis cluster: {e}"))
    }

    fn try_start_on(ports: &[u16]) -> Result<Self, String> {
        let mut cluster = Self { nodes: Vec::new() };
        for &port in ports {
            cluster.nodes.push(start_node(port)?);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for node in &cluster.nodes {
            while !answers_ping(node.port) {
                if Instant::now() > deadline
                    || !node.process.as_ref().is_some_and(Guarded::is_alive)
                {
                    return Err(format!(
                        "node {} did not answer PING within {READY_TIMEOUT:?}; log:\n{}",
                        node.port,
                        node.log()
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster.form()?;
        cluster.wait_healthy()?;
        Ok(cluster)
    }

    /// Stop node `i` (SIGTERM), keeping its cluster config for [`Self::restart_node`].
    pub fn stop_node(&mut self, i: usize) {
        if let Some(process) = self.nodes[i].process.take() {
            process.stop(STOP_GRACE, true);
        }
    }

    /// Start node `i` again on its port with its old cluster config, and wait
    /// until the cluster is healthy again. The node's data is gone.
    pub fn restart_node(&mut self, i: usize) {
        self.stop_node(i);
        let node = &mut self.nodes[i];
        let process = spawn_node(node.port, &node.dir)
            .unwrap_or_else(|e| panic!("could not restart node {}: {e}", node.port));
        node.process = Some(process);
        if let Err(e) = self.wait_healthy() {
            panic!("cluster not healthy after restarting node {i}: {e}");
        }
    }

    /// Assign the slots to the nodes.
    fn form(&self) -> Result<(), String> {
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
        let out = run_cli(&args, FORM_TIMEOUT)?;
        if !out.contains("[OK] All 16384 slots covered") {
            return Err(format!("redis-cli --cluster create said:\n{out}"));
        }
        Ok(())
    }

    /// Wait until every node reports a healthy cluster of all nodes.
    fn wait_healthy(&self) -> Result<(), String> {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let mut pending = None;
            for node in &self.nodes {
                let info = run_cli(
                    &["-p".to_owned(), node.port.to_string(), "cluster".into(), "info".into()],
                    Duration::from_secs(5),
                )
                .unwrap_or_default();
                let ok = info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()));
                if !ok {
                    pending = Some((node.port, info));
                    break;
                }
            }
            let Some((port, info)) = pending else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(format!("node {port} never reported a healthy cluster:\n{info}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes' ports (127.0.0.1).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:{port}/` for every node.
    pub fn node_urls(&self) -> Vec<String> {
        self.ports().into_iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect()
    }

    /// Stop every node and wait until they have exited.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.stop();
        // A node stopped with its files kept (and not restarted, e.g. after a
        // failed assertion) has no supervisor left to delete its directory.
        for node in &self.nodes {
            let _ = std::fs::remove_dir_all(&node.dir);
        }
    }
}

fn start_node(port: u16) -> Result<Node, String> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("redis-cluster-{port}-"))
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        // From now on the supervisor shell deletes it.
        .keep();
    let process = spawn_node(port, &dir)?;
    Ok(Node { port, dir, process: Some(process) })
}

/// Run `redis-server` for `port` in `dir` (which keeps its cluster config).
fn spawn_node(port: u16, dir: &std::path::Path) -> Result<Guarded, String> {
    let config_file = dir.join(format!("nodes-{port}.conf"));
    let args: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--cluster-enabled".into(),
        "yes".into(),
        "--cluster-config-file".into(),
        config_file.display().to_string(),
        "--cluster-node-timeout".into(),
        "2000".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    let log = dir.join("redis.log");
    spawn_guarded(redis_server_bin(), &args, &log, Some(dir))
}

/// Run `redis-cli args...` and return its stdout; kill it after `timeout`.
fn run_cli(args: &[String], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(redis_cli_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run redis-cli: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-cli {args:?} did not finish within {timeout:?}"));
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("redis-cli output: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("redis-cli {args:?} failed: {text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// `n` distinct loopback ports that were free a moment ago, each below 55535
/// with its cluster bus port (+10000) free as well.
pub fn free_cluster_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all ports are picked, so none repeats.
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..10_000 {
        if ports.len() == n {
            break;
        }
        let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else { continue };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else { continue };
        held.push(listener);
        if port >= u16::MAX - BUS_PORT_OFFSET || ports.contains(&(port + BUS_PORT_OFFSET)) {
            continue;
        }
        let Ok(bus) = TcpListener::bind((Ipv4Addr::LOCALHOST, port + BUS_PORT_OFFSET)) else {
            continue;
        };
        held.push(bus);
        ports.push(port);
    }
    assert_eq!(ports.len(), n, "could not find {n} free cluster ports");
    ports
}

/// The cluster every test may share: `REDIS_CLUSTER_NODES` (comma-separated
/// `redis://` URLs) if set, else one cluster started for this test process.
pub fn shared_cluster_nodes() -> Vec<String> {
    if let Ok(nodes) = std::env::var("REDIS_CLUSTER_NODES") {
        return nodes.split(',').map(str::trim).filter(|n| !n.is_empty()).map(Into::into).collect();
    }
    static SHARED: OnceLock<RedisCluster> = OnceLock::new();
    SHARED.get_or_init(RedisCluster::start).node_urls()
}

/// A plain (non-cluster) connection to one node, for inspecting it.
pub async fn node_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("node url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to a cluster node")
}

/// `CLUSTER KEYSLOT key`, as the cluster at `url` computes it.
pub async fn key_slot(url: &str, key: &str) -> u16 {
    let mut conn = node_connection(url).await;
    redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut conn).await.expect("KEYSLOT")
}

/// `redis://ip:port/` of every master of the cluster `seed` belongs to.
pub async fn masters(seed: &str) -> Vec<String> {
    let mut conn = node_connection(seed).await;
    let nodes: String =
        redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await.expect("CLUSTER NODES");
    // `<id> <ip:port@bus> <flags> ...`, one node a line.
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1)?.split('@').next()?;
            let flags = fields.next()?;
            flags.split(',').any(|f| f == "master").then(|| format!("redis://{addr}/"))
        })
        .collect()
}

/// Every key matching `pattern` on each master of the cluster `seed`
/// belongs to, by master URL (`KEYS` on a node lists only its own slots').
pub async fn keys_by_node(seed: &str, pattern: &str) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for url in masters(seed).await {
        let mut conn = node_connection(&url).await;
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.expect("KEYS");
        all.push((url, keys));
    }
    all
}
