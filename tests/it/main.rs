//! blobgc's integration tests: one test crate (each crate is one more link of a large binary),
//! a module per concern. They run the real `blobgc` binary on real Parquet files and stores,
//! and assert which blobs exist afterwards.

mod adr39;
mod azure;
mod azurite;
mod bad_input;
mod cluster;
mod datasets;
mod deploy;
mod end_to_end;
mod fault_proxy;
mod fuzz;
mod incremental;
mod layout;
mod operators;
mod postgres;
mod properties;
mod s3;
mod s3_server;
mod safety;
mod support;
mod sweep;
mod uploads;
