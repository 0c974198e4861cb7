//! `runware conformance`: checks, against the configured endpoint, the server
//! behaviours this project's guarantees rest on and Runware does not document
//! (session resume and replay, conflictTaskUUID across connections, getResponse for
//! sync tasks, pong, error shapes, idle sockets), with a short fixed script of real
//! tasks (`checks.rs`) on raw sockets (`wire.rs`).
//!
//! It says what the script will cost and asks before spending (`--yes` skips the
//! question); the report it writes holds no key.

mod checks;
mod wire;

use crate::args::{ApiArgs, ConformanceArgs};
use crate::embedded::Endpoint;
use crate::error::CliError;
use crate::output::{Output, dollars};
use crate::{EXIT_FAILED, EXIT_OK};
use checks::{Check, EXPECTED_IMAGES, MAX_IMAGES, Script, Verdict};
use runware_ws::protocol::kontext::PRICE_PER_IMAGE;
use serde_json::json;
use std::io::BufRead;
use std::path::PathBuf;

/// Why the script could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// No WebSocket connection.
    #[error("{0}")]
    Connect(String),
    /// The key was refused.
    #[error("{0}")]
    Auth(String),
    /// The socket broke or the server sent something that is not the protocol.
    #[error("the connection failed mid-script: {0}")]
    Socket(String),
    /// The script's own tasks could not be made (a bug).
    #[error("cannot build the script's tasks: {0}")]
    Script(String),
}

pub async fn run(api: ApiArgs, args: ConformanceArgs, out: &Output) -> Result<u8, CliError> {
    let endpoint = Endpoint::resolve(&api, out).await?;
    let result = conform(&endpoint, &args, out).await;
    endpoint.shutdown().await;
    result
}

async fn conform(endpoint: &Endpoint, args: &ConformanceArgs, out: &Output) -> Result<u8, CliError> {
    let url = endpoint.url.clone();
    let (expected, most) = (f64::from(EXPECTED_IMAGES) * PRICE_PER_IMAGE, f64::from(MAX_IMAGES) * PRICE_PER_IMAGE);
    if endpoint.is_embedded() {
        out.notice("The script runs against the embedded emulator: nothing is billed.");
    } else {
        out.notice(&format!(
            "The conformance script sends {EXPECTED_IMAGES} Kontext [pro] tasks of one image each to {url}: about {} \
             (at most {MAX_IMAGES} images, {}, if the server runs a resent taskUUID again).",
            dollars(expected),
            dollars(most)
        ));
        if !args.yes && !confirm(out).await {
            out.error("not confirmed: nothing was sent (--yes skips the question)");
            return Ok(EXIT_FAILED);
        }
    }
    let key = endpoint.key().expose().to_string();
    let progress = |c: &Check| {
        if !out.is_json() {
            out.line(&format!("{:<15} {:<26} {}", c.verdict.label(), c.id, c.seen));
        }
    };
    let script = Script {
        url: &url,
        key: &key,
        task_timeout: args.task_timeout,
        wait: args.wait,
        idle: args.idle,
        progress: &progress,
    };
    let findings = checks::run(&script).await.map_err(|e| match e {
        ConformanceError::Connect(reason) => CliError::Connect { url: url.clone(), reason },
        ConformanceError::Auth(reason) => CliError::Auth { url: url.clone(), reason },
        other => CliError::Other(other.to_string()),
    })?;

    let count = |v: Verdict| findings.checks.iter().filter(|c| c.verdict == v).count();
    let differs = count(Verdict::Differs);
    let cost = if endpoint.is_embedded() { 0.0 } else { f64::from(findings.images) * PRICE_PER_IMAGE };
    let report = json!({
        "runware": env!("CARGO_PKG_VERSION"),
        "endpoint": url,
        "embedded": endpoint.is_embedded(),
        "finishedAtMs": runware_jobs::record::now_ms(),
        "images": findings.images,
        "estimatedCostUsd": cost,
        "holds": count(Verdict::Holds),
        "differs": differs,
        "couldNotTell": count(Verdict::CouldNotTell),
        "checks": findings.checks,
    });
    // The key was never put in the report; a server echoing it is scrubbed too.
    let text = serde_json::to_string_pretty(&report).unwrap_or_default().replace(&key, "[redacted]");
    let path = args
        .report
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runware-conformance-{}.json", runware_jobs::record::now_ms())));
    tokio::fs::write(&path, format!("{text}\n"))
        .await
        .map_err(|source| CliError::Write { path: path.clone(), source })?;
    if out.is_json() {
        out.line(&serde_json::to_string(&report).unwrap_or_default().replace(&key, "[redacted]"));
    } else {
        out.line(&format!(
            "{} hold, {differs} differ, {} could not tell; {} image(s), {}; report: {}",
            count(Verdict::Holds),
            count(Verdict::CouldNotTell),
            findings.images,
            dollars(cost),
            path.display()
        ));
        for c in findings.checks.iter().filter(|c| c.verdict == Verdict::Differs) {
            out.line(&format!("{}: {}", c.id, c.if_it_differs));
        }
    }
    Ok(if differs > 0 { EXIT_FAILED } else { EXIT_OK })
}

/// Asks on stderr and reads the answer from stdin; anything but yes is no.
async fn confirm(out: &Output) -> bool {
    out.notice("Spend it? [y/N]");
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await;
    matches!(answer, Ok(Ok(l)) if matches!(l.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
