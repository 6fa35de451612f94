//! The filter step: size the filter for the distinct references, cut it into shards, build
//! each (partial filters OR-merged, then folded), store them next to the plan, and stop the run when it came out fuller
//! than `--max-fpp` allows.

use super::engine::Engine;
use super::sizing::{self, RESIZE_ABOVE, Shape};
use super::{Built, Run};
use crate::error::{Error, Result};
use crate::summary::{FilterSummary, PlanSummary};
use datafusion::prelude::DataFrame;

/// The run's filter of `references` (`rows` id values), sized from the job, the engine's
/// sketch, the `previous` run or an estimating pass, in that order; its figures go into
/// `summary`. An estimate from the last run that turns out short is replaced by a fresh one.
pub(super) async fn filter(
    run: &Run<'_>,
    engine: &mut Engine,
    references: &DataFrame,
    previous: Option<&PlanSummary>,
    summary: &mut PlanSummary,
) -> Result<Built> {
    let job = run.job;
    let rows: u64 = summary.sources.iter().map(|s| s.id_values()).sum();
    let sketched = engine
        .fingerprint(run, references)
        .await?
        .map(|d| sizing::with_margin(d, rows));
    let from_previous = previous.and_then(|p| sizing::distinct_from_previous(p, rows));
    let guessed = job.expected_references.is_none() && sketched.is_none();
    let mut expected = match job.expected_references.or(sketched).or(from_previous) {
        Some(n) => n,
        None => estimate(run, references, rows).await?,
    };
    run.progress
        .step("building the Bloom filter of references", "");
    let stem = format!("filter-{}", job.run_id);
    let mut shape = Shape::new(job, expected)?;
    let mut built = engine
        .build_filter(references, &shape, run.dir, &stem)
        .await?;
    let mut stats = built.stats;
    if guessed && from_previous.is_some() && stats.estimated_fpp > job.fpp * RESIZE_ABOVE {
        tracing::info!(
            estimated_fpp = stats.estimated_fpp,
            sized_for = expected,
            "more distinct references than the last run suggested: estimating them and building the filter again"
        );
        run.dir.delete_filter(&built.stem).await?;
        expected = estimate(run, references, rows).await?;
        shape = Shape::new(job, expected)?;
        let stem = format!("{stem}-resized");
        built = engine
            .build_filter(references, &shape, run.dir, &stem)
            .await?;
        stats = built.stats;
    }
    summary.counts.reference_count = built.ids;
    summary.counts.null_reference_count = rows.saturating_sub(built.ids);
    summary.filter = Some(FilterSummary {
        params: built.params,
        shards: built.shards,
        expected_items: expected,
        requested_fpp: job.fpp,
        max_fpp: job.max_fpp,
        estimated_fpp: stats.estimated_fpp,
        fill_ratio: stats.fill_ratio,
        estimated_items: stats.estimated_items as u64,
        built_bits: shape.params.num_bits * u64::from(shape.shards),
        location: built.location.clone(),
        checksum: built.checksum.clone(),
    });
    if stats.estimated_fpp > job.max_fpp {
        return Err(Error::aborted(format!(
            "the merged Bloom filter's estimated false-positive rate {:.4} exceeds --max-fpp {}: \
             it holds more distinct ids than the {expected} it was sized for (raise --expected-references)",
            stats.estimated_fpp, job.max_fpp
        )));
    }
    Ok(built)
}

async fn estimate(run: &Run<'_>, references: &DataFrame, rows: u64) -> Result<u64> {
    run.progress.step("estimating the distinct references", "");
    sizing::distinct_estimate(references.clone(), rows).await
}
