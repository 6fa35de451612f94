//! A HyperLogLog sketch of the references' distinct fingerprints, which sizes the filter: the
//! in-process spill fills one as it reads, a cluster merges them with the `blobgc_distinct`
//! aggregate, so the same references give the same size, and so the same filter, either way.

use crate::error::{Error, Result};

/// Registers of a [`Sketch`]: 2^14, a standard error of 0.8%, as DataFusion's `approx_distinct`
/// (whose sketch is not public).
const SKETCH_BITS: u32 = 14;

/// A HyperLogLog sketch of fingerprints, which are already well-spread hashes, with Ertl's
/// estimator ("New cardinality estimation algorithms for HyperLogLog sketches", 2017).
#[derive(Clone, Debug)]
pub struct Sketch {
    registers: Vec<u8>,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            registers: vec![0; 1 << SKETCH_BITS],
        }
    }
}

impl Sketch {
    /// Counts a fingerprint: its top bits pick a register, which keeps the longest run of
    /// leading zeros seen in the rest, plus one.
    #[inline]
    pub fn add(&mut self, fp: u64) {
        let register = (fp >> (64 - SKETCH_BITS)) as usize;
        // A stop bit caps the run at the bits there are.
        let rest = (fp << SKETCH_BITS) | (1 << (SKETCH_BITS - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if let Some(r) = self.registers.get_mut(register) {
            *r = (*r).max(rank);
        }
    }

    /// The registers, to travel as an aggregate's state.
    pub fn registers(&self) -> &[u8] {
        &self.registers
    }

    /// A sketch of `registers` another sketch gave; refused unless as many as a sketch has.
    pub fn from_registers(registers: &[u8]) -> Result<Sketch> {
        if registers.len() != 1 << SKETCH_BITS {
            return Err(Error::runtime(format!(
                "a distinct-count sketch of {} registers, where a sketch has {}",
                registers.len(),
                1 << SKETCH_BITS
            )));
        }
        Ok(Sketch {
            registers: registers.to_vec(),
        })
    }

    pub fn merge(&mut self, other: &Sketch) {
        for (mine, theirs) in self.registers.iter_mut().zip(&other.registers) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// The distinct fingerprints added, estimated.
    pub fn estimate(&self) -> u64 {
        const Q: usize = 64 - SKETCH_BITS as usize;
        let mut histogram = [0u32; Q + 2];
        for &r in &self.registers {
            histogram[usize::from(r).min(Q + 1)] += 1;
        }
        let m = self.registers.len() as f64;
        let mut z = m * tau((m - f64::from(histogram[Q + 1])) / m);
        for &count in histogram[1..=Q].iter().rev() {
            z = (z + f64::from(count)) * 0.5;
        }
        z += m * sigma(f64::from(histogram[0]) / m);
        (0.5 / std::f64::consts::LN_2 * m * m / z).round() as u64
    }
}

/// Ertl's sigma: the share of empty registers' part of the estimate.
fn sigma(x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut x, mut y, mut z) = (x, 1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if before == z {
            return z;
        }
    }
}

/// Ertl's tau: the share of saturated registers' part of the estimate.
fn tau(x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut x, mut y, mut z) = (x, 1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if before == z {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::fingerprint;

    #[test]
    fn the_sketch_estimates_distinct_fingerprints_within_its_error() {
        for distinct in [0u64, 1, 100, 20_000, 300_000, 2_000_000] {
            let (mut a, mut b) = (Sketch::default(), Sketch::default());
            // Every id twice, split over two sketches as over two partitions.
            for i in 0..distinct * 2 {
                let fp = fingerprint(&format!("1_7_{}", i % distinct.max(1)));
                if i % 2 == 0 { a.add(fp) } else { b.add(fp) }
            }
            a.merge(&b);
            let estimate = a.estimate() as f64;
            let error = (estimate - distinct as f64).abs() / (distinct as f64).max(1.0);
            assert!(error < 0.03, "{distinct}: estimated {estimate}");
        }
    }
}
