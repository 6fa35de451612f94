//! JMAP upload expiry (`blobgc uploads`, seed 001): uploads are unreferenced blobs a client
//! sent and may still use; past their TTL, or when their user is over quota, they go.
//!
//! **Inputs:** an uploads table (`upload_id`, `user`, `blob_id`, `size`, `uploaded_at`) and the
//! uploads store, where the key of an upload's content is its `blob_id`.
//! **What it deletes:** the blob of every upload strictly older than `--ttl` (default 7 days);
//! with `--quota-bytes`, also each user's oldest uploads until the user's remaining uploads fit
//! in half the quota, when they exceed it. Then it writes the `upload_id`s whose blob is gone
//! as Parquet (`--expired-out`), for the application to drop their metadata: blob first, so a
//! crash in between leaves metadata without content (an upload the client re-sends), never
//! content nobody knows of.
//! **The danger:** JMAP forbids deleting an unreferenced upload within an hour of its upload, so
//! a TTL under one hour is refused and quota never takes an upload younger than that; a blob
//! shared by a kept upload is kept; a row without time, blob id or size stops the run.

use crate::error::{Error, Result};
use crate::guards;
use crate::listing::{BLOB_ID, SIZE};
use crate::outcome::{Outcome, Status};
use crate::plan_dir::PlanDir;
use crate::postgres;
use crate::progress::Progress;
use crate::references::{self, SourceSpec};
use crate::store::{Location, S3Options};
use crate::summary::{PlanCounts, SourceSummary};
use crate::sweep::SweepOptions;
use crate::table_plan::{self, TablePlan};
use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use datafusion::logical_expr::{cast as cast_expr, col};
use parquet::arrow::ArrowWriter;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub const UPLOAD_ID: &str = "upload_id";
pub const USER: &str = "user";
pub const UPLOADED_AT: &str = "uploaded_at";
/// JMAP (RFC 8620, 6.): an unreferenced blob MUST NOT be deleted within an hour of its upload.
pub const MIN_AGE_SECONDS: u64 = 3_600;
pub const DEFAULT_TTL_SECONDS: u64 = 7 * 86_400;
/// Rows named in an error.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone)]
pub struct UploadsJob {
    pub run_id: String,
    pub uploads: String,
    pub store: String,
    pub now: DateTime<Utc>,
    pub ttl_seconds: u64,
    pub quota_bytes: Option<u64>,
    pub expired_out: String,
    pub batch_size: usize,
    pub dry_run: bool,
    pub sweep: SweepOptions,
}

