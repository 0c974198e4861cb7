//! The one place that decides what happens after an attempt ends: a pure function
//! of the attempt's outcome, the job's history and the [`RetryPolicy`]
//! ([`decide`]). The runner, the batch and the fleet act on its [`Decision`];
//! none of them re-decides.
//!
//! The rules, in order of importance:
//! - A new taskUUID only after the server **reported** a failure
//!   ([`Failure::Reported`]): the failed attempt cannot run again, so the next
//!   one cannot bill twice.
//! - An **unknown outcome** ([`Failure::Unknown`]: a client deadline, a lost
//!   socket, a crash) is recovered under the **same** taskUUID, never a new one:
//!   the server answers `conflictTaskUUID` and its results are fetched.
//! - A rate-limited attempt may or may not be registered by the server: it is
//!   sent once more under its own taskUUID; only a second rate limit on it
//!   closes it.
//! - Partial results are kept: the next attempt asks for the missing count.
//! - An account failure (key refused, no credits) stops every job of the runner.

use runware_ws::client::ClientError;
use runware_ws::protocol::{ErrorKind, RetryAdvice};
use std::time::Duration;

/// The server's code for a reference image it does not know (an upload it forgot).
pub const FORGOTTEN_REFERENCE: &str = "invalidReferenceImage";

/// How many times, and how patiently, a job is retried. A plain value: the
/// runner, the batch and the fleet read it; [`decide`] applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// New attempts after server-reported failures (rate limits not counted).
    /// Default 3.
    pub retries: u32,
    /// Rate-limited attempts allowed per job (they do not use up `retries`).
    /// Default 20.
    pub max_rate_limited: u32,
    /// Recoveries of an unknown outcome per run before the job is left pending;
    /// `None` (the default) recovers for as long as it takes.
    pub max_recoveries: Option<u32>,
    /// The first wait between attempts; doubled each time. Default 2 s.
    pub backoff: Duration,
    /// The longest wait between attempts. Default 60 s.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 3,
            max_rate_limited: 20,
            max_recoveries: None,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `n` (1-based): `backoff` doubled each time, at
    /// most `max_backoff`, times a factor in [0.5, 1.5) drawn from `unit_random`
    /// (a number in [0, 1)).
    pub fn wait(&self, n: u32, unit_random: f64) -> Duration {
        let doubled = self.backoff.saturating_mul(1u32 << n.saturating_sub(1).min(16));
        doubled.min(self.max_backoff).mul_f64(0.5 + unit_random.clamp(0.0, 1.0))
    }
}

/// How an attempt failed, in the terms the decision needs (see [`Failure::of`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The server reported the attempt failed in a way a new attempt may get past.
    Reported {
        /// The server's code.
        code: String,
        /// The server's message.
        message: String,
        /// The code was a rate limit.
        rate_limited: bool,
    },
    /// The outcome is unknown: the task may have run.
    Unknown {
        /// What happened, in words.
        message: String,
    },
    /// The account must be fixed first (key refused, no credits, quota).
    Account {
        /// The server's code.
        code: String,
        /// The server's message.
        message: String,
        /// The server failed the task itself (so a later attempt needs a new taskUUID).
        task_failed: bool,
    },
    /// The server no longer knows a reference image the attempt used.
    ForgottenReference {
        /// The server's message.
        message: String,
    },
    /// Refused for good: the same request fails the same way.
    Final {
        /// The code (the server's, or ours for a failure that is not the server's).
        code: String,
        /// The message.
        message: String,
        /// The parameter at fault.
        parameter: Option<String>,
    },
}

