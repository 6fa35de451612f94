//! Circuit breakers: checks of a plan's numbers that stop a run (exit 3, nothing deleted) when
//! its inputs look incomplete rather than when they are provably wrong.
//!
//! The irreversible incidents of garbage collectors (Iceberg, Delta, lakeFS, Gitaly) came from
//! inputs that were valid but partial: an export that stopped halfway, a listing of the wrong
//! prefix. Such a run looks perfectly healthy except for its proportions, so each breaker
//! compares one proportion with a threshold:
//! - **delete fraction**: the candidates against the eligible blobs (a lost reference source
//!   turns most blobs into candidates);
//! - **source shrink**: each source's rows against the previous run's under the same plan root
//!   (a truncated export);
//! - **missing references**: distinct referenced ids that the listing does not hold, against
//!   all distinct referenced ids (a wrong prefix or an incomplete listing: the references then
//!   describe another store than the one being swept).
//!
//! A count at or below `floor` never trips a breaker: in a store of three blobs, one orphan is a
//! third of it, and that says nothing.
//!
//! Beside the proportions, two absolute **caps** bound what one unattended run may delete,
//! whatever the store's size: `--max-delete-count` blobs and `--max-delete-bytes` bytes (none by
//! default).

use crate::error::{Error, Result};
use crate::summary::{PlanSummary, SourceSummary};
use serde::{Deserialize, Serialize};

/// The thresholds of the breakers; a fraction of 1 turns its breaker off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub max_delete_fraction: f64,
    pub max_source_shrink: f64,
    pub max_missing_references: f64,
    pub floor: u64,
    /// Candidates and candidate bytes one run may delete at most (None: no cap).
    pub max_delete_count: Option<u64>,
    pub max_delete_bytes: Option<u64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            max_delete_fraction: 0.5,
            max_source_shrink: 0.5,
            max_missing_references: 0.01,
            floor: 100,
            max_delete_count: None,
            max_delete_bytes: None,
        }
    }
}

impl Thresholds {
    pub fn validate(&self) -> Result<()> {
        for (flag, value) in [
            ("--max-delete-fraction", self.max_delete_fraction),
            ("--max-source-shrink", self.max_source_shrink),
            ("--max-missing-references", self.max_missing_references),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(Error::usage(format!(
                    "{flag} must be a fraction in [0, 1], got {value}"
                )));
            }
        }
        Ok(())
    }

    /// Whether `count` out of `total` is above `fraction`, for a count above the floor.
    fn trips(&self, count: u64, total: u64, fraction: f64) -> bool {
        fraction < 1.0 && count > self.floor && count as f64 > fraction * total as f64
    }

    /// The reason to abort when the plan would delete too large a share of the eligible blobs.
    pub fn delete_fraction(&self, candidates: u64, eligible: u64) -> Option<String> {
        self.trips(candidates, eligible, self.max_delete_fraction)
            .then(|| {
                format!(
                    "circuit breaker: {candidates} of {eligible} eligible blobs ({:.1}%) would be deleted, \
                 above --max-delete-fraction {}: a reference source may be incomplete \
                 (if this is expected, rerun with a higher --max-delete-fraction)",
                    percent(candidates, eligible),
                    self.max_delete_fraction
                )
            })
    }

    /// The reason to abort when a source has lost too many rows since `previous`, the last
    /// planned run against the same store.
    pub fn source_shrink(
        &self,
        sources: &[SourceSummary],
        previous: &PlanSummary,
    ) -> Option<String> {
        sources.iter().find_map(|now| {
            let before = previous
                .sources
                .iter()
                .find(|s| s.spec.name == now.spec.name)?;
            let lost = before.rows.saturating_sub(now.rows);
            self.trips(lost, before.rows, self.max_source_shrink).then(|| {
                format!(
                    "circuit breaker: reference source {:?} has {} rows, {} fewer than the {} of run {} \
                     ({:.1}% lost, above --max-source-shrink {}): the export may be truncated \
                     (if the shrink is real, rerun with --max-source-shrink 1 once)",
                    now.spec.name,
                    now.rows,
                    lost,
                    before.rows,
                    previous.run_id,
                    percent(lost, before.rows),
                    self.max_source_shrink
                )
            })
        })
    }

    /// The reason to abort when the plan would delete more blobs or bytes than a cap allows.
    pub fn delete_caps(&self, candidates: u64, bytes: u64) -> Option<String> {
        let over = |cap: Option<u64>, value: u64| cap.filter(|&cap| value > cap);
        if let Some(cap) = over(self.max_delete_count, candidates) {
            return Some(format!(
                "circuit breaker: {candidates} blobs would be deleted, above --max-delete-count {cap} \
                 (if this is expected, rerun with a higher --max-delete-count)"
            ));
        }
        over(self.max_delete_bytes, bytes).map(|cap| {
            format!(
                "circuit breaker: {bytes} bytes would be deleted, above --max-delete-bytes {cap} \
                 (if this is expected, rerun with a higher --max-delete-bytes)"
            )
        })
    }

    /// The reason to abort when too many referenced ids name blobs the listing lacks.
    pub fn missing_references(&self, missing: u64, distinct: u64) -> Option<String> {
        self.trips(missing, distinct, self.max_missing_references)
            .then(|| {
                format!(
                    "circuit breaker: about {missing} of {distinct} distinct referenced blob ids \
                 ({:.1}%) name blobs absent from the listing, above --max-missing-references {}: \
                 the store prefix may be wrong or the listing incomplete",
                    percent(missing, distinct),
                    self.max_missing_references
                )
            })
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_and_the_fraction_both_decide() {
        let t = Thresholds::default();
        assert!(t.delete_fraction(1, 1).is_none(), "a single orphan");
        assert!(t.delete_fraction(100, 100).is_none(), "at the floor");
        assert!(t.delete_fraction(101, 202).is_none(), "half");
        assert!(t.delete_fraction(102, 202).is_some());
        let off = Thresholds {
            max_delete_fraction: 1.0,
            ..t
        };
        assert!(off.delete_fraction(1_000, 1_000).is_none());
        assert!(t.missing_references(101, 10_100).is_none());
        assert!(t.missing_references(101, 10_099).is_some());
    }

    #[test]
    fn the_caps_allow_up_to_their_value() {
        let t = Thresholds {
            max_delete_count: Some(10),
            max_delete_bytes: Some(1_000),
            ..Thresholds::default()
        };
        assert!(t.delete_caps(10, 1_000).is_none());
        let count = t.delete_caps(11, 0).expect("over the count");
        assert!(
            count.contains("11") && count.contains("--max-delete-count 10"),
            "{count}"
        );
        let bytes = t.delete_caps(1, 1_001).expect("over the bytes");
        assert!(
            bytes.contains("1001") && bytes.contains("--max-delete-bytes 1000"),
            "{bytes}"
        );
        assert!(
            Thresholds::default()
                .delete_caps(u64::MAX, u64::MAX)
                .is_none()
        );
    }
}