impl UploadsJob {
    pub fn validate(&self) -> Result<()> {
        if self.ttl_seconds < MIN_AGE_SECONDS {
            return Err(Error::usage(format!(
                "--ttl of {} s is under one hour: JMAP forbids deleting an upload within an hour of its upload",
                self.ttl_seconds
            )));
        }
        if self.quota_bytes == Some(0) {
            return Err(Error::usage("--quota-bytes must be >= 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::usage("--batch-size must be >= 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UploadsReport {
    pub status: Status,
    pub dry_run: bool,
    pub store: String,
    pub plan: String,
    pub now: String,
    pub ttl_seconds: u64,
    pub quota_bytes: Option<u64>,
    pub upload_count: u64,
    /// Uploads past the TTL, and uploads taken to bring users back under quota.
    pub expired_count: u64,
    pub over_quota_count: u64,
    /// Blobs of selected uploads kept because an upload that stays shares them.
    pub shared_blob_kept_count: u64,
    pub candidate_count: u64,
    pub gced_blob_count: u64,
    pub gced_bytes: u64,
    pub error_count: u64,
    /// Upload ids written to `expired_out` (none in a dry run).
    pub expired_upload_ids_written: u64,
    pub expired_out: Option<String>,
}

struct Upload {
    id: String,
    user: String,
    blob: String,
    size: i64,
    at: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    Ttl,
    Quota,
}

impl Why {
    fn as_str(self) -> &'static str {
        match self {
            Why::Ttl => "ttl",
            Why::Quota => "quota",
        }
    }
}

/// Runs the expiry: plan into `dir`, sweep unless dry, then write the expired upload ids.
pub async fn run(job: &UploadsJob, dir: &PlanDir, progress: &Progress) -> Result<UploadsReport> {
    job.validate()?;
    let store = Location::parse_store(&job.store, "--store", &job.sweep.s3)?;
    guards::outside_store(&store, &dir.location, "the plan directory")?;
    let uploads = read_uploads(&job.uploads, &job.sweep.s3).await?;
    let selected = select(job, &uploads);
    let (candidates, shared) = candidates(&uploads, &selected);

    let source = SourceSummary {
        spec: SourceSpec {
            name: "uploads".into(),
            url: job.uploads.clone(),
            columns: vec![BLOB_ID.into()],
            allow_empty: true,
        },
        rows: uploads.len() as u64,
        snapshot: None,
    };
    table_plan::write(
        dir,
        TablePlan {
            run_id: &job.run_id,
            store: &store,
            sources: vec![source],
            counts: PlanCounts::default(),
            batch_size: job.batch_size,
            candidates: &candidates,
        },
    )
    .await?;

    let count = |why: Why| selected.iter().filter(|s| **s == Some(why)).count() as u64;
    let mut report = UploadsReport {
        status: Status::Completed,
        dry_run: job.dry_run,
        store: store.url(),
        plan: dir.location.url(),
        now: job.now.to_rfc3339(),
        ttl_seconds: job.ttl_seconds,
        quota_bytes: job.quota_bytes,
        upload_count: uploads.len() as u64,
        expired_count: count(Why::Ttl),
        over_quota_count: count(Why::Quota),
        shared_blob_kept_count: shared.len() as u64,
        candidate_count: candidates.len() as u64,
        gced_blob_count: 0,
        gced_bytes: 0,
        error_count: 0,
        expired_upload_ids_written: 0,
        expired_out: None,
    };
    if job.dry_run {
        return Ok(report);
    }
    let (metrics, deleted) = table_plan::sweep(dir, &job.sweep, progress).await?;
    report.gced_blob_count = metrics.gced_blob_count;
    report.gced_bytes = metrics.gced_bytes;
    report.error_count = metrics.error_count;
    report.status = Status::from_errors(metrics.error_count);
    // An upload is expired for the application once its blob is gone, or kept for another.
    let mut gone: HashSet<String> = shared.iter().map(|b| b.to_string()).collect();
    gone.extend(deleted);
    let expired: Vec<(&Upload, Why)> = uploads
        .iter()
        .zip(&selected)
        .filter_map(|(u, s)| s.map(|why| (u, why)))
        .filter(|(u, _)| gone.contains(&u.blob))
        .collect();
    write_expired(&expired, &job.expired_out, &job.sweep.s3).await?;
    report.expired_upload_ids_written = expired.len() as u64;
    report.expired_out = Some(job.expired_out.clone());
    Ok(report)
}

/// Why each upload goes, if it does: past the TTL, or the oldest of a user over the quota
/// (down to half of it, never one younger than an hour).
fn select(job: &UploadsJob, uploads: &[Upload]) -> Vec<Option<Why>> {
    let micros = |seconds: u64| seconds.min(i64::MAX as u64 / 1_000_000) as i64 * 1_000_000;
    let now = job.now.timestamp_micros();
    let expiry = now - micros(job.ttl_seconds);
    let youngest_removable = now - micros(MIN_AGE_SECONDS);
    let mut selected: Vec<Option<Why>> = uploads
        .iter()
        .map(|u| (u.at < expiry).then_some(Why::Ttl))
        .collect();
    let Some(quota) = job.quota_bytes else {
        return selected;
    };
    let mut by_user: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, u) in uploads.iter().enumerate() {
        if selected[i].is_none() && !u.user.is_empty() {
            by_user.entry(&u.user).or_default().push(i);
        }
    }
    for rows in by_user.values_mut() {
        let mut usage: i64 = rows.iter().map(|&i| uploads[i].size).sum();
        if usage <= quota as i64 {
            continue;
        }
        rows.sort_by_key(|&i| (uploads[i].at, i));
        for &i in rows.iter() {
            if usage <= quota as i64 / 2 || uploads[i].at >= youngest_removable {
                break;
            }
            selected[i] = Some(Why::Quota);
            usage -= uploads[i].size;
        }
    }
    selected
}

/// The blobs of the `selected` uploads to delete (each once, with its size), and those a kept
/// upload shares: kept.
fn candidates<'a>(
    uploads: &'a [Upload],
    selected: &[Option<Why>],
) -> (Vec<(&'a str, i64)>, HashSet<&'a str>) {
    let kept_blobs: HashSet<&str> = uploads
        .iter()
        .zip(selected)
        .filter(|(_, s)| s.is_none())
        .map(|(u, _)| u.blob.as_str())
        .collect();
    let mut candidates = Vec::new();
    let mut seen = HashSet::new();
    let mut shared = HashSet::new();
    for (u, s) in uploads.iter().zip(selected) {
        if s.is_none() {
            continue;
        }
        if kept_blobs.contains(u.blob.as_str()) {
            shared.insert(u.blob.as_str());
        } else if seen.insert(u.blob.as_str()) {
            candidates.push((u.blob.as_str(), u.size));
        }
    }
    (candidates, shared)
}

/// Every row of the uploads table; a row the expiry cannot judge stops the run.
async fn read_uploads(url: &str, s3: &S3Options) -> Result<Vec<Upload>> {
    let ctx = crate::session::local(1, s3)?;
    let what = format!("uploads table ({url})");
    let df = match postgres::is_url(url) {
        true => {
            let james = postgres::james_uploads();
            let mut snapshots = postgres::Snapshots::default();
            let opened = snapshots.open_as(&ctx, url, &james, &what).await?;
            opened.table
        }
        false => references::read_table(&ctx, url, &what).await?,
    };
    for column in [UPLOAD_ID, USER, BLOB_ID, SIZE, UPLOADED_AT] {
        references::field(&df, column, &what)?;
    }
    let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let batches = df
        .select(vec![
            cast_expr(col(UPLOAD_ID), DataType::Utf8),
            cast_expr(col(USER), DataType::Utf8),
            cast_expr(col(BLOB_ID), DataType::Utf8),
            cast_expr(col(SIZE), DataType::Int64),
            cast_expr(col(UPLOADED_AT), utc_micros),
        ])?
        .collect()
        .await
        .map_err(|e| Error::runtime(format!("{what}: {e}")))?;
    let mut uploads = Vec::new();
    let mut bad = Vec::new();
    for batch in &batches {
        let at = cast(batch.column(4), &DataType::Int64)?;
        let (ids, users, blobs) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
            batch.column(2).as_string::<i32>(),
        );
        let (sizes, at) = (
            batch.column(3).as_primitive::<Int64Type>(),
            at.as_primitive::<Int64Type>(),
        );
        for i in 0..batch.num_rows() {
            let id = ids.is_valid(i).then(|| ids.value(i).to_string());
            if blobs.is_null(i) || sizes.is_null(i) || at.is_null(i) || id.is_none() {
                bad.push(id.unwrap_or_else(|| format!("row {}", uploads.len() + bad.len())));
                continue;
            }
            uploads.push(Upload {
                id: id.unwrap_or_default(),
                // A user-less upload counts against no quota but still expires.
                user: if users.is_valid(i) {
                    users.value(i).to_string()
                } else {
                    String::new()
                },
                blob: blobs.value(i).to_string(),
                size: sizes.value(i).max(0),
                at: at.value(i),
            });
        }
    }
    if !bad.is_empty() {
        return Err(Error::aborted(format!(
            "{what}: {} upload(s) lack an upload_id, blob_id, size or uploaded_at, e.g. {:?}: \
             their expiry cannot be decided",
            bad.len(),
            &bad[..bad.len().min(EXAMPLES)]
        )));
    }
    Ok(uploads)
}

/// The expired uploads, for the application: `upload_id`, `user`, `blob_id`, `reason`.
async fn write_expired(expired: &[(&Upload, Why)], out: &str, s3: &S3Options) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(UPLOAD_ID, DataType::Utf8, false),
        Field::new(USER, DataType::Utf8, false),
        Field::new(BLOB_ID, DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ]));
    let column = |values: Vec<&str>| -> Arc<dyn Array> { Arc::new(StringArray::from(values)) };
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            column(expired.iter().map(|(u, _)| u.id.as_str()).collect()),
            column(expired.iter().map(|(u, _)| u.user.as_str()).collect()),
            column(expired.iter().map(|(u, _)| u.blob.as_str()).collect()),
            column(expired.iter().map(|(_, why)| why.as_str()).collect()),
        ],
    )?;
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    let loc = Location::parse(out, "--expired-out", s3)?;
    loc.write(&loc.path, buf).await
}

