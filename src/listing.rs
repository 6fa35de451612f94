//! The blobs to consider: a live listing of the store, or a Parquet inventory of it. Either
//! way a streamed, partitioned DataFusion input with `blob_id` and `size`; never collected.

use crate::error::{Error, Result};
use crate::store::Location;
use arrow::array::{Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::Column;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, cast};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use std::sync::Arc;

pub const BLOB_ID: &str = "blob_id";
pub const SIZE: &str = "size";
/// Rows per listing batch: one object_store page is 1000 keys on S3.
const LISTING_BATCH_ROWS: usize = 8192;

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(BLOB_ID, DataType::Utf8, false),
        Field::new(SIZE, DataType::Int64, false),
    ]))
}

/// The live listing of `store`: every key below its prefix is a blob id.
pub fn live(ctx: &SessionContext, store: &Location) -> Result<DataFrame> {
    let partition = StoreListing {
        schema: schema(),
        store: Arc::clone(&store.store),
        prefix: store.path.clone(),
    };
    let table = StreamingTable::try_new(schema(), vec![Arc::new(partition)])?;
    Ok(ctx.read_table(Arc::new(table))?)
}

/// A Parquet inventory with `blob_id` (string) and `size` (integer) columns.
pub async fn inventory(ctx: &SessionContext, url: &str) -> Result<DataFrame> {
    let what = format!("inventory {url}");
    let loc = Location::parse(url, "--inventory")?;
    loc.register(ctx);
    let table_url = if url.ends_with(".parquet") {
        loc.url()
    } else {
        loc.dir_url()
    };
    let df = ctx
        .read_parquet(table_url, ParquetReadOptions::default())
        .await
        .map_err(|e| Error::runtime(format!("{what}: cannot read Parquet: {e}")))?;
    for (column, ok) in [
        (
            BLOB_ID,
            (|t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8))
                as fn(&DataType) -> bool,
        ),
        (SIZE, |t: &DataType| t.is_integer()),
    ] {
        let field = df
            .schema()
            .field_with_unqualified_name(column)
            .map_err(|_| Error::usage(format!("{what}: no column {column:?}")))?;
        if !ok(field.data_type()) {
            return Err(Error::usage(format!(
                "{what}: column {column:?} has type {}",
                field.data_type()
            )));
        }
    }
    Ok(df.select(vec![
        Expr::Column(Column::from_name(BLOB_ID)),
        cast(Expr::Column(Column::from_name(SIZE)), DataType::Int64).alias(SIZE),
    ])?)
}

/// One partition of the live listing: the keys below `prefix`, in pages.
#[derive(Debug)]
struct StoreListing {
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl PartitionStream for StoreListing {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (schema, prefix) = (Arc::clone(&self.schema), self.prefix.clone());
        let batches = self
            .store
            .list(Some(&self.prefix))
            .map_err(DataFusionError::from)
            .chunks(LISTING_BATCH_ROWS)
            .map(move |page| {
                to_batch(
                    &schema,
                    &prefix,
                    page.into_iter().collect::<Result<Vec<_>, _>>()?,
                )
            });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        ))
    }
}

fn to_batch(
    schema: &SchemaRef,
    prefix: &Path,
    page: Vec<ObjectMeta>,
) -> datafusion::error::Result<RecordBatch> {
    let mut ids = StringBuilder::with_capacity(page.len(), page.len() * 56);
    let mut sizes = Int64Builder::with_capacity(page.len());
    for meta in &page {
        ids.append_value(key_below(prefix, &meta.location));
        sizes.append_value(i64::try_from(meta.size).unwrap_or(i64::MAX));
    }
    Ok(RecordBatch::try_new(
        Arc::clone(schema),
        vec![Arc::new(ids.finish()), Arc::new(sizes.finish())],
    )?)
}

/// The key of `location` below `prefix`: the blob id, as stored (a nested key keeps its `/`,
/// which makes it a malformed id rather than a silently skipped one).
pub fn key_below<'a>(prefix: &Path, location: &'a Path) -> &'a str {
    let full = location.as_ref();
    let p = prefix.as_ref();
    if p.is_empty() {
        full
    } else {
        full.get(p.len() + 1..).unwrap_or("")
    }
}

/// The store path of blob `id` below `prefix`, the inverse of [`key_below`].
pub fn path_of(prefix: &Path, id: &str) -> Result<Path> {
    let text = if prefix.as_ref().is_empty() {
        id.to_string()
    } else {
        format!("{prefix}/{id}")
    };
    Path::parse(&text)
        .map_err(|e| Error::runtime(format!("blob id {id:?} is not a valid object key: {e}")))
}
