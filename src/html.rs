//! The run report as one HTML page people look at: self-contained (its styles inline, its
//! plots drawn as SVG on the server), so it opens from a file or a mail attachment with no
//! network, and no request leaves it.
//!
//! [`run_page`] shows one run from its JSON report: the status (an abort with its reason), the
//! numbers, the candidates and bytes by generation, and the phase times. [`history_page`]
//! shows the runs of a plan root: bytes reclaimed and candidates per run, and each reference
//! source's rows per run (what the source-shrink breaker compares).
//!
//! ```
//! let report = serde_json::json!({"status": "aborted", "abort_reason": "a <source> shrank"});
//! let page = blobgc::html::run_page(&report);
//! assert!(page.contains("a &lt;source&gt; shrank"));
//! ```

use serde_json::Value;
use std::fmt::Write;

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:2em;color:#222}\
    h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}\
    table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}\
    td:first-child,th:first-child{text-align:left}\
    .status{display:inline-block;padding:2px 8px;border-radius:4px;color:#fff}\
    .completed{background:#2a7}.partial{background:#d80}.aborted,.failed,.invalid,.locked{background:#c33}\
    svg.plot{display:block;margin:8px 0}svg.plot rect{fill:#47a}svg.plot text{font-size:11px;fill:#444}";

/// The numbers of a run shown in its table, in this order.
const NUMBERS: [&str; 12] = [
    "blob_count",
    "eligible_blob_count",
    "candidate_count",
    "candidate_bytes",
    "gced_blob_count",
    "gced_bytes",
    "error_count",
    "malformed_id_count",
    "reference_source_count",
    "reference_count",
    "bloom_filter_estimated_fpp",
    "exit_code",
];

const PHASES: [&str; 5] = ["references", "filter", "listing", "verify", "sweep"];

/// The page of one run, from its JSON report.
pub fn run_page(report: &Value) -> String {
    let mut body = heading(report);
    body += "<h2>Numbers</h2><table>";
    for key in NUMBERS {
        if let Some(v) = report.get(key).filter(|v| v.is_number()) {
            let _ = write!(body, "<tr><td>{key}</td><td>{v}</td></tr>");
        }
    }
    body += "</table>";
    let generations = report["candidates_by_generation"].as_array();
    let generations = generations.map(Vec::as_slice).unwrap_or_default();
    let label = |g: &Value| format!("{}_{}", g["family"], g["generation"]);
    let labels: Vec<String> = generations.iter().map(label).collect();
    let number = |g: &Value, k: &str| g[k].as_f64().unwrap_or(0.0);
    body += "<h2>Candidates by generation (family_generation)</h2>";
    let candidates: Vec<f64> = generations
        .iter()
        .map(|g| number(g, "candidates"))
        .collect();
    body += &bars("candidates-by-generation", &labels, &candidates);
    body += "<h2>Bytes by generation</h2>";
    let bytes: Vec<f64> = generations.iter().map(|g| number(g, "bytes")).collect();
    body += &bars("bytes-by-generation", &labels, &bytes);
    body += "<h2>Phase times (seconds)</h2>";
    let seconds: Vec<f64> = PHASES
        .iter()
        .map(|p| report[format!("{p}_seconds")].as_f64().unwrap_or(0.0))
        .collect();
    let phases: Vec<String> = PHASES.iter().map(|p| p.to_string()).collect();
    body += &bars("phase-seconds", &phases, &seconds);
    page("blobgc run", &body)
}

/// The page of the runs of a plan root, oldest first, from their reports.
pub fn history_page(root: &str, reports: &[Value]) -> String {
    let mut body = format!("<h1>blobgc runs under {}</h1>", escape(root));
    let runs: Vec<String> = reports
        .iter()
        .map(|r| r["run_id"].as_str().unwrap_or("?").to_string())
        .collect();
    let series = |key: &str| -> Vec<f64> {
        reports
            .iter()
            .map(|r| r[key].as_f64().unwrap_or(0.0))
            .collect()
    };
    body += "<h2>Bytes reclaimed per run</h2>";
    body += &bars("bytes-reclaimed", &runs, &series("gced_bytes"));
    body += "<h2>Candidates per run</h2>";
    body += &bars("candidates-per-run", &runs, &series("candidate_count"));
    let mut sources: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["source_rows"].as_object())
        .flat_map(|rows| rows.keys().map(String::as_str))
        .collect();
    sources.sort_unstable();
    sources.dedup();
    for source in sources {
        let _ = write!(body, "<h2>Rows of source {} per run</h2>", escape(source));
        let rows: Vec<f64> = reports
            .iter()
            .map(|r| r["source_rows"][source].as_f64().unwrap_or(0.0))
            .collect();
        body += &bars(&format!("source-rows-{source}"), &runs, &rows);
    }
    body += "<h2>Runs</h2><table><tr><th>run</th><th>status</th><th>candidates</th>\
             <th>deleted</th><th>bytes reclaimed</th><th>why</th></tr>";
    for (run, r) in runs.iter().zip(reports) {
        let status = r["status"].as_str().unwrap_or("");
        let why = r["abort_reason"].as_str().unwrap_or("");
        let _ = write!(
            body,
            "<tr><td>{}</td><td><span class=\"status {status}\">{status}</span></td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(run),
            r["candidate_count"],
            r["gced_blob_count"],
            r["gced_bytes"],
            escape(why)
        );
    }
    body += "</table>";
    page("blobgc history", &body)
}

/// The title line of a run: its status, and why when it did not complete.
fn heading(report: &Value) -> String {
    let status = report["status"].as_str().unwrap_or("unknown");
    let mut out = format!(
        "<h1>blobgc run {} <span class=\"status {status}\" id=\"status\">{status}</span></h1>",
        escape(report["run_id"].as_str().unwrap_or(""))
    );
    for (key, what) in [("abort_reason", "Aborted"), ("error", "Failed")] {
        if let Some(reason) = report[key].as_str() {
            let _ = write!(out, "<p id=\"{key}\"><b>{what}:</b> {}</p>", escape(reason));
        }
    }
    for key in ["store", "plan", "now", "salt"] {
        if let Some(v) = report[key].as_str() {
            let _ = write!(out, "<div>{key}: <code>{}</code></div>", escape(v));
        }
    }
    out
}

/// A bar chart: one bar per label, its value on hover and under the bar.
fn bars(name: &str, labels: &[String], values: &[f64]) -> String {
    if values.is_empty() {
        return format!(
            "<p class=\"plot-empty\" data-plot=\"{}\">none</p>",
            escape(name)
        );
    }
    // Wide enough for the labels under the bars (7 px a character).
    let widest = labels.iter().map(|l| short(l).len()).max().unwrap_or(0);
    let (bar, gap, height) = ((widest as f64 * 7.0).max(36.0), 8.0, 160.0);
    let max = values.iter().cloned().fold(0.0_f64, f64::max).max(1e-9);
    let width = (bar + gap) * values.len() as f64 + gap;
    let mut svg = format!(
        "<svg class=\"plot\" data-plot=\"{}\" width=\"{width}\" height=\"{}\" \
         xmlns=\"http://www.w3.org/2000/svg\">",
        escape(name),
        height + 40.0
    );
    for (i, (label, v)) in labels.iter().zip(values).enumerate() {
        let h = v / max * height;
        let x = gap + i as f64 * (bar + gap);
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{h}\" data-value=\"{v}\">\
             <title>{}: {v}</title></rect><text x=\"{x}\" y=\"{}\">{}</text>\
             <text x=\"{x}\" y=\"{}\">{v}</text>",
            height - h,
            escape(label),
            height + 14.0,
            escape(&short(label)),
            height + 28.0,
        );
    }
    svg + "</svg>"
}

/// A label short enough to sit under a bar (a run id keeps its day and time).
fn short(label: &str) -> String {
    label.chars().take(13).collect()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style></head><body>{body}</body></html>\n"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_page_plots_its_generations_and_phases() {
        let report = json!({
            "status": "completed", "run_id": "r1", "candidate_count": 3, "gced_bytes": 30,
            "candidates_by_generation": [
                {"family": 1, "generation": 550, "candidates": 2, "bytes": 20},
                {"family": 0, "generation": 0, "candidates": 1, "bytes": 10},
            ],
            "filter_seconds": 1.5,
        });
        let page = run_page(&report);
        for plot in [
            "candidates-by-generation",
            "bytes-by-generation",
            "phase-seconds",
        ] {
            assert!(page.contains(&format!("data-plot=\"{plot}\"")), "{plot}");
        }
        assert!(page.contains("<title>1_550: 2</title>"));
        assert!(
            !page.contains("src=") && !page.contains("href=\"http"),
            "nothing to fetch"
        );
    }

    #[test]
    fn a_history_page_has_a_bar_per_run_and_the_reasons() {
        let runs = [
            json!({"run_id": "a", "status": "completed", "gced_bytes": 5, "source_rows": {"m": 10}}),
            json!({"run_id": "b", "status": "aborted", "abort_reason": "shrank <50%", "source_rows": {"m": 4}}),
        ];
        let page = history_page("file:///root", &runs);
        assert_eq!(page.matches("<rect").count(), 6, "3 plots of 2 runs");
        assert!(page.contains("shrank &lt;50%"));
    }
}
