//! References uploaded once ([`References`]) and held once ([`SharedRefs`]).
//!
//! One copy of each inline reference for the whole batch. The input reader turns
//! a local reference file into a data URI on every line that names it; right
//! after, on the reader's thread, [`SharedRefs::intern`] keeps the first copy of
//! each text (by its content key) and leaves the line's task referencing that key,
//! as a placeholder imageUUID, so a 1 MiB reference used by 1,000 lines is held once. When an
//! attempt is sent, the placeholder becomes the imageUUID of the reference's
//! upload (`ReferenceCache::upload_keyed`).

use crate::task::JobTask as Task;
use runware_ws::client::{Client, ClientError, ReferenceCache, Uploaded};
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

/// Inline references uploaded once per runner (re-uploaded when the server forgot
/// them), and held once in memory.
#[derive(Clone, Debug)]
pub struct References {
    cache: ReferenceCache,
    texts: Arc<SharedRefs>,
}

/// An attempt's task as it is sent, with what its references took.
#[derive(Debug)]
pub struct Prepared {
    /// The task, every inline reference replaced by its upload's imageUUID.
    pub task: Task,
    /// The uploads made for it now (to be recorded before it is sent).
    pub uploads: Vec<Uploaded>,
    /// The imageUUIDs of the uploads it references.
    pub referenced: Vec<Uuid>,
}

impl References {
    /// Uploads through `client`, reusing `earlier` uploads (content key, imageUUID).
    pub fn new(client: Client, earlier: impl IntoIterator<Item = (Uuid, Uuid)>) -> References {
        let cache = ReferenceCache::new(client);
        for (key, image_uuid) in earlier {
            cache.insert(key, image_uuid);
        }
        References { cache, texts: Arc::default() }
    }

    /// Where the texts of interned references are kept.
    pub fn texts(&self) -> &Arc<SharedRefs> {
        &self.texts
    }

    /// Forgets the upload that got `image_uuid` (the server no longer knows it).
    pub fn forget(&self, image_uuid: Uuid) {
        self.cache.forget(image_uuid);
    }

    /// `task` with its inline (or interned) references replaced by the imageUUIDs
    /// of their uploads, each uploaded the first time it is needed.
    pub async fn prepare(&self, task: Task) -> Result<Prepared, ClientError> {
        // Nothing inline and nothing interned: the task is sent as it is (a Kontext
        // task is not rebuilt, so not validated again).
        let needs_upload = |t: &ImageInference| {
            t.inputs.iter().flat_map(|i| &i.reference_images).any(|r| match r {
                ReferenceImage::DataUri(_) | ReferenceImage::Base64(_) => true,
                ReferenceImage::Uuid(key) => self.texts.text(key).is_some(),
                ReferenceImage::Url(_) => false,
            })
        };
        let untouched = match &task {
            Task::Kontext(t) => !needs_upload(t.as_inference()),
            Task::Inference(t) => !needs_upload(t),
            Task::Raw(_) => true,
        };
        if untouched {
            return Ok(Prepared { task, uploads: Vec::new(), referenced: Vec::new() });
        }
        let (mut inner, kontext) = match task {
            Task::Kontext(t) => (t.into_inner(), true),
            Task::Inference(t) => (*t, false),
            raw => return Ok(Prepared { task: raw, uploads: Vec::new(), referenced: Vec::new() }),
        };
        let mut uploads = Vec::new();
        let mut referenced = Vec::new();
        if let Some(inputs) = inner.inputs.as_mut() {
            for r in inputs.reference_images.iter_mut() {
                // A reference interned by the reader (its content key), one still
                // inline, or one the task names itself (a URL or an imageUUID: as is).
                let interned = match r {
                    ReferenceImage::Uuid(key) => self.texts.text(key).map(|text| (*key, text)),
                    _ => None,
                };
                let (uuid, made) = match (interned, ReferenceCache::key(r)) {
                    (Some((key, text)), _) => self.cache.upload_keyed(key, &text).await?,
                    (None, Some(_)) => match self.cache.reference(r).await? {
                        (ReferenceImage::Uuid(u), made) => (u, made),
                        (other, _) => {
                            return Err(ClientError::Protocol(format!("an inline reference stayed inline: {other:?}")));
                        }
                    },
                    (None, None) => continue,
                };
                referenced.push(uuid);
                uploads.extend(made);
                *r = ReferenceImage::Uuid(uuid);
            }
        }
        let task = if kontext {
            Task::Kontext(Box::new(KontextTask::try_from(inner).map_err(ClientError::from)?))
        } else {
            Task::Inference(Box::new(inner))
        };
        Ok(Prepared { task, uploads, referenced })
    }
}
