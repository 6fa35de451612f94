//! The check pass, after the probe and before any deletion.
//!
//! **Exact verification:** the candidates are held as 64-bit fingerprints of their canonical
//! spelling (8 bytes each, not a hash table of strings); a reference whose fingerprint is among
//! them is a suspect, and suspects are compared exactly, by text, with the candidates. So a
//! referenced candidate (a Bloom filter bug) is always caught, and a fingerprint collision only
//! costs that exact comparison. In-process, the filter's build pass has already written every
//! reference's fingerprint to a [`Spill`], which is read instead of the references; only a
//! match reads the references again ([`check_references`]) for the suspects' text. The
//! fingerprint's seed is fixed, not the run's, so a partial filter built under a wrong seed
//! cannot hide its references from this check. The exact strategy, which builds no filter, also
//! counts its distinct references in [`check_references`] (for the missing-references breaker,
//! [`crate::breakers`]).

use crate::error::{Error, Result};
use crate::filter::{Bloom, FilterParams, fully_canonical, id_hash, le_words};
use crate::functions::for_each_id;
use crate::listing::BLOB_ID;
use crate::plan_dir::PlanDir;
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Suspects kept for the exact comparison: more would mean a broken filter anyway.
pub const MAX_SUSPECTS: usize = 10_000;

/// The fingerprint of an id: a hash of its canonical spelling.
pub fn fingerprint(id: &str) -> u64 {
    id_hash(0, &fully_canonical(id))
}

/// The candidates' fingerprints as the probe collects them (duplicates possible, unordered).
pub type Fingerprints = Vec<u64>;

/// The candidates' fingerprints, for lookups: a screen of one bit per slot (their top bits),
/// at most 1 MiB so that it stays in a core's cache, in front of an open-addressing table (16
/// MB at 1.2M candidates) where a lookup is a cache miss. Most references are no candidate and
/// stop at the screen; the others are looked up a batch at a time, their slots fetched ahead.
struct Candidates {
    screen: Vec<u64>,
    screen_shift: u32,
    /// Linear probing by the top bits; 0 marks an empty slot, so fingerprints are stored (and
    /// looked up) with 0 read as 1: one more way to collide, settled by the exact comparison.
    slots: Vec<u64>,
    slot_shift: u32,
}

/// 8 Mbit: at 1.2M candidates, 86% of the references stop at the screen.
const SCREEN_MAX_BITS: u64 = 1 << 23;

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

/// Fingerprints of every reference, written by the filter's build pass (each partial filter to
/// its own file) to a local directory that is removed when this is dropped: the verification
/// then reads 8 bytes per reference instead of the references themselves again. Only a
/// fingerprint match (a Bloom filter bug, or a 64-bit collision) sends it back to the
/// references, for their text.
pub struct Spill {
    dir: PathBuf,
}

