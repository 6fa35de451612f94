//! JMAP upload expiry (`blobgc uploads`): TTL, the one-hour floor, quota, shared blobs.

use crate::support::*;
use arrow::array::{
    ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use std::collections::BTreeSet;
use std::sync::Arc;

const NOW: &str = "2026-11-22T12:00:00Z";

/// An upload: id, user, blob, size, seconds before NOW.
type Upload = (&'static str, &'static str, &'static str, i64, i64);

fn setup(f: &Fixture, uploads: &[Upload]) -> String {
    let now = chrono::DateTime::parse_from_rfc3339(NOW)
        .unwrap()
        .timestamp_micros();
    let blobs: BTreeSet<&str> = uploads.iter().map(|u| u.2).collect();
    f.blobs(&blobs.into_iter().collect::<Vec<_>>());
    let batch = RecordBatch::try_from_iter(vec![
        (
            "upload_id",
            Arc::new(StringArray::from_iter_values(uploads.iter().map(|u| u.0))) as ArrayRef,
        ),
        (
            "user",
            Arc::new(StringArray::from_iter_values(uploads.iter().map(|u| u.1))),
        ),
        (
            "blob_id",
            Arc::new(StringArray::from_iter_values(uploads.iter().map(|u| u.2))),
        ),
        (
            "size",
            Arc::new(Int64Array::from_iter_values(uploads.iter().map(|u| u.3))),
        ),
        (
            "uploaded_at",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    uploads.iter().map(|u| now - u.4 * 1_000_000),
                )
                .with_timezone("UTC"),
            ),
        ),
    ])
    .unwrap();
    let path = f.path("uploads/part-0.parquet");
    write_batch(&path, &batch);
    f.path("uploads").display().to_string()
}

fn uploads(f: &Fixture, table: &str, extra: &[&str]) -> Outcome {
    let store = f.store_url();
    let out = f.path("expired.parquet").display().to_string();
    let mut args = vec![
        "uploads",
        "--uploads",
        table,
        "--store",
        &store,
        "--now",
        NOW,
        "--expired-out",
        &out,
    ];
    args.extend_from_slice(extra);
    f.blobgc(&args)
}

fn expired(f: &Fixture) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for b in read_batches(&f.path("expired.parquet")) {
        let ids = b
            .column_by_name("upload_id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let why = b
            .column_by_name("reason")
            .unwrap()
            .as_string::<i32>()
            .clone();
        for r in 0..b.num_rows() {
            out.insert((ids.value(r).to_string(), why.value(r).to_string()));
        }
    }
    out
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const DAY: i64 = 86_400;

#[test]
fn an_upload_7_days_old_is_kept_and_an_older_one_deleted() {
    let f = Fixture::new();
    let table = setup(
        &f,
        &[
            ("u1", "alice", "exactly7d", 10, 7 * DAY),
            ("u2", "alice", "older", 20, 7 * DAY + 1),
            ("u3", "bob", "fresh", 30, 60),
        ],
    );
    let out = uploads(&f, &table, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (
            out.u("expired_count"),
            out.u("gced_blob_count"),
            out.u("gced_bytes")
        ),
        (1, 1, 20)
    );
    assert_eq!(f.left(), set(&["exactly7d", "fresh"]));
    assert_eq!(expired(&f), BTreeSet::from([("u2".into(), "ttl".into())]));
}

#[test]
fn a_ttl_under_one_hour_is_refused() {
    let f = Fixture::new();
    let table = setup(&f, &[("u1", "alice", "old", 10, 30 * DAY)]);
    let out = uploads(&f, &table, &["--ttl", "59m"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("hour"), "{}", out.stderr);
    assert_eq!(f.left(), set(&["old"]));
    let out = uploads(&f, &table, &["--max-deletes-per-second", "0"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("--max-deletes-per-second"),
        "{}",
        out.stderr
    );
    assert_eq!(f.left(), set(&["old"]));
    let out = uploads(&f, &table, &["--ttl", "1h"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(f.left().is_empty());
}

#[test]
fn over_quota_the_oldest_go_until_half_the_quota_and_never_within_an_hour() {
    let f = Fixture::new();
    let table = setup(
        &f,
        &[
            ("a1", "alice", "a1", 400, 5 * DAY),
            ("a2", "alice", "a2", 400, 4 * DAY),
            ("a3", "alice", "a3", 400, 3 * DAY),
            ("b1", "bob", "b1", 400, 5 * DAY),
            ("c1", "carol", "c1", 900, 2 * 3_600),
            ("c2", "carol", "c2", 900, 1_800),
        ],
    );
    let out = uploads(&f, &table, &["--quota-bytes", "1000"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // alice 1200 > 1000: a1, a2 go (400 left <= 500); bob fits; carol: c1 goes, c2 is under
    // an hour old and stays although carol is still above half her quota.
    assert_eq!(f.left(), set(&["a3", "b1", "c2"]));
    assert_eq!(
        expired(&f),
        BTreeSet::from([
            ("a1".into(), "quota".into()),
            ("a2".into(), "quota".into()),
            ("c1".into(), "quota".into())
        ])
    );
}

#[test]
fn a_blob_shared_with_a_live_upload_is_kept() {
    let f = Fixture::new();
    let table = setup(
        &f,
        &[
            ("old", "alice", "shared", 10, 9 * DAY),
            ("new", "bob", "shared", 10, DAY),
        ],
    );
    let out = uploads(&f, &table, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.u("shared_blob_kept_count"), 1);
    assert_eq!(f.left(), set(&["shared"]));
    assert_eq!(expired(&f), BTreeSet::from([("old".into(), "ttl".into())]));
}
