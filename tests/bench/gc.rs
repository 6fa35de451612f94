//! `cargo bench --bench gc`: blobgc against the anti-join a user would write instead, side by
//! side on the same files, in one run:
//! - `floor`: a pure scan of every id column the job reads (listing + references);
//! - `floor-fingerprint`: the same scan hashing every id once, as the Bloom strategy must (its
//!   [`blobgc::filter::fingerprint`]): what filtering these ids costs before any filter is
//!   touched, to weigh the Bloom strategy's ratio to the floor against;
//! - `exact`: `--strategy exact`, DataFusion's own hash join of the listing with the references;
//! - `bloom`: blobgc's default (Bloom filter, exact verification of the candidates, breakers);
//! - `bloom-noverify`: the same with `--verify off`, to show what verification costs;
//! - `cluster` (on request): `bloom` submitted to a local Ballista cluster of this build's
//!   `blobgc scheduler` and two `blobgc executor` processes (one task slot each), to show what
//!   the cluster costs on one machine: CPU is summed over the client, scheduler and executors,
//!   peak RSS is the largest of them, and each process's peak is printed below the table; its
//!   wall time leaves out starting the cluster (a user's is already running);
//! - `cluster-1` (on request): the same on one executor with two task slots;
//! - `duckdb` (on request): DuckDB's anti join of the eligible listing with the references, the
//!   fastest exact engine a user would reach for (its result checked against `exact`'s).
//!
//! Each measurement is a child process (this binary with `--child`), so wall time, CPU time and
//! peak RSS (`VmHWM`, from the OS) are its own, and starts with the dataset in the page cache.
//! The datasets (a Parquet inventory of N listed blobs and about 2.2 N reference rows, snappy)
//! are generated once under `BLOBGC_BENCH_DIR` (default `target/bench-data`) and reused. `BLOBGC_BENCH_SIZES` (default `1M,10M`; `50M` on
//! request), `BLOBGC_BENCH_RUNS` (default 3: medians are printed), `BLOBGC_BENCH_STRATEGIES`,
//! `BLOBGC_BENCH_FPP` (default 0.01), `BLOBGC_BENCH_SOURCES` (default 1: the references in one
//! source; K > 1 splits the same rows over K sources of several smaller files each, as real
//! exports are, in a dataset of its own, `<size>-<K>src`).
//!
//! Correctness is checked at every size: the Bloom strategy's deletion set is a subset of the
//! exact one and holds at least (1 - 2 fpp) of it.

