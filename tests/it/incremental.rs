//! ADR 39's incremental mode (`blobgc incremental`), replayed on the ADR's worked example:
//! blobs b1..b6 of reference generations 1..3, deletions at iterations 3 and 4.

use crate::support::*;
use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampSecondArray};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// A Deletions row: blob, reference generation, time of day, iteration.
type Deletion = (&'static str, i64, &'static str, i64);

fn write_deletions(path: &Path, rows: &[Deletion]) {
    let seconds = |hm: &str| {
        let (h, m) = hm.split_once(':').unwrap();
        1_700_000_000 + h.parse::<i64>().unwrap() * 3600 + m.parse::<i64>().unwrap() * 60
    };
    let batch = RecordBatch::try_from_iter(vec![
        (
            "blob_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "generation",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ),
        (
            "date",
            Arc::new(
                TimestampSecondArray::from_iter_values(rows.iter().map(|r| seconds(r.2)))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "gc_iteration",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
        ),
    ])
    .unwrap();
    write_batch(path, &batch);
}

fn write_references(path: &Path, rows: &[(&str, &str, i64)]) {
    let batch = RecordBatch::try_from_iter(vec![
        (
            "entity_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "blob_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        ),
        (
            "generation",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ),
    ])
    .unwrap();
    write_batch(path, &batch);
}

/// The Deletions rows of a file: (blob, generation, iteration).
fn deletions(path: &Path) -> BTreeSet<(String, i64, i64)> {
    let mut out = BTreeSet::new();
    for b in read_batches(path) {
        let ids = b
            .column_by_name("blob_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let g = b
            .column_by_name("generation")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        let i = b
            .column_by_name("gc_iteration")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        assert!(
            b.column_by_name("date").is_some(),
            "the date column is kept"
        );
        for r in 0..b.num_rows() {
            out.insert((ids.value(r).to_string(), g.value(r), i.value(r)));
        }
    }
    out
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn row(b: &str, g: i64, i: i64) -> (String, i64, i64) {
    (b.to_string(), g, i)
}

struct Adr {
    f: Fixture,
}

impl Adr {
    /// The store after generation 3's messages: b1..b6.
    fn new() -> Self {
        let f = Fixture::new();
        f.blobs(&["b1", "b2", "b3", "b4", "b5", "b6"]);
        Adr { f }
    }

    fn iteration(
        &self,
        i: i64,
        lag: &str,
        deletions: &[Deletion],
        refs: &[(&str, &str, i64)],
    ) -> Outcome {
        let (d, r) = (
            self.f.path("deletions.parquet"),
            self.f.path(&format!("references-{i}.parquet")),
        );
        if !deletions.is_empty() || !d.exists() {
            write_deletions(&d, deletions);
        }
        write_references(&r, refs);
        let store = self.f.store_url();
        let (d, r) = (d.display().to_string(), r.display().to_string());
        let i = i.to_string();
        let out = self.f.blobgc(&[
            "incremental",
            "--store",
            &store,
            "--deletions",
            &d,
            "--references",
            &r,
            "--iteration",
            &i,
            "--current-generation",
            &i,
            "--generation-lag",
            lag,
            "--deletions-out",
            &d,
            "--fpp",
            "0.0001",
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out
    }
}

/// References left after gci3's deletions (m1, m2, m3, m7, m8 deleted).
const REFS_GCI3: &[(&str, &str, i64)] = &[
    ("m4", "b3", 2),
    ("m5", "b4", 2),
    ("m6", "b4", 2),
    ("m9", "b6", 3),
];
/// Deletions recorded during gci3.
const DELETIONS_GCI3: &[Deletion] = &[
    ("b1", 1, "10:42", 3),
    ("b2", 1, "10:42", 3),
    ("b2", 1, "13:37", 3),
    ("b5", 3, "10:42", 3),
    ("b6", 3, "10:42", 3),
];

#[test]
fn the_worked_example_with_lag_0_ends_with_the_adr_tables() {
    let adr = Adr::new();
    let d = adr.f.path("deletions.parquet");
    let out = adr.iteration(3, "0", DELETIONS_GCI3, REFS_GCI3);
    assert_eq!(
        (
            out.u("concerned_blob_count"),
            out.u("referenced_blob_count"),
            out.u("gced_blob_count")
        ),
        (4, 1, 3)
    );
    assert_eq!(
        adr.f.left(),
        names(&["b3", "b4", "b6"]),
        "b1, b2, b5 gone at gci3"
    );
    assert_eq!(deletions(&d), BTreeSet::from([row("b6", 3, 3)]));

    // gci4: user2 deletes m9; the Deletions table gains b6's second row.
    let mut table: Vec<Deletion> = vec![("b6", 3, "10:42", 3), ("b6", 3, "18:42", 4)];
    table.sort();
    let out = adr.iteration(4, "0", &table, &REFS_GCI3[..3]);
    assert_eq!(out.u("gced_blob_count"), 1);
    assert_eq!(adr.f.left(), names(&["b3", "b4"]), "b6 gone at gci4");
    assert!(deletions(&d).is_empty());
}

#[test]
fn with_lag_2_the_young_generations_are_carried_over() {
    let adr = Adr::new();
    let d = adr.f.path("deletions.parquet");
    let out = adr.iteration(3, "2", DELETIONS_GCI3, REFS_GCI3);
    assert_eq!(
        (out.u("processed_rows"), out.u("carried_over_rows")),
        (3, 2)
    );
    assert_eq!(
        adr.f.left(),
        names(&["b3", "b4", "b5", "b6"]),
        "only rg1 processed"
    );
    assert_eq!(
        deletions(&d),
        BTreeSet::from([row("b5", 3, 3), row("b6", 3, 3)])
    );

    // Two generations later rg3 is old enough: the carried-over rows are processed.
    let out = adr.iteration(5, "2", &[], REFS_GCI3);
    assert_eq!(out.u("gced_blob_count"), 1);
    assert_eq!(adr.f.left(), names(&["b3", "b4", "b6"]));
    assert_eq!(deletions(&d), BTreeSet::from([row("b6", 3, 3)]));
}
