//! A real Azure Blob Storage emulator for the tests and the Azure benchmark: Azurite on
//! 127.0.0.1 (a free port, one per test, stopped when it is dropped, even by a panic),
//! installed from the npm registry by `tests/setup-azurite.sh` on first use.

use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
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

pub struct Azurite {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
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
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "Azurite never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Azurite {
            child,
            port,
            _data: data,
        }
    }

    /// The variables a user of the emulator sets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            (
                "AZURITE_BLOB_STORAGE_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
        ]
    }

    /// Creates `name`, which object_store cannot do, with Azure's own client.
    pub fn container(&self, name: &str) -> MicrosoftAzure {
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
            // Node's server closes a connection idle for 5 s; one reused as it does resets the
            // request, and a batch delete (a POST) is not retried.
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(true)
                    .with_pool_idle_timeout(Duration::from_secs(2)),
            )
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
