//! The sweep: executes a plan's deletion batches against the store.
//!
//! **What it deletes:** exactly the ids in the batches listed by a `planned` summary, and
//! before each batch it re-checks that every id is still eligible under the plan's generation
//! rule (a corrupted or hand-edited batch aborts instead of deleting an active blob).
//! **Resuming:** a batch is marked done only once every key in it is gone, so a rerun after a
//! crash skips finished batches and redoes the rest; a key already gone counts as deleted.
//! A batch with any failed key adds 1 to `error_count` (as James) and stays pending.

use crate::error::{Error, Result};
use crate::generation::{GenerationRule, IdClass};
use crate::listing::path_of;
use crate::plan::{PlanStatus, PlanSummary};
use crate::plan_dir::{BatchOutcome, PlanDir};
use crate::store::Location;
use futures::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

/// Options of a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Batches deleted at once.
    pub concurrency: usize,
    /// The store to delete from, when not the one the plan was made for (e.g. another endpoint).
    pub store: Option<String>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            concurrency: 4,
            store: None,
        }
    }
}

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepMetrics {
    pub batch_count: u64,
    /// Batches found already done (a resumed sweep).
    pub skipped_batch_count: u64,
    pub gced_blob_count: u64,
    pub gced_bytes: u64,
    pub error_count: u64,
    pub failed_batches: Vec<FailedBatch>,
    pub sweep_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedBatch {
    pub batch: String,
    pub error: String,
}

/// Sweeps the plan in `dir`. Refuses (exit 3) a plan that was aborted.
pub async fn sweep(
    dir: &PlanDir,
    options: &SweepOptions,
    progress: &ProgressBar,
) -> Result<(PlanSummary, SweepMetrics)> {
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
    let store = Location::parse(
        options.store.as_deref().unwrap_or(&summary.store),
        "--store",
    )?;
    let rule = GenerationRule {
        family: summary.family,
        current_generation: summary.current_generation,
    };
    let done = dir.done().await?;
    let pending: Vec<String> = summary
        .batches
        .iter()
        .filter(|b| !done.contains(*b))
        .cloned()
        .collect();
    let mut metrics = SweepMetrics {
        batch_count: summary.batches.len() as u64,
        skipped_batch_count: (summary.batches.len() - pending.len()) as u64,
        ..SweepMetrics::default()
    };
    progress.set_length(pending.len() as u64);
    let mut results = futures::stream::iter(pending)
        .map(|name| {
            let (store, rule) = (&store, rule);
            async move {
                let result = sweep_batch(dir, store, rule, &name).await;
                (name, result)
            }
        })
        .buffer_unordered(options.concurrency.max(1));
    while let Some((name, result)) = results.next().await {
        progress.inc(1);
        match result {
            Ok(BatchResult {
                outcome,
                failure: None,
            }) => {
                metrics.gced_blob_count += outcome.deleted;
                metrics.gced_bytes += outcome.bytes;
            }
            Ok(BatchResult {
                outcome,
                failure: Some(error),
            }) => {
                metrics.gced_blob_count += outcome.deleted;
                metrics.gced_bytes += outcome.bytes;
                metrics.error_count += 1;
                metrics
                    .failed_batches
                    .push(FailedBatch { batch: name, error });
            }
            Err(e @ Error::Aborted(_)) => return Err(e),
            Err(e) => {
                metrics.error_count += 1;
                metrics.failed_batches.push(FailedBatch {
                    batch: name,
                    error: e.to_string(),
                });
            }
        }
    }
    metrics.failed_batches.sort_by(|a, b| a.batch.cmp(&b.batch));
    metrics.sweep_seconds = started.elapsed().as_secs_f64();
    Ok((summary, metrics))
}

struct BatchResult {
    outcome: BatchOutcome,
    failure: Option<String>,
}

async fn sweep_batch(
    dir: &PlanDir,
    store: &Location,
    rule: GenerationRule,
    name: &str,
) -> Result<BatchResult> {
    let rows = dir.read_batch(name).await?;
    let mut sizes = HashMap::with_capacity(rows.len());
    for (id, size) in rows {
        if rule.classify(&id) != IdClass::Eligible {
            return Err(Error::aborted(format!(
                "deletion batch {name} holds {id:?}, which is not eligible for deletion: the plan is corrupt"
            )));
        }
        sizes.insert(path_of(&store.path, &id)?, size);
    }
    let paths: Vec<_> = sizes.keys().cloned().map(Ok).collect();
    let mut deleted = store
        .store
        .delete_stream(futures::stream::iter(paths).boxed());
    let mut outcome = BatchOutcome::default();
    let mut failure = None;
    while let Some(result) = deleted.next().await {
        match result {
            Ok(path) => {
                outcome.deleted += 1;
                outcome.bytes += sizes.get(&path).copied().unwrap_or(0);
            }
            // Already gone (a resumed batch, or deleted by hand): deleted, but reclaims nothing now.
            Err(object_store::Error::NotFound { .. }) => outcome.deleted += 1,
            Err(e) => {
                failure.get_or_insert_with(|| e.to_string());
            }
        }
    }
    if failure.is_none() && outcome.deleted < sizes.len() as u64 {
        failure = Some(format!(
            "{} of {} keys were not confirmed deleted",
            sizes.len() as u64 - outcome.deleted,
            sizes.len()
        ));
    }
    if failure.is_none() {
        dir.mark_done(name, &outcome).await?;
    }
    Ok(BatchResult { outcome, failure })
}
