//! The steps of a plan that differ on a Ballista cluster, whose executors share no memory or
//! disk with this process: they read the store, the tables and the plan directory by URL, and
//! send back counts and candidates. The filter built by an aggregate is the cluster's way,
//! and this process's when the references' fingerprints could not be spilled.

use super::Built;
use super::probe::{FP, Probed, a_task_per_shard, canonical, shard};
use super::sizing::Shape;
use crate::error::{Error, Result};
use crate::filter::{Bloom, FilterParams, FilterStats, Manifest, Sharded, StoredFilter, fit};
use crate::frame;
use crate::functions;
use crate::generation::IdClass;
use crate::listing::{self, BLOB_ID, SIZE};
use crate::plan_dir::{BatchWriter, PlanDir};
use crate::progress::Progress;
use crate::store::Location;
use crate::summary::{MALFORMED_EXAMPLES, PlanCounts};
use crate::verify;
use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, UInt32Type, UInt64Type};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{approx_distinct, count, sum};
use datafusion::logical_expr::{Expr, cast as cast_expr, col, lit, not, when};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::TryStreamExt;

/// False-positive rate of the candidates' filter in the verification: few enough suspects to
/// compare all of them exactly here.
const SUSPECT_FPP: f64 = 1e-6;

/// Where a live listing is written for the executors while planning.
pub(super) fn listing_dir(run_id: &str) -> String {
    format!("listing-{run_id}")
}

/// A live listing of `store` streamed from this process (`ctx` is a local session) into a
/// Parquet inventory next to the plan, for the executors to read; its URL.
pub(super) async fn listing_as_inventory(
    local: &SessionContext,
    store: &Location,
    list_concurrency: usize,
    dir: &PlanDir,
    run_id: &str,
) -> Result<String> {
    dir.location.register(local);
    let url = format!("{}/", dir.location.child_url(&listing_dir(run_id)));
    listing::live(local, store, list_concurrency)
        .await?
        .write_parquet(&url, DataFrameWriteOptions::new(), None)
        .await
        .map_err(|e| Error::runtime(format!("listing {store}: {e}")))?;
    Ok(url)
}

/// The probe on a cluster: its counts come back as one aggregate row, its candidates as a
/// stream written here as batches (executors only read the plan directory).
pub(super) async fn probe(
    probed: DataFrame,
    dir: &PlanDir,
    prefix: String,
    batch_size: usize,
    progress: &Progress,
) -> Result<Probed> {
    let mut counts = probe_counts(probed.clone()).await?;
    if counts.malformed_id_count > 0 {
        counts.malformed_ids = examples(probed.clone(), malformed()?).await?;
    }
    if counts.future_id_count > 0 {
        counts.future_ids = examples(probed.clone(), future()).await?;
    }
    let mut writer = BatchWriter::new(dir.clone(), prefix, batch_size);
    let mut candidates = probed
        .filter(col("candidate"))?
        .select(vec![col(BLOB_ID), col(SIZE)])?
        .execute_stream()
        .await?;
    while let Some(batch) = candidates.try_next().await? {
        progress.advance(batch.num_rows() as u64);
        writer.push(batch).await?;
    }
    writer.flush(true).await?;
    counts.candidates_by_generation = writer.generations.counts();
    Ok(Probed {
        counts,
        batches: writer.written,
        fingerprints: None,
    })
}

/// A null class or condition falls through to `otherwise`: malformed, as the in-process count
/// has it.
fn malformed() -> Result<Expr> {
    let class = || col("class");
    let known = class()
        .eq(lit(IdClass::Eligible as u8))
        .or(class().eq(lit(IdClass::Active as u8)))
        .or(class().eq(lit(IdClass::Future as u8)));
    Ok(when(known, lit(false)).otherwise(lit(true))?)
}

