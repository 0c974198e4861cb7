//! Shared pieces of the benches: canned result items, a minimal answering server
//! (tokio-tungstenite, on its own thread), the hand-written baseline client, a
//! closed-loop load generator, CPU clocks and latency percentiles.
#![allow(dead_code)]

pub mod sweep;

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use runware_ws::{Kontext, KontextSize, KontextTask};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use uuid::Uuid;

// ---------------------------------------------------------------- canned data

/// `len` characters of base64 (of pseudo-random bytes), like a PNG result.
pub fn base64_payload(len: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(7);
    let bytes: Vec<u8> = (0..len / 4 * 3).map(|_| rng.u8(..)).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A realistic URL result item.
pub fn url_item(task: Uuid, image: Uuid) -> String {
    format!(
        r#"{{"taskType":"imageInference","taskUUID":"{task}","imageUUID":"{image}","imageURL":"https://im.runware.ai/image/ws/2/ii/{image}.jpg","seed":36839,"NSFWContent":false,"cost":0.04}}"#
    )
}

/// A base64 result item carrying `payload`.
pub fn base64_item(task: Uuid, image: Uuid, payload: &str) -> String {
    format!(
        r#"{{"taskType":"imageInference","taskUUID":"{task}","imageUUID":"{image}","imageBase64Data":"{payload}","seed":36839,"NSFWContent":false,"cost":0.04}}"#
    )
}

/// The Kontext [pro] task every end-to-end bench submits (built and validated per task).
pub fn kontext_task() -> KontextTask {
    Kontext::builder()
        .prompt("Make it a rainy night in the same city, keep the people")
        .size(KontextSize::R1x1)
        .build()
        .expect("a valid task")
}

/// The same task pre-serialized, with a hole for the taskUUID (for the baseline).
#[derive(Clone)]
pub struct Template {
    head: Arc<str>,
    tail: Arc<str>,
}

impl Template {
    pub fn kontext() -> Template {
        let task = kontext_task();
        let json = serde_json::to_string(&task).expect("serializable");
        let uuid = task.task_uuid.to_string();
        let at = json.find(&uuid).expect("the task carries its taskUUID");
        Template { head: json[..at].into(), tail: json[at + uuid.len()..].into() }
    }

    pub fn with(&self, uuid: &Uuid) -> String {
        let mut s = String::with_capacity(self.head.len() + 36 + self.tail.len());
        s.push_str(&self.head);
        s.push_str(uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        s.push_str(&self.tail);
        s
    }

    pub fn len(&self) -> usize {
        self.head.len() + 36 + self.tail.len()
    }
}

pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(256 << 20)).max_frame_size(Some(256 << 20))
}

// ---------------------------------------------------------------- the server

/// What the server sends back for each task.
#[derive(Clone)]
pub enum Reply {
    /// One canned URL item per task, a frame's replies batched into one frame.
    Url,
    /// One item carrying this base64 payload per task.
    Base64(Arc<String>),
    /// Nothing (only the authentication reply).
    Silent,
}

/// The CPU clock of one thread, readable from any thread.
#[derive(Clone, Copy, Debug)]
pub struct ThreadClock(libc::clockid_t);

impl ThreadClock {
    /// The calling thread's CPU clock.
    pub fn current() -> ThreadClock {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: querying the CPU clock of the calling thread.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        assert_eq!(rc, 0, "pthread_getcpuclockid");
        ThreadClock(clock)
    }

    /// CPU time the thread has used so far.
    pub fn read(&self) -> Duration {
        clock(self.0)
    }
}

/// A server under test: where to connect, and the CPU clock of the one thread it runs on.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub clock: ThreadClock,
}

/// A minimal Runware-shaped server on its own thread (one current-thread runtime,
/// so its whole CPU cost is on one thread clock).
pub struct Server {
    pub addr: SocketAddr,
    clock: ThreadClock,
    /// Tasks received so far, all connections together.
    pub received: Arc<AtomicU64>,
    /// When the newest connection's first task arrived (Unix ns; 0 before any).
    pub first_task: Arc<AtomicU64>,
}

impl Server {
    pub fn start(reply: Reply) -> Server {
        Server::start_with(reply, false)
    }

    /// With `one_per_frame`, every result goes out in a frame of its own (the
    /// costlier of the two shapes the protocol allows), however the tasks came.
    pub fn start_with(reply: Reply, one_per_frame: bool) -> Server {
        let (tx, rx) = std::sync::mpsc::channel();
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let first_task = Arc::new(AtomicU64::new(0));
        let first = first_task.clone();
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let clock = ThreadClock::current();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                    tx.send((listener.local_addr().expect("addr"), clock)).expect("report");
                    while let Ok((sock, _)) = listener.accept().await {
                        let _ = sock.set_nodelay(true);
                        tokio::spawn(serve(sock, reply.clone(), counter.clone(), first.clone(), one_per_frame));
                    }
                });
            })
            .expect("server thread");
        let (addr, clock) = rx.recv().expect("server started");
        Server { addr, clock, received, first_task }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1", self.addr)
    }

    pub fn target(&self) -> Target {
        Target { url: self.url(), clock: self.clock }
    }
}

