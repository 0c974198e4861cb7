//! The results file of a batch, which is also its journal.
//!
//! One JSON object per line, appended as things happen; each has a `type`:
//!
//! - `header` — the first record: the batch id (made on the first run), the
//!   endpoint the batch runs against (a URL, or `embedded emulator`) and the format
//!   version. A run against another endpoint refuses to use this journal.
//! - `attempt` — written and flushed **before** the attempt is sent: the line's
//!   identity, the attempt number, its taskUUID, how many results it asks for and
//!   with which seed, and when it was sent. A crash therefore never leaves an
//!   attempt the journal does not know, and a re-run resends it under the same
//!   taskUUID (the server answers `conflictTaskUUID` and its results are recovered).
//! - `image` — every image as soon as it is saved, whatever happens to its task
//!   later: paid images are never lost, and a re-run asks only for what is missing.
//! - `attemptFailed` — the server reported that an attempt failed; the next attempt
//!   runs under a new taskUUID.
//! - `result` — the line's outcome: `ok` with every image (of every attempt), or
//!   `error` with the server's code; `final: true` when running the line again as
//!   it is cannot help. The fields are those of format 1's records (`line`,
//!   `taskUUID`, `status`, `images`, `code`, `message`, `parameter`, `latencyMs`).
//!
//! Durability (group commit, [`Writer`]): the task that makes a record serializes
//! it into one shared buffer, and a writer thread writes the buffer in one `write`
//! — at once when an `attempt` record waits for it (the attempt is sent only after
//! that `write` returned, with every record appended before it), otherwise within
//! [`LINGER`] (10 ms), and at the end of the run. A crash of the process can
//! therefore lose at most the last 10 ms of `image`, `attemptFailed` and `result`
//! records, never an `attempt` record: a re-run resends those attempts under
//! their own taskUUIDs and recovers their results (`conflictTaskUUID`), so nothing
//! runs or is billed twice. The file is not `fsync`ed, so a power cut can lose the
//! last records too — the attempt rule still holds, because a lost attempt record
//! is re-derived from the same (batch id, identity, attempt).
//!
//! Format 1 (no header, one record per finished task keyed by taskUUID) is still
//! read: [`load`] reports it as [`Loaded::legacy`], and the batch converts it.

use crate::identity::JobKey;
pub use crate::record::now_ms;
use crate::record::{AttemptRecord, Entry, EntryRef, Header, JobState, Record};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// The journal cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The journal.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The journal cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The journal.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Anything else (a record that cannot be encoded, a writer that panicked).
    #[error("{0}")]
    Other(String),
}

/// The journal format this code writes.
pub const FORMAT_VERSION: u32 = 2;
/// The `endpoint` of a journal written against the embedded emulator.
pub const EMBEDDED_ENDPOINT: &str = "embedded emulator";

/// What an earlier run left in the journal.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The header; `None` for an empty journal or one in format 1.
    pub header: Option<Header>,
    /// Line identity → state.
    pub lines: HashMap<JobKey, JobState>,
    /// Format-1 records (journals without a header): taskUUID → latest record.
    pub legacy: HashMap<Uuid, Record>,
    /// Lines that could not be read (a write cut short by a crash).
    pub unreadable: usize,
    /// Reference content key → imageUUID of its upload (the latest).
    pub uploads: HashMap<Uuid, Uuid>,
}

impl Loaded {
    /// True when the file held nothing.
    pub fn is_empty(&self) -> bool {
        self.header.is_none() && self.lines.is_empty() && self.legacy.is_empty()
    }

    /// What earlier runs were billed, USD: the reported cost of every journaled image.
    pub fn billed(&self) -> f64 {
        self.lines.values().flat_map(|l| &l.images).filter_map(|i| i.cost).sum()
    }

    /// The state of line `key` (empty when the journal does not know it).
    pub fn line(&self, key: &str) -> Option<&JobState> {
        self.lines.get(key)
    }
}

