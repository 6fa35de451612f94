//! A GC job (`run`, `plan`): [`JobArgs`], read from flags and from the TOML job file (`--job`)
//! and merged by [`crate::options`] (the flag wins), resolves to a checked [`Job`].
//!
//! Every job-file key has a flag of the same name (`batch_size` <-> `--batch-size`); reference
//! sources are `[[references]]` tables in the file and `--refs NAME=URL[#col1,col2]` flags
//! (given flags replace the file's list), with `--allow-empty NAME` for sources that may be empty.

use crate::error::{Error, Result};
use crate::generation::{DEFAULT_DURATION_SECONDS, DEFAULT_FAMILY};
use crate::options;
use crate::references::SourceSpec;
use crate::store::S3Options;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

mod args;

pub use args::JobArgs;

/// Whether candidates are checked exactly against every reference before anything is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Exact when there are at most `verify_limit` candidates.
    #[default]
    Auto,
    Exact,
    Off,
}

/// How candidates are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// A salted Bloom filter of the references probed by the listing (ADR 49): lean.
    #[default]
    Bloom,
    /// An exact hash join of the listing with every reference: no false positive, but the
    /// listing is held in memory.
    Exact,
}

/// The default `verify_limit`: the candidates are the build side of a hash join, held in memory.
pub const DEFAULT_VERIFY_LIMIT: u64 = 10_000_000;

/// The default `max_clock_skew`: beyond it, "old" generations may be the current one.
pub const DEFAULT_MAX_CLOCK_SKEW_SECONDS: u64 = 15 * 60;

/// The default `lease_ttl`: a run renews its lease every third of it, so a killed run frees the
/// store within this long.
pub const DEFAULT_LEASE_TTL_SECONDS: u64 = 10 * 60;

/// The most shards a filter is split into: 64 Ki shards of a few MB hold 10^11 ids at 10^-6.
pub const MAX_SHARDS: u32 = 1 << 16;

/// The inputs and parameters of one GC run, checked.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique per run: names its plan under a plan root, its batches and its lease.
    pub run_id: String,
    pub store: String,
    pub references: Vec<SourceSpec>,
    pub inventory: Option<String>,
    /// The clock of the run: fixed by `--now` for tests and replays.
    pub now: DateTime<Utc>,
    pub generation_duration_seconds: u64,
    pub family: u32,
    pub fpp: f64,
    pub max_fpp: f64,
    pub expected_references: Option<u64>,
    /// Shards of the filter (a power of two); None: from its size (`plan::sizing::shards`).
    pub shards: Option<u32>,
    pub salt: String,
    pub batch_size: usize,
    pub dry_run: bool,
    pub ignore_malformed: bool,
    /// Accept a generation duration under a day, and one or a family other than the previous
    /// run's against the same store (README, "Safety").
    pub allow_short_generations: bool,
    pub allow_generation_change: bool,
    pub partitions: usize,
    pub delete_concurrency: usize,
    /// Keys deleted per second at most, over all concurrent batches (None: no limit).
    pub max_deletes_per_second: Option<u32>,
    /// Key ranges of an S3 store listed at once.
    pub list_concurrency: usize,
    pub verify: Verify,
    pub verify_limit: u64,
    pub strategy: Strategy,
    pub report: Option<PathBuf>,
    pub plan_dir: Option<String>,
    /// A directory of per-run plans: the history the shrink breaker compares with, and the
    /// home of the lease that keeps runs against one store apart.
    pub plan_root: Option<String>,
    pub lease_ttl_seconds: u64,
    /// Compare the run's clock with the store's before planning (a clock read, not `--now`),
    /// and stop when they are more than `max_clock_skew_seconds` apart.
    pub check_clock: bool,
    pub max_clock_skew_seconds: u64,
    /// Breakers: see [`crate::breakers`].
    pub breakers: crate::breakers::Thresholds,
    /// Move candidates under this prefix instead of deleting them.
    pub quarantine: Option<String>,
    /// A Ballista scheduler (`df://HOST:PORT`) to run every stage on; None: in-process.
    pub scheduler: Option<String>,
    pub s3: S3Options,
}

