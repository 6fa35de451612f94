//! The check pass, after the probe and before any deletion.
//!
//! **Exact verification:** the candidates are held as 64-bit fingerprints of their canonical
//! spelling (8 bytes each, not a hash table of strings); a reference whose fingerprint is among
//! them is a suspect, and suspects are compared exactly, by text, with the candidates. So a
//! referenced candidate (a Bloom filter bug) is always caught, and a fingerprint collision only
//! costs that exact comparison. In-process, every reference's fingerprint is already in the
//! run's spill ([`crate::spill`]), which is read instead of the references
//! ([`spill_matches`]); only a match reads the references again ([`check_references`]) for the
//! suspects' text. The fingerprint's seed is fixed, not the run's, so a filter built or probed
//! under a wrong seed cannot hide its references from this check. The exact strategy, which builds no filter, also counts its
//! distinct references in [`check_references`] (for the missing-references breaker,
//! [`crate::breakers`]).

use crate::error::{Error, Result};
use crate::filter::{Bloom, FilterParams, fingerprint, fully_canonical};
use crate::functions::for_each_id;
use crate::listing::BLOB_ID;
use crate::plan_dir::PlanDir;
use crate::spill::Fingerprinted;
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use std::collections::HashSet;
use std::sync::Arc;

/// Suspects kept for the exact comparison: more would mean a broken filter anyway.
pub const MAX_SUSPECTS: usize = 10_000;

/// The candidates' fingerprints as the probe collects them (duplicates possible, unordered).
pub type Fingerprints = Vec<u64>;

/// The candidates' fingerprints, for lookups: a screen of one bit per slot (their top bits),
/// 8 to 16 bits per candidate up to 8 MiB, in front of an open-addressing table (16 MB at 1.2M
/// candidates, 128 MB at 6M) where a lookup is a cache miss. Most references are no candidate
/// and stop at the screen; the others are looked up a batch at a time, their slots fetched
/// ahead.
struct Candidates {
    screen: Vec<u64>,
    screen_shift: u32,
    /// Linear probing by the top bits; 0 marks an empty slot, so fingerprints are stored (and
    /// looked up) with 0 read as 1: one more way to collide, settled by the exact comparison.
    slots: Vec<u64>,
    slot_shift: u32,
}

/// 64 Mbit: at 6M candidates, 91% of the references stop at the screen (52% at the 8 Mbit it
/// once had, which kept it in a core's cache: 50M listed blobs verified in 1.2 s, not 2.5).
const SCREEN_MAX_BITS: u64 = 1 << 26;

/// References whose table slot is fetched while earlier ones are looked up.
const LOOKAHEAD: usize = 8;

impl Candidates {
    fn new(fingerprints: &[u64]) -> Candidates {
        let n = fingerprints.len() as u64;
        let screen_bits = (n * 8).next_power_of_two().clamp(64, SCREEN_MAX_BITS);
        // At most two thirds full: short probe runs.
        let slots = (n + n / 2).next_power_of_two().max(64);
        let mut set = Candidates {
            screen: vec![0; (screen_bits / 64) as usize],
            screen_shift: 64 - screen_bits.trailing_zeros(),
            slots: vec![0; slots as usize],
            slot_shift: 64 - slots.trailing_zeros(),
        };
        for &fp in fingerprints {
            let fp = fp.max(1);
            let bit = (fp >> set.screen_shift) as usize;
            set.screen[bit >> 6] |= 1 << (bit & 63);
            let mut i = set.slot(fp);
            while set.slots[i] != 0 && set.slots[i] != fp {
                i = (i + 1) & (set.slots.len() - 1);
            }
            set.slots[i] = fp;
        }
        set
    }

    fn slot(&self, fp: u64) -> usize {
        (fp >> self.slot_shift) as usize
    }

    fn screened(&self, fp: u64) -> bool {
        let bit = (fp.max(1) >> self.screen_shift) as usize;
        self.screen[bit >> 6] & (1 << (bit & 63)) != 0
    }

    fn contains(&self, fp: u64) -> bool {
        let fp = fp.max(1);
        let mut i = self.slot(fp);
        loop {
            match self.slots[i] {
                0 => return false,
                x if x == fp => return true,
                _ => i = (i + 1) & (self.slots.len() - 1),
            }
        }
    }

