//! `blobgc show`: a plan's candidates as its operator reviews them before a first sweep, each
//! with its size, family and generation, and what they add up to by generation and by family.
//!
//! It reads the deletion batches the sweep would execute (those `summary.json` lists), a few at
//! a time and in their order, so a plan of any size is listed in little memory; `--sort` with
//! `--limit N` keeps the N first only, `--sort` alone holds every candidate. The totals are
//! checked against the plan's summary: a batch missing or changed is an error, not a shorter
//! list.
//!
//! ```text
//! blob_id,size,family,generation       --format csv (ndjson: one object per candidate)
//! 1_19000_5vUo...JKc=,2048,1,19000
//! ```

use crate::blob_id::BlobId;
use crate::error::{Error, Result};
use crate::plan_dir::PlanDir;
use crate::summary::ByGeneration;
use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array, UInt64Array};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::io::Write;
use std::sync::Arc;

/// Batches read at once, in order.
const READ_AHEAD: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, then the totals.
    Table,
    /// A header line, then one line per candidate (RFC 4180 quoting).
    Csv,
    /// One JSON object per line.
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Largest first: what a sweep reclaims most of.
    Size,
    /// Oldest generation first, then by id.
    Generation,
}

/// One candidate as listed. Family and generation are those its id parses to (none for an id of
/// a plan selected by a table that is no generation-aware id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub blob_id: String,
    pub size: u64,
    pub family: Option<u32>,
    pub generation: Option<u64>,
}

impl Candidate {
    fn new(blob_id: String, size: u64) -> Self {
        let parsed = BlobId::parse(&blob_id).ok();
        Candidate {
            family: parsed.map(|p| p.family),
            generation: parsed.map(|p| p.generation),
            blob_id,
            size,
        }
    }

    /// The order of `--sort`: the greatest first.
    fn key(&self, by: SortBy) -> (u64, Reverse<u64>, Reverse<&str>) {
        let generation = Reverse(self.generation.unwrap_or(u64::MAX));
        match by {
            SortBy::Size => (self.size, Reverse(0), Reverse(&self.blob_id)),
            SortBy::Generation => (0, generation, Reverse(&self.blob_id)),
        }
    }
}

/// Candidates and bytes of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub candidates: u64,
    pub bytes: u64,
}

/// What a plan's candidates add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub all: Count,
    /// Ids that parse to no generation are counted in `all` only.
    pub by_generation: ByGeneration,
}

impl Totals {
    fn add(&mut self, c: &Candidate) {
        self.all.candidates += 1;
        self.all.bytes += c.size;
        self.by_generation.add(&c.blob_id, c.size);
    }

    /// By family, from the counts by generation.
    pub fn by_family(&self) -> BTreeMap<u32, Count> {
        let mut families = BTreeMap::<u32, Count>::new();
        for g in self.by_generation.counts() {
            let f = families.entry(g.family).or_default();
            f.candidates += g.candidates;
            f.bytes += g.bytes;
        }
        families
    }

    /// The totals for people: by generation, by family, and in all.
    pub fn human(&self) -> String {
        let mut out = String::from("family generation candidates bytes\n");
        for g in self.by_generation.counts() {
            out += &format!(
                "{:>6} {:>10} {:>10} {}\n",
                g.family, g.generation, g.candidates, g.bytes
            );
        }
        for (family, c) in &self.by_family() {
            out += &format!(
                "{family:>6} {:>10} {:>10} {}\n",
                "all", c.candidates, c.bytes
            );
        }
        out + &format!(
            "total: {} candidates, {} bytes\n",
            self.all.candidates, self.all.bytes
        )
    }
}

/// How to list a plan.
#[derive(Debug, Clone, Copy)]
pub struct ShowOptions {
    pub format: Format,
    pub limit: Option<usize>,
    pub sort: Option<SortBy>,
}

