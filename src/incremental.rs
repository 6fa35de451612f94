//! The incremental mode of ADR 39 (`blobgc incremental`): instead of checking every blob, check
//! only those whose deletion the application recorded.
//!
//! **Inputs:** a Deletions table (`blob_id`, `generation`, `date`, `gc_iteration`: one row per
//! deletion request) and a References table (`entity_id`, `blob_id`, `generation`).
//! **What it deletes:** the blobs of the deletion rows of iterations up to this one whose
//! generation is at most `current_generation - generation_lag`, that no row of References
//! names. The ADR's decision text processes generation n-2 and older (lag 2, the default),
//! its worked example every generation (lag 0). Rows of younger generations are carried over.
//! **The danger:** a blob re-referenced after its deletion was recorded; the References table
//! decides, so it must be complete. It is read once: a Bloom filter of the concerned blobs picks
//! the few references that may name them, and those are compared exactly.
//! **Output:** deletion batches swept as in the full mode, then the Deletions table that remains
//! (every row of a deleted blob removed) written to `--deletions-out`.

use crate::error::{Error, Result};
use crate::filter::{FilterParams, Sharded, fully_canonical};
use crate::frame;
use crate::functions;
use crate::guards;
use crate::listing::{BLOB_ID, path_of};
use crate::outcome::{Outcome, Status};
use crate::plan_dir::PlanDir;
use crate::progress::Progress;
use crate::references::{self, SourceSpec};
use crate::store::Location;
use crate::summary::{PlanCounts, SourceSummary};
use crate::sweep::SweepOptions;
use crate::table_plan::{self, TablePlan};
use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::DataType;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{JoinType, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

pub const GENERATION: &str = "generation";
pub const GC_ITERATION: &str = "gc_iteration";

/// One garbage collection iteration.
#[derive(Debug, Clone)]
pub struct IncrementalJob {
    pub run_id: String,
    pub store: String,
    pub deletions: String,
    pub references: String,
    /// References may be empty (a store whose entities are all gone).
    pub allow_empty_references: bool,
    pub iteration: i64,
    pub current_generation: i64,
    pub generation_lag: u64,
    pub deletions_out: String,
    pub fpp: f64,
    pub salt: String,
    pub batch_size: usize,
    pub dry_run: bool,
    pub partitions: usize,
    pub sweep: SweepOptions,
}

/// What an iteration did.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalReport {
    pub status: Status,
    pub dry_run: bool,
    pub store: String,
    pub plan: String,
    pub iteration: i64,
    pub current_generation: i64,
    pub generation_lag: u64,
    /// Rows of the Deletions table read.
    pub deletion_rows: u64,
    /// Rows of iterations up to this one whose generation is old enough: processed.
    pub processed_rows: u64,
    /// Rows of iterations up to this one left for a later iteration (generation too young).
    pub carried_over_rows: u64,
    pub concerned_blob_count: u64,
    /// Blobs whose id names a younger generation than their Deletions row: kept.
    pub younger_id_count: u64,
    pub reference_count: u64,
    /// Concerned blobs some reference names: kept.
    pub referenced_blob_count: u64,
    pub candidate_count: u64,
    pub gced_blob_count: u64,
    pub gced_bytes: u64,
    pub error_count: u64,
    /// Rows of the Deletions table written to `deletions_out` (none in a dry run).
    pub remaining_deletion_rows: u64,
    pub deletions_out: Option<String>,
    pub salt: String,
    pub total_seconds: f64,
}

