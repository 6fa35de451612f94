//! `cargo bench --bench s3`: blobgc against a real S3 server (SeaweedFS on 127.0.0.1), side by
//! side in one run, medians of several rounds:
//! - sweep: blobgc's sweep of a plan vs raw object_store bulk deletes (1000-key requests) of the
//!   same number of objects at the same concurrency;
//! - listing: blobgc's key-range parallel listing vs one sequential object_store listing.
//!
//! `BLOBGC_BENCH_OBJECTS` (default 10000) objects per sweep round, `BLOBGC_BENCH_LISTED`
//! (default 100000) listed keys, `BLOBGC_BENCH_ROUNDS` (default 3).

// Shared with the tests, which use all of it.
#[allow(dead_code)]
#[path = "../it/s3_server.rs"]
mod s3_server;
// Shared with the tests, which use all of it.
#[allow(dead_code)]
#[path = "../it/fault_proxy.rs"]
mod fault_proxy;
mod sweep_rate;

use blobgc::store::{Location, S3Options};
use futures::TryStreamExt;
use object_store::ObjectStore;
use std::time::Instant;
use sweep_rate::{CONCURRENCY, env_or, ids, median, put_all};

/// CPU seconds (user + system) of a process so far, from /proc (Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// The SeaweedFS process id.
fn server_pid() -> String {
    let out = std::process::Command::new("pgrep")
        .args(["-f", "weed mini"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("0")
        .to_string()
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let server = s3_server::server();
    let options = S3Options {
        endpoint: Some(server.endpoint.clone()),
        region: Some("us-east-1".into()),
        allow_http: Some(true),
        access_key_id: Some("testkey".into()),
        secret_access_key: Some("testsecret".into()),
        ..S3Options::default()
    };
    let s3 = s3_server::client(&server.endpoint);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (n, listed, rounds) = (
        env_or("BLOBGC_BENCH_OBJECTS", 10_000),
        env_or("BLOBGC_BENCH_LISTED", 100_000),
        env_or("BLOBGC_BENCH_ROUNDS", 3),
    );
    let (mut raw, mut gc) = (vec![], vec![]);
    let server = server_pid();
    let lists = rt.block_on(async {
        for round in 0..rounds {
            let raw_prefix = s3_server::prefix("bench-raw");
            let root = format!(
                "s3://{}/{}",
                s3_server::BUCKET,
                s3_server::prefix("bench-sweep")
            );
            let at = sweep_rate::Places {
                client: &s3,
                raw: &raw_prefix,
                root: &root,
                options: &options,
            };
            // DeleteObjects takes up to 1000 keys.
            let rates = sweep_rate::round(at, n, 1000, round).await;
            raw.push(rates.0);
            gc.push(rates.1);
        }

        let list_prefix = s3_server::prefix("bench-list");
        put_all(&s3, &list_prefix, &ids(listed, "list-")).await;
        let url = format!("s3://{}/{list_prefix}", s3_server::BUCKET);
        let direct = listing(
            &Location::parse(&url, "store", &options).unwrap(),
            listed,
            rounds,
            &server,
        )
        .await;
        // The same keys as over a network: 20 ms a request, as to a remote object store.
        let proxy = fault_proxy::FaultProxy::start(s3_server::PORT, fault_proxy::LATENCY);
        let through_proxy = S3Options {
            endpoint: Some(proxy.endpoint.clone()),
            ..options.clone()
        };
        let remote = listing(
            &Location::parse(&url, "store", &through_proxy).unwrap(),
            listed,
            rounds,
            &server,
        )
        .await;
        (direct, remote)
    });
    println!(
        "blobgc S3 benchmark: SeaweedFS 4.48 on 127.0.0.1, 2 cores shared with it, {rounds} rounds, medians"
    );
    println!(
        "{:<56} {:>10} {:>6}  CPU s client/server (last round)",
        "what", "objects/s", "ratio"
    );
    let row = |what: String, rate: f64, base: f64, cpu: Option<(f64, f64)>| {
        let cpu = cpu.map_or(String::new(), |(c, s)| format!("{c:.2}/{s:.2}"));
        println!("{what:<56} {rate:>10.0} {:>6.2}  {cpu}", rate / base);
    };
    let (raw, gc) = (median(raw), median(gc));
    row(
        format!("raw bulk delete, {n} objects, concurrency {CONCURRENCY}"),
        raw,
        raw,
        None,
    );
    row(
        format!("blobgc sweep, {n} objects, concurrency {CONCURRENCY}"),
        gc,
        raw,
        None,
    );
    for (how, l) in [("local", lists.0), ("+20 ms/request", lists.1)] {
        row(
            format!("sequential listing, {listed} keys, {how}"),
            l.seq,
            l.seq,
            Some(l.seq_cpu),
        );
        row(
            format!("blobgc key-range listing, {listed} keys, 8 ranges, {how}"),
            l.par,
            l.seq,
            Some(l.par_cpu),
        );
    }
}

struct Listing {
    seq: f64,
    par: f64,
    seq_cpu: (f64, f64),
    par_cpu: (f64, f64),
}

/// One sequential object_store listing vs blobgc's key-range listing of the same keys.
async fn listing(store: &Location, listed: usize, rounds: usize, server: &str) -> Listing {
    let (mut seq, mut par) = (vec![], vec![]);
    let (mut seq_cpu, mut par_cpu) = ((0.0, 0.0), (0.0, 0.0));
    for _ in 0..rounds {
        let (c0, s0) = (cpu_seconds("self"), cpu_seconds(server));
        let start = Instant::now();
        let count = store
            .store
            .list(Some(&store.path))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len();
        assert_eq!(count, listed);
        seq.push(listed as f64 / start.elapsed().as_secs_f64());
        seq_cpu = (cpu_seconds("self") - c0, cpu_seconds(server) - s0);

        let (c0, s0) = (cpu_seconds("self"), cpu_seconds(server));
        let start = Instant::now();
        let ctx = blobgc::session::local(8, &Default::default()).unwrap();
        let df = blobgc::listing::live(&ctx, store, 8).await.unwrap();
        let count: usize = df
            .collect()
            .await
            .unwrap()
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(count, listed);
        par.push(listed as f64 / start.elapsed().as_secs_f64());
        par_cpu = (cpu_seconds("self") - c0, cpu_seconds(server) - s0);
    }
    Listing {
        seq: median(seq),
        par: median(par),
        seq_cpu,
        par_cpu,
    }
}
