//! The plan directory: what a mark phase leaves for the sweep, on any object store.
//!
//! ```text
//! summary.json                 inputs, parameters, counts, status, the list of batches
//! clock.json                   the run's clock, written to read the store's own time back
//! filter-<run>.json            the run's Bloom filter: a manifest naming its shards by SHA-256
//!                              (the manifest's own is in the summary; every reader checks both)
//! filter-<run>/<sha256>.bloom  its shards (filter::StoredFilter); `blobgc incremental` and the
//! candidates-<run>.json, ...   cluster's verification store their filters the same way
//! listing-<run>/               on a cluster, a live listing as an inventory, while planning
//! batches/<name>.parquet       deletion batches: blob_id (Utf8), size (Int64)
//! done/<name>.json             written once a batch is fully deleted: the sweep skips it
//! ```
//! Only batches listed in `summary.json` of a plan whose status is `planned` are ever
//! executed: a stray file in `batches/` deletes nothing.

use crate::error::{Error, Result};
use crate::filter::{Sharded, StoredFilter};
use crate::listing::{BLOB_ID, SIZE};
use crate::store::Location;
use crate::summary::{ByGeneration, PlanSummary};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

const SUMMARY: &str = "summary.json";
const CLOCK: &str = "clock.json";

#[derive(Debug, Clone)]
pub struct PlanDir {
    pub location: Location,
}

/// What deleting one batch did; stored as its done marker.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchOutcome {
    pub deleted: u64,
    pub bytes: u64,
}

impl PlanDir {
    pub fn new(location: Location) -> Self {
        PlanDir { location }
    }

    pub async fn write_summary(&self, summary: &PlanSummary) -> Result<()> {
        let json = serde_json::to_vec_pretty(summary)
            .map_err(|e| Error::runtime(format!("encoding summary: {e}")))?;
        self.location
            .write(&self.location.child(SUMMARY), json)
            .await
    }

    pub async fn read_summary(&self) -> Result<PlanSummary> {
        let path = self.location.child(SUMMARY);
        let bytes = self.location.read(&path).await.map_err(|e| {
            Error::usage(format!(
                "{} is not a plan directory (no readable {SUMMARY}): {e}",
                self.location
            ))
        })?;
        PlanSummary::from_json(&bytes).map_err(|e| {
            Error::runtime(format!(
                "{}/{SUMMARY} is not a blobgc plan summary: {e}",
                self.location
            ))
        })
    }

    /// The store's clock: writes `clock.json` (holding the run's clock `now`) and returns the
    /// time the store stamped it with.
    pub async fn store_clock(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let path = self.location.child(CLOCK);
        self.location
            .write(&path, format!("{{\"now\":\"{now}\"}}\n"))
            .await?;
        let meta =
            self.location.store.head(&path).await.map_err(|e| {
                Error::runtime(format!("reading back {}/{CLOCK}: {e}", self.location))
            })?;
        Ok(meta.last_modified)
    }

    /// Stores `filter` as `stem` ([`StoredFilter::write`]): its manifest's URL and checksum.
    pub async fn write_filter(&self, stem: &str, filter: &Sharded) -> Result<(String, String)> {
        StoredFilter::write(&self.location, stem, filter).await
    }

    /// Deletes the filter stored as `stem`: its manifest, then its shards.
    pub async fn delete_filter(&self, stem: &str) -> Result<()> {
        let manifest = self.location.child(&StoredFilter::manifest_name(stem));
        self.location
            .store
            .delete(&manifest)
            .await
            .map_err(|e| Error::runtime(format!("removing the filter {manifest}: {e}")))?;
        self.delete_dir(stem).await
    }

    /// The URL of a batch file, for DataFusion.
    pub fn batch_url(&self, name: &str) -> String {
        self.location.child_url(&format!("batches/{name}.parquet"))
    }

    fn batch_path(&self, name: &str) -> object_store::path::Path {
        self.location
            .path
            .clone()
            .join("batches")
            .join(format!("{name}.parquet"))
    }

    fn done_path(&self, name: &str) -> object_store::path::Path {
        self.location
            .path
            .clone()
            .join("done")
            .join(format!("{name}.json"))
    }

    pub async fn write_batch(&self, name: &str, batch: &RecordBatch) -> Result<()> {
        let mut buf = Vec::with_capacity(batch.get_array_memory_size());
        // Content hashes repeat nowhere: a dictionary of them is built and then given up.
        let props = WriterProperties::builder()
            .set_column_dictionary_enabled(BLOB_ID.into(), false)
            .build();
        let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
        writer.write(batch)?;
        writer.close()?;
        self.location.write(&self.batch_path(name), buf).await
    }

