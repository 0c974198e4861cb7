//! `runware batch FILE.jsonl`: every line a task, all over one connection with at
//! most C in flight, results journaled as they finish, resumable after a crash.
//!
//! ```text
//!  reader (blocking thread) ──bounded──► submit loop ──► client (≤ C in flight)
//!   parse · validate · skip done            │                 │
//!                                           ▼                 ▼
//!                             per-task handler: collect results · save images
//!                                           │
//!                          journal writer ◄─┘ (append + flush)   progress (stderr)
//! ```

use super::args::{ApiArgs, BatchArgs};
use super::download::{Saver, short_uuid};
use super::edit::save_images;
use super::embedded::Endpoint;
use super::error::{CliError, client_exit_code};
use super::input::{self, LineError, Task};
use super::journal::{self, Prior, Record, Status};
use super::output::{Output, dollars, human_duration};
use super::progress::{Percentiles, Progress};
use super::{EXIT_CONNECTION, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::client::{Client, ClientError, ImageResult, KontextStream, TaskStream};
use crate::protocol::{ClientTask, ResultItem};
use serde::Serialize;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

/// Lines parsed ahead of submission.
const READ_AHEAD: usize = 64;

/// What the reader hands the submit loop, one per non-blank line.
enum Item {
    /// Done in an earlier run (per the journal).
    Skip { ok: bool },
    /// Cannot run as written.
    Invalid { line: usize, task_uuid: Uuid, error: LineError },
    /// Ready to submit.
    Task { line: usize, task_uuid: Uuid, task: Task },
}

/// Everything a task handler needs.
struct Ctx {
    saver: Saver,
    out_dir: PathBuf,
    journal: mpsc::Sender<Record>,
    progress: Arc<Progress>,
    stop: watch::Sender<Stop>,
    url: String,
}

/// Why submission stops early.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stop {
    No,
    /// The connection is gone for good (auth refused, unreachable).
    Fatal(String),
    /// The journal cannot be written: running on would lose the record of what ran.
    Journal,
}

impl Ctx {
    /// Journals a record; if the journal is gone, stops the run.
    async fn journal(&self, record: Record) {
        if self.journal.send(record).await.is_err() {
            self.stop.send_if_modified(|s| {
                let first = *s == Stop::No;
                if first {
                    *s = Stop::Journal;
                }
                first
            });
        }
    }
}

/// The summary of a run, printed at the end (`--json`: on stdout).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    input: String,
    results: String,
    out: String,
    ok: u64,
    failed: u64,
    skipped_ok: u64,
    skipped_failed: u64,
    images: u64,
    cost: f64,
    wall_seconds: f64,
    tasks_per_second: f64,
    images_per_second: f64,
    latency_ms: Percentiles,
    reconnects: u64,
    interrupted: bool,
    not_finished: u64,
}

