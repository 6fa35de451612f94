//! Reference sources read straight from PostgreSQL: `postgresql://USER@HOST:PORT/DB?table=T`
//! with the id columns after `#`, as for any source. The password comes from `PGPASSWORD` or
//! the password file, as libpq reads them, never from the URL, which is printed in reports and
//! errors.
//!
//! **The danger:** a database can hide rows from the reader, and a table read at two moments
//! can disagree with itself; either makes live blobs look like garbage. So every PostgreSQL
//! source of a run (per database) is read in one snapshot: a `REPEATABLE READ, READ ONLY`
//! transaction held open for the whole run exports it (`pg_export_snapshot()`), and every scan,
//! on its own connection, reads in it (`SET TRANSACTION SNAPSHOT`); the verification reads the
//! very rows the filter was built from. A table under row-level security read by a role that
//! neither is a superuser nor bypasses it aborts the run; a view or foreign table (whose own
//! relation says nothing of the rows it hides), a missing table or column is a usage error; a
//! connection lost mid-read fails the run. Rows stream in batches: no table is held in memory.
//!
//! James's blob store in PostgreSQL is a store of its own ([`BlobStorage`], `store.rs`).

use crate::error::{Error, Result};
use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{StreamExt, pin_mut};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::Sender;
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Config, NoTls};

mod james;
mod pgpass;
mod store;

pub use james::{JamesOptions, JamesTable, james_uploads};
use pgpass::{PassKey, password};
pub use store::BlobStorage;

/// Rows per batch read from a table.
const BATCH_ROWS: usize = 8192;

/// How long connecting to a database may take before the run fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a read waits for a lock (a migration holding the table, say) before the run fails,
/// and how long a connection may be silent before TCP asks whether the server is still there:
/// no read waits forever.
const LOCK_TIMEOUT: &str = "1min";
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Whether a source's URL names a PostgreSQL table.
pub fn is_url(url: &str) -> bool {
    url.starts_with("postgresql://") || url.starts_with("postgres://")
}

/// A source URL taken apart: how to connect, and the table (`schema.table` or `table`).
struct Source {
    config: Config,
    table: String,
    /// The database, as snapshots are shared: user, host, port and name.
    database: String,
}

fn parse(url: &str, what: &str) -> Result<Source> {
    let (config, database, mut own) = parse_url(url, what, &["table"])?;
    let table = own
        .remove("table")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::usage(format!("{what}: no ?table=NAME")))?;
    Ok(Source {
        config,
        table,
        database,
    })
}

/// A PostgreSQL URL taken apart: how to connect (the password from the environment), the
/// database (user, host, port and name), and the query parameters named in `own`, which are
/// blobgc's; the others are the connection's.
fn parse_url(
    url: &str,
    what: &str,
    own: &[&str],
) -> Result<(Config, String, HashMap<String, String>)> {
    let bad = |why: String| Error::usage(format!("{what}: {why}"));
    let mut parsed = url::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
    if parsed.password().is_some() {
        return Err(bad(
            "a password in the URL would be printed with it; set PGPASSWORD instead".into(),
        ));
    }
    let (ours, rest): (Vec<_>, Vec<_>) = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| own.contains(&k.as_str()));
    parsed.set_query(None);
    if !rest.is_empty() {
        parsed.query_pairs_mut().extend_pairs(rest);
    }
    let mut config: Config = parsed.as_str().parse().map_err(|e| bad(format!("{e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
    let key = PassKey {
        host: parsed.host_str().unwrap_or("localhost").to_string(),
        port: parsed.port().unwrap_or(5432).to_string(),
        database: parsed.path().trim_start_matches('/').to_string(),
        user: parsed.username().to_string(),
    };
    if let Some(password) = password(&key) {
        config.password(password);
    }
    let database = format!("{}@{}:{}/{}", key.user, key.host, key.port, key.database);
    Ok((config, database, ours.into_iter().collect()))
}

/// A table name as SQL: each dotted part quoted.
fn quoted(table: &str) -> String {
    table
        .split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

async fn connect(config: &Config, what: &str) -> Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| Error::runtime(format!("{what}: cannot connect: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("a PostgreSQL connection ended: {e}");
        }
    });
    client
        .batch_execute(&format!(
            "SET lock_timeout = '{LOCK_TIMEOUT}'; SET TimeZone = 'UTC'"
        ))
        .await
        .map_err(failed(what))?;
    Ok(client)
}

/// A failed call as an error naming the source, with the server's own message when it sent one.
fn failed(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| match e.as_db_error() {
        Some(db) => Error::runtime(format!("{what}: {} ({})", db.message(), db.code().code())),
        None => Error::runtime(format!("{what}: {e}")),
    }
}

/// One database's snapshot, exported by a transaction that stays open while this lives.
struct Snapshot {
    config: Config,
    id: String,
    /// When the snapshot was taken, in the database's clock.
    taken_at: String,
    client: Client,
}

impl Snapshot {
    async fn take(config: &Config, what: &str) -> Result<Snapshot> {
        let client = connect(config, what).await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(failed(what))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                &[],
            )
            .await
            .map_err(failed(what))?;
        Ok(Snapshot {
            config: config.clone(),
            id: row.get(0),
            taken_at: row.get(1),
            client,
        })
    }
}