/// Reads a journal (blocking). A missing file is an empty journal.
pub fn load(path: &Path) -> Result<Loaded, JournalError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::default()),
        Err(source) => return Err(JournalError::Read { path: path.to_path_buf(), source }),
    };
    let mut loaded = Loaded::default();
    let mut reader = std::io::BufReader::new(file);
    let mut buf = String::new();
    loop {
        buf.clear();
        match reader.read_line(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(source) => return Err(JournalError::Read { path: path.to_path_buf(), source }),
        }
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        if text.contains("\"type\"")
            && let Ok(entry) = serde_json::from_str::<Entry>(text)
        {
            match entry {
                Entry::Header(h) => {
                    if loaded.header.is_none() {
                        loaded.header = Some(h);
                    }
                }
                Entry::Upload(u) => {
                    loaded.uploads.insert(u.key, u.image_uuid);
                }
                other => {
                    let key = match &other {
                        Entry::Attempt(a) => Some(a.key.clone()),
                        Entry::Image(i) => Some(i.key.clone()),
                        Entry::AttemptFailed(f) => Some(f.key.clone()),
                        Entry::Result(r) => r.key.clone(),
                        Entry::Header(_) | Entry::Upload(_) => None,
                    };
                    match key {
                        Some(k) => loaded.lines.entry(k).or_default().apply(other),
                        None => loaded.unreadable += 1,
                    }
                }
            }
            continue;
        }
        match serde_json::from_str::<Record>(text) {
            Ok(r) => {
                loaded.legacy.insert(r.task_uuid, r);
            }
            Err(_) => loaded.unreadable += 1,
        }
    }
    Ok(loaded)
}

/// The longest an `image`, `attemptFailed` or `result` record waits in memory
/// before it is written (an `attempt` record is written at once).
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(10);
/// Bytes of records waiting to be written before senders wait for the writer.
const MAX_PENDING: usize = 8 << 20;

/// Appends entries to the journal by group commit: each sender serializes its
/// entry into one shared buffer (under a lock held only for that), and a writer
/// thread writes the whole buffer in one `write` — at once when an `attempt`
/// record waits for it, otherwise within [`LINGER`]. No channel of entries, no
/// acknowledgement per entry, no wake-up of the writer per record.
pub struct Writer {
    shared: Arc<Shared>,
    handle: tokio::task::JoinHandle<Result<u64, JournalError>>,
}

/// A handle to append entries; clone freely.
#[derive(Clone, Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

/// The journal writer is gone (it failed, or the run is over).
#[derive(Debug, thiserror::Error)]
#[error("the journal is closed")]
pub struct Closed;

#[derive(Debug)]
struct Shared {
    state: Mutex<Pending>,
    /// Wakes the writer (a flush is wanted, the buffer is full, or the run is over).
    wake: Condvar,
    /// The number of entries written so far, or `u64::MAX` once the writer failed.
    written: watch::Sender<u64>,
    /// The writer took the buffer: there is room again.
    room: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    /// Serialized entries not written yet, one per line.
    buf: Vec<u8>,
    /// Entries appended so far (the sequence number of the latest).
    appended: u64,
    /// A sender waits for the buffer to be written.
    flush_wanted: bool,
    /// The writer sleeps on `wake`.
    writer_waiting: bool,
    /// No more entries come (`Writer::finish`).
    closed: bool,
    /// The writer failed: appending is refused.
    failed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the writer if it sleeps (a futex wake only then).
    fn wake_writer(&self, p: &mut Pending) {
        if p.writer_waiting {
            p.writer_waiting = false;
            self.wake.notify_one();
        }
    }
}

impl Sender {
    /// Appends an entry; it is written within [`LINGER`].
    pub async fn send(&self, entry: &Entry) -> Result<(), Closed> {
        self.append(entry, false).await.map(|_| ())
    }

    /// Appends an entry now, unless the buffer is full (`None`: use [`Sender::send`]).
    pub fn try_send(&self, entry: &Entry) -> Option<Result<(), Closed>> {
        self.try_append(entry, false).map(|r| r.map(|_| ()))
    }

