//! The GC on a real Ballista cluster: a scheduler and two executors, each a `blobgc` process
//! on 127.0.0.1, against the same inputs as an in-process run.

use crate::s3_server::wait_for;
use crate::support::{Fixture, T2, id, write_batch};
use arrow::array::{ArrayRef, RecordBatch, StringArray};
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reference rows beyond the store's own: 1.4M distinct ids at fpp 1e-6 make a merged filter of
/// about 5 MB, above gRPC's 4 MiB default message size.
const EXTRA_REFERENCES: u64 = 1_400_000;
const FPP: &str = "0.000001";

/// Scheduler and executors, killed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    scheduler: Child,
    executors: Vec<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn spawn(args: &[String], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting a cluster process")
}

impl Cluster {
    fn start(executors: usize) -> Cluster {
        // Quick to notice a killed executor.
        Cluster::start_with(executors, &["--executor-timeout-seconds", "6"])
    }

    /// A cluster whose scheduler also takes `scheduler_args`.
    fn start_with(executors: usize, scheduler_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut args = vec!["scheduler".to_string(), "--port".into(), port.to_string()];
        args.extend(scheduler_args.iter().map(|a| a.to_string()));
        let scheduler = spawn(&args, &dir.path().join("scheduler.log"));
        let mut cluster = Cluster {
            dir,
            port,
            scheduler,
            executors: Vec::new(),
        };
        for i in 0..executors {
            let work = cluster.dir.path().join(format!("work-{i}"));
            std::fs::create_dir_all(&work).expect("work dir");
            let args: Vec<String> = vec![
                "executor".into(),
                "--port".into(),
                free_port().to_string(),
                "--grpc-port".into(),
                free_port().to_string(),
                "--scheduler".into(),
                format!("df://127.0.0.1:{port}"),
                "--work-dir".into(),
                work.display().to_string(),
                "--concurrent-tasks".into(),
                "2".into(),
                "--heartbeat-interval-seconds".into(),
                "1".into(),
            ];
            let child = spawn(&args, &cluster.log(&format!("executor-{i}")));
            cluster.executors.push(child);
        }
        for i in 0..executors {
            let log = cluster.log(&format!("executor-{i}"));
            wait_for("executor registration", Duration::from_secs(60), || {
                read(&log).contains("Executor registration succeed")
            });
        }
        cluster
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["scheduler", "executor-0", "executor-1"] {
                let log = read(&self.log(name));
                for line in log
                    .lines()
                    .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                {
                    eprintln!("{name}: {line}");
                }
            }
        }
        for child in self.executors.iter_mut().chain([&mut self.scheduler]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A store of 600 blobs written at T0, half of them referenced, and a reference table of those
/// 300 plus [`EXTRA_REFERENCES`] ids of blobs the store no longer holds, in 4 files. Returns the
/// store's blobs, the garbage, and the `--refs` flag.
fn inputs(f: &Fixture) -> (Vec<String>, BTreeSet<String>, String) {
    let blobs: Vec<String> = (0..600).map(|i| id(557, &format!("blob {i}"))).collect();
    let garbage: BTreeSet<String> = blobs.iter().skip(300).cloned().collect();
    let mut refs: Vec<String> = blobs[..300].to_vec();
    refs.extend(
        (0..EXTRA_REFERENCES).map(|i| format!("1_557_{:016x}{:016x}", splitmix(i), splitmix(!i))),
    );
    let dir = f.path("refs/messages");
    for (part, chunk) in refs.chunks(refs.len().div_ceil(4)).enumerate() {
        let batch = RecordBatch::try_from_iter(vec![(
            "blob_id",
            Arc::new(StringArray::from_iter_values(chunk)) as ArrayRef,
        )])
        .expect("batch");
        write_batch(&dir.join(format!("part-{part}.parquet")), &batch);
    }
    (blobs, garbage, format!("messages={}", dir.display()))
}

/// The flags both runs share: same clock, salt and filter, so the same deletion set.
fn gc_args<'a>(refs: &'a str, plan: &'a str) -> Vec<&'a str> {
    vec![
        "--refs",
        refs,
        "--salt",
        "cluster-test",
        "--fpp",
        FPP,
        // Most references name blobs deleted long ago: expected here.
        "--max-missing-references",
        "1",
        "--plan-dir",
        plan,
        // More tasks per stage than one executor's 2 slots: both executors take some.
        "--partitions",
        "8",
        "--shards",
        "16",
    ]
}

/// The checksum of the filter's manifest a plan stored, from its summary.
fn filter_checksum(plan: &str) -> String {
    let summary: serde_json::Value =
        serde_json::from_str(&read(&Path::new(plan).join("summary.json"))).expect("summary");
    summary["filter"]["checksum"]
        .as_str()
        .expect("a checksum")
        .to_string()
}

#[test]
fn a_cluster_deletes_what_an_in_process_run_deletes() {
    let local = Fixture::new();
    let (blobs, garbage, refs) = inputs(&local);
    local.blobs(&blobs);
    let plan = local.path("plan").display().to_string();
    let alone = local.run(T2, &gc_args(&refs, &plan));
    assert_eq!(alone.code, 0, "{}", alone.stderr);

    let remote = Fixture::new();
    remote.blobs(&blobs);
    let cluster = Cluster::start(2);
    let plan = remote.path("plan").display().to_string();
    let url = cluster.url();
    let mut args = gc_args(&refs, &plan);
    args.extend(["--scheduler", url.as_str()]);
    let on_cluster = remote.run(T2, &args);
    assert_eq!(on_cluster.code, 0, "{}", on_cluster.stderr);

    let expected: BTreeSet<String> = blobs
        .iter()
        .filter(|b| !garbage.contains(*b))
        .cloned()
        .collect();
    assert_eq!(local.left(), expected, "in-process run");
    assert_eq!(
        remote.left(),
        local.left(),
        "the cluster deleted another set"
    );
    for key in [
        "reference_count",
        "blob_count",
        "candidate_count",
        "gced_blob_count",
        "bloom_filter_bits",
        "bloom_filter_shards",
    ] {
        assert_eq!(on_cluster.u(key), alone.u(key), "{key}");
    }
    assert_eq!(on_cluster.u("bloom_filter_shards"), 16);
    // The same salt and shards: the same filter, byte for byte, built by the reduce tasks.
    assert_eq!(
        filter_checksum(&plan),
        filter_checksum(&local.path("plan").display().to_string())
    );
    assert!(
        on_cluster.u("bloom_filter_bits") > 4 * 1024 * 1024 * 8,
        "the merged filter must be above 4 MiB"
    );
    // Every stage ran on the executors: both took tasks, and the filter never reached the plan.
    for i in 0..2 {
        assert!(
            read(&cluster.log(&format!("executor-{i}"))).contains("Execute task"),
            "executor {i} ran no task"
        );
    }
    assert!(!read(&cluster.log("scheduler")).contains("Binary(\""));
}

#[test]
fn an_executor_killed_in_the_reference_stage_is_replaced_by_the_other() {
    let f = Fixture::new();
    let (blobs, garbage, refs) = inputs(&f);
    f.blobs(&blobs);
    let mut cluster = Cluster::start(2);
    let plan = f.path("plan").display().to_string();
    let url = cluster.url();
    let mut args = gc_args(&refs, &plan);
    args.extend(["--scheduler", url.as_str()]);
    let store = f.store_url();
    let report = f.path("report.json");
    let mut all = vec!["run", "--store", store.as_str(), "--now", T2];
    all.extend(args);
    let run = Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args(&all)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("blobgc run");

    // The job that builds the filter, once executor 1 has a task of it.
    let scheduler_log = cluster.log("scheduler");
    let victim_log = cluster.log("executor-1");
    let mut job = None;
    wait_for(
        "executor 1 in the filter stage",
        Duration::from_secs(120),
        || {
            let log = read(&scheduler_log);
            job = job.clone().or_else(|| filter_job(&log));
            job.as_ref()
                .is_some_and(|j| read(&victim_log).contains(&format!("Execute task  : [TID {j}/")))
        },
    );
    let victim = &mut cluster.executors[1];
    victim.kill().expect("kill executor 1");
    victim.wait().expect("reap executor 1");

    let out = run.wait_with_output().expect("blobgc run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // What happens: the scheduler finds executor 1 gone and runs its tasks again on executor 0;
    // the run completes with exactly the in-process deletion set.
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let expected: BTreeSet<String> = blobs
        .iter()
        .filter(|b| !garbage.contains(*b))
        .cloned()
        .collect();
    assert_eq!(f.left(), expected);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(report["gced_blob_count"], garbage.len() as u64);
    assert_eq!(report["reference_count"], 300 + EXTRA_REFERENCES);
    // And the kill did hit a running task of the filter's job, which the scheduler reset.
    let job = job.unwrap_or_default();
    let lost = read(&scheduler_log)
        .lines()
        .any(|l| l.contains(&format!("running job/stage {job}/")) && l.contains("lost Executor"));
    assert!(lost, "the scheduler never reset a task of job {job}");
}

/// The id of the job whose plan builds the filter, from the scheduler's log.
fn filter_job(log: &str) -> Option<String> {
    let at = log.find("blobgc_bloom_build")?;
    let before = &log[..at];
    let marker = "Submitting execution graph for job_id [";
    let start = before.rfind(marker)? + marker.len();
    let end = before[start..].find(']')? + start;
    Some(before[start..end].to_string())
}

#[test]
fn executors_reach_s3_with_the_options_of_the_job_file_alone() {
    let server = crate::s3_server::server();
    let s3 = crate::s3_server::client(&server.endpoint);
    let f = Fixture::new();
    let p = crate::s3_server::prefix("cluster");
    let (orphans, kept) = crate::s3::orphans_on_s3(&s3, &f, &p, 150);
    // Neither the executors nor the client have AWS_* variables: the job file is all they get.
    let job = f.path("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"store = "{store}"
plan_root = "{root}"
max_delete_fraction = 1.0
# No false positive among the 150 orphans: every one of them must go.
fpp = 0.0000001
salt = "cluster-s3"

[[references]]
name = "messages"
url = "{refs}"

[s3]
endpoint = "{endpoint}"
region = "us-east-1"
allow_http = true
access_key_id = "testkey"
secret_access_key = "testsecret"
"#,
            store = crate::s3::url(&p, "store"),
            root = crate::s3::url(&p, "plans"),
            refs = crate::s3::url(&p, "refs/messages"),
            endpoint = server.endpoint,
        ),
    )
    .expect("job file");
    let cluster = Cluster::start(2);
    let url = cluster.url();
    let job = job.display().to_string();
    let run = f.blobgc(&[
        "run",
        "--job",
        &job,
        "--now",
        T2,
        "--scheduler",
        &url,
        "--partitions",
        "4",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.u("gced_blob_count"), orphans.len() as u64);
    let left = crate::s3::keys(&s3, &format!("{p}/store"));
    assert_eq!(left, kept.iter().cloned().collect::<BTreeSet<_>>());
    // The sweep ran on the executors: they logged its tasks.
    let swept =
        (0..2).any(|i| read(&cluster.log(&format!("executor-{i}"))).contains("Execute task"));
    assert!(swept);
    assert!(!run.stderr.contains("testsecret") && !run.stdout.contains("testsecret"));
    // The live listing went through the plan root as an inventory, and is gone once probed.
    let plans = crate::s3::keys(&s3, &format!("{p}/plans"));
    assert!(plans.iter().any(|k| k.ends_with("summary.json")));
    assert!(!plans.iter().any(|k| k.contains("/listing-")), "{plans:?}");
}

/// `blobgc ARGS --report FILE`, which must end within `limit`: killed and failed otherwise, so
/// that a cluster job that never ends fails this test instead of stalling the suite. The exit
/// code and the report.
fn bounded(f: &Fixture, args: &[String], limit: Duration) -> (i32, serde_json::Value) {
    let report = f.path(&format!("report-{}.json", rand::random::<u64>()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args(args)
        .arg("--report")
        .arg(&report)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting blobgc");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for blobgc") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("blobgc {args:?} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let report = serde_json::from_slice(&std::fs::read(&report).unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    (status.code().unwrap_or(-1), report)
}

/// Five sources, some of several files, some of one, as real exports are: the verification's
/// scan of them once left the scheduler unable to finish its job (a limit pushed into the union
/// of differently shaped inputs), so the client waited forever. Planned three times in a row,
/// then swept on the cluster: exactly the garbage goes.
#[test]
fn five_sources_of_several_files_plan_to_the_end_every_time() {
    let f = Fixture::new();
    let expected = crate::datasets::generate(&f, 3000, 11);
    let cluster = Cluster::start(2);
    let mut common = crate::datasets::refs(&f);
    common.extend(
        [
            "--scheduler",
            &cluster.url(),
            "--store",
            &f.store_url(),
            "--inventory",
            &f.path("inventory").display().to_string(),
            "--now",
            "2026-11-22T00:00:00Z",
            "--fpp",
            "0.0001",
            "--salt",
            "fixed",
            "--partitions",
            "4",
        ]
        .map(String::from),
    );
    let limit = Duration::from_secs(180);
    let mut plan = String::new();
    for attempt in 0..3 {
        plan = f.path(&format!("plan-{attempt}")).display().to_string();
        let mut args = vec!["plan".to_string(), "--out".into(), plan.clone()];
        args.extend(common.iter().cloned());
        let (code, report) = bounded(&f, &args, limit);
        assert_eq!(code, 0, "attempt {attempt}: {report}");
        assert_eq!(
            report["candidate_count"],
            expected.len(),
            "attempt {attempt}"
        );
        assert_eq!(report["verified"], true, "attempt {attempt}");
    }
    let before = f.left();
    let sweep = ["sweep", "--plan", &plan, "--scheduler", &cluster.url()].map(String::from);
    let (code, report) = bounded(&f, &sweep, limit);
    assert_eq!(code, 0, "{report}");
    let deleted: BTreeSet<String> = before.difference(&f.left()).cloned().collect();
    assert_eq!(deleted, expected);
}

/// An executor that stops without dying (SIGSTOP: no crash, its connections open) and a
/// scheduler slow to declare it dead: the job it holds makes no progress. The scheduler's
/// watchdog cancels it after `--stall-timeout`, the run fails (exit 1) instead of waiting
/// forever, and nothing is deleted.
#[test]
fn a_job_that_makes_no_progress_is_cancelled_and_the_run_fails() {
    let f = Fixture::new();
    let (blobs, _, refs) = inputs(&f);
    f.blobs(&blobs);
    let cluster = Cluster::start_with(
        1,
        &["--executor-timeout-seconds", "600", "--stall-timeout", "5s"],
    );
    let executor = cluster.executors[0].id().to_string();
    let stopped = Command::new("kill")
        .args(["-STOP", &executor])
        .status()
        .expect("kill -STOP");
    assert!(stopped.success());
    let plan = f.path("plan").display().to_string();
    let mut args: Vec<String> = ["run", "--store", &f.store_url(), "--now", T2]
        .map(String::from)
        .to_vec();
    args.extend(gc_args(&refs, &plan).into_iter().map(String::from));
    args.extend(["--scheduler".to_string(), cluster.url()]);
    let (code, _) = bounded(&f, &args, Duration::from_secs(120));
    let _ = Command::new("kill").args(["-CONT", &executor]).status();
    assert_eq!(code, 1);
    assert_eq!(f.left(), blobs.iter().cloned().collect::<BTreeSet<_>>());
    assert!(read(&cluster.log("scheduler")).contains("no task progress for 5s"));
}

#[test]
fn an_executor_stopped_by_sigterm_removes_its_temporary_work_dir() {
    let f = Fixture::new();
    let (blobs, _, refs) = inputs(&f);
    f.blobs(&blobs);
    let tmp = f.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let port = free_port();
    let mut scheduler = spawn(
        &["scheduler".into(), "--port".into(), port.to_string()],
        &f.path("scheduler.log"),
    );
    let log = f.path("executor.log");
    let mut executor = Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args(["executor", "--scheduler", &format!("df://127.0.0.1:{port}")])
        .args(["--port", &free_port().to_string()])
        .args(["--grpc-port", &free_port().to_string()])
        .env("TMPDIR", &tmp)
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_for("executor registration", Duration::from_secs(60), || {
        read(&log).contains("Executor registration succeed")
    });
    let plan = f.path("plan").display().to_string();
    let url = format!("df://127.0.0.1:{port}");
    let mut args = gc_args(&refs, &plan);
    args.extend(["--scheduler", url.as_str()]);
    let out = f.run(T2, &args);
    let shuffled = std::fs::read_dir(&tmp).unwrap().count();

    let _ = Command::new("kill")
        .args(["-TERM", &executor.id().to_string()])
        .status();
    let stopped = executor.wait().unwrap();
    let _ = scheduler.kill();
    let _ = scheduler.wait();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(shuffled, 1, "the executor worked in TMPDIR");
    assert!(stopped.success(), "{stopped:?}\n{}", read(&log));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "left behind in TMPDIR"
    );
}
