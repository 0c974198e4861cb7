//! The fixed script: three sockets, at most five Kontext images, and what each
//! server behaviour the guarantees rest on turned out to be.
//!
//! | socket | what is sent                                     | what it shows                |
//! |--------|--------------------------------------------------|------------------------------|
//! | A      | authentication, ping                             | auth shape, pong             |
//! | A      | task T (sync), then T again                      | conflict on one connection   |
//! | A      | task R, then the socket dropped                  |                              |
//! | C      | a new session: T again, getResponse T            | conflict across sessions, getResponse for a sync task |
//! | C      | getResponse R until it is done (its result waits) |                             |
//! | B      | authentication resuming A's session              | resume, R replayed           |
//! | C      | task V with a size the model refuses, V again    | a rejected task's UUID       |
//! | C      | getResponse T at the end (after `--wait`)        | how long T stays answerable  |
//! | D      | (`--idle`) nothing at all                        | how long an idle socket lives |
//!
//! Every error object met on any socket is checked for its shape. Only one task is
//! outstanding at a time, so an error without a taskUUID still answers the task
//! just sent (and the shape check reports the missing field).

use super::ConformanceError;
use super::wire::{Msg, Wire};
use runware_ws::protocol::Kontext;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

/// Images the script makes when the server behaves as assumed (R, T, V).
pub const EXPECTED_IMAGES: u32 = 3;
/// Images it makes at most: T run again on each of two resends.
pub const MAX_IMAGES: u32 = 5;
/// How long a ping or a getResponse may take to be answered.
const REPLY: Duration = Duration::from_secs(10);
/// How often getResponse is asked while waiting for R.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How soon after resuming a result that waited should be replayed.
const REPLAY_WITHIN: Duration = Duration::from_secs(5);
/// How long the client's idle keepalive lets a socket be silent before it pings,
/// plus a margin: a server that closes idle sockets sooner makes it reconnect.
const IDLE_NEEDED: Duration = Duration::from_secs(20);

/// What one check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The server behaves as the guarantees assume.
    Holds,
    /// It does not.
    Differs,
    /// The script could not see (it says why).
    CouldNotTell,
    /// Not asked for (`--idle`).
    Skipped,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Differs => "differs",
            Verdict::CouldNotTell => "could not tell",
            Verdict::Skipped => "skipped",
        }
    }
}

/// One behaviour, checked.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub behaviour: &'static str,
    pub verdict: Verdict,
    /// What the script saw.
    pub seen: String,
    /// What a difference means for the guarantees (and what then keeps a client safe).
    pub if_it_differs: &'static str,
}

/// What the script is given.
pub struct Script<'a> {
    pub url: &'a str,
    pub key: &'a str,
    /// How long to wait for a task's result.
    pub task_timeout: Duration,
    /// Extra time before the last getResponse.
    pub wait: Option<Duration>,
    /// Measure idle sockets, waiting at most this long.
    pub idle: Option<Duration>,
    /// Called with each check as it completes.
    pub progress: &'a (dyn Fn(&Check) + Sync),
}

/// What the script found.
pub struct Findings {
    pub checks: Vec<Check>,
    /// Images the server made for the script (and billed, on a real account).
    pub images: u32,
}

struct Run<'a> {
    s: &'a Script<'a>,
    checks: Vec<Check>,
    images: u32,
    errors: Vec<Value>,
}

