//! How large the run's filter is: sized for the distinct references (shared blobs are referenced
//! ~2.5 times each), from the cheapest estimate at hand, with a margin; and what the filter's
//! bits then say about references that name no listed blob.

use crate::error::Result;
use crate::filter::{FilterParams, Sharded};
use crate::frame;
use crate::functions::{distinct, fingerprint_udf};
use crate::job::{Job, MAX_SHARDS};
use crate::listing::BLOB_ID;
use crate::summary::{PlanCounts, PlanSummary};
use datafusion::logical_expr::col;
use datafusion::prelude::DataFrame;

/// Margin over the HyperLogLog estimate of the distinct references: the spill's sketch has
/// 16384 registers, a standard error of 0.8%, so 5% is six of them.
const DISTINCT_MARGIN: f64 = 1.05;

/// A filter sized from the last run is built again, from an estimate, when its false-positive
/// rate is above the requested one by this factor.
pub(super) const RESIZE_ABOVE: f64 = 1.5;

/// The size a shard is built at, before it is folded, when `--shards` is not given: a few MB,
/// so a cluster task holds a few of them and this process builds each with its lines cached.
pub(super) const SHARD_BYTES: u64 = 4 << 20;

/// How the filter is cut and sized: `shards` shards of `params` each, folded to `fpp` once
/// built.
pub(super) struct Shape {
    pub params: FilterParams,
    pub shards: u32,
    pub fpp: f64,
}

impl Shape {
    /// The shape of a filter for `expected` distinct references: the job's shard count, or one
    /// from the filter's size ([`shards`]).
    pub fn new(job: &Job, expected: u64) -> Result<Shape> {
        let seed = FilterParams::seed_from_salt(&job.salt);
        let whole = FilterParams::foldable(expected, job.fpp, seed);
        let shards = shards(job.shards, whole);
        Ok(Shape {
            params: Sharded::shard_params(expected, job.fpp, seed, shards)?,
            shards,
            fpp: job.fpp,
        })
    }
}

/// Shards of a filter of `params` when the job names none: as many as make shards of
/// [`SHARD_BYTES`] at most, a power of two.
pub(super) fn shards(given: Option<u32>, params: FilterParams) -> u32 {
    given.unwrap_or_else(|| {
        let wanted = params
            .size_bytes()
            .div_ceil(SHARD_BYTES)
            .next_power_of_two();
        u32::try_from(wanted).unwrap_or(MAX_SHARDS).min(MAX_SHARDS)
    })
}

/// An estimate of the distinct references with [`DISTINCT_MARGIN`], never more than the `rows`
/// that bound them.
pub(super) fn with_margin(estimate: u64, rows: u64) -> u64 {
    ((estimate as f64 * DISTINCT_MARGIN).ceil() as u64).min(rows)
}

/// The distinct references of the last run of the same store, grown with the id values since
/// (never shrunk: fewer ids may still be as many distinct ones), with [`DISTINCT_MARGIN`]: a
/// nightly run skips the estimating pass over every reference. None without a count to go by.
pub(super) fn distinct_from_previous(previous: &PlanSummary, rows: u64) -> Option<u64> {
    let before = previous.counts.reference_count + previous.counts.null_reference_count;
    let distinct = previous.counts.distinct_reference_count;
    if before == 0 || distinct == 0 {
        return None;
    }
    let grown = distinct as f64 * (rows as f64 / before as f64).max(1.0) * DISTINCT_MARGIN;
    Some((grown.ceil() as u64).min(rows))
}

/// The distinct reference ids, estimated by the spill's sketch (one pass over the id columns,
/// so a cluster sizes the filter exactly as this process does), with
/// [`DISTINCT_MARGIN`]; never more than the `rows` that bound them. Sizing the filter for the
/// rows instead makes it ~2.5 times too large while it is built (cache misses) and, folded by
/// whole factors, still ~1.3 times too large after. Should the estimate be short, the filter is
/// fuller than planned and the `--max-fpp` check stops the run.
pub(super) async fn distinct_estimate(references: DataFrame, rows: u64) -> Result<u64> {
    let [estimate] = frame::one_row(
        references,
        [distinct().call(vec![fingerprint_udf().call(vec![col(BLOB_ID)])])],
        "reading reference sources",
    )
    .await?;
    Ok(with_margin(estimate, rows))
}

/// Distinct references naming no listed blob: the distinct references less the listed blobs
/// the filter says are referenced, those corrected for its false-positive rate `fpp`.
pub(super) fn missing_references(c: &PlanCounts, fpp: f64) -> u64 {
    let listed = c.blob_count.saturating_sub(c.malformed_id_count) as f64;
    let referenced = ((c.referenced_blob_count as f64 - fpp * listed) / (1.0 - fpp)).max(0.0);
    (c.distinct_reference_count as f64 - referenced)
        .max(0.0)
        .round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_a_few_mb_unless_given() {
        let bytes = |b: u64| FilterParams {
            num_bits: b * 8,
            num_hashes: 7,
            seed: 1,
        };
        assert_eq!(shards(None, bytes(1)), 1);
        assert_eq!(shards(None, bytes(SHARD_BYTES)), 1);
        assert_eq!(shards(None, bytes(SHARD_BYTES + 1)), 2);
        assert_eq!(shards(None, bytes(150 << 20)), 64);
        assert_eq!(shards(None, bytes(u64::MAX / 16)), MAX_SHARDS);
        assert_eq!(shards(Some(8), bytes(1)), 8);
    }
}
