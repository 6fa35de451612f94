//! James's PostgreSQL blob store as an object store: `postgresql://USER@HOST:PORT/DB?bucket=B`
//! (`table=T` for a table other than James's `blob_storage`). A key is a row's `blob_id` in
//! bucket `B` (default `default`, James's); an object's bytes are its `data`.
//!
//! ```text
//! blob_storage(bucket_name, blob_id, data bytea, size, ...)   primary key (bucket_name, blob_id)
//!   list    SELECT blob_id, size ... WHERE bucket_name = B AND blob_id > <last key> ORDER BY blob_id LIMIT 10000
//!   delete  DELETE ... WHERE bucket_name = B AND blob_id = ANY(<a batch of keys>) RETURNING blob_id
//! ```
//!
//! **What is deleted:** the rows of bucket `B` whose keys a sweep sends, a batch per statement;
//! a key deleted is one the server returned, so a key already gone is reported as such and
//! nothing else in the table is touched. Get and put serve a quarantine, another bucket.
//!
//! **The danger:** a key that reads back as another (object_store's paths drop a leading `/`,
//! refuse `..`) would delete the wrong row, so a listed key that is not exactly its own path
//! stops the listing, naming it.

use super::{connect, failed, parse_url, quoted};
use crate::error::Error;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::sync::Arc;
use tokio_postgres::{Client, Config};

/// Keys per list page and per delete statement.
const PAGE: i64 = 10_000;
const DELETE_BATCH: usize = 1_000;
const STORE: &str = "PostgreSQL";

/// The bucket James's blob store uses unless configured otherwise.
const DEFAULT_BUCKET: &str = "default";

/// A bucket of a `blob_storage` table as an object store.
#[derive(Debug, Clone)]
pub struct BlobStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    /// The URL, for messages (it holds no password).
    url: String,
    table: String,
    bucket: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl std::fmt::Display for BlobStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobStorage({})", self.inner.url)
    }
}

