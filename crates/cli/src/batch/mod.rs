//! `runware batch FILE.jsonl`: every line a task, all over one connection with at
//! most C in flight, every attempt and image journaled as it happens, resumable
//! after a crash, an outage of any length, or an edit of the input.
//!
//! ```text
//!  reader (blocking thread) ──bounded──► submit loop ──► one task per line (≤ 2C alive)
//!   identity · parse · validate · skip done              │  throttle (≤ C, follows rate limits)
//!                                                        ▼
//!                       attempts: journal attempt → send → save + journal each image
//!                                 → result │ server failure: new attempt │ unknown: recover
//!                                                        │
//!                          journal writer ◄──────────────┘ (one write per burst)
//!   outage watcher (connection state → progress, --give-up-after)     progress (stderr)
//! ```
//!
//! The batch is a `runware_jobs::Runner` on the journal store
//! (`runware_jobs::store::journal`): the runner decides everything about attempts.
//! Modules (the input's lines come from `crate::reader`): `lines` (one line's run: the runner's
//! job, its images saved, its progress shown), `summary`, `dry_run`, `gallery`.

mod dry_run;
mod gallery;
pub mod lines;
mod summary;

use super::args::{ApiArgs, BatchArgs};
use super::download::{ImageFiles, Saver};
use super::embedded::{self, Endpoint};
use super::error::CliError;
use super::output::{Output, human_duration};
use super::progress::{Outage, Progress};
use super::signals::{Signal, Signals};
use super::{EXIT_ACCOUNT, EXIT_BUDGET, EXIT_CONNECTION, EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::reader::{self, Item};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lines::Outcome;
use runware_jobs::record::{Entry, Header, Record};
use runware_jobs::store::Store;
use runware_jobs::store::journal::{self, EMBEDDED_ENDPOINT, FORMAT_VERSION, JournalStore, Loaded};
use runware_jobs::{RetryPolicy, Runner};
use runware_ws::client::{Client, ConnectionState};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use summary::Summary;
use tokio::sync::{Semaphore, mpsc, watch};
use uuid::Uuid;

/// Lines the reader hands over at once (fewer when the submit loop has none).
const CHUNK: usize = 16;
/// Chunks parsed ahead of submission (at most `CHUNK × (READ_AHEAD + 1)` lines).
const READ_AHEAD: usize = 4;
/// Times one run sends an attempt of unknown outcome again before leaving it pending.
const MAX_RECOVERIES: u32 = 5;

/// Why the batch stops early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// It does not.
    No,
    /// Ctrl-C or SIGTERM.
    Interrupted(Signal),
    /// The connection is gone for good (refused key, bad configuration).
    Fatal(String),
    /// The account cannot pay for more work (credits, quota).
    Account(String),
    /// The server was unreachable for longer than `--give-up-after`.
    GaveUp(String),
    /// The journal cannot be written: running on would lose the record of what ran.
    Journal,
    /// `--max-cost` would be passed.
    Budget(String),
}

/// Everything a line's run needs.
pub struct Ctx {
    runner: Runner,
    progress: Arc<Progress>,
    stop: watch::Sender<Stop>,
}

impl Ctx {
    /// True once the batch is stopping.
    fn stopping(&self) -> bool {
        *self.stop.borrow() != Stop::No
    }

    /// Stops the batch (the first reason wins); the runner's jobs waiting to send
    /// end pending.
    fn stop(&self, why: Stop) {
        let first = self.stop.send_if_modified(|s| {
            let first = *s == Stop::No;
            if first {
                *s = why;
            }
            first
        });
        if first {
            self.runner.halt(runware_jobs::Halt::Stopped);
        }
    }
}

