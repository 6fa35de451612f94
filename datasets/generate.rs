//! `blobgc-datasets`: generates a mail-server-like deduplicated blob store and its reference
//! tables, deterministic by seed, with the exact set of blobs a correct GC deletes.
//!
//! Messages (a header and a body blob each) arrive over `--months`; attachments are drawn
//! Zipf-like from a pool, so popular ones are shared by many messages; identical content is
//! stored once per generation. Some messages were deleted (their blobs are orphans unless shared),
//! some sit in the mail queue or a mail repository, uploads come and go, a few writes failed
//! (pure orphans), and the oldest blobs predate generations (legacy family-0 ids).
//!
//! Output (`--out DIR`, recreated):
//! ```text
//! store/<blob id>                 the blob store (file:///.../store)
//! refs/<table>/part-N.parquet     messages, attachments, mail_queue, mail_repositories, uploads
//! inventory/part-0.parquet        blob_id, size, last_modified
//! uploads-store/<blob id>         a JMAP uploads bucket: the content of every refs/uploads row
//! incremental/deletions.parquet   ADR 39's Deletions: blob_id, generation, date, gc_iteration
//! incremental/references.parquet  ADR 39's References: entity_id, blob_id, generation
//! expected-deleted.txt            the blobs a GC at --now must delete (sorted)
//! expected.json                   counts
//! ```

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use base64::Engine;
use blobgc::blob_id::BlobId;
use blobgc::generation::{GenerationRule, IdClass, parse_duration};
use chrono::{DateTime, Utc};
use clap::Parser;
use parquet::arrow::ArrowWriter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "Generate a mail-like deduplicated blob store with its reference tables")]
struct Args {
    /// Output directory (its store/, refs/, inventory/ and uploads-store/ are recreated).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Messages ever received (about 2.5 blobs each before deduplication).
    #[arg(long, default_value_t = 2000)]
    messages: usize,
    /// The GC clock the expected deletion set is computed for.
    #[arg(long, default_value = "2026-11-22T00:00:00Z")]
    now: String,
    /// Months of history before --now.
    #[arg(long, default_value_t = 12)]
    months: i64,
    #[arg(long, default_value = "30d")]
    generation_duration: String,
    #[arg(long, default_value_t = 1)]
    family: u32,
    /// Parquet files per large reference table.
    #[arg(long, default_value_t = 4)]
    parts: usize,
}

struct Store {
    rule: GenerationRule,
    duration: i64,
    family: u32,
    legacy_before: i64,
    blobs: BTreeMap<String, (i64, Vec<u8>)>,
}

impl Store {
    /// Stores `content` written at `t`: its id is the content hash within t's generation.
    fn put(&mut self, t: i64, content: Vec<u8>) -> String {
        let digest = base64::engine::general_purpose::URL_SAFE.encode(Sha256::digest(&content));
        let id = if t < self.legacy_before {
            digest
        } else {
            BlobId {
                family: self.family,
                generation: (t / self.duration) as u64,
                delegate: &digest,
            }
            .to_string()
        };
        self.blobs.entry(id.clone()).or_insert((t, content));
        id
    }
}

/// Zipf-like draw of 0..n (rank k with weight 1/(k+1)^s).
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        Zipf(
            (0..n)
                .map(|k| {
                    acc += 1.0 / ((k + 1) as f64).powf(s);
                    acc
                })
                .collect(),
        )
    }
    fn sample(&self, rng: &mut StdRng) -> usize {
        let x = rng.random::<f64>() * self.0.last().copied().unwrap_or(0.0);
        self.0.partition_point(|&c| c < x).min(self.0.len() - 1)
    }
}

fn content(rng: &mut StdRng, label: &str, max: usize) -> Vec<u8> {
    let len = rng.random_range(label.len()..=max.max(label.len()));
    label
        .bytes()
        .chain((0..).map(|i| b"abcdefghijklmnopqrstuvwxyz \n"[i % 28]))
        .take(len)
        .collect()
}

fn write_batch(path: &Path, batch: &RecordBatch) -> Result<(), Box<dyn std::error::Error>> {
    let mut w = ArrowWriter::try_new(std::fs::File::create(path)?, batch.schema(), None)?;
    w.write(batch)?;
    w.close()?;
    Ok(())
}

