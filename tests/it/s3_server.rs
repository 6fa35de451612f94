//! A real S3 server for the tests: SeaweedFS (`weed mini`) on 127.0.0.1, installed by
//! `tests/setup-seaweedfs.sh`, started once per test process and stopped when it exits (a
//! watchdog shell kills it once this process is gone). Every test uses its own key prefix.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PORT: u16 = 8333;
pub const BUCKET: &str = "test";

pub struct S3Server {
    pub endpoint: String,
    /// Stops the server once this process is gone; never waited for.
    _watchdog: std::process::Child,
}

fn reachable(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_ok()
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The shared server, started on first use.
pub fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        // A server left by a previous test process is being stopped by its watchdog: let it go.
        for _ in 0..30 {
            if !reachable(PORT) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup-seaweedfs.sh");
        let out = Command::new("bash").arg(setup).output().expect("running tests/setup-seaweedfs.sh");
        assert!(out.status.success(), "installing SeaweedFS failed: {}", String::from_utf8_lossy(&out.stderr));
        let weed = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let data = std::env::temp_dir().join(format!("blobgc-weed-{}", std::process::id()));
        std::fs::create_dir_all(&data).unwrap();
        let script = format!(
            r#"AWS_ACCESS_KEY_ID=testkey AWS_SECRET_ACCESS_KEY=testsecret "{weed}" mini -dir="{data}" \
               -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false -admin.ui=false -webdav=false \
               -s3.port.iceberg=0 -s3.port.lance=0 -s3.port={PORT} -bucket={BUCKET} >"{data}.log" 2>&1 &
               W=$!; while kill -0 {parent} 2>/dev/null; do sleep 0.5; done
               kill $W; wait $W; rm -rf "{data}"; rm -f /tmp/seaweedfs-*.sock"#,
            data = data.display(),
            parent = std::process::id(),
        );
        let watchdog = Command::new("bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{PORT}");
        wait_for("SeaweedFS", Duration::from_secs(60), || reachable(PORT));
        // The S3 gateway answers before the bucket is ready: wait for a write to work.
        let store = client(&endpoint);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        wait_for("the S3 bucket", Duration::from_secs(60), || {
            rt.block_on(object_store::ObjectStoreExt::put(&store, &"ready".into(), "ok".into())).is_ok()
        });
        S3Server { endpoint, _watchdog: watchdog }
    })
}

pub fn client(endpoint: &str) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(BUCKET)
        .with_region("us-east-1")
        .with_access_key_id("testkey")
        .with_secret_access_key("testsecret")
        .with_allow_http(true)
        .build()
        .unwrap()
}

/// The environment a `blobgc` process needs to reach the server (or a proxy in front of it).
pub fn env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "testkey".into()),
        ("AWS_SECRET_ACCESS_KEY", "testsecret".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT", endpoint.into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ]
}

/// A fresh key prefix for one test.
pub fn prefix(test: &str) -> String {
    format!(
        "{test}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
