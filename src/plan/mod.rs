//! The mark phase: references -> merged Bloom filter -> probe of the listing -> deletion batches.
//!
//! **What it selects for deletion:** listed blobs whose id is eligible under the generation
//! rule (an older generation of the configured family, another family, or family 0) and that
//! the run's Bloom filter says no reference source holds. **The danger:** a blob referenced by
//! an entity missing from the sources looks like garbage. So planning stops (status `aborted`,
//! nothing to sweep) on any doubt about the inputs: a missing or empty source, a malformed listed
//! id, a filter fuller than it was sized for, a breaker, or a candidate the exact verification
//! finds referenced. Planning never deletes; see [`mod@crate::sweep`].
//!
//! The work is split the Spark way, by shard of the filter (the top bits of an id's
//! fingerprint, [`crate::filter::Sharded`]): the references' fingerprints are routed to their
//! shard, each shard's filter is built and stored next to the plan by content hash, and the
//! listing's ids, routed the same way when the filter is large, are probed against their
//! shard's filter only (a small filter is loaded whole by each process instead); every
//! partition of the probe writes its own deletion batches.
//!
//! [`plan`] reads as its steps; each is a function of this folder:
//! - `sizing`: how large the filter is; `build`: the filter step;
//! - `probe`: the verdicts on listed ids and their counts;
//! - `engine`: what differs between this process (`local`) and a cluster (`cluster`).

mod build;
mod cluster;
mod engine;
mod local;
mod probe;
mod sizing;

use crate::error::{Error, Result};
use crate::filter::{FilterParams, FilterStats, Sharded};
use crate::generation::GenerationRule;
use crate::guards;
use crate::job::{Job, Strategy, Verify};
use crate::plan_dir::PlanDir;
use crate::plan_root::PlanRoot;
use crate::postgres::Snapshots;
use crate::progress::Progress;
use crate::references::{self, OpenedSource};
use crate::store::Location;
use crate::summary::{PlanSummary, Selection, SourceSummary};
use datafusion::prelude::DataFrame;
use engine::Engine;
use probe::Lookup;
use std::time::Instant;

/// What every step of a plan reads: the job and where it plans, checked.
pub(crate) struct Run<'a> {
    job: &'a Job,
    dir: &'a PlanDir,
    progress: &'a Progress,
    rule: GenerationRule,
    store: Location,
    /// The key prefix left out of the listing: a quarantine inside the store.
    quarantine: Option<String>,
    root: Option<PlanRoot>,
}

/// The run's filter as it was stored.
pub(crate) struct Built {
    /// The filter itself where it was built in this process; a cluster's stays in storage.
    filter: Option<Sharded>,
    /// All its shards' bits together, its shard count, how full it came out.
    params: FilterParams,
    shards: u32,
    stats: FilterStats,
    /// Its name in the plan directory, its manifest's URL and the manifest's SHA-256.
    stem: String,
    location: String,
    checksum: String,
    /// Non-null reference ids read to build it.
    ids: u64,
}

impl Built {
    /// How the probe looks ids up in this filter: in memory where it is, else by location,
    /// each task loading the shards of the ids it is sent.
    fn lookup(self) -> Lookup {
        match self.filter {
            Some(filter) => Lookup::InMemory(std::sync::Arc::new(filter)),
            None => Lookup::Stored {
                routes: probe::routes(self.shards, self.stats.num_bits),
                location: self.location,
                checksum: self.checksum,
            },
        }
    }
}

/// Plans a GC run of `job` into `dir`. An aborted plan is `Ok` with status `Aborted` (its
/// summary is written too, so an operator sees why); `Err` is a failure to plan at all.
pub async fn plan(job: &Job, dir: &PlanDir, progress: &Progress) -> Result<PlanSummary> {
    let run = check(job, dir, progress)?;
    let mut summary = new_summary(&run);
    let mut engine = Engine::connect(&run).await?;
    match mark(&run, &mut engine, &mut summary).await {
        Ok(()) => {
            dir.write_summary(&summary).await?;
            Ok(summary)
        }
        Err(Error::Aborted(reason)) => guards::abort(dir, summary, reason).await,
        Err(e) => Err(e),
    }
}

