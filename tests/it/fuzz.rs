//! Fuzzing, proptest-style (stable Rust, runs in CI): the id parser and the job-file parsers
//! take any input without panicking, and what they accept is consistent.

use blobgc::blob_id::BlobId;
use blobgc::generation::{GenerationRule, IdClass};
use blobgc::incremental::IncrementalArgs;
use blobgc::job::JobArgs;
use blobgc::uploads::UploadsArgs;
use proptest::prelude::*;

/// Texts near the id grammar: digits, `_`, base64url, `/`, `=` and a few odd characters.
fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9_]{0,8}[A-Za-z0-9_=/-]{0,50}",
        "-?[0-9]{0,20}_-?[0-9]{0,20}_[A-Za-z0-9_=-]{0,46}",
        any::<String>(),
    ]
}

/// Job-file keys of every mode, valid and not, with values of every TOML type.
fn job_file() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "store",
        "now",
        "generation_duration",
        "family",
        "fpp",
        "max_fpp",
        "salt",
        "batch_size",
        "dry_run",
        "partitions",
        "verify",
        "verify_limit",
        "plan_root",
        "lease_ttl",
        "max_delete_fraction",
        "max_source_shrink",
        "max_missing_references",
        "breaker_floor",
        "quarantine",
        "deletions",
        "references",
        "iteration",
        "current_generation",
        "generation_lag",
        "uploads",
        "ttl",
        "quota_bytes",
        "expired_out",
        "unknown_key",
    ]);
    let value = prop_oneof![
        "-?[0-9]{1,20}",
        "-?[0-9]{1,3}\\.[0-9]{1,4}",
        "\"[a-z0-9:/._ -]{0,20}\"",
        Just("true".to_string()),
        Just("[1, 2]".to_string()),
        Just("{ a = 1 }".to_string()),
        "[^\n]{0,10}",
    ];
    prop::collection::vec((key, value), 0..8).prop_map(|kvs| {
        kvs.into_iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect()
    })
}

fn epoch() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(0, 0).expect("epoch")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_is_malformed_and_generation_ids_round_trip(text in id_like()) {
        let rule = GenerationRule { family: 1, current_generation: 600 };
        let class = rule.classify(&text);
        match BlobId::parse(&text) {
            Ok(id) => {
                prop_assert_ne!(class, IdClass::Malformed);
                if id.family != 0 {
                    let printed = id.to_string();
                    prop_assert_eq!(BlobId::parse(&printed), Ok(id));
                }
            }
            Err(_) => prop_assert_eq!(class, IdClass::Malformed),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_job_file_is_accepted_or_refused_with_a_usage_error(text in job_file()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("job.toml");
        std::fs::write(&path, &text).expect("write");
        let run = JobArgs { job: Some(path.clone()), ..JobArgs::default() }.resolve(epoch);
        let incremental = IncrementalArgs { job: Some(path.clone()), ..IncrementalArgs::default() }.resolve();
        let uploads = UploadsArgs { job: Some(path), ..UploadsArgs::default() }.resolve();
        for error in [run.err(), incremental.err(), uploads.err()].into_iter().flatten() {
            prop_assert_eq!(error.exit_code(), 2, "{}: {}", text, error);
            let message = error.to_string();
            prop_assert!(message.contains("job file") || message.contains("--") || message.contains('_'),
                "the message names neither the file nor an option: {}", message);
        }
    }
}