const TASK_KEY: &str = "\"taskUUID\":\"";

async fn serve(
    sock: tokio::net::TcpStream,
    reply: Reply,
    received: Arc<AtomicU64>,
    first_task: Arc<AtomicU64>,
    one_per_frame: bool,
) {
    let mut seen_task = false;
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(sock, Some(ws_config())).await else { return };
    let (mut sink, mut stream) = ws.split();
    // A separate writer, so the server always keeps reading.
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::text(first)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut image: u128 = 0;
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Text(text) = msg else { continue };
        let text = text.as_str();
        if text.contains(r#""taskType":"authentication""#) {
            let _ = tx.send(
                r#"{"data":[{"taskType":"authentication","connectionSessionUUID":"f40c2aeb-f8a7-4af7-a1ab-7594c9bf778f"}]}"#
                    .to_string(),
            );
            continue;
        }
        if text.contains(r#""taskType":"ping""#) {
            let _ = tx.send(r#"{"data":[{"taskType":"ping","pong":true}]}"#.to_string());
            continue;
        }
        let mut out = String::new();
        let mut n = 0u64;
        let mut rest = text;
        while let Some(at) = rest.find(TASK_KEY) {
            let Some(task) = rest.get(at + TASK_KEY.len()..at + TASK_KEY.len() + 36) else { break };
            rest = &rest[at + TASK_KEY.len() + 36..];
            n += 1;
            image += 1;
            let image = Uuid::from_u128(image);
            if one_per_frame && !out.is_empty() && !matches!(reply, Reply::Silent) {
                out.push_str("]}");
                let _ = tx.send(std::mem::take(&mut out));
            }
            out.push_str(if out.is_empty() { "{\"data\":[" } else { "," });
            match &reply {
                Reply::Url => {
                    let _ = write!(
                        out,
                        r#"{{"taskType":"imageInference","taskUUID":"{task}","imageUUID":"{image}","imageURL":"https://im.runware.ai/image/ws/2/ii/{image}.jpg","seed":1}}"#
                    );
                }
                Reply::Base64(p) => {
                    let _ = write!(
                        out,
                        r#"{{"taskType":"imageInference","taskUUID":"{task}","imageUUID":"{image}","imageBase64Data":"{p}","seed":1}}"#
                    );
                }
                Reply::Silent => {}
            }
        }
        received.fetch_add(n, Ordering::Relaxed);
        if n > 0 && !seen_task {
            seen_task = true;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            first_task.store(now.as_nanos() as u64, Ordering::Relaxed);
        }
        if n > 0 && !matches!(reply, Reply::Silent) {
            out.push_str("]}");
            let _ = tx.send(out);
        }
    }
}

// ---------------------------------------------------------------- the baseline client

type Request = (Uuid, String, oneshot::Sender<String>);

/// The practical limit of the socket: one tokio-tungstenite connection, tasks
/// pre-serialized with a fresh taskUUID, replies matched by taskUUID in a plain
/// HashMap owned by one task (which also reads the socket), and a writer task that
/// batches frames like the client's. No dispatcher, validation, timeouts or reconnects.
#[derive(Clone)]
pub struct Baseline {
    tx: mpsc::UnboundedSender<Request>,
    template: Template,
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    data: Vec<Item<'a>>,
}

#[derive(serde::Deserialize)]
struct Item<'a> {
    #[serde(rename = "taskUUID", borrow, default)]
    task_uuid: Option<&'a str>,
    #[serde(rename = "imageURL", borrow, default)]
    image_url: Option<&'a str>,
}

impl Baseline {
    pub async fn connect(url: &str, api_key: &str) -> Baseline {
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true).await.expect("connect");
        let (mut sink, mut stream) = ws.split();
        let auth = format!(r#"[{{"taskType":"authentication","apiKey":"{api_key}"}}]"#);
        sink.send(Message::text(auth)).await.expect("send auth");
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) if t.contains("connectionSessionUUID") => break,
                Some(Ok(_)) => continue,
                other => panic!("no authentication reply: {other:?}"),
            }
        }
        // The writer: batches whatever tasks are queued into array frames (up to 32
        // tasks per frame, as the client does), then flushes once.
        let (wtx, mut wrx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut batch: Vec<String> = Vec::new();
            while let Some(first) = wrx.recv().await {
                batch.push(first);
                while batch.len() < 4096 {
                    match wrx.try_recv() {
                        Ok(json) => batch.push(json),
                        Err(_) => break,
                    }
                }
                for chunk in batch.chunks(32) {
                    let mut frame = String::with_capacity(chunk.iter().map(|j| j.len() + 1).sum::<usize>() + 2);
                    frame.push('[');
                    for (i, j) in chunk.iter().enumerate() {
                        if i > 0 {
                            frame.push(',');
                        }
                        frame.push_str(j);
                    }
                    frame.push(']');
                    if sink.feed(Message::text(frame)).await.is_err() {
                        return;
                    }
                }
                batch.clear();
                if sink.flush().await.is_err() {
                    return;
                }
            }
        });
        // The router: owns the HashMap; registers each task before handing its JSON
        // to the writer, and matches every reply item by taskUUID.
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            let mut waiting: HashMap<Uuid, oneshot::Sender<String>> = HashMap::new();
            loop {
                tokio::select! {
                    req = rx.recv() => {
                        let Some((uuid, json, reply)) = req else { return };
                        waiting.insert(uuid, reply);
                        if wtx.send(json).is_err() {
                            return;
                        }
                    }
                    msg = stream.next() => {
                        let Some(Ok(Message::Text(t))) = msg else {
                            if msg.is_none() { return } else { continue }
                        };
                        let Ok(env) = serde_json::from_str::<Envelope<'_>>(t.as_str()) else { continue };
                        for item in env.data {
                            let Some(uuid) = item.task_uuid.and_then(|u| Uuid::parse_str(u).ok()) else { continue };
                            if let Some(reply) = waiting.remove(&uuid) {
                                let _ = reply.send(item.image_url.unwrap_or_default().to_owned());
                            }
                        }
                    }
                }
            }
        });
        Baseline { tx, template: Template::kontext() }
    }

    /// Sends one task and waits for its result (the image URL).
    pub async fn run(&self) -> String {
        let uuid = Uuid::new_v4();
        let (reply, rx) = oneshot::channel();
        self.tx.send((uuid, self.template.with(&uuid), reply)).expect("baseline connection alive");
        rx.await.expect("a reply")
    }
}

