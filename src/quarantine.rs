//! Quarantine: candidates moved aside instead of deleted, purged later, restorable meanwhile.
//!
//! **What moves:** a sweep with `--quarantine PREFIX` copies each candidate to
//! `PREFIX/RUN_ID/BLOB_ID` and only then deletes the original, so a blob is always in one of
//! the two places. `blobgc purge --older-than 7d` deletes what runs quarantined more than 7 days
//! ago (the age is the run id's time, never the object's: copies on local disks keep the
//! original's modification time); `blobgc restore` copies blobs back and then removes them from
//! quarantine. **The danger** is in purge alone: it deletes for good, so it touches only keys
//! under a run-id directory it can date.
//!
//! A quarantine inside the store is left out of the listing (see [`crate::plan`]).

use crate::error::{Error, Result};
use crate::outcome::{Outcome, Status};
use crate::store::Location;
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use object_store::{ObjectMeta, PutPayload};
use serde::Serialize;
use std::sync::Arc;

/// Copies in flight at once within a batch.
const COPY_CONCURRENCY: usize = 16;
/// Keys named in a report.
const EXAMPLES: usize = 5;

#[derive(Debug, Clone)]
pub struct Quarantine {
    pub location: Location,
}

impl Quarantine {
    pub fn parse(text: &str, s3: &crate::store::S3Options) -> Result<Self> {
        Ok(Quarantine {
            location: Location::parse_store(text, "--quarantine", s3)?,
        })
    }

    fn path(&self, run_id: &str, id: &str) -> Path {
        self.location.path.clone().join(run_id).join(id)
    }

