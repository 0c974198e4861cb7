//! The results file of a batch, which is also its journal.
//!
//! One JSON line per finished task, appended and flushed as each task ends. On
//! start, a batch reads the journal: tasks whose latest line is `ok`, or a final
//! error (a line that can never succeed as written), are skipped; every other task
//! is submitted again under the same taskUUID, which the server answers with
//! `conflictTaskUUID` if it already has it — the engine then recovers the results
//! with `getResponse` and nothing runs twice.

use super::error::CliError;
use crate::client::ImageResult;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;
use uuid::Uuid;

/// `ok` or `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every result arrived and was saved.
    Ok,
    /// The line or the task failed.
    Error,
}

/// One image of a finished task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `imageUUID`
    #[serde(rename = "imageUUID")]
    pub image_uuid: String,
    /// `imageURL`, for URL results.
    #[serde(rename = "imageURL", default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// Where the image was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The seed used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Cost in USD (with `includeCost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl ImageRecord {
    /// The record of an image saved at `path` (if it was).
    pub fn new(img: &ImageResult, path: Option<&Path>) -> ImageRecord {
        ImageRecord {
            image_uuid: img.image_uuid.to_string(),
            image_url: img.item.image_url.as_ref().map(|u| u.to_string()),
            path: path.map(|p| p.display().to_string()),
            seed: img.seed,
            cost: img.cost,
        }
    }
}

/// One line of the results file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The input line number (1-based).
    pub line: usize,
    /// The task's UUID (given in the line, or derived from it).
    #[serde(rename = "taskUUID")]
    pub task_uuid: Uuid,
    /// `ok` or `error`.
    pub status: Status,
    /// The images, for `ok` image tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRecord>,
    /// Result items of other task types, as received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<serde_json::Value>,
    /// The error code (the server's, or `invalidJson` / `invalidParameter` / … for bad lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The parameter at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// From submission to the last result.
    #[serde(rename = "latencyMs", default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// True when running the line again as it is cannot help (bad input, refused
    /// content): a resumed batch skips it.
    #[serde(rename = "final", default, skip_serializing_if = "std::ops::Not::not")]
    pub is_final: bool,
}

impl Record {
    /// An `ok` record.
    pub fn ok(line: usize, task_uuid: Uuid) -> Record {
        Record {
            line,
            task_uuid,
            status: Status::Ok,
            images: Vec::new(),
            results: Vec::new(),
            code: None,
            message: None,
            parameter: None,
            latency_ms: None,
            is_final: false,
        }
    }

    /// An `error` record.
    pub fn error(
        line: usize,
        task_uuid: Uuid,
        code: impl Into<String>,
        message: impl Into<String>,
        parameter: Option<String>,
        is_final: bool,
    ) -> Record {
        Record {
            status: Status::Error,
            code: Some(code.into()),
            message: Some(message.into()),
            parameter,
            is_final,
            ..Record::ok(line, task_uuid)
        }
    }

    /// True when a resumed batch must not run this task again.
    pub fn is_done(&self) -> bool {
        self.status == Status::Ok || self.is_final
    }
}

/// What an earlier run left in the journal: the latest record of each task.
#[derive(Debug, Default)]
pub struct Prior {
    /// taskUUID → latest record.
    pub records: HashMap<Uuid, Record>,
    /// Lines that could not be read (a write cut short by a crash).
    pub unreadable: usize,
}

impl Prior {
    /// The record that makes `task_uuid` done, if there is one.
    pub fn done(&self, task_uuid: &Uuid) -> Option<&Record> {
        self.records.get(task_uuid).filter(|r| r.is_done())
    }
}

/// Reads a journal (blocking). A missing file is an empty journal.
pub fn load(path: &Path) -> Result<Prior, CliError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Prior::default()),
        Err(source) => return Err(CliError::Read { path: path.to_path_buf(), source }),
    };
    let mut prior = Prior::default();
    let mut reader = std::io::BufReader::new(file);
    let mut buf = String::new();
    loop {
        buf.clear();
        match reader.read_line(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(source) => return Err(CliError::Read { path: path.to_path_buf(), source }),
        }
        if buf.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(buf.trim()) {
            Ok(r) => {
                prior.records.insert(r.task_uuid, r);
            }
            Err(_) => prior.unreadable += 1,
        }
    }
    Ok(prior)
}

/// Appends records to the journal from a blocking thread, flushing after each burst.
pub struct Writer {
    tx: mpsc::Sender<Record>,
    handle: tokio::task::JoinHandle<Result<u64, CliError>>,
}

impl Writer {
    /// Opens `path` for appending (creating it and its directory). A last line cut
    /// short by a crash is ended first, so that new records start on their own line.
    pub async fn open(path: PathBuf) -> Result<Writer, CliError> {
        let (tx, mut rx) = mpsc::channel::<Record>(256);
        let file = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open_append(&path))
                .await
                .map_err(|e| CliError::Other(format!("opening the journal failed: {e}")))??
        };
        let handle = tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(file);
            let mut written = 0u64;
            let fail = |source| CliError::Write { path: path.clone(), source };
            while let Some(first) = rx.blocking_recv() {
                let mut next = Some(first);
                while let Some(record) = next {
                    let line = serde_json::to_string(&record)
                        .map_err(|e| CliError::Other(format!("cannot encode a journal record: {e}")))?;
                    out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")).map_err(fail)?;
                    written += 1;
                    next = rx.try_recv().ok();
                }
                out.flush().map_err(fail)?;
            }
            out.flush().map_err(fail)?;
            Ok(written)
        });
        Ok(Writer { tx, handle })
    }

    /// A sender for records.
    pub fn sender(&self) -> mpsc::Sender<Record> {
        self.tx.clone()
    }

    /// Writes what is queued, flushes and closes. Returns the records written.
    pub async fn finish(self) -> Result<u64, CliError> {
        drop(self.tx);
        self.handle.await.map_err(|e| CliError::Other(format!("the journal writer failed: {e}")))?
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, CliError> {
    let fail = |source| CliError::Write { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let needs_newline = last_byte(path).is_some_and(|b| b != b'\n');
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(fail)?;
    if needs_newline {
        file.write_all(b"\n").map_err(fail)?;
    }
    Ok(file)
}

fn last_byte(path: &Path) -> Option<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::End(-1)).ok()?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).ok()?;
    Some(b[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_record_wins_and_torn_lines_are_tolerated() {
        let dir = std::env::temp_dir().join(format!("rw-journal-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let lines = [
            serde_json::to_string(&Record::error(1, a, "timeout", "t", None, false)).unwrap(),
            serde_json::to_string(&Record::ok(1, a)).unwrap(),
            serde_json::to_string(&Record::error(2, b, "invalidJson", "bad", None, true)).unwrap(),
            serde_json::to_string(&Record::error(3, c, "closed", "x", None, false)).unwrap(),
        ];
        std::fs::write(&path, format!("{}\n{{\"line\":4,\"taskUU", lines.join("\n"))).unwrap();
        let prior = load(&path).unwrap();
        assert!(prior.done(&a).is_some());
        assert!(prior.done(&b).is_some());
        assert!(prior.done(&c).is_none());
        assert_eq!(prior.unreadable, 1);
        // Appending after a torn line starts a fresh line.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let w = Writer::open(path.clone()).await.unwrap();
            w.sender().send(Record::ok(3, c)).await.unwrap();
            assert_eq!(w.finish().await.unwrap(), 1);
        });
        let prior = load(&path).unwrap();
        assert!(prior.done(&c).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
