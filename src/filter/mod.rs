//! The salted Bloom filter of referenced blob ids (ADR 49, step 1).
//!
//! A false positive keeps a garbage blob for one more run; a false negative would delete a
//! live one, so everything here is built to make false negatives impossible: every partial
//! filter of a run shares its size, hash count and seed (an unseeded filter would OR-merge
//! into garbage), and a stored filter is named by the SHA-256 of its bytes and checked on load
//! (a cache keyed by a reused name once served a stale filter).
//!
//! The seed is derived from the run's salt, so each run hashes ids differently and a blob kept
//! by a false positive in one run is collected by a later one. Ids are hashed through their
//! 64-bit [`fingerprint`], so that a filter can be built from fingerprints alone
//! (in-process, a spill of the references' fingerprints).

mod canonical;
mod sharded;
mod sketch;
mod stored;

pub(crate) use canonical::fully_canonical;
pub use sharded::{FilterStats, Sharded, fit, shard_of};
pub use sketch::Sketch;
pub(crate) use stored::hex;
pub use stored::{LoadedFilter, Manifest, StoredFilter, load_cached};

use crate::error::{Error, Result};
use fastbloom::BloomFilter;
use sha2::{Digest, Sha256};

/// Size, hash count and seed: identical for every partial filter of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FilterParams {
    pub num_bits: u64,
    pub num_hashes: u32,
    #[serde(with = "seed_hex")]
    pub seed: u128,
}

impl FilterParams {
    /// The size and hash count for `expected_items` at false-positive rate `fpp`. Each hash is a
    /// memory access per insert and per lookup of a referenced id (the filter's cost), and the
    /// size barely moves near the optimal count (`log2(1 / fpp)`, 6.6 at 1%), so it takes the
    /// fewest hashes whose size, the one keeping `fpp`, is within 10% of the smallest
    /// (`SIZE_OVER_OPTIMAL`): at 1%, 4 hashes in 9.5% more bits than 6.6. Measured side by side
    /// at 10M listed blobs (22M references, 4 runs each), 4 hashes instead of 6 took the job
    /// from 1.99 s to 1.80 s; 3 (29% more bits) was no faster than 4.
    pub fn for_items(expected_items: u64, fpp: f64, seed: u128) -> Self {
        // A floor: a reference spelled two ways is two items, which matters only when few.
        let n = expected_items.max(MIN_ITEMS) as f64;
        let bits_per_item = |k: f64| -k / (1.0 - fpp.powf(1.0 / k)).ln();
        let optimal = (-fpp.log2()).max(1.0);
        let smallest = bits_per_item(optimal) * SIZE_OVER_OPTIMAL;
        let num_hashes = (1..)
            .map(f64::from)
            .find(|&k| k >= optimal || bits_per_item(k) <= smallest)
            .unwrap_or(optimal);
        FilterParams {
            num_bits: ((bits_per_item(num_hashes) * n).ceil() as u64).next_multiple_of(64),
            num_hashes: num_hashes as u32,
            seed,
        }
    }

    /// Like [`Self::for_items`], with a word count that [`Bloom::fold`] can divide by any factor
    /// up to [`MAX_FOLD`]: the size of a filter built for an upper bound of its items.
    pub fn foldable(expected_items: u64, fpp: f64, seed: u128) -> Self {
        let mut p = Self::for_items(expected_items, fpp, seed);
        let unit = FOLD_WORDS_UNIT as u64 * 64;
        if p.num_bits >= MAX_FOLD as u64 * unit {
            p.num_bits = p.num_bits.div_ceil(unit) * unit;
        }
        p
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
    hash_seed: u64,
}

/// The hash of a text under `seed`: XXH3. Its own default (SipHash through `Hash for str`)
/// cost more per id than the filter's memory accesses.
pub fn id_hash(seed: u64, id: &str) -> u64 {
    twox_hash::XxHash3_64::oneshot_with_seed(seed, id.as_bytes())
}

/// The fingerprint of an id: the hash of its fully canonical spelling under a fixed seed, so
/// every spelling of one blob has one fingerprint. The filter hashes ids through it
/// ([`Bloom::hash`]), the in-process spill keeps it, the verification compares it.
#[inline]
pub fn fingerprint(id: &str) -> u64 {
    id_hash(0, &fully_canonical(id))
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
        let filter = BloomFilter::from_vec(words).hashes(params.num_hashes);
        Ok(Bloom {
            params,
            filter,
            hash_seed: params.seed as u64 ^ (params.seed >> 64) as u64,
        })
    }

    pub fn params(&self) -> FilterParams {
        self.params
    }

