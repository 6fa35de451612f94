//! The run report (README, "Report and exit codes"): JSON for orchestrators, a few lines for people.

use crate::error::Result;
use crate::outcome::Outcome;
pub use crate::outcome::Status;
use crate::plan_dir::PlanDir;
use crate::summary::{PlanCounts, PlanStatus, PlanSummary, Selection};
use crate::sweep::{FailedBatch, SweepMetrics};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub status: Status,
    pub abort_reason: Option<String>,
    pub dry_run: bool,
    pub store: String,
    pub plan: String,
    pub reference_source_count: usize,
    /// Each source's rows, by name: what the source-shrink breaker compares between runs.
    pub source_rows: BTreeMap<String, u64>,
    /// `reference_count`, `blob_count`, `eligible_blob_count`, `candidate_count`, ...
    #[serde(flatten)]
    pub counts: PlanCounts,
    pub gced_blob_count: u64,
    pub gced_bytes: u64,
    pub previously_gced_blob_count: u64,
    pub previously_gced_bytes: u64,
    pub error_count: u64,
    /// Batches a stop (SIGTERM, SIGINT) left unstarted: `blobgc sweep --plan` resumes them.
    pub stopped_batch_count: u64,
    pub failed_batches: Vec<FailedBatch>,
    pub batch_count: u64,
    pub skipped_batch_count: u64,
    pub bloom_filter_expected_blob_count: u64,
    pub bloom_filter_associated_probability: f64,
    pub bloom_filter_estimated_fpp: f64,
    pub bloom_filter_bits: u64,
    /// Distinct referenced ids, estimated from the merged filter's bits.
    pub bloom_filter_estimated_distinct: u64,
    pub bloom_filter_hashes: u32,
    pub bloom_filter_shards: u32,
    pub salt: String,
    pub now: String,
    pub current_generation: u64,
    pub family: u32,
    pub generation_duration_seconds: u64,
    pub references_seconds: f64,
    pub filter_seconds: f64,
    pub listing_seconds: f64,
    /// Whether the candidates were checked exactly against every reference (`--verify`).
    pub verified: bool,
    pub verify_seconds: f64,
    pub sweep_seconds: f64,
    pub total_seconds: f64,
}

impl Report {
    /// The report of a plan, and of its sweep when one ran.
    pub fn new(
        plan: &PlanSummary,
        plan_location: String,
        sweep: Option<&SweepMetrics>,
        dry_run: bool,
    ) -> Self {
        let s = sweep.cloned().unwrap_or_default();
        let status = match (plan.status, s.error_count + s.stopped_batch_count) {
            (PlanStatus::Aborted, _) => Status::Aborted,
            (PlanStatus::Planned, 0) => Status::Completed,
            (PlanStatus::Planned, _) => Status::Partial,
        };
        let filter = plan.filter.as_ref();
        // A plan a table selected has no generations to report.
        let generations = match plan.selection {
            Selection::Generations {
                family,
                generation_duration_seconds,
                current_generation,
            } => (family, generation_duration_seconds, current_generation),
            Selection::Table => (0, 0, 0),
        };
        Report {
            run_id: plan.run_id.clone(),
            status,
            abort_reason: plan.abort_reason.clone(),
            dry_run,
            store: plan.store.clone(),
            plan: plan_location,
            reference_source_count: plan.sources.len(),
            source_rows: plan
                .sources
                .iter()
                .map(|s| (s.spec.name.clone(), s.rows))
                .collect(),
            counts: plan.counts.clone(),
            gced_blob_count: s.gced_blob_count,
            gced_bytes: s.gced_bytes,
            previously_gced_blob_count: s.previously_gced_blob_count,
            previously_gced_bytes: s.previously_gced_bytes,
            error_count: s.error_count,
            stopped_batch_count: s.stopped_batch_count,
            failed_batches: s.failed_batches,
            batch_count: plan.batches.len() as u64,
            skipped_batch_count: s.skipped_batch_count,
            bloom_filter_expected_blob_count: filter.map_or(0, |f| f.expected_items),
            bloom_filter_associated_probability: filter.map_or(0.0, |f| f.requested_fpp),
            bloom_filter_estimated_fpp: filter.map_or(0.0, |f| f.estimated_fpp),
            bloom_filter_bits: filter.map_or(0, |f| f.params.num_bits),
            bloom_filter_estimated_distinct: filter.map_or(0, |f| f.estimated_items),
            bloom_filter_hashes: filter.map_or(0, |f| f.params.num_hashes),
            bloom_filter_shards: filter.map_or(0, |f| f.shards),
            salt: plan.salt.clone(),
            now: rfc3339(plan.now),
            current_generation: generations.2,
            family: generations.0,
            generation_duration_seconds: generations.1,
            references_seconds: plan.references_seconds,
            filter_seconds: plan.filter_seconds,
            listing_seconds: plan.listing_seconds,
            verified: plan.verified,
            verify_seconds: plan.verify_seconds,
            sweep_seconds: s.sweep_seconds,
            total_seconds: plan.references_seconds
                + plan.filter_seconds
                + plan.listing_seconds
                + plan.verify_seconds
                + s.sweep_seconds,
        }
    }
}

