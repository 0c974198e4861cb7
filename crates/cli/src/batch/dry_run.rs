//! `runware batch FILE --dry-run`: every line and every referenced file checked
//! as a run would check them, what is left to run counted and priced, nothing
//! sent (no connection, no emulator).

use super::{EXIT_OK, EXIT_USAGE, blocking};
use crate::error::CliError;
use crate::output::{Output, dollars};
use crate::reader::{self, Item};
use runware_jobs::store::journal::{self, Loaded};
use runware_ws::protocol::pricing;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;
use uuid::Uuid;

/// What the batch would do.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Estimate {
    /// Non-blank lines.
    lines: u64,
    /// Done in an earlier run, per the journal.
    done: u64,
    /// Lines that cannot run as written.
    invalid: u64,
    /// Tasks left to run, and the images they ask for.
    tasks: u64,
    images: u64,
    /// Images per `WxH` (image tasks that state a size).
    sizes: BTreeMap<String, u64>,
    /// The estimated cost of the tasks whose price is known, USD.
    estimated_cost: f64,
    /// Tasks whose model has no known price (not in the estimate).
    unpriced_tasks: u64,
}

pub async fn run(
    canonical: PathBuf,
    base_dir: PathBuf,
    results_path: PathBuf,
    max_cost: Option<f64>,
    out: &Output,
) -> Result<u8, CliError> {
    let loaded: Arc<Loaded> = {
        let p = results_path.clone();
        Arc::new(blocking(move || journal::load(&p).map_err(CliError::from)).await?)
    };
    let batch_id = loaded.header.as_ref().map_or(Uuid::nil(), |h| h.batch_id);
    let (tx, rx) = mpsc::channel(4);
    let mut rx = reader::Items::new(rx);
    let reader = {
        let (path, loaded) = (canonical.clone(), loaded.clone());
        tokio::task::spawn_blocking(move || reader::read_lines(&path, &base_dir, &loaded, batch_id, None, 16, tx))
    };
    let mut e = Estimate::default();
    let mut micros: u64 = 0;
    while let Some(item) = rx.recv().await {
        e.lines += 1;
        match item {
            Item::Skip { .. } => e.done += 1,
            Item::Invalid { line, error, .. } => {
                e.invalid += 1;
                out.error(&error.describe(line));
            }
            Item::Run(job) => {
                let wanted = job.task.wanted();
                e.tasks += 1;
                e.images += u64::from(wanted);
                if let Some(size) = job.task.size() {
                    *e.sizes.entry(size).or_default() += u64::from(wanted);
                }
                match job.task.estimate(wanted) {
                    Some(usd) => micros += (usd * 1e6).round() as u64,
                    None => e.unpriced_tasks += 1,
                }
            }
        }
    }
    reader.await.map_err(|err| CliError::Other(format!("the reader failed: {err}")))??;
    e.estimated_cost = micros as f64 / 1e6;

    if out.json {
        out.json_value(&serde_json::json!({ "dryRun": true, "input": canonical, "estimate": e, "maxCost": max_cost }));
    } else {
        out.line(&format!("Dry run of {}: nothing sent", canonical.display()));
        out.line(&format!(
            "  lines       {} ({} done per {}, {} invalid)",
            e.lines,
            e.done,
            results_path.display(),
            e.invalid
        ));
        out.line(&format!("  to run      {} tasks · {} images", e.tasks, e.images));
        if !e.sizes.is_empty() {
            let sizes: Vec<String> = e.sizes.iter().map(|(s, n)| format!("{s} ×{n}")).collect();
            out.line(&format!("  sizes       {}", sizes.join(", ")));
        }
        let unpriced = if e.unpriced_tasks > 0 {
            format!(" + {} task(s) of unknown price", e.unpriced_tasks)
        } else {
            String::new()
        };
        let kontext = pricing::price_per_image(runware_ws::protocol::kontext::MODEL).map(dollars).unwrap_or_default();
        out.line(&format!("  estimate    {}{unpriced} (bfl:3@1 at {kontext} per image)", dollars(e.estimated_cost)));
        if let Some(cap) = max_cost {
            let fits = if e.unpriced_tasks == 0 && e.estimated_cost + loaded.billed() <= cap {
                "fits"
            } else {
                "does not fit"
            };
            out.line(&format!(
                "  --max-cost  {}: {fits} (already billed per the journal {})",
                dollars(cap),
                dollars(loaded.billed())
            ));
        }
    }
    Ok(if e.invalid > 0 { EXIT_USAGE } else { EXIT_OK })
}
