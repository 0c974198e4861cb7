//! Injected task failures: the armed [`FailRule`]s and which accepted task each one
//! fails. Matching happens once, when a task is accepted; what it decides (a
//! [`FailPlan`]) travels with the task until it fires.

use super::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// Most rules armed at once; arming more forgets the oldest.
const MAX_RULES: usize = 256;
/// Most distinct prompts a [`FailMatch::PromptContains`] rule with a `times` budget
/// counts; prompts beyond are not failed (a warning is logged).
const MAX_PROMPTS: usize = 100_000;

/// A rule that fails accepted tasks (armed with
/// [`Fault::FailTasks`](super::Fault::FailTasks)).
///
/// A matching task runs normally until it has produced `after_results` results, then
/// fails with an `errors` item `{code, message, taskType, taskUUID}`; `getResponse`
/// then answers the results delivered so far and a `status:"error"` item, and the
/// taskUUID stays used (a resend is a `conflictTaskUUID`).
///
/// A rule made with [`FailRule::stall`] sends no error instead: the matching task
/// never ends (a server that lost it, or a request that wedges a worker). The client
/// sees only silence: the outcome stays unknown however long it waits, and a resend
/// under the same taskUUID is a conflict whose `getResponse` never completes.
#[derive(Clone, Debug, PartialEq)]
pub struct FailRule {
    /// The error code, e.g. `timeoutProvider`, `serviceUnavailable`,
    /// `requestRateLimitExceeded`, `insufficientCredits`, `contentPolicyViolation`.
    pub code: String,
    /// The error message.
    pub message: String,
    /// Which tasks fail.
    pub matching: FailMatch,
    /// Deliver this many results first, then fail (capped at the task's result
    /// count minus one).
    pub after_results: u32,
    /// How many tasks fail (see [`FailMatch`]); `None` is unlimited.
    pub times: Option<u32>,
    /// The task never ends instead of failing (`code` and `message` unused).
    pub stall: bool,
}

/// Which accepted tasks a [`FailRule`] fails.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FailMatch {
    /// The task with this taskUUID.
    TaskUuid(Uuid),
    /// Tasks whose prompt (`positivePrompt`, or `prompt` of `promptEnhance`) contains
    /// this text: the first `times` tasks of *each distinct prompt* fail (so "fail
    /// once per line" is `times = Some(1)`).
    PromptContains(String),
    /// Each accepted task fails with this probability (the emulator's seeded RNG);
    /// `times` caps the total.
    Probability(f64),
    /// The next `times` accepted tasks.
    Every,
}

impl FailRule {
    /// A rule failing `matching` tasks with `code`, before any result, without limit.
    pub fn new(code: impl Into<String>, matching: FailMatch) -> Self {
        let code = code.into();
        let message = format!("{code} (injected by the Runware emulator)");
        FailRule { code, message, matching, after_results: 0, times: None, stall: false }
    }

    /// A rule under which `matching` tasks never end: after `after_results` results
    /// (none unless [`after`](Self::after) says) they stay running, answering
    /// nothing more, until the emulator shuts down.
    pub fn stall(matching: FailMatch) -> Self {
        FailRule { stall: true, ..FailRule::new("stall", matching) }
    }

    /// Deliver `k` results before failing.
    pub fn after(mut self, k: u32) -> Self {
        self.after_results = k;
        self
    }

    /// Fail at most `n` tasks (per distinct prompt for
    /// [`FailMatch::PromptContains`]).
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// The error message.
    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = m.into();
        self
    }
}

/// What a matched rule decided for one task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FailPlan {
    pub code: String,
    pub message: String,
    /// Results to deliver before failing (not yet capped by the result count).
    pub after_results: u32,
    /// Never end instead of failing.
    pub stall: bool,
}

/// The facts about an accepted task that rules match on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<'a> {
    pub uuid: Uuid,
    pub prompt: &'a str,
}

/// One armed rule and what it has used of its budget.
#[derive(Debug)]
struct Armed {
    rule: FailRule,
    /// Tasks failed, over every prompt.
    fired: u32,
    /// Tasks failed per distinct prompt ([`FailMatch::PromptContains`] only).
    per_prompt: HashMap<String, u32>,
}

impl Armed {
    /// True when the rule can never fail a task again.
    fn spent(&self) -> bool {
        match (&self.rule.matching, self.rule.times) {
            (FailMatch::PromptContains(_), _) | (_, None) => false,
            (_, Some(n)) => self.fired >= n,
        }
    }

