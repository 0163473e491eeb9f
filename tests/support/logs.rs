//! Capture what a test binary logs.
//!
//! A process has one global subscriber, and the tests of one binary run in
//! parallel threads of one process. So the first caller of [`capture_logs`]
//! installs it (every level, every target) and every later caller shares it:
//! a test reading the logs also sees what the other tests of its binary
//! logged. A test that counts lines takes a [`Captured::mark`] first and
//! reads [`Captured::since`] it. (A per-test `set_default` subscriber is no
//! way out: it misses events whose callsites other tests' threads register
//! concurrently, because tracing caches interest globally.)

use std::sync::{Arc, Mutex, OnceLock};

/// Every formatted log line of this test binary since the first
/// [`capture_logs`], as written.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything logged so far (by every test of this binary).
    pub fn text(&self) -> String {
        self.since(0)
    }

    /// Where the log ends now: pass it to [`Captured::since`].
    pub fn mark(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Everything logged after `mark` (by every test of this binary).
    pub fn since(&self, mark: usize) -> String {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(bytes.get(mark..).unwrap_or_default()).into_owned()
    }
}

/// Send every line of this process, all levels and targets, to the shared
/// [`Captured`] buffer (no colours); installed once, by the first caller.
pub fn capture_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        captured
    })
}
