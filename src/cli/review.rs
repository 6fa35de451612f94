//! The commands an operator reviews with, which read and never delete: `show` (a plan's
//! candidates), `explain` (one id), `report` (the HTML page of a plan or of a plan root's
//! history). Thin adapters from flags to [`crate::show`], [`crate::explain`], [`crate::html`].

use super::output::{self, Output};
use crate::error::{Error, Result};
use crate::explain::explain;
use crate::generation::GenerationRule;
use crate::job::JobArgs;
use crate::outcome::Printed;
use crate::plan_dir::PlanDir;
use crate::plan_root::PlanRoot;
use crate::report::Report;
use crate::show::{Format, ShowOptions, SortBy, show};
use crate::store::{Location, S3Options};
use std::io::Write;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    job: JobArgs,
    /// The blob id to explain.
    #[arg(long, value_name = "BLOB_ID")]
    id: String,
    /// A plan (of `blobgc plan` or a run): whether it selected the id, whether its sweep
    /// deleted it, and its generation rule instead of the job's.
    #[arg(long, value_name = "DIR")]
    plan: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A plan directory: its plan, and what its sweeps deleted.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "plan_root",
        conflicts_with = "plan_root"
    )]
    plan: Option<String>,
    /// A plan root: every run under it, over time.
    #[arg(long, value_name = "URL")]
    plan_root: Option<String>,
    #[command(flatten)]
    s3: S3Options,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The plan directory (of `blobgc plan`, or kept by a dry or partial `run`).
    #[arg(long, value_name = "DIR")]
    plan: String,
    /// table: aligned, then the totals; csv and ndjson: the candidates only (totals on stderr).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// List this many candidates at most (the totals count them all).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// size: largest first; generation: oldest first. Default: the plan's order, streamed.
    #[arg(long, value_enum)]
    sort: Option<SortBy>,
    #[command(flatten)]
    s3: S3Options,
}

/// `blobgc explain`: resolves the job and the plan, then explains the id.
pub fn explain_id(args: ExplainArgs) -> Result<impl Future<Output = Result<Printed>>> {
    let job = args.job.resolve(chrono::Utc::now)?;
    let plan = args
        .plan
        .map(|p| Location::parse(&p, "--plan", &job.s3).map(PlanDir::new))
        .transpose()?;
    Ok(async move {
        // The plan's rule, when it has one: what selected its candidates.
        let planned = match &plan {
            Some(dir) => dir.read_summary().await?.selection.rule(),
            None => None,
        };
        let rule = match planned {
            Some(rule) => rule,
            None => GenerationRule::new(job.family, job.generation_duration_seconds, job.now)?,
        };
        let ctx = crate::session::local(job.partitions, &job.s3)?;
        let explained = explain(&ctx, &args.id, rule, &job.references, plan.as_ref()).await?;
        Ok(Printed::of(&explained))
    })
}

/// `blobgc report`: the HTML page of a plan, or of a plan root's history.
pub async fn html_report(args: ReportArgs, output: &Output) -> i32 {
    let written = async {
        let file = output
            .html
            .as_ref()
            .ok_or_else(|| Error::usage("blobgc report writes --html FILE: give it"))?;
        let page = match (&args.plan, &args.plan_root) {
            (Some(plan), _) => {
                let dir = PlanDir::new(Location::parse(plan, "--plan", &args.s3)?);
                let report = Report::of_plan(&dir).await?;
                crate::html::run_page(&serde_json::to_value(&report).map_err(Error::runtime)?)
            }
            (None, Some(root)) => {
                let root = PlanRoot::parse(root, &args.s3)?;
                let mut reports = Vec::new();
                for (dir, _) in root.runs().await? {
                    let report = Report::of_plan(&dir).await?;
                    reports.push(serde_json::to_value(&report).map_err(Error::runtime)?);
                }
                crate::html::history_page(&root.location.to_string(), &reports)
            }
            (None, None) => return Err(Error::usage("--plan DIR or --plan-root URL")),
        };
        output::write_page(file, &page)?;
        output.say(&format!("blobgc: wrote {}\n", file.display()));
        Ok(())
    };
    match written.await {
        Ok(()) => 0,
        Err(e) => output.refuse(&e),
    }
}

/// `blobgc show`: the listing on stdout, the totals after it (table) or on stderr.
pub async fn show_plan(args: ShowArgs, output: &Output) -> i32 {
    let options = ShowOptions {
        format: args.format,
        limit: args.limit,
        sort: args.sort,
    };
    let listed = async {
        let dir = PlanDir::new(Location::parse(&args.plan, "--plan", &args.s3)?);
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let totals = show(&dir, &options, &mut out).await?;
        match args.format {
            Format::Table => {
                let text = format!("\n{}", totals.human());
                out.write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|e| Error::runtime(format!("writing the totals: {e}")))?;
            }
            Format::Csv | Format::Ndjson => output.say(&totals.human()),
        }
        Ok(())
    };
    match listed.await {
        Ok(()) => 0,
        Err(e) => output.refuse(&e),
    }
}
