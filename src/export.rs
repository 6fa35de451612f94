//! `blobgc export`: the reference sources of a job written as Parquet, with a manifest, for a
//! cluster whose executors must not reach the database the sources live in.
//!
//! ```text
//! OUT/manifest.json              {"sources": [{"name", "url", "columns", "rows", "ids", "snapshot"}]}
//! OUT/<name>/part-*.parquet      the source's ids, one `blob_id` column (every id column, nulls kept)
//! ```
//!
//! A job then names `--refs NAME=OUT/NAME` for each. **The danger:** an export short of its
//! source makes the blobs of the missing rows look like garbage. So the ids written are counted
//! against the rows the source held in its snapshot (rows x id columns); any difference fails
//! the export (exit 1) before the manifest is written, and a directory without a manifest is
//! not an export. A database's sources are all read in one snapshot, named in the manifest.

use crate::error::{Error, Result};
use crate::outcome::Outcome;
use crate::postgres::Snapshots;
use crate::references::{self, SourceSpec};
use crate::store::{Location, S3Options};
use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use datafusion::dataframe::DataFrameWriteOptions;
use serde::Serialize;

/// One exported source.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub name: String,
    /// Where it was exported to: `--refs NAME=URL` reads it.
    pub url: String,
    /// The columns its ids came from.
    pub columns: Vec<String>,
    /// Rows of the source in its snapshot, and ids written (rows x columns).
    pub rows: u64,
    pub ids: u64,
    /// For a database table: when its snapshot was taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// What `blobgc export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub status: &'static str,
    pub out: String,
    pub sources: Vec<Exported>,
}

impl Outcome for ExportReport {
    fn human(&self) -> String {
        let mut lines = vec![format!(
            "blobgc: exported {} source(s) to {}",
            self.sources.len(),
            self.out
        )];
        lines.extend(self.sources.iter().map(|s| {
            format!(
                "  {}: {} rows, {} ids -> {}{}",
                s.name,
                s.rows,
                s.ids,
                s.url,
                s.snapshot
                    .as_deref()
                    .map(|t| format!(" (snapshot {t})"))
                    .unwrap_or_default()
            )
        }));
        lines.join("\n")
    }

    fn exit_code(&self) -> i32 {
        0
    }
}

/// Writes every source of `specs` below `out`, then the manifest.
pub async fn export(specs: &[SourceSpec], out: &str, s3: &S3Options) -> Result<ExportReport> {
    let out = Location::parse(out, "--out", s3)?;
    let ctx = crate::session::local(crate::options::partitions(), s3)?;
    out.register(&ctx);
    let mut snapshots = Snapshots::default();
    let mut opened = Vec::new();
    for spec in specs {
        opened.push(references::open(&ctx, spec, &mut snapshots).await?);
    }
    let mut sources = Vec::new();
    for source in opened {
        let dir = out.join(&source.spec.name)?;
        let written = source
            .ids
            .clone()
            .write_parquet(&dir.dir_url(), DataFrameWriteOptions::new(), None)
            .await
            .map_err(|e| Error::runtime(format!("exporting {:?}: {e}", source.spec.name)))?;
        let ids = written
            .iter()
            .filter_map(|b| b.column(0).as_primitive_opt::<UInt64Type>())
            .flat_map(|c| c.values().iter().copied())
            .sum::<u64>();
        if ids != source.id_values() {
            return Err(Error::runtime(format!(
                "exporting {:?}: {ids} ids written where the source held {} rows x {} columns: \
                 refusing to write the manifest of a short export",
                source.spec.name,
                source.rows,
                source.spec.columns.len()
            )));
        }
        sources.push(Exported {
            name: source.spec.name.clone(),
            url: dir.url(),
            columns: source.spec.columns.clone(),
            rows: source.rows,
            ids,
            snapshot: source.snapshot.clone(),
        });
    }
    let report = ExportReport {
        status: "completed",
        out: out.url(),
        sources,
    };
    let manifest = serde_json::to_vec_pretty(&serde_json::json!({ "sources": report.sources }))
        .map_err(|e| Error::runtime(format!("encoding the export manifest: {e}")))?;
    out.write(&out.child("manifest.json"), manifest).await?;
    Ok(report)
}
