//! The `blobgc` command line (README, "Command line"): `run`, `plan`, `sweep`, `purge`,
//! `restore`, `incremental`, `uploads`; an operator's `show`, `explain` and `report`; and the
//! cluster's `scheduler` and `executor`.
//!
//! stdout carries only the JSON report, as its last line (`show` its listing); people read stderr,
//! where progress and logs go (`output.rs`).

mod output;
mod review;

use crate::cluster::process::{ExecutorArgs, SchedulerArgs};
use crate::error::{Error, Result};
use crate::generation::parse_duration;
use crate::incremental::{self, IncrementalArgs};
use crate::job::{Job, JobArgs, parse_now};
use crate::lease::Lease;
use crate::outcome::Printed;
use crate::plan::plan;
use crate::plan_dir::PlanDir;
use crate::plan_root::PlanRoot;
use crate::progress::Progress;
use crate::quarantine::{self, Quarantine};
use crate::report::Report;
use crate::run::{
    Cluster, give_back, keep_alive, new_plan_dir, plan_dir_or_temporary, plan_root,
    remove_temporary, run_until, sweep_plan, take_lease,
};
use crate::store::{Location, S3Options};
use crate::summary::PlanSummary;
use crate::sweep::SweepOptions;
use crate::uploads::{self, UploadsArgs};
use clap::{Parser, Subcommand};
use output::{Output, OutputArgs, refused};
use review::{ExplainArgs, ReportArgs, ShowArgs};
use std::path::PathBuf;
use std::pin::Pin;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(
    name = "blobgc",
    version,
    about = "Garbage collector for deduplicated (content-addressed) blob stores"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Plan and sweep: delete the unreferenced blobs of eligible generations.
    Run(JobArgs),
    /// Mark only: write the deletion batches and summary.json to --out; delete nothing.
    Plan {
        #[command(flatten)]
        job: JobArgs,
        /// The plan directory to create (a path or URL; must not hold a plan already); default
        /// with a plan root (flag or job file): PLAN_ROOT/RUN_ID.
        #[arg(long, value_name = "DIR")]
        out: Option<String>,
    },
    /// Execute a plan's deletion batches, or resume an interrupted sweep.
    Sweep(SweepArgs),
    /// List a plan's candidates (size, family, generation) and their totals by generation and
    /// by family: what its sweep would delete.
    Show(ShowArgs),
    /// Why one blob is kept or deleted: its generation rule, the sources naming it, and what a
    /// plan did with it (read from the inputs; nothing is written).
    Explain(ExplainArgs),
    /// Write the HTML report (--html FILE) of a plan, or the history of a plan root's runs.
    Report(ReportArgs),
    /// Write a job's reference sources (database tables included) as Parquet, with a manifest.
    Export {
        #[command(flatten)]
        job: JobArgs,
        /// The directory to write (a path or URL): OUT/NAME/ per source, OUT/manifest.json.
        #[arg(long, value_name = "DIR")]
        out: String,
    },
    /// One iteration of ADR 39's incremental GC, from a Deletions and a References table.
    Incremental(IncrementalArgs),
    /// JMAP upload expiry: delete uploads past their TTL or over their user's quota.
    Uploads(UploadsArgs),
    /// Delete the blobs quarantined more than --older-than ago.
    Purge(PurgeArgs),
    /// Move quarantined blobs back into the store.
    Restore(RestoreArgs),
    /// Remove a store's lease by hand, after saying whose it was (refused while it is live).
    Unlock(UnlockArgs),
    /// A Ballista scheduler with blobgc's functions: `run --scheduler df://HOST:PORT` submits to it.
    Scheduler(SchedulerArgs),
    /// A Ballista executor with blobgc's functions, serving the scheduler given.
    Executor(ExecutorArgs),
}

