//! Apache James on PostgreSQL: where its tables keep the blob ids its GC reads, and its uploads.

use super::{Read, is_url};
use crate::error::{Error, Result};

/// Apache James on PostgreSQL (its `postgres` app): the database whose tables hold every blob
/// id its GC reads. Headers are inline there (no header blob), the mail queue is not in the
/// database, and JMAP uploads expire on their own (`blobgc uploads`).
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::Args,
)]
#[serde(deny_unknown_fields)]
pub struct JamesOptions {
    /// James's PostgreSQL database (postgresql://USER@HOST:PORT/DB): read for its message,
    /// attachment and mail repository tables (run, plan, export) or its uploads (uploads).
    #[arg(long = "james-postgres", value_name = "URL")]
    pub postgres: Option<String>,
}

/// One of James's tables that reference blobs, as a reference source: its name, URL, id
/// columns, and whether it may be empty.
pub struct JamesTable {
    pub name: &'static str,
    pub url: String,
    pub columns: &'static [&'static str],
    pub allow_empty: bool,
}

/// James's tables that reference blobs, their id columns, and whether they may be empty (a
/// mail repository holds only mail that failed).
const JAMES_TABLES: [(&str, &str, &[&str], bool); 3] = [
    ("james-messages", "message", &["body_blob_id"], false),
    ("james-attachments", "attachment", &["blob_id"], false),
    (
        "james-mailrepository",
        "mail_repository_content",
        &["header_blob_id", "body_blob_id"],
        true,
    ),
];

impl JamesOptions {
    /// The URL of James's uploads table, if a database is given.
    pub fn uploads(&self) -> Result<Option<String>> {
        let Some(base) = self.database()? else {
            return Ok(None);
        };
        Ok(Some(with_table(&base, "uploads")))
    }

    /// James's tables that reference blobs, in the database given, if one is.
    pub fn tables(&self) -> Result<Vec<JamesTable>> {
        let Some(base) = self.database()? else {
            return Ok(Vec::new());
        };
        Ok(JAMES_TABLES
            .iter()
            .map(|&(name, table, columns, allow_empty)| JamesTable {
                name,
                url: with_table(&base, table),
                columns,
                allow_empty,
            })
            .collect())
    }

    /// James's database URL, checked.
    fn database(&self) -> Result<Option<url::Url>> {
        let Some(url) = &self.postgres else {
            return Ok(None);
        };
        let base = url::Url::parse(url)
            .ok()
            .filter(|u| is_url(u.as_str()))
            .ok_or_else(|| {
                Error::usage(format!(
                    "--james-postgres {url:?}: expected postgresql://USER@HOST:PORT/DB"
                ))
            })?;
        if base.query_pairs().any(|(k, _)| k == "table") {
            return Err(Error::usage(format!(
                "--james-postgres {url:?}: names James's database, not a table"
            )));
        }
        Ok(Some(base))
    }
}

/// `base` naming `table`.
fn with_table(base: &url::Url, table: &str) -> String {
    let mut url = base.clone();
    url.query_pairs_mut().append_pair("table", table);
    url.to_string()
}

/// James's `uploads` table read as blobgc's uploads table (`upload_id`, `user`, `blob_id`,
/// `size`, `uploaded_at`); its `upload_date` as UTC (each connection's time zone is UTC).
pub fn james_uploads() -> Vec<Read> {
    vec![
        Read::renamed("id", "upload_id"),
        Read::renamed("user_name", "user"),
        Read::id("blob_id"),
        Read::renamed("size", "size"),
        Read {
            select: "to_char(\"upload_date\", 'YYYY-MM-DD\"T\"HH24:MI:SS.US')".into(),
            ..Read::renamed("upload_date", "uploaded_at")
        },
    ]
}
