//! `blobgc explain`: why one blob is kept or deleted, answered from the inputs themselves, for
//! the operator after an incident. It reads, never writes or deletes.
//!
//! For one id it says: what the id parses to; whether the generation rule makes it eligible,
//! and why (the rule with its numbers: the plan's when a plan is given, else the job's);
//! which reference sources name it, by an exact lookup of every spelling of it (the same
//! canonical form the filter hashes), with the spellings found; and, with `--plan`, whether
//! that plan selected it and whether its sweep deleted (or quarantined) it. The references
//! are read as they are now, which after a sweep may differ from what the plan read.

use crate::blob_id::BlobId;
use crate::error::Result;
use crate::functions::canonical_id;
use crate::generation::{GenerationRule, IdClass};
use crate::listing::BLOB_ID;
use crate::outcome::Outcome;
use crate::plan_dir::PlanDir;
use crate::postgres::Snapshots;
use crate::references::{self, SourceSpec};
use crate::summary::PlanSummary;
use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::functions_aggregate::count::count;
use datafusion::prelude::{SessionContext, col, lit};
use serde::Serialize;

/// What the inputs say of one blob id.
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    pub blob_id: String,
    /// `eligible`, `active`, `future` or `malformed`.
    pub class: &'static str,
    pub family: Option<u32>,
    pub generation: Option<u64>,
    /// The rule applied and its numbers, or why the id does not parse.
    pub rule: String,
    pub current_generation: u64,
    pub references: Vec<Reference>,
    pub plan: Option<String>,
    /// Whether the plan lists it for deletion, and in which batch.
    pub selected: Option<bool>,
    pub batch: Option<String>,
    /// For a selected id: `deleted`, `quarantined` or `not swept`.
    pub swept: Option<&'static str>,
    /// The answer in a sentence.
    pub verdict: String,
}

/// A source that names the id, and how.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub source: String,
    pub spelling: String,
    pub rows: u64,
}

/// Explains `id` under `rule`, with the job's reference `sources` and, if given, the `plan`.
pub async fn explain(
    ctx: &SessionContext,
    id: &str,
    rule: GenerationRule,
    sources: &[SourceSpec],
    plan: Option<&PlanDir>,
) -> Result<Explained> {
    let parsed = BlobId::parse(id);
    let class = rule.classify(id);
    let mut explained = Explained {
        blob_id: id.to_string(),
        class: match class {
            IdClass::Active => "active",
            IdClass::Eligible => "eligible",
            IdClass::Malformed => "malformed",
            IdClass::Future => "future",
        },
        family: parsed.as_ref().ok().map(|p| p.family),
        generation: parsed.as_ref().ok().map(|p| p.generation),
        rule: match &parsed {
            Ok(p) => why(&rule, p, class),
            Err(e) => format!("{e}: never deleted"),
        },
        current_generation: rule.current_generation,
        references: referencing(ctx, id, sources).await?,
        plan: plan.map(|p| p.location.to_string()),
        selected: None,
        batch: None,
        swept: None,
        verdict: String::new(),
    };
    if let Some(dir) = plan {
        in_plan(dir, &dir.read_summary().await?, &mut explained).await?;
    }
    explained.verdict = verdict(&explained);
    Ok(explained)
}

/// The generation rule's reason, with its numbers.
fn why(rule: &GenerationRule, id: &BlobId<'_>, class: IdClass) -> String {
    let (family, generation, current) = (id.family, id.generation, rule.current_generation);
    match class {
        IdClass::Future => format!(
            "generation {generation} of family {family} is after the current one ({current}): \
             never deleted (a clock is off)"
        ),
        IdClass::Active => format!(
            "generation {generation} of family {family} is active: generation + 1 >= the \
             current generation {current}, so it may still gain references"
        ),
        _ if family == 0 => "family 0 (an id from before generations): eligible".into(),
        _ if family != rule.family => format!(
            "family {family} is not the family in use ({}): eligible",
            rule.family
        ),
        _ => format!(
            "generation {generation} of family {family} is old: generation + 1 < the current \
             generation {current}: eligible"
        ),
    }
}