    /// The hash this filter keys an id by: its [`fingerprint`], hashed again under the run's
    /// seed ([`Self::hash_fingerprint`]). The fingerprint is that of the spelling all its
    /// spellings end at (its fully canonical one: `0_0_abc` is the blob `abc`, `1_0557_x` the blob
    /// `1_557_x`), so no spelling of a reference is missed, and the filter matches exactly the
    /// pairs the exact strategy joins.
    #[inline]
    pub fn hash(&self, id: &str) -> u64 {
        self.hash_fingerprint(fingerprint(id))
    }

    /// The hash of an id by its fingerprint: the spill of a run is all its filter needs. The
    /// salt still changes every false positive between runs but one: an orphan whose
    /// fingerprint equals a reference's (about one chance in 2^64 per reference) is kept by
    /// every run, a kept blob, never a lost one.
    #[inline]
    pub fn hash_fingerprint(&self, fp: u64) -> u64 {
        twox_hash::XxHash3_64::oneshot_with_seed(self.hash_seed, &fp.to_le_bytes())
    }

    /// Inserts a referenced id.
    pub fn insert(&mut self, id: &str) {
        self.filter.insert_hash(self.hash(id));
    }

    /// Whether a listed id may be referenced, under any spelling.
    pub fn contains(&self, id: &str) -> bool {
        self.filter.contains_hash(self.hash(id))
    }

    /// Inserts ids by their [`Self::hash`]es. The bits of an id lie on `num_hashes` random
    /// cache lines of a filter far larger than the CPU caches, so one at a time each insert
    /// waits for memory; here the lines of the id `LOOKAHEAD` places on are fetched while
    /// this one's bits are set.
    pub fn insert_hashes(&mut self, hashes: &[u64]) {
        for (i, &h) in hashes.iter().enumerate() {
            if let Some(&ahead) = hashes.get(i + LOOKAHEAD) {
                self.prefetch(ahead);
            }
            self.filter.insert_hash(h);
        }
    }

    /// Whether an id, by its [`Self::hash`], may be in the filter.
    #[inline]
    fn contains_hash(&self, hash: u64) -> bool {
        self.filter.contains_hash(hash)
    }

    /// Asks the CPU for the cache lines holding the bits of `hash`, without waiting for them.
    #[inline]
    fn prefetch(&self, hash: u64) {
        let words = self.filter.as_slice();
        for bit in bit_indexes(hash, words.len() as u64 * 64, self.params.num_hashes) {
            if let Some(word) = words.get((bit >> 6) as usize) {
                prefetch(word);
            }
        }
    }

    /// ORs a partial filter, as words, into this one. Both must come from the same parameters.
    pub fn union_words(&mut self, bytes: &[u8]) -> Result<()> {
        self.union(&Self::from_words(self.params, words_from_le_bytes(bytes)?)?)
    }