impl BlobStorage {
    /// The store a `postgresql://` store URL names; nothing is connected until it is used.
    pub fn new(url: &str) -> crate::error::Result<BlobStorage> {
        let what = format!("store {url}");
        let (config, _, mut options) = parse_url(url, &what, &["bucket", "table"])?;
        let bucket = options
            .remove("bucket")
            .unwrap_or_else(|| DEFAULT_BUCKET.into());
        let table = options
            .remove("table")
            .unwrap_or_else(|| "blob_storage".into());
        if bucket.is_empty() || table.is_empty() {
            return Err(Error::usage(format!("{what}: empty bucket or table")));
        }
        Ok(BlobStorage {
            inner: Arc::new(Inner {
                config,
                url: url.to_string(),
                table: quoted(&table),
                bucket,
                client: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

impl Inner {
    /// Runs `work` on the store's connection, made again when the last one was lost. The lock
    /// is held to take the connection only: concurrent batches share it, pipelined.
    async fn with_client<T>(
        &self,
        work: impl AsyncFnOnce(&Client) -> std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        let client = {
            let mut held = self.client.lock().await;
            match held.as_ref().filter(|c| !c.is_closed()) {
                Some(c) => Arc::clone(c),
                None => {
                    let c = Arc::new(connect(&self.config, &self.url).await.map_err(generic)?);
                    *held = Some(Arc::clone(&c));
                    c
                }
            }
        };
        work(&client)
            .await
            .map_err(|e| generic(failed(&self.url)(e).to_string()))
    }

    /// Keys after `after` (all from the first), in key order: one page.
    async fn page(&self, prefix: &str, after: Option<&str>) -> Result<Vec<ObjectMeta>> {
        let sql = format!(
            "SELECT blob_id, coalesce(size, 0)::bigint FROM {} WHERE bucket_name = $1 \
             AND starts_with(blob_id, $2) {} ORDER BY blob_id LIMIT {PAGE}",
            self.table,
            if after.is_some() {
                "AND blob_id > $3"
            } else {
                ""
            }
        );
        let rows = self
            .with_client(async |c| match after {
                Some(a) => c.query(&sql, &[&self.bucket, &prefix, &a]).await,
                None => c.query(&sql, &[&self.bucket, &prefix]).await,
            })
            .await?;
        rows.iter()
            .map(|row| {
                let key: String = row.get(0);
                let size: i64 = row.get(1);
                Ok(ObjectMeta {
                    location: exact_path(&key)?,
                    last_modified: DateTime::<Utc>::UNIX_EPOCH,
                    size: size.max(0) as u64,
                    e_tag: None,
                    version: None,
                })
            })
            .collect()
    }

    /// Deletes `keys`; the ones the server deleted.
    async fn delete(&self, keys: &[String]) -> Result<Vec<String>> {
        let sql = format!(
            "DELETE FROM {} WHERE bucket_name = $1 AND blob_id = ANY($2) RETURNING blob_id",
            self.table
        );
        let rows = self
            .with_client(async |c| c.query(&sql, &[&self.bucket, &keys]).await)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

/// The path of a stored key, refused unless it reads back as that very key.
fn exact_path(key: &str) -> Result<Path> {
    match Path::parse(key) {
        Ok(path) if path.as_ref() == key => Ok(path),
        _ => Err(generic(format!(
            "the key {key:?} cannot be named exactly as an object key (empty, '.' or '..' \
             segments, a leading or trailing '/', a control character): refusing to list a \
             store it would be misread in"
        ))),
    }
}

fn generic(e: impl ToString) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: e.to_string().into(),
    }
}

fn not_found(path: &Path, why: &str) -> object_store::Error {
    object_store::Error::NotFound {
        path: path.to_string(),
        source: why.into(),
    }
}

fn not_implemented(operation: &str) -> object_store::Error {
    object_store::Error::NotImplemented {
        operation: operation.into(),
        implementer: STORE.into(),
    }
}

/// A prefix as the keys below it start: `p/`, or nothing.
fn key_prefix(prefix: Option<&Path>) -> String {
    match prefix.map(Path::as_ref) {
        None | Some("") => String::new(),
        Some(p) => format!("{p}/"),
    }
}

#[async_trait]
impl ObjectStore for BlobStorage {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let conflict = match opts.mode {
            PutMode::Overwrite => "DO UPDATE SET data = EXCLUDED.data, size = EXCLUDED.size",
            PutMode::Create => "DO NOTHING",
            PutMode::Update(_) => return Err(not_implemented("put with PutMode::Update")),
        };
        let sql = format!(
            "INSERT INTO {} (bucket_name, blob_id, data, size) VALUES ($1, $2, $3, $4::bigint) \
             ON CONFLICT (bucket_name, blob_id) {conflict}",
            self.inner.table
        );
        let data: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        let size = i64::try_from(data.len()).map_err(generic)?;
        let key = location.as_ref();
        let inner = &self.inner;
        let written = inner
            .with_client(async |c| c.execute(&sql, &[&inner.bucket, &key, &data, &size]).await)
            .await?;
        if written == 0 {
            return Err(object_store::Error::AlreadyExists {
                path: location.to_string(),
                source: "a row of that key exists".into(),
            });
        }
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn put_multipart_opts(
        &self,
        _: &Path,
        _: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        Err(not_implemented("multipart upload"))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let conditional = options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some();
        if options.range.is_some() || options.version.is_some() || conditional {
            // Never answered as if met: a caller relying on a condition must know it is not.
            return Err(not_implemented("get with a range, version or condition"));
        }
        let sql = format!(
            "SELECT data FROM {} WHERE bucket_name = $1 AND blob_id = $2",
            self.inner.table
        );
        let key = location.as_ref();
        let inner = &self.inner;
        let row = inner
            .with_client(async |c| c.query_opt(&sql, &[&inner.bucket, &key]).await)
            .await?
            .ok_or_else(|| not_found(location, "no row of that key"))?;
        let data = Bytes::from(row.get::<_, Vec<u8>>(0));
        let size = data.len() as u64;
        let payload = match options.head {
            true => stream::empty().boxed(),
            false => stream::once(async move { Ok(data) }).boxed(),
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta: ObjectMeta {
                location: location.clone(),
                last_modified: DateTime::<Utc>::UNIX_EPOCH,
                size,
                e_tag: None,
                version: None,
            },
            range: 0..size,
            attributes: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let inner = Arc::clone(&self.inner);
        locations
            .try_chunks(DELETE_BATCH)
            .map_err(|e| e.1)
            .and_then(move |paths| {
                let inner = Arc::clone(&inner);
                async move {
                    let keys: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
                    let deleted: std::collections::HashSet<String> =
                        inner.delete(&keys).await?.into_iter().collect();
                    Ok(stream::iter(paths.into_iter().map(move |p| {
                        match deleted.contains(p.as_ref()) {
                            true => Ok(p),
                            false => Err(not_found(&p, "no row of that key")),
                        }
                    })))
                }
            })
            .try_flatten()
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = Arc::clone(&self.inner);
        let prefix = key_prefix(prefix);
        stream::try_unfold(Some(None::<String>), move |next| {
            let (inner, prefix) = (Arc::clone(&inner), prefix.clone());
            async move {
                let Some(after) = next else {
                    return Ok::<_, object_store::Error>(None);
                };
                let page = inner.page(&prefix, after.as_deref()).await?;
                let next = match page.len() as i64 == PAGE {
                    true => page.last().map(|m| Some(m.location.to_string())),
                    false => None,
                };
                Ok(Some((stream::iter(page.into_iter().map(Ok)), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// Not served: blobgc lists a store whole; keys of a table have no directories.
    async fn list_with_delimiter(&self, _: Option<&Path>) -> Result<ListResult> {
        Err(not_implemented("listing by directory"))
    }

    /// Not served: blobgc copies within a store only into a quarantine inside it, which a
    /// bucket cannot hold (a quarantine is another bucket, copied through this process).
    async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> Result<()> {
        Err(not_implemented("copy within a bucket"))
    }
}
