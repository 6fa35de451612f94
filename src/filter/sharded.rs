//! The filter as shards: `count` (a power of two) Bloom filters, an id in the one its
//! fingerprint's top bits name ([`shard_of`]). Each shard is sized for its share of the ids, so
//! the shards together are as large and as exact as one filter, but no process needs them all:
//! a cluster builds each shard in one reduce task from the fingerprints routed to it, and
//! probes each in the tasks the listing's ids of that shard are routed to. In this process,
//! inserts are grouped by shard, so each group hits a filter small enough for the CPU's cache.
//!
//! The shard is picked by the unsalted fingerprint and the bits within it by the fingerprint
//! hashed under the run's seed: the two are independent, and a run with the same salt and shard
//! count sets the same bits in the same shards wherever it runs.

use super::{Bloom, FilterParams, LOOKAHEAD, fingerprint};
use crate::error::{Error, Result};

/// The shard of fingerprint `fp` among `count`: its top `log2(count)` bits.
#[inline]
pub fn shard_of(fp: u64, count: u32) -> usize {
    match count {
        0 | 1 => 0,
        n => (fp >> (64 - n.trailing_zeros())) as usize,
    }
}

/// A filter of `count` shards sharing their hash count and seed.
#[derive(Debug, Clone)]
pub struct Sharded {
    shards: Vec<Bloom>,
    /// Per shard, the hashes of the fingerprints being inserted, kept to reuse the allocations.
    pending: Vec<Vec<u64>>,
}

impl Sharded {
    /// `count` empty shards sized together for `expected_items` at `fpp`, each foldable
    /// ([`FilterParams::foldable`]) for its share.
    pub fn for_items(expected_items: u64, fpp: f64, seed: u128, count: u32) -> Result<Self> {
        Self::empty(Self::shard_params(expected_items, fpp, seed, count)?, count)
    }

    /// `count` empty shards of `params` each.
    pub fn empty(params: FilterParams, count: u32) -> Result<Self> {
        check_count(count)?;
        Self::from_shards(
            (0..count)
                .map(|_| Bloom::new(params))
                .collect::<Result<_>>()?,
        )
    }

    /// The parameters of each of `count` shards sized together for `expected_items` at `fpp`.
    pub fn shard_params(
        expected_items: u64,
        fpp: f64,
        seed: u128,
        count: u32,
    ) -> Result<FilterParams> {
        check_count(count)?;
        let share = expected_items.div_ceil(u64::from(count));
        Ok(FilterParams::foldable(share, fpp, seed))
    }

    /// Shards built elsewhere, in shard order; refused unless they share their hashing.
    pub fn from_shards(shards: Vec<Bloom>) -> Result<Self> {
        check_count(u32::try_from(shards.len()).unwrap_or(0))?;
        let first = shards[0].params();
        if let Some(odd) = shards
            .iter()
            .map(Bloom::params)
            .find(|p| p.num_hashes != first.num_hashes || p.seed != first.seed)
        {
            return Err(Error::runtime(format!(
                "filter shards of {odd:?} and {first:?} cannot make one filter"
            )));
        }
        let pending = vec![Vec::new(); shards.len()];
        Ok(Sharded { shards, pending })
    }

    pub fn shards(&self) -> &[Bloom] {
        &self.shards
    }

    pub fn count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The parameters the shards were made with: each shard's, all bits together.
    pub fn params(&self) -> FilterParams {
        FilterParams {
            num_bits: self.shards.iter().map(|s| s.params().num_bits).sum(),
            ..self.shards[0].params()
        }
    }

    pub fn insert(&mut self, id: &str) {
        self.insert_fingerprints(&[fingerprint(id)]);
    }

    pub fn contains(&self, id: &str) -> bool {
        self.contains_fingerprints(&[fingerprint(id)])[0]
    }

    /// Inserts ids by their fingerprints, grouped by shard: the inserts of one shard follow
    /// each other, so its lines stay cached between them.
    pub fn insert_fingerprints(&mut self, fps: &[u64]) {
        let count = self.count();
        for &fp in fps {
            let shard = shard_of(fp, count);
            let hash = self.shards[shard].hash_fingerprint(fp);
            self.pending[shard].push(hash);
        }
        for (shard, hashes) in self.shards.iter_mut().zip(&mut self.pending) {
            shard.insert_hashes(hashes);
            hashes.clear();
        }
    }

    /// Whether each id, by its fingerprint, may be in the filter, in order.
    pub fn contains_fingerprints(&self, fps: &[u64]) -> Vec<bool> {
        look_up(|s| Some(&self.shards[s]), self.count(), fps)
    }

    /// ORs the shards of `other` into these; refused unless made alike.
    pub fn union(&mut self, other: &Sharded) -> Result<()> {
        if other.count() != self.count() {
            return Err(Error::runtime(format!(
                "cannot merge a filter of {} shards into one of {}",
                other.count(),
                self.count()
            )));
        }
        self.shards
            .iter_mut()
            .zip(&other.shards)
            .try_for_each(|(a, b)| a.union(b))
    }

    /// Each shard folded to the smallest size keeping `fpp` for the ids it holds
    /// ([`Bloom::fit_factor`]).
    pub fn fitted(self, fpp: f64) -> Result<Self> {
        let shards = self
            .shards
            .into_iter()
            .map(|s| fit(s, fpp))
            .collect::<Result<_>>()?;
        Self::from_shards(shards)
    }

    pub fn stats(&self) -> FilterStats {
        FilterStats::of(
            self.shards.iter().map(|s| (s.params().num_bits, s.ones())),
            self.shards[0].params().num_hashes,
        )
    }
}

/// A shard folded to the ids it holds at `fpp`: one filter's reduce step.
pub fn fit(shard: Bloom, fpp: f64) -> Result<Bloom> {
    match shard.fit_factor(fpp) {
        1 => Ok(shard),
        factor => shard.fold(factor),
    }
}

