//! The default store: every record in memory, nothing survives the process.

use super::{Store, StoreError, StoreFuture};
use crate::record::{Entry, JobState};
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// Records in memory. Its namespace is random, so two processes never share
/// taskUUIDs; an attempt's taskUUID is a keyed 128-bit hash of (key, n), random
/// keys drawn per store (a store that dies with its process needs no SHA-1 that
/// another process could derive again).
#[derive(Debug)]
pub struct MemoryStore {
    namespace: Uuid,
    state: Mutex<State>,
    /// The two keys of the attempt taskUUIDs' hash.
    uuid_keys: (std::hash::RandomState, std::hash::RandomState),
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
        MemoryStore {
            namespace,
            state: Mutex::default(),
            uuid_keys: (std::hash::RandomState::new(), std::hash::RandomState::new()),
        }
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

    fn attempt_uuid(&self, key: &str, n: u32) -> Uuid {
        use std::hash::BuildHasher;
        let hi = self.uuid_keys.0.hash_one((self.namespace, key, n));
        let lo = self.uuid_keys.1.hash_one((self.namespace, key, n));
        let bytes = ((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn attempt_uuids_are_stable_for_the_store_distinct_and_v4() {
        let store = MemoryStore::new();
        let a = store.attempt_uuid("job-1", 1);
        assert_eq!(a, store.attempt_uuid("job-1", 1), "the same for the store's life");
        assert_eq!(a.get_version_num(), 4);
        let mut seen = HashSet::new();
        for key in ["job-1", "job-2", "job-10", ""] {
            for n in 1..50 {
                assert!(seen.insert(store.attempt_uuid(key, n)), "{key} {n}");
            }
        }
        assert_ne!(a, MemoryStore::new().attempt_uuid("job-1", 1), "another store, other taskUUIDs");
    }
}
