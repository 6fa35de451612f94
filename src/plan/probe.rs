//! The probe of the listing: each listed id is classified by the generation rule and looked up
//! among the references; eligible ids that no reference holds are the candidates. Every
//! partition counts what it sees ([`PlanCounts`]) and writes its candidates as batches.
//!
//! Verdicts come from one of three lookups ([`Lookup`]): the filter in this process's memory
//! (classified, fingerprinted and looked up in one pass over each batch), the stored filter
//! through `blobgc_bloom_contains` (a cluster), or an exact join with the references (`--strategy
//! exact`). The last two are columns of the plan ([`frame`]).

use crate::error::Result;
use crate::filter::{Sharded, fingerprint};
use crate::functions::{self, for_each_id};
use crate::generation::{GenerationRule, IdClass};
use crate::listing::{BLOB_ID, SIZE};
use crate::plan_dir::BatchWriter;
use crate::progress::Progress;
use crate::summary::{MALFORMED_EXAMPLES, PlanCounts};
use crate::verify;
use arrow::array::{Array, AsArray, BooleanArray, RecordBatch, UInt8Array};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Int64Type, UInt8Type};
use datafusion::logical_expr::{
    Expr, JoinType, LogicalPlanBuilder, Partitioning, col, lit, not, when,
};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use std::sync::Arc;

/// Where a listed id is looked up.
pub(super) enum Lookup {
    /// The filter, in this process's memory.
    InMemory(Arc<Sharded>),
    /// The filter whose manifest is stored at a location: each process loads the shards it is
    /// sent ids of, checked by their SHA-256. The listing is routed to `routes` partitions by
    /// shard ([`routes`]).
    Stored {
        location: String,
        checksum: String,
        routes: u32,
    },
    /// Every reference, joined by canonical spelling: no false positive.
    Exact(DataFrame),
}

/// What the probe saw: counts, the candidates' batches, and, when the probe computed them and
/// there were few enough to verify, the candidates' fingerprints.
pub(super) struct Probed {
    pub counts: PlanCounts,
    pub batches: Vec<String>,
    pub fingerprints: Option<verify::Fingerprints>,
}

