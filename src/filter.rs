//! The salted Bloom filter of referenced blob ids (ADR 49, step 1).
//!
//! A false positive keeps a garbage blob for one more run; a false negative would delete a
//! live one, so everything here is built to make false negatives impossible: every partial
//! filter of a run shares its size, hash count and seed (an unseeded filter would OR-merge
//! into garbage), and a stored filter is named by the SHA-256 of its bytes and checked on load
//! (a cache keyed by a reused name once served a stale filter).
//!
//! The seed is derived from the run's salt, so each run hashes ids differently and a blob kept
//! by a false positive in one run is collected by a later one.

use crate::blob_id::BlobId;
use crate::error::{Error, Result};
use fastbloom::BloomFilter;
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock, Mutex};

/// Size, hash count and seed: identical for every partial filter of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilterParams {
    pub num_bits: u64,
    pub num_hashes: u32,
    #[serde(with = "seed_hex")]
    pub seed: u128,
}

impl FilterParams {
    /// The optimal size and hash count for `expected_items` at false-positive rate `fpp`.
    pub fn for_items(expected_items: u64, fpp: f64, seed: u128) -> Self {
        let n = usize::try_from(expected_items.max(1)).unwrap_or(usize::MAX);
        let num_bits = fastbloom::optimal_size(n, fpp);
        FilterParams {
            num_bits: num_bits as u64,
            num_hashes: fastbloom::optimal_hashes(num_bits, n),
            seed,
        }
    }

    /// The seed of a run: the salt, hashed so that any text makes a well-spread 128-bit key.
    pub fn seed_from_salt(salt: &str) -> u128 {
        let digest = Sha256::new()
            .chain_update(b"blobgc bloom seed\0")
            .chain_update(salt.as_bytes())
            .finalize();
        let mut seed = [0u8; 16];
        seed.copy_from_slice(&digest[..16]);
        u128::from_le_bytes(seed)
    }

    fn words(&self) -> usize {
        self.num_bits.div_ceil(64) as usize
    }

    pub fn size_bytes(&self) -> u64 {
        self.words() as u64 * 8
    }
}

/// A Bloom filter of blob ids with its parameters.
#[derive(Debug, Clone)]
pub struct Bloom {
    params: FilterParams,
    filter: BloomFilter,
}

impl Bloom {
    pub fn new(params: FilterParams) -> Result<Self> {
        if params.num_bits == 0 || params.num_hashes == 0 {
            return Err(Error::runtime(format!(
                "invalid Bloom filter parameters {params:?}"
            )));
        }
        Self::from_words(params, vec![0; params.words()])
    }

    fn from_words(params: FilterParams, words: Vec<u64>) -> Result<Self> {
        if words.len() != params.words() || params.num_hashes == 0 {
            return Err(Error::runtime(format!(
                "Bloom filter of {} words does not match its parameters {params:?}",
                words.len()
            )));
        }
        let filter = BloomFilter::from_vec(words)
            .seed(&params.seed)
            .hashes(params.num_hashes);
        Ok(Bloom { params, filter })
    }

    pub fn params(&self) -> FilterParams {
        self.params
    }

    /// Inserts a referenced id, and its canonical spelling when it differs (`0_0_abc` is the
    /// blob `abc`, `1_0557_x` the blob `1_557_x`), so no spelling of a reference is missed.
    pub fn insert(&mut self, id: &str) {
        self.filter.insert(id);
        if let Some(canonical) = non_canonical(id) {
            self.filter.insert(canonical.as_str());
        }
    }

    /// Whether a listed id may be referenced, under any spelling.
    pub fn contains(&self, id: &str) -> bool {
        self.filter.contains(id)
            || non_canonical(id).is_some_and(|c| self.filter.contains(c.as_str()))
    }