#[derive(Debug, clap::Args)]
struct PurgeArgs {
    /// The quarantine prefix given to `run --quarantine`.
    #[arg(long, value_name = "URL")]
    quarantine: String,
    /// Purge what runs quarantined at least this long ago: 7d, 12h.
    #[arg(long, value_name = "DURATION")]
    older_than: String,
    /// The clock (RFC 3339); default: now.
    #[arg(long, value_name = "RFC3339")]
    now: Option<String>,
    #[command(flatten)]
    s3: S3Options,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct UnlockArgs {
    /// The plan root holding the lease.
    #[arg(long, value_name = "URL")]
    plan_root: String,
    /// The store whose lease to remove, as the runs named it.
    #[arg(long, value_name = "URL")]
    store: String,
    /// Only if this run holds it.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<String>,
    /// Remove a live lease too (its run must be dead: it would go on deleting).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    s3: S3Options,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RestoreArgs {
    /// The quarantine prefix given to `run --quarantine`.
    #[arg(long, value_name = "URL")]
    quarantine: String,
    /// The store to restore into.
    #[arg(long, value_name = "URL")]
    store: String,
    /// Only the blobs quarantined by this run.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<String>,
    /// Only this blob id. Repeatable.
    #[arg(long = "id", value_name = "BLOB_ID")]
    ids: Vec<String>,
    #[command(flatten)]
    s3: S3Options,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SweepArgs {
    /// The plan directory written by `blobgc plan` (or kept by a partial `run`).
    #[arg(long, value_name = "DIR")]
    plan: String,
    /// A job file, for its [s3], delete_concurrency and max_deletes_per_second keys.
    #[arg(long, value_name = "FILE")]
    job: Option<PathBuf>,
    /// Delete from this store instead of the one recorded in the plan.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Deletion batches executed at once.
    #[arg(long, value_name = "N")]
    delete_concurrency: Option<usize>,
    /// Keys deleted per second at most (default: no limit).
    #[arg(long, value_name = "N")]
    max_deletes_per_second: Option<u32>,
    /// Sweep on this Ballista cluster (`df://HOST:PORT`): each executor task deletes its own
    /// batches.
    #[arg(long, value_name = "URL")]
    scheduler: Option<String>,
    /// Partitions the batches are spread over on a cluster (default: the number of cores).
    #[arg(long, value_name = "N")]
    partitions: Option<usize>,
    #[command(flatten)]
    s3: S3Options,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// Runs a scheduler or an executor until it stops; the process exit code.
fn serve(runtime: &tokio::runtime::Runtime, command: Command) -> i32 {
    let served = match command {
        Command::Scheduler(args) => runtime.block_on(crate::cluster::process::scheduler(args)),
        Command::Executor(args) => runtime.block_on(crate::cluster::process::executor(args)),
        _ => Err(Error::runtime("not a cluster process")),
    };
    match served {
        Ok(()) => 0,
        Err(e) => refused(&e),
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    crate::allocator::tune();
    let cli = Cli::parse();
    let service = matches!(cli.command, Command::Scheduler(_) | Command::Executor(_));
    let output = match Output::start(cli.output, service) {
        Ok(output) => output,
        Err(e) => return refused(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return refused(&Error::runtime(format!("cannot start the runtime: {e}"))),
    };
    if service {
        return serve(&runtime, cli.command);
    }
    let command = match cli.command {
        Command::Show(args) => return runtime.block_on(review::show_plan(args, &output)),
        Command::Report(args) => return runtime.block_on(review::html_report(args, &output)),
        command => command,
    };
    let name = command.name();
    runtime.block_on(async {
        // Options that do not resolve are refused without a report: there was no run.
        let prepared = match prepare(command, &output) {
            Ok(prepared) => prepared,
            Err(e) => return output.refuse(&e),
        };
        let printed = prepared.work.await.unwrap_or_else(|e| failed(&e));
        output.finish(name, printed, prepared.report).await
    })
}

/// The report of a command that failed, with a word on Ballista's cancelled jobs.
fn failed(e: &Error) -> Printed {
    let mut printed = Printed::failed(e);
    if e.to_string().contains("failed: Cancelled") {
        printed.human += "blobgc: the cluster's scheduler cancelled that job: it made no task \
            progress for the scheduler's --stall-timeout (its log names the job's stage), or it \
            was cancelled by hand; nothing was deleted by a plan that did not complete\n";
    }
    printed
}

/// A command whose options resolved: where its report goes, and its work.
struct Prepared {
    report: Option<PathBuf>,
    work: Pin<Box<dyn Future<Output = Result<Printed>>>>,
}

impl Prepared {
    fn new(
        report: Option<PathBuf>,
        work: impl Future<Output = Result<Printed>> + 'static,
    ) -> Result<Prepared> {
        Ok(Prepared {
            report,
            work: Box::pin(work),
        })
    }
}

impl Command {
    /// The command's name, as its metrics are labelled.
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Plan { .. } => "plan",
            Command::Sweep(_) => "sweep",
            Command::Show(_) => "show",
            Command::Explain(_) => "explain",
            Command::Report(_) => "report",
            Command::Export { .. } => "export",
            Command::Incremental(_) => "incremental",
            Command::Uploads(_) => "uploads",
            Command::Purge(_) => "purge",
            Command::Restore(_) => "restore",
            Command::Unlock(_) => "unlock",
            Command::Scheduler(_) => "scheduler",
            Command::Executor(_) => "executor",
        }
    }
}

fn prepare(command: Command, output: &Output) -> Result<Prepared> {
    match command {
        Command::Run(args) => {
            let job = args.resolve(chrono::Utc::now)?;
            let progress = output.progress();
            Prepared::new(job.report.clone(), async move {
                let report = run_until(&job, &progress, Some(stop_on_signals())).await?;
                Ok(Printed::of(&report))
            })
        }
        Command::Plan { job, out } => {
            let job = job.resolve(chrono::Utc::now)?;
            let progress = output.progress();
            Prepared::new(job.report.clone(), plan_only(job, out, progress))
        }
        Command::Sweep(args) => {
            let report = args.report.clone();
            let progress = output.progress();
            Prepared::new(report, sweep_only(args, progress))
        }
        Command::Incremental(args) => {
            let (job, plan_dir, report) = args.resolve()?;
            let progress = output.progress();
            Prepared::new(report, async move {
                let (dir, temporary) =
                    plan_dir_or_temporary(plan_dir.as_deref(), &job.run_id, &job.sweep.s3).await?;
                let mut out = incremental::run(&job, &dir, &progress).await?;
                remove_temporary(temporary, out.status, &mut out.plan);
                Ok(Printed::of(&out))
            })
        }
        Command::Uploads(args) => {
            let (job, plan_dir, report) = args.resolve()?;
            let progress = output.progress();
            Prepared::new(report, async move {
                let (dir, temporary) =
                    plan_dir_or_temporary(plan_dir.as_deref(), &job.run_id, &job.sweep.s3).await?;
                let mut out = uploads::run(&job, &dir, &progress).await?;
                remove_temporary(temporary, out.status, &mut out.plan);
                Ok(Printed::of(&out))
            })
        }
        Command::Purge(args) => {
            let older_than =
                parse_duration(&args.older_than).map_err(|e| e.context("--older-than"))?;
            let now = match &args.now {
                Some(t) => parse_now(t)?,
                None => chrono::Utc::now(),
            };
            let q = Quarantine::parse(&args.quarantine, &args.s3)?;
            Prepared::new(args.report, async move {
                let report = quarantine::purge(&q, older_than, now).await?;
                Ok(Printed::of(&report))
            })
        }
        Command::Restore(args) => {
            let q = Quarantine::parse(&args.quarantine, &args.s3)?;
            let store = Location::parse_store(&args.store, "--store", &args.s3)?;
            Prepared::new(args.report, async move {
                let run = args.run.as_deref();
                let report = quarantine::restore(&q, &store, run, &args.ids).await?;
                Ok(Printed::of(&report))
            })
        }
        Command::Export { job, out } => {
            let (sources, s3) = job.sources()?;
            Prepared::new(job.report, async move {
                let report = crate::export::export(&sources, &out, &s3).await?;
                Ok(Printed::of(&report))
            })
        }
        Command::Unlock(args) => {
            let root = PlanRoot::parse(&args.plan_root, &args.s3)?;
            let store = Location::parse_store(&args.store, "--store", &args.s3)?.url();
            Prepared::new(args.report, async move {
                let now = chrono::Utc::now();
                let run = args.run.as_deref();
                let report = crate::lease::unlock(&root, &store, run, args.force, now).await?;
                Ok(Printed::of(&report))
            })
        }
        // The job file's report is its runs': an explanation never replaces it.
        Command::Explain(args) => Prepared::new(None, review::explain_id(args)?),
        Command::Scheduler(_) | Command::Executor(_) | Command::Show(_) | Command::Report(_) => {
            Err(Error::usage(
                "scheduler, executor, show and report are not jobs",
            ))
        }
    }
}

/// `blobgc plan`: the mark phase only, into `--out` or the plan root's directory of the run.
async fn plan_only(job: Job, out: Option<String>, progress: Progress) -> Result<Printed> {
    let root = plan_root(&job)?;
    let dir = match (&out, &root) {
        (Some(out), _) => new_plan_dir(out, "--out", &job.s3).await?,
        (None, Some(root)) => root.plan_dir(&job.run_id)?,
        (None, None) => {
            return Err(Error::usage(
                "--out DIR is required (or a plan root: --plan-root or plan_root in the job file)",
            ));
        }
    };
    let lease = take_lease(&job, root.as_ref()).await?;
    let planned = plan(&job, &dir, &progress).await;
    let summary = give_back(lease, planned).await?;
    let report = Report::new(&summary, dir.location.url(), None, true);
    Ok(Printed::of(&report))
}

/// `blobgc sweep`: executes or resumes a plan, as the same run (and lease) as its plan.
async fn sweep_only(args: SweepArgs, progress: Progress) -> Result<Printed> {
    let file: JobArgs = match &args.job {
        Some(path) => crate::options::read_job_file(path)?,
        None => JobArgs::default(),
    };
    let s3 = args.s3.or(file.s3);
    let dir = PlanDir::new(Location::parse(&args.plan, "--plan", &s3)?);
    let mut options = SweepOptions::from_flags(
        args.delete_concurrency.or(file.delete_concurrency),
        args.max_deletes_per_second.or(file.max_deletes_per_second),
        args.store,
        s3,
    )?;
    let planned = dir.read_summary().await?;
    // A resumed sweep is the same run as its plan: it takes (or retakes) that run's lease.
    let lease = match &planned.plan_root {
        Some(root) => Some(retake_lease(&planned, &PlanRoot::parse(root, &options.s3)?).await?),
        None => None,
    };
    let ttl = planned.lease_ttl_seconds.max(1);
    let kept = keep_alive(lease.as_ref(), ttl, Some(stop_on_signals()));
    options.stop = Some(kept.stop.clone());
    let on = Cluster {
        scheduler: args.scheduler.clone(),
        partitions: args.partitions.unwrap_or_else(crate::options::partitions),
    };
    let swept = sweep_plan(&dir, &options, &on, &progress).await;
    drop(kept);
    let (summary, metrics) = give_back(lease, swept).await?;
    let report = Report::new(&summary, dir.location.url(), Some(&metrics), false);
    Ok(Printed::of(&report))
}

/// The lease of the run that made `planned`, under its plan root.
async fn retake_lease(planned: &PlanSummary, root: &PlanRoot) -> Result<Lease> {
    let ttl = planned.lease_ttl_seconds.max(1);
    Lease::acquire(
        root,
        &planned.store,
        &planned.run_id,
        ttl,
        chrono::Utc::now(),
    )
    .await
}

/// A stop that turns true at the first SIGTERM or SIGINT: the sweep finishes the batches in
/// flight, starts no other, and the run ends partial (exit 4), its lease given back. A second
/// signal ends the process at once.
fn stop_on_signals() -> watch::Receiver<bool> {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        for first in [true, false] {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if !first {
                std::process::exit(130);
            }
            eprintln!(
                "blobgc: stopping after the batches in flight (a second signal stops at once)"
            );
            let _ = stop.send(true);
        }
    });
    stopped
}
