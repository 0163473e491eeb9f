//! Shared helpers for the integration tests: `mod support;` in a test file.
#![allow(dead_code)]

pub mod app;
pub mod logs;
pub mod mongo;
pub mod net;
pub mod nginx;
pub mod process;
pub mod redis;
pub mod redis_cluster;
pub mod wx;