/// Every source naming `id` in any spelling of it, with the spellings and their rows.
async fn referencing(
    ctx: &SessionContext,
    id: &str,
    sources: &[SourceSpec],
) -> Result<Vec<Reference>> {
    let canonical = canonical_id().call(vec![lit(id)]);
    let mut found = Vec::new();
    let mut snapshots = Snapshots::default();
    for spec in sources {
        let opened = references::open(ctx, spec, &mut snapshots).await?;
        let batches = opened
            .ids
            .filter(
                canonical_id()
                    .call(vec![col(BLOB_ID)])
                    .eq(canonical.clone()),
            )?
            .aggregate(vec![col(BLOB_ID)], vec![count(col(BLOB_ID)).alias("rows")])?
            .collect()
            .await?;
        for b in &batches {
            let spellings = cast(b.column(0), &DataType::Utf8)?;
            let rows = cast(b.column(1), &DataType::UInt64)?;
            let rows = rows.as_primitive::<arrow::datatypes::UInt64Type>();
            for (i, spelling) in spellings.as_string::<i32>().iter().enumerate() {
                found.push(Reference {
                    source: spec.name.clone(),
                    spelling: spelling.unwrap_or_default().to_string(),
                    rows: rows.value(i),
                });
            }
        }
    }
    Ok(found)
}

/// Whether the plan in `dir` selected the id, and what its sweep did with it.
async fn in_plan(dir: &PlanDir, summary: &PlanSummary, e: &mut Explained) -> Result<()> {
    let done = dir.done().await?;
    for name in &summary.batches {
        let rows = dir.read_batch(name).await?;
        if rows.iter().any(|(id, _)| *id == e.blob_id) {
            e.selected = Some(true);
            e.batch = Some(name.clone());
            e.swept = Some(match (done.contains(name), &summary.quarantine) {
                (false, _) => "not swept",
                (true, None) => "deleted",
                (true, Some(_)) => "quarantined",
            });
            return Ok(());
        }
    }
    e.selected = Some(false);
    Ok(())
}

fn verdict(e: &Explained) -> String {
    let named: Vec<_> = e.references.iter().map(|r| r.source.as_str()).collect();
    // A selected id referenced now was referenced after the plan read its sources.
    let since = match named.is_empty() {
        true => String::new(),
        false => format!("; referenced now by {}", named.join(", ")),
    };
    match (e.selected, e.swept) {
        (Some(true), Some(done)) if done != "not swept" => {
            let batch = e.batch.as_deref().unwrap_or("");
            format!("{done} by the plan's sweep (batch {batch}){since}")
        }
        (Some(true), _) => format!("selected by the plan for deletion, not swept yet{since}"),
        _ if e.class != "eligible" => format!("kept: {} (never deleted)", e.class),
        _ if !named.is_empty() => format!("kept: referenced by {}", named.join(", ")),
        (Some(false), _) => {
            "not selected by the plan (a Bloom filter false positive keeps it until a later run, \
             or the plan did not list it)"
                .into()
        }
        (None, _) => "eligible and referenced by no source: a run would delete it".into(),
    }
}

impl Outcome for Explained {
    fn exit_code(&self) -> i32 {
        0
    }

    fn human(&self) -> String {
        let mut out = format!("blobgc: {}: {}\n", self.blob_id, self.verdict);
        out += &format!("  generation rule: {}\n", self.rule);
        for r in &self.references {
            out += &format!(
                "  referenced by {} as {:?} ({} row(s))\n",
                r.source, r.spelling, r.rows
            );
        }
        if self.references.is_empty() {
            out += "  referenced by no source\n";
        }
        if let (Some(plan), Some(selected)) = (&self.plan, self.selected) {
            out += &format!(
                "  plan {plan}: {}\n",
                match (selected, self.swept) {
                    (true, Some(swept)) => format!("selected, {swept}"),
                    _ => "not selected".into(),
                }
            );
        }
        out
    }
}