/// A column of a table as it is read: `select`, as text, named `name`; `id` when it holds blob
/// ids (and must be text).
pub struct Read {
    column: String,
    name: String,
    select: String,
    id: bool,
}

impl Read {
    fn id(column: &str) -> Read {
        Read {
            column: column.to_string(),
            name: column.to_string(),
            select: format!("{}::text", quoted(column)),
            id: true,
        }
    }

    fn renamed(column: &str, name: &str) -> Read {
        Read {
            name: name.to_string(),
            id: false,
            ..Read::id(column)
        }
    }
}

/// The snapshots of one run, a database each.
#[derive(Default)]
pub struct Snapshots(HashMap<String, Arc<Snapshot>>);

/// A PostgreSQL source checked in the run's snapshot: its table, its row count then, and when
/// the snapshot was taken.
pub struct Opened {
    pub table: DataFrame,
    pub rows: u64,
    pub snapshot: String,
}

impl Snapshots {
    /// The blob id `columns` of the table of `url`, checked in the run's snapshot of its
    /// database (taken on first use): the table exists, holds them as text, and hides no row
    /// from this role.
    pub async fn open(
        &mut self,
        ctx: &SessionContext,
        url: &str,
        columns: &[String],
        what: &str,
    ) -> Result<Opened> {
        let read: Vec<Read> = columns.iter().map(|c| Read::id(c)).collect();
        self.open_as(ctx, url, &read, what).await
    }

    /// The table of `url` read as `columns`, checked as [`Self::open`] checks it.
    pub async fn open_as(
        &mut self,
        ctx: &SessionContext,
        url: &str,
        columns: &[Read],
        what: &str,
    ) -> Result<Opened> {
        let source = parse(url, what)?;
        let snapshot = match self.0.get(&source.database) {
            Some(s) => Arc::clone(s),
            None => {
                let s = Arc::new(Snapshot::take(&source.config, what).await?);
                self.0.insert(source.database.clone(), Arc::clone(&s));
                s
            }
        };
        let table = quoted(&source.table);
        check_columns(&snapshot.client, &table, columns, what).await?;
        check_row_security(&snapshot.client, &table, what).await?;
        let count: i64 = snapshot
            .client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(failed(what))?
            .get(0);
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|c| Field::new(&c.name, DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
        let as_text: Vec<&str> = columns.iter().map(|c| c.select.as_str()).collect();
        let partitions = ctx.copied_config().target_partitions();
        let scans: Vec<Arc<dyn PartitionStream>> =
            page_ranges(&snapshot.client, &table, partitions, what)
                .await?
                .into_iter()
                .map(|range| {
                    Arc::new(Scan {
                        snapshot: Arc::clone(&snapshot),
                        copy: format!(
                            "COPY (SELECT {} FROM {table} {range}) TO STDOUT (FORMAT binary)",
                            as_text.join(", ")
                        ),
                        schema: Arc::clone(&schema),
                        what: what.to_string(),
                    }) as Arc<dyn PartitionStream>
                })
                .collect();
        let provider = StreamingTable::try_new(schema, scans)?;
        Ok(Opened {
            table: ctx.read_table(Arc::new(provider))?,
            rows: u64::try_from(count).unwrap_or(0),
            snapshot: snapshot.taken_at.clone(),
        })
    }
}

/// The table exists and holds each of `columns` as text.
async fn check_columns(client: &Client, table: &str, columns: &[Read], what: &str) -> Result<()> {
    // Only a table's own row-level security is checked: a view, a foreign table or a
    // materialized view could hide rows of what lies under it, so it is refused.
    let kind: Option<String> = client
        .query_opt(
            "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)",
            &[&table],
        )
        .await
        .map_err(failed(what))?
        .map(|row| row.get(0));
    match kind.as_deref() {
        None => return Err(Error::usage(format!("{what}: no table {table}"))),
        Some("r" | "p") => {}
        Some(other) => {
            return Err(Error::usage(format!(
                "{what}: {table} is not a table (pg_class.relkind {other:?}): a view or foreign \
                 table may hide rows of the tables it reads; name the table itself"
            )));
        }
    }
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            &[&table],
        )
        .await
        .map_err(failed(what))?;
    let have: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for Read { column, id, .. } in columns {
        let Some(kind) = have.get(column) else {
            let mut names: Vec<_> = have.keys().map(String::as_str).collect();
            names.sort();
            return Err(Error::usage(format!(
                "{what}: no column {column:?} (it has: {})",
                names.join(", ")
            )));
        };
        if *id && !(kind == "text" || kind.starts_with("character")) {
            return Err(Error::usage(format!(
                "{what}: column {column:?} is {kind}, blob ids must be text"
            )));
        }
    }
    Ok(())
}

