//! A mode's options, declared once: each mode (`run`/`plan`, `sweep`, `incremental`, `uploads`)
//! has one struct that clap parses from flags and serde reads from the job file (`--job`), and
//! [`overlay`] lays the flags over the file, key by key (`batch_size` <-> `--batch-size`; the
//! flag wins). The defaults every mode shares are here too, so no mode drifts from another.

use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::path::Path;

/// Rows per deletion batch (one DeleteObjects request at most).
pub const BATCH_SIZE: usize = 1000;
/// Deletion batches executed at once.
pub const DELETE_CONCURRENCY: usize = 4;
/// The requested false-positive rate of a Bloom filter.
pub const FPP: f64 = 0.01;

/// Parallel partitions of every stage: the machine's cores.
pub fn partitions() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// A fresh salt for the filter's hashing: a false positive of one run is not one of the next.
pub fn random_salt() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Reads a job file as a mode's options. Unknown keys are refused by the options' own
/// `deny_unknown_fields` (a typo must not silently fall back to a default); errors name the
/// file, and the key or line at fault.
pub fn read_job_file<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("job file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| Error::usage(format!("job file {}: {e}", path.display())))
}

/// The job file at `job` (when given) under `flags`: every option a flag sets wins.
pub fn with_job_file<T: Serialize + DeserializeOwned + Default>(
    flags: &T,
    job: Option<&Path>,
) -> Result<T> {
    match job {
        Some(path) => overlay(flags, &read_job_file(path)?),
        None => overlay(flags, &T::default()),
    }
}

/// `flags` laid over `file`: an option the flags leave unset (none, an empty list, a switch
/// not given: see [`switch_off`]) keeps the file's value; tables (`[s3]`) merge key by key.
pub fn overlay<T: Serialize + DeserializeOwned>(flags: &T, file: &T) -> Result<T> {
    let encode =
        |t: &T| serde_json::to_value(t).map_err(|e| Error::runtime(format!("options: {e}")));
    let mut merged = encode(file)?;
    lay(&mut merged, encode(flags)?);
    serde_json::from_value(merged).map_err(|e| Error::usage(format!("options: {e}")))
}

fn lay(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                lay(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (_, Value::Null) => {}
        (_, Value::Array(a)) if a.is_empty() => {}
        (base, over) => *base = over,
    }
}

/// For `skip_serializing_if` on a switch (`--dry-run`): a switch not given is left out, so it
/// leaves the file's value, while an option's explicit `false` (`--s3-allow-http false`) wins.
pub fn switch_off(on: &bool) -> bool {
    !on
}

/// A duration option: text (`30d`, `12h`) or, in a job file, a bare number (of days, as
/// James's own configuration reads it).
pub fn duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Days(u64),
    }
    Ok(Option::<Text>::deserialize(d)?.map(|t| match t {
        Text::Text(s) => s,
        Text::Days(n) => n.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Opts {
        n: Option<u32>,
        #[serde(default, skip_serializing_if = "switch_off")]
        on: bool,
        off: Option<bool>,
        list: Vec<String>,
        inner: Inner,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Inner {
        a: Option<String>,
        b: Option<String>,
    }

    #[test]
    fn a_flag_wins_and_an_unset_flag_keeps_the_file() {
        let file = Opts {
            n: Some(1),
            on: true,
            off: Some(true),
            list: vec!["f".into()],
            inner: Inner {
                a: Some("file".into()),
                b: Some("file".into()),
            },
        };
        let flags = Opts {
            n: Some(2),
            off: Some(false),
            inner: Inner {
                a: Some("flag".into()),
                b: None,
            },
            ..Opts::default()
        };
        let merged = overlay(&flags, &file).unwrap();
        assert_eq!(merged.n, Some(2));
        assert!(merged.on);
        assert_eq!(merged.off, Some(false), "an explicit false wins");
        assert_eq!(merged.list, vec!["f".to_string()]);
        assert_eq!(merged.inner.a.as_deref(), Some("flag"));
        assert_eq!(merged.inner.b.as_deref(), Some("file"));
        assert_eq!(
            overlay(&Opts::default(), &Opts::default()).unwrap(),
            Opts::default()
        );
    }
}