type Table = Vec<(&'static str, Vec<Option<String>>)>;

fn write_table(
    dir: &Path,
    name: &str,
    columns: Table,
    parts: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let rows = columns.first().map_or(0, |c| c.1.len());
    let parts = parts.max(1).min(rows.max(1));
    for p in 0..parts {
        let (lo, hi) = (rows * p / parts, rows * (p + 1) / parts);
        let arrays: Vec<(&str, ArrayRef)> = columns
            .iter()
            .map(|(n, v)| {
                (
                    *n,
                    Arc::new(StringArray::from(v[lo..hi].to_vec())) as ArrayRef,
                )
            })
            .collect();
        let batch = RecordBatch::try_from_iter(arrays)?;
        write_batch(&dir.join(format!("part-{p}.parquet")), &batch)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let now: DateTime<Utc> = DateTime::parse_from_rfc3339(&a.now)?.with_timezone(&Utc);
    let duration = parse_duration(&a.generation_duration)? as i64;
    let rule = GenerationRule::new(a.family, duration as u64, now)?;
    let mut rng = StdRng::seed_from_u64(a.seed);
    let end = now.timestamp();
    let start = end - a.months * 30 * 86_400;
    let mut store = Store {
        rule,
        duration,
        family: a.family,
        legacy_before: start + (end - start) * 15 / 100,
        blobs: BTreeMap::new(),
    };

    let attachments_pool: Vec<(String, usize)> = (0..(a.messages / 6).max(10))
        .map(|i| (format!("attachment #{i}\n"), rng.random_range(200..6000)))
        .collect();
    let zipf = Zipf::new(attachments_pool.len(), 1.1);
    let newsletters = Zipf::new(20, 1.3);

    let (mut messages, mut attachments, mut queue, mut repos) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut deletions: Vec<(String, i64)> = Vec::new();
    // Its own generator: the store and tables stay those of earlier versions for a seed.
    let mut deletion_times = StdRng::seed_from_u64(a.seed.wrapping_add(1));
    for m in 0..a.messages {
        let t = rng.random_range(start..end);
        let header = store.put(
            t,
            content(&mut rng, &format!("Message-ID: <{m}@demo>\n"), 600),
        );
        // One body in ten is a newsletter: identical content, deduplicated within a generation.
        let body = if rng.random_bool(0.1) {
            let k = newsletters.sample(&mut rng);
            store.put(t, format!("newsletter {k}\n").repeat(40).into_bytes())
        } else {
            store.put(t, content(&mut rng, &format!("body of {m}\n"), 4000))
        };
        let atts: Vec<String> = (0..if rng.random_bool(0.3) {
            rng.random_range(1..=3)
        } else {
            0
        })
            .map(|_| {
                let (label, size) = &attachments_pool[zipf.sample(&mut rng)];
                store.put(t, label.repeat(size / label.len() + 1).into_bytes())
            })
            .collect();
        let deleted = rng.random_bool(0.3);
        if deleted {
            // The deletion is recorded when it happens, in that time's iteration.
            let at = deletion_times.random_range(t..=end);
            for blob in [&header, &body].into_iter().chain(&atts) {
                deletions.push((blob.clone(), at));
            }
        } else {
            messages.push((
                format!("m{m}"),
                format!("user{}@demo/INBOX", m % 50),
                header.clone(),
                body.clone(),
            ));
            for (i, att) in atts.iter().enumerate() {
                attachments.push((format!("m{m}-a{i}"), format!("m{m}"), att.clone()));
            }
        }
        if end - t < 2 * 86_400 && rng.random_bool(0.2) {
            queue.push((format!("q{m}"), header.clone(), body.clone()));
        }
        if rng.random_bool(0.01) {
            repos.push(("var/mail/error".to_string(), format!("r{m}"), header, body));
        }
    }
    let mut uploads = Vec::new();
    for u in 0..(a.messages / 10).max(5) {
        let t = rng.random_range(start..end);
        let id = store.put(t, content(&mut rng, &format!("upload {u}\n"), 3000));
        if rng.random_bool(0.5) {
            let size = store.blobs[&id].1.len();
            uploads.push((
                format!("u{u}"),
                format!("user{}@demo", u % 50),
                id,
                size as i64,
                t,
            ));
        }
    }
    for f in 0..(a.messages / 100).max(2) {
        let t = rng.random_range(start..end);
        store.put(t, content(&mut rng, &format!("failed write {f}\n"), 2000));
    }

    let out = &a.out;
    for sub in ["store", "refs", "inventory", "uploads-store", "incremental"] {
        let _ = std::fs::remove_dir_all(out.join(sub));
    }
    std::fs::create_dir_all(out.join("store"))?;
    for (id, (_, bytes)) in &store.blobs {
        std::fs::write(out.join("store").join(id), bytes)?;
    }
    std::fs::create_dir_all(out.join("uploads-store"))?;
    for (_, _, id, _, _) in &uploads {
        std::fs::write(out.join("uploads-store").join(id), &store.blobs[id].1)?;
    }
    let refs = out.join("refs");
    let s = |v: &String| Some(v.clone());
    write_table(
        &refs,
        "messages",
        vec![
            ("message_id", messages.iter().map(|r| s(&r.0)).collect()),
            ("mailbox", messages.iter().map(|r| s(&r.1)).collect()),
            ("header_blob_id", messages.iter().map(|r| s(&r.2)).collect()),
            ("body_blob_id", messages.iter().map(|r| s(&r.3)).collect()),
        ],
        a.parts,
    )?;
    write_table(
        &refs,
        "attachments",
        vec![
            (
                "attachment_id",
                attachments.iter().map(|r| s(&r.0)).collect(),
            ),
            ("message_id", attachments.iter().map(|r| s(&r.1)).collect()),
            ("blob_id", attachments.iter().map(|r| s(&r.2)).collect()),
        ],
        a.parts,
    )?;
    write_table(
        &refs,
        "mail_queue",
        vec![
            ("mail_key", queue.iter().map(|r| s(&r.0)).collect()),
            ("header_blob_id", queue.iter().map(|r| s(&r.1)).collect()),
            ("body_blob_id", queue.iter().map(|r| s(&r.2)).collect()),
        ],
        1,
    )?;
    write_table(
        &refs,
        "mail_repositories",
        vec![
            ("repository", repos.iter().map(|r| s(&r.0)).collect()),
            ("mail_key", repos.iter().map(|r| s(&r.1)).collect()),
            ("header_blob_id", repos.iter().map(|r| s(&r.2)).collect()),
            ("body_blob_id", repos.iter().map(|r| s(&r.3)).collect()),
        ],
        1,
    )?;
    {
        let dir = refs.join("uploads");
        std::fs::create_dir_all(&dir)?;
        let batch = RecordBatch::try_from_iter(vec![
            (
                "upload_id",
                Arc::new(StringArray::from_iter_values(uploads.iter().map(|u| &u.0))) as ArrayRef,
            ),
            (
                "user",
                Arc::new(StringArray::from_iter_values(uploads.iter().map(|u| &u.1))),
            ),
            (
                "blob_id",
                Arc::new(StringArray::from_iter_values(uploads.iter().map(|u| &u.2))),
            ),
            (
                "size",
                Arc::new(Int64Array::from_iter_values(uploads.iter().map(|u| u.3))),
            ),
            (
                "uploaded_at",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        uploads.iter().map(|u| u.4 * 1_000_000),
                    )
                    .with_timezone("UTC"),
                ),
            ),
        ])?;
        write_batch(&dir.join("part-0.parquet"), &batch)?;
    }
    {
        std::fs::create_dir_all(out.join("inventory"))?;
        let batch = RecordBatch::try_from_iter(vec![
            (
                "blob_id",
                Arc::new(StringArray::from_iter_values(store.blobs.keys())) as ArrayRef,
            ),
            (
                "size",
                Arc::new(Int64Array::from_iter_values(
                    store.blobs.values().map(|b| b.1.len() as i64),
                )),
            ),
            (
                "last_modified",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        store.blobs.values().map(|b| b.0 * 1_000_000),
                    )
                    .with_timezone("UTC"),
                ),
            ),
        ])?;
        write_batch(&out.join("inventory/part-0.parquet"), &batch)?;
    }

    {
        let generation = |id: &str| BlobId::parse(id).map_or(0, |b| b.generation as i64);
        let deletions_batch = RecordBatch::try_from_iter(vec![
            (
                "blob_id",
                Arc::new(StringArray::from_iter_values(
                    deletions.iter().map(|d| &d.0),
                )) as ArrayRef,
            ),
            (
                "generation",
                Arc::new(Int64Array::from_iter_values(
                    deletions.iter().map(|d| generation(&d.0)),
                )),
            ),
            (
                "date",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        deletions.iter().map(|d| d.1 * 1_000_000),
                    )
                    .with_timezone("UTC"),
                ),
            ),
            (
                "gc_iteration",
                Arc::new(Int64Array::from_iter_values(
                    deletions.iter().map(|d| d.1 / duration),
                )),
            ),
        ])?;
        let entity_refs: Vec<(&String, &String)> = messages
            .iter()
            .flat_map(|m| [(&m.0, &m.2), (&m.0, &m.3)])
            .chain(attachments.iter().map(|r| (&r.0, &r.2)))
            .chain(queue.iter().flat_map(|q| [(&q.0, &q.1), (&q.0, &q.2)]))
            .chain(repos.iter().flat_map(|r| [(&r.1, &r.2), (&r.1, &r.3)]))
            .chain(uploads.iter().map(|u| (&u.0, &u.2)))
            .collect();
        let references_batch = RecordBatch::try_from_iter(vec![
            (
                "entity_id",
                Arc::new(StringArray::from_iter_values(
                    entity_refs.iter().map(|r| r.0),
                )) as ArrayRef,
            ),
            (
                "blob_id",
                Arc::new(StringArray::from_iter_values(
                    entity_refs.iter().map(|r| r.1),
                )),
            ),
            (
                "generation",
                Arc::new(Int64Array::from_iter_values(
                    entity_refs.iter().map(|r| generation(r.1)),
                )),
            ),
        ])?;
        std::fs::create_dir_all(out.join("incremental"))?;
        write_batch(&out.join("incremental/deletions.parquet"), &deletions_batch)?;
        write_batch(
            &out.join("incremental/references.parquet"),
            &references_batch,
        )?;
    }

    let referenced: BTreeSet<&String> = messages
        .iter()
        .flat_map(|m| [&m.2, &m.3])
        .chain(attachments.iter().map(|r| &r.2))
        .chain(queue.iter().flat_map(|q| [&q.1, &q.2]))
        .chain(repos.iter().flat_map(|r| [&r.2, &r.3]))
        .chain(uploads.iter().map(|u| &u.2))
        .collect();
    let expected: Vec<&String> = store
        .blobs
        .keys()
        .filter(|id| !referenced.contains(id) && store.rule.classify(id) == IdClass::Eligible)
        .collect();
    std::fs::write(
        out.join("expected-deleted.txt"),
        expected
            .iter()
            .map(|id| format!("{id}\n"))
            .collect::<String>(),
    )?;
    let reference_rows =
        2 * messages.len() + attachments.len() + 2 * queue.len() + 2 * repos.len() + uploads.len();
    let summary = serde_json::json!({
        "seed": a.seed, "now": a.now, "family": a.family, "generation_duration_seconds": duration,
        "current_generation": store.rule.current_generation,
        "blob_count": store.blobs.len(), "reference_count": reference_rows,
        "referenced_blob_count": referenced.len(), "expected_deleted_count": expected.len(),
        "tables": { "messages": messages.len(), "attachments": attachments.len(), "mail_queue": queue.len(),
                    "mail_repositories": repos.len(), "uploads": uploads.len() },
    });
    std::fs::write(
        out.join("expected.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    eprintln!(
        "blobgc-datasets: {} blobs ({} referenced, {} to delete at {}) and {} reference rows in {}",
        store.blobs.len(),
        referenced.len(),
        expected.len(),
        a.now,
        reference_rows,
        out.display()
    );
    Ok(())
}
