//! One line's run: its attempts, their results, and what each failure means.
//!
//! - An attempt is journaled (and flushed) before it is sent.
//! - Every image is saved and journaled as it arrives; an image already journaled
//!   (by an earlier attempt or run) is neither saved nor counted again.
//! - A failure **the server reported** as retryable (provider, server-side
//!   timeout, server error, rate limit) ends the attempt; after a backoff with
//!   jitter the next attempt runs under a new taskUUID, for the missing results
//!   only, with its seed moved past the images received (when the line sets one).
//!   A rate-limited attempt is first sent once more under its own taskUUID (the
//!   server may have registered it); only a second rate limit on it closes it.
//! - An **unknown outcome** (client deadline, lost connection) is never retried
//!   under a new taskUUID: the same attempt is sent again once the connection is
//!   back — the server answers `conflictTaskUUID` and its results are recovered —
//!   and left pending in the journal when the run ends first.
//! - Account failures (key refused, no credits) stop the whole batch; the line
//!   stays pending. Anything else the server refused is final at once.
//! - An open attempt first sent longer ago than [`TASK_RETENTION`] is looked up
//!   before it is re-sent: one the server forgot is left pending (it may have run),
//!   or, with `--resubmit-stale`, closed and followed by a new attempt.

use super::budget::Refusal;
use super::identity;
use super::journal::{AttemptFailed, AttemptRecord, Entry, ImageEntry, ImageRecord, Record, UploadRecord, now_ms};
use super::reader::LineJob;
use super::{Ctx, Stop, TASK_RETENTION};
use crate::download::{file_safe, short_uuid};
use crate::input::Task;
use crate::output::{dollars, human_duration};
use futures::StreamExt;
use runware_ws::client::{ClientError, ImageResult, KontextStream, Lookup, ReferenceCache, TaskStream};
use runware_ws::protocol::{ErrorKind, KontextTask, ReferenceImage, ResultItem, RetryAdvice};
use std::time::Duration;
use tokio::time::Instant;

/// Times one run sends an attempt of unknown outcome again before leaving it pending.
const MAX_RECOVERIES: u32 = 5;
/// Rate-limited attempts of one line in one run (they do not use up `--retries`).
const MAX_RATE_LIMITED: u32 = 20;
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a lookup of a stale attempt waits for the server's answer.
const STALE_LOOKUP_WAIT: Duration = Duration::from_secs(10);
/// The `attemptFailed` code of a stale attempt the server no longer knew.
const STALE_CODE: &str = "staleTaskUUID";

/// How a line's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every result is in and saved.
    Ok,
    /// Ended with an error, journaled.
    Failed,
    /// Not known yet: the journal keeps it pending for the next run.
    Pending,
}

/// A submitted attempt's results.
enum Running {
    Kontext(KontextStream),
    Task(TaskStream),
}

/// One result of an attempt.
enum Got {
    /// An image (typed once: by the stream, or here).
    Image(ImageResult),
    /// Any other result item, as received.
    Other(ResultItem),
}

impl Running {
    async fn next(&mut self) -> Option<Result<Got, ClientError>> {
        match self {
            Running::Kontext(s) => s.next().await.map(|r| r.map(Got::Image)),
            Running::Task(s) => s.next().await.map(|r| {
                r.and_then(|item| {
                    // What `ImageResult::try_from` needs, checked first: an item it would
                    // refuse is kept as it came.
                    if item.output().is_some() && item.task_uuid.is_some() && item.image_uuid.is_some() {
                        ImageResult::try_from(item).map(Got::Image)
                    } else {
                        Ok(Got::Other(item))
                    }
                })
            }),
        }
    }
}

async fn submit(ctx: &Ctx, task: Task) -> Result<Running, ClientError> {
    match task {
        Task::Kontext(t) => ctx.client.kontext_stream(*t).await.map(Running::Kontext),
        Task::Inference(t) => ctx.client.submit(*t).await.map(Running::Task),
        Task::Raw(r) => ctx.client.submit(r).await.map(Running::Task),
    }
}

/// The line's progress within this run.
struct Line<'a> {
    ctx: &'a Ctx,
    job: LineJob,
    /// Every image of the line (earlier runs' included), each once.
    images: Vec<ImageRecord>,
    /// Non-image results of this run.
    others: Vec<serde_json::Value>,
    /// Why an image could not be saved, if one could not.
    save_error: Option<String>,
    started: Option<Instant>,
    /// The uploaded references (imageUUIDs) the current attempt uses.
    referenced: Vec<uuid::Uuid>,
    /// Whether the line already uploaded its references again once.
    reuploaded: bool,
}

