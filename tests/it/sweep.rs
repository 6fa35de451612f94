//! Plans, sweeps, failures and resumption, through `blobgc plan` and `blobgc sweep`.

use crate::support::*;
use std::collections::BTreeSet;

fn orphans(f: &Fixture, n: usize) -> (Vec<String>, String) {
    let ids: Vec<String> = (0..n).map(|i| id(557, &format!("o{i}"))).collect();
    f.blobs(&ids);
    f.blobs(&[id(557, "kept")]);
    (ids, f.refs("messages", &[id(557, "kept")]))
}

fn plan(f: &Fixture, refs: &str, extra: &[&str]) -> (Outcome, String) {
    let dir = f.path("plan").display().to_string();
    let store = f.store_url();
    let mut args = vec![
        "plan", "--store", &store, "--now", T2, "--refs", refs, "--out", &dir, "--fpp", "0.000001",
    ];
    args.extend_from_slice(extra);
    (f.blobgc(&args), dir)
}

/// The batches a plan lists, in order.
fn batch_names(f: &Fixture) -> Vec<String> {
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path("plan/summary.json")).unwrap()).unwrap();
    summary["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn plan_then_sweep_then_a_second_sweep_does_nothing() {
    let f = Fixture::new();
    let (ids, refs) = orphans(&f, 25);
    let (planned, dir) = plan(&f, &refs, &["--batch-size", "10"]);
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    assert_eq!(
        (
            planned.u("candidate_count"),
            planned.u("batch_count"),
            planned.u("gced_blob_count")
        ),
        (25, 3, 0)
    );
    assert_eq!(f.left().len(), 26, "plan deletes nothing");
    let batches = std::fs::read_dir(f.path("plan/batches")).unwrap().count();
    assert_eq!(batches, 3, "batches of at most 10 rows");

    let swept = f.blobgc(&["sweep", "--plan", &dir]);
    assert_eq!(swept.code, 0, "{}", swept.stderr);
    assert_eq!(
        (swept.u("gced_blob_count"), swept.u("error_count")),
        (25, 0)
    );
    assert!(swept.u("gced_bytes") > 0);
    assert_eq!(f.left(), BTreeSet::from([id(557, "kept")]));
    assert!(ids.iter().all(|i| !f.left().contains(i)));

    let again = f.blobgc(&["sweep", "--plan", &dir]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        (again.u("gced_blob_count"), again.u("skipped_batch_count")),
        (0, 3)
    );

    let replan = plan(&f, &refs, &[]).0;
    assert_eq!(
        replan.code, 2,
        "a plan directory is never reused: {}",
        replan.stderr
    );
}

#[test]
fn a_failed_batch_makes_the_run_partial_and_a_rerun_completes_it() {
    let f = Fixture::new();
    let (_, refs) = orphans(&f, 10);
    let (planned, dir) = plan(&f, &refs, &["--batch-size", "3", "--partitions", "1"]);
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    assert_eq!(planned.u("batch_count"), 4);
    let name = batch_names(&f)[1].clone();
    let batch = f.path(&format!("plan/batches/{name}.parquet"));
    let hidden = f.path("hidden.parquet");
    std::fs::rename(&batch, &hidden).unwrap();

    let partial = f.blobgc(&["sweep", "--plan", &dir]);
    assert_eq!(partial.code, 4, "{}", partial.stderr);
    assert_eq!(
        (
            partial.status(),
            partial.u("error_count"),
            partial.u("gced_blob_count")
        ),
        ("partial", 1, 7)
    );
    assert_eq!(
        partial.report.as_ref().unwrap()["failed_batches"][0]["batch"],
        name.as_str()
    );
    assert_eq!(
        f.left().len(),
        4,
        "three orphans of the failed batch and the referenced blob"
    );

    std::fs::rename(&hidden, &batch).unwrap();
    let resumed = f.blobgc(&["sweep", "--plan", &dir]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        (
            resumed.u("gced_blob_count"),
            resumed.u("skipped_batch_count")
        ),
        (3, 3)
    );
    assert_eq!(f.left(), BTreeSet::from([id(557, "kept")]));
}

#[test]
fn an_aborted_plan_cannot_be_swept() {
    let f = Fixture::new();
    let (_, refs) = orphans(&f, 3);
    f.blobs(&["1__bad"]);
    let (planned, dir) = plan(&f, &refs, &[]);
    assert_eq!(
        (planned.code, planned.status()),
        (3, "aborted"),
        "{}",
        planned.stderr
    );
    let swept = f.blobgc(&["sweep", "--plan", &dir]);
    assert_eq!(swept.code, 3, "{}", swept.stderr);
    assert!(swept.stderr.contains("aborted"), "{}", swept.stderr);
    assert_eq!(f.left().len(), 5);
}

#[test]
fn a_batch_holding_an_active_id_is_refused() {
    let f = Fixture::new();
    let (_, refs) = orphans(&f, 2);
    let active = id(559, "active");
    f.blobs(&[&active]);
    let (planned, dir) = plan(&f, &refs, &["--partitions", "1"]);
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    write_parquet(
        &f.path(&format!("plan/batches/{}.parquet", batch_names(&f)[0])),
        vec![("blob_id", vec![Some(active.as_str())])],
    );
    // A batch without sizes is unreadable; with an active id it must be refused, not swept.
    let swept = f.blobgc(&["sweep", "--plan", &dir]);
    assert_ne!(swept.code, 0, "{}", swept.stderr);
    assert!(f.left().contains(&active));

    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let batch = RecordBatch::try_from_iter(vec![
        (
            "blob_id",
            std::sync::Arc::new(StringArray::from(vec![active.as_str()])) as ArrayRef,
        ),
        (
            "size",
            std::sync::Arc::new(Int64Array::from(vec![1i64])) as ArrayRef,
        ),
    ])
    .unwrap();
    let file =
        std::fs::File::create(f.path(&format!("plan/batches/{}.parquet", batch_names(&f)[0])))
            .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let swept = f.blobgc(&["sweep", "--plan", &dir]);
    assert_eq!(swept.code, 3, "{}", swept.stderr);
    assert!(swept.stderr.contains("not eligible"), "{}", swept.stderr);
    assert!(f.left().contains(&active));
}