impl Report {
    /// The report of the plan in `dir` as it stands: what it planned, and what its sweeps
    /// deleted so far (from the batches' done markers).
    pub async fn of_plan(dir: &PlanDir) -> Result<Report> {
        let summary = dir.read_summary().await?;
        let done = dir.done().await?;
        let swept: Vec<String> = summary
            .batches
            .iter()
            .filter(|b| done.contains(*b))
            .cloned()
            .collect();
        let outcome = dir.outcomes(&swept).await?;
        let metrics = SweepMetrics {
            batch_count: summary.batches.len() as u64,
            gced_blob_count: outcome.deleted,
            gced_bytes: outcome.bytes,
            ..SweepMetrics::default()
        };
        Ok(Report::new(
            &summary,
            dir.location.url(),
            Some(&metrics),
            false,
        ))
    }
}

impl Outcome for Report {
    fn exit_code(&self) -> i32 {
        self.status.exit_code()
    }

    fn human(&self) -> String {
        let mut out = match self.status {
            Status::Aborted => format!(
                "blobgc: ABORTED, nothing deleted: {}\n",
                self.abort_reason.as_deref().unwrap_or("see the report")
            ),
            _ if self.dry_run => format!(
                "blobgc: dry run: {} of {} listed blobs would be deleted ({})\n",
                self.counts.candidate_count,
                self.counts.blob_count,
                bytes(self.counts.candidate_bytes)
            ),
            status => format!(
                "blobgc: {}: deleted {} of {} listed blobs, {} reclaimed{}\n",
                format!("{status:?}").to_lowercase(),
                self.gced_blob_count,
                self.counts.blob_count,
                bytes(self.gced_bytes),
                match (self.error_count, self.stopped_batch_count) {
                    (0, 0) => String::new(),
                    (0, stopped) => format!(", stopped with {stopped} batch(es) left"),
                    (failed, _) => format!(", {failed} failed batch(es)"),
                }
            ),
        };
        out += &format!(
            "  references: {} source(s), {} ids ({} null); listed {} blobs, {} eligible, {} malformed, {} candidates\n",
            self.reference_source_count,
            self.counts.reference_count,
            self.counts.null_reference_count,
            self.counts.blob_count,
            self.counts.eligible_blob_count,
            self.counts.malformed_id_count,
            self.counts.candidate_count
        );
        out += &format!(
            "  filter: {} bits in {} shard(s), {} hashes, estimated fpp {:.5} (requested {}); salt {}; generation {} (family {}) at {}\n",
            self.bloom_filter_bits,
            self.bloom_filter_shards,
            self.bloom_filter_hashes,
            self.bloom_filter_estimated_fpp,
            self.bloom_filter_associated_probability,
            self.salt,
            self.current_generation,
            self.family,
            self.now
        );
        for f in &self.failed_batches {
            out += &format!("  failed batch {}: {}\n", f.batch, f.error);
        }
        out += &format!(
            "  plan {} ({} batches, {}); seconds: references {:.2}, filter {:.2}, listing {:.2}, verify {:.2}, sweep {:.2}\n",
            self.plan,
            self.batch_count,
            if self.verified {
                "candidates verified exactly"
            } else {
                "not verified exactly"
            },
            self.references_seconds,
            self.filter_seconds,
            self.listing_seconds,
            self.verify_seconds,
            self.sweep_seconds
        );
        if self.dry_run && self.status != Status::Aborted {
            out += &format!("  review the plan: blobgc show --plan {}\n", self.plan);
        }
        out
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
