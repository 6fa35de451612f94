//! The generated mail-like store: blobgc, never having seen it, deletes exactly the blobs the
//! generator computed as garbage, from a live listing or from an inventory; and the example
//! job files parse.

use crate::support::Fixture;
use std::collections::BTreeSet;
use std::process::Command;

/// Generates a store of `messages` messages into the fixture; returns the blobs a GC deletes.
pub fn generate(f: &Fixture, messages: usize, seed: u64) -> BTreeSet<String> {
    let (messages, seed) = (messages.to_string(), seed.to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_blobgc-datasets"))
        .args([
            "--out",
            f.dir.path().to_str().unwrap(),
            "--messages",
            &messages,
            "--seed",
            &seed,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(f.path("expected-deleted.txt"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// The `--refs` and `--allow-empty` flags of the generated store's five reference tables.
pub fn refs(f: &Fixture) -> Vec<String> {
    let r = |name: &str, cols: &str| {
        format!(
            "--refs={name}={}{cols}",
            f.path(&format!("refs/{name}")).display()
        )
    };
    vec![
        r("messages", "#header_blob_id,body_blob_id"),
        r("attachments", ""),
        r("mail_queue", "#header_blob_id,body_blob_id"),
        r("mail_repositories", "#header_blob_id,body_blob_id"),
        r("uploads", ""),
        "--allow-empty=mail_queue".into(),
        "--allow-empty=mail_repositories".into(),
    ]
}

fn gc_deletes_exactly_the_garbage(inventory: bool, strategy: &str) {
    let f = Fixture::new();
    let expected = generate(&f, 800, 7);
    assert!(expected.len() > 100, "the dataset has garbage to collect");
    let before = f.left();
    let mut args = refs(&f);
    args.extend(
        [
            "--fpp",
            "0.0000001",
            "--salt",
            "datasets",
            "--batch-size",
            "100",
            "--strategy",
            strategy,
        ]
        .map(String::from),
    );
    let inv = f.path("inventory/part-0.parquet").display().to_string();
    if inventory {
        args.extend(["--inventory".to_string(), inv]);
    }
    let out = f.run(
        "2026-11-22T00:00:00Z",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let deleted: BTreeSet<String> = before.difference(&f.left()).cloned().collect();
    assert_eq!(deleted.len(), expected.len());
    assert_eq!(deleted, expected);
    assert_eq!(out.u("gced_blob_count"), expected.len() as u64);
    assert_eq!(out.u("blob_count"), before.len() as u64);
}

#[test]
fn a_never_seen_store_loses_exactly_its_garbage() {
    gc_deletes_exactly_the_garbage(false, "bloom");
}

#[test]
fn the_exact_strategy_deletes_exactly_the_garbage_too() {
    gc_deletes_exactly_the_garbage(true, "exact");
}

#[test]
fn an_inventory_of_it_gives_the_same_result() {
    gc_deletes_exactly_the_garbage(true, "bloom");
}

#[test]
fn example_job_files_are_valid() {
    let jobs = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs")).unwrap();
    let mut n = 0;
    for job in jobs {
        let path = job.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let resolved = if name.starts_with("incremental") {
            let args = blobgc::incremental::IncrementalArgs {
                job: Some(path.clone()),
                ..Default::default()
            };
            args.resolve().map(|_| ())
        } else if name.starts_with("uploads") {
            let args = blobgc::uploads::UploadsArgs {
                job: Some(path.clone()),
                ..Default::default()
            };
            args.resolve().map(|_| ())
        } else {
            let args = blobgc::job::JobArgs {
                job: Some(path.clone()),
                ..Default::default()
            };
            args.resolve(chrono::Utc::now).map(|_| ())
        };
        if let Err(e) = resolved {
            panic!("{}: {e}", path.display());
        }
        n += 1;
    }
    assert!(n >= 4);
}

/// The incremental mode on the generated store, from its Deletions and References tables:
/// everything it deletes is garbage.
#[test]
fn the_incremental_mode_deletes_only_garbage() {
    let f = Fixture::new();
    let expected = generate(&f, 800, 11);
    let before = f.left();
    let store = f.store_url();
    let (d, r) = (
        f.path("incremental/deletions.parquet"),
        f.path("incremental/references.parquet"),
    );
    let (d, r, out) = (
        d.display().to_string(),
        r.display().to_string(),
        f.path("remaining.parquet").display().to_string(),
    );
    let ran = f.blobgc(&[
        "incremental",
        "--store",
        &store,
        "--deletions",
        &d,
        "--references",
        &r,
        "--iteration",
        "692",
        "--current-generation",
        "692",
        "--deletions-out",
        &out,
        "--fpp",
        "0.0000001",
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let deleted: BTreeSet<String> = before.difference(&f.left()).cloned().collect();
    assert!(deleted.len() > 50, "{}", deleted.len());
    assert!(
        deleted.is_subset(&expected),
        "{:?}",
        deleted.difference(&expected)
    );
    assert_eq!(ran.u("gced_blob_count"), deleted.len() as u64);
    assert!(
        ran.u("remaining_deletion_rows") > 0,
        "young and still-referenced rows stay"
    );
}
