//! A loopback HTTP `CONNECT` proxy, for testing a client behind a corporate proxy:
//! optionally requiring `Proxy-Authorization: Basic`, counting the tunnels it opened
//! and the requests it refused.

use base64::Engine;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Default)]
struct Counts {
    tunnels: AtomicU64,
    refused: AtomicU64,
    targets: std::sync::Mutex<Vec<String>>,
}

/// A running proxy; it stops when dropped.
pub struct ConnectProxy {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConnectProxy {
    /// Starts on 127.0.0.1 (a free port); with `credentials`, every CONNECT must carry
    /// them or is answered 407.
    pub async fn start(credentials: Option<(&str, &str)>) -> std::io::Result<ConnectProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let expected = credentials
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let counts = Arc::new(Counts::default());
        let seen = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (seen, expected) = (seen.clone(), expected.clone());
                tokio::spawn(async move {
                    let _ = tunnel(client, expected.as_deref(), &seen).await;
                });
            }
        });
        Ok(ConnectProxy { addr, counts, task })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Tunnels opened so far.
    pub fn tunnels(&self) -> u64 {
        self.counts.tunnels.load(Ordering::Relaxed)
    }

    /// CONNECT requests answered 407 so far.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// The `host:port` of every tunnel opened, in order.
    pub fn targets(&self) -> Vec<String> {
        self.counts.targets.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

async fn tunnel(mut client: TcpStream, expected: Option<&str>, counts: &Counts) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (first.next().unwrap_or_default(), first.next().unwrap_or_default().to_string());
    if method != "CONNECT" {
        return client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n").await;
    }
    let auth = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("proxy-authorization").then(|| value.trim().to_string())
    });
    if let Some(expected) = expected
        && auth.as_deref() != Some(expected)
    {
        counts.refused.fetch_add(1, Ordering::Relaxed);
        return client
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
    }
    let mut upstream = match TcpStream::connect(target.as_str()).await {
        Ok(s) => s,
        Err(_) => return client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n").await,
    };
    counts.tunnels.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut t) = counts.targets.lock() {
        t.push(target);
    }
    client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map(|_| ())
}