    /// ORs a partial filter into this one. Both must come from the same parameters.
    pub fn union_words(&mut self, bytes: &[u8]) -> Result<()> {
        let other = Self::from_words(self.params, words_from_le_bytes(bytes)?)?;
        self.filter.union(&other.filter);
        Ok(())
    }

    pub fn to_le_bytes(&self) -> Vec<u8> {
        self.filter
            .as_slice()
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    pub fn from_le_bytes(params: FilterParams, bytes: &[u8]) -> Result<Self> {
        Self::from_words(params, words_from_le_bytes(bytes)?)
    }

    /// Share of bits set.
    pub fn fill_ratio(&self) -> f64 {
        let ones: u64 = self
            .filter
            .as_slice()
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        ones as f64 / (self.filter.as_slice().len() as f64 * 64.0)
    }

    /// The false-positive rate this filter really has: `fill_ratio ^ hashes`. It catches an
    /// undersized filter (more distinct references than expected) before anything is deleted.
    pub fn estimated_fpp(&self) -> f64 {
        self.fill_ratio().powi(self.params.num_hashes as i32)
    }

    /// The stored form: a small header, then the words. See [`StoredFilter`].
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.params.size_bytes() as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.params.num_hashes.to_le_bytes());
        out.extend_from_slice(&self.params.seed.to_le_bytes());
        out.extend_from_slice(&self.params.num_bits.to_le_bytes());
        out.extend_from_slice(&self.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::runtime(format!("stored Bloom filter is corrupt: {why}"));
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            return Err(bad("bad header"));
        }
        let num_hashes = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| bad("hashes"))?);
        let seed = u128::from_le_bytes(bytes[12..28].try_into().map_err(|_| bad("seed"))?);
        let num_bits = u64::from_le_bytes(bytes[28..36].try_into().map_err(|_| bad("bits"))?);
        Self::from_le_bytes(
            FilterParams {
                num_bits,
                num_hashes,
                seed,
            },
            &bytes[HEADER_LEN..],
        )
    }
}

const MAGIC: &[u8; 8] = b"BLOBGCB1";
const HEADER_LEN: usize = 8 + 4 + 16 + 8;