// ---------------------------------------------------------------- load, clocks, stats

/// Runs `total` calls of `f`, `concurrency` at a time (closed loop: each worker
/// starts its next call when the previous one ends). Returns each call's latency in ns.
pub async fn closed_loop<F, Fut>(concurrency: usize, total: u64, f: F) -> Vec<u64>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let f = Arc::new(f);
    let taken = Arc::new(AtomicUsize::new(0));
    let workers = concurrency.min(total as usize).max(1);
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let f = f.clone();
        let taken = taken.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while (taken.fetch_add(1, Ordering::Relaxed) as u64) < total {
                let t0 = Instant::now();
                f().await;
                lat.push(t0.elapsed().as_nanos() as u64);
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(total as usize);
    for h in handles {
        all.extend(h.await.expect("worker"));
    }
    all
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User + system CPU time of the whole process (`getrusage(RUSAGE_SELF)`).
pub fn process_cpu() -> Duration {
    // SAFETY: `ru` is a valid out-pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The `p`-th percentile (0–100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// What one timed run measured.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub tasks: u64,
    pub wall: Duration,
    /// Process CPU minus the server thread's CPU.
    pub cpu_client: Duration,
    pub cpu_server: Duration,
    pub latencies_ns: Vec<u64>,
}

/// Runs `total` tasks through `f` at `concurrency`, measuring wall, CPU and latencies.
pub async fn measure<F, Fut>(server: ThreadClock, concurrency: usize, total: u64, f: F) -> Sample
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (cpu0, srv0, t0) = (process_cpu(), server.read(), Instant::now());
    let latencies_ns = closed_loop(concurrency, total, f).await;
    let wall = t0.elapsed();
    let (cpu1, srv1) = (process_cpu(), server.read());
    let cpu_server = srv1.saturating_sub(srv0);
    Sample { tasks: total, wall, cpu_client: (cpu1 - cpu0).saturating_sub(cpu_server), cpu_server, latencies_ns }
}

/// Several samples merged into one summary.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub tasks: u64,
    pub tasks_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
    pub cpu_us_per_task: f64,
    pub server_cpu_us_per_task: f64,
    /// Client only (from its metrics, whole run): tasks per outbound frame.
    pub tasks_per_frame_out: f64,
    /// Client only: result items per inbound frame.
    pub items_per_frame_in: f64,
}

pub fn summarize(samples: &[Sample]) -> Summary {
    let tasks: u64 = samples.iter().map(|s| s.tasks).sum();
    let wall: Duration = samples.iter().map(|s| s.wall).sum();
    let cpu: Duration = samples.iter().map(|s| s.cpu_client).sum();
    let srv: Duration = samples.iter().map(|s| s.cpu_server).sum();
    let mut lat: Vec<u64> = samples.iter().flat_map(|s| s.latencies_ns.iter().copied()).collect();
    lat.sort_unstable();
    let n = tasks.max(1) as f64;
    Summary {
        tasks,
        tasks_per_sec: tasks as f64 / wall.as_secs_f64().max(1e-9),
        p50_us: percentile(&lat, 50.0) as f64 / 1e3,
        p99_us: percentile(&lat, 99.0) as f64 / 1e3,
        mean_us: lat.iter().sum::<u64>() as f64 / lat.len().max(1) as f64 / 1e3,
        cpu_us_per_task: cpu.as_secs_f64() * 1e6 / n,
        server_cpu_us_per_task: srv.as_secs_f64() * 1e6 / n,
        tasks_per_frame_out: 0.0,
        items_per_frame_in: 0.0,
    }
}

/// Where the benches write their JSON reports (`target/` of this package unless
/// `CARGO_TARGET_DIR` says otherwise).
pub fn report_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// The machine, for the reports.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs, {model}")
}
