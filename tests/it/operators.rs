//! What an operator sees: a dry run's plan kept and listed by `show`, `explain` for one id, a
//! run that is never silent off a terminal, and its metrics read by Prometheus's own tools
//! (promtool, a real Pushgateway; tests/setup-monitoring.sh installs them).

use crate::support::{Fixture, T0, T2, id};
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A store of 2,500 old unreferenced blobs over 5 generations and 2 families, with legacy ids,
/// and 100 referenced; its `--refs`.
fn store(f: &Fixture) -> String {
    let garbage: Vec<String> = (0..2_500)
        .map(|i| match i % 10 {
            0 => format!(
                "2_{}_{}",
                550 + i % 5,
                crate::support::digest(&format!("g{i}"))
            ),
            1 => crate::support::digest(&format!("legacy{i}")),
            _ => id(550 + i % 5, &format!("g{i}")),
        })
        .collect();
    let kept: Vec<String> = (0..100).map(|i| id(551, &format!("k{i}"))).collect();
    f.blobs(&garbage);
    f.blobs(&kept);
    f.refs("messages", &kept)
}

/// The store is nearly all garbage, by design: the breaker that stops such a run is lifted.
const ALL: &str = "--max-delete-fraction=1";

fn blobgc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_dry_run_keeps_its_plan_and_show_lists_every_candidate_once() {
    let f = Fixture::new();
    let refs = store(&f);
    let before = f.left();
    let dry = f.run(
        T2,
        &["--refs", &refs, ALL, "--dry-run", "--batch-size", "1000"],
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let report = dry.report.as_ref().unwrap();
    let plan = report["plan"].as_str().unwrap().to_string();
    assert!(
        dry.stderr.contains(&format!("blobgc show --plan {plan}")),
        "{}",
        dry.stderr
    );
    assert_eq!(f.left(), before, "a dry run deletes nothing");
    // Nearly all the garbage: a Bloom filter's false positives keep a few.
    let (count, bytes) = (dry.u("candidate_count"), dry.u("candidate_bytes"));
    assert!((2_400..=2_500).contains(&count), "{count}");

    let csv = blobgc(&["show", "--plan", &plan, "--format", "csv"]);
    assert!(csv.status.success(), "{}", text(&csv.stderr));
    let schema = arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("blob_id", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("size", arrow::datatypes::DataType::UInt64, false),
        arrow::datatypes::Field::new("family", arrow::datatypes::DataType::UInt32, true),
        arrow::datatypes::Field::new("generation", arrow::datatypes::DataType::UInt64, true),
    ]);
    let reader = arrow::csv::ReaderBuilder::new(std::sync::Arc::new(schema))
        .with_header(true)
        .build(std::io::Cursor::new(csv.stdout))
        .unwrap();
    let mut listed = Vec::new();
    let mut listed_bytes = 0;
    for batch in reader {
        let batch = batch.unwrap();
        let ids = arrow::array::AsArray::as_string::<i32>(batch.column(0));
        let sizes =
            arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt64Type>(batch.column(1));
        listed.extend(ids.iter().map(|i| i.unwrap().to_string()));
        listed_bytes += sizes.iter().map(Option::unwrap).sum::<u64>();
    }
    let unique: BTreeSet<_> = listed.iter().cloned().collect();
    assert_eq!((listed.len() as u64, unique.len() as u64), (count, count));
    assert_eq!(listed_bytes, bytes);
    let referenced: BTreeSet<String> = (0..100).map(|i| id(551, &format!("k{i}"))).collect();
    assert!(
        unique.is_subset(&(&before - &referenced)),
        "the candidates are garbage"
    );
    assert!(text(&csv.stderr).contains(&format!("total: {count} candidates, {bytes} bytes")));

    let ndjson = blobgc(&["show", "--plan", &plan, "--format", "ndjson"]);
    let rows: Vec<serde_json::Value> = text(&ndjson.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, count);
    let families: BTreeSet<u64> = rows.iter().map(|r| r["family"].as_u64().unwrap()).collect();
    assert_eq!(
        families,
        BTreeSet::from([0, 1, 2]),
        "legacy ids are family 0"
    );
    assert!(rows.iter().all(|r| r["size"].as_u64().is_some()));

    let table = blobgc(&["show", "--plan", &plan, "--sort", "size", "--limit", "5"]);
    let out = text(&table.stdout);
    assert_eq!(
        out.lines().take_while(|l| !l.is_empty()).count(),
        6,
        "{out}"
    );
    assert!(
        out.contains(&format!("total: {count} candidates, {bytes} bytes")),
        "{out}"
    );
    // 2 families: family 2's generations and family 0 are listed apart.
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["2", "550"])),
        "{out}"
    );
}