impl Run<'_> {
    fn push(&mut self, id: &'static str, verdict: Verdict, seen: String) {
        let check = Check { id, behaviour: behaviour(id), verdict, seen, if_it_differs: impact(id) };
        (self.s.progress)(&check);
        self.checks.push(check);
    }

    async fn open(&mut self, session: Option<&str>) -> Result<(Wire, Msg), ConformanceError> {
        let mut w = Wire::open(self.s.url).await?;
        let reply = w.authenticate(self.s.key, session).await?;
        if let Msg::Error(e) = &reply {
            let code = e["code"].as_str().unwrap_or("error");
            let message = e["message"].as_str().unwrap_or_default();
            return Err(ConformanceError::Auth(format!("{code}: {message}")));
        }
        Ok((w, reply))
    }

    /// Sends `task` and waits for its first answer (a result or an error).
    async fn answer(&mut self, w: &mut Wire, task: Value, uuid: Uuid) -> Result<Option<Msg>, ConformanceError> {
        w.send(&[task]).await?;
        let deadline = Instant::now() + self.s.task_timeout;
        let m = w.wait_for(deadline, |m| answers(m, uuid)).await?;
        if m.as_ref().is_some_and(is_image) {
            self.images += 1;
        }
        Ok(m)
    }

    fn keep_errors(&mut self, w: &Wire) {
        self.errors.extend(w.errors.iter().cloned());
    }
}