    /// Decides (and counts) whether this rule fails `task`; `roll` draws a uniform
    /// number in `0..1`.
    fn fires(&mut self, task: Candidate<'_>, roll: &mut dyn FnMut() -> f64) -> bool {
        if self.spent() {
            return false;
        }
        let hit = match &self.rule.matching {
            FailMatch::TaskUuid(u) => *u == task.uuid,
            FailMatch::Every => true,
            FailMatch::Probability(p) => *p > 0.0 && roll() < *p,
            FailMatch::PromptContains(text) => {
                if !task.prompt.contains(text.as_str()) {
                    false
                } else if let Some(n) = self.rule.times {
                    let full = self.per_prompt.len() >= MAX_PROMPTS;
                    match self.per_prompt.get_mut(task.prompt) {
                        Some(count) if *count >= n => false,
                        Some(count) => {
                            *count += 1;
                            true
                        }
                        None if n == 0 => false,
                        None if full => {
                            tracing::warn!("fail rule: too many distinct prompts counted; not failing a new one");
                            false
                        }
                        None => {
                            self.per_prompt.insert(task.prompt.to_string(), 1);
                            true
                        }
                    }
                } else {
                    true
                }
            }
        };
        if hit {
            self.fired = self.fired.saturating_add(1);
        }
        hit
    }
}

/// Every armed rule, in arming order.
#[derive(Debug, Default)]
pub(crate) struct FailRules {
    rules: Mutex<Vec<Armed>>,
}

impl FailRules {
    /// Arms `rule` after the others.
    pub fn arm(&self, rule: FailRule) {
        let mut rules = lock(&self.rules);
        rules.retain(|r| !r.spent());
        if rules.len() >= MAX_RULES {
            tracing::warn!("too many fail rules armed; forgetting the oldest");
            rules.remove(0);
        }
        rules.push(Armed { rule, fired: 0, per_prompt: HashMap::new() });
    }

    /// The plan of the first armed rule that fails `task`, if any. `roll` draws a
    /// uniform number in `0..1` (called only by probability rules).
    pub fn check(&self, task: Candidate<'_>, mut roll: impl FnMut() -> f64) -> Option<FailPlan> {
        let mut rules = lock(&self.rules);
        let mut plan = None;
        for r in rules.iter_mut() {
            if r.fires(task, &mut roll) {
                plan = Some(FailPlan {
                    code: r.rule.code.clone(),
                    message: r.rule.message.clone(),
                    after_results: r.rule.after_results,
                    stall: r.rule.stall,
                });
                break;
            }
        }
        rules.retain(|r| !r.spent());
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(prompt: &str) -> Candidate<'_> {
        Candidate { uuid: Uuid::new_v4(), prompt }
    }

    #[test]
    fn every_with_times_fails_exactly_that_many() {
        let rules = FailRules::default();
        rules.arm(FailRule::new("serviceUnavailable", FailMatch::Every).times(2).after(1));
        let plans: Vec<_> = (0..5).map(|_| rules.check(cand("x"), || 0.0)).collect();
        assert_eq!(plans.iter().filter(|p| p.is_some()).count(), 2);
        assert!(plans[0].as_ref().is_some_and(|p| p.after_results == 1 && p.code == "serviceUnavailable"));
        assert!(plans[2].is_none());
    }

    #[test]
    fn prompt_rules_count_each_distinct_prompt() {
        let rules = FailRules::default();
        rules.arm(FailRule::new("timeoutProvider", FailMatch::PromptContains("sky".into())).times(1));
        assert!(rules.check(cand("a red sky"), || 0.0).is_some());
        assert!(rules.check(cand("a red sky"), || 0.0).is_none());
        assert!(rules.check(cand("a blue sky"), || 0.0).is_some());
        assert!(rules.check(cand("a blue sea"), || 0.0).is_none());
    }

    #[test]
    fn first_match_wins_and_spent_rules_step_aside() {
        let rules = FailRules::default();
        let target = Uuid::new_v4();
        rules.arm(FailRule::new("first", FailMatch::TaskUuid(target)).times(1));
        rules.arm(FailRule::new("second", FailMatch::Probability(1.0)).times(1));
        let t = Candidate { uuid: target, prompt: "p" };
        assert_eq!(rules.check(t, || 0.5).map(|p| p.code).as_deref(), Some("first"));
        assert_eq!(rules.check(t, || 0.5).map(|p| p.code).as_deref(), Some("second"));
        assert!(rules.check(t, || 0.5).is_none());
    }

    #[test]
    fn probability_uses_the_roll() {
        let rules = FailRules::default();
        rules.arm(FailRule::new("x", FailMatch::Probability(0.5)));
        assert!(rules.check(cand("p"), || 0.6).is_none());
        assert!(rules.check(cand("p"), || 0.4).is_some());
        rules.arm(FailRule::new("never", FailMatch::Probability(0.0)));
        let fresh = FailRules::default();
        fresh.arm(FailRule::new("never", FailMatch::Probability(0.0)));
        assert!(fresh.check(cand("p"), || 0.0).is_none());
    }
}
