//! A whole GC run, as `blobgc run` makes it: take the store's lease (under a plan root), plan,
//! check the lease is still held, sweep unless the plan aborted or the run is dry, give the
//! lease back, and report. The plan lives under the plan root, in `--plan-dir`, or in a
//! temporary directory removed afterwards unless the sweep is partial.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> blobgc::Result<()> {
//! use blobgc::{Job, Location, Progress, S3Options, SourceSpec};
//! use std::sync::Arc;
//!
//! // A store of two blobs of an old generation, and one reference table naming one of them.
//! let s3 = S3Options::default();
//! let store = Location::parse("memory://example/store", "store", &s3)?;
//! store.write(&store.child("1_3_garbage"), "unreferenced").await?;
//! store.write(&store.child("1_3_kept"), "referenced").await?;
//! let refs = Location::parse("memory://example/refs/messages.parquet", "refs", &s3)?;
//! let ids: arrow::array::ArrayRef = Arc::new(arrow::array::StringArray::from(vec!["1_3_kept"]));
//! let table = arrow::array::RecordBatch::try_from_iter([("blob_id", ids)])?;
//! let mut parquet = Vec::new();
//! let mut writer = parquet::arrow::ArrowWriter::try_new(&mut parquet, table.schema(), None)?;
//! writer.write(&table)?;
//! writer.close()?;
//! refs.write(&refs.path, parquet).await?;
//!
//! let messages = SourceSpec::parse_flag("messages=memory://example/refs")?;
//! let now = chrono::Utc::now();
//! let mut job = Job::new("memory://example/store", vec![messages], now);
//! job.plan_dir = Some("memory://example/plan".into());
//! let report = blobgc::run(&job, &Progress::silent()).await?;
//! assert_eq!(report.gced_blob_count, 1);
//! assert!(store.read(&store.child("1_3_kept")).await.is_ok());
//! assert!(store.read(&store.child("1_3_garbage")).await.is_err());
//! # Ok(())
//! # }
//! ```

use crate::error::{Error, Result};
use crate::job::Job;
use crate::lease::Lease;
use crate::plan::plan;
use crate::plan_dir::PlanDir;
use crate::plan_root::PlanRoot;
use crate::progress::Progress;
use crate::report::{Report, Status};
use crate::store::{Location, S3Options};
use crate::summary::{PlanStatus, PlanSummary};
use crate::sweep::{SweepMetrics, SweepOptions, sweep};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch::Receiver;

/// The job's plan root, when it has one.
pub(crate) fn plan_root(job: &Job) -> Result<Option<PlanRoot>> {
    job.plan_root
        .as_deref()
        .map(|root| PlanRoot::parse(root, &job.s3))
        .transpose()
}

/// The lease of the job's store under `root`, when there is a root.
pub(crate) async fn take_lease(job: &Job, root: Option<&PlanRoot>) -> Result<Option<Lease>> {
    let Some(root) = root else {
        return Ok(None);
    };
    let store = Location::parse_store(&job.store, "--store", &job.s3)?.url();
    let lease = Lease::acquire(
        root,
        &store,
        &job.run_id,
        job.lease_ttl_seconds,
        chrono::Utc::now(),
    )
    .await?;
    Ok(Some(lease))
}

/// Gives `lease` back, then returns `result`: whatever the outcome, the lease is released.
pub(crate) async fn give_back<T>(lease: Option<Lease>, result: Result<T>) -> Result<T> {
    let released = match lease {
        Some(lease) => lease.release().await,
        None => Ok(()),
    };
    match (result, released) {
        (Ok(value), released) => released.map(|()| value),
        // The run's own failure is the one to report; the lease expires in any case.
        (Err(e), Err(release)) => {
            tracing::warn!(%release, "could not give the lease back");
            Err(e)
        }
        (Err(e), Ok(())) => Err(e),
    }
}

/// Plan, then sweep unless aborted or dry. Under a plan root the plan is kept as the run's
/// history; a temporary plan directory is removed afterwards unless the run was dry (the plan is
/// then what its operator reviews) or the sweep is partial (what `blobgc sweep --plan`
/// resumes).
pub async fn run(job: &Job, progress: &Progress) -> Result<Report> {
    run_until(job, progress, None).await
}

/// [`run`], asked to stop once `stop` turns true (SIGTERM): the batches in flight finish, no
/// other starts, the lease is given back, and the report says `partial` (the kept plan resumes
/// with `blobgc sweep --plan`).
pub async fn run_until(
    job: &Job,
    progress: &Progress,
    stop: Option<Receiver<bool>>,
) -> Result<Report> {
    let root = plan_root(job)?;
    let lease = take_lease(job, root.as_ref()).await?;
    let kept = keep_alive(lease.as_ref(), job.lease_ttl_seconds, stop);
    let stop = Some(kept.stop.clone());
    let result = run_leased(job, root.as_ref(), lease.as_ref(), progress, stop).await;
    drop(kept);
    give_back(lease, result).await
}