/// The job checked, and the places it names kept apart: a plan, plan root or quarantine inside
/// the store would be listed as blobs.
fn check<'a>(job: &'a Job, dir: &'a PlanDir, progress: &'a Progress) -> Result<Run<'a>> {
    job.validate()?;
    let rule = GenerationRule::new(job.family, job.generation_duration_seconds, job.now)?;
    let store = Location::parse_store(&job.store, "--store", &job.s3)?;
    guards::outside_store(&store, &dir.location, "the plan directory")?;
    let root = match job.plan_root.as_deref() {
        Some(root) => Some(PlanRoot::parse(root, &job.s3)?),
        None => None,
    };
    if let Some(root) = &root {
        guards::outside_store(&store, &root.location, "the plan root")?;
    }
    let quarantine = match job.quarantine.as_deref() {
        Some(q) => guards::quarantine_exclusion(&store, q, &job.s3)?,
        None => None,
    };
    Ok(Run {
        job,
        dir,
        progress,
        rule,
        store,
        quarantine,
        root,
    })
}

fn new_summary(run: &Run<'_>) -> PlanSummary {
    let job = run.job;
    let selection = Selection::Generations {
        family: run.rule.family,
        generation_duration_seconds: job.generation_duration_seconds,
        current_generation: run.rule.current_generation,
    };
    PlanSummary {
        inventory: job.inventory.clone(),
        salt: job.salt.clone(),
        batch_size: job.batch_size,
        plan_root: run.root.as_ref().map(|r| r.location.url()),
        lease_ttl_seconds: job.lease_ttl_seconds,
        quarantine: job.quarantine.clone(),
        ..PlanSummary::new(&job.run_id, run.store.url(), selection, job.now)
    }
}

/// The steps of a plan, filling `summary`; a safety check that fails is `Err(Aborted)`.
async fn mark(run: &Run<'_>, engine: &mut Engine, summary: &mut PlanSummary) -> Result<()> {
    let job = run.job;
    let duration = job.generation_duration_seconds;
    if let Some(reason) = guards::short_generation(duration, job.allow_short_generations) {
        return Err(Error::aborted(reason));
    }
    if job.check_clock {
        let store_now = run.dir.store_clock(job.now).await?;
        if let Some(reason) = guards::clock_skew(job.now, store_now, job.max_clock_skew_seconds) {
            return Err(Error::aborted(reason));
        }
    }
    let started = Instant::now();
    let sources = open_sources(run, engine, summary).await?;
    summary.references_seconds = started.elapsed().as_secs_f64();
    let previous = compare_with_previous(run, summary).await?;
    let references = all_references(&sources)?;

    let started = Instant::now();
    let built = match job.strategy {
        Strategy::Bloom => {
            Some(build::filter(run, engine, &references, previous.as_ref(), summary).await)
        }
        Strategy::Exact => None,
    };
    summary.filter_seconds = started.elapsed().as_secs_f64();
    let lookup = match built.transpose()? {
        Some(built) => built.lookup(),
        None => Lookup::Exact(references.clone()),
    };

    let started = Instant::now();
    run.progress.step("listing and probing blobs", "blobs");
    let verifying = job.strategy == Strategy::Bloom && job.verify != Verify::Off;
    let probed = engine.probe(run, lookup, verifying).await?;
    summary.counts.add(probed.counts);
    summary.batches = probed.batches;
    summary.batches.sort();
    summary.listing_seconds = started.elapsed().as_secs_f64();
    check_probe(job, summary)?;

    let started = Instant::now();
    let verify = must_verify(job, summary);
    let found = engine
        .verify(run, references, summary, verify, probed.fingerprints)
        .await?;
    summary.verified = verify || job.strategy == Strategy::Exact;
    summary.verify_seconds = started.elapsed().as_secs_f64();
    check_references(job, summary, &found)
}

