//! The batch's own work per line, without the network, for `benches/pipeline.rs`:
//! what `runware batch` does for each line besides the engine's part.

use crate::input::Task;
use crate::progress::Progress;
use crate::reader::{self, Item};
use runware_jobs::identity;
use runware_jobs::record::{AttemptRecord, Entry, Record, now_ms};
use runware_jobs::store::journal::Loaded;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Runs the batch pipeline over `input` as a fresh run would, journaling to
/// `journal`: the reader (read, parse, validate, derive the line's identity and
/// taskUUID, on its own thread as in a run), then per line the attempt (its frame
/// serialized as the engine would send it), its attempt record written and flushed
/// before the "send" (one flush per burst, as the journal writer does), an `ok`
/// result record, and the progress counters. Returns the lines that ran.
pub fn pipeline(input: &Path, journal: &Path) -> u64 {
    let base = input.parent().unwrap_or(Path::new(".")).to_path_buf();
    let total = reader::survey(input, &Loaded::default()).map(|s| s.to_run).unwrap_or(0);
    let progress = Progress::new(total, true);
    let batch = uuid::Uuid::new_v4();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut rx = reader::Items::new(rx);
    let reading = {
        let input = input.to_path_buf();
        std::thread::spawn(move || reader::read_lines(&input, &base, &Loaded::default(), batch, None, 16, tx))
    };
    let Ok(file) = std::fs::File::create(journal) else { return 0 };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    let mut frame = Vec::with_capacity(4096);
    let mut ran = 0u64;
    let mut burst = 0;
    while let Some(item) = rx.blocking_recv() {
        let Item::Run(job) = item else { continue };
        let uuid = job.own_uuid.unwrap_or_else(|| identity::attempt_uuid(batch, &job.key, 1));
        let wanted = job.task.wanted();
        let Ok(attempt) = job.task.for_attempt(uuid, wanted, None) else { continue };
        frame.clear();
        let encoded = match &attempt {
            Task::Kontext(k) => serde_json::to_writer(&mut frame, &**k),
            Task::Inference(i) => serde_json::to_writer(&mut frame, &**i),
            Task::Raw(r) => serde_json::to_writer(&mut frame, r.as_object()),
        };
        if encoded.is_err() {
            continue;
        }
        let record = AttemptRecord {
            key: job.key.clone(),
            line: job.line,
            attempt: 1,
            task_uuid: uuid,
            number_results: wanted,
            seed: None,
            sent_at_ms: now_ms(),
        };
        let _ = serde_json::to_writer(&mut out, &Entry::Attempt(record));
        let _ = out.write_all(b"\n");
        burst += 1;
        if burst == 64 {
            let _ = out.flush();
            burst = 0;
        }
        progress.submitted();
        progress.image(None);
        progress.attempt_ended();
        let mut result = Record::ok(job.key, job.line, uuid);
        result.attempts = Some(1);
        result.latency_ms = Some(0.5);
        let _ = serde_json::to_writer(&mut out, &Entry::Result(result));
        let _ = out.write_all(b"\n");
        progress.line_done(true, Some(Duration::from_micros(500)));
        ran += 1;
    }
    let _ = out.flush();
    let _ = reading.join();
    ran
}
