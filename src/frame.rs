//! Small answers from DataFusion: the one row of an aggregate without groups, as counts, and a
//! column as strings. Every mode asks for them.

use crate::error::{Error, Result};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::{Expr, lit, when};
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;

/// `exprs` aggregated over `df` without groups, each read as a count; `what` names the work in
/// errors.
pub async fn one_row<const N: usize>(
    df: DataFrame,
    exprs: [Expr; N],
    what: &str,
) -> Result<[u64; N]> {
    let exprs = exprs
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.alias(format!("c{i}")))
        .collect();
    let batches = df
        .aggregate(vec![], exprs)?
        .collect()
        .await
        .map_err(|e| Error::runtime(format!("{what}: {e}")))?;
    let row = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| Error::runtime(format!("{what}: the aggregate returned no row")))?;
    let mut out = [0; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = count_at(row, i)?;
    }
    Ok(out)
}

/// How many rows `condition` holds for, as an aggregate.
pub fn count_where(condition: Expr) -> Result<Expr> {
    Ok(sum(when(condition, lit(1i64)).otherwise(lit(0i64))?))
}

/// Column `i` of the first row of `batch`, a count: null (a sum over nothing) is 0.
pub fn count_at(batch: &RecordBatch, i: usize) -> Result<u64> {
    if i >= batch.num_columns() {
        return Err(Error::runtime(format!(
            "expected a count in column {i} of {} columns",
            batch.num_columns()
        )));
    }
    let c = cast(batch.column(i), &DataType::Int64)?;
    let c = c.as_primitive::<Int64Type>();
    Ok(if c.is_empty() || c.is_null(0) {
        0
    } else {
        c.value(0).max(0) as u64
    })
}

/// The first column of `df`, as strings, `at_most` of them; nulls are left out. The cap is
/// taken here, from the stream, not as a limit in the plan: on Ballista 55 a limit pushed into
/// a union of differently shaped inputs leaves a stage whose tasks report different operator
/// counts, and the scheduler never marks such a job done.
pub async fn strings(df: DataFrame, at_most: usize, what: &str) -> Result<Vec<String>> {
    let failed = |e: datafusion::error::DataFusionError| Error::runtime(format!("{what}: {e}"));
    let mut stream = df.execute_stream().await.map_err(failed)?;
    let mut out = Vec::new();
    while out.len() < at_most
        && let Some(batch) = stream.try_next().await.map_err(failed)?
    {
        let column = cast(batch.column(0), &DataType::Utf8)?;
        let room = at_most - out.len();
        out.extend(
            column
                .as_string::<i32>()
                .iter()
                .flatten()
                .take(room)
                .map(str::to_string),
        );
    }
    Ok(out)
}
