//! A fault-injecting HTTP proxy on 127.0.0.1, between blobgc and the S3 server: it answers a
//! share of requests with 503 SlowDown, 500, a reset connection or a delay, or fails every
//! bulk delete (POST) while told to. One request per connection, so faults hit whole requests.

use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const PASS: u8 = 0;
/// About a third of the requests fail transiently, spread over the kinds of fault.
pub const TRANSIENT: u8 = 1;
/// Every POST (DeleteObjects) answers 503; the rest passes.
pub const FAIL_DELETES: u8 = 2;
/// Every request waits 20 ms, as over a network to a remote object store.
pub const LATENCY: u8 = 3;

pub struct FaultProxy {
    pub endpoint: String,
    mode: Arc<AtomicU8>,
    pub faults: Arc<AtomicU64>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16, mode: u8) -> FaultProxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let (mode, faults) = (Arc::new(AtomicU8::new(mode)), Arc::new(AtomicU64::new(0)));
        let (m, f) = (Arc::clone(&mode), Arc::clone(&faults));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let (m, f) = (Arc::clone(&m), Arc::clone(&f));
                    tokio::spawn(async move {
                        let _ = serve(client, upstream_port, m.load(Ordering::Relaxed), &f).await;
                    });
                }
            });
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            mode,
            faults,
        }
    }

    pub fn set_mode(&self, mode: u8) {
        self.mode.store(mode, Ordering::Relaxed);
    }
}

fn error_response(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    format!("HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .into_bytes()
}

async fn read_request(client: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((head, buf[head_end..].to_vec()))
}

/// The head with `Connection: close`, so each side closes after one exchange.
fn closing(head: &str) -> String {
    let mut lines: Vec<&str> = head
        .trim_end()
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n"))
}

async fn serve(
    mut client: TcpStream,
    upstream_port: u16,
    mode: u8,
    faults: &AtomicU64,
) -> std::io::Result<()> {
    let (head, body) = read_request(&mut client).await?;
    let fault = match mode {
        TRANSIENT => {
            let x: f64 = rand::rng().random();
            match x {
                x if x < 0.10 => Some("503"),
                x if x < 0.18 => Some("500"),
                x if x < 0.25 => Some("reset"),
                x if x < 0.33 => Some("delay"),
                _ => None,
            }
        }
        FAIL_DELETES if head.starts_with("POST ") => Some("503"),
        LATENCY => {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            None
        }
        _ => None,
    };
    if fault.is_some() {
        faults.fetch_add(1, Ordering::Relaxed);
    }
    match fault {
        Some("503") => {
            return client
                .write_all(&error_response("503 Slow Down", "SlowDown"))
                .await;
        }
        Some("500") => {
            return client
                .write_all(&error_response(
                    "500 Internal Server Error",
                    "InternalError",
                ))
                .await;
        }
        // The connection closes without an answer, as a server crashing mid-request.
        Some("reset") => return Ok(()),
        Some(_) => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
        None => {}
    }
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port)).await?;
    upstream.write_all(closing(&head).as_bytes()).await?;
    upstream.write_all(&body).await?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response).await?;
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return client.write_all(&response).await;
    };
    let head = String::from_utf8_lossy(&response[..end + 4]).to_string();
    client.write_all(closing(&head).as_bytes()).await?;
    client.write_all(&response[end + 4..]).await
}
