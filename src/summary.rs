//! What a mark phase found, stored as the plan's `summary.json`: the sweep, the report, the
//! breakers and the plan root's history all start from it.
//!
//! The three modes share it: `run`/`plan` select their candidates by the generation rule over a
//! listing, `incremental` and `uploads` by a table whose own rules chose them
//! ([`Selection`]). The sweep re-applies the generation rule to every id of a batch only when
//! the plan selected by it.

use crate::blob_id::BlobId;
use crate::filter::FilterParams;
use crate::generation::GenerationRule;
use crate::references::SourceSpec;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// How many malformed ids a plan names.
pub const MALFORMED_EXAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanStatus {
    /// The batches may be swept.
    Planned,
    /// A safety check failed: nothing may be deleted.
    Aborted,
}

/// How a plan chose its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Eligible under the generation rule and in no reference (`run`, `plan`): the sweep checks
    /// every id against the same rule again.
    Generations {
        family: u32,
        generation_duration_seconds: u64,
        current_generation: u64,
    },
    /// Chosen by a table's own rules (`incremental`, `uploads`).
    Table,
}

impl Selection {
    /// The rule the sweep re-applies, for a plan selected by generations.
    pub fn rule(&self) -> Option<GenerationRule> {
        match *self {
            Selection::Generations {
                family,
                current_generation,
                ..
            } => Some(GenerationRule {
                family,
                current_generation,
            }),
            Selection::Table => None,
        }
    }
}

/// Everything a plan found, stored as `summary.json`; the sweep and the report start from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Unique per plan; prefixes its batch names, so plans racing in one directory can never
    /// sweep each other's batches against the wrong store.
    pub run_id: String,
    pub status: PlanStatus,
    pub abort_reason: Option<String>,
    pub store: String,
    pub inventory: Option<String>,
    pub sources: Vec<SourceSummary>,
    pub now: DateTime<Utc>,
    pub selection: Selection,
    pub salt: String,
    pub filter: Option<FilterSummary>,
    pub counts: PlanCounts,
    pub batch_size: usize,
    pub batches: Vec<String>,
    pub references_seconds: f64,
    pub filter_seconds: f64,
    pub listing_seconds: f64,
    /// Whether the candidates were checked exactly against every reference.
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub verify_seconds: f64,
    /// Where the sweep takes its lease, and for how long.
    #[serde(default)]
    pub plan_root: Option<String>,
    #[serde(default)]
    pub lease_ttl_seconds: u64,
    /// Candidates are moved here instead of deleted.
    #[serde(default)]
    pub quarantine: Option<String>,
}

