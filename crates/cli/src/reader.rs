//! Reading the input: every non-blank line with its identity, then what the
//! batch does with it (skip it as done, report it as bad, or run it).

use crate::error::CliError;
use crate::input::{self, LineError, Task};
use runware_jobs::identity::{self, Identities, IdentityError, JobKey as LineKey};
use runware_jobs::record::{AttemptRecord, Entry, Record, Status, now_ms};
use runware_jobs::references::SharedRefs;
use runware_jobs::store::journal::Loaded;
use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use tokio::sync::mpsc;
use uuid::Uuid;

/// One non-blank line of the input, read and identified.
pub struct Scanned {
    /// 1-based.
    pub line: usize,
    /// The line (with invalid UTF-8 replaced).
    pub text: String,
    /// The parsed line, or why it does not parse.
    pub parsed: Result<Value, LineError>,
    /// Its identity.
    pub key: LineKey,
    /// Whether its own `id` is acceptable.
    pub identity: Result<(), IdentityError>,
}

/// The lines of an input file, in order.
pub struct Lines {
    reader: std::io::BufReader<std::fs::File>,
    path: std::path::PathBuf,
    buf: Vec<u8>,
    line: usize,
    ids: Identities,
}

impl Lines {
    /// Opens `path` (blocking).
    pub fn open(path: &Path) -> Result<Lines, CliError> {
        let f = std::fs::File::open(path).map_err(|source| CliError::Read { path: path.to_path_buf(), source })?;
        Ok(Lines {
            reader: std::io::BufReader::with_capacity(1 << 20, f),
            path: path.to_path_buf(),
            buf: Vec::new(),
            line: 0,
            ids: Identities::default(),
        })
    }

    /// The next non-blank line (blocking).
    pub fn next_line(&mut self) -> Result<Option<Scanned>, CliError> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| CliError::Read { path: self.path.clone(), source })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            while self.buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                self.buf.pop();
            }
            let (text, parsed) = match std::str::from_utf8(&self.buf) {
                Ok(t) => (t.to_string(), input::parse_json(t)),
                Err(e) => {
                    let error = LineError {
                        code: "invalidJson",
                        parameter: None,
                        message: format!("the line is not UTF-8 (at byte {})", e.valid_up_to()),
                    };
                    (String::from_utf8_lossy(&self.buf).into_owned(), Err(error))
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            let (key, identity) = self.ids.next(self.line, parsed.as_ref().ok(), &text);
            return Ok(Some(Scanned { line: self.line, text, parsed, key, identity }));
        }
    }
}

/// What the first pass over the input found.
#[derive(Debug, Default)]
pub struct Survey {
    /// Lines to run.
    pub to_run: u64,
    /// Lines done `ok` in an earlier run.
    pub done_ok: u64,
    /// Lines ended with a final error in an earlier run.
    pub done_failed: u64,
}

/// Counts the lines to run and those already done (blocking).
pub fn survey(path: &Path, journal: &Loaded) -> Result<Survey, CliError> {
    if journal.lines.is_empty() {
        // Nothing is done yet: every non-blank line runs, and counting them needs
        // neither parsing nor identities.
        return Ok(Survey { to_run: count_non_blank(path)?, ..Survey::default() });
    }
    let mut lines = Lines::open(path)?;
    let mut survey = Survey::default();
    while let Some(s) = lines.next_line()? {
        match journal.line(&s.key).and_then(|l| l.result.as_ref()).filter(|r| r.is_done()) {
            Some(r) if r.status == Status::Ok => survey.done_ok += 1,
            Some(_) => survey.done_failed += 1,
            None => survey.to_run += 1,
        }
    }
    Ok(survey)
}

/// The non-blank lines of `path`, as [`Lines`] sees them (blocking).
fn count_non_blank(path: &Path) -> Result<u64, CliError> {
    let fail = |source| CliError::Read { path: path.to_path_buf(), source };
    let f = std::fs::File::open(path).map_err(fail)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, f);
    let (mut buf, mut n) = (Vec::new(), 0u64);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(fail)? == 0 {
            return Ok(n);
        }
        n += u64::from(!String::from_utf8_lossy(&buf).trim().is_empty());
    }
}