/// Runs the script.
pub async fn run(s: &Script<'_>) -> Result<Findings, ConformanceError> {
    let mut run = Run { s, checks: Vec::new(), images: 0, errors: Vec::new() };
    let run = &mut run;

    // A: authentication and ping.
    let (mut a, reply) = run.open(None).await?;
    let session = reply.value()["connectionSessionUUID"].as_str().map(str::to_string);
    match session.as_deref().map(Uuid::parse_str) {
        Some(Ok(u)) => {
            run.push("auth", Verdict::Holds, format!("authentication answered with connectionSessionUUID {u}"))
        }
        _ => run.push("auth", Verdict::Differs, format!("authentication answered {}", reply.value())),
    }
    let sent = Instant::now();
    a.send(&[json!({"taskType": "ping", "ping": true})]).await?;
    let pong = a.wait_for(Instant::now() + REPLY, |m| m.value()["taskType"] == "ping").await?;
    match pong {
        Some(m) if m.value()["pong"] == true => {
            run.push("ping", Verdict::Holds, format!("pong in {} ms", sent.elapsed().as_millis()))
        }
        Some(m) => run.push("ping", Verdict::Differs, format!("the ping was answered {}", m.value())),
        None => run.push("ping", Verdict::Differs, format!("no pong within {} s", REPLY.as_secs())),
    }

    // A: task T, then T again on the same connection.
    let t = Uuid::new_v4();
    let t_task = kontext(t, "Conformance check T: a red bicycle against a white wall")?;
    let t_sent = Instant::now();
    let first = run.answer(&mut a, t_task.clone(), t).await?;
    let t_done = Instant::now();
    let latency = t_done - t_sent;
    let t_ok = match &first {
        Some(m) if is_image(m) => true,
        other => {
            let why = describe(other.as_ref(), run.s.task_timeout);
            for id in ["conflict-same-connection", "conflict-new-session", "get-response-sync"] {
                run.push(id, Verdict::CouldNotTell, format!("task T did not succeed: {why}"));
            }
            false
        }
    };
    if t_ok {
        let again = run.answer(&mut a, t_task.clone(), t).await?;
        push_conflict(run, "conflict-same-connection", again.as_ref(), "on the same connection");
    }

    // A: task R, and the socket dropped while it runs.
    let r = Uuid::new_v4();
    a.send(&[kontext(r, "Conformance check R: a lighthouse at dusk")?]).await?;
    run.keep_errors(&a);
    a.drop_abruptly();
    let dropped = Instant::now();

    // C: a new session: T again, getResponse for T, and R watched with getResponse
    // until it is done, so that its result waits for a socket.
    let (mut c, _) = run.open(None).await?;
    if t_ok {
        let again = run.answer(&mut c, t_task.clone(), t).await?;
        push_conflict(run, "conflict-new-session", again.as_ref(), "on a new connection and session");
    }
    let just_after = if t_ok { Some(get_response(&mut c, t).await?) } else { None };
    // Long enough for R to finish even when getResponse cannot tell.
    let r_done = wait_done(&mut c, r, dropped + latency * 2 + Duration::from_secs(2)).await?;

    // B: resume A's session; R's result should be replayed on it.
    let (mut b, reply) = run.open(session.as_deref()).await?;
    let now_session = reply.value()["connectionSessionUUID"].as_str().map(str::to_string);
    let resumed = session.is_some() && now_session == session;
    match (&session, &now_session) {
        (None, _) => run.push("resume", Verdict::CouldNotTell, "the first authentication gave no session".into()),
        (Some(s), Some(n)) if s == n => {
            run.push("resume", Verdict::Holds, format!("session {s} resumed on a new socket"))
        }
        (Some(s), n) => run.push(
            "resume",
            Verdict::Differs,
            format!("asked to resume {s}, got {}", n.as_deref().unwrap_or("no session")),
        ),
    }
    // A replay comes right after authentication; without getResponse's word that R
    // is done, wait up to the task timeout.
    let until = if r_done.is_some() { Instant::now() + REPLAY_WITHIN } else { dropped + run.s.task_timeout };
    let replayed = b.wait_for(until, |m| answers(m, r)).await?;
    let polled = match r_done {
        Some(at) => format!("getResponse had R's result {:.1} s after the drop", (at - dropped).as_secs_f64()),
        None => "getResponse never had R's result".into(),
    };
    match (resumed, &replayed) {
        (true, Some(m)) if is_image(m) => {
            run.images += 1;
            run.push("replay", Verdict::Holds, format!("{polled}; it was replayed on the resumed session"))
        }
        (true, Some(m)) => run.push(
            "replay",
            Verdict::CouldNotTell,
            format!("{polled}; the resumed session answered {}", describe(Some(m), run.s.task_timeout)),
        ),
        (true, None) => {
            run.push("replay", Verdict::Differs, format!("{polled}; the resumed session delivered nothing for R"))
        }
        (false, _) => run.push("replay", Verdict::CouldNotTell, format!("{polled}; the session was not resumed")),
    }
    if !replayed.as_ref().is_some_and(is_image) && r_done.is_some() {
        run.images += 1;
    }

    // C: V with a size the model does not take, then V valid.
    let v = Uuid::new_v4();
    let mut bad = kontext(v, "Conformance check V: a blue teapot")?;
    bad["width"] = json!(1000);
    bad["height"] = json!(1000);
    match run.answer(&mut c, bad, v).await? {
        Some(Msg::Error(e)) => {
            let code = e["code"].as_str().unwrap_or("?").to_string();
            let again = run.answer(&mut c, kontext(v, "Conformance check V: a blue teapot")?, v).await?;
            match again {
                Some(m) if is_image(&m) => run.push(
                    "rejected-uuid",
                    Verdict::Holds,
                    format!(
                        "V was rejected ({code}); its taskUUID then ran a valid task (a rejected UUID is not kept)"
                    ),
                ),
                Some(m) if m.code() == Some("conflictTaskUUID") => run.push(
                    "rejected-uuid",
                    Verdict::Differs,
                    format!(
                        "V was rejected ({code}); its taskUUID then got conflictTaskUUID (a rejected UUID is kept)"
                    ),
                ),
                other => run.push(
                    "rejected-uuid",
                    Verdict::CouldNotTell,
                    format!("V was rejected ({code}); then {}", describe(other.as_ref(), run.s.task_timeout)),
                ),
            }
        }
        other => run.push(
            "rejected-uuid",
            Verdict::CouldNotTell,
            format!("a 1000×1000 Kontext task was not rejected: {}", describe(other.as_ref(), run.s.task_timeout)),
        ),
    }

    // The last getResponse for T, after --wait.
    if let Some(just_after) = just_after {
        if let Some(w) = run.s.wait {
            tokio::time::sleep(w).await;
        }
        let later = get_response(&mut c, t).await?;
        let secs = t_done.elapsed().as_secs();
        let seen =
            format!("for T (sync): just after it finished {}; {secs} s after {}", yes_no(just_after), yes_no(later));
        run.push("get-response-sync", if just_after && later { Verdict::Holds } else { Verdict::Differs }, seen);
    }
    run.keep_errors(&b);
    run.keep_errors(&c);
    b.close().await;
    c.close().await;

    // Error shapes.
    let errors = std::mem::take(&mut run.errors);
    let bad: Vec<String> = errors.iter().filter_map(shape_problem).collect();
    let codes: Vec<&str> = errors.iter().filter_map(|e| e["code"].as_str()).collect();
    if errors.is_empty() {
        run.push("error-shape", Verdict::CouldNotTell, "no error was met".into());
    } else if bad.is_empty() {
        run.push(
            "error-shape",
            Verdict::Holds,
            format!("{} error(s) ({}), each with code, message and taskUUID", errors.len(), codes.join(", ")),
        );
    } else {
        run.push("error-shape", Verdict::Differs, bad.join("; "));
    }

    // D: an idle socket.
    match run.s.idle {
        None => run.push("idle", Verdict::Skipped, "not measured (--idle)".into()),
        Some(max) => {
            let (mut d, _) = run.open(None).await?;
            match d.silent_until_closed(max).await {
                None if max >= IDLE_NEEDED => run.push(
                    "idle",
                    Verdict::Holds,
                    format!("a silent socket was still open after {} s", max.as_secs()),
                ),
                None => run.push(
                    "idle",
                    Verdict::CouldNotTell,
                    format!(
                        "a silent socket was still open after {:.1} s (--idle shorter than 20 s)",
                        max.as_secs_f64()
                    ),
                ),
                Some(t) if t >= IDLE_NEEDED => run.push(
                    "idle",
                    Verdict::Holds,
                    format!("the server closed a silent socket after {} s", t.as_secs()),
                ),
                Some(t) => run.push(
                    "idle",
                    Verdict::Differs,
                    format!("the server closed a silent socket after {:.1} s", t.as_secs_f64()),
                ),
            }
        }
    }
    let images = run.images;
    Ok(Findings { checks: std::mem::take(&mut run.checks), images })
}

