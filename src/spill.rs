//! The references' fingerprints, spilled to a local temporary directory by one pass over the
//! reference sources (in-process runs).
//!
//! That pass reads every reference once: each id's [`fingerprint`] (8 bytes) goes to the
//! spill, a file per partition, and into a HyperLogLog [`Sketch`] of the distinct references.
//! The Bloom filter hashes an id through its fingerprint ([`crate::filter::Bloom::hash`]), so it is then built
//! from the spill (partial filters per file, OR-merged), sized from the sketch, without reading
//! the references again; the exact verification of the candidates reads the same files. A cluster,
//! whose executors share no disk, reads the references twice instead: an estimating pass, then
//! the build (the `blobgc_bloom_build` aggregate).
//!
//! **The danger:** a spill short of fingerprints makes a filter short of references, which
//! deletes live blobs. So the fingerprints written are counted against the ids read, those read
//! back against both, and a spill that cannot be written (a TMPDIR it cannot create, a full
//! disk) is given up for the two passes over the references, never used short.
//!
//! ```
//! use blobgc::filter::fingerprint;
//! use blobgc::filter::Sketch;
//!
//! let mut sketch = Sketch::default();
//! (0..10_000).for_each(|i| sketch.add(fingerprint(&format!("1_5_{}", i % 4_000))));
//! assert!((3_900..=4_100).contains(&sketch.estimate()));
//! ```

use crate::error::{Error, Result};
use crate::filter::{FilterParams, Sharded, Sketch, extend_le_words, fingerprint};
use crate::functions::for_each_id;
use crate::listing::BLOB_ID;
use crate::progress::Progress;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// A directory of fingerprint files, removed when this is dropped.
pub struct Spill {
    dir: PathBuf,
}

