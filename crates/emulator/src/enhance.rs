//! Running one accepted `promptEnhance` task: after the latency, `promptVersions`
//! distinct enhanced prompts, each at most `promptMaxLength` characters.

use super::failures::FailPlan;
use super::inference::{fail_injected, supervise};
use super::session::{Queued, Session};
use super::state::Shared;
use super::tasks::TaskRecord;
use super::validate::{EnhanceParams, PROMPT_ENHANCE};
use rand::seq::SliceRandom as _;
use serde_json::json;
use std::sync::Arc;

/// What one enhanced prompt costs (USD), as reported with `includeCost`.
const COST: f64 = 0.0024;

/// Openers: distinct within their first [`MIN_LENGTH`] characters, so that texts
/// stay distinct however short `promptMaxLength` makes them.
const OPENERS: [&str; 8] = [
    "Cinematic shot:",
    "Dreamy scene:",
    "Vivid photo:",
    "Moody frame:",
    "Painterly view:",
    "Minimal study:",
    "Ethereal image:",
    "Dramatic still:",
];
/// Closers, appended after the prompt when there is room.
const CLOSERS: [&str; 5] = [
    "soft volumetric light, rich detail, 8k",
    "golden hour glow, shallow depth of field",
    "high contrast, crisp textures, award-winning composition",
    "muted palette, gentle film grain, wide angle",
    "studio lighting, sharp focus, intricate detail",
];
/// The shortest `promptMaxLength` accepted.
const MIN_LENGTH: usize = 12;

/// Runs the task to its end (texts, or an injected error), unless the emulator
/// shuts down.
pub(crate) async fn run(
    shared: Arc<Shared>,
    record: Arc<TaskRecord>,
    params: EnhanceParams,
    session: Option<Arc<Session>>,
    plan: Option<FailPlan>,
) {
    supervise(&shared, &record, execute(&shared, &record, &params, session.as_deref(), plan)).await;
}

async fn execute(
    shared: &Shared,
    record: &TaskRecord,
    p: &EnhanceParams,
    session: Option<&Session>,
    plan: Option<FailPlan>,
) {
    let latency = shared.sample_latency();
    record.set_latency(latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let n = p.versions.max(1);
    let fail_at = plan.as_ref().map(|plan| plan.after_results.min(n - 1));
    let texts = shared.with_rng(|r| {
        let mut openers = OPENERS;
        openers.shuffle(r);
        let mut closers = CLOSERS;
        closers.shuffle(r);
        (0..n as usize)
            .map(|i| enhanced(openers[i % OPENERS.len()], &p.prompt, closers[i % CLOSERS.len()], p.max_length))
            .collect::<Vec<_>>()
    });
    for (i, text) in (0..n).zip(texts) {
        if let (Some(plan), Some(at)) = (&plan, fail_at)
            && at == i
        {
            fail_injected(shared, record, session, PROMPT_ENHANCE, plan).await;
            return;
        }
        let mut item = json!({"taskType": PROMPT_ENHANCE, "taskUUID": p.task_uuid, "text": text});
        if p.include_cost {
            item["cost"] = json!(COST);
        }
        let json: Arc<str> = Arc::from(item.to_string());
        record.push_item(json.clone());
        if let Some(s) = session {
            s.deliver(Queued { json, is_error: false, index: i, total: n, buffered: false }, &shared.stats);
        }
    }
}

/// `opener prompt, closer`, cut to at most `max` characters (at least the opener's
/// first [`MIN_LENGTH`]).
fn enhanced(opener: &str, prompt: &str, closer: &str, max: usize) -> String {
    let full = format!("{opener} {}, {closer}", prompt.trim());
    let cut: String = full.chars().take(max.max(MIN_LENGTH)).collect();
    let trimmed = cut.trim_end_matches([' ', ',']);
    if trimmed.chars().count() >= MIN_LENGTH { trimmed.to_string() } else { cut }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_distinct_and_within_the_limit_even_when_short() {
        for max in [12, 20, 380] {
            let texts: Vec<_> = OPENERS.iter().map(|o| enhanced(o, "a cat on a roof", CLOSERS[0], max)).collect();
            for t in &texts {
                assert!(t.chars().count() <= max, "{t:?} longer than {max}");
            }
            let distinct: std::collections::HashSet<_> = texts.iter().collect();
            assert_eq!(distinct.len(), texts.len(), "{texts:?}");
        }
        let long = enhanced(OPENERS[0], "a cat on a roof", CLOSERS[0], 380);
        assert!(long.contains("a cat on a roof"), "{long}");
    }
}
