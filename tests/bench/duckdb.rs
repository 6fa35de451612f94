//! The `duckdb` strategy: DuckDB's SQL anti join of the eligible listing with the references,
//! writing its result to Parquet, as the fastest exact engine a user would reach for. DuckDB's
//! Python package is installed by the bench itself, pinned, into a virtual environment beside
//! the datasets; the measured process is the Python interpreter running the query.

use std::path::{Path, PathBuf};
use std::process::Command;

const VERSION: &str = "2.0.1";

/// The query; it prints what the bench's child prints, its own CPU time and peak RSS included.
const SCRIPT: &str = r#"
import duckdb, json, resource, sys
data, out, current = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect(config={"threads": 2})
rows = con.execute(f"""
COPY (
  SELECT l.blob_id, l.size
  FROM read_parquet('{data}/inventory/*.parquet') l
  ANTI JOIN read_parquet('{data}/refs/**/*.parquet') r ON l.blob_id = r.blob_id
  WHERE split_part(l.blob_id, '_', 1) = '1'
    AND CAST(split_part(l.blob_id, '_', 2) AS BIGINT) + 1 < {current}
) TO '{out}/batches/result.parquet' (FORMAT parquet)
""").fetchone()[0]
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "wall": 0.0, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
    "candidates": rows, "filter_bits": 0, "plan": "file://" + out,
}))
"#;

/// The Python of a virtual environment under `base` holding DuckDB, made on first use.
pub fn python(base: &Path) -> PathBuf {
    let venv = base.join(format!("duckdb-{VERSION}"));
    let python = venv.join("bin/python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            &format!("duckdb=={VERSION}"),
        ]));
    }
    python
}

fn run(command: &mut Command) {
    let status = command.status().expect("a setup command starts");
    assert!(status.success(), "{command:?}: {status}");
}

/// The command measuring DuckDB on the dataset `dir`, its result under `out`.
pub fn command(python: &Path, dir: &Path, out: &Path, current: u64) -> Command {
    std::fs::create_dir_all(out.join("batches")).expect("duckdb's result dir");
    let mut command = Command::new(python);
    command
        .args(["-c", SCRIPT])
        .arg(dir.canonicalize().expect("dataset dir"))
        .arg(out.canonicalize().expect("result dir"))
        .arg(current.to_string());
    command
}