    /// Appends an entry and waits until it has been written (with everything
    /// appended before it).
    pub async fn send_flushed(&self, entry: &impl Serialize) -> Result<(), Closed> {
        let seq = self.append(entry, true).await?;
        let mut written = self.shared.written.subscribe();
        match written.wait_for(|w| *w >= seq).await {
            Ok(w) if *w != u64::MAX => Ok(()),
            _ => Err(Closed),
        }
    }

    /// Appends `attempt`'s record and waits until it has been written: what must
    /// happen before the attempt is sent.
    pub async fn attempt_flushed(&self, attempt: &AttemptRecord) -> Result<(), Closed> {
        self.send_flushed(&EntryRef::Attempt(attempt)).await
    }

    /// Serializes `entry` into the buffer; its sequence number. Waits while the
    /// buffer is full.
    async fn append(&self, entry: &impl Serialize, flush: bool) -> Result<u64, Closed> {
        loop {
            if let Some(appended) = self.try_append(entry, flush) {
                return appended;
            }
            // Full. Registered before the second try, so that the writer taking the
            // buffer between the try and the wait is not missed.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(appended) = self.try_append(entry, flush) {
                return appended;
            }
            room.await;
        }
    }

    /// One try of [`Sender::append`]: `None` when the buffer is full (the writer is
    /// then told to take it now).
    fn try_append(&self, entry: &impl Serialize, flush: bool) -> Option<Result<u64, Closed>> {
        let mut p = self.shared.lock();
        if p.failed || p.closed {
            return Some(Err(Closed));
        }
        if p.buf.len() >= MAX_PENDING {
            p.flush_wanted = true;
            self.shared.wake_writer(&mut p);
            return None;
        }
        let start = p.buf.len();
        if serde_json::to_writer(&mut p.buf, entry).is_err() {
            // Cannot happen for these types; the entry is not left half written.
            p.buf.truncate(start);
            return Some(Err(Closed));
        }
        p.buf.push(b'\n');
        p.appended += 1;
        if flush {
            p.flush_wanted = true;
            self.shared.wake_writer(&mut p);
        }
        Some(Ok(p.appended))
    }
}

impl Writer {
    /// Opens `path` for appending (creating it and its directory). A last line cut
    /// short by a crash is ended first, so that new records start on their own line.
    pub async fn open(path: PathBuf) -> Result<Writer, JournalError> {
        let file = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || open_append(&path))
                .await
                .map_err(|e| JournalError::Other(format!("opening the journal failed: {e}")))??
        };
        Ok(Writer::start(file, path))
    }

    /// The writer of an open file.
    fn start(file: std::fs::File, path: PathBuf) -> Writer {
        let shared = Arc::new(Shared {
            state: Mutex::new(Pending { buf: Vec::with_capacity(1 << 16), ..Pending::default() }),
            wake: Condvar::new(),
            written: watch::channel(0).0,
            room: Notify::new(),
        });
        let handle = {
            let shared = shared.clone();
            tokio::task::spawn_blocking(move || {
                let result = write_loop(&shared, file, &path);
                if result.is_err() {
                    shared.lock().failed = true;
                    shared.written.send_replace(u64::MAX);
                    shared.room.notify_waiters();
                }
                result
            })
        };
        Writer { shared, handle }
    }

    /// A sender for entries.
    pub fn sender(&self) -> Sender {
        Sender { shared: self.shared.clone() }
    }

    /// Writes what is appended and closes. Returns the entries written.
    pub async fn finish(self) -> Result<u64, JournalError> {
        {
            let mut p = self.shared.lock();
            p.closed = true;
            self.shared.wake_writer(&mut p);
        }
        self.handle.await.map_err(|e| JournalError::Other(format!("the journal writer failed: {e}")))?
    }
}

