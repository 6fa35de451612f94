//! The check pass: one more read of the references, after the probe and before any deletion.
//!
//! **Exact verification:** the candidates are held as 64-bit fingerprints of their canonical
//! spelling (8 bytes each, not a hash table of strings); a reference whose fingerprint is among
//! them is a suspect, and suspects are compared exactly, by text, with the candidates. So a
//! referenced candidate (a Bloom filter bug) is always caught, and a fingerprint collision only
//! costs that exact comparison. The exact strategy, which builds no filter, also counts its
//! distinct references here (for the missing-references breaker, [`crate::breakers`]).

use crate::error::{Error, Result};
use crate::filter::{Bloom, FilterParams, fully_canonical, id_hash};
use crate::functions::for_each_id;
use crate::generation::{GenerationRule, IdClass};
use crate::listing::BLOB_ID;
use crate::plan_dir::PlanDir;
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use std::collections::HashSet;
use std::sync::Arc;

/// Suspects kept for the exact comparison: more would mean a broken filter anyway.
pub const MAX_SUSPECTS: usize = 10_000;

/// The fingerprint of an id: a hash of its canonical spelling.
pub fn fingerprint(id: &str) -> u64 {
    id_hash(0, &fully_canonical(id))
}

/// Fingerprints are hashes already: the set only needs a cheap mix of them.
pub type Fingerprints = HashSet<u64, foldhash::fast::FixedState>;

/// One bit per slot of the candidates' fingerprints (their top bits), at most 1 MiB: small
/// enough to stay in a core's cache, where the set (16 MB at 10M listed blobs) is a cache miss
/// per lookup. Most references are no candidate and stop here.
struct Screen {
    bits: Vec<u64>,
    shift: u32,
}

/// 8 Mbit: at 1.2M candidates, 86% of the references stop at the screen.
const SCREEN_MAX_BITS: u64 = 1 << 23;

impl Screen {
    fn new(set: &Fingerprints) -> Screen {
        let slots = (set.len() as u64 * 8)
            .next_power_of_two()
            .clamp(64, SCREEN_MAX_BITS);
        let mut screen = Screen {
            bits: vec![0; (slots / 64) as usize],
            shift: 64 - slots.trailing_zeros(),
        };
        for &fp in set {
            let i = screen.slot(fp);
            screen.bits[i >> 6] |= 1 << (i & 63);
        }
        screen
    }

    fn slot(&self, fp: u64) -> usize {
        (fp >> self.shift) as usize
    }

    fn may_hold(&self, fp: u64) -> bool {
        let i = self.slot(fp);
        self.bits[i >> 6] & (1 << (i & 63)) != 0
    }
}

/// What the pass over the references found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Non-null reference ids and reference rows read.
    pub ids: u64,
    pub rows: u64,
    /// References whose fingerprint is a candidate's: to compare exactly.
    pub suspects: Vec<String>,
    /// Every reference id, when asked for: the distinct ids are estimated from its bits.
    pub distinct: Option<Bloom>,
}

impl Checked {
    fn add(&mut self, o: Checked) -> Result<()> {
        self.ids += o.ids;
        self.rows += o.rows;
        match (&mut self.distinct, o.distinct) {
            (Some(mine), Some(theirs)) => mine.union_words(&theirs.to_le_bytes())?,
            (None, theirs) => self.distinct = theirs,
            (Some(_), None) => {}
        }
        let room = MAX_SUSPECTS.saturating_sub(self.suspects.len());
        self.suspects.extend(o.suspects.into_iter().take(room));
        Ok(())
    }
}

/// Reads every reference once, partition by partition: suspects among `candidates`, and with
/// `distinct`, a filter of every reference id.
pub async fn check_references(
    references: DataFrame,
    candidates: Option<Arc<Fingerprints>>,
    distinct: Option<FilterParams>,
    rule: GenerationRule,
) -> Result<Checked> {
    let partitions = references
        .select_columns(&[BLOB_ID])?
        .execute_stream_partitioned()
        .await?;
    let candidates = candidates.map(|set| (Arc::new(Screen::new(&set)), set));
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in partitions {
        let candidates = candidates.clone();
        tasks.spawn(async move {
            let mut c = Checked {
                distinct: distinct.map(Bloom::new).transpose()?,
                ..Checked::default()
            };
            while let Some(batch) = stream.try_next().await? {
                c.rows += batch.num_rows() as u64;
                for_each_id(batch.column(0), |id| {
                    let Some(id) = id else { return };
                    c.ids += 1;
                    if let Some(d) = &mut c.distinct {
                        d.insert(id);
                    }
                    let Some((screen, set)) = &candidates else {
                        return;
                    };
                    let fp = fingerprint(id);
                    // Candidates are eligible, under every spelling: other ids need no lookup.
                    if screen.may_hold(fp)
                        && rule.classify(id) == IdClass::Eligible
                        && set.contains(&fp)
                        && c.suspects.len() < MAX_SUSPECTS
                    {
                        c.suspects.push(id.to_string());
                    }
                })?;
            }
            Ok::<_, Error>(c)
        });
    }
    let mut checked = Checked::default();
    while let Some(done) = tasks.join_next().await {
        checked.add(done.map_err(|e| Error::runtime(format!("reference check failed: {e}")))??)?;
    }
    Ok(checked)
}

/// The fingerprints of the ids in `batches`.
pub async fn fingerprints(dir: &PlanDir, batches: &[String]) -> Result<Fingerprints> {
    let mut set = Fingerprints::default();
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
    let canonical = |id: &str| fully_canonical(id).into_owned();
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
