//! The supervisor unit-tested over scripted connections: a [`Connector`] whose
//! connections are in-memory pipes to the test, which plays the server frame by
//! frame. No socket is opened; the clock is tokio's paused one.

use super::connection::{ConnectError, Connector};
use super::shared::Shared;
use super::{Client, ClientBuilder, Keepalive, ReconnectPolicy};
use crate::protocol::{Kontext, KontextSize, KontextTask};
use futures::channel::mpsc;
use futures::{Sink, Stream, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

/// The client's end of a scripted connection.
struct Pipe {
    from_server: mpsc::UnboundedReceiver<Result<Message, tungstenite::Error>>,
    to_server: mpsc::UnboundedSender<Message>,
}

impl Stream for Pipe {
    type Item = Result<Message, tungstenite::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.from_server).poll_next(cx)
    }
}

impl Sink<Message> for Pipe {
    type Error = tungstenite::Error;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.to_server.unbounded_send(item).map_err(|_| tungstenite::Error::ConnectionClosed)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// What the next connection attempt meets.
enum Plan {
    Accept,
    Refuse(&'static str),
}

/// Connections handed to the test as [`Peer`]s, refusals as planned.
struct Scripted {
    plan: Arc<Mutex<VecDeque<Plan>>>,
    peers: mpsc::UnboundedSender<Peer>,
}

impl Connector for Scripted {
    type Conn = Pipe;

    async fn open(&self, _shared: &Shared) -> Result<Pipe, ConnectError> {
        let next = self.plan.lock().map(|mut p| p.pop_front()).unwrap_or(None);
        if let Some(Plan::Refuse(why)) = next {
            return Err(ConnectError::Transport { message: why.to_string(), cause: None });
        }
        let (to_client, from_server) = mpsc::unbounded();
        let (to_server, from_client) = mpsc::unbounded();
        self.peers
            .unbounded_send(Peer { to_client, from_client })
            .map_err(|_| ConnectError::Transport { message: "the test ended".into(), cause: None })?;
        Ok(Pipe { from_server, to_server })
    }
}

/// The server's end of one scripted connection. Dropping it ends the connection
/// (the client reads the end of the stream).
struct Peer {
    to_client: mpsc::UnboundedSender<Result<Message, tungstenite::Error>>,
    from_client: mpsc::UnboundedReceiver<Message>,
}

impl Peer {
    /// The tasks of the client's next text frame (pings are answered and skipped).
    async fn recv(&mut self) -> Vec<Value> {
        loop {
            let msg = self.from_client.next().await.expect("the client keeps the connection open");
            let Message::Text(text) = msg else { continue };
            let tasks: Vec<Value> = serde_json::from_str(text.as_str()).expect("the client sends JSON arrays");
            if tasks.iter().all(|t| t["taskType"] == "ping") {
                self.send(json!({"data": [{"taskType": "ping", "pong": true}]}));
                continue;
            }
            return tasks;
        }
    }

    /// Reads the authentication frame; returns the session it asks to resume.
    async fn expect_auth(&mut self) -> Option<String> {
        let tasks = self.recv().await;
        assert_eq!(tasks.len(), 1, "authentication comes alone: {tasks:?}");
        assert_eq!(tasks[0]["taskType"], "authentication");
        assert_eq!(tasks[0]["apiKey"], KEY);
        tasks[0]["connectionSessionUUID"].as_str().map(str::to_string)
    }

    fn send(&self, frame: Value) {
        let _ = self.to_client.unbounded_send(Ok(Message::text(frame.to_string())));
    }

    fn accept(&self, session: &str) {
        self.send(json!({"data": [{"taskType": "authentication", "connectionSessionUUID": session}]}));
    }

    fn result(&self, uuid: &str, image: &str) {
        self.send(json!({"data": [{"taskType": "imageInference", "taskUUID": uuid, "imageUUID": image,
            "imageURL": format!("https://example.com/{image}.jpg")}]}));
    }
}

const KEY: &str = "scripted-key";

struct Harness {
    client: Client,
    peers: mpsc::UnboundedReceiver<Peer>,
}

impl Harness {
    fn new(plan: Vec<Plan>) -> Harness {
        // Keepalive far away: the scripted peers answer pings, but no test of
        // reconnects should depend on one.
        let far = Keepalive {
            busy_idle: Duration::from_secs(3600),
            ..Keepalive::new(Duration::from_secs(3600), Duration::from_secs(60))
        };
        Harness::with_keepalive(plan, far)
    }