impl Spill {
    /// A fresh spill directory for run `run_id` under the system's temporary directory.
    pub fn create(run_id: &str) -> Result<Spill> {
        let dir = std::env::temp_dir().join(format!("blobgc-{run_id}-fingerprints"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::runtime(format!(
                "creating the fingerprint spill {}: {e}",
                dir.display()
            ))
        })?;
        Ok(Spill { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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

    /// Runs `step` over the fingerprints of each file, a file per blocking task, a chunk at a
    /// time, on a state `init` makes per file; each file's final state and fingerprints read.
    async fn fold_files<S, F>(&self, init: impl Fn() -> Result<S>, step: F) -> Result<Vec<(S, u64)>>
    where
        S: Send + 'static,
        F: Fn(&mut S, &[u64]) + Send + Sync + 'static,
    {
        let step = Arc::new(step);
        let mut tasks = tokio::task::JoinSet::new();
        for file in self.files()? {
            let mut state = init()?;
            let step = Arc::clone(&step);
            tasks.spawn_blocking(move || {
                let read = read_words(&file, |fps| step(&mut state, fps))?;
                Ok::<_, Error>((state, read))
            });
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            out.push(
                done.map_err(|e| Error::runtime(format!("reading the fingerprint spill: {e}")))??,
            );
        }
        Ok(out)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Calls `f` on the little-endian words of `file`, 1 MiB at a time; the words read.
fn read_words(file: &Path, mut f: impl FnMut(&[u64])) -> Result<u64> {
    let bad = |e: std::io::Error| Error::runtime(format!("{}: {e}", file.display()));
    let mut reader = std::fs::File::open(file).map_err(bad)?;
    let (mut buf, mut words) = (vec![0u8; 1 << 20], Vec::with_capacity(1 << 17));
    let mut read = 0;
    loop {
        let n = read_full(&mut reader, &mut buf).map_err(bad)?;
        words.clear();
        if !extend_le_words(&buf[..n], &mut words) {
            let whole = format!("{}: not whole fingerprints", file.display());
            return Err(Error::runtime(whole));
        }
        f(&words);
        read += words.len() as u64;
        if n < buf.len() {
            return Ok(read);
        }
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

/// The references, fingerprinted into a [`Spill`]: what the filter and the verification need
/// of them.
pub struct Fingerprinted {
    pub spill: Spill,
    /// Non-null reference ids: as many fingerprints as the spill holds.
    pub ids: u64,
    sketch: Sketch,
}

impl Fingerprinted {
    /// The distinct references, estimated.
    pub fn distinct(&self) -> u64 {
        self.sketch.estimate()
    }

    /// Runs `step` over every spilled fingerprint, a file per blocking task, on a state `init`
    /// makes per file; the files' final states. A spill that gives back another number of
    /// fingerprints than the references it was written from is refused, for `what`.
    pub(crate) async fn fold<S, F>(
        &self,
        what: &str,
        init: impl Fn() -> Result<S>,
        step: F,
    ) -> Result<Vec<S>>
    where
        S: Send + 'static,
        F: Fn(&mut S, &[u64]) + Send + Sync + 'static,
    {
        let done = self.spill.fold_files(init, step).await?;
        let read: u64 = done.iter().map(|(_, n)| n).sum();
        if read != self.ids {
            return Err(Error::runtime(format!(
                "the fingerprint spill {} gave back {read} fingerprints for {} references: \
                 refusing {what}",
                self.spill.dir().display(),
                self.ids
            )));
        }
        Ok(done.into_iter().map(|(state, _)| state).collect())
    }

    /// The filter of every spilled reference, `shards` shards of `params`: a partial filter
    /// per file, OR-merged, then each shard folded to the distinct ids it holds at `fpp` (see
    /// [`crate::filter::Bloom::fold`]).
    pub async fn build_filter(
        &self,
        params: FilterParams,
        shards: u32,
        fpp: f64,
    ) -> Result<Sharded> {
        let partials = self
            .fold(
                "to build a filter from it",
                move || Sharded::empty(params, shards),
                |filter: &mut Sharded, fps| filter.insert_fingerprints(fps),
            )
            .await?;
        let mut partials = partials.into_iter();
        let mut merged = match partials.next() {
            Some(first) => first,
            None => Sharded::empty(params, shards)?,
        };
        for partial in partials {
            merged.union(&partial)?;
        }
        merged.fitted(fpp)
    }
}

/// Reads every reference once, writing each id's fingerprint to a fresh spill of run `run_id`
/// and sketching the distinct ones. None (with a warning) when the spill cannot be written in
/// full: the caller reads the references again instead.
///
/// The sources' partitions (each source has its own) are read by as many workers as the
/// session has target partitions, each taking the next partition when one ends and writing
/// one spill file. Each partition read at once holds a Parquet column chunk of tens of MB,
/// and each file is later a partial filter: with 5 sources, a task per partition held 10 of
/// each.
pub async fn fingerprint_references(
    references: DataFrame,
    run_id: &str,
    progress: &Progress,
) -> Result<Option<Fingerprinted>> {
    let spill = match Spill::create(run_id) {
        Ok(spill) => spill,
        Err(e) => return Ok(given_up(&e.to_string())),
    };
    let workers = references.task_ctx().session_config().target_partitions();
    let partitions = references
        .select_columns(&[BLOB_ID])?
        .execute_stream_partitioned()
        .await?;
    let workers = workers.clamp(1, partitions.len().max(1));
    let queue = Arc::new(Mutex::new(partitions));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..workers {
        let path = spill.dir().join(format!("{i:04}.fp"));
        tasks.spawn(spill_partitions(Arc::clone(&queue), path, progress.clone()));
    }
    let mut all = Part::default();
    while let Some(done) = tasks.join_next().await {
        match done.map_err(reading)?? {
            Ok(part) => all.add(part),
            Err(why) => return Ok(given_up(&why)),
        }
    }
    let spilled = spill.count()?;
    if spilled != all.ids {
        let why = format!("it holds {spilled} fingerprints for {} references", all.ids);
        return Ok(given_up(&why));
    }
    Ok(Some(Fingerprinted {
        spill,
        ids: all.ids,
        sketch: all.sketch,
    }))
}

/// One worker of [`fingerprint_references`]: the partitions it takes from `queue`, one after
/// the other, fingerprinted into the file `path`. An error reading is the run's; one writing
/// the spill (`Ok(Err)`) only gives the spill up.
async fn spill_partitions(
    queue: Arc<Mutex<Vec<SendableRecordBatchStream>>>,
    path: PathBuf,
    progress: Progress,
) -> Result<std::result::Result<Part, String>> {
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = match std::fs::File::create_new(&path) {
        Ok(file) => file,
        Err(e) => return Ok(Err(io(e))),
    };
    let mut part = Part::default();
    let mut bytes = Vec::new();
    // The lock is held to take a partition only, never across a read.
    let next = || queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
    while let Some(mut stream) = next() {
        while let Some(batch) = stream.try_next().await.map_err(reading)? {
            progress.advance(batch.num_rows() as u64);
            bytes.clear();
            for_each_id(batch.column(0), |id| {
                if let Some(id) = id {
                    let fp = fingerprint(id);
                    part.sketch.add(fp);
                    bytes.extend_from_slice(&fp.to_le_bytes());
                }
            })?;
            part.ids += bytes.len() as u64 / 8;
            if let Err(e) = file.write_all(&bytes) {
                return Ok(Err(io(e)));
            }
        }
    }
    Ok(Ok(part))
}

fn reading(e: impl std::fmt::Display) -> Error {
    Error::runtime(format!("reading reference sources: {e}"))
}

fn given_up(why: &str) -> Option<Fingerprinted> {
    tracing::warn!(
        error = why,
        "cannot keep the references' fingerprints: reading the references again to build the filter and to verify"
    );
    None
}

/// What one partition of the fingerprinting pass read.
#[derive(Default)]
struct Part {
    ids: u64,
    sketch: Sketch,
}

impl Part {
    fn add(&mut self, o: Part) {
        self.ids += o.ids;
        self.sketch.merge(&o.sketch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Fingerprints, spill_matches};
    use arrow::array::{ArrayRef, RecordBatch, StringArray};

    /// A table of `ids` in `partitions` partitions, a batch of at most 1,000 ids each.
    fn references(ids: &[String], partitions: usize) -> DataFrame {
        let batches: Vec<Vec<RecordBatch>> = ids
            .chunks(ids.len().div_ceil(partitions))
            .map(|part| {
                part.chunks(1_000)
                    .map(|chunk| {
                        let column = StringArray::from_iter(chunk.iter().map(|id| {
                            // Nulls are rows, not ids.
                            (!id.is_empty()).then_some(id.as_str())
                        }));
                        let column = Arc::new(column) as ArrayRef;
                        RecordBatch::try_from_iter_with_nullable([(BLOB_ID, column, true)]).unwrap()
                    })
                    .collect()
            })
            .collect();
        let schema = batches[0][0].schema();
        let table = datafusion::datasource::MemTable::try_new(schema, batches).unwrap();
        datafusion::prelude::SessionContext::new()
            .read_table(Arc::new(table))
            .unwrap()
    }

    #[tokio::test]
    async fn one_pass_fingerprints_every_reference_and_the_filter_built_from_them_holds_all() {
        // 100,000 distinct ids, each 3 times, and 10 null rows.
        let mut ids: Vec<String> = (0..300_000)
            .map(|i| format!("1_5_{}", i % 100_000))
            .collect();
        ids.extend((0..10).map(|_| String::new()));
        let run = format!("test-{:08x}", rand::random::<u32>());
        let done = fingerprint_references(references(&ids, 3), &run, &Progress::silent())
            .await
            .unwrap()
            .expect("a spill");
        assert_eq!(done.ids, 300_000);
        assert_eq!(done.spill.count().unwrap(), 300_000);
        let distinct = done.distinct();
        assert!((97_000..=103_000).contains(&distinct), "{distinct}");

        // Sized for the rows, folded to the distinct ids: still every reference, any spelling.
        let params = FilterParams::foldable(300_000, 0.01, FilterParams::seed_from_salt("s"));
        let bloom = done.build_filter(params, 1, 0.01).await.unwrap();
        assert!(bloom.params().num_bits < params.num_bits, "folded");
        assert!((0..100_000).all(|i| bloom.contains(&format!("1_0005_{i}"))));
        let kept = (0..100_000)
            .filter(|i| bloom.contains(&format!("1_4_{i}")))
            .count();
        assert!(kept < 2_000, "{kept} false positives of 100,000");

        let orphans: Fingerprints = (0..1_000)
            .map(|i| fingerprint(&format!("1_4_{i}")))
            .collect();
        assert_eq!(spill_matches(&done, &orphans).await.unwrap(), 0);
        // A referenced candidate, under another spelling of its reference: each of its 3 rows.
        let mut buggy = orphans.clone();
        buggy.push(fingerprint("1_0005_99999"));
        assert_eq!(spill_matches(&done, &buggy).await.unwrap(), 3);

        let dir = done.spill.dir().to_path_buf();
        drop(done);
        assert!(!dir.exists(), "the spill is removed with the run");
    }

    #[tokio::test]
    async fn a_spill_short_of_fingerprints_builds_no_filter() {
        let ids: Vec<String> = (0..5_000).map(|i| format!("1_5_{i}")).collect();
        let run = format!("test-{:08x}", rand::random::<u32>());
        let done = fingerprint_references(references(&ids, 2), &run, &Progress::silent())
            .await
            .unwrap()
            .expect("a spill");
        let file = done.spill.files().unwrap().remove(0);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 8]).unwrap();
        let params = FilterParams::for_items(5_000, 0.01, 7);
        let refused = done.build_filter(params, 1, 0.01).await.unwrap_err();
        assert!(
            refused.to_string().contains("4999 fingerprints for 5000"),
            "{refused}"
        );
    }
}
