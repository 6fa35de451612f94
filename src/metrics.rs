//! A command's report as Prometheus metrics, for the alerting its operators already run: a
//! node_exporter textfile (`--metrics-file`, replaced atomically) and a push to a Pushgateway
//! (`--pushgateway`). `deploy/prometheus/blobgc-alerts.yml` alerts on them.
//!
//! ```text
//! blobgc_<field>{command="run"}                       every number of the JSON report
//! blobgc_phase_seconds{command="run",phase="sweep"}  every `<phase>_seconds` of the report
//! blobgc_status{command="run",status="completed"}    1 for the status the run ended in, else 0
//! blobgc_exit_code{command="run"}
//! blobgc_last_run_timestamp_seconds{command="run"}
//! blobgc_last_success_timestamp_seconds{command="run"}
//! ```
//! A run that did not succeed keeps the last success's time: carried over from the file it
//! replaces, or left in the Pushgateway by pushing without it (POST replaces only the metrics
//! pushed). "No success for 26 hours" is then one rule, whether the job failed or never ran.
//!
//! ```
//! use blobgc::metrics::exposition;
//!
//! let report = serde_json::json!({"status": "completed", "exit_code": 0, "gced_bytes": 42});
//! let text = exposition("run", &report, 1_700_000_000.0, None);
//! assert!(text.contains("blobgc_gced_bytes{command=\"run\"} 42\n"));
//! assert!(text.contains("blobgc_last_success_timestamp_seconds{command=\"run\"} 1700000000\n"));
//! ```

use crate::error::{Error, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

/// Every status a report can end in, so that each has its series (0 or 1).
pub const STATUSES: [&str; 6] = [
    "completed",
    "partial",
    "aborted",
    "failed",
    "invalid",
    "locked",
];

/// The report's phase times, `<phase>_seconds` (other `_seconds` fields are settings).
const PHASES: [&str; 6] = [
    "references",
    "filter",
    "listing",
    "verify",
    "sweep",
    "total",
];

const LAST_SUCCESS: &str = "blobgc_last_success_timestamp_seconds";

/// A push that gets no answer in this long fails (with a warning); the run's outcome stands.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The metrics of `report` (a command's JSON report) in Prometheus's text format. `now` is the
/// run's end (Unix seconds); `last_success` the previous success's, kept when this run failed.
pub fn exposition(command: &str, report: &Value, now: f64, last_success: Option<f64>) -> String {
    let labels = format!("command=\"{command}\"");
    let mut out = String::new();
    let fields = report.as_object().into_iter().flatten();
    let mut phases = Vec::new();
    for (field, value) in fields {
        let number = match value {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        };
        let phase = field
            .strip_suffix("_seconds")
            .filter(|p| PHASES.contains(p));
        match (number, phase) {
            (Some(v), Some(phase)) => phases.push((phase, v)),
            (Some(v), None) => gauge(&mut out, &format!("blobgc_{field}"), &labels, v),
            (None, _) => {}
        }
    }
    let _ = writeln!(out, "# TYPE blobgc_phase_seconds gauge");
    for (phase, v) in phases {
        let _ = writeln!(
            out,
            "blobgc_phase_seconds{{{labels},phase=\"{phase}\"}} {v}"
        );
    }
    let status = report.get("status").and_then(Value::as_str).unwrap_or("");
    let _ = writeln!(out, "# TYPE blobgc_status gauge");
    for s in STATUSES {
        let on = u8::from(s == status);
        let _ = writeln!(out, "blobgc_status{{{labels},status=\"{s}\"}} {on}");
    }
    gauge(&mut out, "blobgc_last_run_timestamp_seconds", &labels, now);
    let succeeded = report.get("exit_code").and_then(Value::as_i64) == Some(0);
    if let Some(t) = if succeeded { Some(now) } else { last_success } {
        gauge(&mut out, LAST_SUCCESS, &labels, t);
    }
    out
}

fn gauge(out: &mut String, name: &str, labels: &str, value: f64) {
    let _ = writeln!(out, "# TYPE {name} gauge\n{name}{{{labels}}} {value}");
}

/// The last success's time recorded in a metrics file written for `command`.
pub fn last_success_in(text: &str, command: &str) -> Option<f64> {
    let series = format!("{LAST_SUCCESS}{{command=\"{command}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

/// Writes the metrics of `report` to `path` in node_exporter's textfile format: into a
/// temporary file beside it, then renamed over it, so that a scrape never reads half a file.
pub fn write_textfile(path: &Path, command: &str, report: &Value, now: f64) -> Result<()> {
    let previous = std::fs::read_to_string(path).ok();
    let last = previous.and_then(|text| last_success_in(&text, command));
    let text = exposition(command, report, now, last);
    let name = path.file_name().ok_or_else(|| {
        Error::usage(format!(
            "--metrics-file {}: not a file name",
            path.display()
        ))
    })?;
    let mut temporary = name.to_os_string();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary);
    let failed = |e: std::io::Error| {
        Error::runtime(format!("writing the metrics to {}: {e}", path.display()))
    };
    std::fs::write(&temporary, text).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        failed(e)
    })
}

