//! The circuit breakers, the lease and the quarantine: each stops or diverts deletion, and each
//! test checks the store's contents afterwards.

use crate::support::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// `n` eligible blobs named `{tag}{i}`.
fn blobs(f: &Fixture, tag: &str, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| id(557, &format!("{tag}{i}"))).collect();
    f.blobs(&ids);
    ids
}

fn all(f: &Fixture) -> BTreeSet<String> {
    f.left()
}

/// `blobgc run` at T2 with a filter so tight that every orphan is collected.
fn run(f: &Fixture, args: &[&str]) -> Outcome {
    let mut all = vec!["--fpp", "0.0000001"];
    all.extend_from_slice(args);
    f.run(T2, &all)
}

#[test]
fn deleting_more_than_the_fraction_aborts_and_deletes_nothing() {
    let f = Fixture::new();
    let orphans = blobs(&f, "orphan", 150);
    let kept = blobs(&f, "kept", 50);
    let refs = f.refs("messages", &kept);
    let before = all(&f);
    let out = run(&f, &["--refs", &refs]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("--max-delete-fraction"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("150 of 200 eligible"), "{}", out.stderr);
    assert_eq!(all(&f), before);

    let out = run(&f, &["--refs", &refs, "--max-delete-fraction", "0.8"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(all(&f), kept.into_iter().collect());
    assert!(orphans.iter().all(|o| !f.left().contains(o)));
}

#[test]
fn deleting_more_than_a_cap_aborts_and_deletes_nothing() {
    let f = Fixture::new();
    let orphans = blobs(&f, "orphan", 20);
    let kept = blobs(&f, "kept", 20);
    let refs = f.refs("messages", &kept);
    let before = all(&f);
    for (flag, cap) in [("--max-delete-count", "19"), ("--max-delete-bytes", "1")] {
        let out = run(&f, &["--refs", &refs, flag, cap]);
        assert_eq!(out.code, 3, "{flag}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{flag} {cap}")),
            "{}",
            out.stderr
        );
        assert_eq!(all(&f), before, "{flag}: nothing deleted");
    }
    let out = run(&f, &["--refs", &refs, "--max-delete-count", "20"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.u("gced_blob_count"), orphans.len() as u64);
    assert_eq!(all(&f), kept.into_iter().collect());
}

/// A generation duration that is not the application's makes the generation it writes to look
/// old: one under a day, or one changed since the last run against the store, stops the run
/// until the flag naming the risk is given.
#[test]
fn a_short_or_changed_generation_duration_stops_the_run() {
    let f = Fixture::new();
    let orphans = blobs(&f, "orphan", 5);
    let kept = blobs(&f, "kept", 5);
    let refs = f.refs("messages", &kept);
    let root = f.path("plans").display().to_string();
    let before = all(&f);
    let short = run(&f, &["--refs", &refs, "--generation-duration", "12h"]);
    assert_eq!(short.code, 3, "{}", short.stderr);
    assert!(short.stderr.contains("43200 s"), "{}", short.stderr);
    assert!(
        short.stderr.contains("--allow-short-generations"),
        "{}",
        short.stderr
    );

    let dry = ["--refs", &refs, "--plan-root", &root, "--dry-run"];
    let first = run(&f, &dry);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let changed = [&dry[..], &["--generation-duration", "7d"]].concat();
    let out = run(&f, &changed);
    assert_eq!(out.code, 3, "{}", out.stderr);
    for needle in ["604800 s", "2592000 s", "--allow-generation-change"] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    assert_eq!(all(&f), before, "nothing deleted");
    let allowed = [
        &dry[..4],
        &["--generation-duration", "7d", "--allow-generation-change"],
    ]
    .concat();
    let out = run(&f, &allowed);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.u("gced_blob_count"), orphans.len() as u64);
    assert_eq!(all(&f), kept.into_iter().collect());
}

#[test]
fn a_source_that_shrank_since_the_previous_run_aborts() {
    let f = Fixture::new();
    let ids = blobs(&f, "b", 400);
    let root = f.path("plans").display().to_string();
    let full = f.refs("messages", &ids);
    let first = run(&f, &["--refs", &full, "--plan-root", &root]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.u("gced_blob_count"), 0);

    let truncated = f.refs("messages", &ids[..150]);
    let out = run(&f, &["--refs", &truncated, "--plan-root", &root]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    for needle in [
        "\"messages\"",
        "150 rows",
        "250 fewer",
        "--max-source-shrink",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    assert_eq!(all(&f).len(), 400, "nothing deleted");

    // The shrink is real: the operator lets this run through once.
    let out = run(
        &f,
        &[
            "--refs",
            &truncated,
            "--plan-root",
            &root,
            "--max-source-shrink",
            "1",
            "--max-delete-fraction",
            "1",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(all(&f), ids[..150].iter().cloned().collect());
}

#[test]
fn references_to_blobs_the_listing_lacks_abort() {
    let f = Fixture::new();
    let listed = blobs(&f, "here", 200);
    let elsewhere: Vec<String> = (0..150).map(|i| id(557, &format!("gone{i}"))).collect();
    let mut refs = listed.clone();
    refs.extend(elsewhere);
    let refs = f.refs("messages", &refs);
    let out = run(&f, &["--refs", &refs]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("absent from the listing"),
        "{}",
        out.stderr
    );
    let missing = out.u("missing_reference_count");
    assert!((140..=160).contains(&missing), "{missing}");
    let distinct = out.u("distinct_reference_count");
    assert!((340..=360).contains(&distinct), "{distinct}");
    assert_eq!(out.u("referenced_blob_count"), 200);
    assert_eq!(all(&f).len(), 200);
}

fn lease_file(f: &Fixture) -> std::path::PathBuf {
    let digest = Sha256::digest(f.store_url().as_bytes());
    let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    f.path(&format!("plans/leases/{}.json", &name[..16]))
}

fn hold_lease(f: &Fixture, expires_at: &str) {
    let path = lease_file(f);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let lease = serde_json::json!({
        "run_id": "20261122T000000-0000beef",
        "host": "other-host",
        "pid": 4242,
        "store": f.store_url(),
        "acquired_at": "2026-11-22T00:00:00Z",
        "expires_at": expires_at,
    });
    std::fs::write(path, lease.to_string()).unwrap();
}

#[test]
fn a_second_run_against_a_leased_store_exits_5_naming_the_holder() {
    let f = Fixture::new();
    let orphan = id(557, "orphan");
    f.blobs(std::slice::from_ref(&orphan));
    let refs = f.refs("messages", &[id(557, "elsewhere")]);
    let root = f.path("plans").display().to_string();
    hold_lease(&f, "2999-01-01T00:00:00Z");
    let out = run(&f, &["--refs", &refs, "--plan-root", &root]);
    assert_eq!(out.code, 5, "locked, retry later: {}", out.stderr);
    for needle in ["20261122T000000-0000beef", "other-host", "4242"] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    assert!(f.left().contains(&orphan));

    // A lease past its expiry belongs to a dead run: taken over, and given back at the end.
    hold_lease(&f, "2000-01-01T00:00:00Z");
    let out = run(&f, &["--refs", &refs, "--plan-root", &root]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!f.left().contains(&orphan));
    assert!(!lease_file(&f).exists(), "the lease is released");
}

/// The quarantined blobs: `run_id/blob_id` below `dir`.
fn quarantined(dir: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for run in std::fs::read_dir(dir).into_iter().flatten() {
        let run = run.unwrap();
        for blob in std::fs::read_dir(run.path()).unwrap() {
            out.insert(blob.unwrap().file_name().into_string().unwrap());
        }
    }
    out
}

#[test]
fn quarantine_then_restore_then_purge() {
    let f = Fixture::new();
    let orphans = blobs(&f, "orphan", 5);
    let kept = blobs(&f, "kept", 5);
    let refs = f.refs("messages", &kept);
    let q = f.path("quarantine");
    let q_url = q.display().to_string();
    let args = [
        "--refs",
        &refs,
        "--quarantine",
        &q_url,
        "--max-delete-fraction",
        "1",
    ];

    let out = run(&f, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(all(&f), kept.iter().cloned().collect());
    assert_eq!(quarantined(&q), orphans.iter().cloned().collect());

    let store = f.store_url();
    let back = f.blobgc(&["restore", "--quarantine", &q_url, "--store", &store]);
    assert_eq!(back.code, 0, "{}", back.stderr);
    assert_eq!(back.u("restored_blob_count"), 5);
    assert_eq!(all(&f).len(), 10);
    assert!(quarantined(&q).is_empty());
    let content = std::fs::read_to_string(f.store().join(&orphans[0])).unwrap();
    assert_eq!(content, format!("content of {}", orphans[0]));

    let out = run(&f, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(quarantined(&q).len(), 5);
    let now = chrono::Utc::now();
    let at = |days: i64| (now + chrono::Duration::days(days)).to_rfc3339();
    let early = f.blobgc(&[
        "purge",
        "--quarantine",
        &q_url,
        "--older-than",
        "7d",
        "--now",
        &at(1),
    ]);
    assert_eq!(early.code, 0, "{}", early.stderr);
    assert_eq!(
        (early.u("purged_blob_count"), early.u("kept_blob_count")),
        (0, 5)
    );
    assert_eq!(quarantined(&q).len(), 5);
    let late = f.blobgc(&[
        "purge",
        "--quarantine",
        &q_url,
        "--older-than",
        "7d",
        "--now",
        &at(8),
    ]);
    assert_eq!(late.code, 0, "{}", late.stderr);
    assert_eq!(late.u("purged_blob_count"), 5);
    assert!(quarantined(&q).is_empty());
    assert_eq!(all(&f), kept.into_iter().collect());
}

#[test]
fn a_quarantine_inside_the_store_is_never_listed() {
    let f = Fixture::new();
    let orphans = blobs(&f, "orphan", 3);
    let kept = blobs(&f, "kept", 3);
    let refs = f.refs("messages", &kept);
    let q = f.store().join("quarantine");
    let q_url = q.display().to_string();
    let args = [
        "--refs",
        &refs,
        "--quarantine",
        &q_url,
        "--max-delete-fraction",
        "1",
    ];
    for _ in 0..2 {
        let out = run(&f, &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(out.u("malformed_id_count"), 0);
    }
    let mut expected: BTreeSet<String> = kept.into_iter().collect();
    expected.insert("quarantine".into());
    assert_eq!(all(&f), expected);
    assert_eq!(quarantined(&q), orphans.into_iter().collect());

    let store = f.store_url();
    let out = run(&f, &["--refs", &refs, "--quarantine", &store]);
    assert_eq!(
        out.code, 2,
        "the store itself as quarantine: {}",
        out.stderr
    );
}

#[test]
fn a_plan_under_a_plan_root_is_swept_under_its_lease() {
    let f = Fixture::new();
    let orphan = id(557, "orphan");
    f.blobs(std::slice::from_ref(&orphan));
    let refs = f.refs("messages", &[id(557, "elsewhere")]);
    let (store, root) = (f.store_url(), f.path("plans").display().to_string());
    let planned = f.blobgc(&[
        "plan",
        "--store",
        &store,
        "--now",
        T2,
        "--refs",
        &refs,
        "--plan-root",
        &root,
    ]);
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    let plan = planned.report.as_ref().unwrap()["plan"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(plan.contains("/plans/2"), "{plan}");
    assert!(f.left().contains(&orphan), "planning deletes nothing");
    hold_lease(&f, "2999-01-01T00:00:00Z");
    let refused = f.blobgc(&["sweep", "--plan", &plan]);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(f.left().contains(&orphan));
    std::fs::remove_file(lease_file(&f)).unwrap();
    let swept = f.blobgc(&["sweep", "--plan", &plan]);
    assert_eq!(swept.code, 0, "{}", swept.stderr);
    assert!(!f.left().contains(&orphan));
    assert!(!lease_file(&f).exists());
}

/// Where the references are read twice (a cluster, or here a TMPDIR that is a file, so no
/// fingerprint spill), the estimating pass is spared by the last run's count.
#[test]
fn a_nightly_run_sizes_its_filter_from_the_last_run_and_rebuilds_it_when_references_outgrew_it() {
    let f = Fixture::new();
    let ids = blobs(&f, "n", 1000);
    let root = f.path("plans").display().to_string();
    let store = f.store_url();
    let no_spill = f.path("not-a-dir");
    std::fs::write(&no_spill, "a file").unwrap();
    let night_in = |tmpdir: &std::path::Path, refs: &[String], extra: &[&str]| {
        let refs = f.refs("messages", refs);
        let mut args = vec![
            "run",
            "--store",
            &store,
            "--now",
            T2,
            // So tight that every orphan is collected.
            "--fpp",
            "0.0000001",
            "--refs",
            &refs,
            "--plan-root",
            &root,
            "--max-delete-fraction",
            "1",
        ];
        args.extend_from_slice(extra);
        let env = [
            ("RUST_LOG", "blobgc=info".to_string()),
            ("TMPDIR", tmpdir.display().to_string()),
        ];
        f.blobgc_with(&args, &env)
    };
    let night = |refs: &[String], extra: &[&str]| night_in(&no_spill, refs, extra);
    let rebuilt = "building the filter again";

    // Night 1, a dry run: 100 distinct references, each 8 times.
    let shared: Vec<String> = ids[..100].iter().cycle().take(800).cloned().collect();
    let first = night(&shared, &["--dry-run"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(all(&f).len(), 1000);

    // Night 2: as many rows, 800 distinct. The filter sized from night 1 overfills: it is built
    // again from an estimate, and only the 200 unreferenced blobs go.
    let second = night(&ids[..800], &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(second.stderr.contains(rebuilt), "{}", second.stderr);
    assert_eq!(all(&f), ids[..800].iter().cloned().collect());
    let sized = second.u("bloom_filter_expected_blob_count");
    assert!((800..=900).contains(&sized), "sized for {sized}");
    let plan = second
        .report
        .as_ref()
        .and_then(|r| r["plan"].as_str())
        .unwrap_or_default();
    // Files and the shards' directories that still hold any (a local store leaves empty ones).
    let filters: Vec<String> = std::fs::read_dir(plan.trim_start_matches("file://"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.is_dir() || std::fs::read_dir(p).unwrap().next().is_some())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("filter-"))
        .collect();
    // Its manifest and its shards' directory.
    assert_eq!(filters.len(), 2, "only the filter used stays: {filters:?}");
    assert!(
        filters.iter().all(|name| name.contains("-resized")),
        "{filters:?}"
    );

    // Night 3, the same references: sized from night 2's count, without the estimating pass.
    let third = night(&ids[..800], &[]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert!(!third.stderr.contains(rebuilt), "{}", third.stderr);
    let from_night_2 = (second.u("distinct_reference_count") as f64 * 1.05).ceil() as u64;
    assert_eq!(
        third.u("bloom_filter_expected_blob_count"),
        from_night_2.min(800)
    );
    assert_eq!(all(&f), ids[..800].iter().cloned().collect());

    // With its spill, a run reads the references once and sizes from its own sketch.
    let tmp = f.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let shared: Vec<String> = ids[..800].iter().cycle().take(2400).cloned().collect();
    let fourth = night_in(&tmp, &shared, &[]);
    assert_eq!(fourth.code, 0, "{}", fourth.stderr);
    assert!(!fourth.stderr.contains(rebuilt), "{}", fourth.stderr);
    let sized = fourth.u("bloom_filter_expected_blob_count");
    assert!((800..=900).contains(&sized), "sized for {sized}");
    assert_eq!(all(&f), ids[..800].iter().cloned().collect());
}

/// A run's clock ahead of the store's makes the generation still written to look old: a run
/// reading its clock (no `--now`) compares it with the time the store stamps an object it
/// writes, and stops beyond `--max-clock-skew`.
#[tokio::test(flavor = "multi_thread")]
async fn a_clock_far_from_the_store_s_stops_the_run() {
    use blobgc::{Job, Location, PlanDir, PlanStatus, Progress, SourceSpec};
    let f = Fixture::new();
    let orphan = id(557, "orphan");
    f.blobs(std::slice::from_ref(&orphan));
    let refs = f.refs("messages", &[id(557, "elsewhere")]);
    let spec = SourceSpec::parse_flag(&refs).unwrap();
    let ahead = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut job = Job::new(f.store_url(), vec![spec], ahead);
    job.check_clock = true;
    let plan = f.path("plan").display().to_string();
    let dir = PlanDir::new(Location::parse(&plan, "plan", &Default::default()).unwrap());
    let summary = blobgc::plan(&job, &dir, &Progress::silent()).await.unwrap();
    assert_eq!(summary.status, PlanStatus::Aborted);
    let reason = summary.abort_reason.unwrap_or_default();
    assert!(reason.contains("--max-clock-skew 900 s"), "{reason}");
    assert!(summary.batches.is_empty());

    // The same run with its own clock, from the command line: the clocks agree.
    let out = f.blobgc(&[
        "run",
        "--store",
        &f.store_url(),
        "--refs",
        &refs,
        "--fpp",
        "0.000001",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!f.left().contains(&orphan));
}

/// An id of a generation after the current one (a writer's clock ahead, or this run's behind)
/// is kept, counted and named in the report.
#[test]
fn ids_of_a_future_generation_are_kept_and_counted() {
    let f = Fixture::new();
    let (future, orphan) = (id(600, "future"), id(557, "orphan"));
    f.blobs(&[&future, &orphan]);
    let refs = f.refs("messages", &[id(557, "elsewhere")]);
    let out = run(&f, &["--refs", &refs]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        (out.u("future_id_count"), out.u("malformed_id_count")),
        (1, 0)
    );
    assert_eq!(
        out.report.as_ref().unwrap()["future_ids"][0],
        future.as_str()
    );
    assert_eq!(all(&f), BTreeSet::from([future]));
}

/// SIGTERM mid-sweep (a pod's eviction, an orchestrator's timeout): the batches in flight
/// finish, no other starts, the lease is given back, the run exits 4 (partial), and `blobgc
/// sweep --plan` deletes the rest.
#[test]
fn a_run_sent_sigterm_mid_sweep_stops_partial_and_resumes() {
    let f = Fixture::new();
    let orphans = blobs(&f, "orphan", 40);
    let kept = blobs(&f, "kept", 5);
    let refs = f.refs("messages", &kept);
    let mut child = slow_run(&f, &refs, "10m", "4");
    until_deleted(&f, orphans.len() + kept.len(), 2);
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(4));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.path(SLOW_REPORT)).unwrap()).unwrap();
    assert_eq!(report["status"], "partial");
    assert!(
        report["stopped_batch_count"].as_u64().unwrap() > 0,
        "{report}"
    );
    let left = all(&f);
    assert!(
        left.len() > kept.len(),
        "the sweep stopped early: {}",
        left.len()
    );
    assert!(!lease_file(&f).exists(), "the lease is given back");

    let plan = report["plan"].as_str().unwrap();
    let resumed = f.blobgc(&["sweep", "--plan", plan]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(all(&f), kept.into_iter().collect());
}

/// Where [`slow_run`] writes its report, below the fixture.
const SLOW_REPORT: &str = "slow-run.json";

/// `blobgc run` under a plan root with a lease of `ttl`, its sweep slowed to `per_second`
/// batches, its report in [`SLOW_REPORT`].
fn slow_run(f: &Fixture, refs: &str, ttl: &str, per_second: &str) -> std::process::Child {
    let root = f.path("plans").display().to_string();
    std::process::Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args([
            "run",
            "--store",
            &f.store_url(),
            "--now",
            T2,
            "--refs",
            refs,
        ])
        .args([
            "--plan-root",
            &root,
            "--lease-ttl",
            ttl,
            "--fpp",
            "0.0000001",
        ])
        .args(["--batch-size", "1", "--delete-concurrency", "1"])
        .args(["--max-deletes-per-second", per_second, "--report"])
        .arg(f.path(SLOW_REPORT))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `n` blobs are gone from the store.
fn until_deleted(f: &Fixture, before: usize, n: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while all(f).len() > before - n {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A run renews its lease while it works: a second run, started after the TTL has passed
/// since the first took it, is still refused (exit 5), and the first completes.
#[test]
fn a_working_run_keeps_its_lease_past_the_ttl() {
    let f = Fixture::new();
    let orphans = blobs(&f, "orphan", 24);
    let kept = blobs(&f, "kept", 2);
    let refs = f.refs("messages", &kept);
    let mut first = slow_run(&f, &refs, "2s", "4");
    until_deleted(&f, orphans.len() + kept.len(), 1);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let second = run(
        &f,
        &[
            "--refs",
            &refs,
            "--plan-root",
            &f.path("plans").display().to_string(),
        ],
    );
    assert_eq!(second.code, 5, "{}", second.stderr);
    assert_eq!(first.wait().unwrap().code(), Some(0));
    assert_eq!(all(&f), kept.into_iter().collect());
    assert!(!lease_file(&f).exists());
}

/// A run killed outright (SIGKILL: no chance to give its lease back) holds the store for at
/// most its TTL: a run right after is refused (exit 5), one after the TTL takes over.
#[test]
fn a_killed_run_frees_its_store_within_the_ttl() {
    let f = Fixture::new();
    let orphans = blobs(&f, "orphan", 24);
    let kept = blobs(&f, "kept", 2);
    let refs = f.refs("messages", &kept);
    let mut first = slow_run(&f, &refs, "3s", "2");
    until_deleted(&f, orphans.len() + kept.len(), 1);
    first.kill().unwrap();
    first.wait().unwrap();
    let root = f.path("plans").display().to_string();
    let refused = run(&f, &["--refs", &refs, "--plan-root", &root]);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    std::thread::sleep(std::time::Duration::from_millis(3_500));
    let taken = run(&f, &["--refs", &refs, "--plan-root", &root]);
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    assert_eq!(all(&f), kept.into_iter().collect());
}

/// `blobgc unlock` says whose the lease was; it refuses a live one (or another run's when
/// `--run` names one) unless `--force`, and removes a stale one.
#[test]
fn unlock_refuses_a_live_lease_and_removes_a_stale_one() {
    let f = Fixture::new();
    let root = f.path("plans").display().to_string();
    let store = f.store_url();
    let unlock = |extra: &[&str]| {
        let mut args = vec![
            "unlock",
            "--plan-root",
            root.as_str(),
            "--store",
            store.as_str(),
        ];
        args.extend_from_slice(extra);
        f.blobgc(&args)
    };
    let nothing = unlock(&[]);
    assert_eq!(nothing.code, 0, "{}", nothing.stderr);
    assert_eq!(nothing.report.as_ref().unwrap()["removed"], false);

    hold_lease(&f, "2999-01-01T00:00:00Z");
    let live = unlock(&[]);
    assert_eq!(live.code, 3, "{}", live.stderr);
    assert!(live.stderr.contains("other-host") && live.stderr.contains("--force"));
    let other = unlock(&["--run", "another-run", "--force"]);
    assert_eq!(other.code, 3, "{}", other.stderr);
    assert!(lease_file(&f).exists());
    let forced = unlock(&["--run", "20261122T000000-0000beef", "--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(!lease_file(&f).exists());

    hold_lease(&f, "2000-01-01T00:00:00Z");
    let stale = unlock(&[]);
    assert_eq!(stale.code, 0, "{}", stale.stderr);
    assert_eq!(
        stale.report.as_ref().unwrap()["holder"]["host"],
        "other-host"
    );
    assert!(!lease_file(&f).exists());
}