fn words_from_le_bytes(bytes: &[u8]) -> Result<Vec<u64>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Error::runtime(format!(
            "Bloom filter state of {} bytes is not whole words",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// The canonical spelling of `id` when it differs from `id`. Canonical text is `id` with
/// characters removed (a `0_0_` prefix, leading zeros), so equal lengths mean equal texts and
/// the common case costs no allocation.
pub(crate) fn non_canonical(id: &str) -> Option<String> {
    let parsed = BlobId::parse(id).ok()?;
    let digits = |n: u64| n.checked_ilog10().map_or(1, |d| d as usize + 1);
    let canonical_len = if parsed.family == 0 {
        parsed.delegate.len()
    } else {
        digits(u64::from(parsed.family)) + digits(parsed.generation) + 2 + parsed.delegate.len()
    };
    (canonical_len != id.len()).then(|| parsed.to_string())
}

/// A filter written next to a plan, named by the SHA-256 of its bytes.
pub struct StoredFilter;

impl StoredFilter {
    /// The file name a filter's bytes are stored under.
    pub fn file_name(bytes: &[u8]) -> String {
        format!("filter-{}.bloom", hex(&Sha256::digest(bytes)))
    }

    /// Checks `bytes` against the hash in `location`'s file name, then decodes them.
    pub fn verify_and_decode(location: &str, bytes: &[u8]) -> Result<Bloom> {
        let name = location.rsplit('/').next().unwrap_or(location);
        if name != Self::file_name(bytes) {
            return Err(Error::runtime(format!(
                "Bloom filter at {location} does not match the checksum in its name: refusing to use it"
            )));
        }
        Bloom::decode(bytes)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Filters loaded by this process, by location. Few runs share a process, so the cache is
/// kept tiny: a filter can be large and an executor lives long.
type Loaded = Vec<(String, Arc<Bloom>)>;
static LOADED: LazyLock<Mutex<Loaded>> = LazyLock::new(|| Mutex::new(Vec::new()));
const LOADED_KEPT: usize = 2;

/// The filter stored at `location`, loaded once per process. The location names the content
/// hash, so a cached entry can never be a stale filter.
pub fn load_cached(location: &str) -> Result<Arc<Bloom>> {
    let cached = |l: &str| {
        LOADED
            .lock()
            .ok()
            .and_then(|v| v.iter().find(|(k, _)| k == l).map(|(_, f)| Arc::clone(f)))
    };
    if let Some(f) = cached(location) {
        return Ok(f);
    }
    let bytes = crate::store::read_blocking(location)?;
    let filter = Arc::new(StoredFilter::verify_and_decode(location, &bytes)?);
    if let Ok(mut v) = LOADED.lock() {
        if v.len() >= LOADED_KEPT {
            v.remove(0);
        }
        v.push((location.to_string(), Arc::clone(&filter)));
    }
    Ok(filter)
}

mod seed_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(seed: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{seed:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text = String::deserialize(d)?;
        u128::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> FilterParams {
        FilterParams::for_items(1_000, 0.01, FilterParams::seed_from_salt("s"))
    }

    #[test]
    fn merged_partials_contain_every_inserted_id() {
        let mut a = Bloom::new(params()).unwrap();
        let mut b = Bloom::new(params()).unwrap();
        (0..500).for_each(|i| a.insert(&format!("1_5_a{i}")));
        (0..500).for_each(|i| b.insert(&format!("1_5_b{i}")));
        a.union_words(&b.to_le_bytes()).unwrap();
        assert!(
            (0..500).all(|i| a.contains(&format!("1_5_a{i}")) && a.contains(&format!("1_5_b{i}")))
        );
        let fpp = a.estimated_fpp();
        assert!(fpp > 0.001 && fpp < 0.03, "estimated fpp {fpp}");
    }

    #[test]
    fn salts_change_the_hashing() {
        let p2 = FilterParams {
            seed: FilterParams::seed_from_salt("other"),
            ..params()
        };
        assert_ne!(params().seed, p2.seed);
        let mut a = Bloom::new(params()).unwrap();
        a.insert("1_5_x");
        let b = Bloom::from_le_bytes(p2, &a.to_le_bytes()).unwrap();
        assert!(a.contains("1_5_x"));
        assert!(
            !b.contains("1_5_x"),
            "same bits under another seed must not match"
        );
    }

    #[test]
    fn canonical_spellings_match() {
        let mut f = Bloom::new(params()).unwrap();
        f.insert("0_0_abc");
        f.insert("1_0557_x");
        assert!(f.contains("abc") && f.contains("1_557_x"));
        let mut g = Bloom::new(params()).unwrap();
        g.insert("abc");
        assert!(g.contains("0_0_abc"));
        assert_eq!(non_canonical("1_557_x"), None);
        assert_eq!(non_canonical("abc"), None);
    }

    #[test]
    fn stored_form_round_trips_and_is_checked() {
        let mut f = Bloom::new(params()).unwrap();
        f.insert("1_5_x");
        let bytes = f.encode();
        let name = StoredFilter::file_name(&bytes);
        let back = StoredFilter::verify_and_decode(&format!("file:///p/{name}"), &bytes).unwrap();
        assert!(back.contains("1_5_x"));
        assert_eq!(back.params(), f.params());
        let mut tampered = bytes.clone();
        tampered[HEADER_LEN] ^= 1;
        assert!(StoredFilter::verify_and_decode(&format!("file:///p/{name}"), &tampered).is_err());
        assert!(Bloom::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn mismatched_partials_are_refused() {
        let mut a = Bloom::new(params()).unwrap();
        assert!(a.union_words(&[0u8; 16]).is_err());
        assert!(a.union_words(&[0u8; 7]).is_err());
    }
}
