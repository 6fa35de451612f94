//! What a command says while it works and when it ends. A job under cron or Kubernetes is
//! never silent: off a terminal, progress is a log line per step and at least one every
//! `--progress-interval` of a long step (a terminal gets a bar instead); logs are text or, with
//! `--log-format json`, one JSON object per line. Every command that got past its options ends
//! with its JSON report (stdout, `--report`), failed ones included, and the report's numbers as
//! Prometheus metrics (`--metrics-file`, `--pushgateway`).

use crate::error::{Error, Result};
use crate::generation::parse_duration;
use crate::outcome::Printed;
use crate::progress::{Event, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where progress lines go: their own target, so that `RUST_LOG` can silence them.
const PROGRESS: &str = "blobgc::progress";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The options every command shares: how it logs and where its metrics go.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// Log lines (progress and the closing summary included) as text or as JSON objects.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Off a terminal, a progress line at least this often during a long step: 30s, 5m.
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s")]
    progress_interval: String,
    /// Write the report's numbers as Prometheus metrics to this file (node_exporter's textfile
    /// collector format), replaced atomically.
    #[arg(long, global = true, value_name = "PATH")]
    metrics_file: Option<PathBuf>,
    /// Push the report's numbers to this Prometheus Pushgateway (http://HOST:9091), in the
    /// group job="blobgc",command=COMMAND.
    #[arg(long, global = true, value_name = "URL")]
    pushgateway: Option<String>,
    /// Write the report as a self-contained HTML page with plots to this file.
    #[arg(long, global = true, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// The output of one command, set up from [`OutputArgs`].
pub struct Output {
    format: LogFormat,
    interval: Duration,
    metrics_file: Option<PathBuf>,
    pushgateway: Option<String>,
    pub html: Option<PathBuf>,
}

impl Output {
    /// Checks the options and starts the logs; `service` (a scheduler, an executor) logs what
    /// it does by default, a job its progress and warnings.
    pub fn start(args: OutputArgs, service: bool) -> Result<Output> {
        let interval = parse_duration(&args.progress_interval)
            .map_err(|e| e.context("--progress-interval"))?;
        let default = if service { "info" } else { "warn,blobgc=info" };
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| default.into());
        let logs = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter);
        // A second subscriber (a test calling the command line twice) keeps the first.
        let _ = match args.log_format {
            LogFormat::Text => logs.try_init(),
            LogFormat::Json => logs.json().try_init(),
        };
        Ok(Output {
            format: args.log_format,
            interval: Duration::from_secs(interval),
            metrics_file: args.metrics_file,
            pushgateway: args.pushgateway,
            html: args.html,
        })
    }

    /// A bar on a terminal (text logs), log lines otherwise.
    pub fn progress(&self) -> Progress {
        if self.format == LogFormat::Text && std::io::stderr().is_terminal() {
            bar()
        } else {
            lines(self.interval)
        }
    }

    /// Ends a command: its summary for people, the JSON report on stdout and in
    /// `report_file`, the metrics; the process exit code.
    pub async fn finish(
        &self,
        command: &str,
        printed: Printed,
        report_file: Option<PathBuf>,
    ) -> i32 {
        self.say(&printed.human);
        let json = printed.json.to_string();
        println!("{json}");
        let mut exit_code = printed.exit_code;
        if let Some(file) = report_file
            && let Err(e) = std::fs::write(&file, format!("{json}\n"))
        {
            self.error(&format!(
                "cannot write the report to {}: {e}",
                file.display()
            ));
            exit_code = exit_code.max(1);
        }
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let mut report = printed.json;
        if let serde_json::Value::Object(fields) = &mut report {
            fields.insert("exit_code".into(), exit_code.into());
        }
        if let Some(file) = &self.metrics_file
            && let Err(e) = crate::metrics::write_textfile(file, command, &report, now)
        {
            tracing::warn!("{e}");
        }
        if let Some(file) = &self.html
            && let Err(e) = write_page(file, &crate::html::run_page(&report))
        {
            tracing::warn!("{e}");
        }
        if let Some(url) = &self.pushgateway
            && let Err(e) = crate::metrics::push(url, command, &report, now).await
        {
            tracing::warn!("{e}");
        }
        exit_code
    }

    /// Lines for people: as they are in text, one log event each in JSON.
    pub fn say(&self, text: &str) {
        match self.format {
            LogFormat::Text => eprint!("{text}"),
            LogFormat::Json => text
                .lines()
                .for_each(|line| tracing::info!(target: "blobgc::report", "{line}")),
        }
    }

    /// Says why a command that writes no report stopped; its exit code.
    pub fn refuse(&self, error: &Error) -> i32 {
        self.error(&error.to_string());
        error.exit_code()
    }

    pub fn error(&self, message: &str) {
        match self.format {
            LogFormat::Text => eprintln!("blobgc: error: {message}"),
            LogFormat::Json => tracing::error!("{message}"),
        }
    }
}

