//! The GC job end to end on local files, through the real binary.

use crate::support::*;
use std::collections::BTreeSet;

#[test]
fn an_orphan_goes_two_generations_later_and_a_referenced_blob_never() {
    let f = Fixture::new();
    let (orphan, referenced) = (id(557, "orphan"), id(557, "referenced"));
    f.blobs(&[&orphan, &referenced]);
    let refs = f.refs("messages", &[&referenced]);

    let at_t0 = f.run(T0, &["--refs", &refs]);
    assert_eq!(at_t0.code, 0, "{}", at_t0.stderr);
    assert_eq!(
        f.left(),
        BTreeSet::from([orphan.clone(), referenced.clone()]),
        "nothing goes in an active generation"
    );
    assert_eq!(
        (at_t0.u("eligible_blob_count"), at_t0.u("gced_blob_count")),
        (0, 0)
    );

    let at_t2 = f.run(T2, &["--refs", &refs, "--fpp", "0.000001"]);
    assert_eq!(at_t2.code, 0, "{}", at_t2.stderr);
    assert_eq!(f.left(), BTreeSet::from([referenced]));
    assert_eq!(at_t2.status(), "completed");
    assert_eq!(
        (
            at_t2.u("blob_count"),
            at_t2.u("eligible_blob_count"),
            at_t2.u("gced_blob_count")
        ),
        (2, 2, 1)
    );
    assert_eq!(at_t2.u("current_generation"), 559);
    assert_eq!(
        at_t2.report.as_ref().unwrap()["verified"],
        true,
        "candidates are verified exactly by default"
    );
    let last = at_t2.stdout.trim().lines().last().unwrap();
    let from_stdout: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(
        from_stdout["gced_blob_count"], 1,
        "the report is the last stdout line"
    );
}

#[test]
fn fresh_salts_collect_every_orphan_eventually_and_never_a_referenced_blob() {
    let f = Fixture::new();
    let referenced: Vec<String> = (0..100).map(|i| id(557, &format!("r{i}"))).collect();
    let orphans: Vec<String> = (0..50).map(|i| id(557, &format!("o{i}"))).collect();
    f.blobs(&referenced);
    f.blobs(&orphans);
    let refs = f.refs("messages", &referenced);
    // A deliberately poor filter: many false positives per run, different ones each run.
    let args = ["--refs", refs.as_str(), "--fpp", "0.3"];

    let first = f.run(T2, &args);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let n = first.u("gced_blob_count");
    assert!(n > 0 && n <= 50, "first run deleted {n}");
    let mut salts = BTreeSet::from([first.report.as_ref().unwrap()["salt"].to_string()]);
    for _ in 0..30 {
        if f.left().len() == 100 {
            break;
        }
        let again = f.run(T2, &args);
        assert_eq!(again.code, 0, "{}", again.stderr);
        salts.insert(again.report.as_ref().unwrap()["salt"].to_string());
        assert!(
            referenced.iter().all(|r| f.left().contains(r)),
            "a referenced blob was deleted"
        );
    }
    assert_eq!(
        f.left(),
        referenced.into_iter().collect::<BTreeSet<_>>(),
        "every orphan collected"
    );
    assert!(salts.len() > 1, "each run draws a fresh salt");
}

#[test]
fn duplicated_references_are_counted_twice_and_nulls_are_counted_apart() {
    let f = Fixture::new();
    let (a, b) = (id(557, "a"), id(557, "b"));
    f.blobs(&[&a, &b]);
    let dir = f.path("refs/messages");
    write_parquet(
        &dir.join("part-0.parquet"),
        vec![
            ("header", vec![Some(&a), Some(&a), None]),
            ("body", vec![Some(&b), None, None]),
        ],
    );
    let spec = format!("messages={}#header,body", dir.display());
    let out = f.run(T2, &["--refs", &spec]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (out.u("reference_count"), out.u("null_reference_count")),
        (3, 3)
    );
    assert_eq!(out.u("reference_source_count"), 1);
    assert_eq!(f.left().len(), 2, "both referenced");
}

