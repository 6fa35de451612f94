//! [`JobArgs`]: the options of `run` and `plan` as flags and job-file keys, merged (the flag
//! wins) and resolved to a checked [`Job`].

use super::{Job, Strategy, Verify, parse_now};
use crate::breakers::Thresholds;
use crate::error::{Error, Result};
use crate::generation::parse_duration;
use crate::options::{duration_text, with_job_file};
use crate::postgres::JamesOptions;
use crate::references::SourceSpec;
use crate::store::S3Options;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The options of `run` and `plan`, from flags and from the job file: every key has the flag of
/// the same name, except the file's `[[references]]` tables, which `--refs` flags replace.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobArgs {
    /// TOML job file; flags override its keys.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub job: Option<PathBuf>,
    /// The blob store: file:///abs/dir, s3://bucket/prefix, or a local path.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// A reference source: NAME=URL[#col1,col2] (default column blob_id). Repeatable.
    #[arg(long = "refs", value_name = "NAME=URL[#COLS]")]
    #[serde(skip)]
    pub refs: Vec<String>,
    /// The job file's reference sources.
    #[arg(skip)]
    #[serde(default)]
    pub references: Vec<SourceSpec>,
    /// A reference source (by name) that may have zero rows. Repeatable.
    #[arg(long = "allow-empty", value_name = "NAME")]
    #[serde(skip)]
    pub allow_empty: Vec<String>,
    /// A Parquet inventory (blob_id, size, last_modified) instead of listing the store.
    #[arg(long, value_name = "URL")]
    pub inventory: Option<String>,
    /// The clock of the run (RFC 3339); default: now.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// Generation duration: 30d, 12h, 15day; a bare number is days.
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "duration_text")]
    pub generation_duration: Option<String>,
    /// The generation family in use (>= 1).
    #[arg(long, value_name = "N")]
    pub family: Option<u32>,
    /// Requested Bloom filter false-positive rate, in (0, 1).
    #[arg(long, value_name = "P")]
    pub fpp: Option<f64>,
    /// Abort if the merged filter's estimated false-positive rate is above this (default 2 x fpp).
    #[arg(long, value_name = "P")]
    pub max_fpp: Option<f64>,
    /// Size the filter for this many references (default: the reference row count).
    #[arg(long, value_name = "N")]
    pub expected_references: Option<u64>,
    /// Shards of the filter, a power of two (default: from its size, a few MB each). Runs with
    /// the same salt and shards select the same candidates, in-process or on a cluster.
    #[arg(long, value_name = "K")]
    pub shards: Option<u32>,
    /// The salt of the filter's hashing (default: random, recorded in the report).
    #[arg(long, value_name = "TEXT")]
    pub salt: Option<String>,
    /// Rows per deletion batch.
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Plan and report, delete nothing.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "crate::options::switch_off")]
    pub dry_run: bool,
    /// Keep malformed listed ids (never deleted) instead of aborting the run.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "crate::options::switch_off")]
    pub ignore_malformed: bool,
    /// Accept a generation duration under one day: blobs still being written to may look old.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "crate::options::switch_off")]
    pub allow_short_generations: bool,
    /// Accept a generation duration or family other than the previous run's under --plan-root:
    /// blobs still being written to may look old.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "crate::options::switch_off")]
    pub allow_generation_change: bool,
    /// Parallel partitions of every stage (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub partitions: Option<usize>,
    /// Deletion batches executed at once.
    #[arg(long, value_name = "N")]
    pub delete_concurrency: Option<usize>,
    /// Keys deleted per second at most (default: no limit).
    #[arg(long, value_name = "N")]
    pub max_deletes_per_second: Option<u32>,
    /// Key ranges of an S3 store listed at once.
    #[arg(long, value_name = "N")]
    pub list_concurrency: Option<usize>,
    /// Check the candidates exactly against every reference before deleting: auto (when at
    /// most --verify-limit candidates), exact, off.
    #[arg(long, value_name = "MODE")]
    pub verify: Option<Verify>,
    /// Candidates above which `--verify auto` skips the exact check (they are held in memory).
    #[arg(long, value_name = "N")]
    pub verify_limit: Option<u64>,
    /// How candidates are found: bloom (a salted Bloom filter, lean; the default) or exact (a
    /// hash join holding the listing in memory).
    #[arg(long, value_name = "STRATEGY")]
    pub strategy: Option<Strategy>,
    #[command(flatten)]
    #[serde(default)]
    pub s3: S3Options,
    #[command(flatten)]
    #[serde(default)]
    pub james: JamesOptions,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// `run` only: where to keep the plan (default: under --plan-root, else a temporary
    /// directory removed unless the sweep is partial).
    #[arg(long, value_name = "DIR")]
    pub plan_dir: Option<String>,
    /// A directory of per-run plans (path or URL): each run plans into ROOT/RUN_ID, compares its
    /// sources with the previous run there, and holds a lease there so runs against one store
    /// never overlap.
    #[arg(long, value_name = "URL")]
    pub plan_root: Option<String>,
    /// How long a lease outlives its run's last renewal (every third of it): 10m, 1h.
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "duration_text")]
    pub lease_ttl: Option<String>,
    /// Stop when this run's clock and the store's differ by more than this (15m; a run with
    /// --now is not checked): a clock ahead makes the generation still written to look old.
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "duration_text")]
    pub max_clock_skew: Option<String>,
    /// Abort when the candidates are more than this fraction of the eligible blobs.
    #[arg(long, value_name = "F")]
    pub max_delete_fraction: Option<f64>,
    /// Abort when a reference source has lost more than this fraction of its rows since the
    /// previous run under --plan-root.
    #[arg(long, value_name = "F")]
    pub max_source_shrink: Option<f64>,
    /// Abort when more than this fraction of the distinct referenced ids name blobs absent from
    /// the listing (an incomplete listing or a wrong prefix).
    #[arg(long, value_name = "F")]
    pub max_missing_references: Option<f64>,
    /// Counts at or below this never trip a fraction breaker (a fraction of a handful says
    /// nothing).
    #[arg(long, value_name = "N")]
    pub breaker_floor: Option<u64>,
    /// Abort when more than this many blobs would be deleted (default: no cap).
    #[arg(long, value_name = "N")]
    pub max_delete_count: Option<u64>,
    /// Abort when more than this many bytes would be deleted (default: no cap).
    #[arg(long, value_name = "BYTES")]
    pub max_delete_bytes: Option<u64>,
    /// Move the candidates under this prefix (path or URL) instead of deleting them; `blobgc
    /// purge` deletes them later, `blobgc restore` puts them back.
    #[arg(long, value_name = "URL")]
    pub quarantine: Option<String>,
    /// Run every stage on this Ballista cluster (`df://HOST:PORT`, see `blobgc scheduler`);
    /// default: in-process. The plan directory must be reachable from its executors.
    #[arg(long, value_name = "URL")]
    pub scheduler: Option<String>,
}

