//! The mark phase: references -> merged Bloom filter -> probe of the listing -> deletion batches.
//!
//! **What it selects for deletion:** listed blobs whose id is eligible under the generation
//! rule (an older generation of the configured family, another family, or family 0) and that
//! the run's Bloom filter says no reference source holds. **The danger:** a blob referenced by
//! an entity missing from the sources looks like garbage. So planning stops (status `aborted`,
//! nothing to sweep) on any doubt about the inputs: a missing or empty source, a malformed listed
//! id, or a filter fuller than it was sized for. Planning never deletes; see [`crate::sweep`].
//!
//! The work is split the Spark way: every partition of the reference scan builds a partial
//! filter, the partials are OR-merged in a reduce stage, the merged filter is stored next to the
//! plan, and every partition of the listing probes it and writes its own deletion batches.
//! In-process, the reference scan writes fingerprints instead ([`crate::spill`]), and the
//! partial filters are built from each partition's file of them.

use crate::error::{Error, Result};
use crate::filter::{Bloom, FilterParams, StoredFilter, fingerprint};
use crate::functions;
use crate::functions::for_each_id;
use crate::generation::{GenerationRule, IdClass};
use crate::job::{Job, Strategy, Verify};
use crate::listing::{self, BLOB_ID, SIZE};
use crate::plan_dir::{BatchWriter, PlanDir};
use crate::plan_root::PlanRoot;
use crate::references::{self, OpenedSource, SourceSpec};
use crate::spill;
use crate::store::Location;
use crate::verify;
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt8Array};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Int64Type, UInt8Type};
use chrono::{DateTime, Utc};
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::functions::string::expr_fn::starts_with;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{approx_distinct, count, sum};
use datafusion::logical_expr::{JoinType, Partitioning, cast as cast_expr, col, lit, not, when};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use futures::TryStreamExt;
use indicatif::ProgressBar;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// How many malformed ids a plan names.
const MALFORMED_EXAMPLES: usize = 5;
/// False-positive rate of the candidates' filter in the cluster's verification: few enough
/// suspects to compare all of them exactly on the client.
const SUSPECT_FPP: f64 = 1e-6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanStatus {
    /// The batches may be swept.
    Planned,
    /// A safety check failed: nothing may be deleted.
    Aborted,
}

/// Everything a plan found, stored as `summary.json`; the sweep and the report start from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Unique per plan; prefixes its batch names, so plans racing in one directory can never
    /// sweep each other's batches against the wrong store.
    pub run_id: String,
    pub status: PlanStatus,
    pub abort_reason: Option<String>,
    pub store: String,
    pub inventory: Option<String>,
    pub sources: Vec<SourceSummary>,
    pub now: DateTime<Utc>,
    pub generation_duration_seconds: u64,
    pub family: u32,
    pub current_generation: u64,
    pub salt: String,
    pub filter: Option<FilterSummary>,
    pub counts: PlanCounts,
    pub batch_size: usize,
    pub batches: Vec<String>,
    pub references_seconds: f64,
    pub filter_seconds: f64,
    pub listing_seconds: f64,
    /// Whether the candidates were checked exactly against every reference.
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub verify_seconds: f64,
    /// Where the sweep takes its lease, and for how long.
    #[serde(default)]
    pub plan_root: Option<String>,
    #[serde(default)]
    pub lease_ttl_seconds: u64,
    /// Candidates are moved here instead of deleted.
    #[serde(default)]
    pub quarantine: Option<String>,
    /// The ids come from a table whose own rules selected them (`blobgc incremental`, `blobgc
    /// uploads`), so the sweep does not re-apply the `{family}_{generation}_` rule.
    #[serde(default)]
    pub ids_from_table: bool,
}