pub async fn run(api: ApiArgs, args: BatchArgs, out: &Output) -> Result<u8, CliError> {
    let Some(file) = args.file.clone() else {
        return Err(CliError::Usage("batch: FILE.jsonl is required".into()));
    };
    let canonical =
        tokio::fs::canonicalize(&file).await.map_err(|source| CliError::Read { path: file.clone(), source })?;
    let base_dir = canonical.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let endpoint_id = embedded::endpoint_id(&api);
    let results_path = args.results.clone().unwrap_or_else(|| default_results_path(&file, embedded::is_embedded(&api)));
    if args.dry_run {
        // Nothing is sent, no emulator starts, and the journal is only read.
        return dry_run::run(canonical, base_dir, results_path, args.max_cost, out).await;
    }
    if args.fresh {
        set_aside(&results_path, out).await?;
    }
    let loaded = {
        let p = results_path.clone();
        blocking(move || journal::load(&p).map_err(CliError::from)).await?
    };
    if loaded.unreadable > 0 {
        out.notice(&format!(
            "{}: {} unreadable line(s) ignored (a write cut short?)",
            results_path.display(),
            loaded.unreadable
        ));
    }
    let (header, loaded, new_journal) = open_journal(loaded, &endpoint_id, &results_path, &canonical, out).await?;
    let loaded = Arc::new(loaded);
    let survey = {
        let (path, loaded) = (canonical.clone(), loaded.clone());
        blocking(move || reader::survey(&path, &loaded)).await?
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
            batch_cost: loaded.billed(),
            ..Summary::empty(&args, &results_path)
        };
        summary::print(out, &summary);
        if args.gallery {
            write_gallery(canonical, results_path, args.out.clone(), out).await?;
        }
        return Ok(if survey.done_failed > 0 { EXIT_FAILED } else { EXIT_OK });
    }

    tokio::fs::create_dir_all(&args.out).await.map_err(|source| CliError::Write { path: args.out.clone(), source })?;
    let endpoint = Endpoint::resolve(&api, out).await?;
    let concurrency = args.concurrency as usize;
    // A batch waits out an outage of any length (bounded by --give-up-after).
    let client = match endpoint.connect_batch(concurrency, args.timeout).await {
        Ok(c) => c,
        Err(e) => {
            endpoint.shutdown().await;
            return Err(e);
        }
    };
    let gallery = args.gallery.then(|| (canonical.clone(), results_path.clone()));
    let plan = Plan { canonical, base_dir, results_path, loaded, header, new_journal, to_run };
    let result = execute(&client, &endpoint, &args, out, plan).await;
    client.close(Duration::from_secs(1)).await;
    endpoint.shutdown().await;
    if let Some((input, results)) = gallery
        && let Err(e) = write_gallery(input, results, args.out.clone(), out).await
    {
        out.error(&format!("the gallery could not be written: {e}"));
    }
    result
}

/// What the run works from.
struct Plan {
    canonical: PathBuf,
    base_dir: PathBuf,
    results_path: PathBuf,
    loaded: Arc<Loaded>,
    header: Header,
    new_journal: bool,
    to_run: u64,
}

/// The journal's header (made for a new journal), after checking that it belongs
/// to this endpoint; a format-1 journal is converted first.
async fn open_journal(
    loaded: Loaded,
    endpoint_id: &str,
    results_path: &Path,
    canonical: &Path,
    out: &Output,
) -> Result<(Header, Loaded, bool), CliError> {
    let mismatch = |old: &str| {
        CliError::Usage(format!(
            "{} belongs to a batch run against {old}, and this run is against {endpoint_id}: \
             the two must not mix (the journal would skip lines the other server never ran). \
             Use --results OTHER.jsonl for a journal of this endpoint's own, or --fresh to start over \
             (the old journal is kept beside it).",
            results_path.display()
        ))
    };
    if let Some(h) = &loaded.header {
        if h.version > FORMAT_VERSION {
            return Err(CliError::Usage(format!(
                "{} was written by a newer runware (journal format {}; this one reads up to {FORMAT_VERSION})",
                results_path.display(),
                h.version
            )));
        }
        if h.endpoint != endpoint_id {
            return Err(mismatch(&h.endpoint));
        }
        let h = h.clone();
        return Ok((h, loaded, false));
    }
    let header = Header {
        version: FORMAT_VERSION,
        batch_id: Uuid::new_v4(),
        endpoint: endpoint_id.to_string(),
        created_at_ms: journal::now_ms(),
    };
    if loaded.is_empty() {
        return Ok((header, loaded, true));
    }
    if loaded.legacy.is_empty() {
        // Records of this format but no header: the first line was cut short.
        return Err(CliError::Usage(format!(
            "{} has records but no header line: it cannot be resumed safely; \
             use --results OTHER.jsonl, or --fresh to start over (the old journal is kept beside it)",
            results_path.display()
        )));
    }
    if endpoint_id != EMBEDDED_ENDPOINT && reader::legacy_looks_embedded(&loaded) {
        return Err(mismatch("the embedded emulator (its images were served from a loopback address)"));
    }
    // Format 1: carry it over, keeping a copy of the original.
    let entries = {
        let (input, results) = (canonical.to_path_buf(), results_path.to_path_buf());
        let loaded = Arc::new(loaded);
        let header = header.clone();
        blocking(move || {
            let mut entries = vec![Entry::Header(header)];
            entries.extend(reader::convert_legacy(&input, &input.display().to_string(), &loaded)?);
            let backup = results.with_extension("jsonl.v1");
            std::fs::copy(&results, &backup).map_err(|source| CliError::Write { path: backup, source })?;
            journal::rewrite(&results, &entries)?;
            Ok(entries)
        })
        .await?
    };
    out.notice(&format!(
        "{}: converted from journal format 1 ({} records; the original is kept as {})",
        results_path.display(),
        entries.len() - 1,
        results_path.with_extension("jsonl.v1").display()
    ));
    let p = results_path.to_path_buf();
    let loaded = blocking(move || journal::load(&p).map_err(CliError::from)).await?;
    Ok((header, loaded, false))
}

