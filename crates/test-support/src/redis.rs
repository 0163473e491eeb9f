//! A real `redis-server` for tests, on a free loopback port.
//!
//! The server is started through a small shell that holds the read end of a
//! pipe from this process: when the test process goes away (normally, by a
//! panic, or killed), the pipe closes and the shell kills the server. So no
//! `redis-server` outlives the tests, even one owned by a static, and the
//! shell removes the server's scratch directory when it is done.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopped server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes a scratch dir, starts redis in the background (arguments: `$@`),
/// prints `pid dir`, waits for stdin to close, stops redis, removes the dir.
const SUPERVISOR: &str = r#"
dir=$(mktemp -d "${TMPDIR:-/tmp}/redis-test.XXXXXX") || exit 1
"$REDIS_SERVER_BIN" "$@" --dir "$dir" >"$dir/redis.log" 2>&1 </dev/null &
pid=$!
echo "$pid $dir"
read _ignored
kill "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

/// A running (or stopped) `redis-server` owned by one test; killed on drop.
pub struct RedisServer {
    port: u16,
    process: Option<Supervised>,
}

struct Supervised {
    shell: Child,
    /// Closing this tells the shell to stop the server.
    stdin: Option<ChildStdin>,
    redis_pid: Option<u32>,
}

impl RedisServer {
    /// Start a server on a free loopback port and wait until it answers PING.
    pub fn start() -> Self {
        let mut last_error = String::new();
        // A port picked by binding port 0 can be taken by someone else before
        // redis binds it; try a few.
        for _ in 0..3 {
            let port = free_port();
            match spawn(port) {
                Ok(process) => return Self { port, process: Some(process) },
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// Start a server on `port` (e.g. one a client was pointed at before) and
    /// wait until it answers PING.
    pub fn start_on(port: u16) -> Self {
        match spawn(port) {
            Ok(process) => Self { port, process: Some(process) },
            Err(e) => panic!("could not start redis-server on port {port}: {e}"),
        }
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Whether the server process is currently started.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Stop the server and wait until it has exited (its port is closed).
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop();
        }
    }

    /// Start the server again on the same port (after [`RedisServer::stop`]).
    /// The data is gone: the server keeps nothing on disk.
    pub fn start_again(&mut self) {
        self.stop();
        match spawn(self.port) {
            Ok(process) => self.process = Some(process),
            Err(e) => panic!("could not restart redis-server on port {}: {e}", self.port),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Supervised {
    fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.shell.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
        // Did not stop in time: kill both (by pid; never a group), hard.
        if let Some(pid) = self.redis_pid.filter(|&p| p > 1) {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
        }
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

fn redis_server_bin() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

fn spawn(port: u16) -> Result<Supervised, String> {
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("sh")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .env("REDIS_SERVER_BIN", redis_server_bin())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let stdin = shell.stdin.take();
    let mut first_line = String::new();
    if let Some(stdout) = shell.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut first_line);
    }
    let (pid, dir) = first_line.trim().split_once(' ').unwrap_or_default();
    let redis_pid = pid.parse::<u32>().ok();
    let process = Supervised { shell, stdin, redis_pid };
    let Some(redis_pid) = redis_pid else {
        process.stop();
        return Err(format!("the supervisor shell printed no pid ({first_line:?})"));
    };

    let deadline = Instant::now() + READY_TIMEOUT;
    while Instant::now() < deadline {
        if answers_ping(port) {
            return Ok(process);
        }
        if !alive(redis_pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Read the log before stopping: the supervisor removes it.
    let log = std::fs::read_to_string(format!("{dir}/redis.log")).unwrap_or_default();
    process.stop();
    Err(format!(
        "redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}; log:\n{log}"
    ))
}

/// Whether a process is still running (Linux: not gone and not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        // No procfs (not Linux): assume alive and rely on the deadline.
        Err(_) => !std::path::Path::new("/proc/self").exists(),
    }
}

/// Whether something on 127.0.0.1:`port` answers a Redis PING.
pub fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A loopback port that was free a moment ago (bind port 0, then release it).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// The Redis every test may share: `REDIS_URL` if set, else one
/// `redis-server` started for this test process.
pub fn shared_redis_url() -> String {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return url;
    }
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    SHARED.get_or_init(RedisServer::start).url()
}

/// A key prefix of this test's own (`test:{test}:{random}:`), so tests sharing
/// one Redis can run in parallel.
pub fn unique_prefix(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    format!("test:{test}:{:016x}:", hasher.finish())
}
