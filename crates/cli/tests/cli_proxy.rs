//! The CLI behind an HTTP CONNECT proxy named by the environment (with and without
//! credentials, NO_PROXY bypassing it), and `--ca-cert` for a private CA — through the
//! proxy too, with TLS inside the tunnel.

mod cli_support;

use cli_support::*;
use runware_emulator::proxy::ConnectProxy;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer, pki_types::PrivatePkcs8KeyDer};

const PROXY_PASSWORD: &str = "proxy-pass-9f3";

fn tasks(dir: &Path, n: usize) -> std::path::PathBuf {
    let input = dir.join("tasks.jsonl");
    let lines: Vec<Value> = (0..n)
        .map(|i| json!({"positivePrompt": format!("Make it snow, take {i}"), "width": 1024, "height": 1024}))
        .collect();
    write_jsonl(&input, &lines);
    input
}

fn no_proxy_env(cmd: &mut tokio::process::Command) {
    for var in
        ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"]
    {
        cmd.env_remove(var);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_goes_through_the_environments_proxy_with_and_without_credentials_and_no_proxy_bypasses_it() {
    let emu = emulator(fast()).await;
    let dir = scratch("proxy");
    let input = tasks(&dir, 4);

    let open = ConnectProxy::start(None).await.unwrap();
    let mut cmd = runware();
    no_proxy_env(&mut cmd);
    cmd.env("HTTP_PROXY", open.url()).args(api(&emu)).args(["batch", input.to_str().unwrap(), "--no-download"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(open.tunnels() >= 1, "the batch went through the proxy");
    assert!(open.targets().iter().all(|t| *t == emu.addr().to_string()), "{:?}", open.targets());

    let guarded = ConnectProxy::start(Some(("bob", PROXY_PASSWORD))).await.unwrap();
    let mut cmd = runware();
    no_proxy_env(&mut cmd);
    cmd.env("HTTP_PROXY", format!("http://bob:{PROXY_PASSWORD}@{}", guarded.addr()));
    cmd.args(api(&emu)).args(["-vvv", "batch", input.to_str().unwrap(), "--fresh", "--no-download"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(guarded.tunnels() >= 1 && guarded.refused() == 0);
    assert!(!run.stderr.contains(PROXY_PASSWORD) && !run.stdout.contains(PROXY_PASSWORD), "the proxy password leaked");

    // Wrong credentials: a configuration error (exit 2) at once, saying 407.
    let mut cmd = runware();
    no_proxy_env(&mut cmd);
    cmd.env("HTTP_PROXY", format!("http://bob:wrong@{}", guarded.addr())).args(api(&emu)).args(["ping"]);
    let refused = exec(cmd).await;
    assert_eq!(refused.code, 2, "a proxy refusing our credentials is a configuration error: {refused:?}");
    assert!(refused.stderr.contains("407"), "{}", refused.stderr);

    let before = open.tunnels();
    let mut cmd = runware();
    no_proxy_env(&mut cmd);
    cmd.env("HTTP_PROXY", open.url()).env("NO_PROXY", "localhost,127.0.0.1");
    cmd.args(api(&emu)).args(["batch", input.to_str().unwrap(), "--fresh", "--no-download"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(open.tunnels(), before, "NO_PROXY bypassed the proxy");
    emu.shutdown().await;
}

/// A TLS front for the emulator, its certificate from a CA made here; the CA as PEM.
async fn tls_front(emu_addr: std::net::SocketAddr, dir: &Path) -> (String, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("wss://127.0.0.1:{}/v1", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(emu_addr).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (url, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_cert_trusts_a_private_ca_directly_and_through_an_https_proxy() {
    let emu = emulator(fast()).await;
    let dir = scratch("ca-cert");
    let (url, ca) = tls_front(emu.addr(), &dir).await;

    let mut cmd = runware();
    no_proxy_env(&mut cmd);
    cmd.args(["--url", &url, "--api-key", KEY, "--connect-timeout", "2s", "ping", "-n", "1"]);
    let untrusted = exec(cmd).await;
    assert_eq!(untrusted.code, 3, "not in the webpki roots: {untrusted:?}");

    let mut cmd = runware();
    no_proxy_env(&mut cmd);
    cmd.args(["--url", &url, "--api-key", KEY, "--ca-cert", ca.to_str().unwrap(), "ping", "-n", "1"]);
    let trusted = exec(cmd).await;
    assert_eq!(trusted.code, 0, "{trusted:?}");

    let proxy = ConnectProxy::start(None).await.unwrap();
    let input = tasks(&dir, 3);
    let mut cmd = runware();
    no_proxy_env(&mut cmd);
    cmd.env("HTTPS_PROXY", proxy.url()).env("RUNWARE_CA_CERT", &ca);
    cmd.args(["--url", &url, "--api-key", KEY, "batch", input.to_str().unwrap(), "--no-download"]);
    let run = exec(cmd).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(proxy.tunnels() >= 1, "wss went through HTTPS_PROXY");

    let mut cmd = runware();
    no_proxy_env(&mut cmd);
    cmd.args(["--url", &url, "--api-key", KEY, "--ca-cert", input.to_str().unwrap(), "ping"]);
    let junk = exec(cmd).await;
    assert_eq!(junk.code, 2, "{junk:?}");
    assert!(junk.stderr.contains("--ca-cert"), "{}", junk.stderr);
    emu.shutdown().await;
}
