//! The server and its deployment: the binary (CLI, signals), native TLS,
//! the shipped nginx config end to end, slow and greedy clients, and the
//! process-manager files. One test binary (one link) for all of them; each
//! file below was a test binary of its own.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod native_tls;
mod nginx_e2e;
mod process_units;
mod server_limits;
