//! The MongoDB-wire server of `weapp_test_support::mongo`, plus what needs the
//! gateway's own config types: a `[mongodb]` config and a connected database
//! of a test's own.

use std::time::Duration;

use weapp_gateway::mongo::{MongoConfig, WriteConcernSetting};
pub use weapp_test_support::mongo::*;

/// A `[mongodb]` config for `uri` and a database of `test`'s own, with the
/// default write concern (`majority`) and the given op timeout.
pub fn config(uri: String, test: &str, op_timeout: Duration) -> MongoConfig {
    MongoConfig {
        uri,
        database: unique_db(test),
        connect_timeout: Duration::from_secs(2),
        op_timeout,
        write_concern: WriteConcernSetting::Majority,
    }
}

/// A database of `test`'s own on the shared server ([`mongo_uri`]).
pub async fn test_db(test: &str) -> mongodb::Database {
    let cfg = config(mongo_uri(), test, Duration::from_secs(5));
    weapp_gateway::mongo::connect(&cfg).await.expect("build a MongoDB client")
}
