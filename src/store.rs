//! Where blobs, tables and plans live: object_store URLs (`file:///abs/dir`, `s3://bucket/prefix`,
//! `memory://name`), or plain local paths, which are made absolute `file://` URLs.
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
use url::Url;

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
    /// Parses a URL or a local path. `what` names the option, for the error message.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let url = parse_url(text, what)?;
        let store = store_for(&url).map_err(|e| e.context(format!("{what} {text:?}")))?;
        let path = Path::from_url_path(url.path())
            .map_err(|e| Error::usage(format!("{what} {text:?}: invalid path: {e}")))?;
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

    /// Whether `other` is this location or lies below it.
    pub fn contains(&self, other: &Location) -> bool {
        let (a, b) = (self.dir_url(), other.dir_url());
        b.starts_with(&a)
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

fn store_for(url: &Url) -> Result<Arc<dyn ObjectStore>> {
    let key = format!("{}://{}", url.scheme(), url.authority());
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
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url.as_str())
                .build()
                .map_err(|e| Error::usage(format!("S3 store: {e}")))?,
        ),
        other => {
            return Err(Error::usage(format!(
                "unsupported URL scheme {other:?} (use file://, s3:// or memory://)"
            )));
        }
    };
    stores.insert(key, Arc::clone(&store));
    Ok(store)
}

/// Reads a whole object from synchronous code running on a multi-threaded tokio runtime
/// (a DataFusion function loading the filter). Local files are read directly.
pub fn read_blocking(location: &str) -> Result<Bytes> {
    let url = parse_url(location, "location")?;
    if url.scheme() == "file" {
        let path = url
            .to_file_path()
            .map_err(|_| Error::runtime(format!("bad file URL {location}")))?;
        return std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| Error::runtime(format!("reading {location}: {e}")));
    }
    let loc = Location::parse(location, "location")?;
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::runtime(format!("reading {location} needs a tokio runtime")))?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Err(Error::runtime(format!(
            "reading {location} needs a multi-threaded tokio runtime"
        )));
    }
    tokio::task::block_in_place(|| handle.block_on(loc.read(&loc.path)))
}