/// The flags of `blobgc uploads`; a job file (`--job`) holds the same keys, flags win.
#[derive(Debug, Clone, Default, clap::Args, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsArgs {
    /// TOML job file; flags override its keys.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub job: Option<std::path::PathBuf>,
    /// The uploads table (upload_id, user, blob_id, size, uploaded_at); a PostgreSQL table is
    /// James's (id, user_name, blob_id, size, upload_date).
    #[arg(long, value_name = "URL")]
    pub uploads: Option<String>,
    /// The uploads store: the key of an upload's content is its blob_id.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// The clock (RFC 3339); default: now.
    #[arg(long, value_name = "RFC3339")]
    pub now: Option<String>,
    /// Uploads strictly older than this are deleted (default 7d; at least 1h, as JMAP demands).
    #[arg(long, value_name = "DURATION")]
    #[serde(default, deserialize_with = "crate::options::duration_text")]
    pub ttl: Option<String>,
    /// Per user: above this many bytes of uploads, the oldest go until half of it is used.
    #[arg(long, value_name = "BYTES")]
    pub quota_bytes: Option<u64>,
    /// Where to write the expired upload ids (Parquet), for the application.
    #[arg(long, value_name = "URL")]
    pub expired_out: Option<String>,
    /// Where to keep the plan (default: a temporary directory, removed unless partial).
    #[arg(long, value_name = "DIR")]
    pub plan_dir: Option<String>,
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Plan and report; delete nothing, write no expired ids.
    #[arg(long)]
    #[serde(default, skip_serializing_if = "crate::options::switch_off")]
    pub dry_run: bool,
    #[arg(long, value_name = "N")]
    pub delete_concurrency: Option<usize>,
    #[arg(long, value_name = "N")]
    pub max_deletes_per_second: Option<u32>,
    #[command(flatten)]
    #[serde(default)]
    pub s3: crate::store::S3Options,
    #[command(flatten)]
    #[serde(default)]
    pub james: crate::postgres::JamesOptions,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
}

