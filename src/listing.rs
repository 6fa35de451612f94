//! The blobs to consider: a live listing of the store, or a Parquet inventory of it. Either
//! way a streamed, partitioned DataFusion input with `blob_id` and `size`; never collected.
//!
//! On object stores that serve listings from an offset (S3 `start-after`), the key space is
//! listed in ranges concurrently, by `--list-concurrency` DataFusion partitions drawing work
//! from one queue. A discovery walk reads the key space a page at a time; when a page ends
//! inside a group of keys (a `{family}_{generation}_` prefix, or a first character), the rest of
//! the group is estimated from its density in the page (content-addressed keys are uniform
//! after their prefix), cut into ranges and queued, and the walk jumps past it. Pages read by
//! the walk are queued too, so every key is read once, and the partitions list ranges while the
//! walk goes on. The pages and ranges tile the key space, whatever the estimates.

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
use tokio::sync::{Mutex, mpsc};

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

/// The live listing of `store`: every key below its prefix is a blob id. Listed by up to
/// `concurrency` partitions at once where the store lists from an offset natively.
pub async fn live(ctx: &SessionContext, store: &Location, concurrency: usize) -> Result<DataFrame> {
    let (tx, rx) = mpsc::channel(2 * concurrency.max(1));
    let partitions = if store.lists_from_offset() && concurrency > 1 {
        tokio::spawn(discover(store.clone(), concurrency, tx));
        concurrency
    } else {
        // Other stores list everything to serve an offset: one range, the whole key space.
        let _ = tx
            .send(Ok(Work::Range(KeyRange {
                after: None,
                up_to: None,
            })))
            .await;
        1
    };
    let queue = Arc::new(Mutex::new(rx));
    let streams: Vec<Arc<dyn PartitionStream>> = (0..partitions)
        .map(|_| {
            Arc::new(StoreListing {
                schema: schema(),
                store: Arc::clone(&store.store),
                prefix: store.path.clone(),
                queue: Arc::clone(&queue),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    let table = StreamingTable::try_new(schema(), streams)?;
    Ok(ctx.read_table(Arc::new(table))?)
}

/// Keys `k` with `after < k <= up_to` (relative to the store prefix); `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub after: Option<String>,
    pub up_to: Option<String>,
}

/// What a listing partition does next: return keys already read, or list a range.
#[derive(Debug)]
enum Work {
    Keys(Vec<ObjectMeta>),
    Range(KeyRange),
}

type Queue = Arc<Mutex<mpsc::Receiver<Result<Work>>>>;

/// base64url in byte order, the characters that follow a generation prefix.
const SORTED_URL_ALPHABET: &[u8; 64] =
    b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";
/// Keys of one list request (S3's page).
const PAGE: usize = 1000;
/// A range's last request reads up to a page past its end: ranges of 8+ pages waste little.
const MIN_RANGE_KEYS: f64 = 8.0 * PAGE as f64;
/// Pages the walk reads; past them the rest of the key space is one range.
const MAX_DISCOVERY_PAGES: usize = 4096;

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

/// The discovery walk (see the module doc), queueing pages and ranges as it goes. A full
/// queue holds it back; a dropped queue (the listing abandoned) stops it.
async fn discover(store: Location, concurrency: usize, tx: mpsc::Sender<Result<Work>>) {
    if let Err(e) = walk(&store, concurrency, &tx).await {
        let _ = tx.send(Err(e)).await;
    }
}

async fn walk(store: &Location, concurrency: usize, tx: &mpsc::Sender<Result<Work>>) -> Result<()> {
    let started = std::time::Instant::now();
    let closed = || Error::runtime("listing abandoned");
    let (mut offset, mut ranges, mut estimated) = (None::<String>, 0, 0.0);
    for _ in 0..MAX_DISCOVERY_PAGES {
        let listed = match &offset {
            None => store.store.list(Some(&store.path)),
            Some(o) => store
                .store
                .list_with_offset(Some(&store.path), &path_of(&store.path, o)?),
        };
        let page: Vec<ObjectMeta> = listed
            .take(PAGE)
            .try_collect()
            .await
            .map_err(|e| Error::runtime(format!("listing {store}: {e}")))?;
        let full = page.len() == PAGE;
        let last = page
            .last()
            .map(|m| key_below(&store.path, &m.location).to_string());
        let gap = match &last {
            Some(last) if full => Some(gap_after(&store.path, &page, last)),
            _ => None,
        };
        tx.send(Ok(Work::Keys(page))).await.map_err(|_| closed())?;
        let Some((after, past, group, from, keys)) = gap else {
            tracing::debug!(
                ranges,
                estimated_keys = estimated as u64,
                seconds = started.elapsed().as_secs_f64(),
                "listed {store}"
            );
            return Ok(());
        };
        // Cut the rest of the group into ranges, strictly inside it, so no key is listed twice.
        let pieces = (keys / MIN_RANGE_KEYS)
            .ceil()
            .clamp(1.0, 4.0 * concurrency as f64) as usize;
        let mut start = after;
        for i in 1..pieces {
            let cut = key_at(&group, from + (1.0 - from) * i as f64 / pieces as f64);
            if cut > start && cut < past {
                tx.send(Ok(Work::Range(KeyRange {
                    after: Some(start),
                    up_to: Some(cut.clone()),
                })))
                .await
                .map_err(|_| closed())?;
                start = cut;
                ranges += 1;
            }
        }
        tx.send(Ok(Work::Range(KeyRange {
            after: Some(start),
            up_to: Some(past.clone()),
        })))
        .await
        .map_err(|_| closed())?;
        (ranges, estimated) = (ranges + 1, estimated + keys);
        // Keys above `~` could sort a legacy group's `past` below keys already read: the walk
        // never goes back, so no key is read twice.
        offset = Some(past.max(last.unwrap_or_default()));
    }
    tx.send(Ok(Work::Range(KeyRange {
        after: offset,
        up_to: None,
    })))
    .await
    .map_err(|_| closed())
}

/// The rest of the group a full page ends in: the last key read, an offset past the group,
/// the group, the hash fraction reached and the estimated number of keys left, from the
/// group's density in the page.
fn gap_after(prefix: &Path, page: &[ObjectMeta], last: &str) -> (String, String, String, f64, f64) {
    let (group, past) = key_group(last);
    let in_group: Vec<&str> = page
        .iter()
        .rev()
        .map(|m| key_below(prefix, &m.location))
        .take_while(|k| key_group(k).0 == group)
        .collect();
    let last_at = hash_fraction(&last[group.len()..]);
    let first_at = in_group
        .last()
        .map_or(0.0, |k| hash_fraction(&k[group.len()..]));
    let density = if last_at > first_at {
        in_group.len() as f64 / (last_at - first_at)
    } else {
        PAGE as f64
    };
    (
        last.to_string(),
        past,
        group,
        last_at,
        density * (1.0 - last_at),
    )
}

/// The keys of one range, in key order.
fn range_keys(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    range: KeyRange,
) -> BoxStream<'static, Result<ObjectMeta>> {
    let listed = match &range.after {
        None => store.list(Some(prefix)),
        Some(after) => match path_of(prefix, after) {
            Ok(offset) => store.list_with_offset(Some(prefix), &offset),
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        },
    };
    let listed = listed.map_err(|e| Error::runtime(format!("listing: {e}")));
    let Some(up_to) = range.up_to else {
        return listed.boxed();
    };
    let prefix = prefix.clone();
    // The store lists in key order: the range ends at the first key past it.
    listed
        .try_take_while(move |m| {
            futures::future::ready(Ok(key_below(&prefix, &m.location) <= up_to.as_str()))
        })
        .boxed()
}

/// A Parquet inventory with `blob_id` (string) and `size` (integer) columns.
pub async fn inventory(ctx: &SessionContext, url: &str) -> Result<DataFrame> {
    let what = format!("inventory {url}");
    let loc = Location::parse(url, "--inventory", &crate::registry::session_s3(ctx))?;
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

/// One partition of the live listing: takes work from the shared queue until it is empty
/// and the walk is done.
#[derive(Debug)]
struct StoreListing {
    schema: SchemaRef,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    queue: Queue,
}

impl PartitionStream for StoreListing {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (store, prefix, queue) = (
            Arc::clone(&self.store),
            self.prefix.clone(),
            Arc::clone(&self.queue),
        );
        let pages = futures::stream::unfold(queue, move |queue| {
            let (store, prefix) = (Arc::clone(&store), prefix.clone());
            async move {
                let work = queue.lock().await.recv().await?;
                let pages = match work {
                    Ok(Work::Keys(page)) => futures::stream::once(async move { Ok(page) }).boxed(),
                    Ok(Work::Range(range)) => range_keys(&store, &prefix, range)
                        .try_chunks(LISTING_BATCH_ROWS)
                        .map_err(|e| e.1)
                        .boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                };
                Some((pages, queue))
            }
        })
        .flatten();
        let (schema, prefix) = (Arc::clone(&self.schema), self.prefix.clone());
        let batches = pages.map(move |page| {
            to_batch(
                &schema,
                &prefix,
                page.map_err(|e| DataFusionError::External(Box::new(e)))?,
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
        let store = Location::parse(
            "memory://listing-ranges/blobs",
            "store",
            &Default::default(),
        )
        .unwrap();
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
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(discover(store.clone(), 2, tx));
        let (mut listed, mut ranges) = (Vec::new(), 0);
        while let Some(work) = rx.recv().await {
            let metas: Vec<ObjectMeta> = match work.unwrap() {
                Work::Keys(page) => page,
                Work::Range(range) => {
                    ranges += 1;
                    range_keys(&store.store, &store.path, range)
                        .try_collect()
                        .await
                        .unwrap()
                }
            };
            listed.extend(
                metas
                    .iter()
                    .map(|m| key_below(&store.path, &m.location).to_string()),
            );
        }
        assert!(ranges >= 3, "the groups are cut into ranges: {ranges}");
        listed.sort();
        keys.sort();
        assert_eq!(listed, keys, "every key exactly once");
    }
}