/// A line to run.
#[derive(Debug)]
pub struct LineJob {
    /// 1-based line number in this run.
    pub line: usize,
    /// Its identity.
    pub key: LineKey,
    /// The task as the line states it (under its first attempt's taskUUID).
    pub task: Task,
    /// The line's own `taskUUID`, if it gives one: its first attempt's.
    pub own_uuid: Option<Uuid>,
    /// Its first attempt's taskUUID: its own, else derived from (batch, identity, 1)
    /// (derived once, here, for the runner too).
    pub first_uuid: Uuid,
}

/// What the reader hands the submit loop, one per non-blank line.
pub enum Item {
    /// Done in an earlier run (per the journal).
    Skip { ok: bool },
    /// Cannot run as written.
    Invalid { line: usize, key: LineKey, task_uuid: Uuid, error: LineError },
    /// Ready to run.
    Run(Box<LineJob>),
}

/// The reader: one [`Item`] per non-blank line, in chunks of up to `chunk` into a
/// bounded channel (blocking thread). A chunk goes as soon as it is full, or at
/// once when the submit loop has nothing queued: one hand-off (and at most one
/// wake-up) per chunk rather than per line, without delaying the first task.
/// With `interned`, each line's inline references are kept there once (hashing a
/// reference happens here, on the blocking thread, not on the runtime).
pub fn read_lines(
    path: &Path,
    base_dir: &Path,
    journal: &Loaded,
    batch_id: Uuid,
    interned: Option<&SharedRefs>,
    chunk: usize,
    tx: mpsc::Sender<Vec<Item>>,
) -> Result<(), CliError> {
    let mut lines = Lines::open(path)?;
    let mut own_uuids: HashMap<Uuid, usize> = HashMap::new();
    let mut items = Vec::with_capacity(chunk);
    while let Some(s) = lines.next_line()? {
        let item = match (classify(s, base_dir, journal, batch_id, &mut own_uuids), interned) {
            (Item::Run(mut job), Some(refs)) => {
                job.task = refs.intern(job.task);
                Item::Run(job)
            }
            (item, _) => item,
        };
        items.push(item);
        if (items.len() >= chunk || tx.capacity() == tx.max_capacity())
            && tx.blocking_send(std::mem::replace(&mut items, Vec::with_capacity(chunk))).is_err()
        {
            return Ok(());
        }
    }
    if !items.is_empty() {
        let _ = tx.blocking_send(items);
    }
    Ok(())
}

fn classify(
    s: Scanned,
    base_dir: &Path,
    journal: &Loaded,
    batch_id: Uuid,
    own_uuids: &mut HashMap<Uuid, usize>,
) -> Item {
    let prior = journal.line(&s.key);
    if let Some(r) = prior.and_then(|p| p.result.as_ref()).filter(|r| r.is_done()) {
        return Item::Skip { ok: r.status == Status::Ok };
    }
    let first_uuid = identity::attempt_uuid(batch_id, &s.key, 1);
    let invalid = |error| Item::Invalid { line: s.line, key: s.key.clone(), task_uuid: first_uuid, error };
    let value = match s.parsed {
        Ok(v) => v,
        Err(error) => return invalid(error),
    };
    match &s.identity {
        Ok(()) => {}
        Err(IdentityError::NotAString(got)) => {
            return invalid(LineError {
                code: "invalidParameter",
                parameter: Some("id".into()),
                message: format!("id: must be a non-empty string that names the line (got {got})"),
            });
        }
        Err(IdentityError::Duplicate { id, first_line }) => {
            return invalid(LineError {
                code: "invalidParameter",
                parameter: Some("id".into()),
                message: format!("id: must be unique in the file (got {id:?}, already on line {first_line})"),
            });
        }
    }
    let own_uuid = match input::task_uuid_of(&value) {
        Ok(u) => u,
        Err(error) => return invalid(error),
    };
    if let Some(u) = own_uuid
        && let Some(first) = own_uuids.insert(u, s.line)
    {
        own_uuids.insert(u, first);
        return invalid(LineError {
            code: "invalidParameter",
            parameter: Some("taskUUID".into()),
            message: format!("taskUUID: must be unique in the batch (got {u}, already on line {first})"),
        });
    }
    match input::build(value, own_uuid.unwrap_or(first_uuid), base_dir) {
        Ok(task) => Item::Run(Box::new(LineJob {
            line: s.line,
            key: s.key,
            task,
            own_uuid,
            first_uuid: own_uuid.unwrap_or(first_uuid),
        })),
        Err(error) => invalid(error),
    }
}

