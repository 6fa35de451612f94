//! The plan of a mode whose candidates a table selected (`blobgc incremental`, `blobgc uploads`):
//! written like a mark phase's (deletion batches and a summary, [`Selection::Table`]) and swept
//! by the same sweep, which then tells which ids it deleted.

use crate::error::Result;
use crate::plan_dir::{BatchWriter, PlanDir};
use crate::progress::Progress;
use crate::store::Location;
use crate::summary::{PlanCounts, PlanSummary, Selection, SourceSummary};
use crate::sweep::{self, SweepMetrics, SweepOptions};
use arrow::array::{Int64Array, RecordBatch, StringArray};
use std::sync::Arc;

/// The candidates and what they were selected from.
pub struct TablePlan<'a> {
    pub run_id: &'a str,
    pub store: &'a Location,
    pub sources: Vec<SourceSummary>,
    /// Counts beyond the candidates', which are counted here.
    pub counts: PlanCounts,
    pub batch_size: usize,
    /// Each candidate's id and size.
    pub candidates: &'a [(&'a str, i64)],
}

/// Writes `plan`'s candidates as deletion batches in `dir`, and its summary, ready to sweep.
pub async fn write(dir: &PlanDir, plan: TablePlan<'_>) -> Result<PlanSummary> {
    let mut writer = BatchWriter::new(dir.clone(), format!("{}-t", plan.run_id), plan.batch_size);
    for chunk in plan.candidates.chunks(plan.batch_size.max(1)) {
        let ids = StringArray::from_iter_values(chunk.iter().map(|(id, _)| *id));
        let sizes = Int64Array::from_iter_values(chunk.iter().map(|(_, s)| *s));
        writer
            .push(RecordBatch::try_new(
                crate::listing::schema(),
                vec![Arc::new(ids), Arc::new(sizes)],
            )?)
            .await?;
    }
    writer.flush(true).await?;
    let candidate_bytes = plan
        .candidates
        .iter()
        .map(|(_, s)| (*s).max(0) as u64)
        .sum();
    let summary = PlanSummary {
        sources: plan.sources,
        counts: PlanCounts {
            candidate_count: plan.candidates.len() as u64,
            candidate_bytes,
            candidates_by_generation: writer.generations.counts(),
            ..plan.counts
        },
        batch_size: plan.batch_size,
        batches: writer.written,
        verified: true,
        ..PlanSummary::new(
            plan.run_id,
            plan.store.url(),
            Selection::Table,
            chrono::Utc::now(),
        )
    };
    dir.write_summary(&summary).await?;
    Ok(summary)
}

/// Sweeps the plan in `dir`: its metrics, and the ids of the batches it completed (a failed
/// batch's ids are left for the next run).
pub async fn sweep(
    dir: &PlanDir,
    options: &SweepOptions,
    progress: &Progress,
) -> Result<(SweepMetrics, Vec<String>)> {
    let (_, metrics) = sweep::sweep(dir, options, progress).await?;
    let mut deleted = Vec::new();
    for name in dir.done().await? {
        deleted.extend(dir.read_batch(&name).await?.into_iter().map(|(id, _)| id));
    }
    Ok((metrics, deleted))
}
