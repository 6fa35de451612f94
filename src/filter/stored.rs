//! The stored form of a filter, next to its plan: a manifest naming each shard by the SHA-256 of
//! its bytes, and the shards, each a file named by that checksum. Every process loading a shard
//! checks it; a location can be reused (a plan directory given again), a checksum cannot.
//!
//! ```text
//! <stem>.json              the manifest: {"shards": ["<sha256 of shard 0>", ...]}
//! <stem>/<sha256>.bloom    a shard: header and words (Bloom::encode)
//! ```
//!
//! A process loads the manifest once and a shard only when an id of that shard is looked up: a
//! cluster task probing one shard's ids never holds the others. It keeps the shards it loaded
//! up to [`KEPT_SHARD_BYTES`], dropping the least recently used past it: an executor probing
//! shard after shard (a task per shard) would otherwise come to hold the whole filter.

use super::{Bloom, Sharded, sharded};
use crate::error::{Error, Result};
use crate::store::{Location, S3Options};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock, Mutex};

/// What names the stored parts of a filter.
pub struct StoredFilter;

impl StoredFilter {
    /// The SHA-256 of encoded bytes, in hex.
    pub fn checksum(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// The manifest of the filter `stem`, and the directory of its shards.
    pub fn manifest_name(stem: &str) -> String {
        format!("{stem}.json")
    }

    /// A shard's file in the shard directory: its checksum.
    pub fn shard_name(checksum: &str) -> String {
        format!("{checksum}.bloom")
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

    /// Writes an `encoded` shard into the shard directory `dir`; its checksum.
    pub async fn write_shard(dir: &Location, encoded: Vec<u8>) -> Result<String> {
        let checksum = Self::checksum(&encoded);
        dir.write(&dir.child(&Self::shard_name(&checksum)), encoded)
            .await?;
        Ok(checksum)
    }

    /// Writes every shard of `filter` and its manifest as `stem` in `dir`: the manifest's URL
    /// and checksum.
    pub async fn write(dir: &Location, stem: &str, filter: &Sharded) -> Result<(String, String)> {
        let shards = dir.join(stem)?;
        let mut checksums = Vec::with_capacity(filter.shards().len());
        for shard in filter.shards() {
            checksums.push(Self::write_shard(&shards, shard.encode()).await?);
        }
        Manifest { shards: checksums }.write(dir, stem).await
    }
}

/// The shards of a stored filter, by checksum, in shard order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub shards: Vec<String>,
}

impl Manifest {
    /// Writes this manifest as `stem` in `dir`: its URL and checksum.
    pub async fn write(&self, dir: &Location, stem: &str) -> Result<(String, String)> {
        let bytes = serde_json::to_vec(self)
            .map_err(|e| Error::runtime(format!("encoding a filter manifest: {e}")))?;
        let checksum = StoredFilter::checksum(&bytes);
        let name = StoredFilter::manifest_name(stem);
        dir.write(&dir.child(&name), bytes).await?;
        Ok((dir.child_url(&name), checksum))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stored filter as one process sees it: the manifest read, each shard read on first use.
pub struct LoadedFilter {
    manifest: String,
    shard_dir: String,
    checksums: Vec<String>,
    s3: S3Options,
    kept: Mutex<Kept>,
}

/// The shards a process keeps of one filter: each loaded one, and when each was last used (a
/// count of lookups, so that a lookup costs the shards it needs, not all of them).
struct Kept {
    shards: Vec<Option<Arc<Bloom>>>,
    last_used: Vec<u64>,
    lookups: u64,
    bytes: u64,
    budget: u64,
}

impl Kept {
    fn new(shards: usize, budget: u64) -> Kept {
        Kept {
            shards: vec![None; shards],
            last_used: vec![0; shards],
            lookups: 0,
            bytes: 0,
            budget,
        }
    }
}

/// The bytes of loaded shards a process keeps of one filter beyond those in use. (A probe that
/// does not route the listing by shard uses every shard in every lookup, so it holds them all.)
const KEPT_SHARD_BYTES: u64 = 64 << 20;

impl LoadedFilter {
    fn open(location: &str, checksum: &str, s3: &S3Options) -> Result<Self> {
        let bytes = crate::store::read_blocking(location, s3)?;
        if StoredFilter::checksum(&bytes) != checksum {
            return Err(Error::runtime(format!(
                "filter manifest {location} does not match its checksum {checksum}: refusing to use it"
            )));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::runtime(format!("filter manifest {location}: {e}")))?;
        let shard_dir = location
            .strip_suffix(".json")
            .ok_or_else(|| Error::runtime(format!("{location} is not a filter manifest")))?;
        let count = u32::try_from(manifest.shards.len()).unwrap_or(0);
        if count == 0 || !count.is_power_of_two() {
            return Err(Error::runtime(format!(
                "filter manifest {location} names {} shards, not a power of two",
                manifest.shards.len()
            )));
        }
        Ok(LoadedFilter {
            manifest: location.to_string(),
            shard_dir: shard_dir.to_string(),
            kept: Mutex::new(Kept::new(manifest.shards.len(), KEPT_SHARD_BYTES)),
            checksums: manifest.shards,
            s3: s3.clone(),
        })
    }

    /// Whether each id, by its fingerprint, may be in the filter, in order; the shards these
    /// fall in are loaded first.
    pub fn contains_fingerprints(&self, fps: &[u64]) -> Result<Vec<bool>> {
        let count = self.checksums.len() as u32;
        let mut needed = vec![false; self.checksums.len()];
        fps.iter()
            .for_each(|&fp| needed[sharded::shard_of(fp, count)] = true);
        let shards = self.shards_for(&needed)?;
        Ok(sharded::look_up(|s| shards[s].as_deref(), count, fps))
    }

    /// The shards `needed`, loaded if they were not; the others as they are kept.
    fn shards_for(&self, needed: &[bool]) -> Result<Vec<Option<Arc<Bloom>>>> {
        let poisoned = || Error::runtime(format!("filter {}: a loader panicked", self.manifest));
        // Loaded under the lock: two tasks wanting one shard read it once.
        let mut kept = self.kept.lock().map_err(|_| poisoned())?;
        kept.using(needed, |i| self.load(i))
    }

    fn load(&self, shard: usize) -> Result<Bloom> {
        let checksum = &self.checksums[shard];
        let location = format!("{}/{}", self.shard_dir, StoredFilter::shard_name(checksum));
        let bytes = crate::store::read_blocking(&location, &self.s3)?;
        StoredFilter::verify_and_decode(&location, checksum, &bytes)
    }
}

impl Kept {
    /// The shards `needed`, loaded by `load` if they were not, as the most recently used; the
    /// others as they are kept, once those past the budget are dropped.
    fn using(
        &mut self,
        needed: &[bool],
        mut load: impl FnMut(usize) -> Result<Bloom>,
    ) -> Result<Vec<Option<Arc<Bloom>>>> {
        self.lookups += 1;
        for (i, _) in needed.iter().enumerate().filter(|(_, n)| **n) {
            self.last_used[i] = self.lookups;
            if self.shards[i].is_none() {
                let shard = load(i)?;
                self.bytes += shard.params().size_bytes();
                self.shards[i] = Some(Arc::new(shard));
            }
        }
        let shards = self.shards.clone();
        self.drop_unneeded(needed);
        Ok(shards)
    }

    /// Drops the least recently used shards, none of `needed`, until the budget's bytes are
    /// kept or only needed ones are.
    fn drop_unneeded(&mut self, needed: &[bool]) {
        while self.bytes > self.budget {
            let oldest = (0..self.shards.len())
                .filter(|&i| self.shards[i].is_some() && !needed[i])
                .min_by_key(|&i| self.last_used[i]);
            let Some(shard) = oldest.and_then(|i| self.shards[i].take()) else {
                return;
            };
            self.bytes -= shard.params().size_bytes();
        }
    }
}

/// Filters opened by this process, by manifest location and checksum. Few runs share a
/// process, so the cache is kept tiny: a filter can be large and an executor lives long.
type Loaded = Vec<(String, Arc<LoadedFilter>)>;
static LOADED: LazyLock<Mutex<Loaded>> = LazyLock::new(|| Mutex::new(Vec::new()));
const LOADED_KEPT: usize = 2;

/// The filter whose manifest is stored at `location` with `checksum`, opened once per process;
/// its store is reached with `s3`.
pub fn load_cached(location: &str, checksum: &str, s3: &S3Options) -> Result<Arc<LoadedFilter>> {
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
    let filter = Arc::new(LoadedFilter::open(location, checksum, s3)?);
    if let Ok(mut v) = LOADED.lock() {
        if v.len() >= LOADED_KEPT {
            v.remove(0);
        }
        v.push((key, Arc::clone(&filter)));
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterParams;

    fn one(shards: usize, i: usize) -> Vec<bool> {
        (0..shards).map(|s| s == i).collect()
    }

    #[test]
    fn shards_past_the_budget_are_dropped_oldest_first_never_one_in_use() {
        let params = FilterParams::for_items(1_000, 0.01, 7);
        let size = params.size_bytes();
        let mut loads = Vec::new();
        let mut k = Kept::new(4, 2 * size);
        let mut load = |i: usize| {
            loads.push(i);
            Bloom::new(params)
        };
        for i in [0, 1, 0, 2, 0, 1] {
            let got = k.using(&one(4, i), &mut load).unwrap();
            assert!(got[i].is_some());
        }
        assert_eq!(k.bytes, 2 * size);
        let all = k.using(&[true; 4], &mut load).unwrap();
        assert!(
            all.iter().all(Option::is_some),
            "every shard in use is kept"
        );
        assert_eq!(k.bytes, 4 * size);
        // 1 was dropped for 2 (0 was used more recently), then 2 for 1; 2 and 3 loaded again.
        assert_eq!(loads, vec![0, 1, 2, 1, 2, 3]);
    }
}
