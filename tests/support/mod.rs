//! Shared helpers for the integration tests: one `mod support;` per test
//! binary (`tests/<group>/main.rs`). The process supervisors and generic
//! helpers live in `crates/test-support` (the benches use them too); what
//! needs the gateway itself is here.
#![allow(dead_code)]

// Each test binary uses some of them.
#[allow(unused_imports)]
pub use weapp_test_support::{net, nginx, process, redis, redis_cluster, wx};

pub mod app;
pub mod logs;
pub mod mongo;
