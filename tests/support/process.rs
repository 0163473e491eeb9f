//! Start a server process that cannot outlive the test process.
//!
//! The server is started by a small shell that holds the read end of a pipe
//! from this process: when the test process goes away (normally, by a panic,
//! or killed), the pipe closes and the shell stops the server, even one owned
//! by a static (statics are never dropped). The shell can also delete a
//! directory once the server has exited (for servers owned by statics).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `$@` in the background with its output appended to `$1`, prints its
/// pid, waits for stdin to close, stops it (SIGTERM), then deletes `$2` if
/// it is not empty.
const SUPERVISOR: &str = r#"
log=$1; cleanup=$2; shift 2
"$@" >>"$log" 2>&1 </dev/null &
pid=$!
echo "$pid"
read _ignored
kill "$pid" 2>/dev/null
wait "$pid"
if [ -n "$cleanup" ]; then rm -rf "$cleanup"; fi
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
/// after the server has exited.
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
        guarded.kill();
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
    /// it takes longer than `grace`.
    pub fn stop(mut self, grace: Duration) {
        drop(self.stdin.take());
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
        self.kill();
    }

    /// Kill the server (SIGKILL, like a crash) and wait for the shell.
    pub fn kill(mut self) {
        if self.pid != 0 {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.pid.to_string())
                .stderr(Stdio::null())
                .status();
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.shell.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.shell.kill();
        let _ = self.shell.wait();
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
