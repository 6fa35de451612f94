//! `cargo bench --bench show`: listing a plan of 1M candidates (1,000 deletion batches) with
//! `blobgc show`, against reading the same batches with DataFusion, whole processes side by
//! side (A B A B):
//! - `datafusion`: this binary (`--child`) streams every batch of the plan through DataFusion's
//!   Parquet reader and touches every value: the floor of reading them;
//! - `show-csv`, `show-table`: `blobgc show --plan DIR` to /dev/null, streamed in plan order;
//! - `show-sort`: `--sort size --limit 20`, the largest candidates.
//!
//! Wall time and peak RSS (the kernel's `ru_maxrss` of the child) per run, medians printed.
//! The plan is generated once under `BLOBGC_BENCH_DIR` (default `target/bench-data`)/show-1M;
//! `BLOBGC_BENCH_RUNS` (default 3).

use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use base64::Engine;
use blobgc::plan_dir::PlanDir;
use blobgc::store::{Location, S3Options};
use blobgc::summary::{PlanSummary, Selection};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CANDIDATES: u64 = 1_000_000;
const BATCH: u64 = 1_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        datafusion_read(Path::new(&args[i + 1]));
        return;
    }
    let base = PathBuf::from(
        std::env::var("BLOBGC_BENCH_DIR").unwrap_or_else(|_| "target/bench-data".into()),
    );
    let runs: usize = std::env::var("BLOBGC_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let dir = base.join("show-1M");
    plan(&dir);
    let plan = dir.display().to_string();
    let me = std::env::current_exe().expect("this binary");
    let blobgc = env!("CARGO_BIN_EXE_blobgc");
    let show = |extra: &[&str]| {
        let mut c = vec![
            blobgc.to_string(),
            "show".into(),
            "--plan".into(),
            plan.clone(),
        ];
        c.extend(extra.iter().map(|s| s.to_string()));
        c
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "datafusion",
            vec![me.display().to_string(), "--child".into(), plan.clone()],
        ),
        ("show-csv", show(&["--format", "csv"])),
        ("show-table", show(&[])),
        ("show-sort", show(&["--sort", "size", "--limit", "20"])),
    ];
    let mut measured: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    for _ in 0..runs {
        for (i, (_, command)) in cases.iter().enumerate() {
            measured[i].push(measure(command));
        }
    }
    let medians: Vec<(f64, f64)> = measured
        .iter()
        .map(|m| {
            let wall = median(m.iter().map(|x| x.0).collect());
            let rss = median(m.iter().map(|x| x.1).collect());
            (wall, rss)
        })
        .collect();
    println!("| 1M candidates | wall s | peak RSS MB | x datafusion (wall) |");
    println!("| --- | ---: | ---: | ---: |");
    for ((name, _), (wall, rss)) in cases.iter().zip(&medians) {
        println!(
            "| {name} | {wall:.2} | {rss:.0} | {:.2} |",
            wall / medians[0].0
        );
    }
}

/// Wall seconds and peak RSS (MB) of `command` run to the end, its output discarded.
#[expect(
    clippy::zombie_processes,
    reason = "wait4 reaps the child, with its peak RSS"
)]
fn measure(command: &[String]) -> (f64, f64) {
    let started = Instant::now();
    let child = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("a measured process");
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for the child just spawned.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the locals above.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = started.elapsed().as_secs_f64();
    assert!(
        pid > 0 && status == 0,
        "{command:?} failed: status {status}"
    );
    (wall, usage.ru_maxrss as f64 / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A plan of 1M candidates in 1,000 batches, as `blobgc plan` writes them; made once.
fn plan(dir: &Path) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let location = Location::parse(&dir.display().to_string(), "plan", &S3Options::default())
        .expect("a plan directory");
    let plan = PlanDir::new(location);
    if rt.block_on(plan.read_summary()).is_ok() {
        return;
    }
    let rule = Selection::Generations {
        family: 1,
        generation_duration_seconds: 30 * 86_400,
        current_generation: 692,
    };
    let mut summary = PlanSummary::new("bench", "file:///store".into(), rule, chrono::Utc::now());
    for b in 0..CANDIDATES / BATCH {
        let rows = (b * BATCH)..((b + 1) * BATCH);
        let ids: Vec<String> = rows.clone().map(id).collect();
        let sizes: Vec<i64> = rows.map(|i| 1_000 + (i * 7919 % 100_000) as i64).collect();
        summary.counts.candidate_count += BATCH;
        summary.counts.candidate_bytes += sizes.iter().sum::<i64>() as u64;
        let batch = RecordBatch::try_from_iter([
            ("blob_id", Arc::new(StringArray::from(ids)) as ArrayRef),
            ("size", Arc::new(Int64Array::from(sizes)) as ArrayRef),
        ])
        .expect("a batch");
        let name = format!("bench-p0000-{b:06}");
        rt.block_on(plan.write_batch(&name, &batch))
            .expect("writing a batch");
        summary.batches.push(name);
    }
    rt.block_on(plan.write_summary(&summary))
        .expect("writing the summary");
}

fn id(i: u64) -> String {
    let digest = Sha256::digest(i.to_le_bytes());
    let delegate = base64::engine::general_purpose::URL_SAFE.encode(digest);
    format!("1_{}_{delegate}", 680 + i % 11)
}

/// Every batch of the plan in `dir` read through DataFusion, every value touched.
fn datafusion_read(dir: &Path) {
    blobgc::allocator::tune();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let batches = format!("{}/batches/", dir.display());
        let frame = ctx
            .read_parquet(batches, Default::default())
            .await
            .expect("the batches");
        let mut stream = frame.execute_stream().await.expect("a stream");
        let (mut rows, mut bytes) = (0usize, 0i64);
        while let Some(batch) = stream.try_next().await.expect("a batch") {
            let ids = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .expect("ids");
            rows += ids
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::len)
                .count();
            bytes += batch
                .column(1)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .iter()
                .flatten()
                .sum::<i64>();
        }
        assert_eq!(rows as u64, CANDIDATES, "{bytes}");
    });
}