    /// ORs a partial filter into this one; refused unless both have the same parameters.
    pub fn union(&mut self, other: &Bloom) -> Result<()> {
        if other.params != self.params {
            return Err(Error::runtime(format!(
                "cannot merge a Bloom filter of {:?} into one of {:?}",
                other.params, self.params
            )));
        }
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

    /// The same filter with `factor` times fewer bits: exactly the filter that inserting the same
    /// ids into that many bits gives, because fastbloom maps a hash to bit `hash * bits >> 64`
    /// and `floor(floor(x) / f) = floor(x / f)`: bit `j` of the folded filter is the OR of bits
    /// `j * f .. (j + 1) * f` of this one. So no id it holds is lost.
    pub fn fold(&self, factor: usize) -> Result<Bloom> {
        let words = self.filter.as_slice();
        if factor == 0 || !words.len().is_multiple_of(factor) {
            return Err(Error::runtime(format!(
                "cannot fold a Bloom filter of {} words by {factor}",
                words.len()
            )));
        }
        let mut folded = vec![0u64; words.len() / factor];
        for (i, &word) in words.iter().enumerate() {
            let mut w = word;
            while w != 0 {
                let bit = (i * 64 + w.trailing_zeros() as usize) / factor;
                folded[bit >> 6] |= 1 << (bit & 63);
                w &= w - 1;
            }
        }
        Self::from_words(
            FilterParams {
                num_bits: folded.len() as u64 * 64,
                ..self.params
            },
            folded,
        )
    }

    /// Distinct ids inserted, estimated from the bits set (Swamidass & Baldi).
    pub fn estimated_items(&self) -> f64 {
        let m = self.filter.as_slice().len() as f64 * 64.0;
        let k = f64::from(self.params.num_hashes);
        -(m / k) * (1.0 - self.fill_ratio()).ln()
    }

    /// The factor that folds this filter to the smallest size keeping `fpp` for the ids it
    /// holds: a filter sized for reference rows, which count a shared blob once per reference,
    /// shrinks to its distinct ids.
    pub fn fit_factor(&self, fpp: f64) -> usize {
        let needed = self.estimated_items().max(1.0) * -fpp.ln() / std::f64::consts::LN_2.powi(2);
        let words = self.filter.as_slice().len();
        let mut factor = ((words as f64 * 64.0 / needed) as usize).clamp(1, MAX_FOLD);
        while !words.is_multiple_of(factor) {
            factor -= 1;
        }
        factor
    }

    /// Bits set.
    pub fn ones(&self) -> u64 {
        self.filter
            .as_slice()
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// Share of bits set.
    pub fn fill_ratio(&self) -> f64 {
        self.ones() as f64 / (self.filter.as_slice().len() as f64 * 64.0)
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

/// Ids hashed ahead of the one inserted or looked up, whose cache lines are fetched meanwhile:
/// enough to cover a memory access, few enough that their lines (one per hash) stay in flight.
const LOOKAHEAD: usize = 8;

/// The bits fastbloom 0.17 sets for `hash` in a filter of `num_bits` (its `index` of the hash,
/// then of each double hash), for prefetching only: were they to drift from fastbloom's, the
/// filter would stay exact and merely fetch the wrong lines (a test compares them).
fn bit_indexes(hash: u64, num_bits: u64, num_hashes: u32) -> impl Iterator<Item = u64> {
    let index = move |h: u64| ((u128::from(h) * u128::from(num_bits)) >> 64) as u64;
    let step = hash.wrapping_mul(0x517c_c1b7_2722_0a95);
    let mut h = hash;
    std::iter::once(index(hash)).chain((1..num_hashes).map(move |_| {
        h = h.rotate_left(5).wrapping_add(step);
        index(h)
    }))
}

/// A hint to load `word`'s cache line; nothing on other processors.
#[inline(always)]
pub(crate) fn prefetch(word: &u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault; the address is that
    // of a live reference.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(word).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = word;
}

/// The fewest items a filter is sized for.
const MIN_ITEMS: u64 = 64;

/// How much larger than the smallest filter keeping a false-positive rate one may be, to set
/// fewer bits per id ([`FilterParams::for_items`]).
const SIZE_OVER_OPTIMAL: f64 = 1.10;

/// Folds [`Bloom::fit_factor`] may ask for: reference rows rarely count a blob more than 8 times.
pub const MAX_FOLD: usize = 8;
/// lcm(1..=8): word counts that every fold up to [`MAX_FOLD`] divides.
const FOLD_WORDS_UNIT: usize = 840;

/// Names the hash and the spelling hashed: a filter of another version could miss ids.
const MAGIC: &[u8; 8] = b"BLOBGCB4";
const HEADER_LEN: usize = 8 + 4 + 16 + 8;

fn words_from_le_bytes(bytes: &[u8]) -> Result<Vec<u64>> {
    let mut words = Vec::with_capacity(bytes.len() / 8);
    if !extend_le_words(bytes, &mut words) {
        return Err(Error::runtime(format!(
            "Bloom filter state of {} bytes is not whole words",
            bytes.len()
        )));
    }
    Ok(words)
}

/// Appends the little-endian 64-bit words of `bytes` to `out`; false (and nothing appended)
/// unless `bytes` holds whole ones.
pub(crate) fn extend_le_words(bytes: &[u8], out: &mut Vec<u64>) -> bool {
    if !bytes.len().is_multiple_of(8) {
        return false;
    }
    out.extend(
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])),
    );
    true
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
    use super::canonical::non_canonical;
    use super::*;
    use crate::blob_id::BlobId;

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
    fn a_folded_filter_is_the_filter_built_at_the_folded_size() {
        let seed = FilterParams::seed_from_salt("fold");
        let big = FilterParams::foldable(2_000_000, 0.01, seed);
        assert!(big.num_bits.is_multiple_of(840 * 64));
        let ids: Vec<String> = (0..30_000).map(|i| format!("1_5_{i}")).collect();
        let mut a = Bloom::new(big).unwrap();
        ids.iter().for_each(|id| a.insert(id));
        for factor in [2, 3, 5, 7, 8] {
            let folded = a.fold(factor).unwrap();
            let mut direct = Bloom::new(FilterParams {
                num_bits: big.num_bits / factor as u64,
                ..big
            })
            .unwrap();
            ids.iter().for_each(|id| direct.insert(id));
            assert_eq!(
                folded.to_le_bytes(),
                direct.to_le_bytes(),
                "factor {factor}"
            );
        }
        let estimated = a.estimated_items();
        assert!((estimated - 30_000.0).abs() < 300.0, "{estimated}");
        assert_eq!(a.fit_factor(0.01), 8, "capped at 8");
        let fitted = a.fold(8).unwrap();
        assert!(ids.iter().all(|id| fitted.contains(id)));
    }

    #[test]
    fn the_prefetched_bits_are_the_bits_fastbloom_sets() {
        let mut f = Bloom::new(params()).unwrap();
        let bits = f.params().size_bytes() * 8;
        for id in ["1_5_x", "abc", "2_700_zz"] {
            let before = f.to_le_bytes();
            let hash = f.hash(id);
            f.insert(id);
            let after = f.to_le_bytes();
            let mut predicted = before.clone();
            for bit in bit_indexes(hash, bits, f.params().num_hashes) {
                predicted[(bit / 8) as usize] |= 1 << (bit % 8);
            }
            assert_eq!(after, predicted, "{id}");
        }
    }

    #[test]
    fn batched_inserts_and_lookups_match_one_at_a_time() {
        let ids: Vec<String> = (0..2_000).map(|i| format!("1_5_{i}")).collect();
        let mut one = Bloom::new(params()).unwrap();
        let mut batched = Bloom::new(params()).unwrap();
        ids.iter().take(1_000).for_each(|id| one.insert(id));
        let hashes: Vec<u64> = ids.iter().take(1_000).map(|id| batched.hash(id)).collect();
        batched.insert_hashes(&hashes);
        assert_eq!(one.to_le_bytes(), batched.to_le_bytes());
        let all: Vec<u64> = ids.iter().map(|id| one.hash(id)).collect();
        let found: Vec<bool> = all.iter().map(|&h| one.contains_hash(h)).collect();
        let expected: Vec<bool> = ids.iter().map(|id| one.contains(id)).collect();
        assert_eq!(found, expected);
        assert!(found[..1_000].iter().all(|&f| f));
    }

    #[test]
    fn the_filter_keeps_the_requested_rate_with_fewer_hashes_in_at_most_10_percent_more_bits() {
        for (fpp, hashes) in [(0.01, 4), (0.001, 6), (0.0078125, 5), (0.3, 2), (1e-7, 14)] {
            let p = FilterParams::for_items(1_000_000, fpp, 1);
            assert_eq!(p.num_hashes, hashes, "{fpp}");
            let k = f64::from(p.num_hashes);
            let rate = (1.0 - (-k * 1e6 / p.num_bits as f64).exp()).powf(k);
            assert!(rate <= fpp && rate > fpp * 0.99, "{fpp}: {rate}");
            let smallest = -fpp.log2() / std::f64::consts::LN_2;
            let over = p.num_bits as f64 / 1e6 / smallest;
            assert!(
                over <= SIZE_OVER_OPTIMAL,
                "{fpp}: {over} times the smallest"
            );
        }
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
    fn spelling_chains_end_at_one_spelling() {
        assert_eq!(non_canonical("0_0_0_7_y").as_deref(), Some("0_7_y"));
        assert_eq!(fully_canonical("0_0_0_7_y"), "y");
        assert_eq!(fully_canonical("0_7_y"), "y");
        assert_eq!(fully_canonical("1_0557_x"), "1_557_x");
        assert_eq!(fully_canonical("1_557_x"), "1_557_x");
    }

    proptest::proptest! {
        #[test]
        fn the_quick_spelling_check_misses_no_other_spelling(id in "[0-9_]{0,7}[a-zA-Z0-9_=-]{0,8}") {
            let other = BlobId::parse(&id).ok().map(|p| p.to_string()).filter(|c| c != &id);
            proptest::prop_assert_eq!(non_canonical(&id), other);
        }

        #[test]
        fn an_id_and_its_spelling_end_at_the_same_spelling(id in "[0-9_]{0,9}[a-zA-Z0-9_=-]{0,8}") {
            let end = fully_canonical(&id);
            proptest::prop_assert_eq!(&fully_canonical(&end), &end);
            if let Some(next) = non_canonical(&id) {
                proptest::prop_assert_eq!(fully_canonical(&next), end);
            }
        }
    }

    #[test]
    fn stored_form_round_trips_and_is_checked() {
        let mut f = Bloom::new(params()).unwrap();
        f.insert("1_5_x");
        let bytes = f.encode();
        let sum = StoredFilter::checksum(&bytes);
        let back = StoredFilter::verify_and_decode("file:///p/f.bloom", &sum, &bytes).unwrap();
        assert!(back.contains("1_5_x"));
        assert_eq!(back.params(), f.params());
        let mut tampered = bytes.clone();
        tampered[HEADER_LEN] ^= 1;
        assert!(StoredFilter::verify_and_decode("file:///p/f.bloom", &sum, &tampered).is_err());
        assert!(Bloom::decode(&bytes[..10]).is_err());
    }

    #[test]
    fn mismatched_partials_are_refused() {
        let mut a = Bloom::new(params()).unwrap();
        assert!(a.union_words(&[0u8; 16]).is_err());
        assert!(a.union_words(&[0u8; 7]).is_err());
    }
}
