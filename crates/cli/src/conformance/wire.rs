//! One raw WebSocket conversation with the server: frames as the protocol has them,
//! no client engine in between (no resends, no pings, no recovery), so what the
//! conformance script sees is what the server did.

use super::ConformanceError;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long the TCP + TLS + WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// One item the server sent: an entry of a frame's `data` or `errors` array.
#[derive(Clone, Debug)]
pub enum Msg {
    Data(Value),
    Error(Value),
}

impl Msg {
    /// The item's `taskUUID`, if it has one.
    pub fn task_uuid(&self) -> Option<&str> {
        self.value().get("taskUUID").and_then(Value::as_str)
    }

    pub fn value(&self) -> &Value {
        match self {
            Msg::Data(v) | Msg::Error(v) => v,
        }
    }

    /// The error's `code` (errors only).
    pub fn code(&self) -> Option<&str> {
        match self {
            Msg::Error(v) => v.get("code").and_then(Value::as_str),
            Msg::Data(_) => None,
        }
    }
}

/// One socket.
pub struct Wire {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Items read but not yet taken.
    queue: VecDeque<Msg>,
    /// Every error object the server sent on this socket (for the error-shape check).
    pub errors: Vec<Value>,
    /// Set once the server closed the socket (or it broke).
    closed: bool,
}

impl Wire {
    /// Opens a socket to `url` (no authentication yet).
    pub async fn open(url: &str) -> Result<Wire, ConformanceError> {
        let connecting = tokio_tungstenite::connect_async(url);
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| ConformanceError::Connect(format!("no WebSocket handshake within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| ConformanceError::Connect(e.to_string()))?;
        Ok(Wire { ws, queue: VecDeque::new(), errors: Vec::new(), closed: false })
    }

    /// Sends `tasks` as one frame.
    pub async fn send(&mut self, tasks: &[Value]) -> Result<(), ConformanceError> {
        let text = Value::Array(tasks.to_vec()).to_string();
        self.ws.send(Message::text(text)).await.map_err(|e| ConformanceError::Socket(e.to_string()))
    }

    /// Authenticates (resuming `session` if given) and returns the reply item, or
    /// the error the server answered.
    pub async fn authenticate(&mut self, key: &str, session: Option<&str>) -> Result<Msg, ConformanceError> {
        let mut auth = json!({"taskType": "authentication", "apiKey": key});
        if let Some(s) = session {
            auth["connectionSessionUUID"] = json!(s);
        }
        self.send(&[auth]).await?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let reply = self
            .wait_for(deadline, |m| match m {
                Msg::Data(v) => v["taskType"] == "authentication",
                Msg::Error(v) => v["taskType"] == "authentication" || v.get("taskUUID").is_none(),
            })
            .await?;
        reply.ok_or_else(|| ConformanceError::Socket("no answer to authentication".into()))
    }

    /// The first item (read now or earlier) that `want` accepts, before `deadline`;
    /// `None` when none came (or the socket closed). Items it does not accept are
    /// kept for later calls.
    pub async fn wait_for(
        &mut self,
        deadline: Instant,
        mut want: impl FnMut(&Msg) -> bool,
    ) -> Result<Option<Msg>, ConformanceError> {
        loop {
            if let Some(i) = self.queue.iter().position(&mut want) {
                return Ok(self.queue.remove(i));
            }
            if self.closed || !self.read_frame(deadline).await? {
                return Ok(None);
            }
        }
    }

    /// Reads one frame into the queue; false at the deadline or when the socket closed.
    async fn read_frame(&mut self, deadline: Instant) -> Result<bool, ConformanceError> {
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Ok(false),
                Ok(n) => n,
            };
            let text = match next {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                    self.closed = true;
                    return Ok(false);
                }
                Some(Ok(Message::Text(t))) => t,
                // WebSocket pings are answered by tungstenite; nothing else is text.
                Some(Ok(_)) => continue,
            };
            let frame: Value = serde_json::from_str(text.as_str())
                .map_err(|e| ConformanceError::Socket(format!("the server sent a frame that is not JSON: {e}")))?;
            for v in frame.get("data").and_then(Value::as_array).into_iter().flatten() {
                self.queue.push_back(Msg::Data(v.clone()));
            }
            for v in frame.get("errors").and_then(Value::as_array).into_iter().flatten() {
                self.errors.push(v.clone());
                self.queue.push_back(Msg::Error(v.clone()));
            }
            return Ok(true);
        }
    }

    /// Waits, sending nothing, until the server closes the socket or `max` passes;
    /// how long it stayed open, if it closed.
    pub async fn silent_until_closed(&mut self, max: Duration) -> Option<Duration> {
        let started = Instant::now();
        let deadline = started + max;
        while !self.closed {
            match self.read_frame(deadline).await {
                Ok(true) => {}
                Ok(false) if self.closed => break,
                Ok(false) => return None,
                Err(_) => break,
            }
        }
        Some(started.elapsed())
    }

    /// Drops the socket without a close frame, as a broken network would.
    pub fn drop_abruptly(self) {
        drop(self.ws);
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}