/// The listing prepared for `lookup` over `partitions` partitions, and how its batches' verdicts
/// are read.
pub(super) fn frame(
    listed: DataFrame,
    lookup: Lookup,
    rule: GenerationRule,
    partitions: usize,
) -> Result<(DataFrame, Verdict)> {
    let spread = Partitioning::RoundRobinBatch(partitions.max(1));
    let referenced = match lookup {
        Lookup::InMemory(filter) => {
            let listed = listed
                .select(vec![col(BLOB_ID), col(SIZE)])?
                .repartition(spread)?;
            return Ok((listed, Verdict::Lookup { filter, rule }));
        }
        Lookup::Stored {
            location,
            checksum,
            routes,
        } => {
            let routed = by_shard(listed, routes)?;
            let contains =
                functions::bloom_contains().call(vec![col(FP), lit(location), lit(checksum)]);
            routed.with_column("referenced", contains)?
        }
        Lookup::Exact(references) => {
            // Every spelling of an id meets its canonical form on both sides of the join.
            let keys = references.select(vec![canonical(col(BLOB_ID)).alias("ref_key")])?;
            listed
                .select(vec![
                    col(BLOB_ID),
                    col(SIZE),
                    canonical(col(BLOB_ID)).alias("key"),
                ])?
                .join(keys, JoinType::LeftMark, &["key"], &["ref_key"], None)?
                .with_column_renamed("mark", "referenced")?
        }
    };
    let class = functions::id_class().call(vec![
        col(BLOB_ID),
        lit(u64::from(rule.family)),
        lit(rule.current_generation),
    ]);
    let eligible = col("class").eq(lit(IdClass::Eligible as u8));
    let planned = referenced
        .select(vec![
            col(BLOB_ID),
            col(SIZE),
            class.alias("class"),
            col("referenced"),
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
    Ok((planned, Verdict::Planned))
}

/// The largest filter every process that probes loads whole. Above it the listing is routed
/// by shard, so that a task loads only its shards; a cluster needs that when a filter outgrows
/// an executor. Below it the routing costs more than it saves: at 50M listed blobs and a 150 MB
/// filter (64 shards), two runs of each side by side, it took the probe from 25-27 s to 46-51 s
/// and the executors' peaks from 480-680 MB to 700-970 MB.
const ROUTED_ABOVE_BYTES: u64 = 256 << 20;

/// The partitions the listing is routed to for a filter of `shards` shards and `bits` bits in
/// all: one per shard above [`ROUTED_ABOVE_BYTES`], else none (1).
pub(super) fn routes(shards: u32, bits: u64) -> u32 {
    match bits / 8 > ROUTED_ABOVE_BYTES {
        true => shards,
        false => 1,
    }
}

/// The fingerprint and shard columns of [`by_shard`].
pub(super) const FP: &str = "fp";
const SHARD: &str = "shard";
const ROUTE: &str = "route";

/// `frame` with each id's fingerprint (column [`FP`]), partitioned by its shard among `shards`:
/// a task sees the ids of its shards only. DataFusion keeps a partitioning only where an
/// operator needs it, so the routing is a join with the table of shards (one row each), which
/// hash-partitions both sides by shard (the sessions, local and cluster, keep it from
/// broadcasting the small side instead).
pub(super) fn by_shard(frame: DataFrame, shards: u32) -> Result<DataFrame> {
    let fp = functions::fingerprint_udf().call(vec![col(BLOB_ID)]);
    let frame = frame.with_column(FP, fp)?;
    if shards == 1 {
        return Ok(frame);
    }
    let frame = frame.with_column(SHARD, shard(col(FP), shards))?;
    let frame = a_task_per_shard(frame, shards);
    let (state, _) = frame.clone().into_parts();
    let routes: Vec<Vec<Expr>> = (0..shards).map(|s| vec![lit(s)]).collect();
    let routes = LogicalPlanBuilder::values(routes)?
        .project(vec![col("column1").alias(ROUTE)])?
        .build()?;
    let routed =
        DataFrame::new(state, routes).join(frame, JoinType::RightSemi, &[ROUTE], &[SHARD], None)?;
    Ok(routed.drop_columns(&[SHARD])?)
}

/// `frame` planned with at least one partition per shard, so that a stage after a shuffle by
/// shard has a task per shard (a shuffle partition is a task), which holds that shard's filter
/// alone: with a task per executor slot instead, each held its share of the whole filter, and
/// an executor building a 150 MB filter (50M listed blobs) peaked at 880 MB.
pub(super) fn a_task_per_shard(frame: DataFrame, shards: u32) -> DataFrame {
    let (mut state, plan) = frame.into_parts();
    let execution = &mut state.config_mut().options_mut().execution;
    execution.target_partitions = execution.target_partitions.max(shards as usize);
    DataFrame::new(state, plan)
}

/// The shard of a fingerprint among `shards`.
pub(super) fn shard(fp: Expr, shards: u32) -> Expr {
    functions::shard().call(vec![fp, lit(shards)])
}

/// An id in its canonical spelling, so that exact joins match every spelling of a reference.
pub(super) fn canonical(id: Expr) -> Expr {
    functions::canonical_id().call(vec![id])
}

/// How a partition of the probe tells the candidates of a batch.
pub(super) enum Verdict {
    /// The batches hold `blob_id` and `size`: each id is classified and, unless malformed,
    /// looked up in the filter, here.
    Lookup {
        filter: Arc<Sharded>,
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

impl Verdict {
    fn of(&self, batch: &RecordBatch) -> Result<Verdicts> {
        match self {
            Verdict::Lookup { filter, rule } => look_up(filter, rule, batch),
            Verdict::Planned => Ok(Verdicts {
                class: batch.column(2).as_primitive::<UInt8Type>().clone(),
                candidate: batch.column(3).as_boolean().clone(),
                referenced: batch.column(4).as_boolean().clone(),
                fingerprints: None,
            }),
        }
    }
}

/// Classifies, fingerprints and looks up each id of `batch` in one pass.
fn look_up(filter: &Sharded, rule: &GenerationRule, batch: &RecordBatch) -> Result<Verdicts> {
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
    let mut referenced = vec![false; n];
    let mut candidate = vec![false; n];
    let mut candidates = Vec::new();
    for ((&row, &fp), found) in rows
        .iter()
        .zip(&fps)
        .zip(filter.contains_fingerprints(&fps))
    {
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

/// One partition of the probe: counts what it sees and writes its candidates as batches,
/// fingerprinting them unless `fingerprints` is None or they pass `verify_limit`.
pub(super) async fn partition(
    mut stream: SendableRecordBatchStream,
    verdict: Arc<Verdict>,
    mut writer: BatchWriter,
    mut fingerprints: Option<verify::Fingerprints>,
    verify_limit: u64,
    progress: Progress,
) -> Result<Probed> {
    let mut c = PlanCounts::default();
    while let Some(batch) = stream.try_next().await? {
        let v = verdict.of(&batch)?;
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
        progress.advance(batch.num_rows() as u64);
    }
    writer.flush(true).await?;
    c.candidates_by_generation = writer.generations.counts();
    Ok(Probed {
        counts: c,
        batches: writer.written,
        fingerprints,
    })
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
    let (mut malformed, mut future) = (Vec::new(), Vec::new());
    for i in 0..batch.num_rows() {
        match v.class.is_valid(i).then(|| v.class.value(i)) {
            Some(x) if x == IdClass::Eligible as u8 => {
                c.eligible_blob_count += 1;
                c.eligible_bytes += size(i);
            }
            Some(x) if x == IdClass::Active as u8 => {}
            Some(x) if x == IdClass::Future as u8 => future.push(i),
            _ => {
                malformed.push(i);
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
    c.malformed_id_count += malformed.len() as u64;
    c.future_id_count += future.len() as u64;
    examples(batch, &malformed, &mut c.malformed_ids)?;
    examples(batch, &future, &mut c.future_ids)
}

/// The ids of `rows` of `batch`, added to `out` up to [`MALFORMED_EXAMPLES`].
fn examples(batch: &RecordBatch, rows: &[usize], out: &mut Vec<String>) -> Result<()> {
    let room = MALFORMED_EXAMPLES.saturating_sub(out.len());
    if rows.is_empty() || room == 0 {
        return Ok(());
    }
    let ids = cast(batch.column(0), &DataType::Utf8)?;
    let ids = ids.as_string::<i32>();
    out.extend(rows.iter().take(room).map(|&i| match ids.is_null(i) {
        true => "<null>".to_string(),
        false => ids.value(i).to_string(),
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::shard_of;
    use crate::store::S3Options;
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::UInt64Type;
    use std::collections::HashSet;

    #[tokio::test]
    async fn a_routed_partition_holds_the_ids_of_its_shards_only() {
        let ctx = crate::session::local(4, &S3Options::default()).unwrap();
        let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..4_000).map(|i| format!("1_3_{i}")),
        ));
        let listed = ctx
            .read_batch(RecordBatch::try_from_iter([(BLOB_ID, ids)]).unwrap())
            .unwrap();
        let mut seen = HashSet::new();
        let mut rows = 0;
        for partition in by_shard(listed, 16)
            .unwrap()
            .execute_stream_partitioned()
            .await
            .unwrap()
        {
            let batches: Vec<RecordBatch> = partition.try_collect().await.unwrap();
            let shards: HashSet<usize> = batches
                .iter()
                .flat_map(|b| {
                    let fps = b.column_by_name(FP).unwrap().as_primitive::<UInt64Type>();
                    fps.values()
                        .iter()
                        .map(|&fp| shard_of(fp, 16))
                        .collect::<Vec<_>>()
                })
                .collect();
            rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
            assert!(seen.is_disjoint(&shards), "a shard in two partitions");
            seen.extend(shards);
        }
        assert_eq!((rows, seen.len()), (4_000, 16));
    }

    #[test]
    fn only_a_large_filter_is_routed() {
        assert_eq!(routes(64, ROUTED_ABOVE_BYTES * 8), 1);
        assert_eq!(routes(64, ROUTED_ABOVE_BYTES * 8 + 64), 64);
    }
}
