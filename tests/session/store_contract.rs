//! The store contract (`weapp_session::test_util`, the cases a team's own
//! store runs too) on a real Redis and a real three-master Redis Cluster;
//! the session crate's own tests run it on `MemoryStore`. Every case gets a
//! key prefix of its own.

use std::time::Duration;

use weapp_session::store::{RedisClusterConfig, RedisStore, RedisStoreConfig};
use weapp_session::test_util::check_store;

use crate::support::redis::{shared_redis_url, unique_prefix};
use crate::support::redis_cluster::shared_cluster_nodes;

const OP_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_the_store_contract() {
    let url = shared_redis_url();
    check_store(|case| {
        let cfg = RedisStoreConfig::new(&url)
            .with_prefix(unique_prefix(case))
            .with_op_timeout(OP_TIMEOUT);
        async move { RedisStore::new(cfg).unwrap() }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_the_store_contract() {
    let nodes = shared_cluster_nodes();
    check_store(|case| {
        let cfg = RedisClusterConfig::new(&nodes)
            .with_prefix(unique_prefix(case))
            .with_op_timeout(OP_TIMEOUT);
        async move { RedisStore::new_cluster(cfg).unwrap() }
    })
    .await
    .unwrap();
}
