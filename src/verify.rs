//! The check pass: one more read of the references, after the probe and before any deletion.
//!
//! It does two things per reference id. **Exact verification:** the candidates are held as
//! 64-bit fingerprints of their canonical spelling (8 bytes each, not a hash table of strings);
//! a reference whose fingerprint is among them is a suspect, and suspects are compared exactly,
//! by text, with the candidates. So a referenced candidate (a Bloom filter bug) is always
//! caught, and a fingerprint collision only costs that exact comparison. **Missing
//! references:** a reference to an eligible id that the listing's Bloom filter lacks names a
//! blob the listing did not see (counted for the breaker in [`crate::breakers`]).

use crate::error::{Error, Result};
use crate::filter::{Bloom, non_canonical};
use crate::functions::for_each_id;
use crate::generation::{GenerationRule, IdClass};
use crate::listing::BLOB_ID;
use crate::plan_dir::PlanDir;
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

/// Suspects kept for the exact comparison: more would mean a broken filter anyway.
const MAX_SUSPECTS: usize = 10_000;

/// The fingerprint of an id: a hash of its canonical spelling, stable within a process.
pub fn fingerprint(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    match non_canonical(id) {
        Some(canonical) => canonical.hash(&mut h),
        None => id.hash(&mut h),
    }
    h.finish()
}

/// What the pass over the references found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Non-null reference ids and reference rows read.
    pub ids: u64,
    pub rows: u64,
    /// Reference ids naming an eligible id, and those of them the listing lacks.
    pub eligible_references: u64,
    pub missing_references: u64,
    /// References whose fingerprint is a candidate's: to compare exactly.
    pub suspects: Vec<String>,
}

impl Checked {
    fn add(&mut self, o: Checked) {
        self.ids += o.ids;
        self.rows += o.rows;
        self.eligible_references += o.eligible_references;
        self.missing_references += o.missing_references;
        let room = MAX_SUSPECTS.saturating_sub(self.suspects.len());
        self.suspects.extend(o.suspects.into_iter().take(room));
    }
}

/// Reads every reference once, partition by partition: suspects among `candidates`, and with
/// `listing`, the references to eligible ids it lacks.
pub async fn check_references(
    references: DataFrame,
    candidates: Option<Arc<HashSet<u64>>>,
    listing: Option<Arc<Bloom>>,
    rule: GenerationRule,
) -> Result<Checked> {
    let partitions = references
        .select_columns(&[BLOB_ID])?
        .execute_stream_partitioned()
        .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in partitions {
        let (candidates, listing) = (candidates.clone(), listing.clone());
        tasks.spawn(async move {
            let mut c = Checked::default();
            while let Some(batch) = stream.try_next().await? {
                c.rows += batch.num_rows() as u64;
                for_each_id(batch.column(0), |id| {
                    let Some(id) = id else { return };
                    c.ids += 1;
                    // Candidates are eligible, under every spelling: other ids need no lookup.
                    if rule.classify(id) != IdClass::Eligible {
                        return;
                    }
                    c.eligible_references += 1;
                    if let Some(set) = &candidates
                        && set.contains(&fingerprint(id))
                        && c.suspects.len() < MAX_SUSPECTS
                    {
                        c.suspects.push(id.to_string());
                    }
                    if let Some(listing) = &listing
                        && !listing.contains(id)
                    {
                        c.missing_references += 1;
                    }
                })?;
            }
            Ok::<_, Error>(c)
        });
    }
    let mut checked = Checked::default();
    while let Some(done) = tasks.join_next().await {
        checked.add(done.map_err(|e| Error::runtime(format!("reference check failed: {e}")))??);
    }
    Ok(checked)
}

/// The fingerprints of the ids in `batches`.
pub async fn fingerprints(dir: &PlanDir, batches: &[String]) -> Result<HashSet<u64>> {
    let mut set = HashSet::new();
    for name in batches {
        set.extend(
            dir.read_batch(name)
                .await?
                .iter()
                .map(|(id, _)| fingerprint(id)),
        );
    }
    Ok(set)
}

/// The candidates of `batches` that one of `suspects` names, exactly (canonical spellings
/// compared as text); at most `limit` of them.
pub async fn confirm(
    dir: &PlanDir,
    batches: &[String],
    suspects: &[String],
    limit: usize,
) -> Result<Vec<String>> {
    if suspects.is_empty() {
        return Ok(Vec::new());
    }
    let canonical = |id: &str| non_canonical(id).unwrap_or_else(|| id.to_string());
    let suspects: HashSet<String> = suspects.iter().map(|s| canonical(s)).collect();
    let mut found = Vec::new();
    for name in batches {
        for (id, _) in dir.read_batch(name).await? {
            if suspects.contains(&canonical(&id)) && found.len() < limit {
                found.push(id);
            }
        }
    }
    Ok(found)
}

/// The candidates of `batches` that some reference names, exactly; at most `limit` of them.
pub async fn verify_candidates(
    references: DataFrame,
    dir: &PlanDir,
    batches: &[String],
    rule: GenerationRule,
    limit: usize,
) -> Result<Vec<String>> {
    let set = Arc::new(fingerprints(dir, batches).await?);
    let checked = check_references(references, Some(set), None, rule).await?;
    confirm(dir, batches, &checked.suspects, limit).await
}
