//! The business modules on their data stores: notices and group step PK over
//! real HTTP, each store's contract on memory and MongoDB, and MongoDB
//! outages. One test binary (one link) for all of them; each file below was
//! a test binary of its own.

#[path = "../support/mod.rs"]
mod support;

mod data_outage;
mod mongo_outage;
mod notice_store_contract;
mod notices;
mod pk;
mod pk_store_contract;
