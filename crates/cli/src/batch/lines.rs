//! One line's run: a job of the batch's [`Runner`], its images saved to the
//! output folder as they arrive, its progress shown. Every rule about attempts
//! (retries, recoveries, rate limits, partial results, the spend cap, stale
//! attempts) is the runner's (`runware_jobs`); this module only says how a line
//! looks to the person running the batch.

use super::{Ctx, Stop};
use crate::download::ImageFiles;
use crate::output::{dollars, human_duration};
use crate::progress::Progress;
use crate::reader::LineJob;
use runware_jobs::hooks::{Event, Hooks, JobInfo, SaveFuture, StaleVerdict};
use runware_jobs::record::AttemptRecord;
use runware_jobs::spend::Refusal;
use runware_jobs::{Halt, Job, JobErrorKind};
use runware_ws::client::ImageResult;
use std::sync::Arc;

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

/// Runs one line to its end (or until the batch stops).
pub async fn run_line(ctx: &Ctx, line: LineJob) -> Outcome {
    let started = std::time::Instant::now();
    let job = Job::new(line.key, line.task).line(line.line).first_task_uuid(line.first_uuid);
    match ctx.runner.run(job).await {
        Ok(_) => {
            ctx.progress.line_done(true, Some(started.elapsed()));
            Outcome::Ok
        }
        Err(e) => match *e.kind {
            JobErrorKind::Failed { .. } => {
                ctx.progress.line_done(false, None);
                Outcome::Failed
            }
            JobErrorKind::Unknown { .. } | JobErrorKind::Halted(_) | JobErrorKind::Deadline(_) => {
                ctx.progress.line_pending();
                Outcome::Pending
            }
            _ => {
                ctx.progress.line_pending();
                Outcome::Pending
            }
        },
    }
}

/// What the batch does while the runner runs its lines: saves images, shows progress.
pub struct LineHooks {
    pub files: ImageFiles,
    pub progress: Arc<Progress>,
}

impl Hooks for LineHooks {
    fn event(&self, job: &JobInfo<'_>, event: Event<'_>) {
        let line = job.line;
        let p = &self.progress;
        match event {
            Event::Sending { .. } => p.submitted(),
            Event::AttemptEnded => p.attempt_ended(),
            Event::Image { cost } => p.image(cost),
            Event::Retrying { code, next, missing } => {
                p.retried();
                p.println(&format!(
                    "line {line}: {code} from the server; attempt {next} under a new taskUUID for {missing} result(s)"
                ));
            }
            Event::ResendingSame { .. } => p.retried(),
            Event::Recovering { .. } => {}
            Event::StillUnknown { task_uuid, error } => p.println(&format!(
                "line {line}: outcome of taskUUID {task_uuid} still unknown ({error}); left pending for the next run"
            )),
            Event::Stale { task_uuid, age, verdict } => match verdict {
                StaleVerdict::Known => {}
                StaleVerdict::Resubmitting => p.println(&format!(
                    "line {line}: the server no longer knows taskUUID {task_uuid} (sent {} ago); \
                     --resubmit-stale: running it again under a new taskUUID",
                    human_duration(age)
                )),
                StaleVerdict::LeftPending => p.println(&format!(
                    "line {line}: taskUUID {task_uuid} was sent {} ago and the server no longer knows it; left pending \
                     (it may have run: --resubmit-stale runs it again under a new taskUUID, which may bill it twice)",
                    human_duration(age)
                )),
                StaleVerdict::LookupFailed(e) => p.println(&format!(
                    "line {line}: cannot ask the server about taskUUID {task_uuid} ({e}); left pending"
                )),
            },
            Event::Failed { code, message, parameter } => {
                let shown = match parameter {
                    Some(param) => format!("error: line {line}: {code} [{param}]: {message}"),
                    None => format!("error: line {line}: {code}: {message}"),
                };
                p.println(&shown);
            }
            Event::Cap { cap, max } => p.set_cap(cap, max),
            _ => {}
        }
    }

    fn saves(&self, image: &ImageResult) -> bool {
        self.files.saves(image)
    }

    fn save<'a>(&'a self, job: &'a JobInfo<'a>, attempt: &'a AttemptRecord, image: &'a ImageResult) -> SaveFuture<'a> {
        self.files.save(job, attempt, image)
    }
}

/// The batch's reason to stop, for a halt of its runner.
pub fn stop_for(halt: &Halt, url: &str) -> Stop {
    match halt {
        Halt::Stopped => Stop::Interrupted(crate::signals::Signal::Interrupt),
        Halt::Auth(reason) => {
            Stop::Fatal(crate::error::CliError::Auth { url: url.to_string(), reason: reason.clone() }.to_string())
        }
        Halt::Account(reason) => Stop::Account(reason.clone()),
        Halt::Budget { refusal, line, model, .. } => Stop::Budget(budget_reason(*line, model.as_deref(), refusal)),
        Halt::Store(_) => Stop::Journal,
        Halt::GaveUp { after, last } => Stop::GaveUp(format!(
            "gave up: the server at {url} has been unreachable for longer than --give-up-after {} ({last}); \
             run the same command again to resume",
            human_duration(*after)
        )),
        Halt::Closed(reason) => Stop::Fatal(reason.clone()),
        other => Stop::Fatal(other.to_string()),
    }
}

/// Why `--max-cost` stopped the batch at line `line`.
fn budget_reason(line: usize, model: Option<&str>, refusal: &Refusal) -> String {
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
            model.unwrap_or("(none)")
        ),
    }
}