/// Runs one line to its end (or until the batch stops).
pub async fn run_line(ctx: &Ctx, job: LineJob) -> Outcome {
    let images = job.prior.images.clone();
    let mut line = Line {
        ctx,
        job,
        images,
        others: Vec::new(),
        save_error: None,
        started: None,
        referenced: Vec::new(),
        reuploaded: false,
    };
    let outcome = line.run().await;
    match outcome {
        Outcome::Ok => ctx.progress.line_done(true, line.started.map(|s| s.elapsed())),
        Outcome::Failed => ctx.progress.line_done(false, None),
        Outcome::Pending => ctx.progress.line_pending(),
    }
    outcome
}

impl Line<'_> {
    async fn run(&mut self) -> Outcome {
        let ctx = self.ctx;
        let wanted = self.job.task.wanted();
        let mut open: Option<AttemptRecord> = self.job.prior.open_attempt().cloned();
        let mut last = self.job.prior.attempt.as_ref().map_or(0, |a| a.attempt);
        if let Some(a) = open.as_ref().filter(|a| is_stale(a, now_ms())) {
            match self.check_stale(a).await {
                Stale::Known => {}
                Stale::Resubmit => open = None,
                Stale::LeavePending => return Outcome::Pending,
            }
        }
        let (mut failures, mut rate_limited, mut recoveries) = (0u32, 0u32, 0u32);
        // The taskUUID last rate-limited and sent again as it is.
        let mut rate_limited_uuid = None;
        loop {
            if ctx.stopping() {
                return Outcome::Pending;
            }
            let (attempt, fresh) = match open.take() {
                Some(a) => (a, false),
                None => {
                    last += 1;
                    (self.next_attempt(last, wanted), true)
                }
            };
            let task = match self.job.task.for_attempt(attempt.task_uuid, attempt.number_results, attempt.seed) {
                Ok(t) => t,
                Err(e) => return self.fail_final(&attempt, e.code.to_string(), e.message, e.parameter).await,
            };
            let task = match self.send_references_once(task).await {
                Ok(t) => t,
                // Nothing of this attempt was sent: only a refusal for good fails the
                // line; anything a later run may get past leaves it pending.
                Err(e) => match e.retry_advice() {
                    RetryAdvice::Never => {
                        let (code, message) = api_code(&e);
                        let message = format!("uploading a reference image: {message}");
                        return self.fail_final(&attempt, code, message, Some("inputs.referenceImages".into())).await;
                    }
                    RetryAdvice::FixAccount => {
                        ctx.stop_for_account(&e);
                        return Outcome::Pending;
                    }
                    _ => return Outcome::Pending,
                },
            };
            let slot = tokio::select! {
                slot = ctx.throttle.acquire() => slot,
                _ = ctx.stopped() => return Outcome::Pending,
            };
            let reservation = match ctx.budget.reserve(self.job.task.estimate(attempt.number_results)) {
                Ok(r) => r,
                Err(refusal) => {
                    drop(slot);
                    ctx.stop(Stop::Budget(budget_reason(self.job.line, &self.job.task, &refusal)));
                    return Outcome::Pending;
                }
            };
            if fresh && ctx.journal.attempt_flushed(&attempt).await.is_err() {
                ctx.stop(Stop::Journal);
                return Outcome::Pending;
            }
            self.started.get_or_insert_with(Instant::now);
            tracing::debug!(line = self.job.line, task_uuid = %attempt.task_uuid, attempt = attempt.attempt, fresh, "sending");
            ctx.progress.submitted();
            let ended = match submit(ctx, task).await {
                Ok(stream) => self.collect(&attempt, stream).await,
                Err(e) => Err(e),
            };
            ctx.progress.attempt_ended();
            drop(reservation);
            drop(slot);
            let error = match ended {
                Ok(()) => {
                    ctx.throttle.succeeded();
                    ctx.progress.set_cap(ctx.throttle.cap(), ctx.throttle.max());
                    return self.finish_ok(&attempt).await;
                }
                Err(e) => e,
            };
            match error.retry_advice() {
                RetryAdvice::NewTaskUuid => {
                    let (code, message) = api_code(&error);
                    let is_rate_limit = error.api_kind() == Some(ErrorKind::RateLimit);
                    // A rate-limited taskUUID may or may not be registered (docs/protocol.md
                    // §7.1): it is sent once more under the same UUID first. A conflict then
                    // recovers it if it runs after all; a second rate limit on it (stored, or
                    // fresh) means it never will, and a new taskUUID is safe.
                    let resend_same = is_rate_limit && rate_limited_uuid != Some(attempt.task_uuid);
                    if !resend_same && !self.journal_failed(&attempt, &code, &message).await {
                        return Outcome::Pending;
                    }
                    let tries = if is_rate_limit {
                        ctx.throttle.rate_limited();
                        ctx.progress.set_cap(ctx.throttle.cap(), ctx.throttle.max());
                        rate_limited += 1;
                        rate_limited
                    } else {
                        failures += 1;
                        failures
                    };
                    let budget = if is_rate_limit { MAX_RATE_LIMITED } else { ctx.retries };
                    if tries > budget {
                        let message = format!("{message} (after {} attempts in this run)", failures + rate_limited);
                        return self.fail(&attempt, code, message, None, false).await;
                    }
                    if self.images.len() as u32 >= wanted {
                        // Every image is in: the failure came after the last one.
                        return self.finish_ok(&attempt).await;
                    }
                    ctx.progress.retried();
                    if resend_same {
                        rate_limited_uuid = Some(attempt.task_uuid);
                        tracing::info!(line = self.job.line, task_uuid = %attempt.task_uuid, "rate limited: sending again under the same taskUUID");
                        open = Some(attempt);
                        let wait = backoff(ctx.retry_backoff, tries);
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = ctx.stopped() => return Outcome::Pending,
                        }
                        continue;
                    }
                    ctx.progress.println(&format!(
                        "line {}: {code} from the server; attempt {} under a new taskUUID for {} result(s)",
                        self.job.line,
                        attempt.attempt + 1,
                        wanted - self.images.len() as u32
                    ));
                    let wait = backoff(ctx.retry_backoff, tries);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = ctx.stopped() => return Outcome::Pending,
                    }
                }
                RetryAdvice::SameTaskUuid | RetryAdvice::Resubmit => {
                    if ctx.stopping() {
                        return Outcome::Pending;
                    }
                    recoveries += 1;
                    if recoveries > MAX_RECOVERIES {
                        ctx.progress.println(&format!(
                            "line {}: outcome of taskUUID {} still unknown ({error}); left pending for the next run",
                            self.job.line, attempt.task_uuid
                        ));
                        return Outcome::Pending;
                    }
                    tracing::info!(line = self.job.line, task_uuid = %attempt.task_uuid, %error, "outcome unknown: recovering under the same taskUUID");
                    let connected = tokio::select! {
                        c = ctx.client.wait_connected() => c,
                        _ = ctx.stopped() => return Outcome::Pending,
                    };
                    if let Err(e) = connected {
                        if e.is_account_failure() {
                            ctx.stop_for_account(&e);
                        }
                        return Outcome::Pending;
                    }
                    open = Some(attempt);
                }
                RetryAdvice::FixAccount => {
                    // A task the server failed for the account is done with: the next
                    // run (after the account is fixed) sends a new attempt.
                    if let ClientError::Api(_) = &error {
                        let (code, message) = api_code(&error);
                        if !self.journal_failed(&attempt, &code, &message).await {
                            return Outcome::Pending;
                        }
                    }
                    ctx.stop_for_account(&error);
                    return Outcome::Pending;
                }
                // The server no longer knows an upload this attempt referenced: upload
                // it again and send a new attempt (once per line).
                _ if !self.reuploaded
                    && !self.referenced.is_empty()
                    && api_code(&error).0 == "invalidReferenceImage" =>
                {
                    self.reuploaded = true;
                    if let Some(refs) = &ctx.references {
                        for u in self.referenced.drain(..) {
                            refs.forget(u);
                        }
                    }
                    let (code, message) = api_code(&error);
                    if !self.journal_failed(&attempt, &code, &message).await {
                        return Outcome::Pending;
                    }
                }
                // Never (and any advice this build does not know): the line fails.
                _ => {
                    let (code, message) = api_code(&error);
                    let parameter = match &error {
                        ClientError::Api(api) => api.parameter.as_ref().map(ToString::to_string),
                        ClientError::Validation(v) => v.violations.first().map(|v| v.parameter.clone()),
                        _ => None,
                    };
                    return self.fail_final(&attempt, code, message, parameter).await;
                }
            }
        }
    }

    /// An open attempt first sent longer ago than the server is trusted to remember
    /// a taskUUID: asks the server before re-sending it.
    async fn check_stale(&self, attempt: &AttemptRecord) -> Stale {
        let ctx = self.ctx;
        let age = Duration::from_millis(now_ms().saturating_sub(attempt.sent_at_ms));
        let looked_up = tokio::select! {
            l = ctx.client.lookup(attempt.task_uuid, Some(attempt.number_results), STALE_LOOKUP_WAIT) => l,
            _ = ctx.stopped() => return Stale::LeavePending,
        };
        let line = self.job.line;
        match looked_up {
            Ok(Lookup::Known { .. }) => Stale::Known,
            Ok(Lookup::Unknown) if ctx.resubmit_stale => {
                ctx.progress.println(&format!(
                    "line {line}: the server no longer knows taskUUID {} (sent {} ago); \
                     --resubmit-stale: running it again under a new taskUUID",
                    attempt.task_uuid,
                    human_duration(age)
                ));
                let message =
                    format!("the server no longer knew this taskUUID {} after it was sent", human_duration(age));
                if self.journal_failed(attempt, STALE_CODE, &message).await {
                    Stale::Resubmit
                } else {
                    Stale::LeavePending
                }
            }
            Ok(_unknown) => {
                ctx.progress.println(&format!(
                    "line {line}: taskUUID {} was sent {} ago and the server no longer knows it; left pending \
                     (it may have run: --resubmit-stale runs it again under a new taskUUID, which may bill it twice)",
                    attempt.task_uuid,
                    human_duration(age)
                ));
                Stale::LeavePending
            }
            Err(e) => {
                if e.is_account_failure() {
                    ctx.stop_for_account(&e);
                }
                ctx.progress.println(&format!(
                    "line {line}: cannot ask the server about taskUUID {} ({e}); left pending",
                    attempt.task_uuid
                ));
                Stale::LeavePending
            }
        }
    }

    /// Journals that the server failed `attempt`; false (and the batch stops) when
    /// the journal cannot be written.
    async fn journal_failed(&self, attempt: &AttemptRecord, code: &str, message: &str) -> bool {
        let failed = AttemptFailed {
            key: self.job.key.clone(),
            line: self.job.line,
            attempt: attempt.attempt,
            task_uuid: attempt.task_uuid,
            code: code.to_string(),
            message: message.to_string(),
        };
        if self.ctx.journal.send(&Entry::AttemptFailed(failed)).await.is_err() {
            self.ctx.stop(Stop::Journal);
            return false;
        }
        true
    }

    /// Attempt `n`: under a new taskUUID (the line's own for the first), for the
    /// results still missing, with the seed moved past those received.
    fn next_attempt(&self, n: u32, wanted: u32) -> AttemptRecord {
        let have = self.images.len() as u32;
        let task_uuid = match n {
            1 => self.job.first_uuid,
            _ => identity::attempt_uuid(self.ctx.batch_id, &self.job.key, n),
        };
        let seed = self.job.task.seed().map(|s| s.checked_add(u64::from(have)).unwrap_or(s));
        AttemptRecord {
            key: self.job.key.clone(),
            line: self.job.line,
            attempt: n,
            task_uuid,
            number_results: wanted.saturating_sub(have).max(1),
            seed,
            sent_at_ms: now_ms(),
        }
    }

    /// Takes an attempt's results as they arrive: every new image saved and
    /// journaled at once.
    async fn collect(&mut self, attempt: &AttemptRecord, mut stream: Running) -> Result<(), ClientError> {
        let fallback_ext = self.job.task.fallback_ext();
        while let Some(item) = stream.next().await {
            let image = match item? {
                Got::Image(image) => image,
                Got::Other(item) => {
                    self.others.push(serde_json::to_value(&item).unwrap_or(serde_json::Value::Null));
                    continue;
                }
            };
            if self.images.iter().any(|have| have.image_uuid == image.image_uuid.as_str()) {
                continue;
            }
            let path = if self.ctx.saver.saves(&image.output) {
                let stem = format!(
                    "{:05}-{}-{}",
                    self.job.line,
                    short_uuid(&attempt.task_uuid),
                    file_safe(image.image_uuid.as_str())
                );
                match self.ctx.saver.save(&image.output, &self.ctx.out_dir, &stem, fallback_ext).await {
                    Ok(saved) => saved.path,
                    Err(e) => {
                        // Journaled without a file: the image is paid for, and a re-run of
                        // `runware result` can still fetch it while its URL lives.
                        self.save_error.get_or_insert_with(|| e.to_string());
                        None
                    }
                }
            } else {
                None
            };
            let record = ImageRecord::new(&image, path.as_deref());
            self.ctx.progress.image(record.cost);
            self.ctx.budget.billed(record.cost.or_else(|| self.job.task.estimate(1)).unwrap_or(0.0));
            let entry = Entry::Image(ImageEntry {
                key: self.job.key.clone(),
                line: self.job.line,
                attempt: attempt.attempt,
                task_uuid: attempt.task_uuid,
                image: record,
            });
            let sent = self.ctx.journal.send(&entry).await;
            if let Entry::Image(e) = entry {
                self.images.push(e.image);
            }
            if sent.is_err() {
                self.ctx.stop(Stop::Journal);
                return Err(ClientError::Closed);
            }
        }
        Ok(())
    }

    async fn finish_ok(&mut self, attempt: &AttemptRecord) -> Outcome {
        if let Some(e) = self.save_error.take() {
            let message = format!("the task succeeded but not every image could be saved: {e}");
            return self.fail(attempt, "saveFailed".into(), message, None, false).await;
        }
        let record = Record {
            // The line ends here: its images go to the record.
            images: std::mem::take(&mut self.images),
            results: std::mem::take(&mut self.others),
            attempts: Some(attempt.attempt),
            latency_ms: self.started.map(|s| latency_ms(s.elapsed())),
            ..Record::ok(self.job.key.clone(), self.job.line, attempt.task_uuid)
        };
        self.journal_result(record).await;
        Outcome::Ok
    }

    /// The attempt's task with its inline references replaced by the imageUUIDs of
    /// their uploads (each uploaded once per batch, and journaled before use).
    async fn send_references_once(&mut self, task: Task) -> Result<Task, ClientError> {
        let Some(refs) = &self.ctx.references else { return Ok(task) };
        let (mut inner, kontext) = match task {
            Task::Kontext(t) => (t.into_inner(), true),
            Task::Inference(t) => (*t, false),
            raw => return Ok(raw),
        };
        let mut uploads = Vec::new();
        // The uploads this attempt references (what a refusal of them may be about).
        let mut referenced = Vec::new();
        if let Some(inputs) = inner.inputs.as_mut() {
            for r in inputs.reference_images.iter_mut() {
                // A reference interned by the reader (its content key), one still
                // inline, or one the line names itself (a URL or an imageUUID: as is).
                let interned = match r {
                    ReferenceImage::Uuid(key) => self.ctx.shared_refs.text(key).map(|text| (*key, text)),
                    _ => None,
                };
                let (uuid, made) = match (interned, ReferenceCache::key(r)) {
                    (Some((key, text)), _) => refs.upload_keyed(key, &text).await?,
                    (None, Some(_)) => match refs.reference(r).await? {
                        (ReferenceImage::Uuid(u), made) => (u, made),
                        (other, _) => {
                            return Err(ClientError::Protocol(format!("an inline reference stayed inline: {other:?}")));
                        }
                    },
                    (None, None) => continue,
                };
                referenced.push(uuid);
                uploads.extend(made);
                *r = ReferenceImage::Uuid(uuid);
            }
        }
        let task = if kontext {
            Task::Kontext(Box::new(KontextTask::try_from(inner).map_err(ClientError::from)?))
        } else {
            Task::Inference(Box::new(inner))
        };
        for u in uploads {
            let entry = Entry::Upload(UploadRecord { key: u.key, image_uuid: u.image_uuid, at_ms: now_ms() });
            if self.ctx.journal.send_flushed(&entry).await.is_err() {
                self.ctx.stop(Stop::Journal);
                return Err(ClientError::Closed);
            }
        }
        self.referenced = referenced;
        Ok(task)
    }

    async fn fail_final(
        &mut self,
        attempt: &AttemptRecord,
        code: String,
        message: String,
        parameter: Option<String>,
    ) -> Outcome {
        self.fail(attempt, code, message, parameter, true).await
    }

    async fn fail(
        &mut self,
        attempt: &AttemptRecord,
        code: String,
        message: String,
        parameter: Option<String>,
        is_final: bool,
    ) -> Outcome {
        let shown = match &parameter {
            Some(p) => format!("error: line {}: {code} [{p}]: {message}", self.job.line),
            None => format!("error: line {}: {code}: {message}", self.job.line),
        };
        self.ctx.progress.println(&shown);
        let record = Record {
            // The line ends here: its images go to the record.
            images: std::mem::take(&mut self.images),
            results: std::mem::take(&mut self.others),
            attempts: Some(attempt.attempt),
            latency_ms: self.started.map(|s| latency_ms(s.elapsed())),
            ..Record::error(self.job.key.clone(), self.job.line, attempt.task_uuid, code, message, parameter, is_final)
        };
        self.journal_result(record).await;
        Outcome::Failed
    }

    async fn journal_result(&self, record: Record) {
        if self.ctx.journal.send(&Entry::Result(record)).await.is_err() {
            self.ctx.stop(Stop::Journal);
        }
    }
}