impl Failure {
    /// Classifies a client error: what [`ClientError::retry_advice`] says, with the
    /// code and message kept.
    pub fn of(e: &ClientError) -> Failure {
        let (code, message) = code_and_message(e);
        match e.retry_advice() {
            RetryAdvice::NewTaskUuid => {
                Failure::Reported { code, message, rate_limited: e.api_kind() == Some(ErrorKind::RateLimit) }
            }
            RetryAdvice::SameTaskUuid | RetryAdvice::Resubmit => Failure::Unknown { message: e.to_string() },
            RetryAdvice::FixAccount => {
                Failure::Account { code, message, task_failed: matches!(e, ClientError::Api(_)) }
            }
            _ if code == FORGOTTEN_REFERENCE => Failure::ForgottenReference { message },
            _ => {
                let parameter = match e {
                    ClientError::Api(api) => api.parameter.as_ref().map(ToString::to_string),
                    ClientError::Validation(v) => v.violations.first().map(|v| v.parameter.clone()),
                    _ => None,
                };
                Failure::Final { code, message, parameter }
            }
        }
    }

    /// The code, for records (`unknownOutcome` for an unknown outcome).
    pub fn code(&self) -> &str {
        match self {
            Failure::Reported { code, .. } | Failure::Account { code, .. } | Failure::Final { code, .. } => code,
            Failure::Unknown { .. } => "unknownOutcome",
            Failure::ForgottenReference { .. } => FORGOTTEN_REFERENCE,
        }
    }

    /// The message, for records.
    pub fn message(&self) -> &str {
        match self {
            Failure::Reported { message, .. }
            | Failure::Unknown { message }
            | Failure::Account { message, .. }
            | Failure::ForgottenReference { message }
            | Failure::Final { message, .. } => message,
        }
    }
}