/// A run at work under its lease: the lease renewed every third of its TTL, and a stop that
/// turns on with the caller's, or when a renewal fails (the lease is lost: no further batch may
/// start). Dropping it ends both.
pub(crate) struct KeptAlive {
    pub stop: Receiver<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KeptAlive {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

pub(crate) fn keep_alive(
    lease: Option<&Lease>,
    ttl_seconds: u64,
    stop: Option<Receiver<bool>>,
) -> KeptAlive {
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(mut outer) = stop {
        let stopping = stopping.clone();
        tasks.push(tokio::spawn(async move {
            while outer.changed().await.is_ok() {
                if *outer.borrow() {
                    let _ = stopping.send(true);
                    return;
                }
            }
        }));
    }
    if let Some(lease) = lease {
        let mut lease = lease.clone();
        let every = Duration::from_millis(ttl_seconds.saturating_mul(1000) / 3)
            .max(Duration::from_millis(200));
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = lease.renew(chrono::Utc::now(), ttl_seconds).await {
                    tracing::error!("{e}: stopping after the batches in flight");
                    let _ = stopping.send(true);
                    return;
                }
            }
        }));
    }
    KeptAlive {
        stop: stopped,
        tasks,
    }
}

async fn run_leased(
    job: &Job,
    root: Option<&PlanRoot>,
    lease: Option<&Lease>,
    progress: &Progress,
    stop: Option<Receiver<bool>>,
) -> Result<Report> {
    if job.scheduler.is_some() && job.plan_dir.is_none() && root.is_none() {
        return Err(Error::usage(
            "--scheduler needs --plan-dir or --plan-root where the executors can read and write \
             (a temporary directory of this process is out of their reach)",
        ));
    }
    let (dir, temporary) = match (&job.plan_dir, root) {
        (None, Some(root)) => (root.plan_dir(&job.run_id)?, None),
        (given, _) => plan_dir_or_temporary(given.as_deref(), &job.run_id, &job.s3).await?,
    };
    let summary = plan(job, &dir, progress).await?;
    if summary.status == PlanStatus::Planned
        && !job.dry_run
        && let Some(lease) = lease
    {
        lease.check(chrono::Utc::now()).await?;
    }
    let metrics = if summary.status == PlanStatus::Planned && !job.dry_run {
        let options = SweepOptions {
            concurrency: job.delete_concurrency,
            store: None,
            max_deletes_per_second: job.max_deletes_per_second,
            s3: job.s3.clone(),
            stop,
        };
        let on = Cluster {
            scheduler: job.scheduler.clone(),
            partitions: job.partitions,
        };
        Some(sweep_plan(&dir, &options, &on, progress).await?.1)
    } else {
        None
    };
    let mut report = Report::new(&summary, dir.location.url(), metrics.as_ref(), job.dry_run);
    // A dry run's plan is what its operator reviews (`blobgc show`): kept, wherever it is.
    if !job.dry_run {
        remove_temporary(temporary, report.status, &mut report.plan);
    }
    Ok(report)
}

/// Where a sweep runs: in this process, or on a Ballista cluster.
pub(crate) struct Cluster {
    pub scheduler: Option<String>,
    pub partitions: usize,
}

pub(crate) async fn sweep_plan(
    dir: &PlanDir,
    options: &SweepOptions,
    on: &Cluster,
    progress: &Progress,
) -> Result<(PlanSummary, SweepMetrics)> {
    match &on.scheduler {
        None => sweep(dir, options, progress).await,
        Some(url) => {
            let ctx = crate::cluster::remote(url, on.partitions, &options.s3).await?;
            crate::sweep::sweep_on_cluster(&ctx, dir, options, progress).await
        }
    }
}

/// The plan directory given, or a fresh temporary one (returned too, to remove afterwards).
pub(crate) async fn plan_dir_or_temporary(
    given: Option<&str>,
    run_id: &str,
    s3: &S3Options,
) -> Result<(PlanDir, Option<PathBuf>)> {
    match given {
        Some(d) => Ok((new_plan_dir(d, "--plan-dir", s3).await?, None)),
        None => {
            // Unique per run: two runs with the same clock and salt must never share a plan.
            let tmp = std::env::temp_dir().join(format!("blobgc-plan-{run_id}"));
            let dir = new_plan_dir(&tmp.display().to_string(), "--plan-dir", s3).await?;
            Ok((dir, Some(tmp)))
        }
    }
}

/// Removes a temporary plan directory unless the sweep was partial (the plan is then what
/// `blobgc sweep --plan` resumes); a removed one is said so in the report's `plan`.
pub(crate) fn remove_temporary(temporary: Option<PathBuf>, status: Status, plan: &mut String) {
    let removed = temporary
        .filter(|_| status != Status::Partial)
        .is_some_and(|tmp| std::fs::remove_dir_all(tmp).is_ok());
    if removed {
        plan.push_str(" (temporary, removed)");
    }
}

/// A plan directory that holds no plan yet: a second plan must never mix with a first one.
pub(crate) async fn new_plan_dir(text: &str, flag: &str, s3: &S3Options) -> Result<PlanDir> {
    let dir = PlanDir::new(Location::parse(text, flag, s3)?);
    if dir.read_summary().await.is_ok() {
        return Err(Error::usage(format!(
            "{flag} {text} already holds a plan: sweep it with `blobgc sweep --plan {text}` or choose another directory"
        )));
    }
    Ok(dir)
}
