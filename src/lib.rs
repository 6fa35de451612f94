//! blobgc: a garbage collector for deduplicated (content-addressed) blob stores.
//!
//! Identical content is stored once, so deleting a message cannot delete its blobs. blobgc
//! finds the blobs nothing references any more (ADR 49 of Apache James):
//!
//! 1. [`references`]: every entity referencing blobs is a Parquet table of ids;
//! 2. [`filter`] + [`functions`]: a salted Bloom filter of the references, built as partial
//!    filters per partition and OR-merged (in-process, from the references' fingerprints, which
//!    one pass writes to a local [`spill`]);
//! 3. [`plan`]: the [`listing`] of the store is probed; ids that are eligible under the
//!    [`generation`] rule ([`blob_id`]) and not in the filter become deletion batches in a
//!    [`plan_dir`];
//! 4. [`sweep`]: the batches are deleted from the [`store`], resumably.
//!
//! The [`report`] tells what happened; [`job`] and [`cli`] are the outside interface; the
//! [`cluster`] runs the same plan on Ballista; [`allocator`] tunes the memory allocator of
//! its binaries.

pub mod allocator;
pub mod blob_id;
pub mod breakers;
pub mod cli;
pub mod cluster;
pub mod error;
pub mod filter;
mod frame;
pub mod functions;
pub mod generation;
mod guards;
pub mod incremental;
pub mod job;
pub mod lease;
pub mod listing;
pub mod options;
pub mod plan;
pub mod plan_dir;
pub mod plan_root;
pub mod progress;
pub mod quarantine;
pub mod references;
pub mod registry;
pub mod report;
pub mod session;
pub mod spill;
pub mod store;
pub mod summary;
pub mod sweep;
mod table_plan;
pub mod uploads;
pub mod verify;