/// Runs one iteration: plan into `dir`, sweep unless dry, write the remaining Deletions.
pub async fn run(
    job: &IncrementalJob,
    dir: &PlanDir,
    progress: &Progress,
) -> Result<IncrementalReport> {
    let started = Instant::now();
    let store = Location::parse_store(&job.store, "--store", &job.sweep.s3)?;
    guards::outside_store(&store, &dir.location, "the plan directory")?;
    let ctx = session(job)?;
    let deletions = open_deletions(&ctx, job).await?;
    let spec = SourceSpec {
        name: "references".into(),
        url: job.references.clone(),
        columns: vec![BLOB_ID.into()],
        allow_empty: job.allow_empty_references,
    };
    let refs = references::open(&ctx, &spec, &mut Default::default()).await?;
    let due = due(deletions.clone(), job).await?;
    progress.step(
        &format!("checking {} concerned blobs", due.concerned.len()),
        "",
    );
    let candidates = unreferenced(dir, job, refs.ids.clone(), &due.concerned).await?;
    let sized = sizes(&store, &candidates).await?;
    let candidates: Vec<(&str, i64)> = sized.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    let plan = TablePlan {
        run_id: &job.run_id,
        store: &store,
        sources: vec![SourceSummary {
            spec,
            rows: refs.rows,
            snapshot: refs.snapshot,
        }],
        counts: PlanCounts {
            reference_count: refs.rows,
            ..PlanCounts::default()
        },
        batch_size: job.batch_size,
        candidates: &candidates,
    };
    table_plan::write(dir, plan).await?;

    let mut report = IncrementalReport {
        status: Status::Completed,
        dry_run: job.dry_run,
        store: store.url(),
        plan: dir.location.url(),
        iteration: job.iteration,
        current_generation: job.current_generation,
        generation_lag: job.generation_lag,
        deletion_rows: due.deletion_rows,
        processed_rows: due.processed_rows,
        carried_over_rows: due.pending_rows - due.processed_rows,
        concerned_blob_count: due.concerned.len() as u64,
        younger_id_count: due.young.len() as u64,
        reference_count: refs.rows,
        referenced_blob_count: (due.concerned.len() - candidates.len()) as u64,
        candidate_count: candidates.len() as u64,
        gced_blob_count: 0,
        gced_bytes: 0,
        error_count: 0,
        remaining_deletion_rows: 0,
        deletions_out: None,
        salt: job.salt.clone(),
        total_seconds: 0.0,
    };
    if !job.dry_run {
        // Only blobs of completed batches leave the Deletions table: a failed one is retried
        // by the next iteration.
        let (metrics, deleted) = table_plan::sweep(dir, &job.sweep, progress).await?;
        report.gced_blob_count = metrics.gced_blob_count;
        report.gced_bytes = metrics.gced_bytes;
        report.error_count = metrics.error_count;
        report.status = Status::from_errors(metrics.error_count);
        report.remaining_deletion_rows =
            write_remaining(&ctx, deletions, deleted, &job.deletions_out).await?;
        report.deletions_out = Some(job.deletions_out.clone());
    }
    report.total_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The iteration's session: the remaining Deletions table keeps the input's string types.
fn session(job: &IncrementalJob) -> Result<SessionContext> {
    let ctx = crate::session::local(job.partitions, &job.sweep.s3)?;
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    Ok(ctx)
}

/// The Deletions table, with the columns an iteration needs.
async fn open_deletions(ctx: &SessionContext, job: &IncrementalJob) -> Result<DataFrame> {
    let what = deletions_table(job);
    let deletions = references::read_table(ctx, &job.deletions, &what).await?;
    for column in [BLOB_ID, GENERATION, GC_ITERATION] {
        references::field(&deletions, column, &what)?;
    }
    Ok(deletions)
}

fn deletions_table(job: &IncrementalJob) -> String {
    format!("Deletions table ({})", job.deletions)
}

/// The deletion rows this iteration processes, and the blobs they concern.
struct Due {
    deletion_rows: u64,
    /// Rows of iterations up to this one, and of those the ones old enough to process.
    pending_rows: u64,
    processed_rows: u64,
    /// Blobs of processed rows whose id names a younger generation than the row (kept), and
    /// the others.
    young: Vec<String>,
    concerned: Vec<String>,
}

/// Counts the Deletions rows and reads the blobs this iteration processes; a row that cannot
/// be decided (no blob id, generation or iteration) stops the run.
async fn due(deletions: DataFrame, job: &IncrementalJob) -> Result<Due> {
    let what = deletions_table(job);
    let threshold = job.current_generation - job.generation_lag as i64;
    let generation = datafusion::logical_expr::cast(col(GENERATION), DataType::Int64);
    let iteration = datafusion::logical_expr::cast(col(GC_ITERATION), DataType::Int64);
    let due = iteration.clone().lt_eq(lit(job.iteration));
    let processed = due.clone().and(generation.clone().lt_eq(lit(threshold)));
    let undecidable = col(BLOB_ID)
        .is_null()
        .or(generation.is_null())
        .or(iteration.is_null());
    let [
        deletion_rows,
        undecidable_rows,
        pending_rows,
        processed_rows,
    ] = frame::one_row(
        deletions.clone(),
        [
            frame::count_where(lit(true))?,
            frame::count_where(undecidable)?,
            frame::count_where(due)?,
            frame::count_where(processed.clone())?,
        ],
        &what,
    )
    .await?;
    if undecidable_rows > 0 {
        return Err(Error::aborted(format!(
            "{what}: {undecidable_rows} row(s) lack a blob_id, generation or gc_iteration: \
             their deletion cannot be decided"
        )));
    }
    let ids = deletions
        .filter(processed)?
        .select(vec![col(BLOB_ID)])?
        .distinct()?;
    let (young, concerned): (Vec<String>, Vec<String>) =
        frame::strings(ids, usize::MAX, "reading the Deletions table")
            .await?
            .into_iter()
            .partition(|id| younger_than_its_row(id, threshold));
    if !young.is_empty() {
        tracing::warn!(count = young.len(), examples = ?&young[..young.len().min(5)],
            "Deletions rows older than their blob id's own generation: kept");
    }
    Ok(Due {
        deletion_rows,
        pending_rows,
        processed_rows,
        young,
        concerned,
    })
}

/// The `concerned` blobs no reference names. The References are read once: a Bloom filter of
/// the concerned blobs (stored in `dir`) picks the few references that may name them, and
/// those are compared exactly, by the spelling every spelling of an id ends at (`1_0557_x` is
/// `1_557_x`).
async fn unreferenced(
    dir: &PlanDir,
    job: &IncrementalJob,
    references: DataFrame,
    concerned: &[String],
) -> Result<Vec<String>> {
    let params = FilterParams::for_items(
        concerned.len() as u64,
        job.fpp,
        FilterParams::seed_from_salt(&job.salt),
    );
    let mut filter = Sharded::empty(params, 1)?;
    concerned.iter().for_each(|id| filter.insert(id));
    let (location, checksum) = dir
        .write_filter(&format!("filter-{}", job.run_id), &filter)
        .await?;
    drop(filter);
    let maybe = functions::in_stored_filter(col(BLOB_ID), location, checksum);
    let found: HashSet<String> =
        frame::strings(references.filter(maybe)?, usize::MAX, "reading References")
            .await?
            .into_iter()
            .map(|id| fully_canonical(&id).into_owned())
            .collect();
    Ok(concerned
        .iter()
        .filter(|id| !found.contains(fully_canonical(id).as_ref()))
        .cloned()
        .collect())
}

/// Whether `id` names, in its own `{family}_{generation}_` prefix, a generation younger than
/// the table's row says: the table is wrong, and the id, which the blob store itself wrote,
/// wins. Such a blob is kept (its rows stay in the table).
fn younger_than_its_row(id: &str, threshold: i64) -> bool {
    crate::blob_id::BlobId::parse(id)
        .is_ok_and(|b| b.family != 0 && i64::try_from(b.generation).map_or(true, |g| g > threshold))
}

/// Each candidate with its size; a blob already gone has size 0 (its deletion still clears
/// its Deletions rows).
async fn sizes(store: &Location, ids: &[String]) -> Result<Vec<(String, i64)>> {
    futures::stream::iter(ids)
        .map(|id| async move {
            let path = path_of(&store.path, id)?;
            match store.store.head(&path).await {
                Ok(meta) => Ok((id.clone(), meta.size as i64)),
                Err(object_store::Error::NotFound { .. }) => Ok((id.clone(), 0)),
                Err(e) => Err(Error::runtime(format!("reading the size of {id}: {e}"))),
            }
        })
        .buffered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Writes the rows of `deletions` whose blob is not in `deleted` to `out` (one Parquet file,
/// the input's schema); returns their count. The rows are read before `out` is written, so
/// `out` may be the input file itself.
async fn write_remaining(
    ctx: &SessionContext,
    deletions: DataFrame,
    deleted: Vec<String>,
    out: &str,
) -> Result<u64> {
    let gone = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("deleted_blob_id", DataType::Utf8, false),
        ])),
        vec![Arc::new(StringArray::from(deleted))],
    )?;
    let gone = ctx.read_table(Arc::new(MemTable::try_new(
        gone.schema(),
        vec![vec![gone]],
    )?))?;
    let schema = Arc::new(deletions.schema().as_arrow().clone());
    let remaining = deletions
        .join(
            gone,
            JoinType::LeftAnti,
            &[BLOB_ID],
            &["deleted_blob_id"],
            None,
        )?
        .collect()
        .await
        .map_err(|e| Error::runtime(format!("computing the remaining Deletions: {e}")))?;
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, Arc::clone(&schema), None)?;
    let mut rows = 0;
    for batch in remaining {
        rows += batch.num_rows() as u64;
        writer.write(&RecordBatch::try_new(
            Arc::clone(&schema),
            batch.columns().to_vec(),
        )?)?;
    }
    writer.close()?;
    let loc = Location::parse(out, "--deletions-out", &crate::registry::session_s3(ctx))?;
    loc.write(&loc.path, buf).await?;
    Ok(rows)
}

