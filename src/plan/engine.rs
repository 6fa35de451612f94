//! Where a plan's stages run: in this process, or on a Ballista cluster. The steps of
//! [`super::plan`] are the same; what differs is here, once.
//!
//! | step | in-process | cluster |
//! | --- | --- | --- |
//! | references | read once: fingerprints spilled to `TMPDIR`, distinct count sketched | read for an estimate (unless the last run gives one), then for the filter |
//! | filter | built from the spill, partial filter per file, inserts grouped by shard | fingerprints shuffled by shard; `blobgc_bloom_build` per shard in the reduce task, which stores it (`blobgc_store_shard`) |
//! | probe | the filter in memory, one pass per batch | ids shuffled by shard; `blobgc_bloom_contains`: each task loads its shards once |
//! | verify | the spilled fingerprints; the references only on a match | the candidates' filter, streamed past by every reference |

use super::cluster;
use super::local;
use super::probe::{self, Lookup, Probed};
use super::sizing::Shape;
use super::{Built, Run};
use crate::error::Result;
use crate::job::Strategy;
use crate::listing::{self, BLOB_ID};
use crate::plan_dir::PlanDir;
use crate::spill::{self, Fingerprinted};
use crate::summary::PlanSummary;
use crate::verify::Fingerprints;
use datafusion::functions::string::expr_fn::starts_with;
use datafusion::logical_expr::{col, lit, not};
use datafusion::prelude::{DataFrame, SessionContext};

pub(super) enum Engine {
    /// This process; after [`Engine::fingerprint`], the references' fingerprints in a local
    /// spill, until the verification has read them.
    Local {
        ctx: SessionContext,
        spill: Option<Fingerprinted>,
    },
    /// A Ballista cluster: every stage runs on its executors.
    Cluster { ctx: SessionContext },
}

impl Engine {
    pub async fn connect(run: &Run<'_>) -> Result<Engine> {
        let job = run.job;
        Ok(match &job.scheduler {
            Some(url) => Engine::Cluster {
                ctx: crate::cluster::remote(url, job.partitions, &job.s3).await?,
            },
            None => Engine::Local {
                ctx: crate::session::local(job.partitions, &job.s3)?,
                spill: None,
            },
        })
    }

    pub fn ctx(&self) -> &SessionContext {
        match self {
            Engine::Local { ctx, .. } | Engine::Cluster { ctx } => ctx,
        }
    }

    /// In-process, one pass over the references fingerprints them into a local spill and
    /// sketches their distinct count, returned: the filter is built from the spill and the
    /// verification reads it, so the references are read once. None on a cluster, whose
    /// executors share no disk, or when the spill cannot be written.
    pub async fn fingerprint(
        &mut self,
        run: &Run<'_>,
        references: &DataFrame,
    ) -> Result<Option<u64>> {
        let Engine::Local { spill, .. } = self else {
            return Ok(None);
        };
        run.progress.step("fingerprinting the references", "rows");
        *spill = spill::fingerprint_references(references.clone(), &run.job.run_id, run.progress)
            .await?;
        Ok(spill.as_ref().map(Fingerprinted::distinct))
    }

    /// The filter of every reference, shaped by `shape`, stored in `dir` as `stem`.
    pub async fn build_filter(
        &self,
        references: &DataFrame,
        shape: &Shape,
        dir: &PlanDir,
        stem: &str,
    ) -> Result<Built> {
        match self {
            Engine::Local {
                spill: Some(spill), ..
            } => local::build_filter(spill, shape, dir, stem).await,
            _ => cluster::by_aggregate(references.clone(), shape, dir, stem).await,
        }
    }

    /// Lists the store (or reads the inventory) and probes every listed id with `lookup`,
    /// fingerprinting the candidates when `fingerprints` (in-process only).
    pub async fn probe(&self, run: &Run<'_>, lookup: Lookup, fingerprints: bool) -> Result<Probed> {
        let job = run.job;
        match self {
            Engine::Local { ctx, .. } => {
                let listed = match &job.inventory {
                    Some(url) => listing::inventory(ctx, url).await?,
                    None => listing::live(ctx, &run.store, job.list_concurrency).await?,
                };
                let listed = without_quarantine(run, listed)?;
                let (frame, verdict) = probe::frame(listed, lookup, run.rule, job.partitions)?;
                local::probe(run, frame, verdict, fingerprints).await
            }
            Engine::Cluster { ctx } => {
                // A live listing streams from this process: executors read it as an inventory.
                let url = match &job.inventory {
                    Some(url) => url.clone(),
                    None => {
                        let local = crate::session::local(job.partitions, &job.s3)?;
                        cluster::listing_as_inventory(
                            &local,
                            &run.store,
                            job.list_concurrency,
                            run.dir,
                            &job.run_id,
                        )
                        .await?
                    }
                };
                let listed = without_quarantine(run, listing::inventory(ctx, &url).await?)?;
                let (frame, _) = probe::frame(listed, lookup, run.rule, job.partitions)?;
                let prefix = format!("{}-c", job.run_id);
                let probed =
                    cluster::probe(frame, run.dir, prefix, job.batch_size, run.progress).await?;
                if job.inventory.is_none() {
                    run.dir
                        .delete_dir(&cluster::listing_dir(&job.run_id))
                        .await?;
                }
                Ok(probed)
            }
        }
    }

    /// The exact check of the candidates against every reference when `verify`, and for the
    /// exact strategy the reference counts it has no filter to take them from (into
    /// `summary`). Returns the referenced candidates found: none, unless the filter missed a
    /// reference.
    pub async fn verify(
        &mut self,
        run: &Run<'_>,
        references: DataFrame,
        summary: &mut PlanSummary,
        verify: bool,
        fingerprints: Option<Fingerprints>,
    ) -> Result<Vec<String>> {
        let exact = run.job.strategy == Strategy::Exact;
        match self {
            Engine::Local { spill, .. } => {
                let spill = spill.take();
                local::verify(run, references, summary, verify, fingerprints, spill).await
            }
            Engine::Cluster { .. } => {
                if exact {
                    run.progress.step("counting references", "");
                    let c = cluster::count_references(references.clone()).await?;
                    summary.counts.reference_count = c.ids;
                    summary.counts.null_reference_count = c.rows - c.ids;
                    summary.counts.distinct_reference_count = c.distinct;
                }
                if !verify {
                    return Ok(Vec::new());
                }
                run.progress
                    .step("verifying candidates against every reference", "");
                let c = &summary.counts;
                cluster::verify(
                    run.dir,
                    &summary.run_id,
                    &summary.salt,
                    c.candidate_count,
                    &summary.batches,
                    references,
                )
                .await
            }
        }
    }
}

/// The listing less the quarantine, when it lies inside the store.
fn without_quarantine(run: &Run<'_>, listed: DataFrame) -> Result<DataFrame> {
    Ok(match &run.quarantine {
        Some(prefix) => listed.filter(not(starts_with(col(BLOB_ID), lit(prefix.as_str()))))?,
        None => listed,
    })
}