    /// The `(blob_id, size)` rows of a batch.
    pub async fn read_batch(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let what = || format!("deletion batch {name} of {}", self.location);
        let bytes: Bytes = self.location.read(&self.batch_path(name)).await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|e| Error::runtime(format!("{}: {e}", what())))?;
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| Error::runtime(format!("{}: {e}", what())))?;
            let (Some(ids), Some(sizes)) =
                (batch.column_by_name(BLOB_ID), batch.column_by_name(SIZE))
            else {
                return Err(Error::runtime(format!(
                    "{}: needs columns {BLOB_ID} and {SIZE}",
                    what()
                )));
            };
            let ids = cast(ids, &DataType::Utf8)?;
            let sizes = cast(sizes, &DataType::Int64)?;
            let (ids, sizes) = (ids.as_string::<i32>(), sizes.as_primitive::<Int64Type>());
            if ids.null_count() > 0 {
                return Err(Error::runtime(format!("{}: null blob id", what())));
            }
            rows.extend(ids.iter().zip(sizes.iter()).map(|(id, size)| {
                (
                    id.unwrap_or_default().to_string(),
                    size.unwrap_or(0).max(0) as u64,
                )
            }));
        }
        Ok(rows)
    }

    pub async fn mark_done(&self, name: &str, outcome: &BatchOutcome) -> Result<()> {
        let json = serde_json::to_vec(outcome).map_err(|e| Error::runtime(e.to_string()))?;
        self.location.write(&self.done_path(name), json).await
    }

    /// Names of the batches already marked done.
    pub async fn done(&self) -> Result<HashSet<String>> {
        let prefix = self.location.path.clone().join("done");
        let metas: Vec<_> = self
            .location
            .store
            .list(Some(&prefix))
            .try_collect()
            .await?;
        Ok(metas
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect())
    }

    /// The outcomes recorded for `names`, summed.
    pub async fn outcomes(&self, names: &[String]) -> Result<BatchOutcome> {
        let outcomes: Vec<BatchOutcome> = futures::stream::iter(names)
            .map(|name| async move {
                let bytes = self.location.read(&self.done_path(name)).await?;
                serde_json::from_slice::<BatchOutcome>(&bytes).map_err(|e| {
                    Error::runtime(format!("done marker of batch {name} is corrupt: {e}"))
                })
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        Ok(outcomes
            .iter()
            .fold(BatchOutcome::default(), |a, o| BatchOutcome {
                deleted: a.deleted + o.deleted,
                bytes: a.bytes + o.bytes,
            }))
    }

    /// Deletes everything below `name/` (a scratch table of the plan).
    pub async fn delete_dir(&self, name: &str) -> Result<()> {
        let prefix = self.location.child(name);
        let store = &self.location.store;
        let paths = store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
        store
            .delete_stream(paths)
            .try_for_each(|_| futures::future::ready(Ok(())))
            .await?;
        Ok(())
    }

    pub async fn delete_batches(&self, names: &[String]) -> Result<()> {
        let paths: Vec<_> = names.iter().map(|name| Ok(self.batch_path(name))).collect();
        self.location
            .store
            .delete_stream(futures::stream::iter(paths).boxed())
            .try_for_each(|_| futures::future::ready(Ok(())))
            .await?;
        Ok(())
    }
}

/// Cuts a stream of candidate rows into deletion batches of exactly `batch_size` rows (the
/// last one smaller), written as they fill, so candidates are never all held in memory.
pub struct BatchWriter {
    dir: PlanDir,
    prefix: String,
    batch_size: usize,
    schema: SchemaRef,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pub written: Vec<String>,
    /// What the rows pushed add up to, by generation.
    pub generations: ByGeneration,
}

impl BatchWriter {
    pub fn new(dir: PlanDir, prefix: String, batch_size: usize) -> Self {
        BatchWriter {
            dir,
            prefix,
            batch_size,
            schema: crate::listing::schema(),
            pending: Vec::new(),
            pending_rows: 0,
            written: Vec::new(),
            generations: ByGeneration::default(),
        }
    }

    /// Adds candidate rows (`blob_id`, `size` in any string and integer types).
    pub async fn push(&mut self, rows: RecordBatch) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let ids = cast(rows.column(0), &DataType::Utf8)?;
        let sizes = cast(rows.column(1), &DataType::Int64)?;
        let sized = sizes.as_primitive::<Int64Type>().iter();
        for (id, size) in ids.as_string::<i32>().iter().zip(sized) {
            let size = size.unwrap_or(0).max(0) as u64;
            self.generations.add(id.unwrap_or_default(), size);
        }
        self.pending_rows += rows.num_rows();
        self.pending.push(RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![ids, sizes],
        )?);
        if self.pending_rows >= self.batch_size {
            self.flush(false).await?;
        }
        Ok(())
    }

    /// Writes every full batch, and with `all` the remainder too.
    pub async fn flush(&mut self, all: bool) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let rows = concat_batches(&self.schema, &self.pending)?;
        self.pending.clear();
        let mut offset = 0;
        while rows.num_rows() - offset >= self.batch_size || (all && offset < rows.num_rows()) {
            let len = self.batch_size.min(rows.num_rows() - offset);
            let name = format!("{}-{:06}", self.prefix, self.written.len());
            self.dir
                .write_batch(&name, &rows.slice(offset, len))
                .await?;
            self.written.push(name);
            offset += len;
        }
        if offset < rows.num_rows() {
            self.pending
                .push(rows.slice(offset, rows.num_rows() - offset));
        }
        self.pending_rows = rows.num_rows() - offset;
        Ok(())
    }
}