/// The reader's chunks, one [`Item`] at a time.
pub struct Items {
    rx: mpsc::Receiver<Vec<Item>>,
    queued: std::vec::IntoIter<Item>,
}

impl Items {
    /// The items of the chunks `rx` receives.
    pub fn new(rx: mpsc::Receiver<Vec<Item>>) -> Items {
        Items { rx, queued: Vec::new().into_iter() }
    }

    /// The next item; `None` once the reader is done.
    pub async fn recv(&mut self) -> Option<Item> {
        loop {
            if let Some(i) = self.queued.next() {
                return Some(i);
            }
            self.queued = self.rx.recv().await?.into_iter();
        }
    }

    /// [`Items::recv`] off the runtime.
    pub fn blocking_recv(&mut self) -> Option<Item> {
        loop {
            if let Some(i) = self.queued.next() {
                return Some(i);
            }
            self.queued = self.rx.blocking_recv()?.into_iter();
        }
    }
}

/// The records that carry a format-1 journal (no header, records keyed by
/// taskUUIDs derived from the input's path and line numbers) over to format 2
/// (blocking): a line done in it keeps its record under its identity; every other
/// line gets an `attempt` record with its format-1 taskUUID, so that it is resent
/// under that UUID — it may have been sent before — and never runs twice.
pub fn convert_legacy(path: &Path, canonical_input: &str, journal: &Loaded) -> Result<Vec<Entry>, CliError> {
    let mut lines = Lines::open(path)?;
    let mut out = Vec::new();
    let now = now_ms();
    while let Some(s) = lines.next_line()? {
        let own = s.parsed.as_ref().ok().and_then(|v| input::task_uuid_of(v).ok().flatten());
        let uuid = own.unwrap_or_else(|| identity::legacy_uuid(canonical_input, s.line, &s.text));
        match journal.legacy.get(&uuid) {
            Some(r) if r.is_done() => {
                out.push(Entry::Result(Record { key: Some(s.key), attempts: Some(1), ..r.clone() }));
            }
            _ => {
                let Ok(value) = &s.parsed else { continue };
                let count = ["numberResults", "promptVersions"]
                    .iter()
                    .find_map(|f| value.get(*f).and_then(Value::as_u64))
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1);
                out.push(Entry::Attempt(AttemptRecord {
                    key: s.key,
                    line: s.line,
                    attempt: 1,
                    task_uuid: uuid,
                    number_results: count,
                    seed: value.get("seed").and_then(Value::as_u64),
                    sent_at_ms: now,
                }));
            }
        }
    }
    Ok(out)
}

/// True when a format-1 journal's images were served from a loopback address:
/// it was most likely written against the embedded emulator.
pub fn legacy_looks_embedded(journal: &Loaded) -> bool {
    journal.legacy.values().flat_map(|r| r.images.iter()).filter_map(|i| i.image_url.as_deref()).any(|u| {
        let rest = u.strip_prefix("http://").unwrap_or("");
        rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_survey_counts_the_lines_the_reader_reads() {
        let path = std::env::temp_dir().join(format!("runware-survey-{}.jsonl", fastrand::u64(..)));
        let mut text =
            b"{\"positivePrompt\":\"a\"}\r\n\n   \n\t\r\nnot json\n\xff\xfe broken utf-8\n\xc2\xa0\n".to_vec();
        text.extend_from_slice(b"{\"positivePrompt\":\"b\"}");
        std::fs::write(&path, &text).unwrap();
        let mut lines = Lines::open(&path).unwrap();
        let mut read = 0;
        while lines.next_line().unwrap().is_some() {
            read += 1;
        }
        assert_eq!(read, 4, "two tasks, a line that is not JSON, one that is not UTF-8");
        assert_eq!(count_non_blank(&path).unwrap(), read);
        assert_eq!(survey(&path, &Loaded::default()).unwrap().to_run, read);
        let _ = std::fs::remove_file(&path);
    }
}
