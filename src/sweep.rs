//! The sweep: executes a plan's deletion batches against the store.
//!
//! **What it deletes:** exactly the ids in the batches listed by a `planned` summary (moved
//! into quarantine first when the plan names one, `--quarantine`), and
//! before each batch it re-checks that every id is still eligible under the plan's generation
//! rule (a corrupted or hand-edited batch aborts instead of deleting an active blob).
//! **Resuming:** a batch is marked done only once every key in it is gone, so a rerun after a
//! crash skips finished batches and redoes the rest; a key already gone counts as deleted.
//! A batch with any failed key, after retries with backoff, adds 1 to `error_count` (as James)
//! and stays pending. A batch's rows and bytes are counted once, when it completes: a rerun
//! that finishes a failed or interrupted batch counts it then, so over a crash and a resume
//! every candidate is counted exactly once (`gced_*` of this sweep plus `previously_gced_*` of
//! the batches it found done).
//! **On a cluster** ([`sweep_on_cluster`]) each executor task runs the same per-batch sweep on
//! its share of the batches; a task run again after an executor loss redoes its batches, whose
//! keys already gone count as deleted, so each batch is still counted once.

use crate::error::{Error, Result};
use crate::functions::{scalar_arg, scalar_str, scalar_u64};
use crate::generation::{GenerationRule, IdClass};
use crate::listing::path_of;
use crate::plan_dir::{BatchOutcome, PlanDir};
use crate::progress::Progress;
use crate::quarantine::Quarantine;
use crate::store::{Location, S3Options};
use crate::summary::{PlanStatus, PlanSummary};
use arrow::array::{AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::exec_datafusion_err;
use datafusion::logical_expr::{
    ColumnarValue, LogicalPlanBuilder, Partitioning, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility, col, lit,
};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Extra attempts at the keys of a batch that were not confirmed deleted (the store client
/// also retries each request).
const KEY_RETRIES: u32 = 4;

/// Options of a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Batches deleted at once.
    pub concurrency: usize,
    /// The store to delete from, when not the one the plan was made for (e.g. another endpoint).
    pub store: Option<String>,
    /// Keys deleted per second at most, over all concurrent batches.
    pub max_deletes_per_second: Option<u32>,
    /// The options S3 stores are made with (the plan directory's is made already).
    pub s3: S3Options,
    /// Once this turns true (a SIGTERM), no further batch is started: those in flight finish,
    /// and the sweep ends partial, to be resumed.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            concurrency: 4,
            store: None,
            max_deletes_per_second: None,
            s3: S3Options::default(),
            stop: None,
        }
    }
}

impl SweepOptions {
    /// The options of the `--delete-concurrency` and `--max-deletes-per-second` flags (or job
    /// keys), checked: both must be at least 1.
    pub fn from_flags(
        concurrency: Option<usize>,
        max_deletes_per_second: Option<u32>,
        store: Option<String>,
        s3: S3Options,
    ) -> Result<Self> {
        if concurrency == Some(0) || max_deletes_per_second == Some(0) {
            return Err(Error::usage(
                "--delete-concurrency and --max-deletes-per-second must be >= 1",
            ));
        }
        Ok(SweepOptions {
            concurrency: concurrency.unwrap_or(SweepOptions::default().concurrency),
            store,
            max_deletes_per_second,
            s3,
            stop: None,
        })
    }
}

