//! blobgc against a real Azure Blob Storage emulator: Azurite on 127.0.0.1 (a free port, one
//! per test, stopped when the test ends, even by a panic), installed from the npm registry by
//! `tests/setup-azurite.sh` (which the first test calls). The store, the references and the
//! plan are all on `az://`, configured the standard way (`AZURE_STORAGE_*` variables).

use crate::s3::{keys, put_blobs, upload_dir};
use crate::s3_server::wait_for;
use crate::support::*;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where Azurite and Azure's JavaScript client are installed, installing them once.
fn installed() -> &'static PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup-azurite.sh");
        let out = Command::new(script).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// The emulator's one account's well-known key (Azurite's documentation).
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

struct Azurite {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Azurite {
    fn start() -> Azurite {
        let dir = installed();
        let data = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(dir.join("node_modules/.bin/azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--skipApiVersionCheck", "--loose", "--silent", "--location"])
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for("Azurite", Duration::from_secs(60), || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        Azurite {
            child,
            port,
            _data: data,
        }
    }

    /// The variables a user of the emulator sets.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            (
                "AZURITE_BLOB_STORAGE_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
        ]
    }

    /// Creates `name`, which object_store cannot do, with Azure's own client.
    fn container(&self, name: &str) -> MicrosoftAzure {
        let script = format!(
            "require('@azure/storage-blob').BlobServiceClient.fromConnectionString(
               'DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};\
                BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1;')
             .createContainer('{name}').catch(e => {{ console.error(e); process.exit(1); }})",
            self.port
        );
        let out = Command::new("node")
            .args(["-e", &script])
            .env("NODE_PATH", installed().join("node_modules"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The emulator's account, addressed by its endpoint: the emulator mode would read its
        // address from a variable of this process, which the tests share.
        MicrosoftAzureBuilder::new()
            .with_account("devstoreaccount1")
            .with_access_key(KEY)
            .with_container_name(name)
            .with_endpoint(format!("http://127.0.0.1:{}/devstoreaccount1", self.port))
            .with_allow_http(true)
            .build()
            .unwrap()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