/// Asks getResponse for `uuid` until it has the image (when, if so) or `until`.
async fn wait_done(c: &mut Wire, uuid: Uuid, until: Instant) -> Result<Option<Instant>, ConformanceError> {
    loop {
        if get_response(c, uuid).await? {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Whether getResponse for `uuid` answers with an image (within [`REPLY`]).
async fn get_response(w: &mut Wire, uuid: Uuid) -> Result<bool, ConformanceError> {
    w.send(&[json!({"taskType": "getResponse", "taskUUID": uuid})]).await?;
    // An empty answer (`{"data":[]}`) has no item: give it a moment, not REPLY.
    let m = w.wait_for(Instant::now() + REPLY.min(Duration::from_secs(2)), |m| answers(m, uuid)).await?;
    Ok(m.as_ref().is_some_and(is_image))
}

fn push_conflict(run: &mut Run<'_>, id: &'static str, answer: Option<&Msg>, where_: &str) {
    match answer {
        Some(m) if m.code() == Some("conflictTaskUUID") => {
            run.push(id, Verdict::Holds, format!("T resent {where_}: conflictTaskUUID"))
        }
        Some(m) if is_image(m) => {
            run.push(id, Verdict::Differs, format!("T resent {where_} ran again (a second image)"))
        }
        other => {
            run.push(id, Verdict::CouldNotTell, format!("T resent {where_}: {}", describe(other, run.s.task_timeout)))
        }
    }
}

/// A Kontext \[pro\] task of one image at 1024×1024, delivered on the socket.
fn kontext(uuid: Uuid, prompt: &str) -> Result<Value, ConformanceError> {
    let task = Kontext::builder()
        .prompt(prompt)
        .dimensions(1024, 1024)
        .number_results(1)
        .build()
        .map_err(|e| ConformanceError::Script(e.to_string()))?
        .with_task_uuid(uuid);
    serde_json::to_value(&task).map_err(|e| ConformanceError::Script(e.to_string()))
}

/// `m` answers the task `uuid`: it names it, or it is an error naming no task.
fn answers(m: &Msg, uuid: Uuid) -> bool {
    let want = uuid.to_string();
    match m.task_uuid() {
        Some(u) => u == want,
        None => matches!(m, Msg::Error(_)),
    }
}

fn is_image(m: &Msg) -> bool {
    matches!(m, Msg::Data(v) if v.get("imageURL").is_some() || v.get("imageUUID").is_some())
}

fn describe(m: Option<&Msg>, timeout: Duration) -> String {
    match m {
        None => format!("no answer within {} s", timeout.as_secs()),
        Some(Msg::Error(e)) => {
            format!("error {}: {}", e["code"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or_default())
        }
        Some(Msg::Data(v)) => format!("answered {v}"),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "answered with its image" } else { "answered nothing" }
}

/// What is wrong with an error object's shape, if anything.
fn shape_problem(e: &Value) -> Option<String> {
    let code = e["code"].as_str();
    let mut missing = Vec::new();
    if code.is_none() {
        missing.push("code");
    }
    if !e["message"].is_string() {
        missing.push("message");
    }
    if !e["taskUUID"].is_string() {
        missing.push("taskUUID");
    }
    (!missing.is_empty()).then(|| format!("an error ({}) without {}", code.unwrap_or("no code"), missing.join(", ")))
}

fn behaviour(id: &str) -> &'static str {
    match id {
        "auth" => "authentication answers with a connectionSessionUUID",
        "ping" => "an application-level ping is answered with a pong",
        "resume" => "a new socket resumes the session with its connectionSessionUUID",
        "replay" => "a resumed session replays a result it could not deliver",
        "conflict-same-connection" => "a resent taskUUID is answered conflictTaskUUID on the same connection",
        "conflict-new-session" => "a resent taskUUID is answered conflictTaskUUID on a new connection and session",
        "get-response-sync" => "getResponse answers for a finished sync task, and still at the end of the run",
        "rejected-uuid" => "a rejected task's taskUUID is not kept",
        "error-shape" => "errors carry code, message and the taskUUID they are about",
        "idle" => "a silent socket stays open longer than the client's idle keepalive (20 s)",
        _ => "",
    }
}

fn impact(id: &str) -> &'static str {
    match id {
        "auth" | "resume" => {
            "A dropped socket's session is lost: results in flight are recovered by resending under the same \
             taskUUID (conflictTaskUUID, then getResponse), so the conflict and getResponse checks carry the \
             guarantee alone."
        }
        "ping" => {
            "The keepalive's pings go unanswered: the client relies on any inbound frame as life and would declare \
             an idle socket dead; raise Keepalive::idle/timeout or expect reconnects when idle."
        }
        "replay" => {
            "A result sent while the socket was down is not replayed: the client recovers it by resending under the \
             same taskUUID and fetching it with getResponse, which the conflict and getResponse checks must hold for."
        }
        "conflict-same-connection" | "conflict-new-session" => {
            "A resent taskUUID runs (and bills) again: the client's recovery after a drop could run a task twice. \
             No setting of this client makes that safe; report it (attach this report) and avoid reconnect-heavy \
             networks until the client polls getResponse before resending."
        }
        "get-response-sync" => {
            "A sync task's result cannot be fetched after a drop: the client's recovery ends such a task with an \
             unknown outcome (never resent under a new taskUUID, so never run twice). Use deliveryMethod async \
             for tasks whose results must survive a drop."
        }
        "rejected-uuid" => {
            "None for the guarantees: after a failure the server reported, the client always uses a new taskUUID. \
             The emulator's model would need updating."
        }
        "error-shape" => {
            "An error without its taskUUID cannot be routed to its task: the client fails the tasks of that frame \
             or waits for their deadlines; the emulator's model would need updating."
        }
        "idle" => {
            "The server closes idle sockets before the client's first idle ping: lower Keepalive::idle below what \
             was seen, or expect a reconnect after each quiet period (tasks are not affected)."
        }
        _ => "",
    }
}
