//! The default store: every record in memory, nothing survives the process.

use super::{Store, StoreError, StoreFuture};
use crate::record::{Entry, JobState};
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// Records in memory. Its namespace is random, so two processes never share taskUUIDs.
#[derive(Debug)]
pub struct MemoryStore {
    namespace: Uuid,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    jobs: HashMap<String, JobState>,
    uploads: HashMap<Uuid, Uuid>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store with a random namespace.
    pub fn new() -> MemoryStore {
        MemoryStore::with_namespace(Uuid::new_v4())
    }

    /// An empty store whose jobs' taskUUIDs derive from `namespace`.
    pub fn with_namespace(namespace: Uuid) -> MemoryStore {
        MemoryStore { namespace, state: Mutex::default() }
    }

    /// The state of job `key`, now.
    pub fn job(&self, key: &str) -> Option<JobState> {
        lock(&self.state).jobs.get(key).cloned()
    }
}

impl Store for MemoryStore {
    fn namespace(&self) -> Uuid {
        self.namespace
    }

    fn load<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<JobState>> {
        StoreFuture::ready(Ok::<_, StoreError>(self.job(key)))
    }

    fn record<'a>(&'a self, entry: &'a Entry) -> StoreFuture<'a, ()> {
        {
            let mut s = lock(&self.state);
            match entry {
                Entry::Upload(u) => {
                    s.uploads.insert(u.key, u.image_uuid);
                }
                other => {
                    if let Some(key) = other.key() {
                        match s.jobs.get_mut(key) {
                            Some(job) => job.note(other),
                            None => {
                                let mut job = JobState::default();
                                job.note(other);
                                s.jobs.insert(key.to_string(), job);
                            }
                        }
                    }
                }
            }
        }
        StoreFuture::ready(Ok(()))
    }

    fn uploads(&self) -> Vec<(Uuid, Uuid)> {
        lock(&self.state).uploads.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn billed(&self) -> f64 {
        lock(&self.state).jobs.values().flat_map(|j| &j.images).filter_map(|i| i.cost).sum()
    }

    fn unfinished(&self) -> Vec<String> {
        lock(&self.state).jobs.iter().filter(|(_, j)| !j.is_done()).map(|(k, _)| k.clone()).collect()
    }
}