use arrow::array::{Array, TimestampMicrosecondArray};
use arrow::array::{ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use base64::Engine;
use blobgc::job::{Job, Strategy, Verify};
use blobgc::plan::plan;
use blobgc::plan_dir::PlanDir;
use blobgc::progress::Progress;
use blobgc::references::SourceSpec;
use blobgc::store::Location;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;

use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

mod duckdb;

// The blobgc binary's allocator (see `blobgc::allocator`): the children measure the library
// in this process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: &str = "2026-11-22T00:00:00Z";
/// Generation of NOW at 30 days.
const CURRENT: u64 = 692;
/// Generations in the store: the current one and 12 before it (11 of 13 are eligible).
const GENERATIONS: u64 = 13;
const REFS_PER_BLOB: f64 = 2.2;
/// Share of the blobs references are drawn from: the rest is garbage for sure.
const REFERENCED_SHARE: f64 = 0.95;
const ROWS_PER_FILE: u64 = 2_000_000;
/// The filter's false-positive rate: `BLOBGC_BENCH_FPP`, default 0.01.
fn fpp() -> f64 {
    std::env::var("BLOBGC_BENCH_FPP")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(0.01)
}

/// The reference sources of a dataset: `BLOBGC_BENCH_SOURCES`, default 1.
fn sources() -> u64 {
    std::env::var("BLOBGC_BENCH_SOURCES")
        .ok()
        .and_then(|k| k.parse().ok())
        .filter(|&k| k >= 1)
        .unwrap_or(1)
}

/// The reference sources of the dataset `dir`, by name and directory: `refs/` for one source,
/// else `refs/s<K>/`.
fn reference_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
    match sources() {
        1 => vec![("refs".into(), dir.join("refs"))],
        k => (0..k)
            .map(|s| (format!("s{s}"), dir.join(format!("refs/s{s}"))))
            .collect(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1], Path::new(&args[i + 2]), &args[i + 3]);
        return;
    }
    let base = PathBuf::from(
        std::env::var("BLOBGC_BENCH_DIR").unwrap_or_else(|_| "target/bench-data".into()),
    );
    let sizes = std::env::var("BLOBGC_BENCH_SIZES").unwrap_or_else(|_| "1M,10M".into());
    let runs: usize = std::env::var("BLOBGC_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let strategies = std::env::var("BLOBGC_BENCH_STRATEGIES")
        .unwrap_or_else(|_| "floor,floor-fingerprint,exact,bloom,bloom-noverify".into());
    let strategies: Vec<&str> = strategies.split(',').collect();
    println!(
        "| listed | strategy | wall s | CPU s | peak RSS MB | x exact (wall / RSS) | x floor (wall) | x duckdb (wall) |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut notes = Vec::new();
    for size in sizes.split(',') {
        let n = parse_size(size);
        let dir = match sources() {
            1 => base.join(size),
            k => base.join(format!("{size}-{k}src")),
        };
        let data = dataset(&dir, n);
        let mut results: Vec<(&str, Vec<Measure>)> = Vec::new();
        for run in 0..runs {
            for &s in &strategies {
                let m = measure(s, &dir, run);
                match results.iter_mut().find(|(name, _)| *name == s) {
                    Some((_, v)) => v.push(m),
                    None => results.push((s, vec![m])),
                }
            }
        }
        let median_of = |s: &str, f: fn(&Measure) -> f64| {
            results
                .iter()
                .find(|(name, _)| *name == s)
                .map(|(_, v)| median(v.iter().map(f).collect()))
        };
        for (s, _) in &results {
            let wall = median_of(s, |m| m.wall).unwrap_or(0.0);
            let cpu = median_of(s, |m| m.cpu).unwrap_or(0.0);
            let rss = median_of(s, |m| m.rss_mb).unwrap_or(0.0);
            let vs = |other: &str, f: fn(&Measure) -> f64, mine: f64| {
                median_of(other, f).map_or("-".to_string(), |o| format!("{:.2}", mine / o))
            };
            println!(
                "| {size} | {s} | {wall:.2} | {cpu:.2} | {rss:.0} | {} / {} | {} | {} |",
                vs("exact", |m| m.wall, wall),
                vs("exact", |m| m.rss_mb, rss),
                vs("floor", |m| m.wall, wall),
                vs("duckdb", |m| m.wall, wall),
            );
        }
        for (s, v) in &results {
            let phase = |i: usize| {
                median(
                    v.iter()
                        .map(|m| m.phases.get(i).copied().unwrap_or(0.0))
                        .collect(),
                )
            };
            if v.iter().all(|m| m.phases.len() == 3) {
                notes.push(format!(
                    "{size}: {s} phases (medians): filter {:.2} s, listing and probe {:.2} s, verify {:.2} s",
                    phase(0),
                    phase(1),
                    phase(2)
                ));
            }
        }
        if let Some(note) = check(&dir, &data, &results) {
            notes.push(format!("{size}: {note}"));
        }
        for (s, v) in &results {
            if let Some(m) = v.last().filter(|m| m.processes.len() > 1) {
                let peaks: Vec<String> = m
                    .processes
                    .iter()
                    .map(|(p, mb)| format!("{p} {mb:.0} MB"))
                    .collect();
                notes.push(format!(
                    "{size}: {s} peak RSS per process: {}; filter of {} shard(s)",
                    peaks.join(", "),
                    m.shards
                ));
            }
        }
    }
    for note in notes {
        println!("{note}");
    }
}

fn parse_size(text: &str) -> u64 {
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().expect("a size like 1M or 500k");
    n * match unit {
        "M" | "m" => 1_000_000,
        "k" | "K" => 1_000,
        _ => 1,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What one child reported.
#[derive(Debug, Clone, serde::Deserialize)]
struct Measure {
    wall: f64,
    cpu: f64,
    rss_mb: f64,
    candidates: u64,
    filter_bits: u64,
    #[serde(default)]
    shards: u32,
    plan: Option<String>,
    /// Peak RSS (MB) of each process of a cluster run.
    #[serde(default)]
    processes: Vec<(String, f64)>,
    /// The plan's own phase times (s): filter (estimate included), listing and probe, verify.
    #[serde(default)]
    phases: Vec<f64>,
    /// Seconds spent starting a cluster, not counted in its wall time.
    #[serde(default)]
    startup: f64,
}

fn measure(strategy: &str, dir: &Path, run: usize) -> Measure {
    let mut command = match strategy {
        "duckdb" => {
            let python = duckdb::python(dir.parent().expect("the datasets' dir"));
            let out = dir.join(format!("plans/duckdb-{run}"));
            duckdb::command(&python, dir, &out, CURRENT)
        }
        _ => {
            let mut child = Command::new(std::env::current_exe().expect("own path"));
            child.args([
                "--child",
                strategy,
                dir.to_str().expect("utf-8 dir"),
                &run.to_string(),
            ]);
            child
        }
    };
    warm(dir);
    let started = Instant::now();
    let out = command.output().expect("child runs");
    let wall = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{strategy}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let mut m: Measure = serde_json::from_str(line.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{strategy}: {e}: {line}"));
    m.wall = wall - m.startup;
    m
}

/// Facts of a generated dataset.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Data {
    listed: u64,
    reference_rows: u64,
    distinct_references: u64,
}

fn digest(i: u64) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(Sha256::digest(i.to_le_bytes()))
}

fn blob(i: u64) -> String {
    format!("1_{}_{}", CURRENT - i % GENERATIONS, digest(i))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn write(path: &Path, batch: &RecordBatch) {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let file = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

/// The dataset of `n` listed blobs in `dir`, generated unless already there.
fn dataset(dir: &Path, n: u64) -> Data {
    let ready = dir.join("ready.json");
    if let Ok(bytes) = std::fs::read(&ready) {
        return serde_json::from_slice(&bytes).expect("ready.json");
    }
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    for sub in ["inventory", "refs"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let t0 = DateTime::parse_from_rfc3339(NOW)
        .expect("NOW")
        .timestamp_micros();
    for (file, start) in (0..n).step_by(ROWS_PER_FILE as usize).enumerate() {
        let ids: Vec<u64> = (start..(start + ROWS_PER_FILE).min(n)).collect();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "blob_id",
                Arc::new(StringArray::from_iter_values(ids.iter().map(|&i| blob(i)))) as ArrayRef,
            ),
            (
                "size",
                Arc::new(Int64Array::from_iter_values(
                    ids.iter().map(|&i| 1000 + (i * 7919 % 50_000) as i64),
                )),
            ),
            (
                "last_modified",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        ids.iter()
                            .map(|&i| t0 - ((i % GENERATIONS) as i64) * 30 * 86_400_000_000),
                    )
                    .with_timezone("UTC"),
                ),
            ),
        ])
        .expect("batch");
        write(
            &dir.join(format!("inventory/part-{file:04}.parquet")),
            &batch,
        );
    }
    let rows = (n as f64 * REFS_PER_BLOB) as u64;
    let pool = ((n as f64 * REFERENCED_SHARE) as u64).max(1);
    let mut seen = vec![false; pool as usize];
    // Files of 1/K the rows, dealt to the K sources in turn; at least one file each.
    let sources = reference_dirs(dir);
    let k = sources.len() as u64;
    let per_file = (ROWS_PER_FILE / k).min(rows.div_ceil(k)).max(1);
    for (file, start) in (0..rows).step_by(per_file as usize).enumerate() {
        let picks: Vec<u64> = (start..(start + per_file).min(rows))
            .map(|r| splitmix(r) % pool)
            .collect();
        for &j in &picks {
            seen[j as usize] = true;
        }
        let batch = RecordBatch::try_from_iter(vec![(
            "blob_id",
            Arc::new(StringArray::from_iter_values(
                picks.iter().map(|&j| blob(j)),
            )) as ArrayRef,
        )])
        .expect("batch");
        let path = sources[file % sources.len()]
            .1
            .join(format!("part-{file:04}.parquet"));
        std::fs::create_dir_all(path.parent().expect("a refs dir")).expect("mkdir");
        write(&path, &batch);
    }
    let data = Data {
        listed: n,
        reference_rows: rows,
        distinct_references: seen.iter().filter(|s| **s).count() as u64,
    };
    std::fs::write(&ready, serde_json::to_vec(&data).expect("json")).expect("ready.json");
    eprintln!(
        "generated {} listed blobs, {} reference rows ({} distinct) in {:.1} s",
        data.listed,
        data.reference_rows,
        data.distinct_references,
        started.elapsed().as_secs_f64()
    );
    data
}

