//! What the gateway's integration tests (`tests/*/main.rs`, through
//! `tests/support`) and its benches (`benches/common`) share: supervisors
//! for the real servers they run against (`redis-server`, a three-master
//! Redis Cluster, the MongoDB-wire server SecantusDB, nginx with the shipped
//! config), free loopback ports, raw-socket helpers, and the mini-program
//! client's rawData signing.
//!
//! Every server runs under [`process::spawn_guarded`], a supervisor shell
//! that stops it when the test process goes away, so none outlives the tests.
//! Not published: a dev-dependency of the gateway package only, never of the
//! library crates.
#![forbid(unsafe_code)]

pub mod mongo;
pub mod net;
pub mod nginx;
pub mod process;
pub mod redis;
pub mod redis_cluster;
pub mod wx;

use std::path::{Path, PathBuf};

/// The repository root (where `nginx/`, `process/` and `config/` live).
pub fn repo_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().and_then(Path::parent).unwrap_or(crate_dir).to_path_buf()
}
