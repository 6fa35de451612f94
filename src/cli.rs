//! The `blobgc` command line (CONTRACT.md): `run`, `plan`, `sweep`.
//!
//! stdout carries only the JSON report, as its last line; people read stderr.

use crate::error::{Error, Result};
use crate::job::{Job, JobArgs, JobFile};
use crate::plan::{PlanStatus, plan};
use crate::plan_dir::PlanDir;
use crate::report::{Report, Status};
use crate::store::{Location, S3Options, configure_s3};
use crate::sweep::{SweepOptions, sweep};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "blobgc",
    version,
    about = "Garbage collector for deduplicated (content-addressed) blob stores"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Plan and sweep: delete the unreferenced blobs of eligible generations.
    Run(JobArgs),
    /// Mark only: write the deletion batches and summary.json to --out; delete nothing.
    Plan {
        #[command(flatten)]
        job: JobArgs,
        /// The plan directory to create (a path or URL; must not hold a plan already).
        #[arg(long, value_name = "DIR")]
        out: String,
    },
    /// Execute a plan's deletion batches, or resume an interrupted sweep.
    Sweep(SweepArgs),
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
    #[command(flatten)]
    s3: S3Options,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("blobgc: error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok((report, report_file)) => {
            eprint!("{}", report.human());
            let json = report.to_json_line();
            let written =
                report_file.map(|f| std::fs::write(&f, format!("{json}\n")).map_err(|e| (f, e)));
            println!("{json}");
            if let Some(Err((f, e))) = written {
                eprintln!(
                    "blobgc: error: cannot write the report to {}: {e}",
                    f.display()
                );
                return 1;
            }
            report.status.exit_code()
        }
        Err(e) => {
            eprintln!("blobgc: error: {e}");
            e.exit_code()
        }
    }
}

async fn dispatch(command: Command) -> Result<(Report, Option<PathBuf>)> {
    match command {
        Command::Run(args) => {
            let job = args.resolve(chrono::Utc::now)?;
            configure_s3(job.s3.clone());
            let report = run(&job).await?;
            Ok((report, job.report))
        }
        Command::Plan { job: args, out } => {
            let job = args.resolve(chrono::Utc::now)?;
            configure_s3(job.s3.clone());
            let dir = new_plan_dir(&out, "--out").await?;
            let summary = plan(&job, &dir, &spinner()).await?;
            Ok((
                Report::new(&summary, dir.location.url(), None, true),
                job.report,
            ))
        }
        Command::Sweep(args) => {
            let file = args
                .job
                .as_deref()
                .map(JobFile::read)
                .transpose()?
                .unwrap_or_default();
            configure_s3(args.s3.or(file.s3.unwrap_or_default()));
            let options = SweepOptions {
                concurrency: args
                    .delete_concurrency
                    .or(file.delete_concurrency)
                    .unwrap_or(SweepOptions::default().concurrency),
                store: args.store,
                max_deletes_per_second: args.max_deletes_per_second.or(file.max_deletes_per_second),
            };
            if options.concurrency == 0 || options.max_deletes_per_second == Some(0) {
                return Err(Error::usage(
                    "--delete-concurrency and --max-deletes-per-second must be >= 1",
                ));
            }
            let dir = PlanDir::new(Location::parse(&args.plan, "--plan")?);
            let (summary, metrics) = sweep(&dir, &options, &bar()).await?;
            Ok((
                Report::new(&summary, dir.location.url(), Some(&metrics), false),
                args.report,
            ))
        }
    }
}

/// Plan, then sweep unless aborted or dry. A temporary plan directory is removed afterwards
/// unless the sweep is partial: then it is what `blobgc sweep --plan` resumes.
pub async fn run(job: &Job) -> Result<Report> {
    let (dir_text, temporary) = match &job.plan_dir {
        Some(d) => (d.clone(), None),
        None => {
            // Unique per run: two runs with the same clock and salt must never share a plan.
            let tmp =
                std::env::temp_dir().join(format!("blobgc-plan-{}", crate::plan::new_run_id()));
            (tmp.display().to_string(), Some(tmp))
        }
    };
    let dir = new_plan_dir(&dir_text, "--plan-dir").await?;
    let summary = plan(job, &dir, &spinner()).await?;
    let metrics = if summary.status == PlanStatus::Planned && !job.dry_run {
        let options = SweepOptions {
            concurrency: job.delete_concurrency,
            store: None,
            max_deletes_per_second: job.max_deletes_per_second,
        };
        Some(sweep(&dir, &options, &bar()).await?.1)
    } else {
        None
    };
    let mut report = Report::new(&summary, dir.location.url(), metrics.as_ref(), job.dry_run);
    if let Some(tmp) = temporary.filter(|_| report.status != Status::Partial)
        && std::fs::remove_dir_all(&tmp).is_ok()
    {
        report.plan = format!("{} (temporary, removed)", report.plan);
    }
    Ok(report)
}

/// A plan directory that holds no plan yet: a second plan must never mix with a first one.
async fn new_plan_dir(text: &str, flag: &str) -> Result<PlanDir> {
    let dir = PlanDir::new(Location::parse(text, flag)?);
    if dir.read_summary().await.is_ok() {
        return Err(Error::usage(format!(
            "{flag} {text} already holds a plan: sweep it with `blobgc sweep --plan {text}` or choose another directory"
        )));
    }
    Ok(dir)
}

fn visible(pb: ProgressBar) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::stderr());
        pb
    } else {
        ProgressBar::hidden()
    }
}

fn spinner() -> ProgressBar {
    let pb = visible(ProgressBar::new_spinner());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg}: {human_pos} blobs probed ({elapsed})")
    {
        pb.set_style(style);
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

fn bar() -> ProgressBar {
    let pb = visible(ProgressBar::new(0));
    if let Ok(style) =
        ProgressStyle::with_template("deleting {bar:30} {pos}/{len} batches ({elapsed}, eta {eta})")
    {
        pb.set_style(style);
    }
    pb
}