    /// Copies `keys` of `store` (blob ids) into this quarantine under `run_id`; a key already
    /// gone from the store counts as moved (an earlier attempt finished it).
    pub async fn copy_in(&self, store: &Location, run_id: &str, ids: &[String]) -> Result<()> {
        futures::stream::iter(ids)
            .map(|id| async move {
                let from = crate::listing::path_of(&store.path, id)?;
                copy(store, &from, &self.location, &self.path(run_id, id), true).await
            })
            .buffer_unordered(COPY_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    /// Every quarantined object: `(run_id, blob_id, meta)`, or the key relative to the
    /// quarantine when it is not of that shape.
    async fn list(&self, run: Option<&str>) -> Result<Vec<std::result::Result<Entry, String>>> {
        let prefix = match run {
            Some(r) => self.location.path.clone().join(r),
            None => self.location.path.clone(),
        };
        let metas: Vec<ObjectMeta> = self
            .location
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| {
                Error::runtime(format!("listing the quarantine {}: {e}", self.location))
            })?;
        let base = self.location.path.as_ref().len();
        Ok(metas
            .into_iter()
            .map(|meta| {
                let rel = meta.location.as_ref()[base..]
                    .trim_start_matches('/')
                    .to_string();
                match rel.split_once('/') {
                    Some((run, id)) if !id.contains('/') => match run_time(run) {
                        Some(at) => Ok(Entry {
                            run: run.to_string(),
                            at,
                            id: id.to_string(),
                            meta,
                        }),
                        None => Err(rel),
                    },
                    _ => Err(rel),
                }
            })
            .collect())
    }
}

struct Entry {
    run: String,
    at: DateTime<Utc>,
    id: String,
    meta: ObjectMeta,
}

/// The time a run id starts with (`20261122T063000-…`).
fn run_time(run: &str) -> Option<DateTime<Utc>> {
    let stamp = run.get(..15)?;
    NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}

/// Copies one object, within one store when both sides share it, else through this process.
/// With `missing_ok`, a source already gone is not an error.
async fn copy(
    from_loc: &Location,
    from: &Path,
    to_loc: &Location,
    to: &Path,
    missing_ok: bool,
) -> Result<()> {
    let copied = if Arc::ptr_eq(&from_loc.store, &to_loc.store) {
        from_loc.store.copy(from, to).await
    } else {
        match from_loc.store.get(from).await {
            Ok(get) => match get.bytes().await {
                Ok(bytes) => to_loc
                    .store
                    .put(to, PutPayload::from_bytes(bytes))
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    };
    match copied {
        Ok(()) => Ok(()),
        Err(object_store::Error::NotFound { .. }) if missing_ok => Ok(()),
        Err(e) => Err(Error::runtime(format!(
            "copying {from_loc}/{from} to {to_loc}/{to}: {e}"
        ))),
    }
}

/// What `blobgc purge` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeReport {
    pub quarantine: String,
    pub now: String,
    pub older_than_seconds: u64,
    pub purged_blob_count: u64,
    pub purged_bytes: u64,
    /// Quarantined blobs younger than the limit.
    pub kept_blob_count: u64,
    /// Keys not under a datable run directory: never purged, named here.
    pub unrecognised_count: u64,
    pub unrecognised: Vec<String>,
}

/// Deletes the blobs quarantined by runs older than `older_than_seconds` at `now`.
pub async fn purge(
    quarantine: &Quarantine,
    older_than_seconds: u64,
    now: DateTime<Utc>,
) -> Result<PurgeReport> {
    let limit = now - chrono::Duration::seconds(older_than_seconds.min(i64::MAX as u64) as i64);
    let mut report = PurgeReport {
        quarantine: quarantine.location.url(),
        now: now.to_rfc3339(),
        older_than_seconds,
        ..PurgeReport::default()
    };
    let mut doomed = Vec::new();
    for entry in quarantine.list(None).await? {
        match entry {
            Ok(e) if e.at < limit => {
                report.purged_blob_count += 1;
                report.purged_bytes += e.meta.size;
                doomed.push(Ok(e.meta.location));
            }
            Ok(_) => report.kept_blob_count += 1,
            Err(key) => {
                report.unrecognised_count += 1;
                if report.unrecognised.len() < EXAMPLES {
                    report.unrecognised.push(key);
                }
            }
        }
    }
    if report.unrecognised_count > 0 {
        tracing::warn!(count = report.unrecognised_count, examples = ?report.unrecognised,
            "keys in the quarantine not under a run directory: left alone");
    }
    quarantine
        .location
        .store
        .delete_stream(futures::stream::iter(doomed).boxed())
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await
        .map_err(|e| Error::runtime(format!("purging {}: {e}", quarantine.location)))?;
    Ok(report)
}

/// What `blobgc restore` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub quarantine: String,
    pub store: String,
    pub restored_blob_count: u64,
    pub restored_bytes: u64,
    pub error_count: u64,
    pub errors: Vec<String>,
}

/// Copies quarantined blobs back into `store` (all of them, those of `run`, or only `ids`),
/// then removes each from quarantine once its copy is in place.
pub async fn restore(
    quarantine: &Quarantine,
    store: &Location,
    run: Option<&str>,
    ids: &[String],
) -> Result<RestoreReport> {
    let entries: Vec<Entry> = quarantine
        .list(run)
        .await?
        .into_iter()
        .filter_map(std::result::Result::ok)
        .filter(|e| ids.is_empty() || ids.contains(&e.id))
        .collect();
    let mut report = RestoreReport {
        quarantine: quarantine.location.url(),
        store: store.url(),
        ..RestoreReport::default()
    };
    let results: Vec<(Entry, Result<()>)> = futures::stream::iter(entries)
        .map(|e| async move {
            let result = async {
                let to = crate::listing::path_of(&store.path, &e.id)?;
                copy(&quarantine.location, &e.meta.location, store, &to, false).await?;
                quarantine
                    .location
                    .store
                    .delete(&e.meta.location)
                    .await
                    .map_err(|err| {
                        Error::runtime(format!(
                            "removing {} from quarantine: {err}",
                            e.meta.location
                        ))
                    })
            }
            .await;
            (e, result)
        })
        .buffer_unordered(COPY_CONCURRENCY)
        .collect()
        .await;
    for (e, result) in results {
        match result {
            Ok(()) => {
                report.restored_blob_count += 1;
                report.restored_bytes += e.meta.size;
            }
            Err(err) => {
                report.error_count += 1;
                if report.errors.len() < EXAMPLES {
                    report
                        .errors
                        .push(format!("{} (run {}): {err}", e.id, e.run));
                }
            }
        }
    }
    Ok(report)
}

impl Outcome for PurgeReport {
    fn human(&self) -> String {
        format!(
            "blobgc: purged {} quarantined blobs ({} bytes) older than {} s; kept {}, {} unrecognised key(s) left alone {:?}\n",
            self.purged_blob_count,
            self.purged_bytes,
            self.older_than_seconds,
            self.kept_blob_count,
            self.unrecognised_count,
            self.unrecognised
        )
    }

    fn exit_code(&self) -> i32 {
        0
    }
}

impl Outcome for RestoreReport {
    fn human(&self) -> String {
        format!(
            "blobgc: restored {} blobs ({} bytes) into {}; {} error(s) {:?}\n",
            self.restored_blob_count,
            self.restored_bytes,
            self.store,
            self.error_count,
            self.errors
        )
    }

    fn exit_code(&self) -> i32 {
        Status::from_errors(self.error_count).exit_code()
    }
}