/// The candidates of a plan's batches.
fn candidates(plan: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let batches = Path::new(plan.trim_start_matches("file://")).join("batches");
    for entry in std::fs::read_dir(batches).into_iter().flatten() {
        let file = std::fs::File::open(entry.expect("entry").path()).expect("batch");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        for batch in reader {
            let batch = batch.expect("batch");
            let ids = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .expect("utf8");
            out.extend(ids.as_string::<i32>().iter().flatten().map(str::to_string));
        }
    }
    out
}

/// The correctness check of a size, and the filter's bits per distinct reference.
fn check(dir: &Path, data: &Data, results: &[(&str, Vec<Measure>)]) -> Option<String> {
    let last = |s: &str| {
        results
            .iter()
            .find(|(name, _)| *name == s)
            .and_then(|(_, v)| v.last().cloned())
    };
    let bloom = last("bloom")?;
    let b = candidates(bloom.plan.as_deref()?);
    assert_eq!(b.len() as u64, bloom.candidates);
    for cluster in ["cluster", "cluster-1"].into_iter().filter_map(last) {
        let c = candidates(cluster.plan.as_deref()?);
        assert!(
            c == b,
            "the cluster found other candidates than the same plan in-process"
        );
    }
    let exact = last("exact")?;
    let e = candidates(exact.plan.as_deref()?);
    assert_eq!(e.len() as u64, exact.candidates);
    if let Some(duckdb) = last("duckdb") {
        let d = candidates(duckdb.plan.as_deref()?);
        assert!(
            d == e,
            "DuckDB's anti join found other ids than the exact strategy"
        );
    }
    assert!(
        b.is_subset(&e),
        "the Bloom strategy deleted something the exact one keeps"
    );
    let kept_by_fp = (e.len() - b.len()) as f64 / e.len().max(1) as f64;
    assert!(
        kept_by_fp <= 2.0 * fpp(),
        "the Bloom strategy kept {kept_by_fp:.4} of the garbage, above 2 x fpp"
    );
    let note = format!(
        "bloom deletes {} of the exact {} candidates (a subset): realised false-positive rate {:.4} for {} requested ({:.2}x); filter {:.2} bits = {:.2} bytes per distinct reference ({} distinct of {} rows)",
        b.len(),
        e.len(),
        kept_by_fp,
        fpp(),
        kept_by_fp / fpp(),
        bloom.filter_bits as f64 / data.distinct_references as f64,
        bloom.filter_bits as f64 / 8.0 / data.distinct_references as f64,
        data.distinct_references,
        data.reference_rows
    );
    let _ = std::fs::remove_dir_all(dir.join("plans"));
    Some(note)
}