/// Every source checked and opened (a missing or empty one aborts the run).
async fn open_sources(
    run: &Run<'_>,
    engine: &Engine,
    summary: &mut PlanSummary,
) -> Result<Vec<OpenedSource>> {
    run.progress.step("checking reference sources", "");
    let mut sources = Vec::new();
    let mut snapshots = Snapshots::default();
    for spec in &run.job.references {
        sources.push(references::open(engine.ctx(), spec, &mut snapshots).await?);
    }
    summary.sources = sources
        .iter()
        .map(|s| SourceSummary {
            spec: s.spec.clone(),
            rows: s.rows,
            snapshot: s.snapshot.clone(),
        })
        .collect();
    Ok(sources)
}

/// The last planned run against the same store, if any; a source that shrank too much since,
/// or a generation rule that changed, stops the run.
async fn compare_with_previous(
    run: &Run<'_>,
    summary: &PlanSummary,
) -> Result<Option<PlanSummary>> {
    let Some(root) = &run.root else {
        return Ok(None);
    };
    let previous = root.previous(&summary.store, &summary.run_id).await?;
    if let Some(previous) = &previous {
        let allowed = run.job.allow_generation_change;
        let reason = guards::generation_change(&summary.selection, previous, allowed)
            .or_else(|| run.job.breakers.source_shrink(&summary.sources, previous));
        if let Some(reason) = reason {
            return Err(Error::aborted(reason));
        }
    }
    Ok(previous)
}

/// Every source's id columns as one `blob_id` column.
fn all_references(sources: &[OpenedSource]) -> Result<DataFrame> {
    let mut ids = sources.iter().map(|s| s.ids.clone());
    let mut all = ids.next().ok_or_else(|| {
        Error::usage("no reference source given (--refs or [[references]]): refusing to treat every blob as garbage")
    })?;
    for more in ids {
        all = all.union(more)?;
    }
    Ok(all)
}

/// After the probe: malformed ids, the delete-fraction breaker and the delete caps; ids of a
/// generation after the current one are kept, and said.
fn check_probe(job: &Job, summary: &PlanSummary) -> Result<()> {
    let c = &summary.counts;
    if c.future_id_count > 0 {
        tracing::warn!(
            count = c.future_id_count,
            examples = ?c.future_ids,
            current_generation = ?summary.selection.rule().map(|r| r.current_generation),
            "listed ids of a generation after the current one: kept; this run's clock may be behind, or a writer's ahead"
        );
    }
    if c.malformed_id_count > 0 && !job.ignore_malformed {
        return Err(Error::aborted(format!(
            "{} listed blob id(s) do not parse, e.g. {:?}: the store prefix may be wrong \
             (--ignore-malformed keeps them and goes on)",
            c.malformed_id_count, c.malformed_ids
        )));
    }
    let b = &job.breakers;
    match b
        .delete_fraction(c.candidate_count, c.eligible_blob_count)
        .or_else(|| b.delete_caps(c.candidate_count, c.candidate_bytes))
    {
        Some(reason) => Err(Error::aborted(reason)),
        None => Ok(()),
    }
}

/// Whether the candidates are checked exactly against every reference (`--verify`).
fn must_verify(job: &Job, summary: &PlanSummary) -> bool {
    !summary.batches.is_empty()
        && job.strategy == Strategy::Bloom
        && match job.verify {
            Verify::Exact => true,
            Verify::Off => false,
            Verify::Auto => summary.counts.candidate_count <= job.verify_limit,
        }
}

/// After the verification: references naming no listed blob (the missing-references breaker),
/// and any candidate a reference names (`found`), which would be a Bloom filter bug.
fn check_references(job: &Job, summary: &mut PlanSummary, found: &[String]) -> Result<()> {
    if let Some(f) = &summary.filter {
        summary.counts.distinct_reference_count = f.estimated_items;
    }
    let fpp = summary.filter.as_ref().map_or(0.0, |f| f.estimated_fpp);
    let c = &mut summary.counts;
    c.missing_reference_count = sizing::missing_references(c, fpp);
    if !found.is_empty() {
        return Err(Error::aborted(format!(
            "exact verification found referenced blobs among the candidates, e.g. {found:?}: \
             the Bloom filter missed references, a bug; please report it"
        )));
    }
    match job
        .breakers
        .missing_references(c.missing_reference_count, c.distinct_reference_count)
    {
        Some(reason) => Err(Error::aborted(reason)),
        None => Ok(()),
    }
}
