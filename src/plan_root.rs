//! A plan root: a directory holding one plan per run (`ROOT/RUN_ID/`) and the leases of the
//! stores those runs collect (`ROOT/leases/`).
//!
//! The history is what the source-shrink breaker compares with: the newest planned run against
//! the same store. Run ids start with their UTC time, so names sort in run order.

use crate::error::{Error, Result};
use crate::plan_dir::PlanDir;
use crate::store::{Location, S3Options};
use crate::summary::{PlanStatus, PlanSummary};

/// The folder of the plan root that holds the stores' leases ([`crate::lease`]).
pub const LEASES: &str = "leases";

#[derive(Debug, Clone)]
pub struct PlanRoot {
    pub location: Location,
}

impl PlanRoot {
    pub fn parse(text: &str, s3: &S3Options) -> Result<Self> {
        Ok(PlanRoot {
            location: Location::parse(text, "--plan-root", s3)?,
        })
    }

    /// The plan directory of run `run_id`.
    pub fn plan_dir(&self, run_id: &str) -> Result<PlanDir> {
        Ok(PlanDir::new(self.location.join(run_id)?))
    }

    /// The newest planned run against `store` other than `run_id`, if any: summaries are read
    /// newest first, and no further than that run (a year of nightly runs is not read nightly).
    pub async fn previous(&self, store: &str, run_id: &str) -> Result<Option<PlanSummary>> {
        for name in self.run_names().await?.iter().rev() {
            let Some(summary) = self.summary(name).await? else {
                continue;
            };
            let baseline = summary.status == PlanStatus::Planned && summary.store == store;
            if baseline && summary.run_id != run_id {
                return Ok(Some(summary));
            }
        }
        Ok(None)
    }

    /// Every run with a readable summary, oldest first, with its plan directory.
    pub async fn runs(&self) -> Result<Vec<(PlanDir, PlanSummary)>> {
        let mut runs = Vec::new();
        for name in self.run_names().await? {
            if let Some(summary) = self.summary(&name).await? {
                runs.push((self.plan_dir(&name)?, summary));
            }
        }
        Ok(runs)
    }

    /// The runs' names, oldest first (run ids start with their UTC time).
    async fn run_names(&self) -> Result<Vec<String>> {
        let listed = self
            .location
            .store
            .list_with_delimiter(Some(&self.location.path))
            .await
            .map_err(|e| Error::runtime(format!("listing the plan root {}: {e}", self.location)))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|name| name != LEASES)
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    /// The summary of run `name`; None when it has none readable: that run crashed while
    /// planning, and has no history to tell.
    async fn summary(&self, name: &str) -> Result<Option<PlanSummary>> {
        Ok(self.plan_dir(name)?.read_summary().await.ok())
    }
}
