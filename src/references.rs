//! Reference sources: the exported tables of every entity that references blobs (messages,
//! attachments, mail queue, mail repositories, uploads...).
//!
//! A source that is missing, unreadable, lacks an id column or is unexpectedly empty would
//! make every blob it references look like garbage, so each of those stops the run before
//! anything is deleted. Null ids are counted, never referenced.

use crate::error::{Error, Result};
use crate::listing::BLOB_ID;
use crate::postgres::{self, JamesTable, Snapshots};
use crate::store::Location;
use arrow::datatypes::{DataType, Field};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

fn default_columns() -> Vec<String> {
    vec![BLOB_ID.to_string()]
}

/// A named reference table and the columns of it that hold blob ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub name: String,
    /// A Parquet file, or a directory (prefix) of `.parquet` files; a path or a URL.
    pub url: String,
    #[serde(default = "default_columns")]
    pub columns: Vec<String>,
    /// Whether zero rows is a normal state of this source (e.g. an empty mail queue).
    #[serde(default)]
    pub allow_empty: bool,
}

impl SourceSpec {
    /// Parses the `--refs NAME=URL[#col1,col2]` flag.
    pub fn parse_flag(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::usage(format!(
                "--refs {text:?}: {why} (expected NAME=URL[#col1,col2])"
            ))
        };
        let (name, rest) = text.split_once('=').ok_or_else(|| bad("no '='"))?;
        let (url, columns) = match rest.rsplit_once('#') {
            Some((url, cols)) => (url, cols.split(',').map(|c| c.trim().to_string()).collect()),
            None => (rest, default_columns()),
        };
        let spec = SourceSpec {
            name: name.trim().to_string(),
            url: url.to_string(),
            columns,
            allow_empty: false,
        };
        spec.validate().map_err(|e| bad(&e.to_string()))?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::usage("a reference source has an empty name"));
        }
        if self.url.trim().is_empty() {
            return Err(Error::usage(format!(
                "reference source {:?} has an empty url",
                self.name
            )));
        }
        if self.columns.is_empty() || self.columns.iter().any(|c| c.is_empty()) {
            return Err(Error::usage(format!(
                "reference source {:?} needs non-empty id column names",
                self.name
            )));
        }
        Ok(())
    }
}

impl From<JamesTable> for SourceSpec {
    fn from(t: JamesTable) -> SourceSpec {
        SourceSpec {
            name: t.name.to_string(),
            url: t.url,
            columns: t.columns.iter().map(|c| c.to_string()).collect(),
            allow_empty: t.allow_empty,
        }
    }
}

/// A source checked and opened: its row count and its ids as one `blob_id` column (the union
/// of its id columns); for a database table, when the run's snapshot of it was taken.
pub struct OpenedSource {
    pub spec: SourceSpec,
    pub rows: u64,
    pub ids: DataFrame,
    pub snapshot: Option<String>,
}

impl OpenedSource {
    /// Id values this source contributes, nulls included: rows x id columns.
    pub fn id_values(&self) -> u64 {
        self.rows * self.spec.columns.len() as u64
    }
}

/// A Parquet table at `url`: one file, or every `.parquet` file below a directory. `what`
/// names it in errors: missing (exit 2), unreadable (exit 1).
pub async fn read_table(ctx: &SessionContext, url: &str, what: &str) -> Result<DataFrame> {
    let s3 = crate::registry::session_s3(ctx);
    let loc = Location::parse(url, "table url", &s3).map_err(|e| e.context(what))?;
    loc.register(ctx);
    let (table_url, extension) = if loc.store.head(&loc.path).await.is_ok() {
        (loc.url(), "")
    } else {
        let found = loc
            .store
            .list(Some(&loc.path))
            .try_filter(|m| futures::future::ready(m.location.as_ref().ends_with(".parquet")))
            .try_next()
            .await
            .map_err(|e| Error::runtime(format!("{what}: cannot list: {e}")))?;
        if found.is_none() {
            return Err(Error::usage(format!(
                "{what}: not found (no Parquet file at or below it)"
            )));
        }
        (loc.dir_url(), ".parquet")
    };
    ctx.read_parquet(
        table_url,
        ParquetReadOptions::default().file_extension(extension),
    )
    .await
    .map_err(|e| Error::runtime(format!("{what}: cannot read Parquet: {e}")))
}

/// The field `column` of `df`, or a usage error naming the table and its columns.
pub fn field<'a>(df: &'a DataFrame, column: &str, what: &str) -> Result<&'a Field> {
    df.schema()
        .field_with_unqualified_name(column)
        .map(AsRef::as_ref)
        .map_err(|_| {
            let have: Vec<_> = df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            Error::usage(format!(
                "{what}: no column {column:?} (it has: {})",
                have.join(", ")
            ))
        })
}

/// Checks and opens a source: Parquet files, or a PostgreSQL table read in the run's snapshot
/// of its database (`snapshots`). Errors name the source, its URL and what is wrong.
pub async fn open(
    ctx: &SessionContext,
    spec: &SourceSpec,
    snapshots: &mut Snapshots,
) -> Result<OpenedSource> {
    let what = format!("reference source {:?} ({})", spec.name, spec.url);
    let (df, counted, snapshot) = match postgres::is_url(&spec.url) {
        true => {
            let opened = snapshots.open(ctx, &spec.url, &spec.columns, &what).await?;
            (opened.table, Some(opened.rows), Some(opened.snapshot))
        }
        false => (read_table(ctx, &spec.url, &what).await?, None, None),
    };

    let mut ids: Option<DataFrame> = None;
    for column in &spec.columns {
        let field = field(&df, column, &what)?;
        if !matches!(
            field.data_type(),
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        ) {
            return Err(Error::usage(format!(
                "{what}: column {column:?} is {}, blob ids must be strings",
                field.data_type()
            )));
        }
        let one = df.clone().select(vec![
            cast(Expr::Column(Column::from_name(column)), DataType::Utf8View).alias(BLOB_ID),
        ])?;
        ids = Some(match ids {
            None => one,
            Some(all) => all.union(one)?,
        });
    }
    let ids = ids.ok_or_else(|| Error::usage(format!("{what}: no id column")))?;
    let rows = match counted {
        Some(rows) => rows,
        None => df
            .count()
            .await
            .map_err(|e| Error::runtime(format!("{what}: cannot count rows: {e}")))?
            as u64,
    };
    if rows == 0 && !spec.allow_empty {
        return Err(Error::aborted(format!(
            "{what} has no rows: an empty export would make every blob it references look like garbage \
             (set allow_empty for this source if empty is normal)"
        )));
    }
    Ok(OpenedSource {
        spec: spec.clone(),
        rows,
        ids,
        snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_flag() {
        let s = SourceSpec::parse_flag("messages=/data/m#header_blob_id,body_blob_id").unwrap();
        assert_eq!(s.name, "messages");
        assert_eq!(s.url, "/data/m");
        assert_eq!(s.columns, vec!["header_blob_id", "body_blob_id"]);
        let s = SourceSpec::parse_flag("a=s3://b/p").unwrap();
        assert_eq!(s.columns, vec!["blob_id"]);
        for bad in ["nourl", "=x", "a=", "a=x#", "a=x#c,"] {
            assert!(SourceSpec::parse_flag(bad).is_err(), "{bad}");
        }
    }
}