/// The flags of `blobgc incremental`; a job file (`--job`) holds the same keys, flags win.
#[derive(Debug, Clone, Default, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncrementalArgs {
    /// TOML job file; flags override its keys.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub job: Option<std::path::PathBuf>,
    /// The blob store.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// The Deletions table (blob_id, generation, date, gc_iteration).
    #[arg(long, value_name = "URL")]
    pub deletions: Option<String>,
    /// The References table (entity_id, blob_id, generation).
    #[arg(long, value_name = "URL")]
    pub references: Option<String>,
    /// Accept an empty References table (else the run aborts: every blob would look unused).
    #[arg(long)]
    #[serde(default, skip_serializing_if = "crate::options::switch_off")]
    pub allow_empty_references: bool,
    /// This garbage collection iteration: deletion rows of it and earlier ones are processed.
    #[arg(long, value_name = "N")]
    pub iteration: Option<i64>,
    /// The current reference generation.
    #[arg(long, value_name = "N")]
    pub current_generation: Option<i64>,
    /// Only generations <= current - lag are processed (ADR 39: 2).
    #[arg(long, value_name = "N")]
    pub generation_lag: Option<u64>,
    /// Where to write the Deletions table that remains (may be the input file).
    #[arg(long, value_name = "URL")]
    pub deletions_out: Option<String>,
    /// Where to keep the plan (default: a temporary directory, removed unless partial).
    #[arg(long, value_name = "DIR")]
    pub plan_dir: Option<String>,
    /// False-positive rate of the filter of concerned blobs.
    #[arg(long, value_name = "P")]
    pub fpp: Option<f64>,
    #[arg(long, value_name = "TEXT")]
    pub salt: Option<String>,
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Plan and report; delete nothing, write no Deletions table.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "crate::options::switch_off")]
    pub dry_run: bool,
    #[arg(long, value_name = "N")]
    pub partitions: Option<usize>,
    #[arg(long, value_name = "N")]
    pub delete_concurrency: Option<usize>,
    #[arg(long, value_name = "N")]
    pub max_deletes_per_second: Option<u32>,
    #[command(flatten)]
    #[serde(default)]
    pub s3: crate::store::S3Options,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
}

