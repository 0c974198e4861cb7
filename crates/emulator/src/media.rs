//! What `GET /images/{file}` serves: generated images (rendered lazily on first
//! fetch from their recipe, then cached) and uploaded images. Every map is bounded.

use super::render::Recipe;
use super::sync::lock;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use uuid::Uuid;

const MAX_RECIPES: usize = 200_000;
const MAX_CACHED: usize = 256;
const MAX_UPLOADS: usize = 2_000;
const MAX_UPLOAD_BYTES: usize = 512 << 20;

/// A bounded map that forgets its oldest entries first.
struct Fifo<V> {
    map: HashMap<Uuid, V>,
    order: VecDeque<Uuid>,
}

impl<V> Default for Fifo<V> {
    fn default() -> Self {
        Fifo { map: HashMap::new(), order: VecDeque::new() }
    }
}

impl<V> Fifo<V> {
    fn insert(&mut self, k: Uuid, v: V) -> Option<V> {
        let old = self.map.insert(k, v);
        if old.is_none() {
            self.order.push_back(k);
        }
        old
    }
    fn pop_oldest(&mut self) -> Option<V> {
        while let Some(k) = self.order.pop_front() {
            if let Some(v) = self.map.remove(&k) {
                return Some(v);
            }
        }
        None
    }
    fn compact(&mut self) {
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}

/// An uploaded file.
#[derive(Clone, Debug)]
pub(crate) struct Upload {
    pub bytes: Bytes,
    pub mime: &'static str,
}

/// Generated and uploaded media.
#[derive(Default)]
pub(crate) struct MediaStore {
    recipes: Mutex<Fifo<(Arc<Recipe>, Instant)>>,
    cache: Mutex<Fifo<Arc<OnceCell<Bytes>>>>,
    uploads: Mutex<(Fifo<Upload>, usize)>,
}

impl MediaStore {
    /// Makes `uuid` servable until `ttl` from now, rendered on first fetch.
    pub fn add_recipe(&self, uuid: Uuid, recipe: Arc<Recipe>, ttl: Duration) {
        let mut r = lock(&self.recipes);
        let now = Instant::now();
        // A huge ttl means "forever" (a century), never an overflow.
        let until = now.checked_add(ttl).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        r.insert(uuid, (recipe, until));
        while r.map.len() > MAX_RECIPES {
            r.pop_oldest();
        }
    }

    /// The recipe of a generated image, if it has not expired.
    pub fn recipe(&self, uuid: Uuid) -> Option<Arc<Recipe>> {
        let r = lock(&self.recipes);
        r.map.get(&uuid).filter(|(_, until)| *until > Instant::now()).map(|(rec, _)| rec.clone())
    }

    /// Stores an upload; returns the bytes it displaced if any.
    pub fn add_upload(&self, uuid: Uuid, upload: Upload) {
        let mut guard = lock(&self.uploads);
        let (fifo, bytes) = &mut *guard;
        *bytes += upload.bytes.len();
        if let Some(old) = fifo.insert(uuid, upload) {
            *bytes -= old.bytes.len().min(*bytes);
        }
        while fifo.map.len() > MAX_UPLOADS || *bytes > MAX_UPLOAD_BYTES {
            match fifo.pop_oldest() {
                Some(old) => *bytes -= old.bytes.len().min(*bytes),
                None => break,
            }
        }
    }

    /// An uploaded file.
    pub fn upload(&self, uuid: Uuid) -> Option<Upload> {
        lock(&self.uploads).0.map.get(&uuid).cloned()
    }

    /// Forgets every upload (as a server that expired them would).
    pub fn clear_uploads(&self) {
        *lock(&self.uploads) = (Fifo::default(), 0);
    }

    /// Deletes an upload; true if it existed.
    pub fn delete_upload(&self, uuid: Uuid) -> bool {
        let mut guard = lock(&self.uploads);
        let (fifo, bytes) = &mut *guard;
        let removed = fifo.map.remove(&uuid);
        fifo.compact();
        match removed {
            Some(old) => {
                *bytes -= old.bytes.len().min(*bytes);
                true
            }
            None => false,
        }
    }

    /// Forgets expired recipes.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut r = lock(&self.recipes);
        r.map.retain(|_, (_, until)| *until > now);
        r.compact();
    }

    /// The cache cell of generated image `uuid` (made empty if new; the cache is bounded).
    pub fn cache_cell(&self, uuid: Uuid) -> Arc<OnceCell<Bytes>> {
        let mut c = lock(&self.cache);
        if let Some(cell) = c.map.get(&uuid) {
            return cell.clone();
        }
        let cell = Arc::new(OnceCell::new());
        c.insert(uuid, cell.clone());
        while c.map.len() > MAX_CACHED {
            c.pop_oldest();
        }
        cell
    }
}