/// `--fresh`: the old journal moves aside (nothing paid for is ever deleted).
async fn set_aside(results_path: &Path, out: &Output) -> Result<(), CliError> {
    if tokio::fs::metadata(results_path).await.is_err() {
        return Ok(());
    }
    let aside = results_path.with_extension(format!("jsonl.{}.old", journal::now_ms() / 1000));
    tokio::fs::rename(results_path, &aside).await.map_err(|source| CliError::Write { path: aside.clone(), source })?;
    out.notice(&format!("--fresh: the old journal is now {}", aside.display()));
    Ok(())
}

async fn execute(
    client: &Client,
    endpoint: &Endpoint,
    args: &BatchArgs,
    out: &Output,
    plan: Plan,
) -> Result<u8, CliError> {
    // Ctrl-C and SIGTERM are ours from here on: stop submitting, let attempts in
    // flight finish.
    let mut signals = Signals::new();
    let journal = journal::Writer::open(plan.results_path.clone()).await?;
    if plan.new_journal {
        journal.sender().send_flushed(&Entry::Header(plan.header.clone())).await.map_err(|_| CliError::Write {
            path: plan.results_path.clone(),
            source: std::io::Error::other("the journal closed"),
        })?;
    }
    let store = Arc::new(
        JournalStore::new(journal, plan.results_path.clone(), plan.header.batch_id, plan.loaded.clone())
            .runs_each_job_once(),
    );
    let progress = Arc::new(Progress::new(plan.to_run, out.quiet));
    let concurrency = args.concurrency as usize;
    progress.set_cap(concurrency, concurrency);
    let hooks = lines::LineHooks {
        files: ImageFiles { saver: Saver::new(args.downloads as usize, !args.no_download)?, dir: args.out.clone() },
        progress: progress.clone(),
    };
    let policy = RetryPolicy {
        retries: args.retries,
        backoff: args.retry_backoff,
        max_recoveries: Some(MAX_RECOVERIES),
        ..RetryPolicy::default()
    };
    let mut runner = Runner::builder(client.clone())
        .store(store.clone())
        .hooks(Arc::new(hooks))
        .policy(policy)
        .max_in_flight(concurrency)
        .upload_references(!args.inline_references)
        .resubmit_stale(args.resubmit_stale)
        .keep_outputs(false);
    if let Some(cap) = args.max_cost {
        runner = runner.max_cost(cap);
    }
    if let Some(limit) = args.give_up_after {
        runner = runner.give_up_after(limit);
    }
    let runner = runner.build();
    let (stop_tx, mut stop_rx) = watch::channel(Stop::No);
    let ctx = Arc::new(Ctx { runner: runner.clone(), progress: progress.clone(), stop: stop_tx });
    let display_stop = Arc::new(tokio::sync::Notify::new());
    let display = {
        let (p, s) = (progress.clone(), display_stop.clone());
        tokio::spawn(async move { p.run_display(&s).await })
    };
    let watcher = tokio::spawn(watch_outages(client.clone(), progress.clone()));
    // The runner halts on its own (the account, the spend cap, the journal, an
    // outage past --give-up-after): the batch stops with it.
    let halts = {
        let (ctx, url) = (ctx.clone(), endpoint.url.clone());
        tokio::spawn(async move {
            let halt = ctx.runner.wait_halted().await;
            ctx.stop(lines::stop_for(&halt, &url));
        })
    };

    let (tx, mut rx) = mpsc::channel::<Vec<Item>>(READ_AHEAD);
    let reader = {
        let (path, base_dir, loaded, batch_id) =
            (plan.canonical.clone(), plan.base_dir.clone(), plan.loaded.clone(), plan.header.batch_id);
        let interned = runner.references().map(|r| r.texts().clone());
        tokio::task::spawn_blocking(move || {
            reader::read_lines(&path, &base_dir, &loaded, batch_id, interned.as_deref(), CHUNK, tx)
        })
    };

    // Lines alive at once: those in flight (≤ C) plus those saving, backing off or
    // waiting for the connection.
    let alive = Arc::new(Semaphore::new(concurrency * 2));
    // The lines are futures of this task, not tasks of their own: no spawn, no
    // cross-thread hand-off per line (the engine's reader and writer run on the
    // other workers). Every wait below keeps polling them.
    let mut running: FuturesUnordered<futures::future::BoxFuture<'static, Outcome>> = FuturesUnordered::new();
    let (mut skipped_ok, mut skipped_failed) = (0u64, 0u64);
    // The reader's latest chunk, not yet submitted.
    let mut queued = Vec::new().into_iter();

    'submit: loop {
        let Some(item) = queued.next() else {
            queued = tokio::select! {
                biased;
                sig = signals.next() => { ctx.stop(Stop::Interrupted(sig)); break 'submit; }
                _ = stop_rx.wait_for(|s| *s != Stop::No) => break 'submit,
                Some(_) = running.next(), if !running.is_empty() => continue 'submit,
                chunk = rx.recv() => match chunk { Some(c) => c.into_iter(), None => break 'submit },
            };
            continue 'submit;
        };
        if ctx.stopping() {
            break 'submit;
        }
        match item {
            Item::Skip { ok: true } => skipped_ok += 1,
            Item::Skip { ok: false } => skipped_failed += 1,
            Item::Invalid { line, key, task_uuid, error } => {
                progress.println(&format!("error: {}", error.describe(line)));
                progress.rejected();
                let record = Record::error(key, line, task_uuid, error.code, error.message, error.parameter, true);
                let record = Entry::Result(record);
                let sent = store.record(&record);
                tokio::pin!(sent);
                let sent = loop {
                    tokio::select! {
                        r = &mut sent => break r,
                        Some(_) = running.next(), if !running.is_empty() => {}
                    }
                };
                if sent.is_err() {
                    ctx.stop(Stop::Journal);
                }
            }
            Item::Run(job) => {
                let acquire = alive.clone().acquire_owned();
                tokio::pin!(acquire);
                let permit = loop {
                    tokio::select! {
                        biased;
                        sig = signals.next() => { ctx.stop(Stop::Interrupted(sig)); break 'submit; }
                        _ = stop_rx.wait_for(|s| *s != Stop::No) => break 'submit,
                        Some(_) = running.next(), if !running.is_empty() => {}
                        p = &mut acquire => match p { Ok(p) => break p, Err(_) => break 'submit },
                    }
                };
                let ctx = ctx.clone();
                running.push(Box::pin(async move {
                    let outcome = lines::run_line(&ctx, *job).await;
                    drop(permit);
                    outcome
                }));
            }
        }
    }
    drop(rx); // the reader stops at its next line

    let stop = stop_rx.borrow().clone();
    let in_flight = running.len();
    match &stop {
        Stop::Interrupted(sig) if in_flight > 0 => {
            progress.println(&format!(
                "{}: waiting up to {} for {in_flight} line(s) in flight (a second signal stops now)",
                sig.past_tense(),
                human_duration(args.grace)
            ));
            let drain = async { while running.next().await.is_some() {} };
            tokio::select! {
                _ = tokio::time::timeout(args.grace, drain) => {}
                _ = signals.next() => {}
            }
        }
        Stop::Interrupted(sig) => progress.println(&format!("{}.", sig.past_tense())),
        // Nothing to wait for: the server is gone, or the journal is.
        Stop::GaveUp(_) | Stop::Journal => {}
        // Every line was read, or the account stopped the batch: let every line end.
        Stop::No | Stop::Fatal(_) | Stop::Account(_) | Stop::Budget(_) => while running.next().await.is_some() {},
    }
    // Lines still running now are cancelled locally; their attempts stay open in
    // the journal and a later run recovers them under the same taskUUIDs.
    let not_finished = running.len() as u64;
    drop(running);
    for _ in 0..not_finished {
        progress.line_pending();
    }

    let read_result = reader.await.map_err(|e| CliError::Other(format!("the reader failed: {e}")))?;
    watcher.abort();
    halts.abort();
    display_stop.notify_one();
    let _ = display.await;
    progress.clear();
    let batch_cost = runner.status().billed_usd;
    drop((ctx, runner));
    let written = store.finish().await.map_err(CliError::from);

    let summary = Summary {
        batch_cost,
        ..Summary::of_run(args, &plan.results_path, &progress, skipped_ok, skipped_failed, client, &stop)
    };
    summary::print(out, &summary);

    written?;
    let code = match &stop {
        Stop::Fatal(reason) | Stop::GaveUp(reason) => {
            out.error(reason);
            EXIT_CONNECTION
        }
        Stop::Account(reason) => {
            out.error(&format!(
                "{reason}\nThe account cannot pay for more work: add credits (or raise the quota), then run the \
                 same command again — the {} line(s) not done are still pending in the journal.",
                summary.pending
            ));
            EXIT_ACCOUNT
        }
        Stop::Journal => {
            out.error(&format!("the journal {} cannot be written: stopped", plan.results_path.display()));
            EXIT_FAILED
        }
        Stop::Budget(reason) => {
            out.error(&format!(
                "{reason}\nStopped submitting; the attempts in flight finished. The {} line(s) not done are \
                 pending in the journal: run the same command with a higher --max-cost (or none) to finish them.",
                summary.pending
            ));
            EXIT_BUDGET
        }
        Stop::Interrupted(sig) => sig.exit_code(),
        Stop::No => {
            if summary.failed > 0 || summary.skipped_failed > 0 || summary.pending > 0 {
                EXIT_FAILED
            } else {
                EXIT_OK
            }
        }
    };
    if let Err(e) = read_result {
        out.error(&e.to_string());
        return Ok(EXIT_USAGE);
    }
    Ok(code)
}

/// Follows the connection: shows an outage on the progress line (the runner
/// gives up after `--give-up-after`).
async fn watch_outages(client: Client, progress: Arc<Progress>) {
    let mut rx = client.state();
    let mut since: Option<std::time::Instant> = None;
    loop {
        let state = rx.borrow_and_update().clone();
        match &state {
            ConnectionState::Connected { .. } => {
                since = None;
                progress.set_outage(None);
            }
            ConnectionState::Reconnecting { attempt, retry_in, .. } => {
                let start = *since.get_or_insert_with(std::time::Instant::now);
                let next_at = Some(std::time::Instant::now() + *retry_in);
                progress.set_outage(Some(Outage { since: start, attempt: *attempt, next_at }));
            }
            ConnectionState::Connecting | ConnectionState::Disconnected { .. } => {
                let start = *since.get_or_insert_with(std::time::Instant::now);
                progress.set_outage(Some(Outage { since: start, attempt: 0, next_at: None }));
            }
            ConnectionState::Closed => return,
            _ => {}
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// `dir/NAME.results.jsonl` for `dir/NAME.jsonl` (else `FILE.results.jsonl`);
/// `NAME.emulator.results.jsonl` on the embedded emulator, so that a key-less
/// trial never mixes with a real run.
pub fn default_results_path(input: &Path, embedded: bool) -> PathBuf {
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "batch".into());
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    let kind = if embedded { ".emulator" } else { "" };
    input.with_file_name(format!("{stem}{kind}.results.jsonl"))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, CliError> + Send + 'static) -> Result<T, CliError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CliError::Other(format!("a blocking task failed: {e}")))?
}

/// `runware gallery RESULTS.jsonl`: the gallery of a batch run earlier.
pub async fn gallery_command(args: super::args::GalleryArgs, out: &Output) -> Result<u8, CliError> {
    let input = match args.input.clone() {
        Some(i) => i,
        None => input_of_results(&args.results).ok_or_else(|| {
            CliError::Usage(format!("cannot tell the input file of {}: pass --input FILE", args.results.display()))
        })?,
    };
    write_gallery(input, args.results, args.out, out).await?;
    Ok(EXIT_OK)
}

/// `tasks.results.jsonl` or `tasks.emulator.results.jsonl` → `tasks.jsonl`.
fn input_of_results(results: &Path) -> Option<PathBuf> {
    let name = results.file_name()?.to_str()?;
    let stem = name.strip_suffix(".results.jsonl")?;
    let stem = stem.strip_suffix(".emulator").unwrap_or(stem);
    Some(results.with_file_name(format!("{stem}.jsonl")))
}

async fn write_gallery(input: PathBuf, results: PathBuf, dir: PathBuf, out: &Output) -> Result<(), CliError> {
    let (path, cards) = blocking(move || gallery::write(&input, &results, &dir)).await?;
    out.notice(&format!("Gallery of {cards} line(s): {}", path.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_path_sits_beside_the_input_and_names_the_emulator() {
        assert_eq!(default_results_path(Path::new("a/b.jsonl"), false), PathBuf::from("a/b.results.jsonl"));
        assert_eq!(default_results_path(Path::new("tasks.txt"), false), PathBuf::from("tasks.txt.results.jsonl"));
        assert_eq!(default_results_path(Path::new("a/b.jsonl"), true), PathBuf::from("a/b.emulator.results.jsonl"));
    }
}