impl IncrementalArgs {
    /// Merges the job file under the flags and checks the result.
    pub fn resolve(self) -> Result<(IncrementalJob, Option<String>, Option<std::path::PathBuf>)> {
        let o = crate::options::with_job_file(&self, self.job.as_deref())?;
        let need = |v: Option<String>, flag: &str| {
            v.ok_or_else(|| Error::usage(format!("{flag} is required (or in the job file)")))
        };
        let job = IncrementalJob {
            run_id: crate::summary::new_run_id(),
            store: need(o.store, "--store")?,
            deletions: need(o.deletions, "--deletions")?,
            references: need(o.references, "--references")?,
            allow_empty_references: o.allow_empty_references,
            iteration: o
                .iteration
                .ok_or_else(|| Error::usage("--iteration is required (or in the job file)"))?,
            current_generation: o.current_generation.ok_or_else(|| {
                Error::usage("--current-generation is required (or in the job file)")
            })?,
            generation_lag: o.generation_lag.unwrap_or(2),
            deletions_out: need(o.deletions_out, "--deletions-out")?,
            fpp: o.fpp.unwrap_or(crate::options::FPP),
            salt: o.salt.unwrap_or_else(crate::options::random_salt),
            batch_size: o.batch_size.unwrap_or(crate::options::BATCH_SIZE),
            dry_run: o.dry_run,
            partitions: o.partitions.unwrap_or_else(crate::options::partitions),
            sweep: SweepOptions::from_flags(
                o.delete_concurrency,
                o.max_deletes_per_second,
                None,
                o.s3,
            )?,
        };
        if !(job.fpp > 0.0 && job.fpp < 1.0) {
            return Err(Error::usage(format!(
                "--fpp must be in (0, 1), got {}",
                job.fpp
            )));
        }
        if job.batch_size == 0 || job.partitions == 0 {
            return Err(Error::usage("--batch-size and --partitions must be >= 1"));
        }
        Ok((job, o.plan_dir, o.report))
    }
}

impl Outcome for IncrementalReport {
    fn human(&self) -> String {
        format!(
            "blobgc: incremental iteration {} ({:?}{}): {} concerned blobs, {} still referenced, deleted {} ({} bytes); \
                 {} deletion rows carried over, {} remain\n",
            self.iteration,
            self.status,
            if self.dry_run { ", dry run" } else { "" },
            self.concerned_blob_count,
            self.referenced_blob_count,
            self.gced_blob_count,
            self.gced_bytes,
            self.carried_over_rows,
            self.remaining_deletion_rows
        )
    }

    fn exit_code(&self) -> i32 {
        self.status.exit_code()
    }
}