impl JobArgs {
    /// The job of these flags over the job file (if any), checked. `clock` is read only when
    /// `--now` is unset.
    pub fn resolve(&self, clock: impl FnOnce() -> DateTime<Utc>) -> Result<Job> {
        let o = with_job_file(self, self.job.as_deref())?;
        let store = o
            .store
            .clone()
            .ok_or_else(|| Error::usage("--store is required (or store in the job file)"))?;
        let now = match &o.now {
            Some(t) => parse_now(t)?,
            None => clock(),
        };
        let mut job = Job::new(store, self.sources_of(&o)?, now);
        job.check_clock = o.now.is_none();
        if let Some(skew) = &o.max_clock_skew {
            job.max_clock_skew_seconds =
                parse_duration(skew).map_err(|e| e.context("--max-clock-skew"))?;
        }
        if let Some(d) = &o.generation_duration {
            job.generation_duration_seconds =
                parse_duration(d).map_err(|e| e.context("--generation-duration"))?;
        }
        if let Some(ttl) = &o.lease_ttl {
            job.lease_ttl_seconds = parse_duration(ttl).map_err(|e| e.context("--lease-ttl"))?;
        }
        job.family = o.family.unwrap_or(job.family);
        job.fpp = o.fpp.unwrap_or(job.fpp);
        job.max_fpp = o.max_fpp.unwrap_or(2.0 * job.fpp).min(1.0);
        job.expected_references = o.expected_references;
        job.shards = o.shards;
        job.salt = o.salt.clone().unwrap_or(job.salt);
        job.batch_size = o.batch_size.unwrap_or(job.batch_size);
        job.dry_run = o.dry_run;
        job.ignore_malformed = o.ignore_malformed;
        job.allow_short_generations = o.allow_short_generations;
        job.allow_generation_change = o.allow_generation_change;
        job.partitions = o.partitions.unwrap_or(job.partitions);
        job.delete_concurrency = o.delete_concurrency.unwrap_or(job.delete_concurrency);
        job.max_deletes_per_second = o.max_deletes_per_second;
        job.list_concurrency = o.list_concurrency.unwrap_or(job.list_concurrency);
        job.verify = o.verify.unwrap_or(job.verify);
        job.verify_limit = o.verify_limit.unwrap_or(job.verify_limit);
        job.strategy = o.strategy.unwrap_or(job.strategy);
        job.breakers = o.breakers(job.breakers);
        job.inventory = o.inventory;
        job.s3 = o.s3;
        job.report = o.report;
        job.plan_dir = o.plan_dir;
        job.plan_root = o.plan_root;
        job.quarantine = o.quarantine;
        job.scheduler = o.scheduler;
        job.validate()?;
        Ok(job)
    }