async fn probe_counts(probed: DataFrame) -> Result<PlanCounts> {
    let bytes = |c: Expr| -> Result<Expr> {
        let size = cast_expr(col(SIZE), DataType::Int64);
        Ok(sum(when(c, size).otherwise(lit(0i64))?))
    };
    let eligible = col("class").eq(lit(IdClass::Eligible as u8));
    let [
        blobs,
        eligible_count,
        eligible_bytes,
        malformed,
        candidates,
        candidate_bytes,
        referenced,
        future,
    ] = frame::one_row(
        probed,
        [
            count_all(),
            frame::count_where(eligible.clone())?,
            bytes(eligible)?,
            frame::count_where(malformed()?)?,
            frame::count_where(col("candidate"))?,
            bytes(col("candidate"))?,
            frame::count_where(col("referenced").and(not(malformed()?)))?,
            frame::count_where(future())?,
        ],
        "probing the listing",
    )
    .await?;
    Ok(PlanCounts {
        blob_count: blobs,
        eligible_blob_count: eligible_count,
        eligible_bytes,
        malformed_id_count: malformed,
        candidate_count: candidates,
        candidate_bytes,
        referenced_blob_count: referenced,
        future_id_count: future,
        ..PlanCounts::default()
    })
}

fn future() -> Expr {
    col("class").eq(lit(IdClass::Future as u8))
}

/// A few listed ids for which `condition` holds.
async fn examples(probed: DataFrame, condition: Expr) -> Result<Vec<String>> {
    let id = coalesce(vec![cast_expr(col(BLOB_ID), DataType::Utf8), lit("<null>")]);
    let rows = probed.filter(condition)?.select(vec![id])?;
    frame::strings(rows, MALFORMED_EXAMPLES, "probing the listing").await
}

/// Reference counts of the exact strategy, which has no filter to count them with.
pub(super) struct ReferenceCounts {
    pub ids: u64,
    pub rows: u64,
    pub distinct: u64,
}

pub(super) async fn count_references(references: DataFrame) -> Result<ReferenceCounts> {
    let [ids, rows, distinct] = frame::one_row(
        references,
        [
            count(col(BLOB_ID)),
            count_all(),
            approx_distinct(canonical(col(BLOB_ID))),
        ],
        "counting references",
    )
    .await?;
    Ok(ReferenceCounts {
        ids,
        rows,
        distinct,
    })
}

/// The exact verification on a cluster, shaped like the in-process one: the candidates go into
/// a second, small Bloom filter at [`SUSPECT_FPP`] (stored next to the plan, loaded once per
/// executor like the main one), executors stream every reference past it, and the few that
/// match (suspects) are compared exactly, by canonical spelling, with the candidates here. A
/// map-only stage: no join, no shuffle of the references. Returns the referenced candidates
/// found (none, unless the main filter missed a reference).
pub(super) async fn verify(
    dir: &PlanDir,
    run_id: &str,
    salt: &str,
    candidate_count: u64,
    batches: &[String],
    references: DataFrame,
) -> Result<Vec<String>> {
    let params = FilterParams::for_items(
        candidate_count,
        SUSPECT_FPP,
        FilterParams::seed_from_salt(&format!("{salt}/candidates")),
    );
    let mut candidates = Sharded::empty(params, 1)?;
    for name in batches {
        dir.read_batch(name)
            .await?
            .iter()
            .for_each(|(id, _)| candidates.insert(id));
    }
    let (location, checksum) = dir
        .write_filter(&format!("candidates-{run_id}"), &candidates)
        .await?;
    drop(candidates);
    let suspect = functions::in_stored_filter(col(BLOB_ID), location, checksum);
    let suspects = frame::strings(
        references.filter(col(BLOB_ID).is_not_null().and(suspect))?,
        verify::MAX_SUSPECTS,
        "verifying candidates",
    )
    .await?;
    verify::confirm(dir, batches, &suspects, MALFORMED_EXAMPLES).await
}

