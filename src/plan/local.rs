//! The steps of a plan that differ in this process: the references' fingerprints, spilled to
//! `TMPDIR` by one pass ([`crate::spill`]), build the filter and settle the verification; the
//! probe's partitions run as tasks of this process, each writing its own batches.

use super::probe::{self, Probed, Verdict};
use super::sizing::Shape;
use super::{Built, Run};
use crate::error::{Error, Result};
use crate::filter::FilterParams;
use crate::job::Strategy;
use crate::plan_dir::{BatchWriter, PlanDir};
use crate::spill::Fingerprinted;
use crate::summary::{MALFORMED_EXAMPLES, PlanSummary};
use crate::verify::{self, Fingerprints};
use datafusion::prelude::DataFrame;
use std::sync::Arc;

/// The filter of every spilled reference, shaped by `shape`, stored in `dir` as `stem`.
pub(super) async fn build_filter(
    spill: &Fingerprinted,
    shape: &Shape,
    dir: &PlanDir,
    stem: &str,
) -> Result<Built> {
    let filter = spill
        .build_filter(shape.params, shape.shards, shape.fpp)
        .await?;
    let (location, checksum) = dir.write_filter(stem, &filter).await?;
    Ok(Built {
        params: filter.params(),
        shards: filter.count(),
        stats: filter.stats(),
        filter: Some(filter),
        stem: stem.to_string(),
        location,
        checksum,
        ids: spill.ids,
    })
}

/// Every partition of `frame` probed by a task of its own, writing its batches; with
/// `fingerprints`, the candidates are fingerprinted as they are found, for the verification.
pub(super) async fn probe(
    run: &Run<'_>,
    frame: DataFrame,
    verdict: Verdict,
    fingerprints: bool,
) -> Result<Probed> {
    let job = run.job;
    let verdict = Arc::new(verdict);
    let partitions = frame.execute_stream_partitioned().await?;
    // A JoinSet: should one partition fail, dropping it stops the others writing batches.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, stream) in partitions.into_iter().enumerate() {
        let prefix = format!("{}-p{i:04}", job.run_id);
        tasks.spawn(probe::partition(
            stream,
            Arc::clone(&verdict),
            BatchWriter::new(run.dir.clone(), prefix, job.batch_size),
            fingerprints.then(Fingerprints::default),
            job.verify_limit,
            run.progress.clone(),
        ));
    }
    let mut all = Probed {
        counts: Default::default(),
        batches: Vec::new(),
        fingerprints: fingerprints.then(Fingerprints::default),
    };
    while let Some(done) = tasks.join_next().await {
        let p = done.map_err(|e| Error::runtime(format!("probe task failed: {e}")))??;
        all.counts.add(p.counts);
        all.batches.extend(p.batches);
        // One partition past the limit leaves the set incomplete: nobody gets it.
        all.fingerprints = all.fingerprints.zip(p.fingerprints).map(|(mut all, part)| {
            all.extend(part);
            all
        });
    }
    Ok(all)
}

/// The verification in this process. The candidates' fingerprints (from the probe, or read
/// back from the batches past `--verify-limit` under `--verify exact`) are matched against the
/// spilled ones first: no match settles it without reading the references again. A match, a
/// missing spill, or the exact strategy (which counts the references here) reads them once.
pub(super) async fn verify(
    run: &Run<'_>,
    references: DataFrame,
    summary: &mut PlanSummary,
    verify: bool,
    fingerprints: Option<Fingerprints>,
    spill: Option<Fingerprinted>,
) -> Result<Vec<String>> {
    let job = run.job;
    let exact = job.strategy == Strategy::Exact;
    let fingerprints = match fingerprints {
        Some(set) if verify => Some(Arc::new(set)),
        None if verify => Some(Arc::new(
            verify::fingerprints(run.dir, &summary.batches).await?,
        )),
        _ => None,
    };
    let references_needed = match (&fingerprints, &spill) {
        (Some(set), Some(spill)) => {
            run.progress.step(
                "verifying candidates against every reference's fingerprint",
                "",
            );
            verify::spill_matches(spill, set).await? > 0
        }
        _ => true,
    };
    drop(spill);
    if !(exact || fingerprints.is_some() && references_needed) {
        return Ok(Vec::new());
    }
    run.progress
        .step("verifying candidates against every reference", "");
    let distinct = exact.then(|| {
        let rows = summary.sources.iter().map(|s| s.id_values()).sum();
        let seed = FilterParams::seed_from_salt(&job.salt);
        FilterParams::for_items(job.expected_references.unwrap_or(rows), job.fpp, seed)
    });
    let checked = verify::check_references(references, fingerprints, distinct).await?;
    if exact {
        summary.counts.reference_count = checked.ids;
        summary.counts.null_reference_count = checked.rows - checked.ids;
    }
    if let Some(d) = &checked.distinct {
        summary.counts.distinct_reference_count = d.estimated_items() as u64;
    }
    verify::confirm(
        run.dir,
        &summary.batches,
        &checked.suspects,
        MALFORMED_EXAMPLES,
    )
    .await
}