impl Job {
    /// A job with the documented defaults (README, "Command line"), at `now`, with a fresh random salt.
    pub fn new(store: impl Into<String>, references: Vec<SourceSpec>, now: DateTime<Utc>) -> Self {
        Job {
            run_id: crate::summary::new_run_id(),
            store: store.into(),
            references,
            inventory: None,
            now,
            generation_duration_seconds: DEFAULT_DURATION_SECONDS,
            family: DEFAULT_FAMILY,
            fpp: options::FPP,
            max_fpp: 2.0 * options::FPP,
            expected_references: None,
            shards: None,
            salt: options::random_salt(),
            batch_size: options::BATCH_SIZE,
            dry_run: false,
            ignore_malformed: false,
            allow_short_generations: false,
            allow_generation_change: false,
            partitions: options::partitions(),
            delete_concurrency: options::DELETE_CONCURRENCY,
            max_deletes_per_second: None,
            list_concurrency: 8,
            verify: Verify::Auto,
            verify_limit: DEFAULT_VERIFY_LIMIT,
            strategy: Strategy::Bloom,
            report: None,
            plan_dir: None,
            plan_root: None,
            lease_ttl_seconds: DEFAULT_LEASE_TTL_SECONDS,
            check_clock: false,
            max_clock_skew_seconds: DEFAULT_MAX_CLOCK_SKEW_SECONDS,
            breakers: crate::breakers::Thresholds::default(),
            quarantine: None,
            scheduler: None,
            s3: S3Options::default(),
        }
    }

    /// Checks every parameter; the message names the flag.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::usage(m));
        if !(self.fpp > 0.0 && self.fpp < 1.0) {
            return fail(format!("--fpp must be in (0, 1), got {}", self.fpp));
        }
        if !(self.max_fpp >= self.fpp && self.max_fpp <= 1.0) {
            return fail(format!(
                "--max-fpp must be in [--fpp, 1], got {}",
                self.max_fpp
            ));
        }
        if self.batch_size == 0 {
            return fail("--batch-size must be >= 1".into());
        }
        if self.family == 0 {
            return fail("--family must be >= 1 (family 0 is the legacy family)".into());
        }
        if self.generation_duration_seconds == 0 {
            return fail("--generation-duration must be > 0".into());
        }
        if self.expected_references == Some(0) {
            return fail("--expected-references must be >= 1".into());
        }
        if let Some(k) = self
            .shards
            .filter(|k| !k.is_power_of_two() || *k > MAX_SHARDS)
        {
            return fail(format!(
                "--shards must be a power of two from 1 to {MAX_SHARDS}, got {k}"
            ));
        }
        let database_source = self
            .references
            .iter()
            .find(|s| crate::postgres::is_url(&s.url));
        if let (Some(_), Some(source)) = (&self.scheduler, database_source) {
            return fail(format!(
                "reference source {:?} is a PostgreSQL table, which a cluster's executors cannot \
                 read: plan without --scheduler, or export the table to Parquet",
                source.name
            ));
        }
        if self.partitions == 0 || self.delete_concurrency == 0 || self.list_concurrency == 0 {
            return fail(
                "--partitions, --delete-concurrency and --list-concurrency must be >= 1".into(),
            );
        }
        if self.max_deletes_per_second == Some(0) {
            return fail("--max-deletes-per-second must be >= 1".into());
        }
        if self.lease_ttl_seconds == 0 {
            return fail("--lease-ttl must be > 0".into());
        }
        self.breakers.validate()?;
        if self.salt.is_empty() {
            return fail("--salt must not be empty".into());
        }
        if self.references.is_empty() {
            return fail(
                "no reference source given (--refs NAME=URL or [[references]] in the job file)"
                    .into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.references {
            r.validate()?;
            if !names.insert(&r.name) {
                return fail(format!("reference source {:?} is given twice", r.name));
            }
        }
        Ok(())
    }
}

/// The `--now` of a command.
pub fn parse_now(text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::usage(format!(
                "--now {text:?} is not RFC 3339 (e.g. 2021-08-19T10:15:30Z): {e}"
            ))
        })
}
