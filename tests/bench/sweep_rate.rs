//! What the object-store benchmarks share: generated keys, and one round of the sweep
//! comparison, blobgc's sweep of a plan vs raw object_store bulk deletes of as many objects,
//! in batches of the same size, at the same concurrency.

// Shared with the tests, which use all of it.
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use blobgc::job::Job;
use blobgc::plan::plan;
use blobgc::plan_dir::PlanDir;
use blobgc::progress::Progress;
use blobgc::references::SourceSpec;
use blobgc::store::{Location, S3Options};
use blobgc::sweep::{SweepOptions, sweep};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::time::Instant;

/// Requests (raw) or batches (blobgc) at once.
pub const CONCURRENCY: usize = 4;

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn ids(n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            use base64::Engine;
            use sha2::Digest;
            let d = base64::engine::general_purpose::URL_SAFE
                .encode(sha2::Sha256::digest(format!("{tag}{i}")));
            if i % 10 == 0 {
                d
            } else {
                format!("1_{}_{d}", 540 + i % 12)
            }
        })
        .collect()
}

pub async fn put_all(s3: &impl ObjectStore, prefix: &str, ids: &[String]) {
    futures::stream::iter(ids)
        .map(|id| async move {
            s3.put(&Path::parse(format!("{prefix}/{id}")).unwrap(), "x".into())
                .await
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Where a round puts its objects: `raw` (a prefix of `client`'s bucket) for the raw deletes,
/// `root` (a URL of the same bucket) for blobgc's store, references and plan.
pub struct Places<'a, S> {
    pub client: &'a S,
    pub raw: &'a str,
    pub root: &'a str,
    pub options: &'a S3Options,
}

/// Round `round`: `n` objects put under `at.raw` and bulk-deleted in batches of `batch` keys,
/// then `n` under `at.root/store` planned in batches of `batch` and swept by blobgc; the rates
/// of each, objects a second.
pub async fn round<S: ObjectStore>(
    at: Places<'_, S>,
    n: usize,
    batch: usize,
    round: usize,
) -> (f64, f64) {
    let Places {
        client,
        raw: raw_prefix,
        root,
        options,
    } = at;
    let keys = ids(n, &format!("raw{round}-"));
    put_all(client, raw_prefix, &keys).await;
    let start = Instant::now();
    let paths: Vec<Path> = keys
        .iter()
        .map(|k| Path::parse(format!("{raw_prefix}/{k}")).unwrap())
        .collect();
    let deleted: usize = futures::stream::iter(paths.chunks(batch).map(|c| c.to_vec()))
        .map(|chunk| {
            let stream =
                client.delete_stream(futures::stream::iter(chunk.into_iter().map(Ok)).boxed());
            async move { stream.try_collect::<Vec<_>>().await.unwrap().len() }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .iter()
        .sum();
    assert_eq!(deleted, n);
    let raw = n as f64 / start.elapsed().as_secs_f64();

    let store = Location::parse(&format!("{root}/store"), "store", options).unwrap();
    put_all(client, store.path.as_ref(), &ids(n, &format!("gc{round}-"))).await;
    let refs = Location::parse(&format!("{root}/refs/part-0.parquet"), "refs", options).unwrap();
    refs.write(&refs.path, support::parquet_bytes(&["1_1_unrelated"]))
        .await
        .unwrap();
    let source = SourceSpec {
        name: "refs".into(),
        url: format!("{root}/refs"),
        columns: vec!["blob_id".into()],
        allow_empty: false,
    };
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut job = Job::new(store.url(), vec![source], now);
    job.fpp = 0.0000001;
    job.max_fpp = 1.0;
    job.batch_size = batch;
    // Every object is an orphan here: this measures the sweep, not the breaker.
    job.breakers.max_delete_fraction = 1.0;
    job.s3 = options.clone();
    let dir = PlanDir::new(Location::parse(&format!("{root}/plan"), "plan", options).unwrap());
    let summary = plan(&job, &dir, &Progress::silent()).await.unwrap();
    assert_eq!(summary.counts.candidate_count, n as u64);
    let start = Instant::now();
    let options = SweepOptions {
        concurrency: CONCURRENCY,
        s3: options.clone(),
        ..SweepOptions::default()
    };
    let (_, m) = sweep(&dir, &options, &Progress::silent()).await.unwrap();
    assert_eq!(m.gced_blob_count, n as u64);
    (raw, n as f64 / start.elapsed().as_secs_f64())
}
