//! The blobs to consider: a live listing of the store, or a Parquet inventory of it. Either
//! way a streamed, partitioned DataFusion input with `blob_id` and `size`; never collected.
//!
//! On object stores that serve listings from an offset (S3 `start-after`), the key space is
//! cut into ranges listed concurrently, one DataFusion partition per `--list-concurrency`.
//! Content-addressed keys are uniform after their `{family}_{generation}_` part, so the cut
//! points are each such prefix present (found by skipping from one prefix to the next, one
//! request each) followed by evenly spaced base64url characters. The ranges tile the whole key
//! space, whatever the cut points: a key is listed exactly once.

use crate::blob_id::BlobId;
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
use futures::stream::BoxStream;
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

/// The live listing of `store`: every key below its prefix is a blob id. Listed in up to
/// `concurrency` key ranges at once where the store lists from an offset natively.
pub async fn live(ctx: &SessionContext, store: &Location, concurrency: usize) -> Result<DataFrame> {
    let plan = if store.lists_from_offset() && concurrency > 1 {
        key_ranges(store, concurrency).await?
    } else {
        RangePlan {
            seen: Vec::new(),
            ranges: vec![KeyRange {
                after: None,
                up_to: None,
            }],
        }
    };
    let mut partitions: Vec<Vec<KeyRange>> =
        vec![Vec::new(); concurrency.min(plan.ranges.len()).max(1)];
    for (i, range) in plan.ranges.into_iter().enumerate() {
        let n = partitions.len();
        partitions[i % n].push(range);
    }
    let mut streams: Vec<Arc<dyn PartitionStream>> = partitions
        .into_iter()
        .map(|ranges| {
            Arc::new(StoreListing {
                schema: schema(),
                store: Arc::clone(&store.store),
                prefix: store.path.clone(),
                ranges,
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    if !plan.seen.is_empty() {
        let batch = to_batch(&schema(), &store.path, plan.seen)?;
        streams.push(Arc::new(Listed {
            schema: schema(),
            batch,
        }));
    }
    let table = StreamingTable::try_new(schema(), streams)?;
    Ok(ctx.read_table(Arc::new(table))?)
}

/// Keys `k` with `after < k <= up_to` (relative to the store prefix); `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub after: Option<String>,
    pub up_to: Option<String>,
}

/// How to list a store in parallel: the keys already read while sizing the ranges, and the
/// ranges that hold all the others.
struct RangePlan {
    seen: Vec<ObjectMeta>,
    ranges: Vec<KeyRange>,
}

/// base64url in byte order, the characters that follow a generation prefix.
const SORTED_URL_ALPHABET: &[u8; 64] =
    b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
/// Keys of one list request (S3's page).
const PAGE: usize = 1000;
/// Pages read to size the ranges (and kept: at most this many thousand keys in memory); past
/// them the rest of the key space is one range.
const MAX_DISCOVERY_PAGES: usize = 256;

/// The group of a key, its `{family}_{generation}_` prefix or else its first character, and
/// an offset past the group's keys. A legacy group stops short of `_`, where generation
/// groups of the same first character sort, so that those are found too.
fn key_group(key: &str) -> (String, String) {
    if let Ok(id) = BlobId::parse(key)
        && key.len() > id.delegate.len()
    {
        let group = key[..key.len() - id.delegate.len()].to_string();
        let past = format!("{group}~");
        return (group, past);
    }
    let mut chars = key.chars();
    let first = chars.next().map(String::from).unwrap_or_default();
    let past = match chars.next() {
        Some(c) if c < '_' => format!("{first}Z~"),
        Some('_') => key.to_string(),
        _ => format!("{first}~"),
    };
    (first, past)
}

/// Where the hash after a group's prefix falls in [0, 1): keys of a group are uniform in it.
fn hash_fraction(rest: &str) -> f64 {
    rest.bytes().take(3).enumerate().fold(0.0, |acc, (i, b)| {
        let digit = SORTED_URL_ALPHABET
            .iter()
            .position(|&c| c >= b)
            .unwrap_or(63);
        acc + digit as f64 / 64f64.powi(i as i32 + 1)
    })
}

/// The key of `group` at hash fraction `f`.
fn key_at(group: &str, f: f64) -> String {
    let mut key = group.to_string();
    let mut x = f.clamp(0.0, 1.0 - 1e-12);
    for _ in 0..3 {
        x *= 64.0;
        key.push(SORTED_URL_ALPHABET[x as usize] as char);
        x -= x.floor();
    }
    key
}

/// Keys `after < k <= up_to` not read yet, of one group from hash fraction `from` on, with an
/// estimated number of keys.
struct Gap {
    after: String,
    up_to: Option<String>,
    group: String,
    from: f64,
    keys: f64,
}

/// Walks the key space a page at a time, keeping the keys read. When a page ends inside a
/// group, the rest of that group is estimated from its density in the page (its keys are
/// uniform in the hash space) and skipped as a gap, to be listed in parallel. One request per
/// large group, plus one per page of small groups; every key is read once.
async fn key_ranges(store: &Location, concurrency: usize) -> Result<RangePlan> {
    let started = std::time::Instant::now();
    let (mut seen, mut gaps) = (Vec::new(), Vec::new());
    let mut offset: Option<String> = None;
    for pages in 1.. {
        let listed = match &offset {
            None => store.store.list(Some(&store.path)),
            Some(o) => store
                .store
                .list_with_offset(Some(&store.path), &path_of(&store.path, o)?),
        };
        if pages > MAX_DISCOVERY_PAGES {
            let after = offset.unwrap_or_default();
            gaps.push(Gap {
                after,
                up_to: None,
                group: String::new(),
                from: 0.0,
                keys: 0.0,
            });
            break;
        }
        let page: Vec<ObjectMeta> = listed
            .take(PAGE)
            .try_collect()
            .await
            .map_err(|e| Error::runtime(format!("listing {store}: {e}")))?;
        let full = page.len() == PAGE;
        let Some(last) = page
            .last()
            .map(|m| key_below(&store.path, &m.location).to_string())
        else {
            break;
        };
        if full {
            let (group, past) = key_group(&last);
            let in_group: Vec<&str> = page
                .iter()
                .rev()
                .map(|m| key_below(&store.path, &m.location))
                .take_while(|k| key_group(k).0 == group)
                .collect();
            // The group's keys in this page span hash fractions first..last: its density there.
            let last_at = hash_fraction(&last[group.len()..]);
            let first_at = in_group
                .last()
                .map_or(0.0, |k| hash_fraction(&k[group.len()..]));
            let density = if last_at > first_at {
                in_group.len() as f64 / (last_at - first_at)
            } else {
                PAGE as f64
            };
            gaps.push(Gap {
                after: last,
                up_to: Some(past.clone()),
                keys: density * (1.0 - last_at),
                group,
                from: last_at,
            });
            offset = Some(past);
        }
        seen.extend(page);
        if !full {
            break;
        }
    }
    let total: f64 = gaps.iter().map(|g| g.keys).sum();
    // A range's last request reads up to a page past its end: ranges of 8+ pages waste little.
    let target = (total / (2 * concurrency) as f64).max(8.0 * PAGE as f64);
    let mut ranges = Vec::new();
    for gap in &gaps {
        let pieces = (gap.keys / target).ceil().max(1.0) as usize;
        let mut after = gap.after.clone();
        for i in 1..pieces {
            // Cut points strictly inside the gap, so no key is listed twice.
            let cut = key_at(
                &gap.group,
                gap.from + (1.0 - gap.from) * i as f64 / pieces as f64,
            );
            if cut > after && gap.up_to.as_ref().is_none_or(|u| &cut < u) {
                ranges.push(KeyRange {
                    after: Some(after),
                    up_to: Some(cut.clone()),
                });
                after = cut;
            }
        }
        ranges.push(KeyRange {
            after: Some(after),
            up_to: gap.up_to.clone(),
        });
    }
    tracing::debug!(
        keys_read = seen.len(),
        gaps = gaps.len(),
        estimated_keys = total as u64,
        ranges = ranges.len(),
        seconds = started.elapsed().as_secs_f64(),
        "key ranges of {store}"
    );
    Ok(RangePlan { seen, ranges })
}

/// The keys read while sizing the ranges, as one partition.
#[derive(Debug)]
struct Listed {
    schema: SchemaRef,
    batch: RecordBatch,
}

impl PartitionStream for Listed {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batch = self.batch.clone();
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::once(async move { Ok(batch) }),
        ))
    }
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

/// One partition of the live listing: the keys of its ranges below `prefix`, in pages.
#[derive(Debug)]
struct StoreListing {
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    ranges: Vec<KeyRange>,
}

impl StoreListing {
    fn range(&self, range: KeyRange) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listed = match &range.after {
            None => self.store.list(Some(&self.prefix)),
            Some(after) => match path_of(&self.prefix, after) {
                Ok(offset) => self.store.list_with_offset(Some(&self.prefix), &offset),
                Err(e) => {
                    return futures::stream::once(async move {
                        Err(object_store::Error::Generic {
                            store: "listing",
                            source: e.into(),
                        })
                    })
                    .boxed();
                }
            },
        };
        let Some(up_to) = range.up_to else {
            return listed;
        };
        let prefix = self.prefix.clone();
        // The store lists in key order: the range ends at the first key past it.
        listed
            .try_take_while(move |m| {
                futures::future::ready(Ok(key_below(&prefix, &m.location) <= up_to.as_str()))
            })
            .boxed()
    }
}

