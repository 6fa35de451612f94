//! The stored form of a merged filter, next to its plan: named by location, trusted by the
//! SHA-256 of its bytes that every process loading it checks, and loaded once per process.

use super::Bloom;
use crate::error::{Error, Result};
use crate::store::S3Options;
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock, Mutex};

/// A filter stored next to a plan, and the SHA-256 of its encoded bytes that every reader
/// checks: a location can be reused (a plan directory given again), a checksum cannot.
pub struct StoredFilter;

impl StoredFilter {
    /// The column of the Parquet file the reduce stage writes that holds the encoded filter.
    pub const COLUMN: &'static str = "filter";

    /// The SHA-256 of encoded filter bytes, in hex.
    pub fn checksum(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// The encoded filter in `bytes`, read from `location`: the file itself, or for a
    /// `.parquet` file the first value of its [`Self::COLUMN`].
    pub fn encoded(location: &str, bytes: bytes::Bytes) -> Result<Vec<u8>> {
        if !location.ends_with(".parquet") {
            return Ok(bytes.to_vec());
        }
        use arrow::array::{Array, AsArray};
        let bad = |m: String| Error::runtime(format!("Bloom filter file {location}: {m}"));
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| bad(e.to_string()))?
            .build()
            .map_err(|e| bad(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| bad(e.to_string()))?;
            let column = batch
                .column_by_name(Self::COLUMN)
                .ok_or_else(|| bad(format!("no {:?} column", Self::COLUMN)))?;
            let column = column
                .as_binary_opt::<i32>()
                .ok_or_else(|| bad(format!("{:?} is not binary", Self::COLUMN)))?;
            if !column.is_empty() && column.is_valid(0) {
                return Ok(column.value(0).to_vec());
            }
        }
        Err(bad("holds no filter".to_string()))
    }

    /// Checks `encoded` against `checksum`, then decodes it.
    pub fn verify_and_decode(location: &str, checksum: &str, encoded: &[u8]) -> Result<Bloom> {
        if Self::checksum(encoded) != checksum {
            return Err(Error::runtime(format!(
                "Bloom filter at {location} does not match its checksum {checksum}: refusing to use it"
            )));
        }
        Bloom::decode(encoded)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Filters loaded by this process, by location and checksum. Few runs share a process, so the
/// cache is kept tiny: a filter can be large and an executor lives long.
type Loaded = Vec<(String, Arc<Bloom>)>;
static LOADED: LazyLock<Mutex<Loaded>> = LazyLock::new(|| Mutex::new(Vec::new()));
const LOADED_KEPT: usize = 2;

/// The filter stored at `location` with `checksum`, loaded once per process; its store is
/// reached with `s3`.
pub fn load_cached(location: &str, checksum: &str, s3: &S3Options) -> Result<Arc<Bloom>> {
    let key = format!("{checksum}@{location}");
    let cached = || {
        LOADED.lock().ok().and_then(|v| {
            v.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, f)| Arc::clone(f))
        })
    };
    if let Some(f) = cached() {
        return Ok(f);
    }
    let bytes = crate::store::read_blocking(location, s3)?;
    let encoded = StoredFilter::encoded(location, bytes)?;
    let filter = Arc::new(StoredFilter::verify_and_decode(
        location, checksum, &encoded,
    )?);
    if let Ok(mut v) = LOADED.lock() {
        if v.len() >= LOADED_KEPT {
            v.remove(0);
        }
        v.push((key, Arc::clone(&filter)));
    }
    Ok(filter)
}
