//! Opening one connection: TCP, TLS (rustls), the WebSocket handshake, and
//! authentication with the last `connectionSessionUUID`.

use super::config::ClientConfig;
use super::error::{Cause, ConfigError};
use super::shared::Shared;
use crate::protocol::{ApiError, Authentication, ClientTask, ErrorKind, SharedStr, encode_frame};
use crate::sync::lock;
use futures::{Sink, SinkExt, Stream, StreamExt};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector as TlsConnector, MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// Worth retrying: refused, reset, timed out, bad handshake status…
    #[error("{message}")]
    Transport {
        message: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The key was refused: final.
    #[error("authentication refused: {0}")]
    Auth(Box<ApiError>),
    /// The configuration cannot work (bad URL, bad certificate): final.
    #[error(transparent)]
    Config(ConfigError),
}

impl ConnectError {
    pub(crate) fn transport(message: impl Into<String>) -> ConnectError {
        ConnectError::Transport { message: message.into(), cause: None }
    }

    /// A transport failure described without secrets, its error kept as the cause.
    fn from_ws(e: tungstenite::Error) -> ConnectError {
        ConnectError::Transport { message: describe(&e), cause: Some(Arc::new(e)) }
    }
}

/// A connected WebSocket as the engine reads and writes it: the real one
/// ([`Ws`]) or, in unit tests, a scripted one in memory.
pub(crate) trait Transport:
    Stream<Item = Result<Message, tungstenite::Error>> + Sink<Message, Error = tungstenite::Error> + Send + Unpin + 'static
{
}

impl<T> Transport for T where
    T: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Send
        + Unpin
        + 'static
{
}

/// Opens connections (TCP, TLS, the WebSocket handshake): the seam between the
/// supervisor and the network. The supervisor's reconnect, resume and resend logic
/// is unit-tested through a scripted connector that opens no socket.
pub(crate) trait Connector: Send + Sync + 'static {
    /// What an opened connection is.
    type Conn: Transport;
    /// Opens one connection, within the configured connect timeout.
    fn open(&self, shared: &Shared) -> impl Future<Output = Result<Self::Conn, ConnectError>> + Send;
}

/// The real connector: `ws://` or `wss://` (rustls) with tokio-tungstenite.
pub(crate) struct WsConnector {
    tls: TlsConnector,
}

impl WsConnector {
    /// A connector with the configured TLS roots.
    pub(crate) fn new_for(config: &ClientConfig) -> Result<WsConnector, ConnectError> {
        Ok(WsConnector { tls: tls_connector(config)? })
    }
}

impl Connector for WsConnector {
    type Conn = Ws;

    async fn open(&self, shared: &Shared) -> Result<Ws, ConnectError> {
        let mut request = shared
            .config
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::Config(ConfigError::caused_by(format!("invalid URL: {e}"), e)))?;
        let agent = tungstenite::http::HeaderValue::from_str(&shared.config.user_agent).map_err(|e| {
            ConnectError::Config(ConfigError::caused_by(format!("invalid user_agent (visible ASCII only): {e}"), e))
        })?;
        request.headers_mut().insert(tungstenite::http::header::USER_AGENT, agent);
        let scheme = request.uri().scheme_str().unwrap_or("ws").to_string();
        let host = request.uri().host().unwrap_or_default().to_string();
        let proxy = shared.config.proxy.proxy_for(&scheme, &host).map_err(ConnectError::Config)?;
        let config = Some(ws_config(shared));
        let tls = Some(self.tls.clone());
        let connect = async move {
            let handshake = match proxy {
                None => tokio_tungstenite::connect_async_tls_with_config(request, config, true, tls).await,
                Some(proxy) => {
                    let port = request.uri().port_u16().unwrap_or(if scheme == "wss" { 443 } else { 80 });
                    let tcp = super::tunnel::open(&proxy, &host, port).await.map_err(|e| match e {
                        super::tunnel::TunnelError::Config(c) => ConnectError::Config(c),
                        super::tunnel::TunnelError::Transport { message, cause } => {
                            ConnectError::Transport { message, cause }
                        }
                    })?;
                    tokio_tungstenite::client_async_tls_with_config(request, tcp, config, tls).await
                }
            };
            match handshake {
                Err(tungstenite::Error::Url(e)) => {
                    Err(ConnectError::Config(ConfigError::caused_by(format!("invalid URL: {e}"), e)))
                }
                Err(e) => Err(ConnectError::from_ws(e)),
                Ok((ws, _)) => Ok(ws),
            }
        };
        match tokio::time::timeout(shared.config.connect_timeout, connect).await {
            Err(_) => {
                Err(ConnectError::transport(format!("connect timed out after {:?}", shared.config.connect_timeout)))
            }
            Ok(result) => result,
        }
    }
}

/// An authenticated connection.
pub(crate) struct Established<T> {
    pub(crate) timings: super::ConnectTimings,
    pub(crate) ws: T,
    pub(crate) session: String,
    pub(crate) resumed: bool,
}

fn tls_connector(config: &ClientConfig) -> Result<TlsConnector, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    if !config.only_extra_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for der in &config.extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| ConnectError::Config(ConfigError::caused_by(format!("bad CA certificate: {e}"), e)))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Config(ConfigError::caused_by(format!("TLS setup: {e}"), e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::Rustls(Arc::new(config)))
}

fn ws_config(shared: &Shared) -> WebSocketConfig {
    let max = shared.config.max_message_size;
    WebSocketConfig::default().max_message_size(Some(max)).max_frame_size(Some(max))
}

/// Connects and authenticates. Frames that arrive before the authentication
/// reply (results replayed by a resumed session) are dispatched, not dropped.
pub(crate) async fn establish<C: Connector>(
    shared: &Shared,
    connector: &C,
) -> Result<Established<C::Conn>, ConnectError> {
    let started = std::time::Instant::now();
    let mut ws = connector.open(shared).await?;
    let handshake = started.elapsed();
    let previous = lock(&shared.link.session).clone();
    let auth = ClientTask::Authentication(Authentication::new(shared.config.api_key.clone(), previous.clone()));
    let frame = encode_frame(std::slice::from_ref(&auth))
        .map_err(|e| ConnectError::Config(ConfigError::caused_by("cannot encode the authentication frame", e)))?;
    ws.send(Message::Text(frame.into())).await.map_err(ConnectError::from_ws)?;
    match tokio::time::timeout(shared.config.auth_timeout, await_auth(shared, &mut ws)).await {
        Err(_) => {
            Err(ConnectError::transport(format!("no authentication reply within {:?}", shared.config.auth_timeout)))
        }
        Ok(Err(e)) => Err(e),
        Ok(Ok(session)) => {
            let resumed = previous.as_deref() == Some(session.as_str());
            *lock(&shared.link.session) = Some(session.clone());
            let timings = super::ConnectTimings { handshake, authentication: started.elapsed() - handshake };
            Ok(Established { timings, ws, session, resumed })
        }
    }
}

async fn await_auth<T: Transport>(shared: &Shared, ws: &mut T) -> Result<String, ConnectError> {
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => SharedStr::from(t),
            Ok(Message::Close(c)) => {
                return Err(ConnectError::transport(format!(
                    "closed during authentication{}",
                    c.map(|c| format!(": {} {}", c.code, c.reason)).unwrap_or_default()
                )));
            }
            Ok(_) => continue,
            Err(e) => return Err(ConnectError::from_ws(e)),
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
    Err(ConnectError::transport("connection ended during authentication"))
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