pub async fn run(api: ApiArgs, args: BatchArgs, out: &Output) -> Result<u8, CliError> {
    let canonical = tokio::fs::canonicalize(&args.file)
        .await
        .map_err(|source| CliError::Read { path: args.file.clone(), source })?;
    let base_dir = canonical.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let results_path = args.results.clone().unwrap_or_else(|| default_results_path(&args.file));
    let prior = {
        let p = results_path.clone();
        Arc::new(blocking(move || journal::load(&p)).await?)
    };
    if prior.unreadable > 0 {
        out.notice(&format!(
            "{}: {} unreadable line(s) ignored (a write cut short?)",
            results_path.display(),
            prior.unreadable
        ));
    }
    let survey = {
        let (path, prior) = (canonical.clone(), prior.clone());
        blocking(move || survey(&path, &prior)).await?
    };
    let (to_run, already_done) = (survey.to_run, survey.done_ok + survey.done_failed);
    if already_done > 0 {
        out.notice(&format!(
            "Resuming: {already_done} line(s) already done per {}; {to_run} to run",
            results_path.display()
        ));
    }
    if to_run == 0 {
        // Nothing to send: no connection, no emulator.
        let summary = Summary {
            skipped_ok: survey.done_ok,
            skipped_failed: survey.done_failed,
            ..Summary::empty(&args, &results_path)
        };
        print_summary(out, &summary);
        return Ok(if survey.done_failed > 0 { EXIT_FAILED } else { EXIT_OK });
    }

    tokio::fs::create_dir_all(&args.out).await.map_err(|source| CliError::Write { path: args.out.clone(), source })?;
    let endpoint = Endpoint::resolve(&api, out).await?;
    let concurrency = args.concurrency as usize;
    let client = match endpoint
        .connect(|b| b.max_in_flight(concurrency).task_timeout(args.timeout).max_tasks_per_frame(32))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            endpoint.shutdown().await;
            return Err(e);
        }
    };
    let result = execute(&client, &endpoint, &args, out, canonical, base_dir, results_path, prior, to_run).await;
    client.close(Duration::from_secs(1)).await;
    endpoint.shutdown().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    client: &Client,
    endpoint: &Endpoint,
    args: &BatchArgs,
    out: &Output,
    canonical: PathBuf,
    base_dir: PathBuf,
    results_path: PathBuf,
    prior: Arc<Prior>,
    to_run: u64,
) -> Result<u8, CliError> {
    // Ctrl-C is ours from here on: stop submitting, let tasks in flight finish.
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let journal = journal::Writer::open(results_path.clone()).await?;
    let progress = Arc::new(Progress::new(to_run, out.quiet));
    let (stop_tx, mut stop_rx) = watch::channel(Stop::No);
    let ctx = Arc::new(Ctx {
        saver: Saver::new(args.downloads as usize, !args.no_download)?,
        out_dir: args.out.clone(),
        journal: journal.sender(),
        progress: progress.clone(),
        stop: stop_tx,
        url: endpoint.url.clone(),
    });
    let display_stop = Arc::new(tokio::sync::Notify::new());
    let display = {
        let (p, s) = (progress.clone(), display_stop.clone());
        tokio::spawn(async move { p.run_display(&s).await })
    };

    let (tx, mut rx) = mpsc::channel::<Item>(READ_AHEAD);
    let reader = {
        let (path, prior) = (canonical.clone(), prior.clone());
        tokio::task::spawn_blocking(move || read_lines(&path, &base_dir, &prior, tx))
    };

    let concurrency = args.concurrency as usize;
    // In flight (≤ C, the client's limit) plus finished tasks still saving images.
    let slots = Arc::new(Semaphore::new(concurrency * 2));
    let mut running: JoinSet<()> = JoinSet::new();
    let (mut skipped_ok, mut skipped_failed) = (0u64, 0u64);
    let mut interrupted = false;

    'submit: loop {
        let item = tokio::select! {
            biased;
            _ = &mut ctrl_c => { interrupted = true; break 'submit; }
            _ = stop_rx.wait_for(|s| *s != Stop::No) => break 'submit,
            Some(_) = running.join_next(), if !running.is_empty() => continue 'submit,
            item = rx.recv() => match item { Some(i) => i, None => break 'submit },
        };
        match item {
            Item::Skip { ok: true } => skipped_ok += 1,
            Item::Skip { ok: false } => skipped_failed += 1,
            Item::Invalid { line, task_uuid, error } => {
                progress.println(&format!("error: {}", error.describe(line)));
                progress.rejected();
                let record = Record::error(line, task_uuid, error.code, error.message, error.parameter, true);
                ctx.journal(record).await;
            }
            Item::Task { line, task_uuid, task } => {
                let fallback_ext = task.fallback_ext();
                let permit = tokio::select! {
                    biased;
                    _ = &mut ctrl_c => { interrupted = true; break 'submit; }
                    _ = stop_rx.wait_for(|s| *s != Stop::No) => break 'submit,
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'submit },
                };
                let submitted = tokio::select! {
                    biased;
                    _ = &mut ctrl_c => { interrupted = true; break 'submit; }
                    _ = stop_rx.wait_for(|s| *s != Stop::No) => break 'submit,
                    s = submit(client, task) => s,
                };
                match submitted {
                    Ok(stream) => {
                        progress.submitted();
                        let ctx = ctx.clone();
                        running.spawn(handle_task(ctx, line, task_uuid, stream, fallback_ext, permit));
                    }
                    Err(e) => {
                        progress.submitted();
                        progress.arrived();
                        finish_failed(&ctx, line, task_uuid, e, None).await;
                    }
                }
            }
        }
    }
    drop(rx); // the reader stops at its next line

    let in_flight = running.len();
    if interrupted && in_flight > 0 {
        progress.println(&format!(
            "Interrupted: waiting up to {} for {in_flight} task(s) in flight (Ctrl-C again to stop now)",
            human_duration(args.grace)
        ));
        let drain = async { while running.join_next().await.is_some() {} };
        tokio::select! {
            _ = tokio::time::timeout(args.grace, drain) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    } else if interrupted {
        progress.println("Interrupted.");
    } else {
        // Every line was read (or the connection failed for good): let every task end.
        while running.join_next().await.is_some() {}
    }
    // Tasks still running after the grace period are cancelled locally; a later run
    // recovers them under the same taskUUIDs.
    let not_finished = running.len() as u64;
    running.abort_all();
    while running.join_next().await.is_some() {}

    let read_result = reader.await.map_err(|e| CliError::Other(format!("the reader failed: {e}")))?;
    display_stop.notify_one();
    let _ = display.await;
    progress.clear();
    let fatal = match &*ctx.stop.borrow() {
        Stop::Fatal(reason) => Some(reason.clone()),
        Stop::No | Stop::Journal => None,
    };
    drop(ctx);
    let written = journal.finish().await;

    let wall = progress.elapsed();
    let secs = wall.as_secs_f64().max(1e-6);
    let summary = Summary {
        ok: progress.ok(),
        failed: progress.failed(),
        skipped_ok,
        skipped_failed,
        images: progress.images(),
        cost: progress.cost(),
        wall_seconds: (secs * 1000.0).round() / 1000.0,
        tasks_per_second: ((progress.ok() + progress.failed()) as f64 / secs * 100.0).round() / 100.0,
        images_per_second: (progress.images() as f64 / secs * 100.0).round() / 100.0,
        latency_ms: progress.percentiles(),
        reconnects: client.metrics().reconnects,
        interrupted,
        not_finished,
        ..Summary::empty(args, &results_path)
    };
    print_summary(out, &summary);

    written?;
    if let Some(reason) = &fatal {
        out.error(reason);
        return Ok(EXIT_CONNECTION);
    }
    if let Err(e) = read_result {
        out.error(&e.to_string());
        return Ok(EXIT_USAGE);
    }
    Ok(if interrupted {
        EXIT_INTERRUPTED
    } else if summary.failed > 0 || summary.skipped_failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

/// A submitted task.
enum Running {
    Kontext(KontextStream),
    Task(TaskStream),
}

impl Summary {
    /// A summary of a run that did nothing.
    fn empty(args: &BatchArgs, results_path: &Path) -> Summary {
        Summary {
            input: args.file.display().to_string(),
            results: results_path.display().to_string(),
            out: args.out.display().to_string(),
            ok: 0,
            failed: 0,
            skipped_ok: 0,
            skipped_failed: 0,
            images: 0,
            cost: 0.0,
            wall_seconds: 0.0,
            tasks_per_second: 0.0,
            images_per_second: 0.0,
            latency_ms: Percentiles::default(),
            reconnects: 0,
            interrupted: false,
            not_finished: 0,
        }
    }
}

async fn submit(client: &Client, task: Task) -> Result<Running, ClientError> {
    match task {
        Task::Kontext(t) => client.kontext_stream(*t).await.map(Running::Kontext),
        Task::Inference(t) => client.submit(ClientTask::ImageInference(t), None).await.map(Running::Task),
        Task::Raw(r) => client.submit(ClientTask::Raw(r), None).await.map(Running::Task),
    }
}

/// Collects a task's results, saves its images, journals it.
async fn handle_task(
    ctx: Arc<Ctx>,
    line: usize,
    task_uuid: Uuid,
    stream: Running,
    fallback_ext: &'static str,
    permit: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let items: Result<Vec<ResultItem>, ClientError> = match stream {
        Running::Kontext(s) => s.collect_all().await.map(|v| v.into_iter().map(|i| i.item).collect()),
        Running::Task(s) => s.collect_all().await,
    };
    let latency = started.elapsed();
    ctx.progress.arrived();
    let items = match items {
        Ok(items) => items,
        Err(e) => return finish_failed(&ctx, line, task_uuid, e, Some(latency)).await,
    };
    let mut images = Vec::new();
    let mut others = Vec::new();
    for item in items {
        if item.output().is_some()
            && let Ok(img) = ImageResult::try_from(item.clone())
        {
            images.push(img);
            continue;
        }
        others.push(serde_json::to_value(&item).unwrap_or(serde_json::Value::Null));
    }
    let prefix = format!("{line:05}-{}", short_uuid(&task_uuid));
    let record = match save_images(&ctx.saver, images, &ctx.out_dir, &prefix, fallback_ext).await {
        Ok(saved) => {
            let cost: f64 = saved.iter().filter_map(|i| i.cost).sum();
            ctx.progress.finished(true, saved.len() as u64, cost, Some(latency));
            Record { images: saved, results: others, latency_ms: Some(millis(latency)), ..Record::ok(line, task_uuid) }
        }
        Err(e) => {
            let msg = format!("line {line}: the task succeeded but its images could not be saved: {e}");
            ctx.progress.println(&format!("error: {msg}"));
            ctx.progress.finished(false, 0, 0.0, None);
            Record {
                latency_ms: Some(millis(latency)),
                ..Record::error(line, task_uuid, "saveFailed", msg, None, false)
            }
        }
    };
    drop(permit);
    ctx.journal(record).await;
}

/// Journals a task that failed (at submission or later) and stops the run when the
/// connection is gone for good.
async fn finish_failed(ctx: &Ctx, line: usize, task_uuid: Uuid, e: ClientError, latency: Option<Duration>) {
    let (code, parameter, is_final) = classify(&e);
    let message = match &e {
        ClientError::Api(api) if !api.message.is_empty() => api.message.clone(),
        other => other.to_string(),
    };
    let shown = match &parameter {
        Some(p) => format!("error: line {line}: {code} [{p}]: {message}"),
        None => format!("error: line {line}: {code}: {message}"),
    };
    if client_exit_code(&e) == EXIT_CONNECTION {
        let reason = CliError::from_client(e, &ctx.url).to_string();
        ctx.stop.send_if_modified(|s| {
            if *s == Stop::No {
                *s = Stop::Fatal(reason.clone());
                true
            } else {
                false
            }
        });
    } else if !matches!(e, ClientError::Closed) || *ctx.stop.borrow() == Stop::No {
        ctx.progress.println(&shown);
    }
    ctx.progress.finished(false, 0, 0.0, None);
    let record = Record {
        latency_ms: latency.map(millis),
        ..Record::error(line, task_uuid, code, message, parameter, is_final)
    };
    ctx.journal(record).await;
}

/// (code, parameter, final) of a task's failure. Final: the server decided, and
/// asking again under the same taskUUID would only recover the same answer.
fn classify(e: &ClientError) -> (String, Option<String>, bool) {
    match e {
        ClientError::Api(api) => {
            let code = if api.code.is_empty() { "error".to_string() } else { api.code.clone() };
            (code, api.parameter.as_ref().map(ToString::to_string), !api.kind().is_retryable())
        }
        ClientError::Auth(api) => (api.code.clone(), api.parameter.as_ref().map(ToString::to_string), false),
        ClientError::Validation(v) => {
            ("invalidParameter".into(), v.violations.first().map(|v| v.parameter.clone()), true)
        }
        ClientError::Timeout { .. } => ("timeout".into(), None, false),
        ClientError::Unreachable { .. } => ("connectionFailed".into(), None, false),
        ClientError::Closed => ("interrupted".into(), None, false),
        ClientError::Busy { .. } => ("busy".into(), None, false),
        ClientError::DuplicateTask(_) => ("duplicateTask".into(), Some("taskUUID".into()), true),
        ClientError::Protocol(_) => ("protocolError".into(), None, false),
        ClientError::Config(_) => ("configError".into(), None, false),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `dir/NAME.results.jsonl` for `dir/NAME.jsonl` (else `FILE.results.jsonl`).
pub fn default_results_path(input: &Path) -> PathBuf {
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "batch".into());
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    input.with_file_name(format!("{stem}.results.jsonl"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, CliError> + Send + 'static) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CliError::Other(format!("a blocking task failed: {e}")))?
}

/// Reads the next line (as bytes: a line that is not UTF-8 is reported, not fatal).
fn next_line(reader: &mut impl BufRead, buf: &mut Vec<u8>, path: &Path) -> Result<bool, CliError> {
    buf.clear();
    let n = reader.read_until(b'\n', buf).map_err(|source| CliError::Read { path: path.to_path_buf(), source })?;
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(n > 0)
}

fn open(path: &Path) -> Result<std::io::BufReader<std::fs::File>, CliError> {
    let f = std::fs::File::open(path).map_err(|source| CliError::Read { path: path.to_path_buf(), source })?;
    Ok(std::io::BufReader::with_capacity(1 << 20, f))
}

/// The taskUUID a line will run under: its own, else the derived one.
fn line_uuid(canonical: &str, line: usize, text: &str) -> (Uuid, Result<serde_json::Value, LineError>) {
    let derived = input::derive_task_uuid(canonical, line, text);
    let value = input::parse_json(text);
    let own = value.as_ref().ok().and_then(|v| input::task_uuid_of(v).ok().flatten());
    (own.unwrap_or(derived), value)
}

/// What the first pass over the input found.
#[derive(Debug, Default)]
struct Survey {
    to_run: u64,
    done_ok: u64,
    done_failed: u64,
}

/// Counts the lines to run and those already done (a first, cheap pass).
fn survey(path: &Path, prior: &Prior) -> Result<Survey, CliError> {
    let canonical = path.display().to_string();
    let mut reader = open(path)?;
    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut survey = Survey::default();
    while next_line(&mut reader, &mut buf, path)? {
        line += 1;
        let text = String::from_utf8_lossy(&buf);
        if text.trim().is_empty() {
            continue;
        }
        // Only lines that name a taskUUID need parsing here.
        let uuid = if text.contains("\"taskUUID\"") {
            line_uuid(&canonical, line, &text).0
        } else {
            input::derive_task_uuid(&canonical, line, &text)
        };
        match prior.done(&uuid) {
            Some(r) if r.status == Status::Ok => survey.done_ok += 1,
            Some(_) => survey.done_failed += 1,
            None => survey.to_run += 1,
        }
    }
    Ok(survey)
}

/// The reader: one [`Item`] per non-blank line, into a bounded channel (blocking thread).
fn read_lines(path: &Path, base_dir: &Path, prior: &Prior, tx: mpsc::Sender<Item>) -> Result<(), CliError> {
    let canonical = path.display().to_string();
    let mut reader = open(path)?;
    let mut buf = Vec::new();
    let mut line = 0usize;
    let mut seen: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    while next_line(&mut reader, &mut buf, path)? {
        line += 1;
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            Err(e) => {
                let text = String::from_utf8_lossy(&buf);
                let task_uuid = input::derive_task_uuid(&canonical, line, &text);
                let item = match prior.done(&task_uuid) {
                    Some(r) => Item::Skip { ok: r.status == Status::Ok },
                    None => Item::Invalid {
                        line,
                        task_uuid,
                        error: LineError {
                            code: "invalidJson",
                            parameter: None,
                            message: format!("the line is not UTF-8 (at byte {})", e.valid_up_to()),
                        },
                    },
                };
                if tx.blocking_send(item).is_err() {
                    return Ok(());
                }
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let item = classify_line(&canonical, base_dir, prior, &mut seen, line, text);
        if tx.blocking_send(item).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

fn classify_line(
    canonical: &str,
    base_dir: &Path,
    prior: &Prior,
    seen: &mut std::collections::HashMap<Uuid, usize>,
    line: usize,
    text: &str,
) -> Item {
    let derived = input::derive_task_uuid(canonical, line, text);
    let (task_uuid, value) = line_uuid(canonical, line, text);
    if let Some(r) = prior.done(&task_uuid) {
        return Item::Skip { ok: r.status == Status::Ok };
    }
    let invalid = |task_uuid, error| Item::Invalid { line, task_uuid, error };
    let value = match value {
        Ok(v) => v,
        Err(error) => return invalid(derived, error),
    };
    if let Err(error) = input::task_uuid_of(&value) {
        return invalid(derived, error);
    }
    if let Some(first) = seen.insert(task_uuid, line) {
        // Recorded under the line's own derived UUID, so the first line's record stands.
        seen.insert(task_uuid, first);
        let error = LineError {
            code: "invalidParameter",
            parameter: Some("taskUUID".into()),
            message: format!("taskUUID: must be unique in the batch (got {task_uuid}, already on line {first})"),
        };
        return invalid(derived, error);
    }
    match input::build(value, task_uuid, base_dir) {
        Ok(task) => Item::Task { line, task_uuid, task },
        Err(error) => invalid(task_uuid, error),
    }
}

fn print_summary(out: &Output, s: &Summary) {
    if out.json {
        out.json_value(s);
        return;
    }
    let mut lines = vec![format!(
        "{} {}: ok {} · failed {}{}",
        if s.interrupted { "Interrupted" } else { "Done" },
        s.input,
        s.ok,
        s.failed,
        if s.skipped_ok + s.skipped_failed > 0 {
            format!(
                " · skipped {} (done earlier: {} ok, {} failed)",
                s.skipped_ok + s.skipped_failed,
                s.skipped_ok,
                s.skipped_failed
            )
        } else {
            String::new()
        }
    )];
    lines.push(format!("  images      {} in {} · total cost {}", s.images, s.out, dollars(s.cost)));
    lines.push(format!(
        "  wall time   {} · {:.2} tasks/s · {:.2} images/s",
        human_duration(Duration::from_secs_f64(s.wall_seconds)),
        s.tasks_per_second,
        s.images_per_second
    ));
    lines.push(format!(
        "  latency     p50 {} · p95 {} · p99 {}",
        human_duration(Duration::from_millis(s.latency_ms.p50)),
        human_duration(Duration::from_millis(s.latency_ms.p95)),
        human_duration(Duration::from_millis(s.latency_ms.p99))
    ));
    lines.push(format!("  reconnects  {}", s.reconnects));
    lines.push(format!("  results     {}", s.results));
    if s.not_finished > 0 {
        lines.push(format!("  {} task(s) did not finish: run the same command again to resume", s.not_finished));
    }
    for l in lines {
        out.notice(&l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_path_sits_beside_the_input() {
        assert_eq!(default_results_path(Path::new("a/b.jsonl")), PathBuf::from("a/b.results.jsonl"));
        assert_eq!(default_results_path(Path::new("tasks.txt")), PathBuf::from("tasks.txt.results.jsonl"));
    }

    #[test]
    fn server_verdicts_are_final_transport_failures_are_not() {
        let api = crate::protocol::ApiError::new("invalidPositivePrompt", "too short").with_parameter("positivePrompt");
        let (code, p, fin) = classify(&ClientError::Api(Box::new(api)));
        assert_eq!((code.as_str(), p.as_deref(), fin), ("invalidPositivePrompt", Some("positivePrompt"), true));
        let busy = crate::protocol::ApiError::new("serviceUnavailable", "later");
        assert!(!classify(&ClientError::Api(Box::new(busy))).2);
        assert!(!classify(&ClientError::Closed).2);
    }
}
