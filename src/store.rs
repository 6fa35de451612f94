//! Where blobs, tables and plans live: object_store URLs (`file:///abs/dir`, `s3://bucket/prefix`,
//! `az://container/prefix`, `gs://bucket/prefix`, `memory://name`), or plain local paths, which
//! are made absolute `file://` URLs; and James's blob table, `postgresql://...?bucket=B`
//! ([`crate::postgres::BlobStorage`]). S3, Azure and GCS stores read their credentials and
//! settings from the standard variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`), as object_store's
//! builders do; none is ever printed.
//!
//! Store clients are made once per process and scheme+authority, so every phase (and
//! DataFusion, which they are registered with) talks to the same client, and a `memory://`
//! store is the same store for the planner and the sweeper of one process.

use crate::error::{Error, Result};
use bytes::Bytes;
use datafusion::prelude::SessionContext;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use url::Url;

/// Options of S3 (and S3-compatible) stores, over what object_store reads from the standard
/// `AWS_*` environment variables. Credentials are accepted here and from the environment, never
/// as flags (a process listing would show them), and never printed.
#[derive(Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// S3 endpoint, e.g. http://127.0.0.1:8333 for a local server.
    #[arg(long = "s3-endpoint", value_name = "URL")]
    pub endpoint: Option<String>,
    #[arg(long = "s3-region", value_name = "REGION")]
    pub region: Option<String>,
    /// Allow plain-HTTP endpoints.
    #[arg(long = "s3-allow-http", value_name = "BOOL")]
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (bucket.endpoint) instead of path style.
    #[arg(long = "s3-virtual-hosted-style", value_name = "BOOL")]
    pub virtual_hosted_style: Option<bool>,
    /// Retries of a failed request (5xx, throttling, resets), with exponential backoff.
    #[arg(long = "s3-max-retries", value_name = "N")]
    pub max_retries: Option<usize>,
    /// Give up retrying a request after this many seconds.
    #[arg(long = "s3-retry-timeout", value_name = "SECONDS")]
    pub retry_timeout_seconds: Option<u64>,
    #[arg(skip)]
    pub access_key_id: Option<String>,
    #[arg(skip)]
    pub secret_access_key: Option<String>,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_seconds", &self.retry_timeout_seconds)
            .field(
                "credentials",
                &self.access_key_id.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl S3Options {
    /// `self`, with the fields it leaves unset taken from `other`.
    pub fn or(self, other: S3Options) -> S3Options {
        S3Options {
            endpoint: self.endpoint.or(other.endpoint),
            region: self.region.or(other.region),
            allow_http: self.allow_http.or(other.allow_http),
            virtual_hosted_style: self.virtual_hosted_style.or(other.virtual_hosted_style),
            max_retries: self.max_retries.or(other.max_retries),
            retry_timeout_seconds: self.retry_timeout_seconds.or(other.retry_timeout_seconds),
            access_key_id: self.access_key_id.or(other.access_key_id),
            secret_access_key: self.secret_access_key.or(other.secret_access_key),
        }
    }

    fn builder(&self, url: &Url) -> object_store::aws::AmazonS3Builder {
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(url.as_str());
        if let Some(v) = &self.endpoint {
            b = b.with_endpoint(v);
        }
        if let Some(v) = &self.region {
            b = b.with_region(v);
        }
        if let Some(v) = self.allow_http {
            b = b.with_allow_http(v);
        }
        if let Some(v) = self.virtual_hosted_style {
            b = b.with_virtual_hosted_style_request(v);
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        b.with_retry(self.retry())
    }

    /// The retries of every cloud store's requests: object_store's, with these limits.
    fn retry(&self) -> object_store::RetryConfig {
        let mut retry = object_store::RetryConfig::default();
        if let Some(n) = self.max_retries {
            retry.max_retries = n;
        }
        if let Some(t) = self.retry_timeout_seconds {
            retry.retry_timeout = Duration::from_secs(t);
        }
        retry
    }
}

/// A place in an object store: the URL a user wrote, the store and the path below its root.
#[derive(Clone)]
pub struct Location {
    url: Url,
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({})", self.url)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str().trim_end_matches('/'))
    }
}

impl Location {
    /// Parses a URL or a local path of tables, plans or outputs; an S3 store is made with the
    /// job's options `s3`. `what` names the option, for the error message. A PostgreSQL blob
    /// store is refused here: what went to it would become rows of the blob table.
    pub fn parse(text: &str, what: &str, s3: &S3Options) -> Result<Self> {
        if crate::postgres::is_url(text) {
            return Err(Error::usage(format!(
                "{what} {text:?}: a PostgreSQL blob store holds blobs only (--store, \
                 --quarantine); tables, plans and outputs go to files or object stores"
            )));
        }
        Self::parse_store(text, what, s3)
    }

    /// [`Self::parse`] for a store of blobs (`--store`, `--quarantine`), which may be James's
    /// PostgreSQL blob table too.
    pub fn parse_store(text: &str, what: &str, s3: &S3Options) -> Result<Self> {
        let url = parse_url(text, what)?;
        let store = store_for(&url, s3).map_err(|e| e.context(format!("{what} {text:?}")))?;
        // A database's path names the database: its keys are the table's, from the root.
        let path = match crate::postgres::is_url(text) {
            true => Path::default(),
            false => Path::from_url_path(url.path())
                .map_err(|e| Error::usage(format!("{what} {text:?}: invalid path: {e}")))?,
        };
        Ok(Location { url, store, path })
    }

    /// The URL, without a trailing slash.
    pub fn url(&self) -> String {
        self.to_string()
    }

    /// The URL of the directory form, with a trailing slash (what DataFusion lists as a table).
    pub fn dir_url(&self) -> String {
        format!("{self}/")
    }

    pub fn child(&self, name: &str) -> Path {
        self.path.clone().join(name)
    }

    pub fn child_url(&self, name: &str) -> String {
        format!("{self}/{name}")
    }

    /// The location `name` below this one, in the same store.
    pub fn join(&self, name: &str) -> Result<Location> {
        let url = Url::parse(&self.child_url(name))
            .map_err(|e| Error::usage(format!("{self} / {name:?}: {e}")))?;
        Ok(Location {
            url,
            store: Arc::clone(&self.store),
            path: self.child(name),
        })
    }

    /// Whether `other` is this location or lies below it.
    pub fn contains(&self, other: &Location) -> bool {
        let (a, b) = (self.dir_url(), other.dir_url());
        b.starts_with(&a)
    }

    /// Whether the store serves a listing from an offset itself (S3 `start-after`, GCS
    /// `startOffset`); others list everything and filter, which makes range-partitioned
    /// listing pointless.
    pub fn lists_from_offset(&self) -> bool {
        matches!(self.url.scheme(), "s3" | "s3a" | "gs")
    }

    /// Makes this location's store known to DataFusion.
    pub fn register(&self, ctx: &SessionContext) {
        ctx.runtime_env()
            .register_object_store(&self.url, Arc::clone(&self.store));
    }

    pub async fn read(&self, path: &Path) -> Result<Bytes> {
        let get = self
            .store
            .get(path)
            .await
            .map_err(|e| Error::runtime(format!("reading {path}: {e}")))?;
        get.bytes()
            .await
            .map_err(|e| Error::runtime(format!("reading {path}: {e}")))
    }

    pub async fn write(&self, path: &Path, bytes: impl Into<Bytes>) -> Result<()> {
        self.store
            .put(path, PutPayload::from_bytes(bytes.into()))
            .await
            .map_err(|e| Error::runtime(format!("writing {path}: {e}")))?;
        Ok(())
    }
}

fn parse_url(text: &str, what: &str) -> Result<Url> {
    if text.trim().is_empty() {
        return Err(Error::usage(format!("{what} is empty")));
    }
    if text.contains("://") {
        return Url::parse(text)
            .map_err(|e| Error::usage(format!("{what} {text:?} is not a valid URL: {e}")));
    }
    let abs =
        std::path::absolute(text).map_err(|e| Error::usage(format!("{what} {text:?}: {e}")))?;
    Url::from_file_path(&abs)
        .map_err(|_| Error::usage(format!("{what} {text:?} is not a usable local path")))
}

static STORES: LazyLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The store of `url` made with `s3`, made once per process.
pub fn store_for(url: &Url, s3: &S3Options) -> Result<Arc<dyn ObjectStore>> {
    // One client per bucket and options: the same name behind another endpoint, or with other
    // credentials, is another client.
    let key = match url.scheme() {
        "s3" | "s3a" => {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(s3, &mut h);
            format!(
                "{}://{}#{:016x}",
                url.scheme(),
                url.authority(),
                std::hash::Hasher::finish(&h)
            )
        }
        // A database's store is its bucket of its table: the whole URL.
        "postgresql" | "postgres" => url.to_string(),
        _ => format!("{}://{}", url.scheme(), url.authority()),
    };
    let mut stores = STORES
        .lock()
        .map_err(|_| Error::runtime("store registry poisoned"))?;
    if let Some(s) = stores.get(&key) {
        return Ok(Arc::clone(s));
    }
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
        "memory" => Arc::new(object_store::memory::InMemory::new()),
        "s3" | "s3a" => Arc::new(
            s3.builder(url)
                .build()
                .map_err(|e| Error::usage(format!("S3 store: {e}")))?,
        ),
        "az" | "azure" | "abfs" | "abfss" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(s3.retry())
                .build()
                .map_err(|e| Error::usage(format!("Azure store: {e}")))?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url.as_str())
                .with_retry(s3.retry())
                .build()
                .map_err(|e| Error::usage(format!("GCS store: {e}")))?,
        ),
        "postgresql" | "postgres" => Arc::new(crate::postgres::BlobStorage::new(url.as_str())?),
        other => {
            return Err(Error::usage(format!(
                "unsupported URL scheme {other:?} (use file://, s3://, az://, gs://, memory:// or \
                 postgresql://)"
            )));
        }
    };
    stores.insert(key, Arc::clone(&store));
    Ok(store)
}

