//! References sent once: a [`ReferenceCache`] uploads each inline reference image
//! (a data URI or base64) with `imageUpload` the first time a task uses it, keyed
//! by a hash of its content, and makes every task that uses it reference the
//! returned imageUUID instead. A 1 MiB reference used by 1,000 tasks then crosses
//! the socket once, and the pending table holds 1,000 small frames.

use super::Client;
use super::error::ClientError;
use crate::protocol::{ImageInference, KontextTask, ReferenceImage};
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Namespace of the content keys (UUID v5 of the reference's text).
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6f7a_2c1e_9d5b_4b7e_8a3f_1c2d_3e4f_5a6b);

/// An upload the cache made: the content key and the imageUUID it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uploaded {
    /// [`ReferenceCache::key`] of the reference.
    pub key: Uuid,
    /// The `imageUUID` the server returned.
    pub image_uuid: Uuid,
}

/// Uploads each inline reference once and references it by imageUUID. Cheap to
/// clone (shared); concurrent tasks that need the same reference wait for one
/// upload.
#[derive(Clone, Debug)]
pub struct ReferenceCache {
    client: Client,
    cells: Arc<Mutex<HashMap<Uuid, Arc<OnceCell<Uuid>>>>>,
}

impl ReferenceCache {
    /// A cache that uploads through `client`.
    pub fn new(client: Client) -> ReferenceCache {
        ReferenceCache { client, cells: Arc::default() }
    }

    /// The content key of an inline reference (`None` for URLs and UUIDs, which are
    /// sent as they are).
    pub fn key(image: &ReferenceImage) -> Option<Uuid> {
        match image {
            ReferenceImage::DataUri(s) | ReferenceImage::Base64(s) => Some(Uuid::new_v5(&KEY_NAMESPACE, s.as_bytes())),
            ReferenceImage::Url(_) | ReferenceImage::Uuid(_) => None,
        }
    }

    /// Records an upload made earlier (e.g. in a previous run), so it is reused.
    pub fn insert(&self, key: Uuid, image_uuid: Uuid) {
        let cell = OnceCell::new_with(Some(image_uuid));
        lock(&self.cells).insert(key, Arc::new(cell));
    }

    /// Forgets the uploads that got `image_uuid` (the server no longer knows it):
    /// the next task that needs that reference uploads it again.
    pub fn forget(&self, image_uuid: Uuid) {
        lock(&self.cells).retain(|_, cell| cell.get() != Some(&image_uuid));
    }

    /// `image` as the task should send it: an inline one as the imageUUID of its
    /// upload (made now if it is the first use), with the upload if this call made it.
    pub async fn reference(&self, image: &ReferenceImage) -> Result<(ReferenceImage, Option<Uploaded>), ClientError> {
        let (Some(key), ReferenceImage::DataUri(text) | ReferenceImage::Base64(text)) = (Self::key(image), image)
        else {
            return Ok((image.clone(), None));
        };
        let (image_uuid, made) = self.upload_keyed(key, text).await?;
        Ok((ReferenceImage::Uuid(image_uuid), made))
    }

    /// The imageUUID of the inline reference `text` whose content key is `key`
    /// (uploaded now if it is the first use), with the upload if this call made it.
    /// For callers that keep references by key, so as not to hash them again.
    pub async fn upload_keyed(&self, key: Uuid, text: &str) -> Result<(Uuid, Option<Uploaded>), ClientError> {
        let cell = lock(&self.cells).entry(key).or_default().clone();
        let made = AtomicBool::new(false);
        let image_uuid = *cell
            .get_or_try_init(|| async {
                made.store(true, Ordering::Relaxed);
                let item = self.client.upload_image(text.to_string()).await?;
                let uuid = item.image_uuid.as_deref().and_then(|u| Uuid::parse_str(u).ok());
                uuid.ok_or_else(|| ClientError::Protocol("imageUpload returned no imageUUID".into()))
            })
            .await?;
        Ok((image_uuid, made.into_inner().then_some(Uploaded { key, image_uuid })))
    }

    /// `task` with every inline reference replaced by its upload's imageUUID, and
    /// the uploads this call made.
    pub async fn inference(&self, mut task: ImageInference) -> Result<(ImageInference, Vec<Uploaded>), ClientError> {
        let mut uploads = Vec::new();
        if let Some(inputs) = task.inputs.as_mut() {
            for r in inputs.reference_images.iter_mut() {
                let (sent, made) = self.reference(r).await?;
                *r = sent;
                uploads.extend(made);
            }
        }
        Ok((task, uploads))
    }

    /// [`ReferenceCache::inference`] for a validated Kontext task (it stays valid:
    /// an imageUUID is always an allowed reference).
    pub async fn kontext(&self, task: KontextTask) -> Result<(KontextTask, Vec<Uploaded>), ClientError> {
        let (inner, uploads) = self.inference(task.into_inner()).await?;
        Ok((KontextTask::try_from(inner)?, uploads))
    }
}