/// The writer thread: takes the whole buffer when a flush is wanted, when records
/// have waited [`LINGER`], or at the end, and writes it in one go. It ends with
/// [`Writer::finish`], or once every handle to the journal is dropped.
fn write_loop(shared: &Arc<Shared>, mut file: std::fs::File, path: &Path) -> Result<u64, JournalError> {
    let mut spare: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut p = shared.lock();
    loop {
        // Senders wake the writer only for a flush; records nobody waits for are
        // picked up by this wait's timeout (so a burst costs no wake-up at all).
        while !(p.flush_wanted || p.closed) {
            p.writer_waiting = true;
            let (guard, waited) = shared.wake.wait_timeout(p, LINGER).unwrap_or_else(|e| e.into_inner());
            p = guard;
            p.writer_waiting = false;
            if waited.timed_out() {
                // Every handle is gone without `finish` (the run ended early): end too.
                p.closed |= Arc::strong_count(shared) == 1;
                if !p.buf.is_empty() {
                    break;
                }
            }
        }
        std::mem::swap(&mut p.buf, &mut spare);
        let upto = p.appended;
        let closing = p.closed;
        p.flush_wanted = false;
        drop(p);
        shared.room.notify_waiters();
        if !spare.is_empty() {
            file.write_all(&spare).map_err(|source| JournalError::Write { path: path.to_path_buf(), source })?;
            spare.clear();
        }
        shared.written.send_replace(upto);
        p = shared.lock();
        if closing && p.buf.is_empty() {
            return Ok(p.appended);
        }
    }
}

/// Replaces the journal at `path` with `entries` (write a temporary file, rename):
/// how a format-1 journal becomes a format-2 one.
pub fn rewrite(path: &Path, entries: &[Entry]) -> Result<(), JournalError> {
    let fail = |source| JournalError::Write { path: path.to_path_buf(), source };
    let tmp = path.with_extension(format!("rewrite-{:08x}.tmp", fastrand::u32(..)));
    let mut text = Vec::with_capacity(entries.len() * 200);
    for e in entries {
        serde_json::to_writer(&mut text, e)
            .map_err(|e| JournalError::Other(format!("cannot encode a journal record: {e}")))?;
        text.push(b'\n');
    }
    let written = std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(source));
    }
    Ok(())
}

fn open_append(path: &Path) -> Result<std::fs::File, JournalError> {
    let fail = |source| JournalError::Write { path: path.to_path_buf(), source };
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

/// The batch's journal as a job store: records appended by group commit
/// ([`Writer`]), an attempt on disk before it is sent; what earlier runs wrote
/// ([`Loaded`]) read once at open.
pub struct JournalStore {
    namespace: Uuid,
    path: PathBuf,
    sender: Sender,
    writer: Mutex<Option<Writer>>,
    /// What earlier runs left.
    prior: Arc<Loaded>,
    /// The jobs this run wrote records for (each starts as its prior state).
    touched: Mutex<HashMap<JobKey, JobState>>,
    /// Uploads made in this run.
    uploads: Mutex<HashMap<Uuid, Uuid>>,
    /// Whether `touched` is kept (not for a caller that runs each job once).
    remembers: bool,
}

impl std::fmt::Debug for JournalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStore").field("path", &self.path).field("namespace", &self.namespace).finish()
    }
}

