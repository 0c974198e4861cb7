//! One copy of each inline reference for the whole batch. The input reader turns
//! a local reference file into a data URI on every line that names it; right
//! after, on the reader's thread, [`SharedRefs::intern`] keeps the first copy of
//! each text (by its content key) and leaves the line's task referencing that key,
//! as a placeholder imageUUID, so a 1 MiB reference used by 1,000 lines is held once. When an
//! attempt is sent, the placeholder becomes the imageUUID of the reference's
//! upload (`ReferenceCache::upload_keyed`).

use crate::input::Task;
use runware_ws::client::ReferenceCache;
use runware_ws::protocol::{ImageInference, KontextTask, ReferenceImage};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Content key → the reference's text (a data URI or base64).
#[derive(Debug, Default)]
pub struct SharedRefs {
    texts: Mutex<HashMap<Uuid, Arc<str>>>,
}

impl SharedRefs {
    fn texts(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<str>>> {
        self.texts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `task` with each inline reference replaced by its content key, the text kept
    /// here once. Raw tasks are left as they are.
    pub fn intern(&self, task: Task) -> Task {
        let inline = |t: &ImageInference| {
            t.inputs
                .iter()
                .flat_map(|i| &i.reference_images)
                .any(|r| matches!(r, ReferenceImage::DataUri(_) | ReferenceImage::Base64(_)))
        };
        match &task {
            // Nothing to keep: the task stays as it is (no rebuilding, no re-validation).
            Task::Kontext(k) if !inline(k.as_inference()) => return task,
            Task::Inference(t) if !inline(t) => return task,
            _ => {}
        }
        let swap = |t: &mut ImageInference| {
            let Some(inputs) = t.inputs.as_mut() else { return };
            for r in inputs.reference_images.iter_mut() {
                let Some(key) = ReferenceCache::key(r) else { continue };
                if let ReferenceImage::DataUri(text) | ReferenceImage::Base64(text) = r {
                    self.texts().entry(key).or_insert_with(|| Arc::from(std::mem::take(text).into_boxed_str()));
                }
                *r = ReferenceImage::Uuid(key);
            }
        };
        match task {
            Task::Kontext(k) => {
                let mut inner = k.into_inner();
                swap(&mut inner);
                // An imageUUID is always an allowed reference: the task stays valid.
                match KontextTask::try_from(inner.clone()) {
                    Ok(k) => Task::Kontext(Box::new(k)),
                    Err(_) => Task::Inference(Box::new(inner)),
                }
            }
            Task::Inference(mut t) => {
                swap(&mut t);
                Task::Inference(t)
            }
            raw => raw,
        }
    }

    /// The text of the interned reference `key`, if `key` is one.
    pub fn text(&self, key: &Uuid) -> Option<Arc<str>> {
        self.texts().get(key).cloned()
    }
}