    fn with_keepalive(plan: Vec<Plan>, keepalive: Keepalive) -> Harness {
        let (tx, peers) = mpsc::unbounded();
        let connector = Scripted { plan: Arc::new(Mutex::new(plan.into())), peers: tx };
        let builder: ClientBuilder = Client::builder()
            .url("ws://scripted.invalid/v1")
            .api_key(KEY)
            .reconnect(ReconnectPolicy {
                initial_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(2),
                multiplier: 2.0,
                jitter: 0.0,
                max_attempts: Some(5),
            })
            .keepalive(keepalive);
        Harness { client: builder.build_with(connector), peers }
    }

    async fn peer(&mut self) -> Peer {
        self.peers.next().await.expect("the client connects again")
    }
}

fn edit(i: u32) -> KontextTask {
    Kontext::builder().prompt(format!("scripted edit {i}")).size(KontextSize::R1x1).build().expect("valid")
}

fn uuids(tasks: &[Value]) -> Vec<String> {
    tasks.iter().map(|t| t["taskUUID"].as_str().expect("a taskUUID").to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_drop_resumes_the_session_and_resends_pending_tasks_in_submission_order() {
    let mut h = Harness::new(vec![]);
    let mut peer = h.peer().await;
    assert_eq!(peer.expect_auth().await, None, "a first connection asks for no session");
    peer.accept("s-1");
    let mut submitted = Vec::new();
    let mut streams = Vec::new();
    for i in 0..3 {
        let s = h.client.submit(edit(i)).await.expect("submitted");
        submitted.push(s.task_uuid().to_string());
        streams.push(s);
    }
    let mut sent = Vec::new();
    while sent.len() < 3 {
        sent.extend(uuids(&peer.recv().await));
    }
    assert_eq!(sent, submitted, "sent in submission order");

    // The connection drops with all three pending.
    drop(peer);
    let mut peer = h.peer().await;
    assert_eq!(peer.expect_auth().await.as_deref(), Some("s-1"), "the session is resumed");
    peer.accept("s-1");
    let mut resent = Vec::new();
    while resent.len() < 3 {
        resent.extend(uuids(&peer.recv().await));
    }
    assert_eq!(resent, submitted, "resent under the same taskUUIDs, oldest first");
    for (i, u) in submitted.iter().enumerate() {
        peer.result(u, &format!("img-{i}"));
    }
    for s in streams {
        assert_eq!(s.await.expect("completes").len(), 1);
    }
    let m = h.client.metrics();
    assert_eq!((m.reconnects, m.resends, m.sessions_resumed), (1, 3, 1), "{m:?}");
    assert_eq!(h.client.diagnostics().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn a_new_session_after_a_drop_recovers_a_conflict_with_get_response() {
    let mut h = Harness::new(vec![]);
    let mut peer = h.peer().await;
    peer.expect_auth().await;
    peer.accept("s-1");
    let stream = h.client.submit(edit(7)).await.expect("submitted");
    let uuid = stream.task_uuid().to_string();
    assert_eq!(uuids(&peer.recv().await), vec![uuid.clone()]);
    drop(peer);

    // The server forgot the session: the task is resent, the server says it has
    // it, and the client asks for its results instead of failing it.
    let mut peer = h.peer().await;
    assert_eq!(peer.expect_auth().await.as_deref(), Some("s-1"));
    peer.accept("s-2");
    assert_eq!(uuids(&peer.recv().await), vec![uuid.clone()], "resent under its own taskUUID");
    peer.send(json!({"errors": [{"code": "conflictTaskUUID", "message": "already exists",
        "taskType": "imageInference", "taskUUID": uuid}]}));
    let poll = peer.recv().await;
    assert_eq!(poll[0]["taskType"], "getResponse", "{poll:?}");
    assert_eq!(poll[0]["taskUUID"], uuid.as_str());
    peer.result(&uuid, "img-recovered");
    let items = stream.await.expect("recovered, not failed");
    assert_eq!(items[0].image_uuid.as_deref(), Some("img-recovered"));
    let m = h.client.metrics();
    assert_eq!((m.reconnects, m.sessions_resumed), (1, 0), "{m:?}");
    assert!(m.conflicts >= 1 && m.polls >= 1, "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn a_refused_authentication_is_final_and_nothing_retries() {
    let mut h = Harness::new(vec![]);
    let mut peer = h.peer().await;
    let pending = h.client.submit(edit(1));
    peer.expect_auth().await;
    peer.send(json!({"errors": [{"code": "invalidApiKey", "message": "Invalid API key",
        "parameter": "apiKey", "taskType": "authentication"}]}));
    let refused = h.client.wait_connected().await.expect_err("refused");
    assert!(matches!(refused, super::ClientError::Auth(_)), "{refused}");
    assert!(matches!(pending.await, Err(super::ClientError::Auth(_))), "new work gets the refusal at once");
    // However long we wait, the client never connects again.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(h.peers.try_recv().is_err(), "no reconnect after a refusal");
    assert_eq!(h.client.metrics().reconnects, 0);
}

#[tokio::test(start_paused = true)]
async fn refused_connections_back_off_by_the_policy_then_connect() {
    let mut h =
        Harness::new(vec![Plan::Refuse("connection refused"), Plan::Refuse("connection refused"), Plan::Accept]);
    let started = tokio::time::Instant::now();
    let mut peer = h.peer().await;
    // Two refusals cost the first two delays of the policy: 100 ms, then 200 ms.
    assert_eq!(started.elapsed(), Duration::from_millis(300), "backoff without jitter");
    assert_eq!(h.client.diagnostics().reconnect_delays, vec![Duration::from_millis(100), Duration::from_millis(200)]);
    peer.expect_auth().await;
    peer.accept("s-1");
    h.client.wait_connected().await.expect("connected on the third attempt");
    let stream = h.client.submit(edit(2)).await.expect("submitted");
    let u = stream.task_uuid().to_string();
    assert_eq!(uuids(&peer.recv().await), vec![u.clone()]);
    peer.result(&u, "img");
    assert_eq!(stream.await.expect("done").len(), 1);
}

/// Answers the peer's pings until told to send `uuid`'s result, then hands the peer back.
fn answer_pings_until(
    mut peer: Peer,
    uuid: String,
    go: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Peer> {
    tokio::spawn(async move {
        let mut go = go;
        loop {
            tokio::select! {
                _ = &mut go => {
                    peer.result(&uuid, "img-slow");
                    return peer;
                }
                // `recv` answers pings itself and returns only other frames.
                _ = peer.recv() => {}
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_half_open_socket_with_tasks_waiting_is_found_within_the_busy_bound() {
    let mut h = Harness::with_keepalive(vec![], Keepalive::default());
    let mut peer = h.peer().await;
    peer.expect_auth().await;
    peer.accept("s-1");
    let stream = h.client.submit(edit(1)).await.expect("submitted");
    let uuid = stream.task_uuid().to_string();
    assert_eq!(uuids(&peer.recv().await), vec![uuid.clone()]);
    // Half-open: the connection stays up, but the peer neither reads nor answers.
    let silent_since = tokio::time::Instant::now();
    let mut second = h.peer().await;
    let found = silent_since.elapsed();
    // 2 s of silence, a ping, 4 s without an answer; a 500 ms check interval and
    // the first reconnect delay (100 ms) on top.
    assert!(found >= Duration::from_secs(6), "not before the bound: {found:?}");
    assert!(found <= Duration::from_millis(6_700), "within the busy bound, not idle + timeout (25 s): {found:?}");
    assert_eq!(h.client.metrics().dead_sockets, 1);
    second.expect_auth().await;
    second.accept("s-1");
    assert_eq!(uuids(&second.recv().await), vec![uuid.clone()], "resent under its own taskUUID");
    second.result(&uuid, "img");
    assert_eq!(stream.await.expect("recovered").len(), 1);
    drop(peer);
}

#[tokio::test(start_paused = true)]
async fn a_slow_task_on_a_live_socket_that_answers_pings_is_never_cut() {
    let mut h = Harness::with_keepalive(vec![], Keepalive::default());
    let mut peer = h.peer().await;
    peer.expect_auth().await;
    peer.accept("s-1");
    let stream = h.client.submit(edit(2)).await.expect("submitted");
    let uuid = stream.task_uuid().to_string();
    assert_eq!(uuids(&peer.recv().await), vec![uuid.clone()]);
    // A 10 s edit: the server says nothing about it, but answers every ping.
    let (go, rx) = tokio::sync::oneshot::channel();
    let server = answer_pings_until(peer, uuid, rx);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let _ = go.send(());
    assert_eq!(stream.await.expect("the slow task completes").len(), 1);
    let m = h.client.metrics();
    assert_eq!((m.dead_sockets, m.reconnects), (0, 0), "{m:?}");
    assert!(m.pings >= 3, "it pinged while waiting: {m:?}");
    drop(server);
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_pings_at_the_idle_cadence_only() {
    let mut h = Harness::with_keepalive(vec![], Keepalive::default());
    let mut peer = h.peer().await;
    peer.expect_auth().await;
    peer.accept("s-1");
    h.client.wait_connected().await.expect("connected");
    let (go, rx) = tokio::sync::oneshot::channel();
    let server = answer_pings_until(peer, Uuid::nil().to_string(), rx);
    tokio::time::sleep(Duration::from_secs(61)).await;
    // Every 15 s of silence: at 15, 30, 45 and 60 s.
    let m = h.client.metrics();
    assert_eq!(m.pings, 4, "{m:?}");
    assert_eq!(m.dead_sockets, 0);
    drop(go);
    drop(server);
}