impl JournalStore {
    /// Opens the journal at `path` (made when missing) for jobs run against
    /// `endpoint` (a URL, or [`EMBEDDED_ENDPOINT`]): a journal of another endpoint
    /// is refused (its jobs never ran there), as is a format-1 journal (`runware
    /// batch` converts those) or one of a newer format.
    pub async fn open(path: impl Into<PathBuf>, endpoint: &str) -> Result<JournalStore, JournalError> {
        let path = path.into();
        let loaded = {
            let p = path.clone();
            tokio::task::spawn_blocking(move || load(&p))
                .await
                .map_err(|e| JournalError::Other(format!("reading the journal failed: {e}")))??
        };
        let refuse = |why: String| JournalError::Other(format!("{}: {why}", path.display()));
        let (header, new) = match &loaded.header {
            Some(h) if h.version > FORMAT_VERSION => {
                return Err(refuse(format!(
                    "written by a newer version (journal format {}; this one reads up to {FORMAT_VERSION})",
                    h.version
                )));
            }
            Some(h) if h.endpoint != endpoint => {
                return Err(refuse(format!(
                    "its jobs ran against {}, and this runner is against {endpoint}: use another file",
                    h.endpoint
                )));
            }
            Some(h) => (h.clone(), false),
            None if loaded.is_empty() => (
                Header {
                    version: FORMAT_VERSION,
                    batch_id: Uuid::new_v4(),
                    endpoint: endpoint.to_string(),
                    created_at_ms: now_ms(),
                },
                true,
            ),
            None => return Err(refuse("records but no header (format 1, or a first line cut short)".into())),
        };
        let writer = Writer::open(path.clone()).await?;
        if new {
            writer.sender().send_flushed(&Entry::Header(header.clone())).await.map_err(|_| JournalError::Write {
                path: path.clone(),
                source: std::io::Error::other("the journal closed"),
            })?;
        }
        Ok(JournalStore::new(writer, path, header.batch_id, Arc::new(loaded)))
    }

    /// A store over a journal already opened and checked: `writer` appends to it,
    /// `prior` is what it held, `namespace` its header's batch id.
    pub fn new(writer: Writer, path: PathBuf, namespace: Uuid, prior: Arc<Loaded>) -> JournalStore {
        JournalStore {
            namespace,
            path,
            sender: writer.sender(),
            writer: Mutex::new(Some(writer)),
            prior,
            touched: Mutex::default(),
            uploads: Mutex::default(),
            remembers: true,
        }
    }

    /// For a caller that runs each job at most once per process (a batch): the
    /// store keeps no copy in memory of what this run records, and [`Store::load`](super::Store::load)
    /// answers what the journal held when it was opened.
    pub fn runs_each_job_once(mut self) -> JournalStore {
        self.remembers = false;
        self
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the journal says of job `key` now.
    pub fn state(&self, key: &str) -> Option<JobState> {
        if let Some(s) = crate::sync::lock(&self.touched).get(key) {
            return Some(s.clone());
        }
        self.prior.line(key).cloned()
    }

    /// Writes what is left and closes the journal; the number of records this run
    /// appended. Records sent after this are refused.
    pub async fn finish(&self) -> Result<u64, JournalError> {
        let writer = crate::sync::lock(&self.writer).take();
        match writer {
            Some(w) => w.finish().await,
            None => Ok(0),
        }
    }
}

impl super::Store for JournalStore {
    fn namespace(&self) -> Uuid {
        self.namespace
    }

    fn load<'a>(&'a self, key: &'a str) -> super::StoreFuture<'a, Option<JobState>> {
        super::StoreFuture::ready(Ok(self.state(key)))
    }

    fn record<'a>(&'a self, entry: &'a Entry) -> super::StoreFuture<'a, ()> {
        match entry {
            Entry::Upload(u) => {
                crate::sync::lock(&self.uploads).insert(u.key, u.image_uuid);
            }
            other if self.remembers => {
                if let Some(key) = other.key() {
                    let mut touched = crate::sync::lock(&self.touched);
                    match touched.get_mut(key) {
                        Some(s) => s.note(other),
                        None => {
                            let mut s = self.prior.line(key).cloned().unwrap_or_default();
                            s.note(other);
                            touched.insert(key.to_string(), s);
                        }
                    }
                }
            }
            _ => {}
        }
        // An image, a failure or an outcome goes into the buffer at once (written
        // within LINGER); an attempt or an upload waits for its write.
        if !matches!(entry, Entry::Attempt(_) | Entry::Upload(_) | Entry::Header(_))
            && let Some(appended) = self.sender.try_send(entry)
        {
            return super::StoreFuture::ready(appended.map_err(|_| super::StoreError::Closed));
        }
        super::StoreFuture::pending(async move {
            let sent = match entry {
                Entry::Attempt(a) => self.sender.attempt_flushed(a).await,
                Entry::Upload(_) | Entry::Header(_) => self.sender.send_flushed(entry).await,
                _ => self.sender.send(entry).await,
            };
            sent.map_err(|_| super::StoreError::Closed)
        })
    }

