//! The steps of a plan that differ on a Ballista cluster, whose executors share no memory or
//! disk with this process: they read the store, the tables and the plan directory by URL, and
//! send back counts and candidates. The filter built by an aggregate is the cluster's way,
//! and this process's when the references' fingerprints could not be spilled.

use super::Built;
use super::probe::{Probed, canonical};
use crate::error::{Error, Result};
use crate::filter::{Bloom, FilterParams, StoredFilter};
use crate::frame;
use crate::functions;
use crate::generation::IdClass;
use crate::listing::{self, BLOB_ID, SIZE};
use crate::plan_dir::{BatchWriter, PlanDir};
use crate::progress::Progress;
use crate::store::Location;
use crate::summary::{MALFORMED_EXAMPLES, PlanCounts};
use crate::verify;
use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{approx_distinct, count, sum};
use datafusion::logical_expr::{Expr, cast as cast_expr, col, lit, not, when};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

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
    let suspect =
        functions::bloom_contains().call(vec![col(BLOB_ID), lit(location), lit(checksum)]);
    let suspects = frame::strings(
        references.filter(col(BLOB_ID).is_not_null().and(suspect))?,
        verify::MAX_SUSPECTS,
        "verifying candidates",
    )
    .await?;
    verify::confirm(dir, batches, &suspects, MALFORMED_EXAMPLES).await
}

/// Partial filters per partition of the union of every source's id columns, OR-merged and
/// folded to `fpp` in the reduce stage, which writes the filter (with the non-null id count and
/// the row count of the same scan) next to the plan itself as `stem.parquet`: on a cluster it
/// never travels to the client or in a plan. The client reads it back once, for its statistics
/// and checksum.
pub(super) async fn by_aggregate(
    all: DataFrame,
    params: FilterParams,
    fpp: f64,
    dir: &PlanDir,
    stem: &str,
) -> Result<Built> {
    let name = format!("{stem}.parquet");
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
    Ok(Built {
        bloom,
        name,
        location,
        checksum,
        ids: frame::count_at(&row, 1)?,
        rows: frame::count_at(&row, 2)?,
    })
}