#[test]
fn explain_says_why_for_a_referenced_a_young_a_malformed_and_a_deleted_id() {
    let f = Fixture::new();
    let referenced = id(557, "referenced");
    let young = id(559, "young");
    let deleted = id(557, "deleted");
    f.blobs(&[&referenced, &young, &deleted]);
    // The reference spells it with a leading zero: the same blob.
    let respelled = referenced.replacen("1_557_", "1_0557_", 1);
    let refs = f.refs("messages", &[&respelled]);
    let plan = f.path("plan");
    let plan = plan.to_str().unwrap();
    let run = f.run(T2, &["--refs", &refs, "--plan-dir", plan]);
    assert_eq!(
        (run.code, run.u("gced_blob_count")),
        (0, 1),
        "{}",
        run.stderr
    );
    let job = f.path("job.toml");
    let refs_dir = f.path("refs/messages");
    std::fs::write(
        &job,
        format!(
            "store = \"{}\"\nnow = \"{T2}\"\n[[references]]\nname = \"messages\"\nurl = \"{}\"\n",
            f.store_url(),
            refs_dir.display()
        ),
    )
    .unwrap();
    let explain = |blob: &str| {
        let job = job.to_str().unwrap();
        let out = blobgc(&["explain", "--job", job, "--id", blob, "--plan", plan]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let report: serde_json::Value =
            serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
        (report, text(&out.stderr))
    };
    let (r, human) = explain(&referenced);
    assert_eq!(r["class"], "eligible");
    assert_eq!(r["references"][0]["source"], "messages");
    assert_eq!(r["references"][0]["spelling"], respelled.as_str());
    assert_eq!(r["selected"], false);
    assert!(human.contains("kept: referenced by messages"), "{human}");
    let (r, _) = explain(&young);
    assert_eq!(r["class"], "active");
    assert!(r["verdict"].as_str().unwrap().starts_with("kept: active"));
    assert!(
        r["rule"]
            .as_str()
            .unwrap()
            .contains("current generation 559"),
        "{r}"
    );
    let (r, _) = explain("1__x");
    assert_eq!(r["class"], "malformed");
    assert!(
        r["rule"]
            .as_str()
            .unwrap()
            .contains("not a non-negative decimal integer")
    );
    let (r, _) = explain(&deleted);
    assert_eq!(
        (r["selected"].as_bool(), r["swept"].as_str()),
        (Some(true), Some("deleted"))
    );
    assert!(
        r["verdict"]
            .as_str()
            .unwrap()
            .starts_with("deleted by the plan's sweep")
    );
    assert!(!f.left().contains(&deleted) && f.left().contains(&referenced));
}

#[test]
fn off_a_terminal_a_run_says_each_step_and_logs_json_on_request() {
    let f = Fixture::new();
    let refs = store(&f);
    let out = f.run(T2, &["--refs", &refs, ALL, "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for step in ["fingerprinting the references", "listing and probing blobs"] {
        assert!(
            out.stderr.contains(step),
            "{step} missing in {}",
            out.stderr
        );
    }
    assert!(
        out.stderr
            .contains("done listing and probing blobs: 2600 blobs in"),
        "{}",
        out.stderr
    );

    let json = f.run(
        T2,
        &["--refs", &refs, ALL, "--dry-run", "--log-format", "json"],
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    let lines: Vec<serde_json::Value> = json
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let said = |target: &str, text: &str| {
        lines.iter().any(|l| {
            l["target"] == target && l["fields"]["message"].as_str().unwrap_or("").contains(text)
        })
    };
    assert!(said(
        "blobgc::progress",
        "done fingerprinting the references: 100 rows"
    ));
    assert!(said(
        "blobgc::report",
        "of 2600 listed blobs would be deleted"
    ));

    // A command refused for its input says so in JSON too.
    let missing = f.path("no-plan");
    let refused = blobgc(&[
        "show",
        "--plan",
        missing.to_str().unwrap(),
        "--log-format",
        "json",
    ]);
    assert_eq!(refused.status.code(), Some(2));
    let line: serde_json::Value = serde_json::from_str(text(&refused.stderr).trim()).unwrap();
    assert_eq!(line["level"], "ERROR", "{line}");
    assert!(
        line["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("not a plan directory")
    );
}

#[test]
fn a_long_step_says_how_far_it_got_every_progress_interval() {
    let f = Fixture::new();
    let garbage: Vec<String> = (0..20).map(|i| id(550, &format!("slow{i}"))).collect();
    f.blobs(&garbage);
    let refs = f.refs("messages", &[id(550, "kept")]);
    // 20 deletions at 5 a second: a sweep of about 4 s, in 4 batches.
    let slow = ["--batch-size", "5", "--max-deletes-per-second", "5"];
    let mut args = vec!["--refs", refs.as_str(), ALL, "--progress-interval", "1s"];
    args.extend(slow);
    let out = f.run(T2, &args);
    assert_eq!(
        (out.code, out.u("gced_blob_count")),
        (0, 20),
        "{}",
        out.stderr
    );
    let during = out
        .stderr
        .lines()
        .filter(|l| l.contains("INFO blobgc::progress: deleting the batches: "))
        .count();
    assert!(
        during >= 2,
        "a line a second while deleting: {}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("done deleting the batches: 4/4 batches in"),
        "{}",
        out.stderr
    );
}

#[test]
fn aborted_and_failed_runs_write_their_report() {
    let f = Fixture::new();
    let refs = store(&f);
    f.blobs(&["1_x_malformed"]);
    let aborted = f.run(T2, &["--refs", &refs, ALL]);
    assert_eq!(
        (aborted.code, aborted.status()),
        (3, "aborted"),
        "{}",
        aborted.stderr
    );
    let report = aborted.report.as_ref().unwrap();
    assert_eq!(report["exit_code"], 3);
    assert!(
        report["abort_reason"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );

    let broken = f.path("refs/broken/part-0.parquet");
    std::fs::create_dir_all(broken.parent().unwrap()).unwrap();
    std::fs::write(&broken, b"not parquet").unwrap();
    let refs = format!("broken={}", broken.parent().unwrap().display());
    let failed = f.run(T2, &["--refs", &refs]);
    assert_eq!(
        (failed.code, failed.status()),
        (1, "failed"),
        "{}",
        failed.stderr
    );
    let report = failed.report.as_ref().unwrap();
    assert_eq!(report["exit_code"], 1);
    assert!(
        report["error"].as_str().unwrap().contains("broken"),
        "{report}"
    );
    assert_eq!(
        failed
            .stdout
            .lines()
            .last()
            .map(|l| l.contains("\"failed\"")),
        Some(true)
    );
    assert_eq!(f.left().len(), 2_601, "nothing deleted");
}

/// `promtool check metrics` on a metrics file: Prometheus's own parser of the text format.
fn promtool_accepts(path: &std::path::Path) {
    let text = std::fs::read(path).unwrap();
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (tests/setup-monitoring.sh installs it)");
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), &text).unwrap();
    let out = check.wait_with_output().unwrap();
    // Lint remarks (exit 3) are about names; a parse error is exit 1.
    assert_ne!(out.status.code(), Some(1), "{}", text_of(&out));
}

fn text_of(out: &std::process::Output) -> String {
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_metrics_file_parses_and_is_replaced_keeping_the_last_success() {
    use std::os::unix::fs::MetadataExt;
    let f = Fixture::new();
    let refs = store(&f);
    let metrics = f.path("textfile/blobgc.prom");
    std::fs::create_dir_all(metrics.parent().unwrap()).unwrap();
    let m = metrics.to_str().unwrap();
    let ok = f.run(
        T2,
        &["--refs", &refs, ALL, "--dry-run", "--metrics-file", m],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    promtool_accepts(&metrics);
    let first = std::fs::read_to_string(&metrics).unwrap();
    let candidates = format!(
        "blobgc_candidate_count{{command=\"run\"}} {}\n",
        ok.u("candidate_count")
    );
    assert!(first.contains(&candidates), "{first}");
    assert!(first.contains("blobgc_status{command=\"run\",status=\"completed\"} 1\n"));
    let success = blobgc::metrics::last_success_in(&first, "run").unwrap();
    let inode = std::fs::metadata(&metrics).unwrap().ino();

    f.blobs(&["1_x_malformed"]);
    let aborted = f.run(T2, &["--refs", &refs, ALL, "--metrics-file", m]);
    assert_eq!(aborted.code, 3);
    let second = std::fs::read_to_string(&metrics).unwrap();
    promtool_accepts(&metrics);
    assert!(second.contains("blobgc_status{command=\"run\",status=\"aborted\"} 1\n"));
    assert!(second.contains("blobgc_exit_code{command=\"run\"} 3\n"));
    assert_eq!(
        blobgc::metrics::last_success_in(&second, "run"),
        Some(success)
    );
    assert_ne!(
        std::fs::metadata(&metrics).unwrap().ino(),
        inode,
        "renamed over, not rewritten"
    );
    let files = std::fs::read_dir(metrics.parent().unwrap())
        .unwrap()
        .count();
    assert_eq!(files, 1, "no temporary file left");
}

/// A real Pushgateway on a free port of 127.0.0.1, stopped on drop.
struct Pushgateway {
    child: Child,
    url: String,
}

impl Pushgateway {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-pushgateway (tests/setup-monitoring.sh installs it)");
        let gateway = Pushgateway {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while gateway.metrics().is_none() {
            assert!(Instant::now() < deadline, "the Pushgateway did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        gateway
    }

    /// What Prometheus would scrape from it.
    fn metrics(&self) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", &format!("{}/metrics", self.url)])
            .output()
            .ok()?;
        out.status.success().then(|| text(&out.stdout))
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the series of `name` pushed by blobgc's `run`.
fn pushed(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("command=\"run\""))
        .filter(|l| l.contains("job=\"blobgc\""))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_push_reaches_a_real_pushgateway_and_a_failure_keeps_the_last_success() {
    let gateway = Pushgateway::start();
    let f = Fixture::new();
    let refs = store(&f);
    let ok = f.run(
        T0,
        &[
            "--refs",
            &refs,
            ALL,
            "--dry-run",
            "--pushgateway",
            &gateway.url,
        ],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let scrape = gateway.metrics().unwrap();
    assert_eq!(
        pushed(&scrape, "blobgc_blob_count"),
        Some(2_600.0),
        "{scrape}"
    );
    let success = pushed(&scrape, "blobgc_last_success_timestamp_seconds").unwrap();

    let missing = f.path("refs/none");
    let refs = format!("gone={}", missing.display());
    let failed = f.run(T0, &["--refs", &refs, "--pushgateway", &gateway.url]);
    assert_ne!(failed.code, 0);
    let scrape = gateway.metrics().unwrap();
    assert_eq!(
        pushed(&scrape, "blobgc_last_success_timestamp_seconds"),
        Some(success)
    );
    assert_eq!(
        pushed(&scrape, "blobgc_exit_code"),
        Some(failed.code as f64),
        "{scrape}"
    );
    let status = |s: &str| {
        scrape
            .lines()
            .filter(|l| l.starts_with("blobgc_status{") && l.contains(&format!("status=\"{s}\"")))
            .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(
        (status("invalid"), status("completed")),
        (Some(1.0), Some(0.0)),
        "{scrape}"
    );
}

#[test]
fn the_sample_alert_rules_load() {
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/blobgc-alerts.yml"
    );
    let out = Command::new("promtool")
        .args(["check", "rules", rules])
        .output()
        .expect("promtool (tests/setup-monitoring.sh installs it)");
    assert!(out.status.success(), "{}", text_of(&out));
}

/// Serves the files of `dir` on a free port of 127.0.0.1 and records every path asked for.
fn serve(dir: std::path::PathBuf) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&asked);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() || line.is_empty() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            record.lock().unwrap().push(path.clone());
            let body = std::fs::read(dir.join(path.trim_start_matches('/'))).unwrap_or_default();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&body));
        }
    });
    (url, asked)
}

/// Headless Chromium on `url`, offline as this machine is, with `args`; what it printed.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .args(["--disable-sync", "--no-first-run", "--disable-quic"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium (tests/setup-monitoring.sh installs it)");
    assert!(out.status.success(), "{}", text_of(&out));
    text(&out.stdout)
}

#[test]
fn the_html_reports_open_in_chromium_with_their_plots_and_fetch_nothing() {
    let f = Fixture::new();
    let refs = store(&f);
    let root = f.path("plans");
    let root = root.to_str().unwrap();
    let pages = f.path("pages");
    std::fs::create_dir_all(&pages).unwrap();
    let run_page = pages.join("run.html");
    let dry = f.run(
        T2,
        &["--refs", &refs, ALL, "--plan-root", root, "--dry-run"],
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let html = run_page.to_str().unwrap();
    let run = f.run(
        T2,
        &["--refs", &refs, ALL, "--plan-root", root, "--html", html],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    f.blobs(&["1_x_malformed"]);
    let aborted = f.run(T2, &["--refs", &refs, ALL, "--plan-root", root]);
    assert_eq!(aborted.code, 3);
    let history = pages.join("history.html");
    let report = blobgc(&[
        "report",
        "--plan-root",
        root,
        "--html",
        history.to_str().unwrap(),
    ]);
    assert!(report.status.success(), "{}", text_of(&report));

    let (url, asked) = serve(pages.clone());
    let dom = chromium(&format!("{url}/run.html"), &["--dump-dom"]);
    for plot in [
        "candidates-by-generation",
        "bytes-by-generation",
        "phase-seconds",
    ] {
        assert!(
            dom.contains(&format!("data-plot=\"{plot}\"")),
            "{plot} missing: {dom}"
        );
    }
    let deleted = run.u("gced_blob_count");
    assert!(
        dom.contains(&format!("<td>gced_blob_count</td><td>{deleted}</td>")),
        "{dom}"
    );
    // Family 1 in 5 generations, family 2 in 1, legacy ids; 5 phases.
    assert_eq!(dom.matches("<rect").count(), 7 + 7 + 5);

    let dom = chromium(&format!("{url}/history.html"), &["--dump-dom"]);
    assert_eq!(dom.matches("class=\"status ").count(), 3, "3 runs: {dom}");
    assert!(
        dom.contains("status aborted") && dom.contains("malformed"),
        "{dom}"
    );
    assert!(dom.contains("data-plot=\"source-rows-messages\""));
    let shot = pages.join("history.png");
    let flag = format!("--screenshot={}", shot.display());
    chromium(
        &format!("{url}/history.html"),
        &[&flag, "--window-size=1200,1600"],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    let asked = asked.lock().unwrap().clone();
    let pages = ["/run.html", "/history.html"];
    assert!(
        asked.iter().all(|p| pages.contains(&p.as_str())),
        "only the pages: {asked:?}"
    );
}