    fn uploads(&self) -> Vec<(Uuid, Uuid)> {
        let mut all: HashMap<Uuid, Uuid> = self.prior.uploads.clone();
        all.extend(crate::sync::lock(&self.uploads).iter().map(|(k, v)| (*k, *v)));
        all.into_iter().collect()
    }

    fn billed(&self) -> f64 {
        self.prior.billed()
    }

    fn unfinished(&self) -> Vec<String> {
        let touched = crate::sync::lock(&self.touched);
        let mut keys: Vec<String> = touched.iter().filter(|(_, s)| !s.is_done()).map(|(k, _)| k.clone()).collect();
        keys.extend(
            self.prior.lines.iter().filter(|(k, s)| !touched.contains_key(*k) && !s.is_done()).map(|(k, _)| k.clone()),
        );
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{AttemptFailed, ImageEntry, ImageRecord};

    fn attempt(key: &str, n: u32) -> Entry {
        Entry::Attempt(AttemptRecord {
            key: key.into(),
            line: 1,
            attempt: n,
            task_uuid: Uuid::new_v4(),
            number_results: 2,
            seed: None,
            sent_at_ms: 0,
        })
    }

    fn image(key: &str, uuid: &str) -> Entry {
        Entry::Image(ImageEntry {
            key: key.into(),
            line: 1,
            attempt: 1,
            task_uuid: Uuid::new_v4(),
            image: ImageRecord {
                image_uuid: uuid.into(),
                image_url: None,
                path: None,
                seed: None,
                cost: None,
                nsfw_content: None,
            },
        })
    }

    #[test]
    fn states_fold_attempts_images_failures_and_outcomes_and_torn_lines_are_tolerated() {
        let dir = std::env::temp_dir().join(format!("rw-journal-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let header = Entry::Header(Header {
            version: FORMAT_VERSION,
            batch_id: Uuid::new_v4(),
            endpoint: EMBEDDED_ENDPOINT.into(),
            created_at_ms: 1,
        });
        let a1 = attempt("id:a", 1);
        let failed = Entry::AttemptFailed(AttemptFailed {
            key: "id:a".into(),
            line: 1,
            attempt: 1,
            task_uuid: Uuid::new_v4(),
            code: "timeoutProvider".into(),
            message: String::new(),
        });
        let a2 = attempt("id:a", 2);
        let lines = [header, a1, image("id:a", "i1"), image("id:a", "i1"), failed, a2, attempt("id:b", 1)];
        let mut text: String = lines.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
        text.push_str("{\"type\":\"image\",\"key\":\"id:");
        std::fs::write(&path, text).unwrap();

        let loaded = load(&path).unwrap();
        assert_eq!(loaded.header.as_ref().map(|h| h.endpoint.as_str()), Some(EMBEDDED_ENDPOINT));
        let a = loaded.line("id:a").unwrap();
        assert_eq!(a.images.len(), 1, "an image is counted once");
        assert_eq!(a.failed, vec![1]);
        assert_eq!(a.open_attempt().map(|x| x.attempt), Some(2));
        assert!(!a.result.as_ref().is_some_and(Record::is_done));
        assert_eq!(loaded.unreadable, 1);

        // Appending after a torn line starts a fresh line; an outcome ends the line.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let w = Writer::open(path.clone()).await.unwrap();
            let done = Record::ok("id:b".into(), 2, Uuid::new_v4());
            w.sender().send_flushed(&Entry::Result(done)).await.unwrap();
            assert_eq!(w.finish().await.unwrap(), 1);
        });
        let loaded = load(&path).unwrap();
        assert!(loaded.line("id:b").unwrap().result.as_ref().is_some_and(Record::is_done));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_borrowed_attempt_is_written_as_its_entry() {
        let Entry::Attempt(a) = attempt("id:a", 3) else { unreachable!() };
        assert_eq!(
            serde_json::to_string(&EntryRef::Attempt(&a)).unwrap(),
            serde_json::to_string(&Entry::Attempt(a.clone())).unwrap()
        );
    }

