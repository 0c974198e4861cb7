//! Images on demand: rendering a recipe on the blocking pool under the shared
//! bound, and fetching a servable image (an upload, or a generated image rendered
//! on first fetch and then cached in the media store).

use super::render::{self, Recipe};
use super::state::Shared;
use bytes::Bytes;
use std::sync::Arc;
use uuid::Uuid;

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenderError {
    #[error("image encoding failed: {0}")]
    Image(#[from] image::ImageError),
    #[error("the render task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the emulator is shutting down")]
    Closed,
}

/// Renders a recipe on the blocking pool, with a bound on concurrent renders.
pub(crate) async fn render(shared: &Shared, recipe: Arc<Recipe>) -> Result<Bytes, RenderError> {
    let _permit = shared.render_permits.acquire().await.map_err(|_| RenderError::Closed)?;
    let bytes = tokio::task::spawn_blocking(move || render::render(&recipe)).await??;
    Ok(Bytes::from(bytes))
}

/// The bytes and MIME type of a servable image: an upload, or a generated image
/// (rendered now if not cached).
pub(crate) async fn fetch(shared: &Shared, uuid: Uuid) -> Option<Result<(Bytes, &'static str), RenderError>> {
    if let Some(u) = shared.media.upload(uuid) {
        return Some(Ok((u.bytes, u.mime)));
    }
    let recipe = shared.media.recipe(uuid)?;
    let mime = recipe.format.mime();
    let cell = shared.media.cache_cell(uuid);
    Some(cell.get_or_try_init(|| render(shared, recipe)).await.map(|b| (b.clone(), mime)))
}