/// The filter built where the references are read. Each task fingerprints its ids and routes
/// them by shard (8 bytes a reference cross the shuffle, whatever the filter's size); the task
/// reducing a shard builds its filter, folds it to the shape's rate and stores it next to the
/// plan by checksum (`blobgc_store_shard`), so only checksums and counts come back here. Shards
/// no reference fell in are stored from here, empty; the manifest last.
pub(super) async fn by_aggregate(
    all: DataFrame,
    shape: &Shape,
    dir: &PlanDir,
    stem: &str,
) -> Result<Built> {
    let p = shape.params;
    let build = functions::bloom_build().call(vec![
        col(FP),
        lit(p.num_bits),
        lit(u64::from(p.num_hashes)),
        lit(format!("{:032x}", p.seed)),
        lit(shape.fpp),
    ]);
    let shard_dir = dir.location.join(stem)?;
    let store = functions::store_shard().call(vec![col("built"), lit(shard_dir.url())]);
    let fp = functions::fingerprint_udf().call(vec![col(BLOB_ID)]);
    let rows = a_task_per_shard(all, shape.shards)
        .select(vec![fp.alias(FP)])?
        .aggregate(
            vec![shard(col(FP), shape.shards).alias("shard")],
            vec![build.alias("built")],
        )?
        .select(vec![col("shard"), store.alias("stored")])?
        .collect()
        .await
        .map_err(|e| Error::runtime(format!("building the filter of references: {e}")))?;
    let mut built = StoredShards::new(shape.shards);
    for batch in &rows {
        built.add(batch)?;
    }
    built.store(shape, &shard_dir, dir, stem).await
}

/// What the reduce tasks stored, shard by shard: checksum, bits and bits set.
struct StoredShards {
    shards: Vec<Option<(String, u64, u64)>>,
    ids: u64,
}

impl StoredShards {
    fn new(count: u32) -> Self {
        StoredShards {
            shards: vec![None; count as usize],
            ids: 0,
        }
    }

    /// The rows `shard, stored {checksum, bits, ones, ids}` of one batch.
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let bad = || Error::runtime("the filter's reduce stage sent back rows of another shape");
        let shard = batch
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(bad)?;
        let stored = batch.column(1).as_struct_opt().ok_or_else(bad)?;
        let checksum = stored.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
        let bits = stored
            .column(1)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        let ones = stored
            .column(2)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        let ids = stored
            .column(3)
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(bad)?;
        for i in 0..batch.num_rows() {
            let slot = self
                .shards
                .get_mut(shard.value(i) as usize)
                .filter(|s| s.is_none())
                .ok_or_else(bad)?;
            *slot = Some((checksum.value(i).to_string(), bits.value(i), ones.value(i)));
            self.ids += ids.value(i);
        }
        Ok(())
    }

    /// Stores the shards no reference fell in, empty and fitted like the others, then the
    /// manifest of all of them.
    async fn store(
        self,
        shape: &Shape,
        shard_dir: &Location,
        dir: &PlanDir,
        stem: &str,
    ) -> Result<Built> {
        let empty = fit(Bloom::new(shape.params)?, shape.fpp)?;
        let mut empty_stored = None;
        let mut shards = Vec::with_capacity(self.shards.len());
        for shard in self.shards {
            let shard = match (shard, &empty_stored) {
                (Some(stored), _) => stored,
                (None, Some(stored)) => Clone::clone(stored),
                (None, None) => {
                    let checksum = StoredFilter::write_shard(shard_dir, empty.encode()).await?;
                    let stored = (checksum, empty.params().num_bits, 0);
                    empty_stored = Some(stored.clone());
                    stored
                }
            };
            shards.push(shard);
        }
        let stats = FilterStats::of(
            shards.iter().map(|(_, bits, ones)| (*bits, *ones)),
            shape.params.num_hashes,
        );
        let manifest = Manifest {
            shards: shards
                .into_iter()
                .map(|(checksum, _, _)| checksum)
                .collect(),
        };
        let (location, checksum) = manifest.write(&dir.location, stem).await?;
        Ok(Built {
            filter: None,
            params: FilterParams {
                num_bits: stats.num_bits,
                ..shape.params
            },
            shards: shape.shards,
            stats,
            stem: stem.to_string(),
            location,
            checksum,
            ids: self.ids,
        })
    }
}