impl PartitionStream for StoreListing {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (schema, prefix) = (Arc::clone(&self.schema), self.prefix.clone());
        let ranges: Vec<_> = self.ranges.iter().cloned().map(|r| self.range(r)).collect();
        let batches = futures::stream::iter(ranges)
            .flatten()
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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn key_ranges_tile_the_key_space() {
        let store = Location::parse("memory://listing-ranges/blobs", "store").unwrap();
        let hash = |i: usize| {
            use sha2::Digest;
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE,
                sha2::Sha256::digest(i.to_le_bytes()),
            )
        };
        let mut keys: Vec<String> = (0..6000)
            .map(|i| format!("1_{}_{}", [9, 10, 11, 700][i % 4], hash(i)))
            .collect();
        keys.extend((6000..6600).map(hash));
        keys.extend(
            [
                "-legacy", "1Alegacy", "1_x", "1zlegacy", "A", "Z~weird", "_a", "zzz", "~",
            ]
            .map(String::from),
        );
        keys.extend(["2_5_q", "0_0_r", "1__bad", "nested/key"].map(String::from));
        for k in &keys {
            store
                .store
                .put(&path_of(&store.path, k).unwrap(), "x".into())
                .await
                .unwrap();
        }
        let plan = key_ranges(&store, 2).await.unwrap();
        assert!(
            plan.ranges.len() >= 3,
            "the groups are cut: {:?}",
            plan.ranges
        );
        let ranges = plan.ranges;
        let listing = StoreListing {
            schema: schema(),
            store: Arc::clone(&store.store),
            prefix: store.path.clone(),
            ranges: vec![],
        };
        let mut listed: Vec<String> = plan
            .seen
            .iter()
            .map(|m| key_below(&store.path, &m.location).to_string())
            .collect();
        for range in ranges {
            let metas: Vec<_> = listing.range(range).try_collect().await.unwrap();
            listed.extend(
                metas
                    .iter()
                    .map(|m| key_below(&store.path, &m.location).to_string()),
            );
        }
        listed.sort();
        keys.sort();
        assert_eq!(listed, keys, "every key exactly once");
    }
}