fn check_count(count: u32) -> Result<()> {
    if count == 0 || !count.is_power_of_two() {
        return Err(Error::usage(format!(
            "a filter's shard count must be a power of two, got {count}"
        )));
    }
    Ok(())
}

/// Whether each fingerprint may be in its shard, which `shard` gives (None: not at hand, so
/// maybe, the safe answer); each lookup fetches the lines of the one [`LOOKAHEAD`] places on.
pub(crate) fn look_up<'a>(
    shard: impl Fn(usize) -> Option<&'a Bloom>,
    count: u32,
    fps: &[u64],
) -> Vec<bool> {
    let hashed: Vec<(Option<&Bloom>, u64)> = fps
        .iter()
        .map(|&fp| {
            let s = shard(shard_of(fp, count));
            (s, s.map_or(0, |s| s.hash_fingerprint(fp)))
        })
        .collect();
    (0..hashed.len())
        .map(|i| {
            if let Some(&(Some(ahead), hash)) = hashed.get(i + LOOKAHEAD) {
                ahead.prefetch(hash);
            }
            let (s, hash) = hashed[i];
            s.is_none_or(|s| s.contains_hash(hash))
        })
        .collect()
}

/// How full a filter came out, from its shards' sizes and bits set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterStats {
    pub num_bits: u64,
    pub fill_ratio: f64,
    /// Distinct ids held, estimated from the bits set (Swamidass & Baldi), over all shards.
    pub estimated_items: f64,
    /// The false-positive rate of a lookup: the shards' `fill ^ hashes`, averaged, as ids fall
    /// into every shard alike.
    pub estimated_fpp: f64,
}

impl FilterStats {
    /// The stats of shards of `(bits, bits set)`, hashed `num_hashes` times.
    pub fn of(shards: impl Iterator<Item = (u64, u64)>, num_hashes: u32) -> Self {
        let k = f64::from(num_hashes);
        let (mut bits, mut ones, mut items, mut fpp, mut n) = (0, 0, 0.0, 0.0, 0.0);
        for (m, set) in shards {
            let fill = set as f64 / m as f64;
            bits += m;
            ones += set;
            items += -(m as f64 / k) * (1.0 - fill).ln();
            fpp += fill.powi(num_hashes as i32);
            n += 1.0;
        }
        FilterStats {
            num_bits: bits,
            fill_ratio: ones as f64 / bits.max(1) as f64,
            estimated_items: items,
            estimated_fpp: fpp / f64::max(n, 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("1_5_{i}")).collect()
    }

    #[test]
    fn a_shard_is_the_top_bits_of_the_fingerprint() {
        assert_eq!(shard_of(u64::MAX, 1), 0);
        assert_eq!(shard_of(u64::MAX, 2), 1);
        assert_eq!(shard_of(1 << 63, 4), 2);
        assert_eq!(shard_of(u64::MAX, 1 << 16), (1 << 16) - 1);
        assert!(Sharded::for_items(10, 0.01, 1, 3).is_err());
        assert!(Sharded::for_items(10, 0.01, 1, 0).is_err());
    }

    #[test]
    fn every_inserted_id_is_found_and_the_rate_is_kept() {
        let seed = FilterParams::seed_from_salt("shards");
        let mut f = Sharded::for_items(40_000, 0.01, seed, 8).unwrap();
        let all = ids(60_000);
        all[..40_000].iter().for_each(|id| f.insert(id));
        assert!(all[..40_000].iter().all(|id| f.contains(id)));
        let false_positives = all[40_000..].iter().filter(|id| f.contains(id)).count();
        assert!(false_positives < 20_000 / 50, "{false_positives}");
        let stats = f.stats();
        assert!(
            (stats.estimated_items - 40_000.0).abs() < 800.0,
            "{stats:?}"
        );
        assert!(
            stats.estimated_fpp > 0.005 && stats.estimated_fpp < 0.015,
            "{stats:?}"
        );
    }

    #[test]
    fn batched_and_one_by_one_agree_and_merged_halves_are_the_whole() {
        let seed = FilterParams::seed_from_salt("merge");
        let all = ids(5_000);
        let fps: Vec<u64> = all.iter().map(|id| fingerprint(id)).collect();
        // Sized for many more ids than it gets, as a filter sized for reference rows is: it folds.
        let mut whole = Sharded::for_items(200_000, 0.001, seed, 4).unwrap();
        all.iter().for_each(|id| whole.insert(id));
        let mut half = Sharded::for_items(200_000, 0.001, seed, 4).unwrap();
        let mut other = half.clone();
        half.insert_fingerprints(&fps[..2_500]);
        other.insert_fingerprints(&fps[2_500..]);
        half.union(&other).unwrap();
        let bytes = |f: &Sharded| f.shards().iter().map(Bloom::encode).collect::<Vec<_>>();
        assert_eq!(bytes(&half), bytes(&whole));
        assert!(half.contains_fingerprints(&fps).iter().all(|&found| found));
        let fitted = half.fitted(0.001).unwrap();
        assert!(all.iter().all(|id| fitted.contains(id)));
        assert!(fitted.params().num_bits < whole.params().num_bits);
        assert!(
            whole
                .union(&Sharded::for_items(5_000, 0.001, seed, 2).unwrap())
                .is_err()
        );
    }

    #[test]
    fn a_shard_not_at_hand_answers_maybe() {
        let f = Sharded::for_items(100, 0.01, 7, 2).unwrap();
        let fps = [0, u64::MAX];
        let found = look_up(|s| (s == 0).then(|| &f.shards()[0]), 2, &fps);
        assert_eq!(found, vec![false, true]);
    }
}