/// Lists the candidates of the plan in `dir` to `out` as `options` say; their totals, checked
/// against the plan's summary.
pub async fn show(dir: &PlanDir, options: &ShowOptions, out: &mut impl Write) -> Result<Totals> {
    let summary = dir.read_summary().await?;
    let mut totals = Totals::default();
    let mut listing = Listing::new(options.format, out);
    let mut kept = Kept::new(options);
    let mut batches = futures::stream::iter(&summary.batches)
        .map(|name| dir.read_batch(name))
        .buffered(READ_AHEAD);
    while let Some(rows) = batches.try_next().await? {
        let rows: Vec<Candidate> = rows
            .into_iter()
            .map(|(id, size)| Candidate::new(id, size))
            .collect();
        rows.iter().for_each(|c| totals.add(c));
        if let Some(rows) = kept.take(rows) {
            listing.write(&rows)?;
        }
    }
    listing.write(&kept.sorted())?;
    listing.finish()?;
    let planned = (
        summary.counts.candidate_count,
        summary.counts.candidate_bytes,
    );
    if (totals.all.candidates, totals.all.bytes) != planned {
        return Err(Error::runtime(format!(
            "the batches of {} hold {} candidates of {} bytes, its summary.json {} of {}: the plan \
             was changed after it was written",
            dir.location, totals.all.candidates, totals.all.bytes, planned.0, planned.1
        )));
    }
    Ok(totals)
}

/// The candidates still to list: all of them in order without `--sort`, up to `--limit`;
/// with it, the greatest `--limit` (or all) kept until the end.
struct Kept {
    sort: Option<SortBy>,
    limit: usize,
    listed: usize,
    heap: BinaryHeap<Reverse<Ranked>>,
}

/// A candidate in the order of its `--sort`.
struct Ranked(SortBy, Candidate);

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.1.key(self.0).cmp(&other.1.key(other.0))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Ranked {}

impl Kept {
    fn new(options: &ShowOptions) -> Self {
        Kept {
            sort: options.sort,
            limit: options.limit.unwrap_or(usize::MAX),
            listed: 0,
            heap: BinaryHeap::new(),
        }
    }

    /// The rows to list now (unsorted), or None when they are kept for the end.
    fn take(&mut self, mut rows: Vec<Candidate>) -> Option<Vec<Candidate>> {
        let Some(by) = self.sort else {
            rows.truncate(self.limit - self.listed);
            self.listed += rows.len();
            return Some(rows);
        };
        for c in rows {
            self.heap.push(Reverse(Ranked(by, c)));
            if self.heap.len() > self.limit {
                self.heap.pop();
            }
        }
        None
    }

    /// The kept rows, greatest first.
    fn sorted(&mut self) -> Vec<Candidate> {
        std::mem::take(&mut self.heap)
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(Ranked(_, c))| c)
            .collect()
    }
}