    /// The reference sources of these flags over the job file, and its S3 options: what
    /// `blobgc export` reads (no store needed).
    pub fn sources(&self) -> Result<(Vec<SourceSpec>, S3Options)> {
        let o = with_job_file(self, self.job.as_deref())?;
        let sources = self.sources_of(&o)?;
        if sources.is_empty() {
            return Err(Error::usage(
                "no reference source given (--refs, --james-postgres or the job file)",
            ));
        }
        Ok((sources, o.s3))
    }

    /// James's tables (`o.james`), then the other sources.
    fn sources_of(&self, o: &JobArgs) -> Result<Vec<SourceSpec>> {
        let mut sources: Vec<SourceSpec> = o.james.tables()?.into_iter().map(Into::into).collect();
        sources.extend(self.references(o.references.clone())?);
        Ok(sources)
    }

    /// The sources of the `--refs` flags, else the job file's `file`, with `--allow-empty`.
    fn references(&self, file: Vec<SourceSpec>) -> Result<Vec<SourceSpec>> {
        let mut references = if self.refs.is_empty() {
            file
        } else {
            self.refs
                .iter()
                .map(|r| SourceSpec::parse_flag(r))
                .collect::<Result<Vec<_>>>()?
        };
        for name in &self.allow_empty {
            let source = references
                .iter_mut()
                .find(|r| &r.name == name)
                .ok_or_else(|| {
                    Error::usage(format!(
                        "--allow-empty {name:?}: no reference source of that name"
                    ))
                })?;
            source.allow_empty = true;
        }
        Ok(references)
    }

