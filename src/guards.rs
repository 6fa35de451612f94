//! Checks every mode makes before it plans, and how a plan stops: the places a job names kept
//! apart from the store, and an aborted plan written so an operator sees why.
//!
//! **The danger:** a plan directory, plan root or quarantine inside the store is listed as
//! blobs (and its files look like garbage); a quarantine that is or holds the store would move
//! blobs onto themselves.

use crate::error::{Error, Result};
use crate::plan_dir::PlanDir;
use crate::store::{Location, S3Options};
use crate::summary::{PlanStatus, PlanSummary};

/// Refuses `place` (named by `what`) when it lies inside `store`.
pub fn outside_store(store: &Location, place: &Location, what: &str) -> Result<()> {
    if store.contains(place) {
        return Err(Error::usage(format!(
            "{what} {place} lies inside the store {store}: its files would be listed as blobs"
        )));
    }
    Ok(())
}

/// The relative key prefix to leave out of the listing when the quarantine lies inside the
/// store (`None` when it lies elsewhere); refuses a quarantine that is or holds the store.
pub fn quarantine_exclusion(
    store: &Location,
    quarantine: &str,
    s3: &S3Options,
) -> Result<Option<String>> {
    let q = Location::parse(quarantine, "--quarantine", s3)?;
    if q.contains(store) {
        return Err(Error::usage(format!(
            "--quarantine {q} is or holds the store {store}: quarantined blobs must live apart"
        )));
    }
    Ok(store
        .contains(&q)
        .then(|| q.dir_url()[store.dir_url().len()..].to_string()))
}

/// Stops a plan for `reason`: its batches are removed (nothing may sweep them) and its summary
/// is written with status `aborted`.
pub async fn abort(dir: &PlanDir, mut summary: PlanSummary, reason: String) -> Result<PlanSummary> {
    tracing::warn!(%reason, "plan aborted");
    dir.delete_batches(&summary.batches).await?;
    summary.batches.clear();
    summary.status = PlanStatus::Aborted;
    summary.abort_reason = Some(reason);
    dir.write_summary(&summary).await?;
    Ok(summary)
}
