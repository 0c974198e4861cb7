//! Opening a `CONNECT` tunnel through an HTTP proxy: the TCP stream the WebSocket
//! (and its TLS) then runs over.

use super::error::{Cause, ConfigError};
use super::proxy::Proxy;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a tunnel did not open.
#[derive(Debug)]
pub(crate) enum TunnelError {
    /// Worth a retry.
    Transport { message: String, cause: Option<Cause> },
    /// The proxy refused our credentials: final.
    Config(ConfigError),
}

impl TunnelError {
    fn transport(message: String) -> TunnelError {
        TunnelError::Transport { message, cause: None }
    }
}

/// Longest proxy response head read.
const MAX_HEAD: usize = 16 * 1024;

/// A TCP stream to `host:port` through `proxy`. A proxy that refuses our credentials
/// (407) is a configuration error (final); any other failure is worth a retry.
pub(crate) async fn open(proxy: &Proxy, host: &str, port: u16) -> Result<TcpStream, TunnelError> {
    let at = proxy.address();
    let io = |what: &str, e: std::io::Error| TunnelError::Transport {
        message: format!("proxy {at}: {what}: {e}"),
        cause: Some(Arc::new(e)),
    };
    let mut tcp = TcpStream::connect((proxy.host(), proxy.port())).await.map_err(|e| io("cannot connect", e))?;
    let _ = tcp.set_nodelay(true);
    tcp.write_all(proxy.connect_request(host, port).as_bytes()).await.map_err(|e| io("sending CONNECT", e))?;
    // Byte by byte up to the blank line: nothing of the tunnel may be read into a buffer
    // we then drop (the server speaks only after our handshake, but a proxy may not wait).
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(TunnelError::transport(format!("proxy {at}: a response head over {MAX_HEAD} bytes")));
        }
        let n = tcp.read(&mut byte).await.map_err(|e| io("reading the CONNECT reply", e))?;
        if n == 0 {
            return Err(TunnelError::transport(format!("proxy {at} closed the connection before answering CONNECT")));
        }
        head.push(byte[0]);
    }
    let status_line = String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or_default()).into_owned();
    let code = status_line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(200..=299) => Ok(tcp),
        Some(407) => Err(TunnelError::Config(ConfigError::new(format!(
            "proxy {at} requires authentication or refused the credentials (407): give them in the proxy URL \
             (http://user:pass@host:port) or with Proxy::basic_auth"
        )))),
        _ => Err(TunnelError::transport(format!("proxy {at} refused CONNECT {host}:{port}: {status_line}"))),
    }
}
