//! Opening one connection: TCP, TLS (rustls), the WebSocket handshake, and
//! authentication with the last `connectionSessionUUID`.

use super::shared::Shared;
use crate::protocol::{ApiError, Authentication, ClientTask, ErrorKind, SharedStr, encode_frame};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// Worth retrying: refused, reset, timed out, bad handshake status…
    #[error("{0}")]
    Transport(String),
    /// The key was refused: final.
    #[error("authentication refused: {0}")]
    Auth(Box<ApiError>),
    /// The configuration cannot work (bad URL, bad certificate): final.
    #[error("{0}")]
    Config(String),
}

/// An authenticated connection.
pub(crate) struct Established {
    pub(crate) ws: Ws,
    pub(crate) session: String,
    pub(crate) resumed: bool,
}

pub(crate) fn tls_connector(shared: &Shared) -> Result<Connector, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    if !shared.config.only_extra_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for der in &shared.config.extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| ConnectError::Config(format!("bad CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Connector::Rustls(Arc::new(config)))
}

fn ws_config(shared: &Shared) -> WebSocketConfig {
    let max = shared.config.max_message_size;
    WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max))
}

/// Connects and authenticates. Frames that arrive before the authentication
/// reply (results replayed by a resumed session) are dispatched, not dropped.
pub(crate) async fn establish(shared: &Shared, connector: Connector) -> Result<Established, ConnectError> {
    let request = shared
        .config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Config(format!("invalid URL: {e}")))?;
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config(shared)), true, Some(connector));
    let (mut ws, _) = match tokio::time::timeout(shared.config.connect_timeout, connect).await {
        Err(_) => {
            return Err(ConnectError::Transport(format!(
                "connect timed out after {:?}",
                shared.config.connect_timeout
            )));
        }
        Ok(Err(tungstenite::Error::Url(e))) => return Err(ConnectError::Config(format!("invalid URL: {e}"))),
        Ok(Err(e)) => return Err(ConnectError::Transport(describe(&e))),
        Ok(Ok(pair)) => pair,
    };
    let previous = shared.session.lock().ok().and_then(|s| s.clone());
    let auth = ClientTask::Authentication(Authentication::new(shared.config.api_key.clone(), previous.clone()));
    let frame = encode_frame(std::slice::from_ref(&auth)).map_err(|e| ConnectError::Config(e.to_string()))?;
    ws.send(Message::Text(frame.into())).await.map_err(|e| ConnectError::Transport(describe(&e)))?;
    match tokio::time::timeout(shared.config.auth_timeout, await_auth(shared, &mut ws)).await {
        Err(_) => {
            Err(ConnectError::Transport(format!("no authentication reply within {:?}", shared.config.auth_timeout)))
        }
        Ok(Err(e)) => Err(e),
        Ok(Ok(session)) => {
            let resumed = previous.as_deref() == Some(session.as_str());
            if let Ok(mut s) = shared.session.lock() {
                *s = Some(session.clone());
            }
            Ok(Established { ws, session, resumed })
        }
    }
}

async fn await_auth(shared: &Shared, ws: &mut Ws) -> Result<String, ConnectError> {
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => SharedStr::from(t),
            Ok(Message::Close(c)) => {
                return Err(ConnectError::Transport(format!(
                    "closed during authentication{}",
                    c.map(|c| format!(": {} {}", c.code, c.reason)).unwrap_or_default()
                )));
            }
            Ok(_) => continue,
            Err(e) => return Err(ConnectError::Transport(describe(&e))),
        };
        shared.touch_inbound();
        let Ok(mut frame) = shared.decode(&text) else {
            continue;
        };
        let session = frame
            .items
            .iter()
            .find(|i| i.task_type.as_deref() == Some("authentication"))
            .and_then(|i| i.connection_session_uuid.as_ref().map(|s| s.to_string()));
        let refusal = frame.errors.iter().position(|e| {
            e.task_uuid.is_none() && (e.kind() == ErrorKind::Auth || e.task_type.as_deref() == Some("authentication"))
        });
        if let Some(i) = refusal {
            return Err(ConnectError::Auth(Box::new(frame.errors.swap_remove(i))));
        }
        // Anything else (replayed results) is routed now.
        if let Some(err) = shared.dispatch(frame) {
            return Err(ConnectError::Auth(Box::new(err)));
        }
        if let Some(s) = session {
            return Ok(s);
        }
    }
    Err(ConnectError::Transport("connection ended during authentication".into()))
}

/// A short description of a transport error, without any secret (the key is
/// never part of the URL or of a transport error).
pub(crate) fn describe(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("handshake refused with HTTP {}", resp.status()),
        tungstenite::Error::Io(io) => format!("I/O error: {io}"),
        tungstenite::Error::Tls(t) => format!("TLS error: {t}"),
        other => other.to_string(),
    }
}

impl From<tungstenite::Utf8Bytes> for SharedStr {
    fn from(t: tungstenite::Utf8Bytes) -> SharedStr {
        SharedStr::from_utf8_trusted(bytes::Bytes::from(t))
    }
}
