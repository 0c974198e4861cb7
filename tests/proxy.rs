//! The WebSocket through an HTTP CONNECT proxy on loopback: tasks complete through it,
//! with and without proxy credentials; wrong credentials are a final configuration
//! error; the no-proxy list bypasses it.

use runware_emulator::proxy::ConnectProxy;
use runware_emulator::{Emulator, EmulatorHandle, Latency};
use runware_ws::{Client, ClientError, Kontext, KontextSize, Proxy, ReconnectPolicy};
use std::time::Duration;

const KEY: &str = "proxy-key";

async fn emulator() -> EmulatorHandle {
    Emulator::builder()
        .api_key(KEY)
        .latency(Latency::Fixed(Duration::from_millis(2)))
        .render_divisor(16)
        .start()
        .await
        .unwrap()
}

async fn one_edit(client: &Client) -> usize {
    let task = Kontext::builder().prompt("Make it snow").size(KontextSize::R1x1).build().unwrap();
    client.kontext(task).await.expect("edited").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_complete_through_a_proxy_with_and_without_credentials() {
    let emu = emulator().await;
    let open = ConnectProxy::start(None).await.unwrap();
    let client = Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .proxy(Proxy::http(&open.url()).unwrap())
        .connect()
        .await
        .expect("connects through the proxy");
    assert_eq!(one_edit(&client).await, 1);
    assert_eq!(open.tunnels(), 1);
    assert_eq!(open.targets(), [emu.addr().to_string()]);
    client.close(Duration::from_secs(1)).await;

    let guarded = ConnectProxy::start(Some(("alice", "s3cret"))).await.unwrap();
    let with_url_credentials = format!("http://alice:s3cret@{}", guarded.addr());
    let client = Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .proxy(Proxy::http(&with_url_credentials).unwrap())
        .connect()
        .await;
    let client = client.expect("credentials from the proxy URL");
    assert_eq!(one_edit(&client).await, 1);
    client.close(Duration::from_secs(1)).await;
    let client = Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .proxy(Proxy::http(&guarded.url()).unwrap().basic_auth("alice", "s3cret"))
        .connect()
        .await
        .expect("credentials from basic_auth");
    assert_eq!(one_edit(&client).await, 1);
    client.close(Duration::from_secs(1)).await;
    assert_eq!((guarded.tunnels(), guarded.refused()), (2, 0));

    // Wrong credentials: a configuration error at once, not a reconnect loop; no secret in it.
    let quick =
        ReconnectPolicy { initial_delay: Duration::from_millis(5), max_attempts: Some(5), ..Default::default() };
    let err = Client::builder()
        .url(emu.ws_url())
        .api_key(KEY)
        .reconnect(quick)
        .proxy(Proxy::http(&guarded.url()).unwrap().basic_auth("alice", "wrong-password"))
        .connect()
        .await
        .expect_err("refused by the proxy");
    assert!(matches!(err, ClientError::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("407") && !text.contains("wrong-password") && !text.contains(KEY), "{text}");
    assert_eq!(guarded.refused(), 1, "tried once");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_no_proxy_list_and_no_proxy_bypass_it() {
    let emu = emulator().await;
    let proxy = ConnectProxy::start(None).await.unwrap();
    let bypassed = Proxy::http(&proxy.url()).unwrap().no_proxy("localhost, 127.0.0.1");
    let client = Client::builder().url(emu.ws_url()).api_key(KEY).proxy(bypassed).connect().await.unwrap();
    assert_eq!(one_edit(&client).await, 1);
    client.close(Duration::from_secs(1)).await;
    let client = Client::builder().url(emu.ws_url()).api_key(KEY).no_proxy().connect().await.unwrap();
    assert_eq!(one_edit(&client).await, 1);
    client.close(Duration::from_secs(1)).await;
    assert_eq!(proxy.tunnels(), 0, "nothing went through the proxy");
    emu.shutdown().await;
}