/// Spaces deletions out to at most `per_second` keys a second: each request reserves its
/// slot in time, so concurrent batches share the budget.
struct RateLimit {
    per_second: f64,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        RateLimit {
            per_second: f64::from(per_second),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn acquire(&self, keys: usize) {
        let start = {
            let mut next = self.next.lock().await;
            let start = (*next).max(tokio::time::Instant::now());
            *next = start + Duration::from_secs_f64(keys as f64 / self.per_second);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepMetrics {
    pub batch_count: u64,
    /// Batches found already done (a resumed sweep).
    pub skipped_batch_count: u64,
    /// Blobs and bytes of the batches this sweep completed.
    pub gced_blob_count: u64,
    pub gced_bytes: u64,
    /// Blobs and bytes of the batches found already done, by earlier sweeps of the plan.
    pub previously_gced_blob_count: u64,
    pub previously_gced_bytes: u64,
    pub error_count: u64,
    pub failed_batches: Vec<FailedBatch>,
    /// Batches not started because the sweep was asked to stop.
    pub stopped_batch_count: u64,
    pub sweep_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedBatch {
    pub batch: String,
    pub error: String,
}

/// Sweeps the plan in `dir` in this process. Refuses (exit 3) a plan that was aborted.
pub async fn sweep(
    dir: &PlanDir,
    options: &SweepOptions,
    progress: &Progress,
) -> Result<(PlanSummary, SweepMetrics)> {
    let mut p = prepare(dir, options).await?;
    let limit = options.max_deletes_per_second.map(RateLimit::new);
    let quarantine = p
        .summary
        .quarantine
        .as_deref()
        .map(|q| Quarantine::parse(q, &options.s3))
        .transpose()?;
    {
        let batch = BatchSweep::new(
            dir,
            &p.summary,
            &p.store,
            limit.as_ref(),
            quarantine.as_ref(),
        );
        progress.step("deleting the batches", "batches");
        progress.total(p.pending.len() as u64);
        let pending = std::mem::take(&mut p.pending);
        let total = pending.len() as u64;
        let stop = options.stop.clone();
        let go_on = move || !stop.as_ref().is_some_and(|s| *s.borrow());
        let mut results = futures::stream::iter(pending)
            .take_while(move |_| futures::future::ready(go_on()))
            .map(|name| {
                let batch = &batch;
                async move {
                    let result = batch.sweep(&name).await;
                    (name, result)
                }
            })
            .buffer_unordered(options.concurrency.max(1));
        let mut done = 0;
        while let Some((name, result)) = results.next().await {
            progress.advance(1);
            done += 1;
            p.metrics.add(name, result)?;
        }
        p.metrics.stopped_batch_count = total - done;
    }
    Ok(p.finish())
}

/// Sweeps the plan in `dir` on a cluster: the pending batches are spread over `ctx`'s
/// partitions and every executor task deletes its own (`blobgc_sweep_batches`); only outcomes
/// come back. `--max-deletes-per-second` is shared out evenly between the partitions.
pub async fn sweep_on_cluster(
    ctx: &SessionContext,
    dir: &PlanDir,
    options: &SweepOptions,
    progress: &Progress,
) -> Result<(PlanSummary, SweepMetrics)> {
    let mut p = prepare(dir, options).await?;
    let pending = std::mem::take(&mut p.pending);
    progress.step("deleting the batches on the cluster", "batches");
    progress.total(pending.len() as u64);
    if !pending.is_empty() {
        let partitions = ctx
            .copied_config()
            .target_partitions()
            .min(pending.len())
            .max(1);
        let rate = options
            .max_deletes_per_second
            .map_or(0, |r| (u64::from(r) / partitions as u64).max(1));
        let names = pending.iter().map(|n| vec![lit(n.as_str())]).collect();
        let plan = LogicalPlanBuilder::values(names)?.build()?;
        let outcomes = DataFrame::new(ctx.state(), plan)
            .repartition(Partitioning::Hash(vec![col("column1")], partitions))?
            .select(vec![
                col("column1").alias("batch"),
                sweep_batches()
                    .call(vec![
                        col("column1"),
                        lit(dir.location.url()),
                        lit(p.store.url()),
                        lit(rate),
                        lit(options.concurrency.max(1) as u64),
                    ])
                    .alias("outcome"),
            ])?
            .collect()
            .await
            .map_err(|e| Error::runtime(format!("sweeping on the cluster: {e}")))?;
        for batch in &outcomes {
            let names = cast(batch.column(0), &DataType::Utf8)?;
            let results = cast(batch.column(1), &DataType::Utf8)?;
            let (names, results) = (names.as_string::<i32>(), results.as_string::<i32>());
            for i in 0..batch.num_rows() {
                progress.advance(1);
                let outcome: RemoteOutcome = serde_json::from_str(results.value(i))
                    .map_err(|e| Error::runtime(format!("sweep outcome of a batch: {e}")))?;
                p.metrics.add(names.value(i).to_string(), outcome.into())?;
            }
        }
    }
    Ok(p.finish())
}

/// A plan ready to sweep: its summary, its store, its batches not done yet, and the metrics
/// the sweep adds to.
struct Prepared {
    summary: PlanSummary,
    store: Location,
    pending: Vec<String>,
    metrics: SweepMetrics,
    started: Instant,
}

impl Prepared {
    fn finish(mut self) -> (PlanSummary, SweepMetrics) {
        self.metrics
            .failed_batches
            .sort_by(|a, b| a.batch.cmp(&b.batch));
        self.metrics.sweep_seconds = self.started.elapsed().as_secs_f64();
        (self.summary, self.metrics)
    }
}

async fn prepare(dir: &PlanDir, options: &SweepOptions) -> Result<Prepared> {
    let started = Instant::now();
    let summary = dir.read_summary().await?;
    if summary.status != PlanStatus::Planned {
        return Err(Error::aborted(format!(
            "plan {} was aborted ({}): it cannot be swept",
            dir.location,
            summary
                .abort_reason
                .as_deref()
                .unwrap_or("no reason recorded")
        )));
    }
    let store = Location::parse_store(
        options.store.as_deref().unwrap_or(&summary.store),
        "--store",
        &options.s3,
    )?;
    let done = dir.done().await?;
    let (finished, pending): (Vec<String>, Vec<String>) = summary
        .batches
        .iter()
        .cloned()
        .partition(|b| done.contains(b));
    let before = dir.outcomes(&finished).await?;
    let metrics = SweepMetrics {
        batch_count: summary.batches.len() as u64,
        skipped_batch_count: finished.len() as u64,
        previously_gced_blob_count: before.deleted,
        previously_gced_bytes: before.bytes,
        ..SweepMetrics::default()
    };
    Ok(Prepared {
        summary,
        store,
        pending,
        metrics,
        started,
    })
}

impl SweepMetrics {
    /// Counts one batch's result; an abort stops the sweep.
    fn add(&mut self, name: String, result: Result<BatchOutcome>) -> Result<()> {
        match result {
            Ok(outcome) => {
                self.gced_blob_count += outcome.deleted;
                self.gced_bytes += outcome.bytes;
            }
            Err(e @ Error::Aborted(_)) => return Err(e),
            Err(e) => {
                self.error_count += 1;
                self.failed_batches.push(FailedBatch {
                    batch: name,
                    error: e.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// One batch's result as an executor reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RemoteOutcome {
    Done { deleted: u64, bytes: u64 },
    Failed(String),
    Aborted(String),
}

impl From<Result<BatchOutcome>> for RemoteOutcome {
    fn from(r: Result<BatchOutcome>) -> Self {
        match r {
            Ok(o) => RemoteOutcome::Done {
                deleted: o.deleted,
                bytes: o.bytes,
            },
            Err(Error::Aborted(m)) => RemoteOutcome::Aborted(m),
            Err(e) => RemoteOutcome::Failed(e.to_string()),
        }
    }
}

impl From<RemoteOutcome> for Result<BatchOutcome> {
    fn from(r: RemoteOutcome) -> Self {
        match r {
            RemoteOutcome::Done { deleted, bytes } => Ok(BatchOutcome { deleted, bytes }),
            RemoteOutcome::Failed(m) => Err(Error::runtime(m)),
            RemoteOutcome::Aborted(m) => Err(Error::aborted(m)),
        }
    }
}

pub const SWEEP_BATCHES: &str = "blobgc_sweep_batches";

/// `blobgc_sweep_batches(batch, plan_dir, store, max_deletes_per_second, concurrency)`: sweeps
/// each batch named in its first column where it runs, `concurrency` at a time, at most
/// `max_deletes_per_second` keys a second (0: no limit); one JSON outcome per batch. Side
/// effects by design, hence volatile: the cluster's `foreachPartition`.
pub fn sweep_batches() -> ScalarUDF {
    ScalarUDF::from(SweepBatches {
        signature: Signature::any(5, Volatility::Volatile),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SweepBatches {
    signature: Signature,
}

impl ScalarUDFImpl for SweepBatches {
    fn name(&self) -> &str {
        SWEEP_BATCHES
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let text = |i: usize, what: &str| scalar_str(&scalar_arg(&args.args[i], what)?, what);
        let number = |i: usize, what: &str| scalar_u64(&scalar_arg(&args.args[i], what)?, what);
        let (dir, store) = (text(1, "plan_dir")?, text(2, "store")?);
        let (rate, concurrency) = (number(3, "rate")?, number(4, "concurrency")?);
        let names = cast(&args.args[0].to_array(args.number_rows)?, &DataType::Utf8)?;
        let names: Vec<String> = names
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(String::from)
            .collect();
        let s3 = crate::registry::job_s3(&args.config_options);
        let outcomes = crate::store::block_on("sweeping deletion batches", async move {
            let dir = PlanDir::new(Location::parse(&dir, "plan_dir", &s3)?);
            let summary = dir.read_summary().await?;
            let store = Location::parse_store(&store, "--store", &s3)?;
            let quarantine = summary
                .quarantine
                .as_deref()
                .map(|q| Quarantine::parse(q, &s3))
                .transpose()?;
            let limit = u32::try_from(rate)
                .ok()
                .filter(|&r| r > 0)
                .map(RateLimit::new);
            let batch =
                BatchSweep::new(&dir, &summary, &store, limit.as_ref(), quarantine.as_ref());
            let outcomes: Vec<String> = futures::stream::iter(names)
                .map(|name| {
                    let batch = &batch;
                    async move { RemoteOutcome::from(batch.sweep(&name).await) }
                })
                .buffered(concurrency.max(1) as usize)
                .map(|o| serde_json::to_string(&o).unwrap_or_default())
                .collect()
                .await;
            Ok(outcomes)
        })
        .and_then(|r| r)
        .map_err(|e| exec_datafusion_err!("{e}"))?;
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(outcomes))))
    }
}

/// What every batch of one sweep shares.
struct BatchSweep<'a> {
    dir: &'a PlanDir,
    store: &'a Location,
    /// Re-checked on every id before deleting, when the plan applied it.
    rule: Option<GenerationRule>,
    limit: Option<&'a RateLimit>,
    /// Where to move the candidates first, and the run they are filed under.
    quarantine: Option<(&'a Quarantine, &'a str)>,
}

impl<'a> BatchSweep<'a> {
    fn new(
        dir: &'a PlanDir,
        summary: &'a PlanSummary,
        store: &'a Location,
        limit: Option<&'a RateLimit>,
        quarantine: Option<&'a Quarantine>,
    ) -> Self {
        BatchSweep {
            dir,
            store,
            rule: summary.selection.rule(),
            limit,
            quarantine: quarantine.map(|q| (q, summary.run_id.as_str())),
        }
    }

    /// Deletes one batch: every key (moved into quarantine first when there is one), retried
    /// with backoff until confirmed deleted (a key already gone is deleted), then marks the
    /// batch done. An error leaves the batch pending.
    async fn sweep(&self, name: &str) -> Result<BatchOutcome> {
        let (dir, store) = (self.dir, self.store);
        let rows = dir.read_batch(name).await?;
        let mut outcome = BatchOutcome::default();
        let mut remaining = HashSet::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        for (id, size) in rows {
            if let Some(rule) = self.rule
                && rule.classify(&id) != IdClass::Eligible
            {
                return Err(Error::aborted(format!(
                    "deletion batch {name} holds {id:?}, which is not eligible for deletion: the plan is corrupt"
                )));
            }
            // An id listed twice (a repeated inventory row) is one blob.
            if remaining.insert(path_of(&store.path, &id)?) {
                outcome.deleted += 1;
                outcome.bytes += size;
                ids.push(id);
            }
        }
        let (mut backoff, mut attempt) = (Duration::from_millis(200), 0);
        loop {
            if let Some(limit) = self.limit {
                limit.acquire(remaining.len()).await;
            }
            let round = match self.quarantine {
                Some((q, run_id)) => match q.copy_in(store, run_id, &ids).await {
                    Ok(()) => delete_round(store, &mut remaining).await,
                    Err(e) => Some(e.to_string()),
                },
                None => delete_round(store, &mut remaining).await,
            };
            match round {
                None => {
                    dir.mark_done(name, &outcome).await?;
                    return Ok(outcome);
                }
                Some(error) if attempt == KEY_RETRIES => {
                    return Err(Error::runtime(format!(
                        "{} key(s) not deleted: {error}",
                        remaining.len()
                    )));
                }
                Some(error) => {
                    tracing::info!(batch = name, attempt, %error, "retrying keys not confirmed deleted");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    attempt += 1;
                    // Copy again only what is still in the store.
                    ids.retain(|id| path_of(&store.path, id).is_ok_and(|p| remaining.contains(&p)));
                }
            }
        }
    }
}

/// One bulk delete of `remaining`; removes the keys confirmed deleted. `None` when every key
/// is gone, else the first error.
async fn delete_round(store: &Location, remaining: &mut HashSet<Path>) -> Option<String> {
    let sent = remaining.len();
    let keys: Vec<_> = remaining.iter().cloned().map(Ok).collect();
    let mut results = store
        .store
        .delete_stream(futures::stream::iter(keys).boxed());
    let (mut confirmed, mut error) = (0, None);
    while let Some(result) = results.next().await {
        match result {
            Ok(path) => {
                remaining.remove(&path);
                confirmed += 1;
            }
            // Already gone; the error's path is not always the key (a file path on local disks).
            Err(object_store::Error::NotFound { .. }) => confirmed += 1,
            Err(e) => {
                error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    match error {
        None if confirmed == sent => {
            remaining.clear();
            None
        }
        None => Some(format!("{} of {sent} keys got no answer", sent - confirmed)),
        some => some,
    }
}