/// What a stale open attempt turned out to be.
enum Stale {
    /// The server still knows it: re-send it under its taskUUID.
    Known,
    /// Forgotten, and `--resubmit-stale`: a new attempt.
    Resubmit,
    /// Forgotten (or the server could not be asked): left for the user.
    LeavePending,
}

/// True when `attempt` was first sent longer than [`TASK_RETENTION`] before `now_ms`.
fn is_stale(attempt: &AttemptRecord, now_ms: u64) -> bool {
    let retention = u64::try_from(TASK_RETENTION.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_sub(attempt.sent_at_ms) > retention
}

/// The server's code and message (or ours, for a failure that is not the server's).
fn api_code(e: &ClientError) -> (String, String) {
    match e {
        ClientError::Api(api) | ClientError::Auth(api) => {
            let code = if api.code.is_empty() { "error".to_string() } else { api.code.clone() };
            (code, if api.message.is_empty() { api.to_string() } else { api.message.clone() })
        }
        ClientError::Validation(_) => ("invalidParameter".into(), e.to_string()),
        ClientError::DuplicateTask(_) => ("duplicateTask".into(), e.to_string()),
        ClientError::Config(_) => ("configError".into(), e.to_string()),
        other => ("error".into(), other.to_string()),
    }
}

/// The wait before retry number `n` (1-based): `base` doubled each time, at most
/// [`MAX_BACKOFF`], times a random factor in [0.5, 1.5).
pub fn backoff(base: Duration, n: u32) -> Duration {
    let doubled = base.saturating_mul(1u32 << n.saturating_sub(1).min(16));
    doubled.min(MAX_BACKOFF).mul_f64(0.5 + fastrand::f64())
}

/// `d` in milliseconds, rounded to the microsecond.
pub fn latency_ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

/// Why `--max-cost` stopped the batch at line `line`.
fn budget_reason(line: usize, task: &Task, refusal: &Refusal) -> String {
    match refusal {
        Refusal::OverCap { billed, in_flight, estimate, cap } => format!(
            "--max-cost {}: line {line} would take the batch over it ({} billed + {} in flight + {} for this \
             attempt)",
            dollars(*cap),
            dollars(*billed),
            dollars(*in_flight),
            dollars(*estimate)
        ),
        Refusal::Unpriced => format!(
            "--max-cost: line {line} uses model {}, whose price is unknown, so the cap cannot bound it",
            task.model().unwrap_or("(none)")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_is_stale_after_the_servers_retention() {
        let attempt = AttemptRecord {
            key: "id:x".into(),
            line: 1,
            attempt: 1,
            task_uuid: uuid::Uuid::nil(),
            number_results: 1,
            seed: None,
            sent_at_ms: 1_000_000,
        };
        let hour = 3_600_000;
        assert!(!is_stale(&attempt, 1_000_000 + hour));
        assert!(is_stale(&attempt, 1_000_000 + hour + 1));
        assert!(!is_stale(&attempt, 0), "a clock that went back is not staleness");
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_secs(2);
        for _ in 0..50 {
            let first = backoff(base, 1);
            assert!(first >= Duration::from_secs(1) && first < Duration::from_secs(3), "{first:?}");
            let third = backoff(base, 3);
            assert!(third >= Duration::from_secs(4) && third < Duration::from_secs(12), "{third:?}");
            assert!(backoff(base, 30) < MAX_BACKOFF.mul_f64(1.5));
        }
    }
}