impl Spill {
    /// A fresh spill directory for run `run_id` under the system's temporary directory.
    pub fn create(run_id: &str) -> Result<Spill> {
        let dir = std::env::temp_dir().join(format!("blobgc-{run_id}-fingerprints"));
        let spill = Spill { dir };
        spill.reset()?;
        Ok(spill)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Empties the directory: the filter is being built again.
    pub fn reset(&self) -> Result<()> {
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            Error::runtime(format!(
                "creating the fingerprint spill {}: {e}",
                self.dir.display()
            ))
        })
    }

    fn files(&self) -> Result<Vec<PathBuf>> {
        let bad = |e: std::io::Error| {
            Error::runtime(format!(
                "reading the fingerprint spill {}: {e}",
                self.dir.display()
            ))
        };
        std::fs::read_dir(&self.dir)
            .map_err(bad)?
            .map(|e| e.map(|e| e.path()).map_err(bad))
            .collect()
    }

    /// Fingerprints written.
    pub fn count(&self) -> Result<u64> {
        let mut bytes = 0;
        for file in self.files()? {
            bytes += std::fs::metadata(&file)
                .map_err(|e| Error::runtime(format!("{}: {e}", file.display())))?
                .len();
        }
        Ok(bytes / 8)
    }

    /// How many spilled fingerprints are among `candidates`: the files are read in parallel.
    pub async fn matches(&self, candidates: &Fingerprints) -> Result<u64> {
        let set = Arc::new(Candidates::new(candidates));
        let mut tasks = tokio::task::JoinSet::new();
        for file in self.files()? {
            let set = Arc::clone(&set);
            tasks.spawn_blocking(move || {
                let bad = |e: std::io::Error| Error::runtime(format!("{}: {e}", file.display()));
                let mut reader = std::fs::File::open(&file).map_err(bad)?;
                let (mut buf, mut found) = (vec![0u8; 1 << 20], Vec::new());
                let mut matched = 0u64;
                loop {
                    let n = read_full(&mut reader, &mut buf).map_err(bad)?;
                    let fps = le_words(&buf[..n]).ok_or_else(|| {
                        Error::runtime(format!("{}: not whole fingerprints", file.display()))
                    })?;
                    found.clear();
                    set.matches(&fps, &mut found);
                    matched += found.len() as u64;
                    if n < buf.len() {
                        return Ok::<_, Error>(matched);
                    }
                }
            });
        }
        let mut matched = 0;
        while let Some(done) = tasks.join_next().await {
            matched +=
                done.map_err(|e| Error::runtime(format!("fingerprint check failed: {e}")))??;
        }
        Ok(matched)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fills `buf` unless the file ends first; the bytes read.
fn read_full(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Appends the fingerprints of one partial filter's references to its own file of a
/// [`Spill`], opened at the first batch; a batch is one write. A failure to write (a full
/// disk) stops it, with a warning: the spill then holds fewer fingerprints than the filter
/// has references, and the verification reads the references instead.
#[derive(Debug)]
pub struct SpillWriter {
    dir: PathBuf,
    file: Option<std::fs::File>,
    bytes: Vec<u8>,
    failed: bool,
}

impl SpillWriter {
    pub fn new(dir: impl Into<PathBuf>) -> SpillWriter {
        SpillWriter {
            dir: dir.into(),
            file: None,
            bytes: Vec::new(),
            failed: false,
        }
    }

    /// Writes the fingerprints of `ids` ([`fingerprint`]).
    pub fn write(&mut self, ids: &[&str]) {
        if self.failed {
            return;
        }
        if let Err(e) = self.try_write(ids) {
            tracing::warn!(
                dir = %self.dir.display(),
                error = %e,
                "cannot keep the references' fingerprints: the verification will read the references"
            );
            self.failed = true;
        }
    }

    fn try_write(&mut self, ids: &[&str]) -> std::io::Result<()> {
        use std::io::Write;
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let path = self.dir.join(format!("{:016x}.fp", rand::random::<u64>()));
                self.file.insert(std::fs::File::create_new(path)?)
            }
        };
        self.bytes.clear();
        for id in ids {
            self.bytes.extend_from_slice(&fingerprint(id).to_le_bytes());
        }
        file.write_all(&self.bytes)
    }
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

    #[tokio::test]
    async fn spilled_fingerprints_are_counted_and_matched_then_removed() {
        let spill = Spill::create(&format!("test-{:08x}", rand::random::<u32>())).unwrap();
        let refs: Vec<String> = (0..300_000).map(|i| format!("1_5_{i}")).collect();
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        for part in refs.chunks(100_000) {
            let mut w = SpillWriter::new(spill.dir());
            w.write(part);
        }
        assert_eq!(spill.count().unwrap(), 300_000);
        let orphans: Fingerprints = (0..1_000)
            .map(|i| fingerprint(&format!("1_4_{i}")))
            .collect();
        assert_eq!(spill.matches(&orphans).await.unwrap(), 0);
        // A referenced candidate, under another spelling of its reference.
        let mut buggy = orphans.clone();
        buggy.push(fingerprint("1_0005_299999"));
        assert_eq!(spill.matches(&buggy).await.unwrap(), 1);
        let dir = spill.dir().to_path_buf();
        drop(spill);
        assert!(!dir.exists());
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
