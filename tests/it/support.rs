//! Fixtures: a store directory, reference tables, and a way to run the binary.

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use base64::Engine;
use parquet::arrow::ArrowWriter;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Generation 557 at 30 days.
pub const T0: &str = "2015-10-30T16:12:00Z";
/// Two generations later: what T0 wrote is now eligible.
pub const T2: &str = "2015-12-30T16:12:00Z";

pub fn digest(content: &str) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(Sha256::digest(content.as_bytes()))
}

/// A deduplicated blob id of family 1 in `generation`.
pub fn id(generation: u64, content: &str) -> String {
    format!("1_{generation}_{}", digest(content))
}

pub fn write_parquet(path: &Path, columns: Vec<(&str, Vec<Option<&str>>)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let arrays: Vec<(&str, ArrayRef)> = columns
        .into_iter()
        .map(|(n, v)| (n, Arc::new(StringArray::from(v)) as ArrayRef))
        .collect();
    let batch = RecordBatch::try_from_iter(arrays).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// A Parquet file of one `blob_id` column, in memory.
pub fn parquet_bytes<S: AsRef<str>>(ids: &[S]) -> Vec<u8> {
    let values: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    let batch = RecordBatch::try_from_iter(vec![(
        "blob_id",
        Arc::new(StringArray::from(values)) as ArrayRef,
    )])
    .unwrap();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

pub struct Outcome {
    pub code: i32,
    pub report: Option<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn u(&self, key: &str) -> u64 {
        self.report
            .as_ref()
            .and_then(|r| r[key].as_u64())
            .unwrap_or_else(|| panic!("no {key} in {:?}\n{}", self.report, self.stderr))
    }
    pub fn status(&self) -> &str {
        self.report
            .as_ref()
            .and_then(|r| r["status"].as_str())
            .unwrap_or("")
    }
}

impl Fixture {
    pub fn new() -> Self {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(f.store()).unwrap();
        f
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    pub fn store_url(&self) -> String {
        format!("file://{}", self.store().display())
    }

    pub fn blobs<S: AsRef<str>>(&self, ids: &[S]) {
        for id in ids {
            std::fs::write(
                self.store().join(id.as_ref()),
                format!("content of {}", id.as_ref()),
            )
            .unwrap();
        }
    }

    /// A reference table `refs/<name>/part-0.parquet` with a `blob_id` column; returns `--refs`.
    pub fn refs<S: AsRef<str>>(&self, name: &str, ids: &[S]) -> String {
        let dir = self.path(&format!("refs/{name}"));
        write_parquet(
            &dir.join("part-0.parquet"),
            vec![("blob_id", ids.iter().map(|s| Some(s.as_ref())).collect())],
        );
        format!("{name}={}", dir.display())
    }

    pub fn left(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.store())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    /// `blobgc run --store <store> --now <now> --report <file> <args>`.
    pub fn run(&self, now: &str, args: &[&str]) -> Outcome {
        self.run_with(now, args, &[])
    }

    /// [`Self::run`] with extra environment variables.
    pub fn run_with(&self, now: &str, args: &[&str], env: &[(&str, String)]) -> Outcome {
        let store = self.store_url();
        let mut all = vec!["run", "--store", store.as_str(), "--now", now];
        all.extend_from_slice(args);
        self.blobgc_with(&all, env)
    }

    /// The binary with `args`, plus `--report` to a fresh file; parses that report.
    pub fn blobgc(&self, args: &[&str]) -> Outcome {
        self.blobgc_with(args, &[])
    }

    /// [`Self::blobgc`] with extra environment variables.
    pub fn blobgc_with(&self, args: &[&str], env: &[(&str, String)]) -> Outcome {
        let report = self.path(&format!("report-{}.json", rand::random::<u64>()));
        let out = Command::new(env!("CARGO_BIN_EXE_blobgc"))
            .args(args)
            .arg("--report")
            .arg(&report)
            .env("RUST_LOG", "warn,blobgc=info")
            // A dry run's plan and a run's spill stay within the fixture.
            .env("TMPDIR", self.dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        let report = std::fs::read(&report)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap());
        Outcome {
            code: out.status.code().unwrap_or(-1),
            report,
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }
}

/// Writes one record batch as a Parquet file.
pub fn write_batch(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// Every row of a Parquet file.
pub fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