/// Reads the dataset's files, so that every measurement starts from the page cache: at 50M
/// listed blobs the exact strategy's 14 GB evicts them, and the strategy after it read the disk.
fn warm(dir: &Path) {
    for table in ["inventory", "refs"] {
        warm_tree(&dir.join(table));
    }
}

fn warm_tree(path: &Path) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("dataset dir") {
            warm_tree(&entry.expect("dataset entry").path());
        }
    } else {
        let mut file = std::fs::File::open(path).expect("file");
        std::io::copy(&mut file, &mut std::io::sink()).expect("dataset read");
    }
}

/// One strategy, in this process; prints a [`Measure`] as JSON.
fn child(strategy: &str, dir: &Path, run: &str) {
    blobgc::allocator::tune();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let cluster = match strategy {
        "cluster" => Some(LocalCluster::start(2, 1)),
        "cluster-1" => Some(LocalCluster::start(1, 2)),
        _ => None,
    };
    let startup = started.elapsed().as_secs_f64();
    let (candidates, (filter_bits, shards), plan_url, phases) = rt.block_on(async {
        if let Some(hashing) = strategy.strip_prefix("floor") {
            let ids = floor(dir, hashing == "-fingerprint").await;
            (ids, (0, 0), None, Vec::new())
        } else {
            bench_plan(strategy, dir, run, cluster.as_ref().map(|c| c.url.as_str())).await
        }
    });
    let (mut cpu, mut rss_mb) = usage("self");
    let mut processes = vec![("client".to_string(), rss_mb)];
    if let Some(cluster) = cluster {
        for (name, child) in &cluster.processes {
            let (c, r) = usage(&child.id().to_string());
            cpu += c;
            rss_mb = rss_mb.max(r);
            processes.push((name.clone(), r));
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "wall": 0.0, "cpu": cpu, "rss_mb": rss_mb, "candidates": candidates,
            "filter_bits": filter_bits, "shards": shards, "plan": plan_url, "processes": processes,
            "phases": phases, "startup": startup,
        })
    );
}

