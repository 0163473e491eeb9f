//! A real MongoDB-wire-protocol server for tests: SecantusDB (see
//! `/work/shared/MONGO.md`), or whatever `MONGODB_URI` points at.
//!
//! Servers run under [`crate::process::spawn_guarded`], so none outlives the
//! test process. Each test gets its own database ([`unique_db`]).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::process::{Guarded, spawn_guarded};

/// How long a server may take to print its listening line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped server may take to exit before it is killed (SIGTERM
/// takes SecantusDB about 3 s).
const STOP_GRACE: Duration = Duration::from_secs(10);
/// What the server logs once it accepts connections.
const LISTENING: &str = "listening on 127.0.0.1:";

/// The Python that has SecantusDB installed: `SECANTUS_PYTHON`, else
/// `$SECANTUS_VENV/bin/python` (what tests/run.sh exports), else the venv
/// tests/run.sh installs by default.
fn python() -> PathBuf {
    python_from(|name| std::env::var_os(name))
}

/// [`python`] over `var` (an empty value counts as unset).
fn python_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(python) = var("SECANTUS_PYTHON") {
        return python.into();
    }
    if let Some(venv) = var("SECANTUS_VENV") {
        return Path::new(&venv).join("bin/python");
    }
    let home = var("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/secantusdb-0.7.0b3/bin/python")
}

/// Which Python [`python`] picks for these variables (for tests of the support code).
pub fn python_for(vars: &[(&str, &str)]) -> PathBuf {
    python_from(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).into()))
}

/// A SecantusDB server on 127.0.0.1 with its own directory (`empty.toml`,
/// `data/`, `secantus.log`). Dropping it kills the server; the supervisor
/// shell then deletes the directory (also when the test process dies).
pub struct MongoServer {
    port: u16,
    root: PathBuf,
    process: Option<Guarded>,
}

impl MongoServer {
    /// Start a server on a port the OS picks and wait until it listens.
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// Start a server on `port` (e.g. one a client was pointed at before).
    pub fn start_on(port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("secantus-test-")
            .tempdir()
            .expect("create a temp dir for SecantusDB");
        std::fs::write(dir.path().join("empty.toml"), "")
            .expect("write an empty SecantusDB config");
        // From now on the supervisor shell deletes it.
        let root = dir.keep();
        let mut server = Self { port, root, process: None };
        server.spawn(port);
        server
    }

    fn spawn(&mut self, port: u16) {
        let log = self.root.join("secantus.log");
        let seen = std::fs::metadata(&log).map_or(0, |m| m.len());
        let root = &self.root;
        let args = [
            "-m".into(),
            "secantus".into(),
            "--config".into(),
            root.join("empty.toml").into_os_string(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string().into(),
            "--storage-path".into(),
            root.join("data").into_os_string(),
            "--cache-size".into(),
            "256M".into(),
        ];
        let process = spawn_guarded(python(), args, &log, Some(root))
            .unwrap_or_else(|e| panic!("could not start SecantusDB: {e}"));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(listening) = listening_port(&log, seen) {
                self.port = listening;
                self.process = Some(process);
                return;
            }
            if !process.is_alive() || Instant::now() >= deadline {
                process.kill(true);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "SecantusDB (port {port}) did not listen within {READY_TIMEOUT:?}; log:\n{text}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mongodb://127.0.0.1:{port}/?directConnection=true`.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Whether the server process is currently started.
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Stop the server gracefully (its data kept) and wait until its port
    /// is closed.
    pub fn stop(&mut self) {
        if let Some(process) = self.process.take() {
            process.stop(STOP_GRACE, true);
        }
        self.wait_port_closed();
    }

    /// Kill the server (SIGKILL, like a crash; what it had not flushed is
    /// lost) and wait until its port is closed.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill(true);
        }
        self.wait_port_closed();
    }

    /// Start the server again on the same port and storage (after
    /// [`MongoServer::stop`] or [`MongoServer::kill`]): the data survives.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn(self.port);
    }

    fn wait_port_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while accepts(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        // The storage is deleted right after: no need for a clean shutdown.
        match self.process.take() {
            Some(process) => process.kill(false),
            None => {
                let _ = std::fs::remove_dir_all(&self.root);
            }
        }
    }
}

/// The port of the first `listening on 127.0.0.1:PORT` line after byte `from`.
fn listening_port(log: &Path, from: u64) -> Option<u16> {
    let text = std::fs::read(log).ok()?;
    let text = String::from_utf8_lossy(text.get(usize::try_from(from).ok()?..)?);
    let (_, rest) = text.split_once(LISTENING)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    // The line may still be half written: wait for what follows the port.
    if digits.len() == rest.len() {
        return None;
    }
    digits.parse().ok().filter(|&p| p != 0)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// The MongoDB every test may share: `MONGODB_URI` if set, else one
/// SecantusDB started for this test process.
pub fn mongo_uri() -> String {
    if let Ok(uri) = std::env::var("MONGODB_URI") {
        return uri;
    }
    static SHARED: OnceLock<MongoServer> = OnceLock::new();
    SHARED.get_or_init(MongoServer::start).uri()
}

/// A database name of this test's own (`t_{test}_{random}`, at most 63
/// bytes), so tests sharing one server can run in parallel.
pub fn unique_db(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let name: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).take(40).collect();
    format!("t_{name}_{:016x}", hasher.finish())
}