    fn failed(key: &str, message: String) -> Entry {
        Entry::AttemptFailed(AttemptFailed {
            key: key.into(),
            line: 1,
            attempt: 1,
            task_uuid: Uuid::new_v4(),
            code: "timeoutProvider".into(),
            message,
        })
    }

    fn types_in(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// The types of the records in `path` once there are `n` (waiting up to 10 s).
    async fn records_within_seconds(path: &Path, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let types = types_in(path);
            if types.len() >= n || std::time::Instant::now() >= deadline {
                return types;
            }
            tokio::time::sleep(LINGER).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_writes_an_attempt_before_it_returns_and_the_rest_soon_after() {
        let dir = std::env::temp_dir().join(format!("rw-journal-{}", Uuid::new_v4()));
        let path = dir.join("r.jsonl");
        let w = Writer::open(path.clone()).await.unwrap();
        let tx = w.sender();
        tx.send(&image("id:a", "i1")).await.unwrap();
        tx.send_flushed(&attempt("id:b", 1)).await.unwrap();
        // The attempt is on disk, and so is everything appended before it, in order.
        assert_eq!(types_in(&path), ["image", "attempt"]);
        // A record nobody waits for is written within LINGER, without a flush.
        tx.send(&failed("id:a", String::new())).await.unwrap();
        assert_eq!(records_within_seconds(&path, 3).await, ["image", "attempt", "attemptFailed"]);
        tx.send(&image("id:c", "i2")).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 4, "finish writes what is left");
        assert_eq!(types_in(&path).len(), 4);
        assert!(tx.send(&image("id:d", "i3")).await.is_err(), "a finished journal refuses records");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journal_dropped_without_finish_still_writes_what_it_was_given() {
        let dir = std::env::temp_dir().join(format!("rw-journal-{}", Uuid::new_v4()));
        let path = dir.join("r.jsonl");
        let w = Writer::open(path.clone()).await.unwrap();
        w.sender().send(&image("id:a", "i1")).await.unwrap();
        drop(w);
        assert_eq!(records_within_seconds(&path, 1).await, ["image"], "the record was lost");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_than_the_buffer_holds_waits_for_the_writer_and_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("rw-journal-{}", Uuid::new_v4()));
        let path = dir.join("r.jsonl");
        let w = Writer::open(path.clone()).await.unwrap();
        // 4 senders × 3,000 records of ~1 KiB: 12 MiB, over MAX_PENDING.
        let senders: Vec<_> = (0..4)
            .map(|s| {
                let tx = w.sender();
                tokio::spawn(async move {
                    for i in 0..3000 {
                        tx.send(&failed(&format!("id:{s}-{i}"), "x".repeat(1024))).await.unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.await.unwrap();
        }
        assert_eq!(w.finish().await.unwrap(), 12_000);
        let loaded = load(&path).unwrap();
        assert_eq!((loaded.lines.len(), loaded.unreadable), (12_000, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journal_that_cannot_be_written_refuses_every_sender() {
        let file = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let w = Writer::start(file, PathBuf::from("/dev/full"));
        let tx = w.sender();
        tx.send(&image("id:a", "i1")).await.unwrap();
        assert!(tx.send_flushed(&attempt("id:a", 1)).await.is_err(), "the attempt was not written");
        assert!(tx.send(&image("id:a", "i2")).await.is_err());
        assert!(matches!(w.finish().await, Err(JournalError::Write { .. })));
    }

    #[test]
    fn format_one_records_are_read_as_legacy() {
        let dir = std::env::temp_dir().join(format!("rw-journal-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let u = Uuid::new_v4();
        std::fs::write(&path, format!("{{\"line\":3,\"taskUUID\":\"{u}\",\"status\":\"ok\"}}\n")).unwrap();
        let loaded = load(&path).unwrap();
        assert!(loaded.header.is_none());
        assert!(loaded.legacy.get(&u).is_some_and(Record::is_done));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
