//! TLS: a local `wss://` server with a certificate made at test time. The client
//! refuses it by default (not in the webpki roots), with a clear error, and
//! accepts it once its CA is configured.

mod support;

use runware_ws::{Client, ClientError, ReconnectPolicy};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer, pki_types::PrivatePkcs8KeyDer};

struct TlsServer {
    url: String,
    ca_der: Vec<u8>,
    task: tokio::task::JoinHandle<()>,
}

async fn tls_server() -> TlsServer {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert_der = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://127.0.0.1:{}/v1", listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                if let Ok(ws) = tokio_tungstenite::accept_async(tls).await {
                    support::serve(ws, Arc::new(support::auth_and_ping)).await;
                }
            });
        }
    });
    TlsServer { url, ca_der: cert_der.to_vec(), task }
}

fn quick() -> ReconnectPolicy {
    ReconnectPolicy { initial_delay: Duration::from_millis(5), max_attempts: Some(1), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_with_a_clear_error() {
    let server = tls_server().await;
    let err = Client::builder().url(&server.url).api_key("k").reconnect(quick()).connect().await.expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{text}");
    assert!(text.contains("TLS") || text.to_lowercase().contains("certificate"), "says why: {text}");
    server.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_ca_is_trusted() {
    let server = tls_server().await;
    let client = Client::builder()
        .url(&server.url)
        .api_key("k")
        .add_root_certificate(server.ca_der.clone())
        .reconnect(quick())
        .connect()
        .await
        .expect("trusted via the configured CA");
    assert!(client.state().borrow().is_connected());
    server.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ca_certificate_is_a_configuration_error() {
    let err = Client::builder()
        .url("wss://127.0.0.1:9/v1")
        .api_key("k")
        .add_root_certificate(vec![1, 2, 3])
        .connect()
        .await
        .expect_err("not a certificate");
    assert!(matches!(err, ClientError::Config(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_runs_end_to_end_inside_a_connect_tunnel() {
    let server = tls_server().await;
    let proxy = runware_emulator::proxy::ConnectProxy::start(None).await.unwrap();
    let client = Client::builder()
        .url(&server.url)
        .api_key("k")
        .add_root_certificate(server.ca_der.clone())
        .proxy(runware_ws::Proxy::http(&proxy.url()).unwrap())
        .reconnect(quick())
        .connect()
        .await
        .expect("connected through the proxy, the certificate checked inside the tunnel");
    assert!(client.ping(Duration::from_secs(5)).await.is_ok());
    let port = server.url.trim_start_matches("wss://127.0.0.1:").trim_end_matches("/v1").to_string();
    assert_eq!(proxy.targets(), [format!("127.0.0.1:{port}")]);
    server.task.abort();
}
