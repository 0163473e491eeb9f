//! The session layer in the gateway: both dialects over real HTTP, the L1,
//! the store contract on every backend, Redis and Redis Cluster outages,
//! trusted proxies, and no secret in the logs. One test binary (one link)
//! for all of them; each file below was a test binary of its own.

#[path = "../support/mod.rs"]
mod support;

mod no_secrets_in_logs;
mod redis_cluster;
mod redis_outage;
mod session_compat;
mod session_l1;
mod session_outage;
mod session_token;
mod store_contract;
mod trusted_proxy;
mod unavailable;
