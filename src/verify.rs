//! The check pass: one more read of the references, after the probe and before any deletion.
//!
//! **Exact verification:** the candidates go into a second, small Bloom filter at
//! [`SUSPECT_FPP`] (about 3.6 bytes per candidate), stored next to the plan and loaded once per
//! process like the main one; every reference is streamed past it (a map-only stage, in-process or
//! on a cluster's executors) and the few that match, the suspects, are compared exactly, by
//! canonical spelling, with the candidates. So a referenced candidate (a bug of the main filter)
//! is always caught under any spelling, and a false positive of this filter only costs one more
//! exact comparison. The exact strategy, which builds no filter, counts its references and
//! estimates its distinct ones here (for the missing-references breaker, [`crate::breakers`]).

use crate::error::{Error, Result};
use crate::filter::{Bloom, FilterParams, non_canonical};
use crate::functions::{self, for_each_id};
use crate::listing::BLOB_ID;
use crate::plan_dir::PlanDir;
use arrow::array::AsArray;
use arrow::datatypes::DataType;
use datafusion::logical_expr::{cast, col, lit};
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use std::collections::HashSet;

/// Suspects kept for the exact comparison: more would mean a broken filter anyway.
pub const MAX_SUSPECTS: usize = 10_000;
/// False-positive rate of the candidates' filter: few enough suspects to compare every one of
/// them exactly (about 20 among 22M references).
pub const SUSPECT_FPP: f64 = 1e-6;

/// The candidates of `batches` (`candidate_count` of them) that a reference names, under any
/// spelling; at most `limit`. Empty unless the main filter missed a reference.
pub async fn referenced_candidates(
    dir: &PlanDir,
    run_id: &str,
    salt: &str,
    candidate_count: u64,
    batches: &[String],
    references: DataFrame,
    limit: usize,
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
    let suspect = functions::bloom_contains().call(vec![
        col(BLOB_ID),
        lit(location.as_str()),
        lit(checksum.as_str()),
    ]);
    let batches_of_suspects = references
        .filter(col(BLOB_ID).is_not_null().and(suspect))?
        .select(vec![cast(col(BLOB_ID), DataType::Utf8)])?
        .limit(0, Some(MAX_SUSPECTS))?
        .collect()
        .await
        .map_err(|e| Error::runtime(format!("verifying candidates: {e}")))?;
    let suspects: Vec<String> = batches_of_suspects
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
    confirm(dir, batches, &suspects, limit).await
}

/// What a pass over the references of the exact strategy counted.
#[derive(Debug)]
pub struct Counted {
    /// Non-null reference ids and reference rows read.
    pub ids: u64,
    pub rows: u64,
    /// Every reference id: the distinct ids are estimated from its bits.
    pub distinct: Bloom,
}

/// Reads every reference once, partition by partition, into a filter of `distinct` parameters.
pub async fn count_references(references: DataFrame, distinct: FilterParams) -> Result<Counted> {
    let partitions = references
        .select_columns(&[BLOB_ID])?
        .execute_stream_partitioned()
        .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in partitions {
        tasks.spawn(async move {
            let mut c = Counted {
                ids: 0,
                rows: 0,
                distinct: Bloom::new(distinct)?,
            };
            while let Some(batch) = stream.try_next().await? {
                c.rows += batch.num_rows() as u64;
                for_each_id(batch.column(0), |id| {
                    if let Some(id) = id {
                        c.ids += 1;
                        c.distinct.insert(id);
                    }
                })?;
            }
            Ok::<_, Error>(c)
        });
    }
    let mut all = Counted {
        ids: 0,
        rows: 0,
        distinct: Bloom::new(distinct)?,
    };
    while let Some(done) = tasks.join_next().await {
        let c = done.map_err(|e| Error::runtime(format!("reference count failed: {e}")))??;
        all.ids += c.ids;
        all.rows += c.rows;
        all.distinct.union_words(&c.distinct.to_le_bytes())?;
    }
    Ok(all)
}

/// The candidates of `batches` that one of `suspects` names, exactly (canonical spellings
/// compared as text); at most `limit` of them.
async fn confirm(
    dir: &PlanDir,
    batches: &[String],
    suspects: &[String],
    limit: usize,
) -> Result<Vec<String>> {
    if suspects.is_empty() {
        return Ok(Vec::new());
    }
    let canonical = |id: &str| non_canonical(id).unwrap_or_else(|| id.to_string());
    let suspects: HashSet<String> = suspects.iter().map(|s| canonical(s)).collect();
    let mut found = Vec::new();
    for name in batches {
        for (id, _) in dir.read_batch(name).await? {
            if suspects.contains(&canonical(&id)) && found.len() < limit {
                found.push(id);
            }
        }
    }
    Ok(found)
}
