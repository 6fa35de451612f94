//! The filter step: size the filter for the distinct references, build it (partial filters
//! OR-merged, then folded), store it next to the plan, and stop the run when it came out fuller
//! than `--max-fpp` allows.

use super::engine::Engine;
use super::sizing::{self, RESIZE_ABOVE};
use super::{Built, Run};
use crate::error::{Error, Result};
use crate::filter::{FilterParams, StoredFilter};
use crate::frame;
use crate::functions;
use crate::listing::BLOB_ID;
use crate::plan_dir::PlanDir;
use crate::summary::{FilterSummary, PlanSummary};
use arrow::array::{Array, AsArray};
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::DataFrame;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

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
    run.progress.step("building the Bloom filter of references");
    let seed = FilterParams::seed_from_salt(&job.salt);
    let stem = format!("filter-{}", job.run_id);
    let mut params = FilterParams::foldable(expected, job.fpp, seed);
    let mut built = engine
        .build_filter(references, params, job.fpp, run.dir, &stem)
        .await?;
    if guessed && from_previous.is_some() && built.bloom.estimated_fpp() > job.fpp * RESIZE_ABOVE {
        tracing::info!(
            estimated_fpp = built.bloom.estimated_fpp(),
            sized_for = expected,
            "more distinct references than the last run suggested: estimating them and building the filter again"
        );
        let undersized = run.dir.location.child(&built.name);
        run.dir
            .location
            .store
            .delete(&undersized)
            .await
            .map_err(|e| {
                Error::runtime(format!("removing the undersized filter {undersized}: {e}"))
            })?;
        expected = estimate(run, references, rows).await?;
        params = FilterParams::foldable(expected, job.fpp, seed);
        built = engine
            .build_filter(
                references,
                params,
                job.fpp,
                run.dir,
                &format!("{stem}-resized"),
            )
            .await?;
    }
    summary.counts.reference_count = built.ids;
    summary.counts.null_reference_count = built.rows - built.ids;
    let bloom = &built.bloom;
    summary.filter = Some(FilterSummary {
        params: bloom.params(),
        expected_items: expected,
        requested_fpp: job.fpp,
        max_fpp: job.max_fpp,
        estimated_fpp: bloom.estimated_fpp(),
        fill_ratio: bloom.fill_ratio(),
        estimated_items: bloom.estimated_items() as u64,
        built_bits: params.num_bits,
        location: built.location.clone(),
        checksum: built.checksum.clone(),
    });
    let estimated_fpp = bloom.estimated_fpp();
    if estimated_fpp > job.max_fpp {
        return Err(Error::aborted(format!(
            "the merged Bloom filter's estimated false-positive rate {estimated_fpp:.4} exceeds --max-fpp {}: \
             it holds more distinct ids than the {expected} it was sized for (raise --expected-references)",
            job.max_fpp
        )));
    }
    Ok(built)
}

async fn estimate(run: &Run<'_>, references: &DataFrame, rows: u64) -> Result<u64> {
    run.progress.step("estimating the distinct references");
    sizing::distinct_estimate(references.clone(), rows).await
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
