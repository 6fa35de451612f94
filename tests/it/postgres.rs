//! Reference sources read from a real PostgreSQL server, started here on 127.0.0.1 and stopped
//! when the test ends, failed or not. Debian's `postgresql` package provides it, installed by
//! `tests/setup-postgres.sh` (which the first test calls) when missing.

use crate::support::*;
use arrow::array::AsArray;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The server's programs: the newest Debian install's, installed by `tests/setup-postgres.sh`
/// (once per test process) when missing.
fn bindir() -> PathBuf {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        ok(Command::new("bash").arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/setup-postgres.sh"
        )))
    });
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL installed under /usr/lib/postgresql (Debian's postgresql package)")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
    });
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

/// The server refuses to run as root: as root, it runs as the `postgres` user.
fn as_server_user(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    match root {
        true => {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        }
        false => Command::new(program),
    }
}

fn ok(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        ok(Command::new("chmod").arg("777").arg(dir.path()));
        let bin = bindir();
        ok(as_server_user(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {}",
            dir.path().display()
        );
        ok(as_server_user(&bin.join("pg_ctl"))
            .args(["-w", "-t", "30", "-o", &options, "-l"])
            .arg(dir.path().join("log"))
            .arg("-D")
            .arg(&data)
            .arg("start"));
        Postgres {
            bin,
            data,
            port,
            _dir: dir,
        }
    }

    fn sql(&self, sql: &str) {
        ok(Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .args([
                "-p",
                &self.port.to_string(),
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                sql,
            ]));
    }

    /// What `sql` prints, unaligned, without headers.
    fn query(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tA"])
            .args(["-p", &self.port.to_string(), "-c", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A `--refs` value: source `name`, read as `user` from `table_and_columns` (`T#c1,c2`).
    fn refs(&self, name: &str, user: &str, table_and_columns: &str) -> String {
        format!(
            "{name}=postgresql://{user}@127.0.0.1:{}/postgres?table={table_and_columns}",
            self.port
        )
    }

    /// Stops the server at once, as a crash would.
    fn stop(&self) -> std::io::Result<std::process::Output> {
        as_server_user(&self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn values(ids: &[&str]) -> String {
    ids.iter()
        .map(|id| format!("('{id}')"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Three old blobs in `f`'s store: a message body, an attachment and an orphan; the first two.
fn a_body_an_attachment_and_an_orphan(f: &Fixture) -> (String, String) {
    let (body, attached, orphan) = (id(557, "body"), id(557, "attached"), id(557, "orphan"));
    f.blobs(&[&body, &attached, &orphan]);
    (body, attached)
}

#[test]
fn blobs_referenced_by_james_tables_in_postgres_are_kept_and_orphans_go() {
    let pg = Postgres::start();
    let f = Fixture::new();
    let (body, attached) = a_body_an_attachment_and_an_orphan(&f);
    pg.sql(&format!(
        "CREATE TABLE message (id serial PRIMARY KEY, body_blob_id varchar NOT NULL);
         INSERT INTO message (body_blob_id) VALUES {};
         CREATE TABLE attachment (id serial PRIMARY KEY, blob_id varchar);
         INSERT INTO attachment (blob_id) VALUES {}, (NULL);
         INSERT INTO message (body_blob_id)
             SELECT 'elsewhere-' || g FROM generate_series(1, 30000) g;",
        values(&[&body]),
        values(&[&attached])
    ));
    let messages = pg.refs("messages", "postgres", "message#body_blob_id");
    let attachments = pg.refs("attachments", "postgres", "public.attachment#blob_id");

    // Four partitions: the message table (~200 pages) is read as four page ranges at once.
    let args = [
        "--refs",
        &messages,
        "--refs",
        &attachments,
        "--partitions",
        "4",
        // The other rows name blobs this store does not hold.
        "--max-missing-references",
        "1",
    ];
    let out = f.run(T2, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.left(), BTreeSet::from([body, attached]));
    assert_eq!(
        (out.u("reference_count"), out.u("null_reference_count")),
        (30_002, 1),
        "every row read once"
    );
}

#[test]
fn a_role_that_row_level_security_limits_stops_the_run_and_one_that_bypasses_it_runs() {
    let pg = Postgres::start();
    let f = Fixture::new();
    let (mine, theirs) = (id(557, "mine"), id(557, "theirs"));
    f.blobs(&[&mine, &theirs]);
    pg.sql(&format!(
        "CREATE TABLE message (body_blob_id varchar, domain text);
         INSERT INTO message VALUES ('{mine}', 'a.org'), ('{theirs}', 'b.org');
         ALTER TABLE message ENABLE ROW LEVEL SECURITY;
         CREATE POLICY one_domain ON message USING (domain = 'a.org');
         CREATE ROLE reader LOGIN;
         GRANT SELECT ON message TO reader;
         CREATE ROLE gc LOGIN BYPASSRLS;
         GRANT SELECT ON message TO gc;
         CREATE VIEW bodies WITH (security_invoker = true) AS SELECT body_blob_id FROM message;
         GRANT SELECT ON bodies TO reader;"
    ));
    let refs = pg.refs("messages", "reader", "message#body_blob_id");

    let out = f.run(T2, &["--refs", &refs]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("row-level security") && out.stderr.contains("reader"),
        "{}",
        out.stderr
    );
    // The same rows behind a view, whose own relation has no row-level security: refused too.
    let through_a_view = pg.refs("messages", "reader", "bodies#body_blob_id");
    let out = f.run(T2, &["--refs", &through_a_view]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not a table"), "{}", out.stderr);
    assert_eq!(
        f.left(),
        BTreeSet::from([mine.clone(), theirs.clone()]),
        "nothing deleted"
    );

    let refs = pg.refs("messages", "gc", "message#body_blob_id");
    let out = f.run(T2, &["--refs", &refs]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.left(), BTreeSet::from([mine, theirs]), "both rows seen");
}

#[test]
fn a_missing_column_or_an_empty_table_deletes_nothing() {
    let pg = Postgres::start();
    let f = Fixture::new();
    let orphan = id(557, "orphan");
    f.blobs(&[&orphan]);
    pg.sql("CREATE TABLE message (body_blob_id varchar); CREATE TABLE attachment (blob_id text);");
    pg.sql(&format!("INSERT INTO message VALUES {}", values(&["x"])));

    let missing = pg.refs("messages", "postgres", "message#header_blob_id");
    let out = f.run(T2, &["--refs", &missing]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("header_blob_id"), "{}", out.stderr);

    let no_table = pg.refs("messages", "postgres", "mailbox#blob_id");
    let out = f.run(T2, &["--refs", &no_table]);
    assert_eq!(out.code, 2, "{}", out.stderr);

    let empty = pg.refs("attachments", "postgres", "attachment#blob_id");
    let out = f.run(T2, &["--refs", &empty]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("no rows"), "{}", out.stderr);
    assert_eq!(f.left(), BTreeSet::from([orphan]));
}

#[test]
fn the_james_preset_reads_james_tables_and_an_empty_mail_repository_is_normal() {
    let pg = Postgres::start();
    let f = Fixture::new();
    let (body, attached) = a_body_an_attachment_and_an_orphan(&f);
    // James's schema, reduced to the columns its GC reads.
    pg.sql(&format!(
        "CREATE TABLE message (message_id uuid, body_blob_id varchar(200) NOT NULL);
         INSERT INTO message VALUES (gen_random_uuid(), '{body}');
         CREATE TABLE attachment (attachment_id uuid, blob_id varchar(200));
         INSERT INTO attachment VALUES (gen_random_uuid(), '{attached}');
         CREATE TABLE mail_repository_content (name varchar, header_blob_id varchar,
                                               body_blob_id varchar);"
    ));
    let james = format!("postgresql://postgres@127.0.0.1:{}/postgres", pg.port);

    let out = f.run(T2, &["--james-postgres", &james]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.left(), BTreeSet::from([body, attached]));
    assert_eq!(out.u("reference_source_count"), 3);

    let table = format!("{james}?table=message");
    let out = f.run(T2, &["--james-postgres", &table]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// A psql session of the test's own, fed statement by statement.
struct Session(std::process::Child);

impl Session {
    fn open(pg: &Postgres) -> Session {
        Session(
            Command::new("psql")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q"])
                .args(["-p", &pg.port.to_string(), "-v", "ON_ERROR_STOP=1"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    fn send(&mut self, sql: &str) {
        use std::io::Write;
        let stdin = self.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `query` (a count) is above zero.
fn until(pg: &Postgres, query: &str, what: &str) {
    for _ in 0..600 {
        if pg.query(query) != "0" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{what} never happened");
}

/// Starts a run whose second source `session` locks, and returns once the run waits for it:
/// its snapshot is taken (at its first source) and it cannot go on.
fn a_run_held_at_its_second_source(
    f: &Fixture,
    pg: &Postgres,
    session: &mut Session,
) -> std::process::Child {
    session.send("BEGIN; LOCK TABLE attachment IN ACCESS EXCLUSIVE MODE;");
    until(
        pg,
        "SELECT count(*) FROM pg_locks WHERE granted AND mode = 'AccessExclusiveLock' \
         AND relation = 'attachment'::regclass",
        "the test's lock",
    );
    let messages = pg.refs("messages", "postgres", "message#body_blob_id");
    let attachments = pg.refs("attachments", "postgres", "attachment#blob_id");
    let run = Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args(["run", "--store", &f.store_url(), "--now", T2])
        .args(["--refs", &messages, "--refs", &attachments])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    until(
        pg,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        "the run's wait for the locked table",
    );
    run
}

#[test]
fn a_reference_deleted_during_the_run_keeps_its_blob_and_the_next_run_collects_it() {
    let pg = Postgres::start();
    let f = Fixture::new();
    let (kept, dropped) = (id(557, "kept"), id(557, "dropped"));
    f.blobs(&[&kept, &dropped]);
    pg.sql(&format!(
        "CREATE TABLE message (body_blob_id varchar); CREATE TABLE attachment (blob_id varchar);
         INSERT INTO message VALUES {}; INSERT INTO attachment VALUES {};",
        values(&[&kept, &dropped]),
        values(&[&kept])
    ));
    let mut writer = Session::open(&pg);
    let run = a_run_held_at_its_second_source(&f, &pg, &mut writer);
    // After the run's snapshot was taken, the reference goes.
    writer.send(&format!(
        "DELETE FROM message WHERE body_blob_id = '{dropped}'; COMMIT;"
    ));
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        f.left(),
        BTreeSet::from([kept.clone(), dropped]),
        "referenced in the run's snapshot: kept"
    );

    let messages = pg.refs("messages", "postgres", "message#body_blob_id");
    let attachments = pg.refs("attachments", "postgres", "attachment#blob_id");
    let next = f.run(T2, &["--refs", &messages, "--refs", &attachments]);
    assert_eq!(next.code, 0, "{}", next.stderr);
    assert_eq!(f.left(), BTreeSet::from([kept]));
}

#[test]
fn a_server_stopped_during_the_run_fails_it_and_deletes_nothing() {
    let pg = Postgres::start();
    let f = Fixture::new();
    let orphan = id(557, "orphan");
    f.blobs(&[&orphan]);
    pg.sql(
        "CREATE TABLE message (body_blob_id varchar); CREATE TABLE attachment (blob_id varchar);
         INSERT INTO message VALUES ('x'); INSERT INTO attachment VALUES ('y');",
    );
    let mut session = Session::open(&pg);
    let run = a_run_held_at_its_second_source(&f, &pg, &mut session);
    let stopped = pg.stop().unwrap();
    assert!(stopped.status.success(), "{stopped:?}");
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(f.left(), BTreeSet::from([orphan]));
}

#[test]
fn an_export_of_the_james_tables_collects_what_reading_them_live_collects() {
    let pg = Postgres::start();
    let f = Fixture::new();
    let (body, attached) = a_body_an_attachment_and_an_orphan(&f);
    pg.sql(&format!(
        "CREATE TABLE message (body_blob_id varchar NOT NULL);
         INSERT INTO message VALUES {};
         CREATE TABLE attachment (blob_id varchar);
         INSERT INTO attachment VALUES {}, (NULL);
         CREATE TABLE mail_repository_content (header_blob_id varchar, body_blob_id varchar);",
        values(&[&body]),
        values(&[&attached])
    ));
    let james = format!("postgresql://postgres@127.0.0.1:{}/postgres", pg.port);
    let out_dir = f.path("export");
    let exported = f.blobgc(&[
        "export",
        "--james-postgres",
        &james,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    let rows: Vec<(String, u64, u64)> = manifest["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["snapshot"].is_string(), "{s}");
            (
                s["name"].as_str().unwrap().to_string(),
                s["rows"].as_u64().unwrap(),
                s["ids"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("james-messages".into(), 1, 1),
            ("james-attachments".into(), 2, 2),
            ("james-mailrepository".into(), 0, 0),
        ]
    );

    let refs = |name: &str| format!("{name}={}", out_dir.join(name).display());
    let (m, a) = (refs("james-messages"), refs("james-attachments"));
    let out = f.run(T2, &["--refs", &m, "--refs", &a]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.left(), BTreeSet::from([body, attached]));
}

#[test]
fn james_uploads_past_their_ttl_are_deleted_from_its_uploads_table() {
    let pg = Postgres::start();
    let f = Fixture::new();
    let (old, fresh) = ("old-upload-blob", "fresh-upload-blob");
    f.blobs(&[old, fresh]);
    // James's uploads table; upload_date is a UTC timestamp without a zone.
    pg.sql(&format!(
        "CREATE TABLE uploads (id uuid PRIMARY KEY, content_type varchar, size bigint,
                               blob_id varchar, user_name varchar, upload_date timestamp);
         INSERT INTO uploads VALUES
           ('00000000-0000-0000-0000-000000000001', 'text/plain', 10, '{old}', 'bob',
            '2026-11-10 12:00:00'),
           ('00000000-0000-0000-0000-000000000002', 'text/plain', 20, '{fresh}', 'bob',
            '2026-11-22 11:00:00');"
    ));
    let james = format!("postgresql://postgres@127.0.0.1:{}/postgres", pg.port);
    let store = f.store_url();
    let expired = f.path("expired.parquet").display().to_string();
    let out = f.blobgc(&[
        "uploads",
        "--james-postgres",
        &james,
        "--store",
        &store,
        "--now",
        "2026-11-22T12:00:00Z",
        "--expired-out",
        &expired,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        f.left(),
        BTreeSet::from([fresh.to_string()]),
        "7 days: the old one goes"
    );
    let ids: Vec<String> = read_batches(std::path::Path::new(&expired))
        .iter()
        .flat_map(|b| {
            let ids = b.column_by_name("upload_id").unwrap();
            let ids = arrow::compute::cast(ids, &arrow::datatypes::DataType::Utf8).unwrap();
            ids.as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(ids, ["00000000-0000-0000-0000-000000000001"]);
}

#[test]
fn blobs_in_james_blob_storage_table_are_collected_in_their_bucket_only() {
    let pg = Postgres::start();
    let f = Fixture::new();
    let (body, attached, orphan) = (id(557, "body"), id(557, "attached"), id(557, "orphan"));
    let young = id(559, "young");
    // James's tables: its blob store in two buckets (the same ids in both), 25,000 more orphans
    // to page through, and row-level security on `message` (the superuser reads it whole).
    pg.sql(&format!(
        "CREATE TABLE blob_storage (bucket_name varchar(100) NOT NULL,
             blob_id varchar(200) NOT NULL, data bytea NOT NULL, size integer NOT NULL,
             metadata jsonb, PRIMARY KEY (bucket_name, blob_id));
         INSERT INTO blob_storage
             SELECT b, id, convert_to('content of ' || id, 'UTF8'), 11 + length(id), '{{}}'
             FROM unnest(ARRAY['{body}', '{attached}', '{orphan}', '{young}']) id,
                  unnest(ARRAY['default', 'other']) b;
         INSERT INTO blob_storage
             SELECT 'default', '1_557_filler-' || g, '\\x00', 1, NULL
             FROM generate_series(1, 25000) g;
         CREATE TABLE message (message_id uuid, body_blob_id varchar(200) NOT NULL,
                               domain varchar);
         INSERT INTO message VALUES (gen_random_uuid(), '{body}', 'a.org');
         ALTER TABLE message ENABLE ROW LEVEL SECURITY;
         ALTER TABLE message FORCE ROW LEVEL SECURITY;
         CREATE TABLE attachment (attachment_id uuid, blob_id varchar(200));
         INSERT INTO attachment VALUES (gen_random_uuid(), '{attached}');
         CREATE TABLE mail_repository_content (name varchar, header_blob_id varchar,
                                               body_blob_id varchar);"
    ));
    let james = format!("postgresql://postgres@127.0.0.1:{}/postgres", pg.port);
    let store = format!("{james}?bucket=default");
    let run = [
        "run",
        "--store",
        &store,
        "--now",
        T2,
        "--james-postgres",
        &james,
    ];

    // Plans go elsewhere: they would become rows of the blob table.
    let refused = f.blobgc(&[&run[..], &["--plan-root", &store]].concat());
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("holds blobs only"),
        "{}",
        refused.stderr
    );

    let out = f.blobgc(&[&run[..], &["--max-delete-fraction", "1"]].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.u("gced_blob_count"), 25_001);
    let left = |bucket: &str| {
        pg.query(&format!(
            "SELECT string_agg(blob_id, ' ' ORDER BY blob_id) FROM blob_storage
             WHERE bucket_name = '{bucket}'"
        ))
    };
    let mut kept = [&attached, &body, &young].map(|s| s.to_string());
    kept.sort();
    assert_eq!(
        left("default"),
        kept.join(" "),
        "the garbage of the bucket, only"
    );
    let mut all = [&attached, &body, &orphan, &young].map(|s| s.to_string());
    all.sort();
    assert_eq!(
        left("other"),
        all.join(" "),
        "another bucket is not touched"
    );

    // A quarantine in a bucket of its own: bucket `other`'s orphan moved there.
    let other = format!("{james}?bucket=other");
    let quarantine = format!("{james}?bucket=quarantine");
    let out = f.blobgc(
        &[
            &run[..2],
            &[&other, "--now", T2, "--james-postgres", &james],
        ]
        .concat()
        .into_iter()
        .chain(["--quarantine", quarantine.as_str()])
        .collect::<Vec<_>>(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(left("other"), kept.join(" "));
    let moved = left("quarantine");
    assert!(moved.ends_with(&format!("/{orphan}")), "{moved}");
}
