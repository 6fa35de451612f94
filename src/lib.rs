//! blobgc: a garbage collector for deduplicated (content-addressed) blob stores.
//!
//! Identical content is stored once, so deleting a message cannot delete its blobs. blobgc
//! finds the blobs nothing references any more (ADR 49 of Apache James):
//!
//! 1. [`references`]: every entity referencing blobs is a Parquet table of ids;
//! 2. [`filter`]: a salted Bloom filter of the references, built as partial filters per
//!    partition and OR-merged;
//! 3. [`plan()`]: the [`listing`] of the store is probed; ids that are eligible under the
//!    [`generation`] rule ([`blob_id`]) and not in the filter become deletion batches in a
//!    [`PlanDir`], with a [`PlanSummary`];
//! 4. [`sweep()`]: the batches are deleted from the store, resumably.
//!
//! [`run()`] does all of it as `blobgc run` does (its module has an example on a `memory://`
//! store); the [`Report`] tells what happened. A [`Job`] is made in code, or from flags and a
//! job file ([`JobArgs`]); [`Progress`] is a callback for long work. The same plan runs on a
//! Ballista cluster with [`Job::scheduler`] (the `blobgc scheduler` and `blobgc executor`
//! processes of [`cli`]). [`incremental`] (ADR 39) and [`uploads`] (JMAP upload expiry) are the
//! other modes.

pub mod allocator;
pub mod blob_id;
pub mod breakers;
pub mod cli;
pub(crate) mod cluster;
pub mod error;
pub mod explain;
pub mod export;
pub mod filter;
mod frame;
pub(crate) mod functions;
pub mod generation;
mod guards;
pub mod html;
pub mod incremental;
pub mod job;
pub(crate) mod lease;
pub mod listing;
pub mod metrics;
pub mod options;
pub mod outcome;
pub mod plan;
pub mod plan_dir;
pub(crate) mod plan_root;
pub mod postgres;
pub mod progress;
pub(crate) mod quarantine;
pub mod references;
pub(crate) mod registry;
pub mod report;
pub mod run;
pub mod session;
pub mod show;
pub mod spill;
pub mod store;
pub mod summary;
pub mod sweep;
mod table_plan;
pub mod uploads;
pub(crate) mod verify;

pub use error::{Error, Result};
pub use job::{Job, JobArgs, Strategy, Verify};
pub use plan::plan;
pub use plan_dir::PlanDir;
pub use progress::Progress;
pub use references::SourceSpec;
pub use report::Report;
pub use run::run;
pub use store::{Location, S3Options};
pub use summary::{PlanStatus, PlanSummary};
pub use sweep::{SweepMetrics, SweepOptions, sweep};
