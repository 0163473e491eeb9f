//! Start a server process that cannot outlive the test process.
//!
//! The server is started by a small shell that holds the read end of a pipe
//! from this process: when the test process goes away (normally, by a panic,
//! or killed), the pipe closes and the shell stops the server, even one owned
//! by a static (statics are never dropped). The shell can also delete a
//! directory once the server has exited, unless told to keep it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `$@` in the background with its output appended to `$1`, prints its
/// pid, waits for stdin to close, stops it (SIGTERM), then deletes `$2` if it
/// is not empty, unless the line read from stdin was `keep`.
const SUPERVISOR: &str = r#"
log=$1; cleanup=$2; shift 2
"$@" >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid"
read command
kill "$pid" 2>/dev/null
wait "$pid"
if [ -n "$cleanup" ] && [ "$command" != keep ]; then rm -rf "$cleanup"; fi
"#;

/// A server process under a supervisor shell; stop it with
/// [`Guarded::stop`] or [`Guarded::kill`] (dropping it just closes the pipe,
/// which makes the shell stop the server in the background).
pub struct Guarded {
    shell: Child,
    /// Closing this tells the shell to stop the server.
    stdin: Option<ChildStdin>,
    pid: u32,
}

/// Start `program args...` under a supervisor shell, its stdout and stderr
/// appended to `log`. When `cleanup` is given, the shell deletes that path
/// after the server has exited (unless stopped with `keep_files`), also
/// when the test process dies.
pub fn spawn_guarded<I, S>(
    program: impl AsRef<OsStr>,
    args: I,
    log: &Path,
    cleanup: Option<&Path>,
) -> Result<Guarded, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("sh")
        .arg(log)
        .arg(cleanup.map_or(OsStr::new(""), |p| p.as_os_str()))
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let stdin = shell.stdin.take();
    let mut pid_line = String::new();
    if let Some(stdout) = shell.stdout.take() {
        let _ = BufReader::new(stdout).read_line(&mut pid_line);
    }
    let pid = pid_line.trim().parse::<u32>().ok();
    let guarded = Guarded { shell, stdin, pid: pid.unwrap_or(0) };
    if pid.is_none() {
        guarded.kill(false);
        return Err(format!("the supervisor shell printed no pid ({pid_line:?})"));
    }
    Ok(guarded)
}

impl Guarded {
    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the server is still running.
    pub fn is_alive(&self) -> bool {
        alive(self.pid)
    }

    /// Stop the server (SIGTERM) and wait until it has exited; SIGKILL it if
    /// it takes longer than `grace`. `keep_files` keeps the `cleanup` path
    /// (e.g. to restart on the same storage).
    pub fn stop(self, grace: Duration, keep_files: bool) {
        self.finish(false, keep_files, grace);
    }

    /// Kill the server (SIGKILL, like a crash) and wait for the shell.
    pub fn kill(self, keep_files: bool) {
        self.finish(true, keep_files, Duration::from_secs(5));
    }

    fn finish(mut self, hard: bool, keep_files: bool, grace: Duration) {
        if hard {
            self.signal_kill();
        }
        if let Some(mut stdin) = self.stdin.take() {
            if keep_files {
                let _ = stdin.write_all(b"keep\n").and_then(|()| stdin.flush());
            }
            // Closing stdin (or the line above) makes the shell stop it.
            drop(stdin);
        }
        let deadline = Instant::now() + grace;
        loop {
            match self.shell.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break,
            }
        }
        // Did not stop in time: kill both, hard.
        self.signal_kill();
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }

    fn signal_kill(&self) {
        if self.pid != 0 && self.is_alive() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Whether a process is still running (Linux: not gone and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => {
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        }
        // No procfs (not Linux): assume alive and rely on deadlines.
        Err(_) => !Path::new("/proc/self").exists(),
    }
}
