//! Bad input: the documented exit code, a message naming the problem, and the store untouched.

use crate::support::*;
use std::collections::BTreeSet;

/// A store with one deletable orphan and one referenced blob; returns (fixture, good --refs).
fn store() -> (Fixture, String) {
    let f = Fixture::new();
    f.blobs(&[id(557, "orphan"), id(557, "kept")]);
    let refs = f.refs("messages", &[id(557, "kept")]);
    (f, refs)
}

fn untouched(f: &Fixture) {
    assert_eq!(
        f.left(),
        BTreeSet::from([id(557, "orphan"), id(557, "kept")]),
        "the store was touched"
    );
}

fn expect(f: &Fixture, args: &[&str], code: i32, needles: &[&str]) {
    let out = f.run(T2, args);
    assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "{args:?}: stderr does not name {n:?}:\n{}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    untouched(f);
}

#[test]
fn a_missing_source_is_a_configuration_error() {
    let (f, refs) = store();
    let missing = f.path("refs/nowhere");
    let spec = format!("attachments={}", missing.display());
    expect(
        &f,
        &["--refs", &refs, "--refs", &spec],
        2,
        &["attachments", "nowhere", "not found"],
    );
}

#[test]
fn a_missing_column_is_a_configuration_error() {
    let (f, refs) = store();
    expect(
        &f,
        &["--refs", &format!("{refs}#nope")],
        2,
        &["messages", "\"nope\"", "blob_id"],
    );
}

#[test]
fn an_unreadable_parquet_file_fails_the_run() {
    let (f, refs) = store();
    let dir = f.path("refs/broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("part-0.parquet"), b"this is not parquet").unwrap();
    expect(
        &f,
        &[
            "--refs",
            &refs,
            "--refs",
            &format!("broken={}", dir.display()),
        ],
        1,
        &["broken", "Parquet"],
    );
}

#[test]
fn an_empty_source_aborts_unless_allowed() {
    let (f, refs) = store();
    let empty = f.refs::<&str>("queue", &[]);
    expect(
        &f,
        &["--refs", &refs, "--refs", &empty],
        3,
        &["queue", "no rows", "allow_empty"],
    );
    let out = f.run(
        T2,
        &[
            "--refs",
            &refs,
            "--refs",
            &empty,
            "--allow-empty",
            "queue",
            "--fpp",
            "0.000001",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.left(), BTreeSet::from([id(557, "kept")]));
}

#[test]
fn a_malformed_listed_id_aborts_before_any_deletion() {
    let (f, refs) = store();
    f.blobs(&["invalid_2_abc"]);
    let out = f.run(T2, &["--refs", &refs]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("invalid_2_abc"), "{}", out.stderr);
    assert_eq!(
        (
            out.status(),
            out.u("malformed_id_count"),
            out.u("gced_blob_count")
        ),
        ("aborted", 1, 0)
    );
    assert_eq!(f.left().len(), 3, "nothing deleted");

    let out = f.run(
        T2,
        &["--refs", &refs, "--ignore-malformed", "--fpp", "0.000001"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        f.left(),
        BTreeSet::from([id(557, "kept"), "invalid_2_abc".to_string()]),
        "malformed ids are never deleted"
    );
}

#[test]
fn an_overfilled_filter_aborts() {
    let (f, _) = store();
    let many: Vec<String> = (0..500).map(|i| id(557, &format!("r{i}"))).collect();
    let refs = f.refs("messages", &many);
    expect(
        &f,
        &["--refs", &refs, "--expected-references", "10"],
        3,
        &["--max-fpp", "--expected-references"],
    );
}

#[test]
fn bad_flags_are_usage_errors_naming_the_flag() {
    let (f, refs) = store();
    for (flag, value) in [
        ("--fpp", "0"),
        ("--fpp", "1"),
        ("--fpp", "1.5"),
        ("--batch-size", "0"),
        ("--family", "0"),
        ("--generation-duration", "0"),
        ("--generation-duration", "soon"),
        ("--now", "tomorrow"),
    ] {
        expect(&f, &["--refs", &refs, flag, value], 2, &[flag]);
    }
    expect(&f, &[], 2, &["reference source"]);
    expect(&f, &["--refs", "no-equals-sign"], 2, &["--refs"]);
}

#[test]
fn a_plan_directory_inside_the_store_is_refused() {
    let (f, refs) = store();
    let inside = f.store().join("plan");
    expect(
        &f,
        &["--refs", &refs, "--plan-dir", inside.to_str().unwrap()],
        2,
        &["inside the store"],
    );
    assert!(!inside.exists());
}

/// A listed key no object store can address (an inventory holding `..`) is malformed: with
/// `--ignore-malformed` it is kept and named, never put in a batch, so the real orphans beside
/// it are still collected (a batch holding it would fail at every run).
#[test]
fn an_unaddressable_listed_key_is_kept_and_the_orphans_beside_it_go() {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let (f, refs) = store();
    let orphans: Vec<String> = (0..5).map(|i| id(557, &format!("orphan {i}"))).collect();
    f.blobs(&orphans);
    let mut listed: Vec<String> = f.left().into_iter().collect();
    listed.push("..".to_string());
    let batch = RecordBatch::try_from_iter(vec![
        (
            "blob_id",
            std::sync::Arc::new(StringArray::from_iter_values(&listed)) as ArrayRef,
        ),
        (
            "size",
            std::sync::Arc::new(Int64Array::from(vec![1i64; listed.len()])) as ArrayRef,
        ),
    ])
    .unwrap();
    let inventory = f.path("inventory/part-0.parquet");
    crate::support::write_batch(&inventory, &batch);
    let inventory = inventory.display().to_string();
    let out = f.run(T2, &["--refs", &refs, "--inventory", &inventory]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("\"..\""), "{}", out.stderr);
    let out = f.run(
        T2,
        &[
            "--refs",
            &refs,
            "--inventory",
            &inventory,
            "--ignore-malformed",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (out.u("malformed_id_count"), out.u("gced_blob_count")),
        (1, 6)
    );
    assert_eq!(f.left(), BTreeSet::from([id(557, "kept")]));
}