/// The server's code and message (or ours, for a failure that is not the server's).
pub fn code_and_message(e: &ClientError) -> (String, String) {
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

/// What the job has been through, as far as the decision is concerned. The
/// counts are of this run (a fleet delivery, a batch run, a runner's run of the
/// job); `have` and `wanted` are over every run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Results the job asks for.
    pub wanted: u32,
    /// Results received so far (every attempt, every run), each once.
    pub have: u32,
    /// Server-reported failures other than rate limits.
    pub failures: u32,
    /// Rate-limited attempts.
    pub rate_limited: u32,
    /// Unknown outcomes recovered.
    pub recoveries: u32,
    /// The failed attempt was already sent again once after a rate limit.
    pub resent_after_rate_limit: bool,
    /// The job's references were already uploaded again once.
    pub reuploaded: bool,
    /// The failed attempt referenced uploads this runner made.
    pub uses_uploads: bool,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Every result is in: the job is done (a failure after the last image changes
    /// nothing).
    Done,
    /// Send the same attempt again under its own taskUUID after retry wait number
    /// `wait` (a rate limit the server may have registered: a conflict then
    /// recovers it).
    ResendSame {
        /// The retry number whose [`RetryPolicy::wait`] to wait.
        wait: u32,
    },
    /// Recover the same attempt under its taskUUID once the connection is back.
    Recover,
    /// Record the failure, then a new attempt under the next taskUUID for the
    /// missing results.
    NextAttempt {
        /// The retry number whose [`RetryPolicy::wait`] to wait (0: at once).
        wait: u32,
        /// Upload the job's references again first (the server forgot them).
        reupload: bool,
    },
    /// Stop every job of the runner: the account must be fixed. The failure is
    /// recorded first when the server failed the task (`record_failure`), so the
    /// next run uses a new taskUUID.
    StopForAccount {
        /// The server failed the task itself.
        record_failure: bool,
    },
    /// The job ends with this error. `is_final`: running it again as it is cannot
    /// help; otherwise the retries are used up (a later run may try again).
    Fail {
        /// Refused for good.
        is_final: bool,
    },
    /// The outcome is still unknown after the recoveries a run allows: left open
    /// (pending) for a later run, under the same taskUUID.
    LeavePending,
}

/// The decision after an attempt failed with `failure`, given the job's
/// `history` (counts before this failure), and the history after it.
pub fn decide(policy: &RetryPolicy, history: &History, failure: &Failure) -> (Decision, History) {
    let mut h = *history;
    let decision = match failure {
        Failure::Reported { rate_limited, .. } => {
            // A rate-limited taskUUID may or may not be registered (protocol.md §7.1):
            // sent once more under the same UUID first.
            let resend_same = *rate_limited && !history.resent_after_rate_limit;
            let (tries, budget) = if *rate_limited {
                h.rate_limited += 1;
                (h.rate_limited, policy.max_rate_limited)
            } else {
                h.failures += 1;
                (h.failures, policy.retries)
            };
            h.resent_after_rate_limit = resend_same;
            if tries > budget {
                Decision::Fail { is_final: false }
            } else if h.have >= h.wanted {
                Decision::Done
            } else if resend_same {
                Decision::ResendSame { wait: tries }
            } else {
                Decision::NextAttempt { wait: tries, reupload: false }
            }
        }
        Failure::Unknown { .. } => {
            h.recoveries += 1;
            if policy.max_recoveries.is_some_and(|max| h.recoveries > max) {
                Decision::LeavePending
            } else {
                Decision::Recover
            }
        }
        Failure::Account { task_failed, .. } => {
            h.resent_after_rate_limit = false;
            Decision::StopForAccount { record_failure: *task_failed }
        }
        Failure::ForgottenReference { .. } if !history.reuploaded && history.uses_uploads => {
            h.reuploaded = true;
            h.resent_after_rate_limit = false;
            Decision::NextAttempt { wait: 0, reupload: true }
        }
        Failure::ForgottenReference { .. } | Failure::Final { .. } => Decision::Fail { is_final: true },
    };
    (decision, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runware_ws::protocol::ApiError;

    fn reported(rate_limited: bool) -> Failure {
        Failure::Reported { code: "c".into(), message: "m".into(), rate_limited }
    }

    fn unknown() -> Failure {
        Failure::Unknown { message: "lost".into() }
    }

    fn account(task_failed: bool) -> Failure {
        Failure::Account { code: "insufficientCredits".into(), message: "m".into(), task_failed }
    }

    fn forgotten() -> Failure {
        Failure::ForgottenReference { message: "m".into() }
    }

    fn refused() -> Failure {
        Failure::Final { code: "invalidPrompt".into(), message: "m".into(), parameter: Some("positivePrompt".into()) }
    }

    /// A job of 2 images with 1 received, and the given counts.
    fn h(failures: u32, rate_limited: u32, recoveries: u32) -> History {
        History { wanted: 2, have: 1, failures, rate_limited, recoveries, ..History::default() }
    }

    #[test]
    fn every_outcome_and_history_has_one_decision() {
        let policy = RetryPolicy { retries: 2, max_rate_limited: 3, max_recoveries: Some(2), ..RetryPolicy::default() };
        let resent = History { resent_after_rate_limit: true, ..h(0, 1, 0) };
        let all_in = History { have: 2, ..h(0, 0, 0) };
        let with_uploads = History { uses_uploads: true, ..h(0, 0, 0) };
        let reuploaded = History { uses_uploads: true, reuploaded: true, ..h(0, 0, 0) };
        use Decision::*;
        #[rustfmt::skip]
        let table: Vec<(&str, History, Failure, Decision)> = vec![
            ("a reported failure: a new taskUUID after wait 1", h(0, 0, 0), reported(false), NextAttempt { wait: 1, reupload: false }),
            ("the second: wait 2", h(1, 0, 0), reported(false), NextAttempt { wait: 2, reupload: false }),
            ("retries used up: failed, not final", h(2, 0, 0), reported(false), Fail { is_final: false }),
            ("after the last image: done", all_in, reported(false), Done),
            ("a first rate limit: the same taskUUID again", h(0, 0, 0), reported(true), ResendSame { wait: 1 }),
            ("a rate limit on the resent UUID: a new one", resent, reported(true), NextAttempt { wait: 2, reupload: false }),
            ("rate limits do not use retries", h(2, 1, 0), reported(true), ResendSame { wait: 2 }),
            ("rate limits have their own bound", h(0, 3, 0), reported(true), Fail { is_final: false }),
            ("unknown: recovered under the same UUID", h(0, 0, 0), unknown(), Recover),
            ("unknown past the run's recoveries: pending", h(0, 0, 2), unknown(), LeavePending),
            ("unknown after every image: still recovered", all_in, unknown(), Recover),
            ("account, task failed on the server", h(0, 0, 0), account(true), StopForAccount { record_failure: true }),
            ("account, before the server", h(0, 0, 0), account(false), StopForAccount { record_failure: false }),
            ("a forgotten upload: uploaded again, new attempt", with_uploads, forgotten(), NextAttempt { wait: 0, reupload: true }),
            ("forgotten again after a re-upload: final", reuploaded, forgotten(), Fail { is_final: true }),
            ("forgotten, but nothing was uploaded: final", h(0, 0, 0), forgotten(), Fail { is_final: true }),
            ("refused for good: final", h(0, 0, 0), refused(), Fail { is_final: true }),
        ];
        for (what, history, failure, want) in table {
            let (got, _) = decide(&policy, &history, &failure);
            assert_eq!(got, want, "{what}");
        }
        let unbounded = RetryPolicy::default();
        assert_eq!(decide(&unbounded, &h(0, 0, 1_000_000), &unknown()).0, Recover, "no bound: recover for ever");
    }

    #[test]
    fn the_history_after_counts_what_happened() {
        let policy = RetryPolicy::default();
        let (_, after) = decide(&policy, &h(0, 0, 0), &reported(true));
        assert_eq!((after.rate_limited, after.resent_after_rate_limit), (1, true));
        let (d, after) = decide(&policy, &after, &reported(true));
        assert_eq!(d, Decision::NextAttempt { wait: 2, reupload: false });
        assert_eq!((after.rate_limited, after.resent_after_rate_limit), (2, false));
        let (_, after) = decide(&policy, &after, &reported(false));
        assert_eq!(after.failures, 1);
        let (_, after) = decide(&policy, &after, &unknown());
        assert_eq!(after.recoveries, 1);
        let uploads = History { uses_uploads: true, ..after };
        assert!(decide(&policy, &uploads, &forgotten()).1.reuploaded);
    }

    #[test]
    fn errors_are_classified_as_their_retry_advice_says() {
        let api = |code: &str| ClientError::Api(Box::new(ApiError::new(code, "m")));
        assert!(matches!(Failure::of(&api("timeoutProvider")), Failure::Reported { rate_limited: false, .. }));
        assert!(matches!(Failure::of(&api("requestRateLimitExceeded")), Failure::Reported { rate_limited: true, .. }));
        assert!(matches!(Failure::of(&ClientError::Closed), Failure::Unknown { .. }));
        assert!(matches!(Failure::of(&api("conflictTaskUUID")), Failure::Unknown { .. }));
        assert!(matches!(Failure::of(&api("insufficientCredits")), Failure::Account { task_failed: true, .. }));
        let auth = ClientError::Auth(Box::new(ApiError::new("invalidApiKey", "m")));
        assert!(matches!(Failure::of(&auth), Failure::Account { task_failed: false, .. }));
        assert!(matches!(Failure::of(&api(FORGOTTEN_REFERENCE)), Failure::ForgottenReference { .. }));
        let refused =
            ClientError::Api(Box::new(ApiError::new("invalidPositivePrompt", "m").with_parameter("positivePrompt")));
        assert_eq!(
            Failure::of(&refused),
            Failure::Final {
                code: "invalidPositivePrompt".into(),
                message: "m".into(),
                parameter: Some("positivePrompt".into())
            }
        );
    }

    #[test]
    fn waits_double_with_jitter_and_are_capped() {
        let p = RetryPolicy { backoff: Duration::from_secs(2), ..RetryPolicy::default() };
        assert_eq!(p.wait(1, 0.0), Duration::from_secs(1));
        assert_eq!(p.wait(1, 0.5), Duration::from_secs(2));
        assert_eq!(p.wait(3, 0.5), Duration::from_secs(8));
        assert_eq!(p.wait(30, 0.5), p.max_backoff);
        assert!(p.wait(30, 0.999) < p.max_backoff.mul_f64(1.5));
    }
}
