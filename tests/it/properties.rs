//! Properties of the whole pipeline (plan + sweep, in-process on real `memory://` object
//! stores): whatever the store, references, clock, salt, partitions and batch size, no
//! referenced and no active blob is ever deleted, and whatever is deleted was garbage.

use blobgc::generation::{GenerationRule, IdClass};
use blobgc::job::Job;
use blobgc::plan::plan;
use blobgc::plan_dir::PlanDir;
use blobgc::progress::Progress;
use blobgc::references::SourceSpec;
use blobgc::store::Location;
use blobgc::summary::PlanStatus;
use blobgc::sweep::{SweepOptions, sweep};
use chrono::DateTime;
use futures::TryStreamExt;

use object_store::ObjectStoreExt;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});
static CASE: AtomicUsize = AtomicUsize::new(0);
const DAY: i64 = 86_400;

fn blob_id(family: u32, generation: u64, n: u32) -> String {
    let delegate = crate::support::digest(&format!("{family}/{generation}/{n}"));
    if family == 0 {
        delegate
    } else {
        format!("{family}_{generation}_{delegate}")
    }
}

async fn list(loc: &Location) -> BTreeSet<String> {
    let metas: Vec<_> = loc.store.list(Some(&loc.path)).try_collect().await.unwrap();
    metas
        .iter()
        .map(|m| blobgc::listing::key_below(&loc.path, &m.location).to_string())
        .collect()
}

struct Case {
    blobs: Vec<(u32, u64, u32)>,
    referenced: Vec<bool>,
    dangling_refs: u32,
    now_generation: u64,
    partitions: usize,
    batch_size: usize,
    salt: String,
    fpp: f64,
    /// The breakers' floor: low floors make small cases trip them.
    floor: u64,
}

async fn check(c: Case) -> Result<(), TestCaseError> {
    let root = format!("memory://case{}", CASE.fetch_add(1, Ordering::Relaxed));
    let store = Location::parse(&format!("{root}/store"), "store", &Default::default()).unwrap();
    let ids: BTreeSet<String> = c.blobs.iter().map(|&(f, g, n)| blob_id(f, g, n)).collect();
    for id in &ids {
        store
            .write(&store.child(id), id.clone().into_bytes())
            .await
            .unwrap();
    }
    let mut refs: Vec<String> = ids
        .iter()
        .zip(c.referenced.iter().cycle())
        .filter(|(_, r)| **r)
        .map(|(id, _)| id.clone())
        .collect();
    refs.extend((0..c.dangling_refs).map(|n| blob_id(1, 1, n)));
    refs.extend(refs.clone().into_iter().take(3));
    let refs_loc = Location::parse(
        &format!("{root}/refs/part-0.parquet"),
        "refs",
        &Default::default(),
    )
    .unwrap();
    refs_loc
        .store
        .put(&refs_loc.path, crate::support::parquet_bytes(&refs).into())
        .await
        .unwrap();

    let now = DateTime::from_timestamp(c.now_generation as i64 * 30 * DAY + 7, 0).unwrap();
    let source = SourceSpec {
        name: "refs".into(),
        url: format!("{root}/refs"),
        columns: vec!["blob_id".into()],
        allow_empty: true,
    };
    let mut job = Job::new(store.url(), vec![source], now);
    job.partitions = c.partitions;
    job.batch_size = c.batch_size;
    job.salt = c.salt;
    job.fpp = c.fpp;
    job.max_fpp = 1.0;
    job.breakers.floor = c.floor;
    let dir = PlanDir::new(
        Location::parse(&format!("{root}/plan"), "plan", &Default::default()).unwrap(),
    );
    let summary = plan(&job, &dir, &Progress::silent()).await.unwrap();
    prop_assert_eq!(summary.counts.reference_count, refs.len() as u64);
    if summary.status == PlanStatus::Aborted {
        prop_assert!(summary.batches.is_empty());
        prop_assert!(
            sweep(&dir, &SweepOptions::default(), &Progress::silent())
                .await
                .is_err()
        );
        prop_assert_eq!(
            &list(&store).await,
            &ids,
            "an aborted plan deleted something"
        );
        return Ok(());
    }
    sweep(&dir, &SweepOptions::default(), &Progress::silent())
        .await
        .unwrap();

    let left = list(&store).await;
    let rule = GenerationRule::new(1, 30 * DAY as u64, now).unwrap();
    let referenced: BTreeSet<&String> = refs.iter().collect();
    for id in &ids {
        let garbage = !referenced.contains(id) && rule.classify(id) == IdClass::Eligible;
        if !garbage {
            prop_assert!(
                left.contains(id),
                "deleted {} (referenced: {})",
                id,
                referenced.contains(id)
            );
        }
    }
    prop_assert!(left.is_subset(&ids));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn never_deletes_a_referenced_or_active_blob(
        blobs in prop::collection::vec((0u32..3, 550u64..562, 0u32..40), 0..80),
        referenced in prop::collection::vec(any::<bool>(), 1..16),
        dangling_refs in 0u32..5,
        now_generation in 548u64..566,
        partitions in 1usize..5,
        batch_size in 1usize..9,
        salt in "[a-z0-9]{1,12}",
        fpp in 0.001f64..0.5,
        floor in 0u64..120,
    ) {
        RUNTIME.block_on(check(Case { blobs, referenced, dangling_refs, now_generation, partitions, batch_size, salt, fpp, floor }))?;
    }
}