/// Pushes the metrics of `report` to the Pushgateway at `url`, in the group
/// `job="blobgc",command=COMMAND`: the whole group replaced by a success (PUT), only the pushed
/// metrics by any other outcome (POST), which leaves the last success's time as it was.
pub async fn push(url: &str, command: &str, report: &Value, now: f64) -> Result<()> {
    let succeeded = report.get("exit_code").and_then(Value::as_i64) == Some(0);
    let body = exposition(command, report, now, None);
    let group = format!(
        "{}/metrics/job/blobgc/command/{command}",
        url.trim_end_matches('/')
    );
    let failed =
        |e: &dyn std::fmt::Display| Error::runtime(format!("pushing the metrics to {group}: {e}"));
    let client = reqwest::Client::builder()
        .timeout(PUSH_TIMEOUT)
        .build()
        .map_err(|e| failed(&e))?;
    let request = if succeeded {
        client.put(&group)
    } else {
        client.post(&group)
    };
    let response = request
        .header("Content-Type", "text/plain; version=0.0.4")
        .body(body)
        .send()
        .await
        .map_err(|e| failed(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let answer = response.text().await.unwrap_or_default();
    Err(failed(&format!("{status}: {}", answer.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(status: &str, exit_code: i64) -> Value {
        json!({
            "status": status, "exit_code": exit_code, "dry_run": false, "salt": "s",
            "candidate_count": 3, "bloom_filter_estimated_fpp": 0.0125,
            "filter_seconds": 1.5, "total_seconds": 2.0, "failed_batches": [],
            "generation_duration_seconds": 86400,
        })
    }

    #[test]
    fn every_number_is_a_gauge_and_every_phase_a_label() {
        let text = exposition("run", &report("completed", 0), 100.0, None);
        for line in [
            "blobgc_candidate_count{command=\"run\"} 3",
            "blobgc_bloom_filter_estimated_fpp{command=\"run\"} 0.0125",
            "blobgc_dry_run{command=\"run\"} 0",
            "blobgc_phase_seconds{command=\"run\",phase=\"filter\"} 1.5",
            "blobgc_phase_seconds{command=\"run\",phase=\"total\"} 2",
            "blobgc_status{command=\"run\",status=\"completed\"} 1",
            "blobgc_status{command=\"run\",status=\"failed\"} 0",
            "blobgc_exit_code{command=\"run\"} 0",
            "blobgc_generation_duration_seconds{command=\"run\"} 86400",
            "blobgc_last_success_timestamp_seconds{command=\"run\"} 100",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(!text.contains("salt") && !text.contains("failed_batches"));
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_or_has_none() {
        let failed = report("failed", 1);
        let kept = exposition("sweep", &failed, 200.0, Some(100.0));
        assert_eq!(last_success_in(&kept, "sweep"), Some(100.0));
        assert_eq!(last_success_in(&kept, "run"), None);
        assert_eq!(
            last_success_in(&exposition("sweep", &failed, 200.0, None), "sweep"),
            None
        );
    }

    #[test]
    fn the_textfile_carries_the_last_success_over_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blobgc.prom");
        write_textfile(&path, "run", &report("completed", 0), 100.0).unwrap();
        write_textfile(&path, "run", &report("aborted", 3), 200.0).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(last_success_in(&text, "run"), Some(100.0));
        assert!(text.contains("blobgc_last_run_timestamp_seconds{command=\"run\"} 200\n"));
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }
}