/// Progress on a terminal: a spinner with the step and its count, then a bar of the batches
/// deleted once a sweep says how many there are.
fn bar() -> Progress {
    let pb = ProgressBar::new_spinner();
    pb.set_draw_target(ProgressDrawTarget::stderr());
    let style = |template| ProgressStyle::with_template(template).ok();
    let spinner = style("{spinner} {msg}: {human_pos} ({elapsed})");
    if let Some(s) = &spinner {
        pb.set_style(s.clone());
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    let bar = style("{msg} {bar:30} {pos}/{len} ({elapsed}, eta {eta})");
    Progress::new(move |event| match event {
        Event::Step { what, unit } => {
            if let Some(s) = &spinner {
                pb.set_style(s.clone());
            }
            pb.set_message(format!("{what} ({unit})"));
            pb.set_position(0);
        }
        Event::Total(units) => {
            if let Some(bar) = &bar {
                pb.set_style(bar.clone());
            }
            pb.set_length(units);
            pb.set_position(0);
        }
        Event::Advance(units) => pb.inc(units),
    })
}

/// The step under way, as progress lines tell it.
struct Step {
    what: String,
    unit: String,
    started: Instant,
    done: u64,
    total: Option<u64>,
}

impl Step {
    /// "listing and probing blobs: 1200000 blobs in 12 s (100000 blobs/s)".
    fn line(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        if self.unit.is_empty() {
            return format!("{}: {seconds:.0} s", self.what);
        }
        let done = match self.total {
            Some(total) => format!("{}/{total}", self.done),
            None => self.done.to_string(),
        };
        let rate = self.done as f64 / seconds.max(0.001);
        format!(
            "{}: {done} {unit} in {seconds:.0} s ({rate:.0} {unit}/s)",
            self.what,
            unit = self.unit
        )
    }
}

/// The step of [`lines`]; the last one says how it ended when the progress is dropped.
#[derive(Default)]
struct Current(Mutex<Option<Step>>);

impl Current {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Step>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        if let Some(ended) = self.lock().take().filter(|s| !s.unit.is_empty()) {
            tracing::info!(target: PROGRESS, "done {}", ended.line());
        }
    }
}

/// Progress as log lines: one when a step begins, one when it ends with what it counted, and
/// one every `interval` while it lasts.
fn lines(interval: Duration) -> Progress {
    let step = Arc::new(Current::default());
    let watched = Arc::downgrade(&step);
    // Ends with the last clone of the progress.
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            ticks.tick().await;
            let Some(step) = watched.upgrade() else {
                return;
            };
            if let Some(s) = &*step.lock() {
                tracing::info!(target: PROGRESS, "{}", s.line());
            }
        }
    });
    Progress::new(move |event| {
        let mut step = step.lock();
        match (event, step.as_mut()) {
            (Event::Step { what, unit }, _) => {
                if let Some(ended) = step.take().filter(|s| !s.unit.is_empty()) {
                    tracing::info!(target: PROGRESS, "done {}", ended.line());
                }
                tracing::info!(target: PROGRESS, "{what}");
                *step = Some(Step {
                    what: what.to_string(),
                    unit: unit.to_string(),
                    started: Instant::now(),
                    done: 0,
                    total: None,
                });
            }
            (Event::Total(units), Some(s)) => s.total = Some(units),
            (Event::Advance(units), Some(s)) => s.done += units,
            (_, None) => {}
        }
    })
}

/// Writes an HTML page to `file`.
pub fn write_page(file: &std::path::Path, page: &str) -> Result<()> {
    std::fs::write(file, page)
        .map_err(|e| Error::runtime(format!("writing the HTML report {}: {e}", file.display())))
}

/// The error that ends a command before its output is set up.
pub fn refused(error: &Error) -> i32 {
    eprintln!("blobgc: error: {error}");
    error.exit_code()
}