/// Candidates written in one format.
enum Listing<'a, W: Write> {
    Table(&'a mut W, bool),
    Csv(Box<arrow::csv::Writer<&'a mut W>>),
    Ndjson(arrow::json::LineDelimitedWriter<&'a mut W>),
}

impl<'a, W: Write> Listing<'a, W> {
    fn new(format: Format, out: &'a mut W) -> Self {
        match format {
            Format::Table => Listing::Table(out, false),
            Format::Csv => Listing::Csv(Box::new(arrow::csv::Writer::new(out))),
            Format::Ndjson => Listing::Ndjson(arrow::json::LineDelimitedWriter::new(out)),
        }
    }

    fn write(&mut self, rows: &[Candidate]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Listing::Table(out, header) => {
                if !*header {
                    let names = ("blob_id", "size", "family", "generation");
                    writeln!(
                        out,
                        "{:<50} {:>12} {:>6} {:>10}",
                        names.0, names.1, names.2, names.3
                    )
                    .map_err(writing)?;
                    *header = true;
                }
                for c in rows {
                    let (family, generation) = (number(c.family), number(c.generation));
                    writeln!(
                        out,
                        "{:<50} {:>12} {family:>6} {generation:>10}",
                        c.blob_id, c.size
                    )
                    .map_err(writing)?;
                }
                Ok(())
            }
            Listing::Csv(w) => w.write(&batch(rows)?).map_err(writing),
            Listing::Ndjson(w) => w.write(&batch(rows)?).map_err(writing),
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Listing::Table(out, _) => out.flush().map_err(writing),
            Listing::Csv(w) => w.into_inner().flush().map_err(writing),
            Listing::Ndjson(mut w) => w.finish().map_err(writing),
        }
    }
}

fn writing(e: impl std::fmt::Display) -> Error {
    Error::runtime(format!("writing the candidates: {e}"))
}

fn number(n: Option<impl ToString>) -> String {
    n.map_or_else(String::new, |n| n.to_string())
}

/// The rows as the columns CSV and NDJSON write.
fn batch(rows: &[Candidate]) -> Result<RecordBatch> {
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
        rows.iter().map(|c| c.blob_id.as_str()),
    ));
    let sizes: ArrayRef = Arc::new(UInt64Array::from_iter_values(rows.iter().map(|c| c.size)));
    let families: ArrayRef = Arc::new(UInt32Array::from_iter(rows.iter().map(|c| c.family)));
    let generations: ArrayRef = Arc::new(UInt64Array::from_iter(rows.iter().map(|c| c.generation)));
    Ok(RecordBatch::try_from_iter([
        ("blob_id", ids),
        ("size", sizes),
        ("family", families),
        ("generation", generations),
    ])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(n: u64) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate::new(format!("1_{}_id{i}", 10 + i % 3), 100 * (i % 5)))
            .collect()
    }

    fn kept(sort: Option<SortBy>, limit: Option<usize>, rows: Vec<Candidate>) -> Vec<String> {
        let format = Format::Csv;
        let mut k = Kept::new(&ShowOptions {
            format,
            limit,
            sort,
        });
        let mut out: Vec<Candidate> = rows
            .chunks(4)
            .filter_map(|c| k.take(c.to_vec()))
            .flatten()
            .collect();
        out.extend(k.sorted());
        out.into_iter().map(|c| c.blob_id).collect()
    }

    #[test]
    fn a_limit_without_sort_lists_the_first_in_plan_order() {
        assert_eq!(
            kept(None, Some(6), candidates(10)),
            [
                "1_10_id0", "1_11_id1", "1_12_id2", "1_10_id3", "1_11_id4", "1_12_id5"
            ]
        );
        assert_eq!(kept(None, None, candidates(10)).len(), 10);
        assert!(kept(None, Some(0), candidates(10)).is_empty());
    }

    #[test]
    fn sorting_keeps_the_largest_or_the_oldest() {
        // Sizes 400 are ids 4 and 9, 300 ids 3 and 8; ties listed by id.
        let largest = kept(Some(SortBy::Size), Some(3), candidates(10));
        assert_eq!(largest, ["1_10_id9", "1_11_id4", "1_10_id3"]);
        let oldest = kept(Some(SortBy::Generation), Some(4), candidates(10));
        assert_eq!(oldest, ["1_10_id0", "1_10_id3", "1_10_id6", "1_10_id9"]);
        assert_eq!(kept(Some(SortBy::Size), None, candidates(10)).len(), 10);
    }

    #[test]
    fn totals_group_by_generation_and_family() {
        let mut t = Totals::default();
        let mut rows = candidates(6);
        rows.push(Candidate::new("legacy".into(), 7));
        rows.push(Candidate::new("a/b".into(), 1));
        rows.iter().for_each(|c| t.add(c));
        let count = |candidates, bytes| Count { candidates, bytes };
        assert_eq!(t.all, count(8, 1008));
        let g = t.by_generation.counts();
        assert_eq!((g[0].family, g[0].generation, g[0].candidates), (0, 0, 1));
        assert_eq!(
            (g[1].family, g[1].generation, g[1].candidates, g[1].bytes),
            (1, 10, 2, 300)
        );
        assert_eq!(t.by_family()[&0], count(1, 7));
        assert_eq!(t.by_family()[&1].candidates, 6);
    }
}
