//! The emulator fuzzed from the client side: each input is sent as one text frame
//! on an authenticated connection; afterwards the emulator must still answer a
//! ping (on that connection, or on a new one if it closed it).
#![no_main]

use futures::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use runware_emulator::{Emulator, EmulatorHandle, Latency};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Harness {
    rt: Runtime,
    emu: EmulatorHandle,
    ws: Option<Ws>,
}

static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

async fn connect(emu: &EmulatorHandle) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(emu.ws_url()).await.expect("the emulator accepts connections");
    ws.send(Message::Text(r#"[{"taskType":"authentication","apiKey":"k"}]"#.into())).await.expect("send auth");
    assert!(answers(&mut ws, "connectionSessionUUID").await, "the emulator authenticates");
    ws
}

async fn answers(ws: &mut Ws, needle: &str) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains(needle) => return true,
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return false,
            Ok(Some(Ok(_))) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let harness = HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let emu = rt
            .block_on(Emulator::builder().api_key("k").latency(Latency::Fixed(Duration::ZERO)).start())
            .expect("emulator");
        Mutex::new(Harness { rt, emu, ws: None })
    });
    let mut h = harness.lock().unwrap_or_else(|p| p.into_inner());
    let Harness { rt, emu, ws } = &mut *h;
    rt.block_on(async {
        let mut conn = match ws.take() {
            Some(c) => c,
            None => connect(emu).await,
        };
        let _ = conn.send(Message::Text(text.to_owned().into())).await;
        let _ = conn.send(Message::Text(r#"[{"taskType":"ping","ping":true}]"#.into())).await;
        if answers(&mut conn, "\"pong\":true").await {
            *ws = Some(conn);
        } else {
            // The connection ended: the emulator itself must still be serving.
            let mut fresh = connect(emu).await;
            let _ = fresh.send(Message::Text(r#"[{"taskType":"ping","ping":true}]"#.into())).await;
            assert!(answers(&mut fresh, "\"pong\":true").await, "the emulator stopped answering");
            *ws = Some(fresh);
        }
    });
});
