//! blobgc against a real S3 server (SeaweedFS on 127.0.0.1): a generated store with its
//! references and plan on S3, a sweep killed and resumed, and faults injected by a proxy.

use crate::fault_proxy::{FAIL_DELETES, FaultProxy, TRANSIENT};
use crate::s3_server::{self, BUCKET, PORT};
use crate::support::*;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Uploads every file below `dir` to `prefix/<relative path>`.
pub(crate) fn upload_dir(s3: &impl ObjectStore, dir: &std::path::Path, prefix: &str) {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
            }
        }
    }
    rt().block_on(async {
        futures::stream::iter(files)
            .map(|f| async move {
                let rel = f.strip_prefix(dir).unwrap().to_str().unwrap().to_string();
                let key = Path::parse(format!("{prefix}/{rel}")).unwrap();
                s3.put(&key, std::fs::read(&f).unwrap().into()).await
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
    });
}

pub(crate) fn put_blobs(s3: &impl ObjectStore, prefix: &str, ids: &[String]) {
    rt().block_on(async {
        futures::stream::iter(ids)
            .map(|id| async move {
                s3.put(
                    &Path::parse(format!("{prefix}/{id}")).unwrap(),
                    id.clone().into_bytes().into(),
                )
                .await
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
    });
}

pub(crate) fn keys(s3: &impl ObjectStore, prefix: &str) -> BTreeSet<String> {
    let p = Path::parse(prefix).unwrap();
    rt().block_on(s3.list(Some(&p)).try_collect::<Vec<_>>())
        .unwrap()
        .iter()
        .map(|m| blobgc::listing::key_below(&p, &m.location).to_string())
        .collect()
}

pub(crate) fn url(prefix: &str, rest: &str) -> String {
    format!("s3://{BUCKET}/{prefix}/{rest}")
}

#[test]
fn a_generated_store_on_s3_loses_exactly_its_garbage() {
    let (server, s3, f, p) = s3_case("e2e");
    let expected = crate::datasets::generate(&f, 9000, 11);
    upload_dir(&s3, &f.path("store"), &format!("{p}/store"));
    upload_dir(&s3, &f.path("refs"), &format!("{p}/refs"));
    let before = keys(&s3, &format!("{p}/store"));
    assert!(before.len() >= 20_000, "{} blobs", before.len());

    let refs = |name: &str, cols: &str| {
        format!("--refs={name}={}{cols}", url(&p, &format!("refs/{name}")))
    };
    let (store, plan) = (url(&p, "store"), url(&p, "plan"));
    let args = [
        "run",
        "--store",
        &store,
        "--now",
        "2026-11-22T00:00:00Z",
        "--plan-dir",
        &plan,
        &refs("messages", "#header_blob_id,body_blob_id"),
        &refs("attachments", ""),
        &refs("mail_queue", "#header_blob_id,body_blob_id"),
        &refs("mail_repositories", "#header_blob_id,body_blob_id"),
        &refs("uploads", ""),
        "--allow-empty=mail_queue",
        "--allow-empty=mail_repositories",
        "--fpp",
        "0.0000001",
        "--salt",
        "s3",
        "--list-concurrency",
        "8",
    ];
    let run = f.blobgc_with(&args, &s3_server::env(&server.endpoint));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.u("blob_count"),
        before.len() as u64,
        "every key listed exactly once"
    );
    assert_eq!(run.u("gced_blob_count"), expected.len() as u64);
    let left = keys(&s3, &format!("{p}/store"));
    let deleted: BTreeSet<String> = before.difference(&left).cloned().collect();
    assert_eq!(deleted, expected, "exactly the garbage is gone");
    assert!(
        keys(&s3, &format!("{p}/plan")).contains("summary.json"),
        "the plan lives on S3"
    );
    assert!(
        !run.stdout.contains("testsecret") && !run.stderr.contains("testsecret"),
        "no credentials in output"
    );
}

/// The server, a client of it, a fixture and a fresh key prefix for test `name`.
fn s3_case(name: &str) -> (&'static s3_server::S3Server, AmazonS3, Fixture, String) {
    let server = s3_server::server();
    (
        server,
        s3_server::client(&server.endpoint),
        Fixture::new(),
        s3_server::prefix(name),
    )
}

/// `n` orphans and 50 referenced blobs under `p/store`, references under `p/refs`.
pub(crate) fn orphans_on_s3(
    s3: &AmazonS3,
    f: &Fixture,
    p: &str,
    n: usize,
) -> (Vec<String>, Vec<String>) {
    let orphans: Vec<String> = (0..n).map(|i| id(557, &format!("o{i}"))).collect();
    let kept: Vec<String> = (0..50).map(|i| id(557, &format!("k{i}"))).collect();
    put_blobs(s3, &format!("{p}/store"), &orphans);
    put_blobs(s3, &format!("{p}/store"), &kept);
    let local = f.refs("messages", &kept);
    let dir = local.split_once('=').unwrap().1;
    upload_dir(s3, std::path::Path::new(dir), &format!("{p}/refs/messages"));
    (orphans, kept)
}

/// `blobgc plan` of the store made by [`orphans_on_s3`] at T2, the plan on S3 too.
fn plan_on_s3(
    f: &Fixture,
    p: &str,
    batch_size: usize,
    env: &[(&str, String)],
) -> (Outcome, String) {
    let (store, plan, refs) = (
        url(p, "store"),
        url(p, "plan"),
        format!("messages={}", url(p, "refs/messages")),
    );
    let batch_size = batch_size.to_string();
    let args = [
        "plan",
        "--store",
        &store,
        "--now",
        T2,
        "--refs",
        &refs,
        "--out",
        &plan,
        "--batch-size",
        &batch_size,
        "--fpp",
        "0.0000001",
        // Almost every blob is an orphan here: these tests are about the sweep, not the breaker.
        "--max-delete-fraction",
        "1",
    ];
    (f.blobgc_with(&args, env), plan)
}

#[test]
fn a_sweep_killed_midway_finishes_on_rerun_counting_each_blob_once() {
    let (server, s3, f, p) = s3_case("kill");
    let (orphans, kept) = orphans_on_s3(&s3, &f, &p, 3000);
    let env = s3_server::env(&server.endpoint);
    let (planned, plan) = plan_on_s3(&f, &p, 50, &env);
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    assert_eq!(planned.u("candidate_count"), 3000);

    let mut child = Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args([
            "sweep",
            "--plan",
            &plan,
            "--max-deletes-per-second",
            "600",
            "--delete-concurrency",
            "4",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let midway = keys(&s3, &format!("{p}/store")).len();
    assert!(
        midway > kept.len() && midway < orphans.len() + kept.len(),
        "killed midway: {midway} blobs left"
    );

    let resumed = f.blobgc_with(&["sweep", "--plan", &plan], &env);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed.u("skipped_batch_count") > 0,
        "finished batches are skipped"
    );
    assert_eq!(
        resumed.u("gced_blob_count") + resumed.u("previously_gced_blob_count"),
        3000,
        "each candidate counted once"
    );
    assert_eq!(
        keys(&s3, &format!("{p}/store")),
        kept.into_iter().collect(),
        "every candidate gone, nothing else"
    );
}

#[test]
fn transient_faults_are_retried_to_completion() {
    let (_, s3, f, p) = s3_case("transient");
    let (_, kept) = orphans_on_s3(&s3, &f, &p, 400);
    let proxy = FaultProxy::start(PORT, TRANSIENT);
    let (store, refs) = (
        url(&p, "store"),
        format!("messages={}", url(&p, "refs/messages")),
    );
    let run = f.blobgc_with(
        &[
            "run",
            "--store",
            &store,
            "--now",
            T2,
            "--refs",
            &refs,
            "--batch-size",
            "10",
            "--fpp",
            "0.0000001",
            "--s3-retry-timeout",
            "60",
            "--max-delete-fraction",
            "1",
        ],
        &s3_server::env(&proxy.endpoint),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!((run.u("gced_blob_count"), run.u("error_count")), (400, 0));
    assert!(
        proxy.faults.load(std::sync::atomic::Ordering::Relaxed) >= 3,
        "faults were injected"
    );
    assert_eq!(keys(&s3, &format!("{p}/store")), kept.into_iter().collect());
}

#[test]
fn persistent_faults_leave_a_partial_sweep_that_a_rerun_completes() {
    let (_, s3, f, p) = s3_case("persistent");
    let (_, kept) = orphans_on_s3(&s3, &f, &p, 120);
    let proxy = FaultProxy::start(PORT, FAIL_DELETES);
    let env = s3_server::env(&proxy.endpoint);
    let (planned, plan) = plan_on_s3(&f, &p, 40, &env);
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    let sweep = [
        "sweep",
        "--plan",
        plan.as_str(),
        "--s3-max-retries",
        "1",
        "--s3-retry-timeout",
        "2",
    ];
    let partial = f.blobgc_with(&sweep, &env);
    assert_eq!(partial.code, 4, "{}", partial.stderr);
    let batches = planned.u("batch_count");
    assert!(batches >= 3, "{batches} batches of at most 40");
    assert_eq!(
        (
            partial.status(),
            partial.u("error_count"),
            partial.u("gced_blob_count")
        ),
        ("partial", batches, 0)
    );
    assert_eq!(
        partial.report.as_ref().unwrap()["failed_batches"]
            .as_array()
            .unwrap()
            .len() as u64,
        batches
    );
    assert_eq!(
        keys(&s3, &format!("{p}/store")).len(),
        170,
        "nothing deleted"
    );

    proxy.set_mode(crate::fault_proxy::PASS);
    let resumed = f.blobgc_with(&sweep, &env);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(resumed.u("gced_blob_count"), 120);
    assert_eq!(keys(&s3, &format!("{p}/store")), kept.into_iter().collect());
}

#[test]
fn the_lease_and_the_quarantine_hold_on_s3() {
    use sha2::{Digest, Sha256};
    let (server, s3, f, p) = s3_case("lease");
    let (orphans, kept) = orphans_on_s3(&s3, &f, &p, 40);
    let env = s3_server::env(&server.endpoint);
    let (store, root, quarantine) = (url(&p, "store"), url(&p, "plans"), url(&p, "quarantine"));
    let refs = format!("messages={}", url(&p, "refs/messages"));
    let run = || {
        f.blobgc_with(
            &[
                "run",
                "--store",
                &store,
                "--now",
                T2,
                "--refs",
                &refs,
                "--fpp",
                "0.0000001",
                "--plan-root",
                &root,
                "--quarantine",
                &quarantine,
            ],
            &env,
        )
    };
    let name: String = Sha256::digest(store.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let lease = Path::parse(format!("{p}/plans/leases/{}.json", &name[..16])).unwrap();
    let holder = serde_json::json!({
        "run_id": "20261122T000000000-0000beef", "host": "other-host", "pid": 4242,
        "store": store, "acquired_at": "2026-11-22T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z",
    });
    rt().block_on(s3.put(&lease, holder.to_string().into_bytes().into()))
        .unwrap();
    let before = keys(&s3, &format!("{p}/store"));
    let refused = run();
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(refused.stderr.contains("other-host"), "{}", refused.stderr);
    assert_eq!(keys(&s3, &format!("{p}/store")), before);

    rt().block_on(s3.delete(&lease)).unwrap();
    let done = run();
    assert_eq!(done.code, 0, "{}", done.stderr);
    assert_eq!(
        keys(&s3, &format!("{p}/store")),
        kept.iter().cloned().collect()
    );
    let moved: BTreeSet<String> = keys(&s3, &format!("{p}/quarantine"))
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(moved, orphans.iter().cloned().collect());
    assert!(keys(&s3, &format!("{p}/plans/leases")).is_empty());

    let restored = f.blobgc_with(
        &["restore", "--quarantine", &quarantine, "--store", &store],
        &env,
    );
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert_eq!(keys(&s3, &format!("{p}/store")), before);
    assert!(keys(&s3, &format!("{p}/quarantine")).is_empty());
}