#[test]
fn empty_store_and_empty_allowed_sources_give_zeros() {
    let f = Fixture::new();
    let refs = f.refs::<&str>("queue", &[]);
    let out = f.run(T2, &["--refs", &refs, "--allow-empty", "queue"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for key in [
        "reference_count",
        "blob_count",
        "eligible_blob_count",
        "candidate_count",
        "gced_blob_count",
        "error_count",
    ] {
        assert_eq!(out.u(key), 0, "{key}");
    }
    assert_eq!(out.status(), "completed");
}

#[test]
fn dry_run_and_plan_delete_nothing() {
    let f = Fixture::new();
    let orphan = id(557, "orphan");
    f.blobs(&[&orphan]);
    let refs = f.refs("messages", &[id(557, "other")]);
    let dry = f.run(T2, &["--refs", &refs, "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!((dry.u("candidate_count"), dry.u("gced_blob_count")), (1, 0));
    assert_eq!(dry.report.as_ref().unwrap()["dry_run"], true);
    let unverified = f.run(T2, &["--refs", &refs, "--dry-run", "--verify", "off"]);
    assert_eq!(unverified.report.as_ref().unwrap()["verified"], false);
    assert!(f.left().contains(&orphan));
}

#[test]
fn an_inventory_gives_the_same_deletions_as_a_live_listing() {
    let f = Fixture::new();
    let ids: Vec<String> = (0..40)
        .map(|i| id(550 + i % 10, &format!("b{i}")))
        .collect();
    f.blobs(&ids);
    let refs = f.refs("messages", &ids[..20]);
    // The inventory names only half of the store: only those can be deleted.
    let inv = f.path("inventory/part-0.parquet");
    let listed: Vec<Option<&str>> = ids.iter().step_by(2).map(|s| Some(s.as_str())).collect();
    let sizes: Vec<Option<&str>> = listed.iter().map(|_| Some("12")).collect();
    write_parquet(&inv, vec![("blob_id", listed), ("size_text", sizes)]);
    let bad = f.run(T2, &["--refs", &refs, "--inventory", inv.to_str().unwrap()]);
    assert_eq!(
        bad.code, 2,
        "an inventory without size is refused: {}",
        bad.stderr
    );
    assert!(bad.stderr.contains("size"), "{}", bad.stderr);

    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let listed: Vec<&str> = ids.iter().step_by(2).map(String::as_str).collect();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "blob_id",
            std::sync::Arc::new(StringArray::from(listed.clone())) as ArrayRef,
        ),
        (
            "size",
            std::sync::Arc::new(Int64Array::from(vec![12i64; listed.len()])) as ArrayRef,
        ),
    ])
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&inv).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let out = f.run(
        T2,
        &[
            "--refs",
            &refs,
            "--inventory",
            inv.to_str().unwrap(),
            "--fpp",
            "0.000001",
            "--salt",
            "s",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let expected_gone: BTreeSet<&String> = ids
        .iter()
        .enumerate()
        .filter(|(i, id)| {
            i % 2 == 0 && *i >= 20 && !id.starts_with("1_558_") && !id.starts_with("1_559_")
        })
        .map(|(_, id)| id)
        .collect();
    let gone: BTreeSet<&String> = ids.iter().filter(|id| !f.left().contains(*id)).collect();
    assert_eq!(gone, expected_gone);
    assert_eq!(out.u("blob_count"), 20);
}

#[test]
fn other_families_and_legacy_ids_are_eligible() {
    let f = Fixture::new();
    let legacy = digest("legacy");
    let other_family = format!("2_559_{}", digest("other family"));
    let current = id(559, "current");
    f.blobs(&[&legacy, &other_family, &current]);
    let refs = f.refs("messages", &[id(1, "unrelated")]);
    let out = f.run(T2, &["--refs", &refs, "--fpp", "0.000001"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.left(), BTreeSet::from([current]));
}

/// A reference may spell an id differently (`1_0557_x`, `0_0_x`): both strategies keep the blob.
/// Also when the stored key is itself a spelling with another canonical form: `0_0_0_7_y` names
/// the key `0_7_y` (family 0, delegate `0_7_y`), which James would itself write as `y`.
#[test]
fn every_spelling_of_a_reference_protects_its_blob() {
    for strategy in ["bloom", "exact"] {
        let f = Fixture::new();
        let (kept, legacy, orphan) = (id(557, "kept"), digest("legacy"), id(557, "orphan"));
        let nested = "0_7_y".to_string();
        f.blobs(&[kept.clone(), legacy.clone(), orphan.clone(), nested.clone()]);
        let respelled = kept.replacen("1_557_", "1_0557_", 1);
        let refs = f.refs(
            "messages",
            &[respelled, format!("0_0_{legacy}"), format!("0_0_{nested}")],
        );
        let out = f.run(
            T2,
            &[
                "--refs",
                &refs,
                "--strategy",
                strategy,
                "--fpp",
                "0.0000001",
            ],
        );
        assert_eq!(out.code, 0, "{strategy}: {}", out.stderr);
        assert_eq!(
            f.left(),
            std::collections::BTreeSet::from([kept, legacy, nested]),
            "{strategy}"
        );
    }
}

/// The filter and the verification read the references' fingerprints that one pass kept under
/// TMPDIR: none are left behind, and a TMPDIR it cannot write to only sends both back to the
/// references.
#[test]
fn the_fingerprint_spill_is_removed_and_an_unwritable_one_is_done_without() {
    let f = Fixture::new();
    let (orphan, referenced) = (id(557, "orphan"), id(557, "referenced"));
    f.blobs(&[&orphan, &referenced]);
    let refs = f.refs("messages", &[&referenced]);
    let tmp = f.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let not_a_dir = f.path("not-a-dir");
    std::fs::write(&not_a_dir, "a file").unwrap();
    let root = format!("file://{}", f.path("plans").display());
    for tmpdir in [&tmp, &not_a_dir] {
        let args = [
            "--refs",
            &refs,
            "--fpp",
            "0.000001",
            "--dry-run",
            "--plan-root",
            &root,
        ];
        let out = f.run_with(T2, &args, &[("TMPDIR", tmpdir.display().to_string())]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(out.report.as_ref().unwrap()["verified"], true);
        assert_eq!(out.u("candidate_count"), 1);
    }
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "spill left behind"
    );
    assert_eq!(f.left(), BTreeSet::from([orphan, referenced]));
}