impl PlanSummary {
    /// The summary of a plan whose candidates a table selected (`blobgc incremental`,
    /// `blobgc uploads`), ready to sweep.
    pub fn from_table(
        run_id: &str,
        store: &Location,
        sources: Vec<SourceSummary>,
        counts: PlanCounts,
        batch_size: usize,
        batches: Vec<String>,
    ) -> Self {
        PlanSummary {
            run_id: run_id.to_string(),
            status: PlanStatus::Planned,
            abort_reason: None,
            store: store.url(),
            inventory: None,
            sources,
            now: Utc::now(),
            generation_duration_seconds: 0,
            family: 0,
            current_generation: 0,
            salt: String::new(),
            filter: None,
            counts,
            batch_size,
            batches,
            references_seconds: 0.0,
            filter_seconds: 0.0,
            listing_seconds: 0.0,
            verified: true,
            verify_seconds: 0.0,
            plan_root: None,
            lease_ttl_seconds: 0,
            quarantine: None,
            ids_from_table: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceSummary {
    #[serde(flatten)]
    pub spec: SourceSpec,
    pub rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterSummary {
    #[serde(flatten)]
    pub params: FilterParams,
    pub expected_items: u64,
    pub requested_fpp: f64,
    pub max_fpp: f64,
    pub estimated_fpp: f64,
    pub fill_ratio: f64,
    /// Distinct ids the filter holds (estimated from its bits), and the size it was built at
    /// before folding to them.
    #[serde(default)]
    pub estimated_items: u64,
    #[serde(default)]
    pub built_bits: u64,
    pub location: String,
    /// SHA-256 of the encoded filter: every process loading it checks it.
    #[serde(default)]
    pub checksum: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanCounts {
    pub reference_count: u64,
    pub null_reference_count: u64,
    pub blob_count: u64,
    pub eligible_blob_count: u64,
    pub eligible_bytes: u64,
    pub malformed_id_count: u64,
    pub malformed_ids: Vec<String>,
    pub candidate_count: u64,
    pub candidate_bytes: u64,
    /// Listed blobs that a reference names (by the filter: false positives included).
    #[serde(default)]
    pub referenced_blob_count: u64,
    /// Distinct referenced ids (estimated from the filter's bits), and of them, those naming a
    /// blob the listing lacks: distinct references less the referenced listed blobs, corrected
    /// for the filter's false positives.
    #[serde(default)]
    pub distinct_reference_count: u64,
    #[serde(default)]
    pub missing_reference_count: u64,
}

impl PlanCounts {
    fn add(&mut self, o: PlanCounts) {
        self.blob_count += o.blob_count;
        self.eligible_blob_count += o.eligible_blob_count;
        self.eligible_bytes += o.eligible_bytes;
        self.malformed_id_count += o.malformed_id_count;
        self.candidate_count += o.candidate_count;
        self.candidate_bytes += o.candidate_bytes;
        self.referenced_blob_count += o.referenced_blob_count;
        let room = MALFORMED_EXAMPLES.saturating_sub(self.malformed_ids.len());
        self.malformed_ids
            .extend(o.malformed_ids.into_iter().take(room));
    }
}

/// A fresh run id: the UTC time, then randomness.
pub fn new_run_id() -> String {
    format!(
        "{}-{:08x}",
        Utc::now().format("%Y%m%dT%H%M%S%3f"),
        rand::random::<u32>()
    )
}

/// A session with blobgc's functions, using `partitions` parallel partitions.
pub fn session(partitions: usize) -> SessionContext {
    let ctx = SessionContext::new_with_config(
        SessionConfig::new().with_target_partitions(partitions.max(1)),
    );
    functions::register(&ctx);
    ctx
}

/// Plans a GC run of `job` into `dir`. An aborted plan is `Ok` with status `Aborted` (its
/// summary is written too, so an operator sees why); `Err` is a failure to plan at all.
pub async fn plan(job: &Job, dir: &PlanDir, progress: &ProgressBar) -> Result<PlanSummary> {
    job.validate()?;
    let rule = GenerationRule::new(job.family, job.generation_duration_seconds, job.now)?;
    let store = Location::parse(&job.store, "--store")?;
    if store.contains(&dir.location) {
        return Err(Error::usage(format!(
            "the plan directory {} lies inside the store {store}: its files would be listed as blobs",
            dir.location
        )));
    }
    let quarantine = job
        .quarantine
        .as_deref()
        .map(|q| quarantine_exclusion(&store, q))
        .transpose()?;
    let root = job.plan_root.as_deref().map(PlanRoot::parse).transpose()?;
    if let Some(root) = &root
        && store.contains(&root.location)
    {
        return Err(Error::usage(format!(
            "the plan root {} lies inside the store {store}: its files would be listed as blobs",
            root.location
        )));
    }
    let remote = job.scheduler.is_some();
    let ctx = match &job.scheduler {
        Some(url) => crate::cluster::remote(url, job.partitions, &job.s3).await?,
        None => session(job.partitions),
    };
    let mut summary = PlanSummary {
        run_id: job.run_id.clone(),
        status: PlanStatus::Planned,
        abort_reason: None,
        store: store.url(),
        inventory: job.inventory.clone(),
        sources: Vec::new(),
        now: job.now,
        generation_duration_seconds: job.generation_duration_seconds,
        family: rule.family,
        current_generation: rule.current_generation,
        salt: job.salt.clone(),
        filter: None,
        counts: PlanCounts::default(),
        batch_size: job.batch_size,
        batches: Vec::new(),
        references_seconds: 0.0,
        filter_seconds: 0.0,
        listing_seconds: 0.0,
        verified: false,
        verify_seconds: 0.0,
        plan_root: root.as_ref().map(|r| r.location.url()),
        lease_ttl_seconds: job.lease_ttl_seconds,
        quarantine: job.quarantine.clone(),
        ids_from_table: false,
    };

    let started = Instant::now();
    progress.set_message("checking reference sources");
    let mut sources: Vec<OpenedSource> = Vec::new();
    for spec in &job.references {
        match references::open(&ctx, spec).await {
            Ok(s) => sources.push(s),
            Err(Error::Aborted(reason)) => return abort(dir, summary, reason).await,
            Err(e) => return Err(e),
        }
    }
    summary.sources = sources
        .iter()
        .map(|s| SourceSummary {
            spec: s.spec.clone(),
            rows: s.rows,
        })
        .collect();
    summary.references_seconds = started.elapsed().as_secs_f64();
    let previous = match &root {
        Some(root) => root.previous(&summary.store, &summary.run_id).await?,
        None => None,
    };
    if let Some(previous) = &previous
        && let Some(reason) = job.breakers.source_shrink(&summary.sources, previous)
    {
        return abort(dir, summary, reason).await;
    }

    let started = Instant::now();
    let rows: u64 = sources.iter().map(OpenedSource::id_values).sum();
    let references = all_references(&sources)?;
    // In-process, one pass over the references fingerprints them into a local spill and
    // sketches their distinct count: the filter is sized from the sketch and built from the
    // spill, and the verification reads it, so the references are read once. A cluster (or a
    // spill that cannot be written) reads them for an estimate, then for the filter.
    let fingerprinted = if job.strategy == Strategy::Bloom && !remote {
        progress.set_message("fingerprinting the references");
        spill::fingerprint_references(references.clone(), &summary.run_id).await?
    } else {
        None
    };
    let sketched = fingerprinted
        .as_ref()
        .map(|f| with_margin(f.distinct(), rows));
    let from_previous = previous
        .as_ref()
        .and_then(|p| distinct_from_previous(p, rows));
    let mut expected_items = match (job.expected_references, job.strategy) {
        (Some(n), _) => n,
        (None, Strategy::Bloom) => match sketched.or(from_previous) {
            Some(n) => n,
            None => {
                progress.set_message("estimating the distinct references");
                distinct_estimate(references.clone(), rows).await?
            }
        },
        (None, Strategy::Exact) => rows,
    };
    let mut in_memory = None;
    let location = match job.strategy {
        Strategy::Bloom => {
            progress.set_message("building the Bloom filter of references");
            // Sized for an estimate of the distinct ids (shared blobs are referenced ~2.5 times
            // each), with a margin; folded down if it turns out to hold fewer.
            let seed = FilterParams::seed_from_salt(&job.salt);
            let mut built = FilterParams::foldable(expected_items, job.fpp, seed);
            let suffix = if fingerprinted.is_some() {
                "bloom"
            } else {
                "parquet"
            };
            let (spilled, all) = (fingerprinted.as_ref(), &references);
            let build = |params, name: String| async move {
                match spilled {
                    Some(f) => {
                        let bloom = f.build_filter(params, job.fpp).await?;
                        let (location, checksum) = dir.write_filter(&name, bloom.encode()).await?;
                        let stored = Stored {
                            bloom,
                            location,
                            checksum,
                        };
                        Ok((stored, f.ids, f.rows))
                    }
                    None => build_filter(all.clone(), params, job.fpp, dir, name).await,
                }
            };
            let name = format!("filter-{}.{suffix}", summary.run_id);
            let (mut stored, mut ids, mut id_rows) = build(built, name.clone()).await?;
            if job.expected_references.is_none()
                && sketched.is_none()
                && from_previous.is_some()
                && stored.bloom.estimated_fpp() > job.fpp * RESIZE_ABOVE
            {
                tracing::info!(
                    estimated_fpp = stored.bloom.estimated_fpp(),
                    sized_for = expected_items,
                    "more distinct references than the last run suggested: estimating them and building the filter again"
                );
                let undersized = dir.location.child(&name);
                dir.location.store.delete(&undersized).await.map_err(|e| {
                    Error::runtime(format!("removing the undersized filter {undersized}: {e}"))
                })?;
                progress.set_message("estimating the distinct references");
                expected_items = distinct_estimate(references.clone(), rows).await?;
                built = FilterParams::foldable(expected_items, job.fpp, seed);
                let name = format!("filter-{}-resized.{suffix}", summary.run_id);
                (stored, ids, id_rows) = build(built, name).await?;
            }
            let bloom = stored.bloom;
            let params = bloom.params();
            summary.counts.reference_count = ids;
            summary.counts.null_reference_count = id_rows - ids;
            let estimated_fpp = bloom.estimated_fpp();
            let location = stored.location;
            summary.filter = Some(FilterSummary {
                params,
                expected_items,
                requested_fpp: job.fpp,
                max_fpp: job.max_fpp,
                estimated_fpp,
                fill_ratio: bloom.fill_ratio(),
                estimated_items: bloom.estimated_items() as u64,
                built_bits: built.num_bits,
                location: location.clone(),
                checksum: stored.checksum.clone(),
            });
            // In-process, the probe uses the filter in memory; a cluster loads the stored one.
            in_memory = (!remote).then(|| Arc::new(bloom));
            summary.filter_seconds = started.elapsed().as_secs_f64();
            if estimated_fpp > job.max_fpp {
                let reason = format!(
                    "the merged Bloom filter's estimated false-positive rate {estimated_fpp:.4} exceeds --max-fpp {}: \
                     it holds more distinct ids than the {expected_items} it was sized for (raise --expected-references)",
                    job.max_fpp
                );
                return abort(dir, summary, reason).await;
            }
            Some((location, stored.checksum))
        }
        Strategy::Exact => None,
    };

    let started = Instant::now();
    progress.set_message("listing and probing blobs");
    let mut listed = match &job.inventory {
        Some(url) => listing::inventory(&ctx, url).await?,
        None if remote => {
            // A live listing streams from this process: executors read it as an inventory.
            let url = listing_as_inventory(&store, job, dir).await?;
            listing::inventory(&ctx, &url).await?
        }
        None => listing::live(&ctx, &store, job.list_concurrency).await?,
    };
    if let Some(Some(prefix)) = &quarantine {
        listed = listed.filter(not(starts_with(col(BLOB_ID), lit(prefix.as_str()))))?;
    }
    let class = functions::id_class().call(vec![
        col(BLOB_ID),
        lit(u64::from(rule.family)),
        lit(rule.current_generation),
    ]);
    let eligible = col("class").eq(lit(IdClass::Eligible as u8));
    let verifying = job.strategy == Strategy::Bloom && job.verify != Verify::Off;
    // Candidates are fingerprinted as they are found, for the exact verification, unless the
    // job turns it off (or the exact strategy makes it pointless).
    let mut fingerprints = (verifying && !remote).then(verify::Fingerprints::default);
    let (probed, probe) = match (&location, in_memory) {
        // In-process, one pass over each batch classifies, fingerprints and looks up its ids.
        (_, Some(bloom)) => (
            listed
                .select(vec![col(BLOB_ID), col(SIZE)])?
                .repartition(Partitioning::RoundRobinBatch(job.partitions.max(1)))?,
            Probe::Filter { bloom, rule },
        ),
        (Some((location, checksum)), None) => {
            let referenced = functions::bloom_contains().call(vec![
                col(BLOB_ID),
                lit(location.as_str()),
                lit(checksum.as_str()),
            ]);
            let probed = listed
                .repartition(Partitioning::RoundRobinBatch(job.partitions.max(1)))?
                .select(vec![
                    col(BLOB_ID),
                    col(SIZE),
                    class.alias("class"),
                    referenced.alias("referenced"),
                ])?
                .select(vec![
                    col(BLOB_ID),
                    col(SIZE),
                    col("class"),
                    when(eligible, not(col("referenced")))
                        .otherwise(lit(false))?
                        .alias("candidate"),
                    col("referenced"),
                ])?;
            (probed, Probe::Planned)
        }
        (None, None) => {
            // Every spelling of an id meets its canonical form on both sides of the join.
            let keys = references
                .clone()
                .select(vec![canonical(col(BLOB_ID)).alias("ref_key")])?;
            let probed = listed
                .select(vec![
                    col(BLOB_ID),
                    col(SIZE),
                    class.alias("class"),
                    canonical(col(BLOB_ID)).alias("key"),
                ])?
                .join(keys, JoinType::LeftMark, &["key"], &["ref_key"], None)?
                .select(vec![
                    col(BLOB_ID),
                    col(SIZE),
                    col("class"),
                    when(eligible, not(col("mark")))
                        .otherwise(lit(false))?
                        .alias("candidate"),
                    col("mark").alias("referenced"),
                ])?;
            (probed, Probe::Planned)
        }
    };
    if remote {
        let p = probe_on_cluster(probed, dir, &summary.run_id, job.batch_size, progress).await?;
        summary.counts.add(p.counts);
        summary.batches.extend(p.batches);
    } else {
        let probe = Arc::new(probe);
        let partitions = probed.execute_stream_partitioned().await?;
        // A JoinSet: should one partition fail, dropping it stops the others writing batches.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, stream) in partitions.into_iter().enumerate() {
            let writer = BatchWriter::new(
                dir.clone(),
                format!("{}-p{i:04}", summary.run_id),
                job.batch_size,
            );
            tasks.spawn(consume(
                stream,
                Arc::clone(&probe),
                writer,
                fingerprints
                    .as_ref()
                    .map(|_| verify::Fingerprints::default()),
                job.verify_limit,
                progress.clone(),
            ));
        }
        while let Some(done) = tasks.join_next().await {
            let p = done.map_err(|e| Error::runtime(format!("probe task failed: {e}")))??;
            summary.counts.add(p.counts);
            summary.batches.extend(p.batches);
            fingerprints = fingerprints.zip(p.fingerprints).map(|(mut all, part)| {
                all.extend(part);
                all
            });
        }
    }
    summary.batches.sort();
    summary.listing_seconds = started.elapsed().as_secs_f64();
    if remote && job.inventory.is_none() {
        dir.delete_dir(&listing_dir(&job.run_id)).await?;
    }

    let c = &summary.counts;
    if c.malformed_id_count > 0 && !job.ignore_malformed {
        let reason = format!(
            "{} listed blob id(s) do not parse, e.g. {:?}: the store prefix may be wrong \
             (--ignore-malformed keeps them and goes on)",
            c.malformed_id_count, c.malformed_ids
        );
        dir.delete_batches(&summary.batches).await?;
        summary.batches.clear();
        return abort(dir, summary, reason).await;
    }
    if let Some(reason) = job.breakers.delete_fraction(
        summary.counts.candidate_count,
        summary.counts.eligible_blob_count,
    ) {
        dir.delete_batches(&summary.batches).await?;
        summary.batches.clear();
        return abort(dir, summary, reason).await;
    }

    let verify = !summary.batches.is_empty()
        && job.strategy == Strategy::Bloom
        && match job.verify {
            Verify::Exact => true,
            Verify::Off => false,
            Verify::Auto => summary.counts.candidate_count <= job.verify_limit,
        };
    let started = Instant::now();
    let exact = job.strategy == Strategy::Exact;
    let mut found = Vec::new();
    if remote {
        if exact {
            progress.set_message("counting references");
            let c = count_on_cluster(references.clone()).await?;
            summary.counts.reference_count = c.ids;
            summary.counts.null_reference_count = c.rows - c.ids;
            summary.counts.distinct_reference_count = c.distinct;
        }
        if verify {
            progress.set_message("verifying candidates against every reference");
            found = verify_on_cluster(
                dir,
                &summary.run_id,
                &job.salt,
                &summary.counts,
                &summary.batches,
                references,
            )
            .await?;
        }
    } else {
        let fingerprints = match fingerprints {
            Some(set) if verify => Some(Arc::new(set)),
            // Past the limit while probing: `--verify exact` reads them back from the batches.
            None if verify => Some(Arc::new(verify::fingerprints(dir, &summary.batches).await?)),
            _ => None,
        };
        // The spilled fingerprints settle the common case (no match) without reading the
        // references again; a match needs the references' text.
        let references_needed = match (&fingerprints, &fingerprinted) {
            (Some(set), Some(f)) => {
                progress.set_message("verifying candidates against every reference's fingerprint");
                verify::spill_matches(f, set).await? > 0
            }
            _ => true,
        };
        drop(fingerprinted);
        // One more pass over the references when verifying, and for the exact strategy, which
        // has no filter to count the distinct references with.
        if (fingerprints.is_some() && references_needed) || exact {
            progress.set_message("verifying candidates against every reference");
            let distinct = exact.then(|| {
                FilterParams::for_items(
                    expected_items,
                    job.fpp,
                    FilterParams::seed_from_salt(&job.salt),
                )
            });
            let checked = verify::check_references(references, fingerprints, distinct).await?;
            if exact {
                summary.counts.reference_count = checked.ids;
                summary.counts.null_reference_count = checked.rows - checked.ids;
            }
            if let Some(d) = &checked.distinct {
                summary.counts.distinct_reference_count = d.estimated_items() as u64;
            }
            found = verify::confirm(dir, &summary.batches, &checked.suspects, MALFORMED_EXAMPLES)
                .await?;
        }
    }
    summary.verified = verify || exact;
    summary.verify_seconds = started.elapsed().as_secs_f64();
    if let Some(f) = &summary.filter {
        summary.counts.distinct_reference_count = f.estimated_items;
    }
    let fpp = summary.filter.as_ref().map_or(0.0, |f| f.estimated_fpp);
    summary.counts.missing_reference_count = missing_references(&summary.counts, fpp);
    let mut reason = job.breakers.missing_references(
        summary.counts.missing_reference_count,
        summary.counts.distinct_reference_count,
    );
    if !found.is_empty() {
        reason = Some(format!(
            "exact verification found referenced blobs among the candidates, e.g. {found:?}: \
             the Bloom filter missed references, a bug; please report it"
        ));
    }
    if let Some(reason) = reason {
        dir.delete_batches(&summary.batches).await?;
        summary.batches.clear();
        return abort(dir, summary, reason).await;
    }
    dir.write_summary(&summary).await?;
    Ok(summary)
}

/// An id in its canonical spelling, so that exact joins match every spelling of a reference.
fn canonical(id: datafusion::logical_expr::Expr) -> datafusion::logical_expr::Expr {
    functions::canonical_id().call(vec![id])
}

/// Distinct references naming no listed blob: the distinct references less the listed blobs
/// the filter says are referenced, those corrected for its false-positive rate `fpp`.
fn missing_references(c: &PlanCounts, fpp: f64) -> u64 {
    let listed = c.blob_count.saturating_sub(c.malformed_id_count) as f64;
    let referenced = ((c.referenced_blob_count as f64 - fpp * listed) / (1.0 - fpp)).max(0.0);
    (c.distinct_reference_count as f64 - referenced)
        .max(0.0)
        .round() as u64
}

/// The relative key prefix to leave out of the listing when the quarantine lies inside the
/// store (`None` when it lies elsewhere); refuses a quarantine that is or holds the store.
fn quarantine_exclusion(store: &Location, quarantine: &str) -> Result<Option<String>> {
    let q = Location::parse(quarantine, "--quarantine")?;
    if q.contains(store) {
        return Err(Error::usage(format!(
            "--quarantine {q} is or holds the store {store}: quarantined blobs must live apart"
        )));
    }
    Ok(store
        .contains(&q)
        .then(|| q.dir_url()[store.dir_url().len()..].to_string()))
}

async fn abort(dir: &PlanDir, mut summary: PlanSummary, reason: String) -> Result<PlanSummary> {
    tracing::warn!(%reason, "plan aborted");
    summary.status = PlanStatus::Aborted;
    summary.abort_reason = Some(reason);
    dir.write_summary(&summary).await?;
    Ok(summary)
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

/// Margin over the HyperLogLog estimate of the distinct references: the spill's sketch and
/// DataFusion's `approx_distinct` have 16384 registers, a standard error of 0.8%, so 5% is six
/// of them.
const DISTINCT_MARGIN: f64 = 1.05;

/// A filter sized from the last run is built again, from an estimate, when its false-positive
/// rate is above the requested one by this factor (the accepted realised rate of issue 6).
const RESIZE_ABOVE: f64 = 1.5;

/// The distinct references of the last run of the same store, grown with the id values since
/// (never shrunk: fewer ids may still be as many distinct ones), with [`DISTINCT_MARGIN`]: a
/// nightly run skips the estimating pass over every reference. None without a count to go by.
fn distinct_from_previous(previous: &PlanSummary, rows: u64) -> Option<u64> {
    let before = previous.counts.reference_count + previous.counts.null_reference_count;
    let distinct = previous.counts.distinct_reference_count;
    if before == 0 || distinct == 0 {
        return None;
    }
    let grown = distinct as f64 * (rows as f64 / before as f64).max(1.0) * DISTINCT_MARGIN;
    Some((grown.ceil() as u64).min(rows))
}

/// The distinct reference ids, estimated (HyperLogLog, one pass over the id columns), with
/// [`DISTINCT_MARGIN`]; never more than the `rows` that bound them. Sizing the filter for the
/// rows instead makes it ~2.5 times too large while it is built (cache misses) and, folded by
/// whole factors, still ~1.3 times too large after. Should the estimate be short, the filter is
/// fuller than planned and the `--max-fpp` check stops the run.
async fn distinct_estimate(references: DataFrame, rows: u64) -> Result<u64> {
    let batches = references
        .aggregate(
            vec![],
            vec![approx_distinct(col(BLOB_ID)).alias("distinct")],
        )?
        .collect()
        .await
        .map_err(|e| Error::runtime(format!("reading reference sources: {e}")))?;
    let estimate = count_at(one_row(&batches, "the distinct estimate")?, 0)?;
    Ok(with_margin(estimate, rows))
}

/// An estimate of the distinct references with [`DISTINCT_MARGIN`], never more than the `rows`
/// that bound them.
fn with_margin(estimate: u64, rows: u64) -> u64 {
    ((estimate as f64 * DISTINCT_MARGIN).ceil() as u64).min(rows)
}

/// Column `i` of the first row of `batch`, a count: null (a sum over nothing) is 0.
fn count_at(batch: &RecordBatch, i: usize) -> Result<u64> {
    let c = cast(batch.column(i), &DataType::Int64)?;
    let c = c.as_primitive::<Int64Type>();
    Ok(if c.is_empty() || c.is_null(0) {
        0
    } else {
        c.value(0).max(0) as u64
    })
}

/// The one row of an aggregate without groups.
fn one_row<'a>(batches: &'a [RecordBatch], what: &str) -> Result<&'a RecordBatch> {
    batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| Error::runtime(format!("{what} returned no row")))
}

/// The merged filter as the reduce stage stored it.
struct Stored {
    bloom: Bloom,
    location: String,
    checksum: String,
}

/// Partial filters per partition of the union of every source's id columns, OR-merged and
/// folded to `fpp` in the reduce stage, which writes the filter (with the non-null id count and
/// the row count of the same scan) next to the plan itself: on a cluster it never travels to
/// the client or in a plan. The client reads it back once, for its statistics and checksum.
async fn build_filter(
    all: DataFrame,
    params: FilterParams,
    fpp: f64,
    dir: &PlanDir,
    name: String,
) -> Result<(Stored, u64, u64)> {
    let args = vec![
        col(BLOB_ID),
        lit(params.num_bits),
        lit(u64::from(params.num_hashes)),
        lit(format!("{:032x}", params.seed)),
        lit(fpp),
    ];
    let build = functions::bloom_build().call(args);
    let location = dir.location.child_url(&name);
    let mut options = TableParquetOptions::default();
    // One value of random bits: nothing to compress, index or summarise.
    options.global.compression = Some("uncompressed".to_string());
    options.global.dictionary_enabled = Some(false);
    options.global.statistics_enabled = Some("none".to_string());
    all.aggregate(
        vec![],
        vec![
            build.alias(StoredFilter::COLUMN),
            count(col(BLOB_ID)).alias("ids"),
            count_all().alias("rows"),
        ],
    )?
    .write_parquet(
        &location,
        DataFrameWriteOptions::new().with_single_file_output(true),
        Some(options),
    )
    .await
    .map_err(|e| Error::runtime(format!("reading reference sources: {e}")))?;

    let bytes = dir.location.read(&dir.location.child(&name)).await?;
    let bad = |m: String| Error::runtime(format!("Bloom filter file {location}: {m}"));
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| bad(e.to_string()))?
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let row = reader
        .next()
        .transpose()
        .map_err(|e| bad(e.to_string()))?
        .filter(|b| b.num_rows() == 1)
        .ok_or_else(|| bad("expected one row".to_string()))?;
    let filter = row.column(0).as_binary_opt::<i32>();
    let encoded = filter
        .filter(|f| f.is_valid(0))
        .map(|f| f.value(0))
        .ok_or_else(|| bad("no filter".to_string()))?;
    let checksum = StoredFilter::checksum(encoded);
    let bloom = StoredFilter::verify_and_decode(&location, &checksum, encoded)?;
    let (ids, rows) = (count_at(&row, 1)?, count_at(&row, 2)?);
    Ok((
        Stored {
            bloom,
            location,
            checksum,
        },
        ids,
        rows,
    ))
}

fn listing_dir(run_id: &str) -> String {
    format!("listing-{run_id}")
}

/// A live listing written next to the plan as a Parquet inventory, for a cluster to read;
/// removed once probed.
async fn listing_as_inventory(store: &Location, job: &Job, dir: &PlanDir) -> Result<String> {
    let local = session(job.partitions);
    dir.location.register(&local);
    let url = format!("{}/", dir.location.child_url(&listing_dir(&job.run_id)));
    listing::live(&local, store, job.list_concurrency)
        .await?
        .write_parquet(&url, DataFrameWriteOptions::new(), None)
        .await
        .map_err(|e| Error::runtime(format!("listing {store}: {e}")))?;
    Ok(url)
}

/// The probe on a cluster: its counts come back as one aggregate row, its candidates as a
/// stream the client writes as batches (executors only read the plan directory).
async fn probe_on_cluster(
    probed: DataFrame,
    dir: &PlanDir,
    run_id: &str,
    batch_size: usize,
    progress: &ProgressBar,
) -> Result<Probed> {
    let class = || col("class");
    let known = class()
        .eq(lit(IdClass::Eligible as u8))
        .or(class().eq(lit(IdClass::Active as u8)));
    // A null class or condition falls through to `otherwise`: malformed, as `count_batch` has it.
    let malformed = when(known, lit(false)).otherwise(lit(true))?;
    let ones = |c: datafusion::logical_expr::Expr| -> Result<datafusion::logical_expr::Expr> {
        Ok(sum(when(c, lit(1i64)).otherwise(lit(0i64))?))
    };
    let bytes = |c: datafusion::logical_expr::Expr| -> Result<datafusion::logical_expr::Expr> {
        let size = cast_expr(col(SIZE), DataType::Int64);
        Ok(sum(when(c, size).otherwise(lit(0i64))?))
    };
    let eligible = class().eq(lit(IdClass::Eligible as u8));
    let row = probed
        .clone()
        .aggregate(
            vec![],
            vec![
                count_all().alias("blobs"),
                ones(eligible.clone())?.alias("eligible"),
                bytes(eligible)?.alias("eligible_bytes"),
                ones(malformed.clone())?.alias("malformed"),
                ones(col("candidate"))?.alias("candidates"),
                bytes(col("candidate"))?.alias("candidate_bytes"),
                ones(col("referenced").and(not(malformed.clone())))?.alias("referenced"),
            ],
        )?
        .collect()
        .await
        .map_err(|e| Error::runtime(format!("probing the listing: {e}")))?;
    let row = one_row(&row, "probe counts")?;
    let int = |i: usize| count_at(row, i);
    let mut c = PlanCounts {
        blob_count: int(0)?,
        eligible_blob_count: int(1)?,
        eligible_bytes: int(2)?,
        malformed_id_count: int(3)?,
        candidate_count: int(4)?,
        candidate_bytes: int(5)?,
        referenced_blob_count: int(6)?,
        ..PlanCounts::default()
    };
    if c.malformed_id_count > 0 {
        let examples = probed
            .clone()
            .filter(malformed)?
            .select(vec![cast_expr(col(BLOB_ID), DataType::Utf8)])?
            .limit(0, Some(MALFORMED_EXAMPLES))?
            .collect()
            .await?;
        for b in &examples {
            let ids = b.column(0).as_string::<i32>();
            c.malformed_ids.extend(
                ids.iter()
                    .map(|id| id.map_or_else(|| "<null>".to_string(), String::from)),
            );
        }
    }
    let mut writer = BatchWriter::new(dir.clone(), format!("{run_id}-c"), batch_size);
    let mut candidates = probed
        .filter(col("candidate"))?
        .select(vec![col(BLOB_ID), col(SIZE)])?
        .execute_stream()
        .await?;
    while let Some(batch) = candidates.try_next().await? {
        progress.inc(batch.num_rows() as u64);
        writer.push(batch).await?;
    }
    writer.flush(true).await?;
    Ok(Probed {
        counts: c,
        batches: writer.written,
        fingerprints: None,
    })
}

/// Reference counts of the exact strategy on a cluster.
struct ReferenceCounts {
    ids: u64,
    rows: u64,
    distinct: u64,
}

async fn count_on_cluster(references: DataFrame) -> Result<ReferenceCounts> {
    let row = references
        .aggregate(
            vec![],
            vec![
                count(col(BLOB_ID)).alias("ids"),
                count_all().alias("rows"),
                approx_distinct(canonical(col(BLOB_ID))).alias("distinct"),
            ],
        )?
        .collect()
        .await
        .map_err(|e| Error::runtime(format!("counting references: {e}")))?;
    let row = one_row(&row, "reference counts")?;
    let int = |i: usize| count_at(row, i);
    Ok(ReferenceCounts {
        ids: int(0)?,
        rows: int(1)?,
        distinct: int(2)?,
    })
}

/// The exact verification on a cluster, shaped like the in-process one: the candidates go into
/// a second, small Bloom filter at [`SUSPECT_FPP`] (stored next to the plan, loaded once per
/// executor like the main one), executors stream every reference past it, and the few that
/// match (suspects) are compared exactly, by canonical spelling, with the candidates here. A
/// map-only stage: no join, no shuffle of the references. Returns the referenced candidates
/// found (none, unless the main filter missed a reference).
async fn verify_on_cluster(
    dir: &PlanDir,
    run_id: &str,
    salt: &str,
    counts: &PlanCounts,
    batches: &[String],
    references: DataFrame,
) -> Result<Vec<String>> {
    let params = FilterParams::for_items(
        counts.candidate_count,
        SUSPECT_FPP,
        FilterParams::seed_from_salt(&format!("{salt}/candidates")),
    );
    let mut candidates = Bloom::new(params)?;
    for name in batches {
        dir.read_batch(name)
            .await?
            .iter()
            .for_each(|(id, _)| candidates.insert(id));
    }
    let (location, checksum) = dir
        .write_filter(&format!("candidates-{run_id}.bloom"), candidates.encode())
        .await?;
    drop(candidates);
    let suspect = functions::bloom_contains().call(vec![
        col(BLOB_ID),
        lit(location.as_str()),
        lit(checksum.as_str()),
    ]);
    let suspects = references
        .filter(col(BLOB_ID).is_not_null().and(suspect))?
        .select(vec![cast_expr(col(BLOB_ID), DataType::Utf8)])?
        .limit(0, Some(verify::MAX_SUSPECTS))?
        .collect()
        .await
        .map_err(|e| Error::runtime(format!("verifying candidates: {e}")))?;
    let suspects: Vec<String> = suspects
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    verify::confirm(dir, batches, &suspects, MALFORMED_EXAMPLES).await
}

/// How a partition of the probe tells the candidates of a batch.
enum Probe {
    /// The batches hold `blob_id` and `size`: each id is classified and, unless malformed,
    /// looked up in the filter, here.
    Filter {
        bloom: Arc<Bloom>,
        rule: GenerationRule,
    },
    /// The plan did it: `blob_id`, `size`, `class`, `candidate`, `referenced`.
    Planned,
}

/// The probe's verdicts on one batch.
struct Verdicts {
    class: UInt8Array,
    candidate: BooleanArray,
    referenced: BooleanArray,
    /// The candidates' fingerprints, in order, when the probe computed them.
    fingerprints: Option<Vec<u64>>,
}

impl Probe {
    fn verdicts(&self, batch: &RecordBatch) -> Result<Verdicts> {
        let (bloom, rule) = match self {
            Probe::Filter { bloom, rule } => (bloom, rule),
            Probe::Planned => {
                return Ok(Verdicts {
                    class: batch.column(2).as_primitive::<UInt8Type>().clone(),
                    candidate: batch.column(3).as_boolean().clone(),
                    referenced: batch.column(4).as_boolean().clone(),
                    fingerprints: None,
                });
            }
        };
        let n = batch.num_rows();
        let mut class = Vec::with_capacity(n);
        let (mut rows, mut fps) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for_each_id(batch.column(0), |id| {
            let c = id.map_or(IdClass::Malformed, |id| rule.classify(id));
            if c != IdClass::Malformed
                && let Some(id) = id
            {
                rows.push(class.len());
                fps.push(fingerprint(id));
            }
            class.push(c as u8);
        })?;
        // Hashed first, looked up after: the lookups fetch their memory ahead.
        let hashes: Vec<u64> = fps.iter().map(|&fp| bloom.hash_fingerprint(fp)).collect();
        let mut referenced = vec![false; n];
        let mut candidate = vec![false; n];
        let mut candidates = Vec::new();
        for ((&row, &fp), found) in rows.iter().zip(&fps).zip(bloom.contains_hashes(&hashes)) {
            referenced[row] = found;
            if !found && class[row] == IdClass::Eligible as u8 {
                candidate[row] = true;
                candidates.push(fp);
            }
        }
        Ok(Verdicts {
            class: UInt8Array::from(class),
            candidate: BooleanArray::from(candidate),
            referenced: BooleanArray::from(referenced),
            fingerprints: Some(candidates),
        })
    }
}

/// One partition of the probe: counts what it sees and writes its candidates as batches.
async fn consume(
    mut stream: SendableRecordBatchStream,
    probe: Arc<Probe>,
    mut writer: BatchWriter,
    mut fingerprints: Option<verify::Fingerprints>,
    verify_limit: u64,
    progress: ProgressBar,
) -> Result<Probed> {
    let mut c = PlanCounts::default();
    while let Some(batch) = stream.try_next().await? {
        let v = probe.verdicts(&batch)?;
        count_batch(&batch, &v, &mut c)?;
        let candidates = filter_record_batch(&batch.project(&[0, 1])?, &v.candidate)?;
        c.candidate_count += candidates.num_rows() as u64;
        if c.candidate_count > verify_limit {
            fingerprints = None;
        }
        if let Some(set) = &mut fingerprints {
            match v.fingerprints {
                Some(fps) => set.extend(fps),
                None => for_each_id(candidates.column(0), |id| {
                    set.extend(id.map(fingerprint));
                })?,
            }
        }
        writer.push(candidates).await?;
        progress.inc(batch.num_rows() as u64);
    }
    writer.flush(true).await?;
    Ok(Probed {
        counts: c,
        batches: writer.written,
        fingerprints,
    })
}

/// What one partition of the probe saw.
struct Probed {
    counts: PlanCounts,
    batches: Vec<String>,
    /// Its candidates' fingerprints, unless there were too many to verify.
    fingerprints: Option<verify::Fingerprints>,
}

/// Counts a probed batch: its blobs, the eligible, referenced and candidate ones, their
/// bytes, and examples of malformed ids.
fn count_batch(batch: &RecordBatch, v: &Verdicts, c: &mut PlanCounts) -> Result<()> {
    let sizes = cast(batch.column(1), &DataType::Int64)?;
    let sizes = sizes.as_primitive::<Int64Type>();
    // A null size counts as 0 bytes.
    let size = |i: usize| match sizes.is_valid(i) {
        true => sizes.value(i).max(0) as u64,
        false => 0,
    };
    let flag = |a: &BooleanArray, i: usize| a.is_valid(i) && a.value(i);
    c.blob_count += batch.num_rows() as u64;
    let mut malformed_rows = Vec::new();
    for i in 0..batch.num_rows() {
        match v.class.is_valid(i).then(|| v.class.value(i)) {
            Some(x) if x == IdClass::Eligible as u8 => {
                c.eligible_blob_count += 1;
                c.eligible_bytes += size(i);
            }
            Some(x) if x == IdClass::Active as u8 => {}
            _ => {
                malformed_rows.push(i);
                continue;
            }
        }
        if flag(&v.referenced, i) {
            c.referenced_blob_count += 1;
        }
        if flag(&v.candidate, i) {
            c.candidate_bytes += size(i);
        }
    }
    if !malformed_rows.is_empty() {
        c.malformed_id_count += malformed_rows.len() as u64;
        let ids = cast(batch.column(0), &DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        for &i in malformed_rows
            .iter()
            .take(MALFORMED_EXAMPLES.saturating_sub(c.malformed_ids.len()))
        {
            c.malformed_ids.push(if ids.is_null(i) {
                "<null>".to_string()
            } else {
                ids.value(i).to_string()
            });
        }
    }
    Ok(())
}