    /// Indexes of `fingerprints` that are candidates'.
    fn matches(&self, fingerprints: &[u64], out: &mut Vec<usize>) {
        let screened: Vec<usize> = (0..fingerprints.len())
            .filter(|&i| self.screened(fingerprints[i]))
            .collect();
        for (j, &i) in screened.iter().enumerate() {
            if let Some(&ahead) = screened.get(j + LOOKAHEAD) {
                crate::filter::prefetch(&self.slots[self.slot(fingerprints[ahead].max(1))]);
            }
            if self.contains(fingerprints[i]) {
                out.push(i);
            }
        }
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
            (Some(mine), Some(theirs)) => mine.union(&theirs)?,
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
) -> Result<Checked> {
    let partitions = references
        .select_columns(&[BLOB_ID])?
        .execute_stream_partitioned()
        .await?;
    let candidates = candidates.map(|fps| Arc::new(Candidates::new(&fps)));
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in partitions {
        let candidates = candidates.clone();
        tasks.spawn(async move {
            let mut c = Checked {
                distinct: distinct.map(Bloom::new).transpose()?,
                ..Checked::default()
            };
            let (mut fps, mut found) = (Vec::new(), Vec::new());
            while let Some(batch) = stream.try_next().await? {
                c.rows += batch.num_rows() as u64;
                let mut ids: Vec<&str> = Vec::with_capacity(batch.num_rows());
                for_each_id(batch.column(0), |id| ids.extend(id))?;
                c.ids += ids.len() as u64;
                if let Some(d) = &mut c.distinct {
                    let hashes: Vec<u64> = ids.iter().map(|id| d.hash(id)).collect();
                    d.insert_hashes(&hashes);
                }
                let Some(set) = &candidates else { continue };
                fps.clear();
                fps.extend(ids.iter().map(|id| fingerprint(id)));
                found.clear();
                set.matches(&fps, &mut found);
                let room = MAX_SUSPECTS.saturating_sub(c.suspects.len());
                c.suspects
                    .extend(found.iter().take(room).map(|&i| ids[i].to_string()));
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

/// How many spilled fingerprints of the references are among `candidates`: the files are read
/// in parallel, and a spill that gives back fewer than were written is refused.
pub async fn spill_matches(references: &Fingerprinted, candidates: &Fingerprints) -> Result<u64> {
    let set = Arc::new(Candidates::new(candidates));
    let counts = references
        .fold(
            "to verify against it",
            || Ok((0u64, Vec::new())),
            move |(matched, found): &mut (u64, Vec<usize>), fps| {
                found.clear();
                set.matches(fps, found);
                *matched += found.len() as u64;
            },
        )
        .await?;
    Ok(counts.iter().map(|(matched, _)| matched).sum())
}

/// The fingerprints of the ids in `batches`.
pub async fn fingerprints(dir: &PlanDir, batches: &[String]) -> Result<Fingerprints> {
    let mut set = Fingerprints::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::references::SourceSpec;
    use crate::store::Location;
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn exact_verification_finds_a_referenced_candidate() {
        let dir = tempfile::tempdir().unwrap();
        let (referenced, orphan) = ("1_557_referenced", "1_557_orphan");
        // The reference spells the id another way: it must still be caught.
        let respelled = referenced.replacen("1_557_", "1_0557_", 1);
        let refs = dir.path().join("refs.parquet");
        let table = batch(vec![(
            "blob_id",
            Arc::new(StringArray::from(vec![respelled])) as ArrayRef,
        )]);
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&refs).unwrap(),
            table.schema(),
            None,
        )
        .unwrap();
        writer.write(&table).unwrap();
        writer.close().unwrap();
        let spec = SourceSpec::parse_flag(&format!("messages={}", refs.display())).unwrap();
        let ctx = crate::session::local(2, &Default::default()).unwrap();
        let source = crate::references::open(&ctx, &spec, &mut Default::default())
            .await
            .unwrap();
        let plan = dir.path().join("plan");
        let plan = PlanDir::new(
            Location::parse(plan.to_str().unwrap(), "plan", &Default::default()).unwrap(),
        );
        // A batch as a Bloom filter with a false negative would write it.
        let buggy = batch(vec![
            (
                "blob_id",
                Arc::new(StringArray::from(vec![orphan, referenced])) as ArrayRef,
            ),
            (
                "size",
                Arc::new(Int64Array::from(vec![1i64, 1])) as ArrayRef,
            ),
        ]);
        plan.write_batch("buggy", &buggy).await.unwrap();
        let batches = ["buggy".to_string()];
        let candidates = Arc::new(fingerprints(&plan, &batches).await.unwrap());
        let checked = check_references(source.ids, Some(candidates), None)
            .await
            .unwrap();
        let found = confirm(&plan, &batches, &checked.suspects, 5)
            .await
            .unwrap();
        assert_eq!(found, vec![referenced.to_string()]);
    }

    proptest::proptest! {
        #[test]
        fn the_candidate_table_finds_exactly_its_fingerprints(
            mut inserted in proptest::collection::vec(proptest::num::u64::ANY, 0..3_000),
            others in proptest::collection::vec(proptest::num::u64::ANY, 0..3_000),
        ) {
            // Duplicates, 0 and its stand-in 1 are the edge cases of the table.
            inserted.extend([0, 0, 7, 7]);
            let set = Candidates::new(&inserted);
            let probes: Vec<u64> = inserted.iter().chain(&others).copied().chain([1]).collect();
            let mut found = Vec::new();
            set.matches(&probes, &mut found);
            let expected: Vec<usize> = (0..probes.len())
                .filter(|&i| inserted.iter().any(|&c| c.max(1) == probes[i].max(1)))
                .collect();
            proptest::prop_assert_eq!(found, expected);
        }
    }
}