    /// The breakers' thresholds set here, over `defaults`.
    fn breakers(&self, defaults: Thresholds) -> Thresholds {
        Thresholds {
            max_delete_fraction: self
                .max_delete_fraction
                .unwrap_or(defaults.max_delete_fraction),
            max_source_shrink: self.max_source_shrink.unwrap_or(defaults.max_source_shrink),
            max_missing_references: self
                .max_missing_references
                .unwrap_or(defaults.max_missing_references),
            floor: self.breaker_floor.unwrap_or(defaults.floor),
            max_delete_count: self.max_delete_count.or(defaults.max_delete_count),
            max_delete_bytes: self.max_delete_bytes.or(defaults.max_delete_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> JobArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: JobArgs,
        }
        let mut v = vec!["x", "--store", "/s", "--refs", "m=/r"];
        v.extend_from_slice(extra);
        P::parse_from(v).a
    }

    fn epoch() -> DateTime<Utc> {
        DateTime::from_timestamp(0, 0).unwrap()
    }

    #[test]
    fn defaults_and_flags() {
        let j = args(&["--now", "2021-08-19T10:15:30Z"])
            .resolve(epoch)
            .unwrap();
        assert_eq!(
            (j.fpp, j.max_fpp, j.batch_size, j.family),
            (0.01, 0.02, 1000, 1)
        );
        assert_eq!(j.generation_duration_seconds, 30 * 86_400);
        assert_eq!(j.now.timestamp(), 1_629_368_130);
        assert_eq!(args(&[]).resolve(epoch).unwrap().now, epoch());
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for (flags, needle) in [
            (vec!["--fpp", "0"], "--fpp"),
            (vec!["--fpp", "1"], "--fpp"),
            (vec!["--batch-size", "0"], "--batch-size"),
            (vec!["--family", "0"], "--family"),
            (vec!["--generation-duration", "0"], "--generation-duration"),
            (vec!["--now", "yesterday"], "--now"),
            (vec!["--allow-empty", "nope"], "--allow-empty"),
        ] {
            let e = args(&flags).resolve(epoch).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{flags:?}");
            assert!(e.to_string().contains(needle), "{flags:?}: {e}");
        }
    }

    /// Flags naming the job file `text` (written in `dir`) and nothing else.
    fn with_file(dir: &tempfile::TempDir, text: &str) -> JobArgs {
        let path = dir.path().join("job.toml");
        std::fs::write(&path, text).unwrap();
        JobArgs {
            job: Some(path),
            ..JobArgs::default()
        }
    }

    #[test]
    fn job_file_under_flags() {
        let dir = tempfile::tempdir().unwrap();
        let a = JobArgs {
            batch_size: Some(20),
            ..with_file(
                &dir,
                "store = \"/from-file\"\nfpp = 0.05\ngeneration_duration = 7\nbatch_size = 10\n\
                 [[references]]\nname = \"q\"\nurl = \"/q\"\nallow_empty = true\n",
            )
        };
        let j = a.resolve(epoch).unwrap();
        assert_eq!(j.store, "/from-file");
        assert_eq!((j.fpp, j.max_fpp, j.batch_size), (0.05, 0.1, 20));
        assert_eq!(j.generation_duration_seconds, 7 * 86_400);
        assert!(j.references[0].allow_empty);
        let e = with_file(&dir, "store = \"/s\"\nbatchsize = 3\n")
            .resolve(epoch)
            .unwrap_err();
        assert!(e.to_string().contains("batchsize"), "{e}");
    }

    #[test]
    fn a_james_database_adds_james_tables_to_the_file_sources() {
        let dir = tempfile::tempdir().unwrap();
        let j = with_file(
            &dir,
            "store = \"/s\"\n[james]\npostgres = \"postgresql://james@db:5432/james\"\n\
             [[references]]\nname = \"queue\"\nurl = \"/q\"\n",
        )
        .resolve(epoch)
        .unwrap();
        let urls: Vec<&str> = j.references.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "postgresql://james@db:5432/james?table=message",
                "postgresql://james@db:5432/james?table=attachment",
                "postgresql://james@db:5432/james?table=mail_repository_content",
                "/q"
            ]
        );
        assert_eq!(j.references[2].columns, ["header_blob_id", "body_blob_id"]);
    }
}