impl PlanSummary {
    /// An empty plan of run `run_id` against `store`, to fill in.
    pub fn new(run_id: &str, store: String, selection: Selection, now: DateTime<Utc>) -> Self {
        PlanSummary {
            run_id: run_id.to_string(),
            status: PlanStatus::Planned,
            abort_reason: None,
            store,
            inventory: None,
            sources: Vec::new(),
            now,
            selection,
            salt: String::new(),
            filter: None,
            counts: PlanCounts::default(),
            batch_size: 0,
            batches: Vec::new(),
            references_seconds: 0.0,
            filter_seconds: 0.0,
            listing_seconds: 0.0,
            verified: false,
            verify_seconds: 0.0,
            plan_root: None,
            lease_ttl_seconds: 0,
            quarantine: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceSummary {
    #[serde(flatten)]
    pub spec: SourceSpec,
    pub rows: u64,
    /// For a database table: when the snapshot it was read in was taken (the database's UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl SourceSummary {
    /// Id values the source holds, nulls included: rows x id columns.
    pub fn id_values(&self) -> u64 {
        self.rows * self.spec.columns.len() as u64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterSummary {
    /// The hashing of every shard, and all shards' bits together.
    #[serde(flatten)]
    pub params: FilterParams,
    /// Shards the filter is cut into (plans from before shards had one).
    #[serde(default = "one_shard")]
    pub shards: u32,
    pub expected_items: u64,
    pub requested_fpp: f64,
    pub max_fpp: f64,
    pub estimated_fpp: f64,
    pub fill_ratio: f64,
    /// Distinct ids the filter holds (estimated from its bits), and the size it was built at
    /// before folding to them.
    #[serde(default)]
    pub estimated_items: u64,
    #[serde(default)]
    pub built_bits: u64,
    pub location: String,
    /// SHA-256 of the encoded filter: every process loading it checks it.
    #[serde(default)]
    pub checksum: String,
}

fn one_shard() -> u32 {
    1
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanCounts {
    pub reference_count: u64,
    pub null_reference_count: u64,
    pub blob_count: u64,
    pub eligible_blob_count: u64,
    pub eligible_bytes: u64,
    pub malformed_id_count: u64,
    pub malformed_ids: Vec<String>,
    pub candidate_count: u64,
    pub candidate_bytes: u64,
    /// Listed blobs that a reference names (by the filter: false positives included).
    #[serde(default)]
    pub referenced_blob_count: u64,
    /// Distinct referenced ids (estimated from the filter's bits), and of them, those naming a
    /// blob the listing lacks: distinct references less the referenced listed blobs, corrected
    /// for the filter's false positives.
    #[serde(default)]
    pub distinct_reference_count: u64,
    #[serde(default)]
    pub missing_reference_count: u64,
    /// Listed ids of the configured family from a generation after the current one (kept).
    #[serde(default)]
    pub future_id_count: u64,
    #[serde(default)]
    pub future_ids: Vec<String>,
    /// The candidates by the family and generation their ids parse to (ids that parse to none
    /// are counted in `candidate_count` only).
    #[serde(default)]
    pub candidates_by_generation: Vec<GenerationCount>,
}

/// Candidates and their bytes, of one generation of one family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationCount {
    pub family: u32,
    pub generation: u64,
    pub candidates: u64,
    pub bytes: u64,
}

/// Candidates counted by (family, generation), as they are written or listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ByGeneration(BTreeMap<(u32, u64), (u64, u64)>);

impl ByGeneration {
    /// Counts a candidate; false when its id parses to no generation.
    pub fn add(&mut self, id: &str, size: u64) -> bool {
        let Ok(parsed) = BlobId::parse(id) else {
            return false;
        };
        let c = self
            .0
            .entry((parsed.family, parsed.generation))
            .or_default();
        c.0 += 1;
        c.1 += size;
        true
    }

    pub fn merge(&mut self, counts: &[GenerationCount]) {
        for g in counts {
            let c = self.0.entry((g.family, g.generation)).or_default();
            c.0 += g.candidates;
            c.1 += g.bytes;
        }
    }

    /// The counts, by family then generation.
    pub fn counts(&self) -> Vec<GenerationCount> {
        self.0
            .iter()
            .map(
                |(&(family, generation), &(candidates, bytes))| GenerationCount {
                    family,
                    generation,
                    candidates,
                    bytes,
                },
            )
            .collect()
    }
}

impl PlanCounts {
    /// Adds what another partition of the probe counted (the reference counts are the plan's).
    pub fn add(&mut self, o: PlanCounts) {
        self.blob_count += o.blob_count;
        self.eligible_blob_count += o.eligible_blob_count;
        self.eligible_bytes += o.eligible_bytes;
        self.malformed_id_count += o.malformed_id_count;
        self.candidate_count += o.candidate_count;
        self.candidate_bytes += o.candidate_bytes;
        self.referenced_blob_count += o.referenced_blob_count;
        self.future_id_count += o.future_id_count;
        let mut generations = ByGeneration::default();
        generations.merge(&self.candidates_by_generation);
        generations.merge(&o.candidates_by_generation);
        self.candidates_by_generation = generations.counts();
        for (mine, theirs) in [
            (&mut self.malformed_ids, o.malformed_ids),
            (&mut self.future_ids, o.future_ids),
        ] {
            let room = MALFORMED_EXAMPLES.saturating_sub(mine.len());
            mine.extend(theirs.into_iter().take(room));
        }
    }
}

impl PlanSummary {
    /// Reads a stored summary, of this version or of one before plans recorded their
    /// [`Selection`] (then three top-level keys and `ids_from_table` said it): a plan an older
    /// blobgc left partial still resumes, and older runs stay the breakers' baseline.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<PlanSummary> {
        let mut value: Value = serde_json::from_slice(bytes)?;
        if let Value::Object(keys) = &mut value
            && !keys.contains_key("selection")
        {
            let table = keys.remove("ids_from_table") == Some(Value::Bool(true));
            let mut rule = Map::new();
            for key in [
                "family",
                "generation_duration_seconds",
                "current_generation",
            ] {
                rule.insert(key.into(), keys.remove(key).unwrap_or(Value::Null));
            }
            let selection = match table {
                true => Value::String("table".into()),
                false => Value::Object(Map::from_iter([("generations".into(), rule.into())])),
            };
            keys.insert("selection".into(), selection);
        }
        serde_json::from_value(value)
    }
}

/// A fresh run id: the UTC time, then randomness.
pub fn new_run_id() -> String {
    format!(
        "{}-{:08x}",
        Utc::now().format("%Y%m%dT%H%M%S%3f"),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(selection: Selection) -> PlanSummary {
        let now = DateTime::from_timestamp(1_700_000_000, 0).expect("a time");
        PlanSummary::new("run", "memory://s".into(), selection, now)
    }

    /// The summary as the version before this one wrote it.
    fn older(s: &PlanSummary) -> Vec<u8> {
        let mut v = serde_json::to_value(s).expect("encode");
        let keys = v.as_object_mut().expect("an object");
        let (table, rule) = match keys.remove("selection").expect("selection") {
            Value::Object(g) => (false, g["generations"].clone()),
            _ => (
                true,
                serde_json::json!({"family": 0, "generation_duration_seconds": 0, "current_generation": 0}),
            ),
        };
        keys.insert("ids_from_table".into(), table.into());
        for (k, v) in rule.as_object().expect("rule") {
            keys.insert(k.clone(), v.clone());
        }
        serde_json::to_vec(&v).expect("encode")
    }

    #[test]
    fn summaries_of_this_version_and_the_one_before_read_alike() {
        for selection in [
            Selection::Generations {
                family: 1,
                generation_duration_seconds: 86_400,
                current_generation: 19_675,
            },
            Selection::Table,
        ] {
            let s = summary(selection);
            let now = serde_json::to_vec(&s).expect("encode");
            assert_eq!(
                PlanSummary::from_json(&now)
                    .expect("this version")
                    .selection,
                selection
            );
            assert_eq!(
                PlanSummary::from_json(&older(&s))
                    .expect("the one before")
                    .selection,
                selection
            );
        }
    }
}
