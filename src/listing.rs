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
    let ranges = if store.lists_from_offset() && concurrency > 1 {
        key_ranges(store, concurrency).await?
    } else {
        vec![KeyRange {
            after: None,
            up_to: None,
        }]
    };
    let mut partitions: Vec<Vec<KeyRange>> = vec![Vec::new(); concurrency.clamp(1, ranges.len())];
    for (i, range) in ranges.into_iter().enumerate() {
        let n = partitions.len();
        partitions[i % n].push(range);
    }
    let partitions: Vec<Arc<dyn PartitionStream>> = partitions
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
    let table = StreamingTable::try_new(schema(), partitions)?;
    Ok(ctx.read_table(Arc::new(table))?)
}

/// Keys `k` with `after < k <= up_to` (relative to the store prefix); `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub after: Option<String>,
    pub up_to: Option<String>,
}

/// base64url in byte order, the characters that follow a generation prefix.
const SORTED_URL_ALPHABET: &[u8; 64] =
    b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
/// Keys of one list request (S3's page).
const PAGE: usize = 1000;
/// Pages read to find the groups; past them the rest of the key space is one range.
const MAX_DISCOVERY_PAGES: usize = 2048;

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

/// A stretch of one group in key order, `keys` estimated, spanning hash fractions `from..to`.
struct Stretch {
    group: String,
    from: f64,
    to: f64,
    keys: f64,
}

/// Walks the key space a page at a time. Each page is split into the stretches of the groups
/// it holds; when its last group goes on past it, the rest of that group is estimated from
/// its density in the page and skipped. One request per large group, plus one per page of
/// small groups.
async fn discover(store: &Location) -> Result<Vec<Stretch>> {
    let mut stretches: Vec<Stretch> = Vec::new();
    let mut offset: Option<Path> = None;
    for _ in 0..MAX_DISCOVERY_PAGES {
        let listed = match &offset {
            None => store.store.list(Some(&store.path)),
            Some(o) => store.store.list_with_offset(Some(&store.path), o),
        };
        let page: Vec<ObjectMeta> = listed
            .take(PAGE)
            .try_collect()
            .await
            .map_err(|e| Error::runtime(format!("listing {store}: {e}")))?;
        let keys: Vec<&str> = page
            .iter()
            .map(|m| key_below(&store.path, &m.location))
            .collect();
        let Some(&last) = keys.last() else { break };
        let mut i = 0;
        while i < keys.len() {
            let (group, _) = key_group(keys[i]);
            let n = keys[i..]
                .iter()
                .take_while(|k| key_group(k).0 == group)
                .count();
            let (first, end) = (keys[i], keys[i + n - 1]);
            stretches.push(Stretch {
                from: hash_fraction(&first[group.len()..]),
                to: hash_fraction(&end[group.len()..]),
                keys: n as f64,
                group,
            });
            i += n;
        }
        if keys.len() < PAGE {
            return Ok(stretches);
        }
        let (group, past) = key_group(last);
        if let Some(s) = stretches
            .last()
            .filter(|s| s.group == group && s.to > s.from)
        {
            let density = s.keys / (s.to - s.from);
            let rest = Stretch {
                group: group.clone(),
                from: s.to,
                to: 1.0,
                keys: density * (1.0 - s.to),
            };
            stretches.push(rest);
        }
        offset = Some(path_of(&store.path, &past)?);
    }
    Ok(stretches)
}

/// Ranges of about equal estimated size, two per listing slot (so a slot finishing early is
/// not left idle), none smaller than two pages; the last one is open-ended.
async fn key_ranges(store: &Location, concurrency: usize) -> Result<Vec<KeyRange>> {
    let started = std::time::Instant::now();
    let stretches = discover(store).await?;
    let total: f64 = stretches.iter().map(|s| s.keys).sum();
    let target = (total / (2 * concurrency) as f64).max(2.0 * PAGE as f64);
    let mut cuts = Vec::new();
    let mut filled = 0.0;
    for s in &stretches {
        let mut left = s.keys;
        while filled + left >= target {
            let take = target - filled;
            let at = s.from + (s.to - s.from) * (1.0 - (left - take) / s.keys.max(1.0));
            cuts.push(key_at(&s.group, at));
            left -= take;
            filled = 0.0;
        }
        filled += left;
    }
    cuts.sort();
    cuts.dedup();
    let mut ranges = Vec::with_capacity(cuts.len() + 1);
    let mut after = None;
    for cut in cuts {
        ranges.push(KeyRange {
            after: after.clone(),
            up_to: Some(cut.clone()),
        });
        after = Some(cut);
    }
    ranges.push(KeyRange { after, up_to: None });
    tracing::debug!(
        stretches = stretches.len(),
        estimated_keys = total as u64,
        ranges = ranges.len(),
        seconds = started.elapsed().as_secs_f64(),
        "key ranges of {store}"
    );
    Ok(ranges)
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
        let ranges = key_ranges(&store, 2).await.unwrap();
        assert!(ranges.len() >= 3, "the groups are cut: {ranges:?}");
        let listing = StoreListing {
            schema: schema(),
            store: Arc::clone(&store.store),
            prefix: store.path.clone(),
            ranges: vec![],
        };
        let mut listed = Vec::new();
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
