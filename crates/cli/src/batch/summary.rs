//! The summary of a run, printed at the end (`--json`: on stdout).

use super::Stop;
use crate::args::BatchArgs;
use crate::output::{Output, dollars, human_duration};
use crate::progress::{Percentiles, Progress};
use runware_ws::client::Client;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// What a run did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub input: String,
    pub results: String,
    pub out: String,
    pub ok: u64,
    pub failed: u64,
    /// Lines whose outcome is not known yet (they stay pending in the journal).
    pub pending: u64,
    /// New attempts made after failures the server reported.
    pub retries: u64,
    pub skipped_ok: u64,
    pub skipped_failed: u64,
    pub images: u64,
    /// Billed in this run (the server's reported costs), USD.
    pub cost: f64,
    /// Billed for the whole batch, earlier runs included, USD.
    pub batch_cost: f64,
    pub wall_seconds: f64,
    pub tasks_per_second: f64,
    pub images_per_second: f64,
    pub latency_ms: Percentiles,
    pub reconnects: u64,
    pub interrupted: bool,
    /// Why the run stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Same as `pending` (the name of format 1's summaries).
    pub not_finished: u64,
}

impl Summary {
    /// A summary of a run that did nothing.
    pub fn empty(args: &BatchArgs, results_path: &Path) -> Summary {
        Summary {
            input: args.file.as_deref().map(|f| f.display().to_string()).unwrap_or_default(),
            results: results_path.display().to_string(),
            out: args.out.display().to_string(),
            ok: 0,
            failed: 0,
            pending: 0,
            retries: 0,
            skipped_ok: 0,
            skipped_failed: 0,
            images: 0,
            cost: 0.0,
            batch_cost: 0.0,
            wall_seconds: 0.0,
            tasks_per_second: 0.0,
            images_per_second: 0.0,
            latency_ms: Percentiles::default(),
            reconnects: 0,
            interrupted: false,
            stopped: None,
            not_finished: 0,
        }
    }

    /// The summary of a run, from its counters.
    pub fn of_run(
        args: &BatchArgs,
        results_path: &Path,
        progress: &Progress,
        skipped_ok: u64,
        skipped_failed: u64,
        client: &Client,
        stop: &Stop,
    ) -> Summary {
        let secs = progress.elapsed().as_secs_f64().max(1e-6);
        let stopped = match stop {
            Stop::No => None,
            Stop::Interrupted(crate::signals::Signal::Interrupt) => Some("interrupted".to_string()),
            Stop::Interrupted(crate::signals::Signal::Terminate) => Some("terminated (SIGTERM)".to_string()),
            Stop::Fatal(r) | Stop::Account(r) | Stop::GaveUp(r) | Stop::Budget(r) => Some(r.clone()),
            Stop::Journal => Some("the journal cannot be written".to_string()),
        };
        Summary {
            ok: progress.ok(),
            failed: progress.failed(),
            pending: progress.pending(),
            retries: progress.retries(),
            skipped_ok,
            skipped_failed,
            images: progress.images(),
            cost: progress.cost(),
            wall_seconds: (secs * 1000.0).round() / 1000.0,
            tasks_per_second: ((progress.ok() + progress.failed()) as f64 / secs * 100.0).round() / 100.0,
            images_per_second: (progress.images() as f64 / secs * 100.0).round() / 100.0,
            latency_ms: progress.percentiles(),
            reconnects: client.metrics().reconnects,
            interrupted: matches!(stop, Stop::Interrupted(_)),
            stopped,
            not_finished: progress.pending(),
            ..Summary::empty(args, results_path)
        }
    }
}

/// Prints the summary: lines on stderr, or one JSON document on stdout with `--json`.
pub fn print(out: &Output, s: &Summary) {
    if out.json {
        out.json_value(s);
        return;
    }
    let mut lines = vec![format!(
        "{} {}: ok {} · failed {}{}{}",
        if s.interrupted { "Interrupted" } else { "Done" },
        s.input,
        s.ok,
        s.failed,
        if s.pending > 0 { format!(" · pending {}", s.pending) } else { String::new() },
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
    let batch = if (s.batch_cost - s.cost).abs() > 1e-9 {
        format!(" (batch total {})", dollars(s.batch_cost))
    } else {
        String::new()
    };
    lines.push(format!("  images      {} in {} · billed {}{batch}", s.images, s.out, dollars(s.cost)));
    lines.push(format!(
        "  wall time   {} · {:.2} tasks/s · {:.2} images/s",
        human_duration(Duration::from_secs_f64(s.wall_seconds)),
        s.tasks_per_second,
        s.images_per_second
    ));
    lines.push(format!(
        "  latency     p50 {} · p95 {} · p99 {}",
        human_latency(s.latency_ms.p50),
        human_latency(s.latency_ms.p95),
        human_latency(s.latency_ms.p99)
    ));
    lines.push(format!("  retries     {} · reconnects {}", s.retries, s.reconnects));
    lines.push(format!("  results     {}", s.results));
    if s.pending > 0 {
        lines.push(format!("  {} line(s) not finished: run the same command again to resume", s.pending));
    }
    for l in lines {
        out.notice(&l);
    }
}

/// A latency in ms as a person reads it: `0.412 ms`, `12.3 ms`, `2.4 s`.
fn human_latency(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.3} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        human_duration(Duration::from_secs_f64(ms / 1000.0))
    }
}
