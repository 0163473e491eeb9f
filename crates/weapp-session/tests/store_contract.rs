//! The store contract (`weapp_session::test_util`) against `MemoryStore`, as
//! a team runs it against a store of its own. The gateway runs the same
//! contract against a real Redis and a real Redis Cluster.

use std::time::Duration;

use weapp_session::test_util::{check_session_store, check_shared_store, check_store};
use weapp_session::{MemoryStore, SharedStore};

fn memory(_case: &str) -> std::future::Ready<MemoryStore> {
    std::future::ready(MemoryStore::new(10_000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_keeps_the_whole_contract() {
    check_store(memory).await.unwrap();
}

/// Each trait's suite runs on its own too: a store that implements only one
/// of them runs that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_traits_suite_runs_alone() {
    check_session_store(memory).await.unwrap();
    check_shared_store(memory).await.unwrap();
}

#[tokio::test]
async fn the_memory_store_stays_bounded() {
    let long = Duration::from_secs(600);
    let capacity = 100;
    let store = MemoryStore::new(capacity);
    let total = 2_000;
    for i in 0..total {
        store.kv_set(&format!("k{i}"), "v", long).await.unwrap();
    }
    let mut live = 0;
    for i in 0..total {
        if store.kv_get(&format!("k{i}")).await.unwrap().is_some() {
            live += 1;
        }
    }
    assert!(
        live <= 2 * capacity,
        "{live} of {total} entries still readable with capacity {capacity}"
    );
}