/// Reads a whole object from synchronous code running on a multi-threaded tokio runtime
/// (a DataFusion function loading the filter). Local files are read directly.
pub fn read_blocking(location: &str, s3: &S3Options) -> Result<Bytes> {
    let url = parse_url(location, "location")?;
    if url.scheme() == "file" {
        let path = url
            .to_file_path()
            .map_err(|_| Error::runtime(format!("bad file URL {location}")))?;
        return std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| Error::runtime(format!("reading {location}: {e}")));
    }
    let loc = Location::parse(location, "location", s3)?;
    block_on(&format!("reading {location}"), loc.read(&loc.path))?
}

/// Runs `work` to completion from synchronous code (a DataFusion function) running on a
/// multi-threaded tokio runtime, as DataFusion and Ballista executors do.
pub fn block_on<F: std::future::Future>(what: &str, work: F) -> Result<F::Output> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::runtime(format!("{what} needs a tokio runtime")))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(Error::runtime(format!(
            "{what} needs a multi-threaded tokio runtime"
        )));
    }
    Ok(tokio::task::block_in_place(|| handle.block_on(work)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls_name_their_bucket_and_prefix() {
        let s3 = S3Options::default();
        let gcs = Location::parse("gs://mail-blobs/james/", "--store", &s3).unwrap();
        assert_eq!(
            (gcs.url(), gcs.path.as_ref()),
            ("gs://mail-blobs/james".into(), "james")
        );
        assert!(gcs.lists_from_offset(), "GCS lists from startOffset");
        let unknown = Location::parse("ftp://host/x", "--store", &s3).unwrap_err();
        assert!(unknown.to_string().contains("\"ftp\""), "{unknown}");
    }
}
