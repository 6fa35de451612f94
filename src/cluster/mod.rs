//! The cluster side: the same GC plan on Ballista.
//!
//! `blobgc scheduler` and `blobgc executor` start Ballista's processes with blobgc's functions
//! ([`process`]); `blobgc run --scheduler df://HOST:PORT` plans on a remote session
//! ([`session::remote`]) and every stage runs on the executors: the reference scan with its
//! partial filters, the merge, which writes the filter next to the plan itself (the filter
//! never travels in a plan or to the client, and probes load it by location and checksum once
//! per process), the probe of the listing, the exact verification, and the sweep, where each
//! task deletes its own batches ([`crate::sweep::sweep_on_cluster`]). The client writes the
//! candidates' batches and collects counts.
//!
//! **Executors must reach what the client names:** the store, the tables and the plan
//! directory. A plan in the client's temporary directory is out of their reach, so a cluster
//! run needs `--plan-dir` or `--plan-root` on shared storage (or, on one machine, any local
//! path). The job's S3 options travel with every task ([`crate::registry::JobOptions`]).

pub mod process;
pub mod session;
mod watchdog;

pub use session::remote;