impl UploadsArgs {
    /// Merges the job file under the flags and checks the result.
    pub fn resolve(self) -> Result<(UploadsJob, Option<String>, Option<std::path::PathBuf>)> {
        let o = crate::options::with_job_file(&self, self.job.as_deref())?;
        let need = |v: Option<String>, flag: &str| {
            v.ok_or_else(|| Error::usage(format!("{flag} is required (or in the job file)")))
        };
        let ttl_seconds = match o.ttl {
            Some(t) => crate::generation::parse_duration(&t).map_err(|e| e.context("--ttl"))?,
            None => DEFAULT_TTL_SECONDS,
        };
        let job = UploadsJob {
            run_id: crate::summary::new_run_id(),
            uploads: match (o.uploads, o.james.uploads()?) {
                (Some(_), Some(_)) => {
                    return Err(Error::usage(
                        "--uploads and --james-postgres both name the uploads table: give one",
                    ));
                }
                (given, james) => need(given.or(james), "--uploads (or --james-postgres)")?,
            },
            store: need(o.store, "--store")?,
            now: match o.now {
                Some(t) => crate::job::parse_now(&t)?,
                None => Utc::now(),
            },
            ttl_seconds,
            quota_bytes: o.quota_bytes,
            expired_out: need(o.expired_out, "--expired-out")?,
            batch_size: o.batch_size.unwrap_or(crate::options::BATCH_SIZE),
            dry_run: o.dry_run,
            sweep: SweepOptions::from_flags(
                o.delete_concurrency,
                o.max_deletes_per_second,
                None,
                o.s3,
            )?,
        };
        job.validate()?;
        Ok((job, o.plan_dir, o.report))
    }
}

impl Outcome for UploadsReport {
    fn human(&self) -> String {
        format!(
            "blobgc: uploads ({:?}{}): {} of {} uploads expired, {} over quota; deleted {} blobs ({} bytes), \
                 {} shared blobs kept\n",
            self.status,
            if self.dry_run { ", dry run" } else { "" },
            self.expired_count,
            self.upload_count,
            self.over_quota_count,
            self.gced_blob_count,
            self.gced_bytes,
            self.shared_blob_kept_count
        )
    }

    fn exit_code(&self) -> i32 {
        self.status.exit_code()
    }
}