/// A scheduler and executors of this build's `blobgc`, on 127.0.0.1; killed when dropped.
struct LocalCluster {
    url: String,
    processes: Vec<(String, std::process::Child)>,
}

impl LocalCluster {
    fn start(executors: usize, slots: usize) -> LocalCluster {
        let port = |_: usize| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let spawn = |args: Vec<String>| {
            Command::new(env!("CARGO_BIN_EXE_blobgc"))
                .args(args)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("a cluster process")
        };
        let scheduler = port(0);
        let url = format!("df://127.0.0.1:{scheduler}");
        let mut processes = vec![(
            "scheduler".to_string(),
            spawn(vec![
                "scheduler".into(),
                "--port".into(),
                scheduler.to_string(),
            ]),
        )];
        std::thread::sleep(std::time::Duration::from_millis(500));
        for i in 0..executors {
            let args = vec![
                "executor".into(),
                "--port".into(),
                port(1).to_string(),
                "--grpc-port".into(),
                port(2).to_string(),
                "--scheduler".into(),
                url.clone(),
                "--concurrent-tasks".into(),
                slots.to_string(),
            ];
            processes.push((format!("executor-{i}"), spawn(args)));
        }
        // Registration takes a heartbeat; executors register at start.
        std::thread::sleep(std::time::Duration::from_secs(2));
        LocalCluster { url, processes }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads every id column once, fingerprinting each id if asked; returns the ids read.
async fn floor(dir: &Path, fingerprint: bool) -> u64 {
    let ctx = blobgc::session::local(2, &Default::default()).expect("session");
    let mut rows = 0;
    let refs = reference_dirs(dir).into_iter().map(|(_, path)| path);
    for table in std::iter::once(dir.join("inventory")).chain(refs) {
        let df = ctx
            .read_parquet(
                format!("{}/", table.display()),
                datafusion::prelude::ParquetReadOptions::default(),
            )
            .await
            .expect("table")
            .select_columns(&["blob_id"])
            .expect("blob_id");
        let mut tasks = tokio::task::JoinSet::new();
        for mut stream in df.execute_stream_partitioned().await.expect("streams") {
            tasks.spawn(async move {
                let mut n = 0u64;
                while let Some(batch) = stream.try_next().await.expect("batch") {
                    n += match fingerprint {
                        true => fingerprint_all(batch.column(0)),
                        false => (batch.num_rows() - batch.column(0).null_count()) as u64,
                    };
                }
                n
            });
        }
        while let Some(n) = tasks.join_next().await {
            rows += n.expect("task");
        }
    }
    rows
}

/// Fingerprints every id of a column; the ids.
fn fingerprint_all(ids: &ArrayRef) -> u64 {
    let (mut n, mut folded) = (0, 0);
    let mut add = |id: Option<&str>| {
        if let Some(id) = id {
            n += 1;
            folded ^= blobgc::filter::fingerprint(id);
        }
    };
    match ids.as_string_view_opt() {
        Some(view) => view.iter().for_each(&mut add),
        None => ids.as_string::<i32>().iter().for_each(&mut add),
    }
    std::hint::black_box(folded);
    n
}

async fn bench_plan(
    strategy: &str,
    dir: &Path,
    run: &str,
    scheduler: Option<&str>,
) -> (u64, (u64, u32), Option<String>, Vec<f64>) {
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339(NOW).expect("NOW").into();
    let refs = reference_dirs(dir)
        .into_iter()
        .map(|(name, path)| SourceSpec {
            name,
            url: path.display().to_string(),
            columns: vec!["blob_id".into()],
            allow_empty: false,
        })
        .collect();
    let mut job = Job::new("memory://bench-store", refs, now);
    job.inventory = Some(dir.join("inventory").display().to_string());
    job.salt = format!("bench-{run}");
    job.fpp = fpp();
    job.max_fpp = 2.0 * job.fpp;
    job.dry_run = true;
    job.batch_size = 100_000;
    job.strategy = if strategy == "exact" {
        Strategy::Exact
    } else {
        Strategy::Bloom
    };
    if strategy == "bloom-noverify" {
        job.verify = Verify::Off;
    }
    if let Some(url) = scheduler {
        job.scheduler = Some(url.to_string());
        job.partitions = 2;
    }
    let plan_path = dir.join(format!("plans/{strategy}-{run}"));
    let _ = std::fs::remove_dir_all(&plan_path);
    std::fs::create_dir_all(&plan_path).expect("plan dir");
    let url = format!(
        "file://{}",
        std::fs::canonicalize(&plan_path).expect("abs").display()
    );
    let plan_dir =
        PlanDir::new(Location::parse(&url, "plan", &Default::default()).expect("plan location"));
    let summary = plan(&job, &plan_dir, &Progress::silent())
        .await
        .expect("plan");
    assert!(
        summary.abort_reason.is_none(),
        "{strategy}: {:?}",
        summary.abort_reason
    );
    let bits = summary
        .filter
        .as_ref()
        .map_or((0, 0), |f| (f.params.num_bits, f.shards));
    let phases = vec![
        summary.filter_seconds,
        summary.listing_seconds,
        summary.verify_seconds,
    ];
    (summary.counts.candidate_count, bits, Some(url), phases)
}

/// A process's CPU seconds and peak resident set (MB), as the kernel counts them; `pid` may be
/// `self`.
fn usage(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let ticks: f64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|t| t.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    (ticks / 100.0, hwm_kb / 1024.0)
}