/// Aborts when row-level security may hide rows of `table` from this role: it is on for the
/// table, and the role neither is a superuser nor bypasses it (a table's owner is not exempt
/// once security is forced, so no exemption is assumed).
async fn check_row_security(client: &Client, table: &str, what: &str) -> Result<()> {
    let row = client
        .query_one(
            "SELECT c.relrowsecurity, r.rolsuper OR r.rolbypassrls, current_user::text \
             FROM pg_class c, pg_roles r \
             WHERE c.oid = to_regclass($1) AND r.rolname = current_user",
            &[&table],
        )
        .await
        .map_err(failed(what))?;
    let (secured, sees_all, role): (bool, bool, String) = (row.get(0), row.get(1), row.get(2));
    if secured && !sees_all {
        return Err(Error::aborted(format!(
            "{what}: table {table} has row-level security and role {role:?} is neither superuser \
             nor BYPASSRLS, so it may see only some rows: every blob the others reference would \
             look like garbage (read as a role with BYPASSRLS)"
        )));
    }
    Ok(())
}

/// The `WHERE` clauses that cut `table` into about `count` ranges of its pages, for scans in
/// parallel: TID range scans read only their pages (PostgreSQL 14 and later; before, one scan).
/// The last range is open: a table cannot be rewritten while the run's snapshot transaction
/// holds it (it counted its rows), and rows added later are not in the snapshot anyway.
async fn page_ranges(
    client: &Client,
    table: &str,
    count: usize,
    what: &str,
) -> Result<Vec<String>> {
    let row = client
        .query_one(
            "SELECT pg_relation_size(to_regclass($1)) / current_setting('block_size')::bigint, \
             current_setting('server_version_num')::int",
            &[&table],
        )
        .await
        .map_err(failed(what))?;
    let (pages, version): (i64, i32) = (row.get(0), row.get(1));
    let count = count as i64;
    if version < 140_000 || count < 2 || pages < count {
        return Ok(vec![String::new()]);
    }
    let start = |i: i64| pages * i / count;
    Ok((0..count)
        .map(|i| match i + 1 == count {
            true => format!("WHERE ctid >= '({},0)'::tid", start(i)),
            false => format!(
                "WHERE ctid >= '({},0)'::tid AND ctid < '({},0)'::tid",
                start(i),
                start(i + 1)
            ),
        })
        .collect())
}

/// One scan of a table in the run's snapshot, on a connection of its own.
struct Scan {
    snapshot: Arc<Snapshot>,
    /// `COPY (SELECT ids as text ...) TO STDOUT (FORMAT binary)`.
    copy: String,
    schema: SchemaRef,
    what: String,
}

impl std::fmt::Debug for Scan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgreSQL scan: {}", self.copy)
    }
}

impl PartitionStream for Scan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(Arc::clone(&self.schema), 2);
        let tx = builder.tx();
        let (snapshot, copy, schema, what) = (
            Arc::clone(&self.snapshot),
            self.copy.clone(),
            Arc::clone(&self.schema),
            self.what.clone(),
        );
        builder.spawn(async move {
            read(&snapshot, &copy, &schema, &what, &tx)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))
        });
        builder.build()
    }
}

/// Sends the rows of `copy`, read in `snapshot` on a new connection, in batches, until they
/// end or nobody receives them.
async fn read(
    snapshot: &Snapshot,
    copy: &str,
    schema: &SchemaRef,
    what: &str,
    tx: &Sender<DFResult<RecordBatch>>,
) -> Result<()> {
    let client = connect(&snapshot.config, what).await?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{}'",
            snapshot.id.replace('\'', "''")
        ))
        .await
        .map_err(failed(what))?;
    let types = vec![Type::TEXT; schema.fields().len()];
    let rows = BinaryCopyOutStream::new(client.copy_out(copy).await.map_err(failed(what))?, &types);
    pin_mut!(rows);
    let mut builders: Vec<StringBuilder> = schema
        .fields()
        .iter()
        .map(|_| StringBuilder::new())
        .collect();
    let mut pending = 0;
    while let Some(row) = rows.next().await {
        let row = row.map_err(failed(what))?;
        for (i, b) in builders.iter_mut().enumerate() {
            b.append_option(row.try_get::<Option<&str>>(i).map_err(failed(what))?);
        }
        pending += 1;
        if pending == BATCH_ROWS {
            pending = 0;
            if tx.send(Ok(finish(schema, &mut builders)?)).await.is_err() {
                return Ok(());
            }
        }
    }
    if pending > 0 {
        let _ = tx.send(Ok(finish(schema, &mut builders)?)).await;
    }
    Ok(())
}

fn finish(schema: &SchemaRef, builders: &mut [StringBuilder]) -> Result<RecordBatch> {
    let arrays: Vec<ArrayRef> = builders
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), arrays)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_url_is_refused_and_the_table_is_required() {
        for url in [
            "postgresql://gc:secret@db:5432/james?table=message",
            "postgresql://gc@db:5432/james",
        ] {
            assert_eq!(
                parse(url, "source").err().map(|e| e.exit_code()),
                Some(2),
                "{url}"
            );
        }
        let s = parse(
            "postgresql://gc@db/james?table=public.message&sslmode=disable",
            "s",
        )
        .unwrap();
        assert_eq!(
            (s.table.as_str(), s.database.as_str()),
            ("public.message", "gc@db:5432/james")
        );
    }
}
