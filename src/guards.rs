//! Checks every mode makes before it plans, and how a plan stops: the places a job names kept
//! apart from the store, and an aborted plan written so an operator sees why.
//!
//! **The danger:** a plan directory, plan root or quarantine inside the store is listed as
//! blobs (and its files look like garbage); a quarantine that is or holds the store would move
//! blobs onto themselves. A generation duration other than the one the application writes with
//! (James's `deduplication.gc.generation.duration`) makes the generation it still writes to look
//! old: a duration under a day, or one (or a family) that changed since the last run against the
//! store, stops the run unless the flag naming that risk is given.

use crate::error::{Error, Result};
use crate::plan_dir::PlanDir;
use crate::store::{Location, S3Options};
use crate::summary::{PlanStatus, PlanSummary, Selection};
use chrono::{DateTime, Utc};

/// The reason to stop a run whose clock `run` is more than `max_seconds` from the store's
/// `store` (the time the store stamped an object the run wrote): the generations the rule
/// calls old may be the ones still written to.
pub fn clock_skew(run: DateTime<Utc>, store: DateTime<Utc>, max_seconds: u64) -> Option<String> {
    let apart = (run - store).num_seconds().unsigned_abs();
    (apart > max_seconds).then(|| {
        format!(
            "this run's clock ({run}) and the store's ({store}) are {apart} s apart, above \
             --max-clock-skew {max_seconds} s: fix the clock, or give --now to run at a fixed time"
        )
    })
}

/// The shortest generation duration a run takes without `--allow-short-generations`.
pub const MIN_GENERATION_SECONDS: u64 = 86_400;

/// The reason to stop a run whose generation duration is under a day, unless `allowed`.
pub fn short_generation(duration_seconds: u64, allowed: bool) -> Option<String> {
    (duration_seconds < MIN_GENERATION_SECONDS && !allowed).then(|| {
        format!(
            "--generation-duration of {duration_seconds} s is under one day: unless the application \
             writes with that duration too, blobs it still writes to look old \
             (--allow-short-generations if it does)"
        )
    })
}

/// The reason to stop a run whose generation rule (`now`) differs from the one of `previous`,
/// the last run against the same store, unless `allowed`.
pub fn generation_change(now: &Selection, previous: &PlanSummary, allowed: bool) -> Option<String> {
    let (
        Selection::Generations {
            family,
            generation_duration_seconds: duration,
            ..
        },
        Selection::Generations {
            family: before,
            generation_duration_seconds: duration_before,
            ..
        },
    ) = (now, &previous.selection)
    else {
        return None;
    };
    ((family, duration) != (before, duration_before) && !allowed).then(|| {
        format!(
            "family {family} and generation duration {duration} s differ from run {}'s family \
             {before} and {duration_before} s against the same store: blobs still written to may \
             look old (--allow-generation-change if the application changed too)",
            previous.run_id
        )
    })
}

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
    let q = Location::parse_store(quarantine, "--quarantine", s3)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn generations(family: u32, days: u64) -> Selection {
        Selection::Generations {
            family,
            generation_duration_seconds: days * 86_400,
            current_generation: 0,
        }
    }

    #[test]
    fn clocks_may_differ_up_to_the_skew() {
        let store = DateTime::from_timestamp(1_700_000_000, 0).expect("a time");
        let at = |s: i64| store + chrono::Duration::seconds(s);
        assert!(clock_skew(at(900), store, 900).is_none());
        assert!(clock_skew(at(-900), store, 900).is_none());
        let ahead = clock_skew(at(901), store, 900).expect("ahead");
        assert!(ahead.contains("901 s apart") && ahead.contains("--max-clock-skew 900 s"));
        assert!(clock_skew(at(-901), store, 900).is_some(), "behind");
    }

    #[test]
    fn a_day_is_the_shortest_generation_taken_unasked() {
        assert!(short_generation(MIN_GENERATION_SECONDS, false).is_none());
        let refused = short_generation(MIN_GENERATION_SECONDS - 1, false).expect("refused");
        assert!(refused.contains("86399 s") && refused.contains("--allow-short-generations"));
        assert!(short_generation(1, true).is_none());
    }

    #[test]
    fn a_changed_rule_stops_the_run_unless_allowed() {
        let before = PlanSummary::new("r1", "s".into(), generations(1, 30), chrono::Utc::now());
        assert!(generation_change(&generations(1, 30), &before, false).is_none());
        for now in [generations(2, 30), generations(1, 7)] {
            let refused = generation_change(&now, &before, false).expect("refused");
            assert!(refused.contains("r1") && refused.contains("--allow-generation-change"));
            assert!(generation_change(&now, &before, true).is_none());
        }
        let table = PlanSummary::new("r1", "s".into(), Selection::Table, chrono::Utc::now());
        assert!(generation_change(&generations(2, 1), &table, false).is_none());
    }
}
