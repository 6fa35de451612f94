//! The worked example of ADR 39 (seed 002), replayed under the ADR 49 rules blobgc implements:
//! blobs b1..b6 written in reference generations rg1..rg3, messages deleted at gci3 and gci4.
//! Under the n-2 rule a blob goes once its generation is two behind and nothing references it,
//! so the example ends with the ADR's final Blobs table: b3 and b4.

use crate::support::*;
use chrono::DateTime;
use std::collections::BTreeSet;

/// rg1 is generation 601 at 30 days.
fn generation_of(rg: u64) -> u64 {
    600 + rg
}

fn during(rg: u64) -> String {
    let t = generation_of(rg) as i64 * 30 * 86_400 + 3_600;
    DateTime::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn blob(name: &str, rg: u64) -> String {
    format!("1_{}_{name}", generation_of(rg))
}

#[test]
fn adr39_worked_example() {
    let f = Fixture::new();
    let blobs: Vec<(&str, u64)> = vec![
        ("b1", 1),
        ("b2", 1),
        ("b3", 2),
        ("b4", 2),
        ("b5", 3),
        ("b6", 3),
    ];
    f.blobs(&blobs.iter().map(|(b, rg)| blob(b, *rg)).collect::<Vec<_>>());
    let references = |rows: &[(&str, &str, u64)]| {
        let dir = f.path(&format!("refs/messages-{}", rand::random::<u32>()));
        let ids: Vec<String> = rows.iter().map(|(_, b, rg)| blob(b, *rg)).collect();
        write_parquet(
            &dir.join("part-0.parquet"),
            vec![
                (
                    "message_id",
                    rows.iter().map(|(m, _, _)| Some(*m)).collect(),
                ),
                ("blob_id", ids.iter().map(|s| Some(s.as_str())).collect()),
            ],
        );
        format!("messages={}", dir.display())
    };
    let gc = |rg: u64, refs: &str| {
        let out = f.run(
            &during(rg),
            &[
                "--refs",
                refs,
                "--fpp",
                "0.0000001",
                "--salt",
                "adr39",
                "--allow-empty",
                "messages",
            ],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(out.u("current_generation"), generation_of(rg));
        out
    };
    let left = || f.left();
    let named = |names: &[&str]| -> BTreeSet<String> {
        names
            .iter()
            .map(|n| {
                blobs
                    .iter()
                    .find(|(b, _)| b == n)
                    .map(|(b, rg)| blob(b, *rg))
                    .unwrap()
            })
            .collect()
    };

    // gci3, before the deletions: every blob is referenced.
    let all_refs = [
        ("m1", "b1", 1),
        ("m2", "b2", 1),
        ("m3", "b2", 1),
        ("m4", "b3", 2),
        ("m5", "b4", 2),
        ("m6", "b4", 2),
        ("m7", "b5", 3),
        ("m8", "b6", 3),
        ("m9", "b6", 3),
    ];
    gc(3, &references(&all_refs));
    assert_eq!(left(), named(&["b1", "b2", "b3", "b4", "b5", "b6"]));

    // gci3, after user1 deleted m1, m2, m7, m8 and user2 m3: rg1 is eligible, b1 and b2 go;
    // b5 is unreferenced too, but rg3 is the current generation: kept.
    let after_gci3 = [
        ("m4", "b3", 2),
        ("m5", "b4", 2),
        ("m6", "b4", 2),
        ("m9", "b6", 3),
    ];
    let out = gc(3, &references(&after_gci3));
    assert_eq!(out.u("gced_blob_count"), 2);
    assert_eq!(left(), named(&["b3", "b4", "b5", "b6"]));

    // gci4, user2 deleted m9: b3 and b4 are still referenced, rg3 is only one generation old.
    let after_gci4 = [("m4", "b3", 2), ("m5", "b4", 2), ("m6", "b4", 2)];
    gc(4, &references(&after_gci4));
    assert_eq!(left(), named(&["b3", "b4", "b5", "b6"]));

    // One generation later rg3 is eligible: b5 and b6 go. The ADR's final Blobs table.
    let out = gc(5, &references(&after_gci4));
    assert_eq!(out.u("gced_blob_count"), 2);
    assert_eq!(left(), named(&["b3", "b4"]));
}
