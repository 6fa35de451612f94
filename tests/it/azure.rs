//! blobgc against a real Azure Blob Storage emulator ([`Azurite`], one per test). The store,
//! the references and the plan are all on `az://`, configured the standard way (the
//! `AZURE_STORAGE_*` variables).

use crate::azurite::Azurite;
use crate::s3::{keys, put_blobs, upload_dir};
use crate::support::*;
use object_store::azure::MicrosoftAzure;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `n` orphans, 50 referenced and 5 young blobs in container `blobs`, the references in
/// container `refs`; the kept blobs.
fn a_store_on_azure(az: &Azurite, f: &Fixture, n: usize) -> (MicrosoftAzure, BTreeSet<String>) {
    let blobs = az.container("blobs");
    let refs = az.container("refs");
    az.container("plans");
    let orphans: Vec<String> = (0..n).map(|i| id(557, &format!("o{i}"))).collect();
    let referenced: Vec<String> = (0..50).map(|i| id(557, &format!("k{i}"))).collect();
    let young: Vec<String> = (0..5).map(|i| id(559, &format!("y{i}"))).collect();
    for ids in [&orphans, &referenced, &young] {
        put_blobs(&blobs, "store", ids);
    }
    let local = f.refs("messages", &referenced);
    let dir = local.split_once('=').unwrap().1;
    upload_dir(&refs, std::path::Path::new(dir), "messages");
    (blobs, referenced.into_iter().chain(young).collect())
}

#[test]
fn a_store_on_azure_loses_exactly_its_garbage() {
    let az = Azurite::start();
    let f = Fixture::new();
    let (blobs, kept) = a_store_on_azure(&az, &f, 40);
    let out = f.blobgc_with(
        &[
            "run",
            "--store",
            "az://blobs/store",
            "--refs",
            "messages=az://refs/messages",
            "--plan-root",
            "az://plans/root",
            "--now",
            T2,
            "--max-delete-fraction",
            "1",
            // No false positive: the tests count what is deleted.
            "--fpp",
            "0.0000001",
        ],
        &az.env(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.u("gced_blob_count"), 40);
    assert_eq!(keys(&blobs, "store"), kept);
}

#[test]
fn a_sweep_on_azure_killed_midway_finishes_on_rerun() {
    let az = Azurite::start();
    let f = Fixture::new();
    let (blobs, kept) = a_store_on_azure(&az, &f, 600);
    let env = az.env();
    let plan = "az://plans/plan";
    let planned = f.blobgc_with(
        &[
            "plan",
            "--store",
            "az://blobs/store",
            "--refs",
            "messages=az://refs/messages",
            "--out",
            plan,
            "--now",
            T2,
            "--batch-size",
            "20",
            "--max-delete-fraction",
            "1",
            // No false positive: the tests count what is deleted.
            "--fpp",
            "0.0000001",
        ],
        &env,
    );
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    assert_eq!(planned.u("candidate_count"), 600);

    let mut sweep = Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args(["sweep", "--plan", plan, "--max-deletes-per-second", "200"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    sweep.kill().unwrap(); // SIGKILL
    sweep.wait().unwrap();
    let midway = keys(&blobs, "store").len();
    assert!(
        midway > kept.len() && midway < 600 + kept.len(),
        "killed midway: {midway} blobs left"
    );

    let resumed = f.blobgc_with(&["sweep", "--plan", plan], &env);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        resumed.u("gced_blob_count") + resumed.u("previously_gced_blob_count"),
        600,
        "each candidate counted once"
    );
    assert_eq!(keys(&blobs, "store"), kept);
}
